//! The simulated application and snapshot storage: each replica's application state is the
//! number of entries delivered and a chain digest over them, so two replicas at the same applied
//! index must hold equal states; a snapshot is that state encoded (padded to a length that
//! varies, so transfers take several chunks), stored durably per node like the runtime's snapshot
//! directory, and staged chunk by chunk on a receiving follower.

use crate::codec::crc32c;
use crate::entry::Fnv64;
use crate::ids::{LogIndex, PartitionId, Term};
use crate::raft::Delivery;
use crate::snapshot::{SnapshotChunkWrite, SnapshotMeta};
use bytes::Bytes;
use std::collections::BTreeMap;

/// One replica's application state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppState {
    /// Entries delivered (from the start of the partition's history).
    pub count: u64,
    /// Chain digest over every delivered entry's fingerprint.
    pub digest: u64,
}

impl AppState {
    /// Apply one delivery.
    pub fn apply(&mut self, delivery: &Delivery) {
        self.count += 1;
        self.digest = chain(self.digest, delivery.entry.fingerprint());
    }

    /// The snapshot bytes of this state: count, digest, then `count % 40` bytes of padding.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16 + 40);
        bytes.extend_from_slice(&self.count.to_le_bytes());
        bytes.extend_from_slice(&self.digest.to_le_bytes());
        bytes.resize(16 + (self.count % 40) as usize, self.count as u8);
        bytes
    }

    /// Decode [`AppState::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Option<AppState> {
        let count = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let digest = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
        (bytes.len() == 16 + (count % 40) as usize).then_some(AppState { count, digest })
    }
}

/// The digest after `digest` absorbs `fingerprint`.
pub fn chain(digest: u64, fingerprint: u64) -> u64 {
    let mut h = Fnv64::new();
    h.write_u64(digest);
    h.write_u64(fingerprint);
    h.finish()
}

/// A node's snapshot storage: complete snapshots (durable), partial ones (lost on crash).
#[derive(Clone, Debug, Default)]
pub struct SnapshotStore {
    complete: BTreeMap<(PartitionId, LogIndex, Term), Bytes>,
    staging: BTreeMap<PartitionId, (SnapshotMeta, Vec<u8>)>,
}

impl SnapshotStore {
    /// Store a complete snapshot.
    pub fn put(&mut self, meta: &SnapshotMeta, bytes: Bytes) {
        self.complete.insert((meta.partition, meta.index, meta.term), bytes);
    }

    /// The bytes of a complete snapshot.
    pub fn get(&self, partition: PartitionId, index: LogIndex, term: Term) -> Option<&Bytes> {
        self.complete.get(&(partition, index, term))
    }

    /// `len` bytes at `offset` of a complete snapshot (an error if it is gone).
    pub fn read(
        &self,
        partition: PartitionId,
        index: LogIndex,
        term: Term,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, String> {
        let bytes = self.get(partition, index, term).ok_or_else(|| "snapshot removed".to_string())?;
        Ok(bytes.slice(crate::snapshot::chunk_range(bytes.len(), offset, len)))
    }

    /// Stage a received chunk; the last one is checked against the meta and published.
    pub fn stage(&mut self, chunk: &SnapshotChunkWrite) -> Result<(), String> {
        let meta = &chunk.meta;
        let staged = self.staging.entry(meta.partition).or_insert_with(|| (meta.clone(), Vec::new()));
        if !staged.0.is(meta.index, meta.term) || chunk.offset == 0 {
            *staged = (meta.clone(), Vec::new());
        }
        if staged.1.len() as u64 != chunk.offset {
            return Err(format!("chunk at {} after {} staged bytes", chunk.offset, staged.1.len()));
        }
        staged.1.extend_from_slice(&chunk.data);
        if chunk.done {
            let (meta, bytes) = self.staging.remove(&meta.partition).expect("staged above");
            if bytes.len() as u64 != meta.size || crc32c(&bytes) != meta.checksum {
                return Err("staged snapshot fails its size or checksum".into());
            }
            self.put(&meta, bytes.into());
        }
        Ok(())
    }

    /// Keep only the snapshots of `partition` at or above `index` (older ones are garbage once a
    /// newer meta is durable).
    pub fn retain_from(&mut self, partition: PartitionId, index: LogIndex) {
        self.complete.retain(|&(p, i, _), _| p != partition || i >= index);
    }

    /// A crash loses the partial transfers.
    pub fn crashed(&mut self) {
        self.staging.clear();
    }

    /// The data directory is lost.
    pub fn wipe(&mut self) {
        *self = SnapshotStore::default();
    }
}

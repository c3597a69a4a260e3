//! Snapshots of one partition: what the runtime stores about a snapshot ([`SnapshotMeta`]), the
//! requests a state machine makes of its driver to produce, read, stage and install one, and the
//! checks a received chunk must pass.
//!
//! The bytes of a snapshot (the application's state at `index`) never pass through the core: the
//! driver reads and writes them (a snapshot directory next to the WAL in the runtime, a map in the
//! simulator). The core decides *when* a snapshot is taken, *what* it covers (index, term,
//! membership, the two-phase bookkeeping of the partition at that index), what the WAL may then
//! drop, and runs the chunked InstallSnapshot exchange (Raft §7) with flow control (one chunk in
//! flight per follower), checksums, resumption (after a dropped chunk or a leader change) and
//! abandonment (a newer term, a newer snapshot).

use crate::codec::crc32c;
use crate::entry::LogEntry;
use crate::hlc::Ticket;
use crate::ids::{LogIndex, PartitionId, Term};
use crate::raft::Membership;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Everything the runtime stores about a snapshot, durably and atomically with the compaction it
/// allows. The application's bytes are described by `size` and `checksum`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Partition of the snapshot.
    pub partition: PartitionId,
    /// Last log index the snapshot covers (the application had applied exactly this far).
    pub index: LogIndex,
    /// Term of the entry at `index`.
    pub term: Term,
    /// The configuration in effect at `index`.
    pub membership: Membership,
    /// The partition's fence generation at `index` (guarded writes check it).
    pub generation: u64,
    /// Two-phase entries committed at or below `index` and still awaiting their marker.
    pub held: Vec<LogEntry>,
    /// Newest ticket issued by an entry at or below `index`: tickets issued later order after it,
    /// and a resolution asked for a ticket at or below it that is neither held nor remembered was
    /// compacted away ([`crate::ProposeError::TicketCompacted`]).
    pub last_ticket: Ticket,
    /// Size of the application's bytes.
    pub size: u64,
    /// CRC32C of the application's bytes.
    pub checksum: u32,
}

impl SnapshotMeta {
    /// Encode with the runtime's payload codec (for WAL records and wire formats that carry it as
    /// bytes).
    pub fn encode(&self) -> Vec<u8> {
        crate::payload::encode(self)
    }

    /// Decode [`SnapshotMeta::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotMeta, crate::payload::PayloadError> {
        crate::payload::decode(bytes)
    }

    /// Does this meta name the same snapshot as `(index, term)`?
    pub fn is(&self, index: LogIndex, term: Term) -> bool {
        self.index == index && self.term == term
    }
}

/// The driver must have the application write a snapshot of its state at `meta.index` (it has
/// applied exactly that far once the deliveries of the same [`crate::Ready`] are handed over), then
/// report it with `on_snapshot_taken` (with `size` and `checksum` filled in) or
/// `on_snapshot_failed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// What the snapshot covers; `size` and `checksum` are 0 until the bytes are written.
    pub meta: SnapshotMeta,
}

/// A leader needs `len` bytes at `offset` of its stored snapshot `(index, term)` to send to a
/// follower; report them with `on_snapshot_chunk_read(id, ..)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunkRead {
    /// Identifier to report back.
    pub id: u64,
    /// Partition.
    pub partition: PartitionId,
    /// Snapshot index.
    pub index: LogIndex,
    /// Snapshot term.
    pub term: Term,
    /// Byte offset.
    pub offset: u64,
    /// Bytes wanted (fewer at the end).
    pub len: u64,
}

/// A follower received a valid chunk of `meta`'s snapshot at `offset`: stage it (never visible
/// before the last chunk is in). With `done`, the chunk is the last: check the whole staged file
/// against `meta.size` and `meta.checksum` and make it the snapshot `(index, term)` atomically.
/// Report with `on_snapshot_chunk_written`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunkWrite {
    /// The snapshot the chunk belongs to.
    pub meta: SnapshotMeta,
    /// Byte offset of `data`.
    pub offset: u64,
    /// The chunk.
    pub data: Bytes,
    /// Last chunk.
    pub done: bool,
}

/// Why a snapshot chunk was refused. The state machine is left unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SnapshotChunkError {
    /// The chunk's bytes do not match its checksum.
    #[error("snapshot chunk at offset {offset} fails its checksum")]
    BadChecksum {
        /// Offset of the chunk.
        offset: u64,
    },
    /// The chunk does not fit the snapshot it claims to belong to.
    #[error("malformed snapshot chunk: {0}")]
    Malformed(&'static str),
}

/// Structural checks of an InstallSnapshot chunk, before it touches any state.
pub fn validate_chunk(
    term: Term,
    meta: &SnapshotMeta,
    offset: u64,
    data: &[u8],
    done: bool,
    chunk_checksum: u32,
) -> Result<(), SnapshotChunkError> {
    if meta.index == 0 || meta.term == 0 {
        return Err(SnapshotChunkError::Malformed("a snapshot covers at least one entry"));
    }
    if meta.term > term {
        return Err(SnapshotChunkError::Malformed("snapshot term above the leader's term"));
    }
    let end = offset.checked_add(data.len() as u64).ok_or(SnapshotChunkError::Malformed("offset overflows"))?;
    if end > meta.size {
        return Err(SnapshotChunkError::Malformed("chunk extends past the snapshot's size"));
    }
    if done != (end == meta.size) {
        return Err(SnapshotChunkError::Malformed("the last chunk must end at the snapshot's size"));
    }
    if crc32c(data) != chunk_checksum {
        return Err(SnapshotChunkError::BadChecksum { offset });
    }
    Ok(())
}

/// The byte range of a chunk read of `len` bytes at `offset` from a snapshot of `size` bytes
/// (shorter at its end, empty past it).
pub fn chunk_range(size: usize, offset: u64, len: u64) -> std::ops::Range<usize> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(size);
    let end = usize::try_from(offset.saturating_add(len)).unwrap_or(usize::MAX).min(size);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64) -> SnapshotMeta {
        SnapshotMeta { partition: PartitionId(1), index: 5, term: 2, size, ..Default::default() }
    }

    #[test]
    fn chunks_are_checked_before_anything_changes() {
        let data = b"hello";
        let crc = crc32c(data);
        assert_eq!(validate_chunk(2, &meta(10), 0, data, false, crc), Ok(()));
        assert_eq!(validate_chunk(2, &meta(10), 5, data, true, crc), Ok(()));
        assert_eq!(
            validate_chunk(2, &meta(10), 0, data, false, crc ^ 1),
            Err(SnapshotChunkError::BadChecksum { offset: 0 })
        );
        assert!(matches!(validate_chunk(2, &meta(10), 6, data, true, crc), Err(SnapshotChunkError::Malformed(_))));
        assert!(matches!(validate_chunk(2, &meta(10), 5, data, false, crc), Err(SnapshotChunkError::Malformed(_))));
        assert!(matches!(validate_chunk(1, &meta(10), 0, data, false, crc), Err(SnapshotChunkError::Malformed(_))));
        assert!(matches!(
            validate_chunk(2, &meta(10), u64::MAX, data, false, crc),
            Err(SnapshotChunkError::Malformed(_))
        ));
    }

    #[test]
    fn meta_round_trips_through_the_payload_codec() {
        let m = meta(42);
        assert_eq!(SnapshotMeta::decode(&m.encode()), Ok(m));
        assert!(SnapshotMeta::decode(b"garbage").is_err());
    }
}

//! Moving application state between partitions during a split or merge, and the runtime's
//! reserved log types.
//!
//! The application registers a `Recipient<ExportState>` (the same actor that receives its
//! [`crate::RaftEvent`]s, so an export is answered after every event sent before it). To move a
//! range, the node leading the receiving partition asks its **local** application for the state of
//! the range in the source partition — after its local replica of the source applied the fence that
//! froze the source — and proposes it in the receiving partition's log as a sequence of import
//! chunks (`snapshot_chunk_bytes` each, the snapshots' chunk size), one proposal after the other,
//! so a range of any size moves without an entry above the transport's limits. Every replica
//! reassembles the chunks in log order ([`ImportAssembly`]) and applies the whole range as one
//! [`crate::RaftEvent::Imported`] when the last chunk applies: the import is atomic, replayed on
//! restore, and idempotent for an application that replaces the range's state with the imported
//! data. A retried import starts again at offset 0, which restarts the assembly. No snapshot is
//! taken while an assembly is incomplete (its chunks are not in the application's state yet).

use actix::Message;
use kommander_core::payload;
use kommander_core::system::HashRange;
use kommander_core::PartitionId;
use serde::{Deserialize, Serialize};

/// Log type of partition-0 entries carrying a [`kommander_core::system::SystemCommand`].
pub(crate) const SYSTEM_LOG_TYPE: &str = "kommander.system";
/// Log type of import entries (one entry per import: written before imports were chunked, still
/// replayed).
pub(crate) const IMPORT_LOG_TYPE: &str = "kommander.import";
/// Log type of import chunks.
pub(crate) const IMPORT_CHUNK_LOG_TYPE: &str = "kommander.import.chunk";
/// Prefix of every log type reserved for the runtime: applications' entries with such a type are
/// refused ([`crate::ReplicateError::ReservedLogType`]).
pub const RESERVED_PREFIX: &str = "kommander.";

/// Ask the application for the state of `range` in `partition`, serialized as it likes.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Vec<u8>, String>")]
pub struct ExportState {
    /// The partition the state is moving out of.
    pub partition: PartitionId,
    /// The key-hash range moving.
    pub range: HashRange,
}

/// The header of an import entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImportHeader {
    /// Where the state comes from.
    pub source: PartitionId,
    /// The source's generation after its fence (the state is as of that fence).
    pub generation: u64,
    /// The range moving.
    pub range: HashRange,
}

/// An import entry's payload: the header and the application's exported bytes.
#[derive(Serialize, Deserialize)]
struct ImportEntry {
    header: ImportHeader,
    data: Vec<u8>,
}

/// Encode an import entry's payload (the runtime's payload codec, `kommander_core::payload`): the
/// format of the single-entry imports written before imports were chunked.
#[cfg(test)]
pub(crate) fn encode_import(header: &ImportHeader, data: &[u8]) -> Vec<u8> {
    payload::encode(&ImportEntry { header: header.clone(), data: data.to_vec() })
}

/// Decode an import entry's payload; `None` if it is not one.
pub(crate) fn decode_import(bytes: &[u8]) -> Option<(ImportHeader, Vec<u8>)> {
    let entry: ImportEntry = payload::decode(bytes).ok()?;
    Some((entry.header, entry.data))
}

/// One chunk of an import: `data` is bytes `offset..offset + data.len()` of `total`.
#[derive(Serialize, Deserialize)]
struct ImportChunk {
    header: ImportHeader,
    offset: u64,
    total: u64,
    data: Vec<u8>,
}

/// The payloads of the import chunks carrying `data` (at least one, for an empty range).
pub(crate) fn encode_import_chunks(header: &ImportHeader, data: &[u8], chunk_bytes: usize) -> Vec<Vec<u8>> {
    let total = data.len() as u64;
    let mut chunks: Vec<&[u8]> = data.chunks(chunk_bytes.max(1)).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let mut offset = 0;
    chunks
        .into_iter()
        .map(|piece| {
            let chunk = ImportChunk { header: header.clone(), offset, total, data: piece.to_vec() };
            offset += piece.len() as u64;
            payload::encode(&chunk)
        })
        .collect()
}

/// Reassembles import chunks applied in log order into whole imports.
#[derive(Debug, Default)]
pub(crate) struct ImportAssembly {
    pending: Option<(ImportHeader, u64, Vec<u8>)>,
}

impl ImportAssembly {
    /// Take the chunk in `bytes`; returns the whole import once its last chunk is in. A chunk
    /// that does not continue the assembly (a retried import starting over, or a chunk whose
    /// start is missing) restarts or drops it.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Option<(ImportHeader, Vec<u8>)> {
        let chunk: ImportChunk = payload::decode(bytes).ok()?;
        if chunk.offset == 0 {
            self.pending = Some((chunk.header.clone(), chunk.total, Vec::new()));
        }
        let continues = self.pending.as_ref().is_some_and(|(header, total, data)| {
            *header == chunk.header && *total == chunk.total && data.len() as u64 == chunk.offset
        });
        if !continues {
            self.pending = None;
            return None;
        }
        let (_, total, data) = self.pending.as_mut()?;
        data.extend_from_slice(&chunk.data);
        if data.len() as u64 >= *total {
            let (header, _, data) = self.pending.take()?;
            return Some((header, data));
        }
        None
    }

    /// Is an import half applied (some chunks in, not the last)?
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Forget a half-applied import (the state was replaced by a snapshot, or replayed anew).
    pub(crate) fn reset(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reassemble_in_order_and_a_retry_starts_over() {
        let header = ImportHeader { source: PartitionId(3), generation: 9, range: HashRange { start: 5, end: 77 } };
        let data: Vec<u8> = (0..=255).collect();
        let chunks = encode_import_chunks(&header, &data, 100);
        assert_eq!(chunks.len(), 3);
        let mut assembly = ImportAssembly::default();
        assert_eq!(assembly.push(&chunks[0]), None);
        assert_eq!(assembly.push(&chunks[1]), None);
        assert!(assembly.is_pending());
        // A retried import starts again at offset 0: the first attempt's chunks are dropped.
        assert_eq!(assembly.push(&chunks[0]), None);
        assert_eq!(assembly.push(&chunks[1]), None);
        assert_eq!(assembly.push(&chunks[2]), Some((header.clone(), data.clone())));
        assert!(!assembly.is_pending());
        // A chunk whose start is missing (after a snapshot) is dropped, never applied.
        assert_eq!(assembly.push(&chunks[2]), None);
        let empty = encode_import_chunks(&header, &[], 100);
        assert_eq!(empty.len(), 1);
        assert_eq!(assembly.push(&empty[0]), Some((header, Vec::new())));
        assert_eq!(assembly.push(b"not a chunk"), None);
    }

    #[test]
    fn import_payloads_round_trip_and_reject_other_bytes() {
        let header = ImportHeader { source: PartitionId(3), generation: 9, range: HashRange { start: 5, end: 77 } };
        let payload = encode_import(&header, b"state");
        assert_eq!(decode_import(&payload), Some((header, b"state".to_vec())));
        assert_eq!(decode_import(b"KMI1short"), None);
        assert_eq!(decode_import(&payload[1..]), None);
        assert_eq!(decode_import(&payload[..payload.len() - 1]), None);
    }
}

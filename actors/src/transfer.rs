//! Moving application state between partitions during a split or merge, and the runtime's
//! reserved log types.
//!
//! The application registers a `Recipient<ExportState>` (the same actor that receives its
//! [`crate::RaftEvent`]s, so an export is answered after every event sent before it). To move a
//! range, the node leading the receiving partition asks its **local** application for the state of
//! the range in the source partition — after its local replica of the source applied the fence that
//! froze the source — and proposes it as one import entry in the receiving partition's log. Every
//! replica applies that entry as a [`crate::RaftEvent::Imported`] in log order, so the import is
//! atomic (one entry), replayed on restore, and idempotent for an application that replaces the
//! range's state with the imported data.

use actix::Message;
use kommander_core::system::HashRange;
use kommander_core::PartitionId;

/// Log type of partition-0 entries carrying a [`kommander_core::system::SystemCommand`].
pub(crate) const SYSTEM_LOG_TYPE: &str = "kommander.system";
/// Log type of import entries.
pub(crate) const IMPORT_LOG_TYPE: &str = "kommander.import";
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ImportHeader {
    /// Where the state comes from.
    pub source: PartitionId,
    /// The source's generation after its fence (the state is as of that fence).
    pub generation: u64,
    /// The range moving.
    pub range: HashRange,
}

const MAGIC: &[u8; 4] = b"KMI1";
const HEADER_LEN: usize = 4 + 4 + 8 + 8 + 8;

/// Encode an import entry's payload.
pub(crate) fn encode_import(header: &ImportHeader, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header.source.0.to_le_bytes());
    out.extend_from_slice(&header.generation.to_le_bytes());
    out.extend_from_slice(&header.range.start.to_le_bytes());
    out.extend_from_slice(&header.range.end.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// Decode an import entry's payload; `None` if it is not one.
pub(crate) fn decode_import(payload: &[u8]) -> Option<(ImportHeader, &[u8])> {
    if payload.len() < HEADER_LEN || &payload[..4] != MAGIC {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes(payload[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(payload[at..at + 8].try_into().expect("8 bytes"));
    let header = ImportHeader {
        source: PartitionId(u32_at(4)),
        generation: u64_at(8),
        range: HashRange { start: u64_at(16), end: u64_at(24) },
    };
    Some((header, &payload[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_payloads_round_trip_and_reject_other_bytes() {
        let header = ImportHeader { source: PartitionId(3), generation: 9, range: HashRange { start: 5, end: 77 } };
        let payload = encode_import(&header, b"state");
        assert_eq!(decode_import(&payload), Some((header, &b"state"[..])));
        assert_eq!(decode_import(b"KMI1short"), None);
        assert_eq!(decode_import(&payload[1..]), None);
    }
}

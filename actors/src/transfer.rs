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
use kommander_core::payload;
use kommander_core::system::HashRange;
use kommander_core::PartitionId;
use serde::{Deserialize, Serialize};

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

/// Encode an import entry's payload (the runtime's payload codec, `kommander_core::payload`).
pub(crate) fn encode_import(header: &ImportHeader, data: &[u8]) -> Vec<u8> {
    payload::encode(&ImportEntry { header: header.clone(), data: data.to_vec() })
}

/// Decode an import entry's payload; `None` if it is not one.
pub(crate) fn decode_import(bytes: &[u8]) -> Option<(ImportHeader, Vec<u8>)> {
    let entry: ImportEntry = payload::decode(bytes).ok()?;
    Some((entry.header, entry.data))
}

#[cfg(test)]
mod tests {
    use super::*;

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

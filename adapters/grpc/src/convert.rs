//! Conversions between kommander's core types and the generated protobuf types, and the encoding
//! of a whole [`MessageBatch`] into the bytes a frame carries. Decoding never panics: any input
//! either yields a batch or a [`DecodeError`]. Structural checks (terms, indexes, limits) are left
//! to the node's [`kommander_core::validate_batch`]; this module only rejects what cannot be
//! represented in core types.

use crate::proto;
use kommander_core::{
    AppendResult, EntryKind, Envelope, LogEntry, MessageBatch, NodeId, PartitionId, RaftMessage, SnapshotMeta, Ticket,
};
use prost::Message;
use thiserror::Error;

/// A protobuf value that has no core equivalent.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConvertError {
    /// An envelope without its `message` oneof.
    #[error("envelope carries no message")]
    MissingMessage,
    /// An append response without its `result` oneof.
    #[error("append response carries no result")]
    MissingAppendResult,
    /// A log entry without its ticket.
    #[error("log entry {0} carries no ticket")]
    MissingTicket(u64),
    /// A log entry whose kind is `ENTRY_KIND_UNSPECIFIED`.
    #[error("log entry {0} has an unspecified kind")]
    UnspecifiedEntryKind(u64),
    /// A log entry whose kind is not a known enum value.
    #[error("log entry {index} has unknown kind {value}")]
    UnknownEntryKind {
        /// Index of the entry.
        index: u64,
        /// The raw enum value.
        value: i32,
    },
    /// A partition id above the 32-bit range.
    #[error("partition id {0} is out of range")]
    PartitionOutOfRange(u64),
    /// A ticket's logical counter above the 32-bit range.
    #[error("ticket logical counter {0} is out of range")]
    LogicalOutOfRange(u64),
    /// A snapshot chunk whose meta cannot be decoded.
    #[error("snapshot meta: {0}")]
    SnapshotMeta(String),
}

/// Why frame body bytes could not be turned into a [`MessageBatch`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes are not a protobuf `Batch`.
    #[error("protobuf decoding failed: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The `Batch` holds values with no core equivalent.
    #[error("conversion failed: {0}")]
    Convert(#[from] ConvertError),
}

/// Encode `batch` as the protobuf bytes a frame carries.
pub fn encode_batch(batch: &MessageBatch) -> Vec<u8> {
    proto::Batch::from(batch).encode_to_vec()
}

/// Decode frame body bytes into a batch. Never panics, whatever `bytes` holds.
pub fn decode_batch(bytes: &[u8]) -> Result<MessageBatch, DecodeError> {
    let batch = proto::Batch::decode(bytes)?;
    Ok(MessageBatch::try_from(batch)?)
}

impl From<&MessageBatch> for proto::Batch {
    fn from(batch: &MessageBatch) -> Self {
        proto::Batch {
            cluster_id: batch.cluster_id.clone(),
            from: batch.from.0,
            to: batch.to.0,
            messages: batch.messages.iter().map(proto::Envelope::from).collect(),
        }
    }
}

impl TryFrom<proto::Batch> for MessageBatch {
    type Error = ConvertError;

    fn try_from(batch: proto::Batch) -> Result<Self, ConvertError> {
        Ok(MessageBatch {
            cluster_id: batch.cluster_id,
            from: NodeId(batch.from),
            to: NodeId(batch.to),
            messages: batch.messages.into_iter().map(Envelope::try_from).collect::<Result<_, _>>()?,
        })
    }
}

impl From<&Envelope> for proto::Envelope {
    fn from(envelope: &Envelope) -> Self {
        proto::Envelope {
            partition: u64::from(envelope.partition.0),
            from: envelope.from.0,
            to: envelope.to.0,
            message: Some(message_to_proto(&envelope.message)),
        }
    }
}

impl TryFrom<proto::Envelope> for Envelope {
    type Error = ConvertError;

    fn try_from(envelope: proto::Envelope) -> Result<Self, ConvertError> {
        let partition =
            u32::try_from(envelope.partition).map_err(|_| ConvertError::PartitionOutOfRange(envelope.partition))?;
        let message = envelope.message.ok_or(ConvertError::MissingMessage)?;
        Ok(Envelope {
            partition: PartitionId(partition),
            from: NodeId(envelope.from),
            to: NodeId(envelope.to),
            message: message_from_proto(message)?,
        })
    }
}

fn message_to_proto(message: &RaftMessage) -> proto::envelope::Message {
    use proto::envelope::Message as M;
    match message {
        RaftMessage::VoteRequest { term, last_log_index, last_log_term, pre_vote, transfer } => {
            M::VoteRequest(proto::VoteRequest {
                term: *term,
                last_log_index: *last_log_index,
                last_log_term: *last_log_term,
                pre_vote: *pre_vote,
                transfer: *transfer,
            })
        }
        RaftMessage::VoteResponse { term, granted, pre_vote } => {
            M::VoteResponse(proto::VoteResponse { term: *term, granted: *granted, pre_vote: *pre_vote })
        }
        RaftMessage::AppendRequest { term, prev_log_index, prev_log_term, entries, leader_commit } => {
            M::AppendRequest(proto::AppendRequest {
                term: *term,
                prev_log_index: *prev_log_index,
                prev_log_term: *prev_log_term,
                entries: entries.iter().map(proto::LogEntry::from).collect(),
                leader_commit: *leader_commit,
            })
        }
        RaftMessage::AppendResponse { term, prev_log_index, result } => M::AppendResponse(proto::AppendResponse {
            term: *term,
            prev_log_index: *prev_log_index,
            result: Some(result_to_proto(result)),
        }),
        RaftMessage::MembershipRequest { join, address, application_address } => {
            M::MembershipRequest(proto::MembershipRequest {
                join: *join,
                address: address.clone(),
                application_address: application_address.clone().unwrap_or_default(),
            })
        }
        RaftMessage::InstallSnapshot { term, meta, offset, data, done, chunk_checksum } => {
            M::InstallSnapshot(proto::InstallSnapshot {
                term: *term,
                meta: meta.encode(),
                offset: *offset,
                data: data.to_vec(),
                done: *done,
                chunk_checksum: *chunk_checksum,
            })
        }
        RaftMessage::SnapshotNeeded { term, index } => {
            M::SnapshotNeeded(proto::SnapshotNeeded { term: *term, index: *index })
        }
        RaftMessage::Quiesce { term, index, index_term, ack } => {
            M::Quiesce(proto::Quiesce { term: *term, index: *index, index_term: *index_term, ack: *ack })
        }
        RaftMessage::ReadRound { term, round, ack } => {
            M::ReadRound(proto::ReadRound { term: *term, round: *round, ack: *ack })
        }
        RaftMessage::ReadIndexRequest { term, request } => {
            M::ReadIndexRequest(proto::ReadIndexRequest { term: *term, request: *request })
        }
        RaftMessage::ReadIndexResponse { term, request, index } => {
            M::ReadIndexResponse(proto::ReadIndexResponse { term: *term, request: *request, index: *index })
        }
        RaftMessage::TimeoutNow { term } => M::TimeoutNow(proto::TimeoutNow { term: *term }),
        RaftMessage::SnapshotResponse { term, index, snapshot_term, next_offset, installed } => {
            M::SnapshotResponse(proto::SnapshotResponse {
                term: *term,
                index: *index,
                snapshot_term: *snapshot_term,
                next_offset: *next_offset,
                installed: *installed,
            })
        }
    }
}

fn message_from_proto(message: proto::envelope::Message) -> Result<RaftMessage, ConvertError> {
    use proto::envelope::Message as M;
    Ok(match message {
        M::VoteRequest(m) => RaftMessage::VoteRequest {
            term: m.term,
            last_log_index: m.last_log_index,
            last_log_term: m.last_log_term,
            pre_vote: m.pre_vote,
            transfer: m.transfer,
        },
        M::VoteResponse(m) => RaftMessage::VoteResponse { term: m.term, granted: m.granted, pre_vote: m.pre_vote },
        M::AppendRequest(m) => RaftMessage::AppendRequest {
            term: m.term,
            prev_log_index: m.prev_log_index,
            prev_log_term: m.prev_log_term,
            entries: m.entries.into_iter().map(LogEntry::try_from).collect::<Result<_, _>>()?,
            leader_commit: m.leader_commit,
        },
        M::AppendResponse(m) => RaftMessage::AppendResponse {
            term: m.term,
            prev_log_index: m.prev_log_index,
            result: result_from_proto(m.result.ok_or(ConvertError::MissingAppendResult)?),
        },
        M::MembershipRequest(m) => RaftMessage::MembershipRequest {
            join: m.join,
            address: m.address,
            application_address: (!m.application_address.is_empty()).then_some(m.application_address),
        },
        M::InstallSnapshot(m) => RaftMessage::InstallSnapshot {
            term: m.term,
            meta: SnapshotMeta::decode(&m.meta).map_err(|e| ConvertError::SnapshotMeta(e.to_string()))?,
            offset: m.offset,
            data: m.data.into(),
            done: m.done,
            chunk_checksum: m.chunk_checksum,
        },
        M::SnapshotNeeded(m) => RaftMessage::SnapshotNeeded { term: m.term, index: m.index },
        M::Quiesce(m) => RaftMessage::Quiesce { term: m.term, index: m.index, index_term: m.index_term, ack: m.ack },
        M::ReadRound(m) => RaftMessage::ReadRound { term: m.term, round: m.round, ack: m.ack },
        M::ReadIndexRequest(m) => RaftMessage::ReadIndexRequest { term: m.term, request: m.request },
        M::ReadIndexResponse(m) => RaftMessage::ReadIndexResponse { term: m.term, request: m.request, index: m.index },
        M::TimeoutNow(m) => RaftMessage::TimeoutNow { term: m.term },
        M::SnapshotResponse(m) => RaftMessage::SnapshotResponse {
            term: m.term,
            index: m.index,
            snapshot_term: m.snapshot_term,
            next_offset: m.next_offset,
            installed: m.installed,
        },
    })
}

fn result_to_proto(result: &AppendResult) -> proto::append_response::Result {
    use proto::append_response::Result as R;
    match *result {
        AppendResult::Success { match_index } => R::Success(proto::AppendSuccess { match_index }),
        AppendResult::Conflict { hint_index, hint_term } => {
            R::Conflict(proto::AppendConflict { hint_index, hint_term })
        }
        AppendResult::StaleTerm => R::StaleTerm(proto::AppendStaleTerm {}),
    }
}

fn result_from_proto(result: proto::append_response::Result) -> AppendResult {
    use proto::append_response::Result as R;
    match result {
        R::Success(s) => AppendResult::Success { match_index: s.match_index },
        R::Conflict(c) => AppendResult::Conflict { hint_index: c.hint_index, hint_term: c.hint_term },
        R::StaleTerm(_) => AppendResult::StaleTerm,
    }
}

impl From<&LogEntry> for proto::LogEntry {
    fn from(entry: &LogEntry) -> Self {
        proto::LogEntry {
            index: entry.index,
            term: entry.term,
            kind: kind_to_proto(entry.kind) as i32,
            generation: match entry.kind {
                EntryKind::Fence { generation } | EntryKind::Guarded { generation } => generation,
                _ => 0,
            },
            log_type: entry.log_type.to_string(),
            payload: entry.payload.to_vec(),
            ticket: Some(proto::Ticket::from(entry.ticket)),
        }
    }
}

impl TryFrom<proto::LogEntry> for LogEntry {
    type Error = ConvertError;

    fn try_from(entry: proto::LogEntry) -> Result<Self, ConvertError> {
        let ticket = entry.ticket.ok_or(ConvertError::MissingTicket(entry.index))?;
        Ok(LogEntry {
            index: entry.index,
            term: entry.term,
            kind: kind_from_proto(entry.index, entry.kind, entry.generation)?,
            log_type: entry.log_type.into(),
            payload: entry.payload.into(),
            ticket: Ticket::try_from(ticket)?,
        })
    }
}

fn kind_to_proto(kind: EntryKind) -> proto::EntryKind {
    match kind {
        EntryKind::Application { auto_commit: true } => proto::EntryKind::ApplicationAutoCommit,
        EntryKind::Application { auto_commit: false } => proto::EntryKind::ApplicationTwoPhase,
        EntryKind::Barrier => proto::EntryKind::Barrier,
        EntryKind::CommitMarker => proto::EntryKind::CommitMarker,
        EntryKind::RollbackMarker => proto::EntryKind::RollbackMarker,
        EntryKind::Fence { .. } => proto::EntryKind::Fence,
        EntryKind::Guarded { .. } => proto::EntryKind::Guarded,
        EntryKind::Config => proto::EntryKind::Config,
    }
}

fn kind_from_proto(index: u64, value: i32, generation: u64) -> Result<EntryKind, ConvertError> {
    match proto::EntryKind::try_from(value) {
        Ok(proto::EntryKind::Unspecified) => Err(ConvertError::UnspecifiedEntryKind(index)),
        Ok(proto::EntryKind::ApplicationAutoCommit) => Ok(EntryKind::Application { auto_commit: true }),
        Ok(proto::EntryKind::ApplicationTwoPhase) => Ok(EntryKind::Application { auto_commit: false }),
        Ok(proto::EntryKind::Barrier) => Ok(EntryKind::Barrier),
        Ok(proto::EntryKind::CommitMarker) => Ok(EntryKind::CommitMarker),
        Ok(proto::EntryKind::RollbackMarker) => Ok(EntryKind::RollbackMarker),
        Ok(proto::EntryKind::Fence) => Ok(EntryKind::Fence { generation }),
        Ok(proto::EntryKind::Guarded) => Ok(EntryKind::Guarded { generation }),
        Ok(proto::EntryKind::Config) => Ok(EntryKind::Config),
        Err(_) => Err(ConvertError::UnknownEntryKind { index, value }),
    }
}

impl From<Ticket> for proto::Ticket {
    fn from(ticket: Ticket) -> Self {
        proto::Ticket { physical_ms: ticket.physical_ms, logical: u64::from(ticket.logical), node: ticket.node }
    }
}

impl TryFrom<proto::Ticket> for Ticket {
    type Error = ConvertError;

    fn try_from(ticket: proto::Ticket) -> Result<Self, ConvertError> {
        let logical = u32::try_from(ticket.logical).map_err(|_| ConvertError::LogicalOutOfRange(ticket.logical))?;
        Ok(Ticket { physical_ms: ticket.physical_ms, logical, node: ticket.node })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, kind: EntryKind) -> LogEntry {
        LogEntry {
            index,
            term: 3,
            kind,
            log_type: "orders".into(),
            payload: vec![index as u8, 0xff, 0].into(),
            ticket: Ticket { physical_ms: 1_700_000_000_000 + index, logical: u32::MAX, node: 7 },
        }
    }

    fn envelope(partition: u32, message: RaftMessage) -> Envelope {
        Envelope { partition: PartitionId(partition), from: NodeId(1), to: NodeId(2), message }
    }

    fn every_kind() -> MessageBatch {
        let entries = vec![
            entry(5, EntryKind::Application { auto_commit: true }),
            entry(6, EntryKind::Application { auto_commit: false }),
            entry(7, EntryKind::Barrier),
            entry(8, EntryKind::CommitMarker),
            entry(9, EntryKind::RollbackMarker),
        ];
        let response = |result| RaftMessage::AppendResponse { term: 4, prev_log_index: 9, result };
        let messages = vec![
            envelope(
                0,
                RaftMessage::VoteRequest {
                    term: 2,
                    last_log_index: 4,
                    last_log_term: 1,
                    pre_vote: false,
                    transfer: false,
                },
            ),
            envelope(
                1,
                RaftMessage::VoteRequest {
                    term: 3,
                    last_log_index: 0,
                    last_log_term: 0,
                    pre_vote: true,
                    transfer: false,
                },
            ),
            envelope(2, RaftMessage::VoteResponse { term: 2, granted: true, pre_vote: false }),
            envelope(3, RaftMessage::VoteResponse { term: 3, granted: false, pre_vote: true }),
            envelope(
                u32::MAX,
                RaftMessage::AppendRequest { term: 3, prev_log_index: 4, prev_log_term: 2, entries, leader_commit: 4 },
            ),
            envelope(
                4,
                RaftMessage::AppendRequest {
                    term: 3,
                    prev_log_index: 9,
                    prev_log_term: 3,
                    entries: vec![],
                    leader_commit: 9,
                },
            ),
            envelope(5, response(AppendResult::Success { match_index: 9 })),
            envelope(6, response(AppendResult::Conflict { hint_index: 3, hint_term: Some(2) })),
            envelope(7, response(AppendResult::Conflict { hint_index: 1, hint_term: None })),
            envelope(8, response(AppendResult::StaleTerm)),
            envelope(
                1,
                RaftMessage::VoteRequest {
                    term: 3,
                    last_log_index: 2,
                    last_log_term: 2,
                    pre_vote: false,
                    transfer: true,
                },
            ),
            envelope(1, RaftMessage::ReadRound { term: 3, round: 17, ack: false }),
            envelope(1, RaftMessage::ReadRound { term: 3, round: 17, ack: true }),
            envelope(1, RaftMessage::ReadIndexRequest { term: 3, request: u64::MAX - 1 }),
            envelope(1, RaftMessage::ReadIndexResponse { term: 3, request: 5, index: Some(0) }),
            envelope(1, RaftMessage::ReadIndexResponse { term: 3, request: 5, index: None }),
            envelope(1, RaftMessage::TimeoutNow { term: 3 }),
        ];
        MessageBatch { cluster_id: "cluster-a".into(), from: NodeId(1), to: NodeId(2), messages }
    }

    #[test]
    fn every_message_kind_round_trips() {
        let batch = every_kind();
        assert_eq!(decode_batch(&encode_batch(&batch)), Ok(batch));
        let empty = MessageBatch { cluster_id: String::new(), from: NodeId(0), to: NodeId(0), messages: vec![] };
        assert_eq!(decode_batch(&encode_batch(&empty)), Ok(empty));
    }

    /// The entries of the append request in envelope 4 of [`every_kind`].
    fn entries_of(batch: &mut proto::Batch) -> &mut Vec<proto::LogEntry> {
        match &mut batch.messages[4].message {
            Some(proto::envelope::Message::AppendRequest(append)) => &mut append.entries,
            other => panic!("envelope 4 is an append request, not {other:?}"),
        }
    }

    #[test]
    fn values_without_core_equivalent_are_typed_errors() {
        let mut batch = proto::Batch::from(&every_kind());
        batch.messages[0].partition = u64::from(u32::MAX) + 1;
        let bytes = batch.encode_to_vec();
        assert_eq!(
            decode_batch(&bytes),
            Err(DecodeError::Convert(ConvertError::PartitionOutOfRange(u64::from(u32::MAX) + 1)))
        );

        let mut batch = proto::Batch::from(&every_kind());
        batch.messages[0].message = None;
        assert_eq!(decode_batch(&batch.encode_to_vec()), Err(ConvertError::MissingMessage.into()));

        let mut batch = proto::Batch::from(&every_kind());
        entries_of(&mut batch)[0].kind = 0;
        entries_of(&mut batch)[1].kind = 99;
        entries_of(&mut batch)[2].ticket = None;
        assert_eq!(decode_batch(&batch.encode_to_vec()), Err(ConvertError::UnspecifiedEntryKind(5).into()));
        entries_of(&mut batch)[0].kind = 1;
        assert_eq!(
            decode_batch(&batch.encode_to_vec()),
            Err(ConvertError::UnknownEntryKind { index: 6, value: 99 }.into())
        );
        entries_of(&mut batch)[1].kind = 2;
        assert_eq!(decode_batch(&batch.encode_to_vec()), Err(ConvertError::MissingTicket(7).into()));
        entries_of(&mut batch)[2].ticket = Some(proto::Ticket { physical_ms: 1, logical: 1 << 32, node: 1 });
        assert_eq!(decode_batch(&batch.encode_to_vec()), Err(ConvertError::LogicalOutOfRange(1 << 32).into()));

        let mut batch = proto::Batch::from(&every_kind());
        let Some(proto::envelope::Message::AppendResponse(response)) = &mut batch.messages[6].message else {
            panic!("envelope 6 is an append response")
        };
        response.result = None;
        assert_eq!(decode_batch(&batch.encode_to_vec()), Err(ConvertError::MissingAppendResult.into()));
    }

    #[test]
    fn garbage_and_truncations_are_errors_not_panics() {
        let bytes = encode_batch(&every_kind());
        for len in 0..bytes.len() {
            let _ = decode_batch(&bytes[..len]);
        }
        for garbage in [&[0xff_u8; 16][..], &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], &[0x22, 0x80]] {
            assert!(matches!(decode_batch(garbage), Err(DecodeError::Protobuf(_))), "{garbage:?}");
        }
        let mut flipped = bytes.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x5a;
            let _ = decode_batch(&flipped);
            flipped[i] ^= 0x5a;
        }
    }
}

//! Structural checks of message batches that arrive from the network, before any partition sees
//! them: sizes within limits, sender and destination consistent, entries consecutive and below
//! their message's term, terms and ticket times within sane bounds, and no index arithmetic that
//! could overflow. A batch that fails any check is rejected whole, so hostile or corrupt input
//! changes nothing.

use crate::entry::LogEntry;
use crate::hlc::MAX_PHYSICAL_MS;
use crate::ids::{NodeId, PartitionId};
use crate::message::{AppendResult, MessageBatch, RaftMessage};
use crate::snapshot::{validate_chunk, SnapshotChunkError};
use thiserror::Error;

/// Bounds a node accepts on inbound batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageLimits {
    /// Envelopes per batch.
    pub max_messages: usize,
    /// Entries per append request.
    pub max_entries_per_message: usize,
    /// Bytes of one entry's payload.
    pub max_payload_bytes: usize,
    /// Bytes of one entry's `log_type`.
    pub max_log_type_bytes: usize,
    /// Bytes of the cluster id.
    pub max_cluster_id_bytes: usize,
    /// Highest partition id that may appear (partitions are dense small numbers).
    pub max_partition_id: u32,
    /// Highest term that may appear anywhere in a message (message term, log anchors' terms,
    /// entry terms, conflict hints). Default `u64::MAX / 4`: far beyond any real cluster (one
    /// election per millisecond for a hundred million years stays below 2^52), yet it leaves
    /// every `term + 1` a replica computes far from overflowing, so a hostile peer cannot push a
    /// partition to the end of the term space where it could never elect a leader again.
    pub max_term: u64,
    /// Highest physical time (ms since the Unix epoch) an entry's ticket may carry. Default
    /// [`MAX_PHYSICAL_MS`] (the year 3000): a ticket beyond it is corrupt or hostile, and would
    /// drag every replica's hybrid logical clock along.
    pub max_ticket_physical_ms: u64,
}

impl Default for MessageLimits {
    fn default() -> Self {
        MessageLimits {
            max_messages: 65_536,
            max_entries_per_message: 4_096,
            max_payload_bytes: 8 * 1024 * 1024,
            max_log_type_bytes: 256,
            max_cluster_id_bytes: 256,
            max_partition_id: 1 << 20,
            max_term: u64::MAX / 4,
            max_ticket_physical_ms: MAX_PHYSICAL_MS,
        }
    }
}

/// Why an inbound batch was rejected by [`validate_batch`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InvalidBatch {
    /// More envelopes than [`MessageLimits::max_messages`].
    #[error("batch carries {0} messages, more than the limit")]
    TooManyMessages(usize),
    /// The cluster id is empty or longer than the limit.
    #[error("cluster id is empty or too long")]
    BadClusterId,
    /// A batch from a node to itself.
    #[error("batch from {0} addressed to itself")]
    SelfAddressed(NodeId),
    /// An envelope's sender differs from the batch's.
    #[error("envelope sender {envelope} differs from batch sender {batch}")]
    SenderMismatch {
        /// Sender named by the batch.
        batch: NodeId,
        /// Sender named by the envelope.
        envelope: NodeId,
    },
    /// An envelope's destination differs from the batch's.
    #[error("envelope destination {envelope} differs from batch destination {batch}")]
    DestinationMismatch {
        /// Destination named by the batch.
        batch: NodeId,
        /// Destination named by the envelope.
        envelope: NodeId,
    },
    /// A partition id above [`MessageLimits::max_partition_id`].
    #[error("partition {0} is out of range")]
    PartitionOutOfRange(PartitionId),
    /// A message with term 0 (no real message is sent before the first election).
    #[error("{0}: term 0 is not a valid message term")]
    ZeroTerm(PartitionId),
    /// An append carrying more entries than allowed.
    #[error("{partition}: append carries {count} entries, more than the limit")]
    TooManyEntries {
        /// Partition of the message.
        partition: PartitionId,
        /// Entries carried.
        count: usize,
    },
    /// Entries not numbered `prev_log_index + 1, + 2, …`, or index arithmetic that overflows.
    #[error("{0}: entries are not consecutive after prev_log_index")]
    NonConsecutiveEntries(PartitionId),
    /// An entry whose term exceeds the term of the message carrying it, or a log anchor with a
    /// term but no index.
    #[error("{0}: entry or anchor term is inconsistent with the message term")]
    InconsistentTerm(PartitionId),
    /// A payload or log type above the limits.
    #[error("{0}: entry payload or log type exceeds the limits")]
    EntryTooLarge(PartitionId),
    /// An answer whose fields contradict each other (a match, anchor or hint beyond any possible
    /// log, or a conflict term above the answer's own term).
    #[error("{0}: append response fields are inconsistent")]
    InconsistentResponse(PartitionId),
    /// A snapshot chunk that fails its checksum, does not fit its snapshot, names another
    /// partition, or is larger than [`MessageLimits::max_payload_bytes`].
    #[error("{partition}: snapshot chunk refused: {reason}")]
    InvalidSnapshotChunk {
        /// Partition of the message.
        partition: PartitionId,
        /// What was wrong.
        reason: SnapshotChunkError,
    },
    /// A term (of the message, a log anchor, an entry or a conflict hint) above
    /// [`MessageLimits::max_term`].
    #[error("{partition}: term {term} is above the limit")]
    TermTooLarge {
        /// Partition of the message.
        partition: PartitionId,
        /// The offending term.
        term: u64,
    },
    /// An entry's ticket lies beyond [`MessageLimits::max_ticket_physical_ms`].
    #[error("{partition}: ticket time {physical_ms} ms is beyond the limit")]
    TicketOutOfRange {
        /// Partition of the message.
        partition: PartitionId,
        /// The ticket's physical time.
        physical_ms: u64,
    },
}

/// Check `batch` against `limits` (see the module docs). Does not check the cluster id's value,
/// the destination node or whether partitions exist: the receiving node does that.
pub fn validate_batch(batch: &MessageBatch, limits: &MessageLimits) -> Result<(), InvalidBatch> {
    if batch.messages.len() > limits.max_messages {
        return Err(InvalidBatch::TooManyMessages(batch.messages.len()));
    }
    if batch.cluster_id.is_empty() || batch.cluster_id.len() > limits.max_cluster_id_bytes {
        return Err(InvalidBatch::BadClusterId);
    }
    if batch.from == batch.to {
        return Err(InvalidBatch::SelfAddressed(batch.from));
    }
    for envelope in &batch.messages {
        if envelope.from != batch.from {
            return Err(InvalidBatch::SenderMismatch { batch: batch.from, envelope: envelope.from });
        }
        if envelope.to != batch.to {
            return Err(InvalidBatch::DestinationMismatch { batch: batch.to, envelope: envelope.to });
        }
        let partition = envelope.partition;
        if partition.0 > limits.max_partition_id {
            return Err(InvalidBatch::PartitionOutOfRange(partition));
        }
        validate_message(partition, &envelope.message, limits)?;
    }
    Ok(())
}

fn validate_message(partition: PartitionId, message: &RaftMessage, limits: &MessageLimits) -> Result<(), InvalidBatch> {
    if let RaftMessage::MembershipRequest { address, application_address, .. } = message {
        let too_long = |a: &str| a.len() > limits.max_cluster_id_bytes;
        if !partition.is_system() || too_long(address) || application_address.as_deref().is_some_and(too_long) {
            return Err(InvalidBatch::InconsistentResponse(partition));
        }
        return Ok(());
    }
    if message.term() == 0 {
        return Err(InvalidBatch::ZeroTerm(partition));
    }
    let check_term = |term: u64| {
        if term > limits.max_term {
            Err(InvalidBatch::TermTooLarge { partition, term })
        } else {
            Ok(())
        }
    };
    check_term(message.term())?;
    match message {
        RaftMessage::VoteRequest { term, last_log_index, last_log_term, .. } => {
            check_term(*last_log_term)?;
            if last_log_term > term || (*last_log_index == 0 && *last_log_term != 0) {
                return Err(InvalidBatch::InconsistentTerm(partition));
            }
        }
        RaftMessage::VoteResponse { .. }
        | RaftMessage::MembershipRequest { .. }
        | RaftMessage::ReadRound { .. }
        | RaftMessage::ReadIndexRequest { .. }
        | RaftMessage::TimeoutNow { .. } => {}
        RaftMessage::ReadIndexResponse { index, .. } => {
            // A reader waits until it applied the index: u64::MAX would never be reached.
            if *index == Some(u64::MAX) {
                return Err(InvalidBatch::InconsistentResponse(partition));
            }
        }
        RaftMessage::AppendRequest { term, prev_log_index, prev_log_term, entries, leader_commit: _ } => {
            if entries.len() > limits.max_entries_per_message {
                return Err(InvalidBatch::TooManyEntries { partition, count: entries.len() });
            }
            check_term(*prev_log_term)?;
            if prev_log_term > term || (*prev_log_index == 0 && *prev_log_term != 0) {
                return Err(InvalidBatch::InconsistentTerm(partition));
            }
            validate_entries(partition, *term, *prev_log_index, *prev_log_term, entries, limits)?;
        }
        RaftMessage::InstallSnapshot { term, meta, offset, data, done, chunk_checksum } => {
            let refuse = |reason| Err(InvalidBatch::InvalidSnapshotChunk { partition, reason });
            if meta.partition != partition {
                return refuse(SnapshotChunkError::Malformed("the snapshot names another partition"));
            }
            if data.len() > limits.max_payload_bytes {
                return refuse(SnapshotChunkError::Malformed("chunk larger than the payload limit"));
            }
            if meta.index == u64::MAX || meta.held.len() > limits.max_entries_per_message {
                return refuse(SnapshotChunkError::Malformed("snapshot meta out of range"));
            }
            if meta.membership.voters.len() > 4096 || meta.membership.learners.len() > 4096 {
                return refuse(SnapshotChunkError::Malformed("snapshot membership out of range"));
            }
            check_term(meta.term)?;
            if let Err(reason) = validate_chunk(*term, meta, *offset, data, *done, *chunk_checksum) {
                return refuse(reason);
            }
        }
        RaftMessage::Quiesce { term, index, index_term, .. } => {
            check_term(*index_term)?;
            if index_term > term || (*index == 0) != (*index_term == 0) {
                return Err(InvalidBatch::InconsistentTerm(partition));
            }
        }
        RaftMessage::SnapshotNeeded { index, .. } => {
            if *index == u64::MAX {
                return Err(InvalidBatch::InconsistentResponse(partition));
            }
        }
        RaftMessage::SnapshotResponse { term, index, snapshot_term, .. } => {
            check_term(*snapshot_term)?;
            if *index == u64::MAX || snapshot_term > term {
                return Err(InvalidBatch::InconsistentResponse(partition));
            }
        }
        RaftMessage::AppendResponse { term, prev_log_index, result } => {
            // The anchor echoes the request's `prev_log_index`, which is always below u64::MAX:
            // whatever the result, the leader computes `prev_log_index + 1` with it.
            if *prev_log_index == u64::MAX {
                return Err(InvalidBatch::InconsistentResponse(partition));
            }
            match result {
                AppendResult::Success { match_index } if *match_index == u64::MAX => {
                    return Err(InvalidBatch::InconsistentResponse(partition));
                }
                AppendResult::Conflict { hint_index, hint_term } => {
                    if *hint_index == u64::MAX {
                        return Err(InvalidBatch::InconsistentResponse(partition));
                    }
                    if let Some(hint_term) = hint_term {
                        check_term(*hint_term)?;
                        // The conflicting entry is in the follower's log, so its term is at most
                        // the follower's current term, which the answer carries.
                        if hint_term > term {
                            return Err(InvalidBatch::InconsistentResponse(partition));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn validate_entries(
    partition: PartitionId,
    term: u64,
    prev_log_index: u64,
    prev_log_term: u64,
    entries: &[LogEntry],
    limits: &MessageLimits,
) -> Result<(), InvalidBatch> {
    let count = entries.len() as u64;
    if prev_log_index.checked_add(count).is_none_or(|last| last == u64::MAX) {
        return Err(InvalidBatch::NonConsecutiveEntries(partition));
    }
    let mut previous_term = prev_log_term;
    for (offset, entry) in entries.iter().enumerate() {
        if entry.index != prev_log_index + 1 + offset as u64 {
            return Err(InvalidBatch::NonConsecutiveEntries(partition));
        }
        if entry.term > limits.max_term {
            return Err(InvalidBatch::TermTooLarge { partition, term: entry.term });
        }
        if entry.term == 0 || entry.term > term || entry.term < previous_term {
            return Err(InvalidBatch::InconsistentTerm(partition));
        }
        previous_term = entry.term;
        if entry.ticket.physical_ms > limits.max_ticket_physical_ms {
            return Err(InvalidBatch::TicketOutOfRange { partition, physical_ms: entry.ticket.physical_ms });
        }
        if entry.payload.len() > limits.max_payload_bytes || entry.log_type.len() > limits.max_log_type_bytes {
            return Err(InvalidBatch::EntryTooLarge(partition));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryKind;
    use crate::hlc::Ticket;
    use crate::message::Envelope;

    fn entry(index: u64, term: u64) -> LogEntry {
        LogEntry {
            index,
            term,
            kind: EntryKind::Application { auto_commit: true },
            log_type: "t".into(),
            payload: vec![1].into(),
            ticket: Ticket::default(),
        }
    }

    fn batch(message: RaftMessage) -> MessageBatch {
        MessageBatch {
            cluster_id: "c".into(),
            from: NodeId(1),
            to: NodeId(2),
            messages: vec![Envelope { partition: PartitionId(1), from: NodeId(1), to: NodeId(2), message }],
        }
    }

    fn append(prev_log_index: u64, prev_log_term: u64, entries: Vec<LogEntry>) -> RaftMessage {
        RaftMessage::AppendRequest { term: 3, prev_log_index, prev_log_term, entries, leader_commit: 0 }
    }

    #[test]
    fn snapshot_chunks_are_checked_before_delivery() {
        use crate::snapshot::{SnapshotChunkError, SnapshotMeta};
        let limits = MessageLimits::default();
        let p = PartitionId(1);
        let meta = SnapshotMeta { partition: p, index: 9, term: 2, size: 4, ..Default::default() };
        let chunk = |meta: SnapshotMeta, checksum_flip: u32, term: u64| {
            batch(RaftMessage::InstallSnapshot {
                term,
                meta,
                offset: 0,
                data: bytes::Bytes::from_static(b"abcd"),
                done: true,
                chunk_checksum: crate::codec::crc32c(b"abcd") ^ checksum_flip,
            })
        };
        assert_eq!(validate_batch(&chunk(meta.clone(), 0, 3), &limits), Ok(()));
        let refused =
            |b: &MessageBatch| matches!(validate_batch(b, &limits), Err(InvalidBatch::InvalidSnapshotChunk { .. }));
        assert_eq!(
            validate_batch(&chunk(meta.clone(), 1, 3), &limits),
            Err(InvalidBatch::InvalidSnapshotChunk {
                partition: p,
                reason: SnapshotChunkError::BadChecksum { offset: 0 }
            })
        );
        assert!(refused(&chunk(SnapshotMeta { partition: PartitionId(2), ..meta.clone() }, 0, 3)), "another partition");
        assert!(refused(&chunk(SnapshotMeta { size: 3, ..meta.clone() }, 0, 3)), "past the size");
        assert!(refused(&chunk(meta.clone(), 0, 1)), "snapshot term above the message term");
        let too_big = MessageLimits { max_payload_bytes: 3, ..MessageLimits::default() };
        assert!(matches!(validate_batch(&chunk(meta, 0, 3), &too_big), Err(InvalidBatch::InvalidSnapshotChunk { .. })));
        let answer =
            RaftMessage::SnapshotResponse { term: 2, index: 9, snapshot_term: 3, next_offset: 0, installed: false };
        assert_eq!(validate_batch(&batch(answer), &limits), Err(InvalidBatch::InconsistentResponse(p)));
    }

    #[test]
    fn a_well_formed_append_passes() {
        let ok = batch(append(4, 2, vec![entry(5, 2), entry(6, 3)]));
        assert_eq!(validate_batch(&ok, &MessageLimits::default()), Ok(()));
    }

    #[test]
    fn hostile_shapes_are_rejected_with_their_reason() {
        let limits = MessageLimits::default();
        let p = PartitionId(1);
        let cases = [
            (append(4, 2, vec![entry(6, 2)]), InvalidBatch::NonConsecutiveEntries(p)),
            (append(u64::MAX - 1, 2, vec![entry(u64::MAX, 2)]), InvalidBatch::NonConsecutiveEntries(p)),
            (append(4, 2, vec![entry(5, 9)]), InvalidBatch::InconsistentTerm(p)),
            (append(4, 3, vec![entry(5, 2)]), InvalidBatch::InconsistentTerm(p)),
            (append(0, 1, vec![]), InvalidBatch::InconsistentTerm(p)),
            (
                RaftMessage::VoteRequest {
                    term: 0,
                    last_log_index: 0,
                    last_log_term: 0,
                    pre_vote: false,
                    transfer: false,
                },
                InvalidBatch::ZeroTerm(p),
            ),
            (
                RaftMessage::AppendResponse {
                    term: 1,
                    prev_log_index: 0,
                    result: AppendResult::Success { match_index: u64::MAX },
                },
                InvalidBatch::InconsistentResponse(p),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(validate_batch(&batch(message), &limits), Err(expected));
        }
    }

    fn response(term: u64, prev_log_index: u64, result: AppendResult) -> RaftMessage {
        RaftMessage::AppendResponse { term, prev_log_index, result }
    }

    #[test]
    fn absurd_terms_anchors_and_tickets_are_rejected() {
        let limits = MessageLimits::default();
        let p = PartitionId(1);
        let max = limits.max_term;
        let too_large = |term| InvalidBatch::TermTooLarge { partition: p, term };
        let mut late = entry(5, 3);
        late.ticket.physical_ms = MAX_PHYSICAL_MS + 1;
        let huge = RaftMessage::AppendRequest {
            term: u64::MAX,
            prev_log_index: 4,
            prev_log_term: 2,
            entries: vec![entry(5, u64::MAX)],
            leader_commit: 0,
        };
        let cases = [
            (
                RaftMessage::VoteRequest {
                    term: max + 1,
                    last_log_index: 0,
                    last_log_term: 0,
                    pre_vote: false,
                    transfer: false,
                },
                too_large(max + 1),
            ),
            (RaftMessage::VoteResponse { term: u64::MAX, granted: false, pre_vote: true }, too_large(u64::MAX)),
            (huge, too_large(u64::MAX)),
            (
                append(4, 2, vec![late]),
                InvalidBatch::TicketOutOfRange { partition: p, physical_ms: MAX_PHYSICAL_MS + 1 },
            ),
            (
                response(3, u64::MAX, AppendResult::Conflict { hint_index: 1, hint_term: None }),
                InvalidBatch::InconsistentResponse(p),
            ),
            (response(3, u64::MAX, AppendResult::StaleTerm), InvalidBatch::InconsistentResponse(p)),
            (response(3, u64::MAX, AppendResult::Success { match_index: 1 }), InvalidBatch::InconsistentResponse(p)),
            (response(3, 4, AppendResult::Conflict { hint_index: 2, hint_term: Some(u64::MAX) }), too_large(u64::MAX)),
            (
                response(3, 4, AppendResult::Conflict { hint_index: 2, hint_term: Some(4) }),
                InvalidBatch::InconsistentResponse(p),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(validate_batch(&batch(message.clone()), &limits), Err(expected), "{message:?}");
        }

        // Terms nested below the message term are bounded by a lower limit too.
        let strict = MessageLimits { max_term: 10, ..MessageLimits::default() };
        let nested = [
            (
                RaftMessage::VoteRequest {
                    term: 10,
                    last_log_index: 3,
                    last_log_term: 11,
                    pre_vote: false,
                    transfer: false,
                },
                11,
            ),
            (
                RaftMessage::AppendRequest {
                    term: 10,
                    prev_log_index: 4,
                    prev_log_term: 12,
                    entries: vec![],
                    leader_commit: 0,
                },
                12,
            ),
            (
                RaftMessage::AppendRequest {
                    term: 10,
                    prev_log_index: 0,
                    prev_log_term: 0,
                    entries: vec![entry(1, 13)],
                    leader_commit: 0,
                },
                13,
            ),
        ];
        for (message, term) in nested {
            assert_eq!(validate_batch(&batch(message), &strict), Err(too_large(term)));
        }

        // The bounds themselves are still accepted.
        let mut on_time = entry(5, 3);
        on_time.ticket.physical_ms = MAX_PHYSICAL_MS;
        let fine = [
            append(4, 2, vec![on_time]),
            RaftMessage::VoteRequest {
                term: max,
                last_log_index: 9,
                last_log_term: max,
                pre_vote: false,
                transfer: false,
            },
            response(3, 4, AppendResult::Conflict { hint_index: 2, hint_term: Some(3) }),
            response(3, u64::MAX - 1, AppendResult::StaleTerm),
        ];
        for message in fine {
            assert_eq!(validate_batch(&batch(message.clone()), &limits), Ok(()), "{message:?}");
        }
    }

    #[test]
    fn envelope_addressing_must_match_the_batch() {
        let limits = MessageLimits::default();
        let mut b = batch(append(0, 0, vec![]));
        b.messages[0].from = NodeId(9);
        assert!(matches!(validate_batch(&b, &limits), Err(InvalidBatch::SenderMismatch { .. })));
        let mut b = batch(append(0, 0, vec![]));
        b.messages[0].to = NodeId(9);
        assert!(matches!(validate_batch(&b, &limits), Err(InvalidBatch::DestinationMismatch { .. })));
        let mut b = batch(append(0, 0, vec![]));
        b.to = NodeId(1);
        assert!(matches!(validate_batch(&b, &limits), Err(InvalidBatch::SelfAddressed(_))));
        let mut b = batch(append(0, 0, vec![]));
        b.messages[0].partition = PartitionId(u32::MAX);
        assert!(matches!(validate_batch(&b, &limits), Err(InvalidBatch::PartitionOutOfRange(_))));
    }

    #[test]
    fn limits_bound_sizes() {
        let limits = MessageLimits { max_entries_per_message: 1, max_payload_bytes: 4, ..MessageLimits::default() };
        let too_many = batch(append(0, 0, vec![entry(1, 1), entry(2, 1)]));
        assert!(matches!(validate_batch(&too_many, &limits), Err(InvalidBatch::TooManyEntries { .. })));
        let mut big = entry(1, 1);
        big.payload = vec![0; 5].into();
        assert!(matches!(
            validate_batch(&batch(append(0, 0, vec![big])), &limits),
            Err(InvalidBatch::EntryTooLarge(_))
        ));
    }
}

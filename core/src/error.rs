//! Typed errors of the core, one enum per domain.

use crate::hlc::Ticket;
use crate::ids::{LogIndex, NodeId, PartitionId, Term};
use thiserror::Error;

/// Why a proposal (or a commit/rollback request) was refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProposeError {
    /// This replica is not the partition's leader. `leader` is the last known leader, if any.
    #[error("not the leader of this partition (leader hint: {leader:?})")]
    NotLeader {
        /// Last known leader, to retry against.
        leader: Option<NodeId>,
    },
    /// This replica won the election but its leadership barrier has not committed yet.
    #[error("leadership not yet established (barrier pending)")]
    LeadershipPending,
    /// The leader is handing its leadership to `to` (thesis §3.10): proposals pause until the
    /// transfer ends; retry against `to`.
    #[error("leadership is being transferred to {to}")]
    LeadershipTransfer {
        /// The node taking over.
        to: NodeId,
    },
    /// The proposal carried no payloads.
    #[error("a proposal needs at least one payload")]
    EmptyProposal,
    /// Too many proposals are in flight on this partition.
    #[error("too many uncommitted entries ({in_flight}); retry later")]
    Backpressure {
        /// Entries currently appended but not yet committed.
        in_flight: usize,
    },
    /// The entries were replaced by another leader's entries before they committed.
    #[error("proposal superseded at index {index} by a different entry")]
    Superseded {
        /// First index at which the proposal's entry was replaced.
        index: LogIndex,
    },
    /// The ticket is not known to this leader: never proposed here, or an auto-commit proposal
    /// that was already applied (only unresolved two-phase tickets and resolved outcomes are
    /// remembered).
    #[error("unknown ticket {0}")]
    UnknownTicket(Ticket),
    /// The ticket was already resolved the other way (first terminal outcome wins).
    #[error("ticket {ticket} already {outcome:?}")]
    AlreadyResolved {
        /// The ticket asked about.
        ticket: Ticket,
        /// How it was resolved.
        outcome: TicketOutcome,
    },
    /// The ticket belongs to an auto-commit proposal still in the unapplied log, which cannot be
    /// committed or rolled back. (Once applied, such a ticket is no longer remembered and yields
    /// [`ProposeError::UnknownTicket`].)
    #[error("ticket {0} is an auto-commit proposal")]
    NotTwoPhase(Ticket),
    /// The ticket is at or below the partition's last snapshot and no longer remembered: it was
    /// resolved (or never two-phase) before the log was compacted. Its outcome, if any, is in the
    /// application's state.
    #[error("ticket {0} was compacted away (resolved or unknown before the last snapshot)")]
    TicketCompacted(Ticket),
    /// A membership change is already in the log and not yet committed (one at a time).
    #[error("a membership change is still uncommitted")]
    MembershipChangePending,
    /// The requested membership differs from the current one by more than one node, or has no
    /// voter.
    #[error("invalid membership change (one node at a time, at least one voter)")]
    InvalidMembership,
    /// A guarded write expected an older partition generation than the partition's log has: the
    /// partition map changed (split, merge) under the writer. Re-route with the current map.
    #[error("partition moved: write expected generation {expected}, partition is at {current}")]
    PartitionMoved {
        /// Generation the writer routed with.
        expected: u64,
        /// The partition's generation when the write applied.
        current: u64,
    },
}

/// Why a consistent read could not be given a read index.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ReadError {
    /// This replica neither leads nor knows a leader to ask. `leader` is the last known one.
    #[error("not the leader of this partition (leader hint: {leader:?})")]
    NotLeader {
        /// Last known leader, to retry against.
        leader: Option<NodeId>,
    },
    /// The leader stepped down (or the leader asked changed) before it confirmed the read.
    #[error("leadership lost while the read was being confirmed")]
    LeadershipLost,
    /// The leader did not answer a forwarded read in time (the request or answer was lost).
    #[error("the read was not confirmed in time")]
    Timeout,
}

/// Why a leadership transfer could not start.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TransferError {
    /// Only the published leader can hand over its leadership.
    #[error("not the leader of this partition (leader hint: {leader:?})")]
    NotLeader {
        /// Last known leader.
        leader: Option<NodeId>,
    },
    /// The target is not a voter of the partition (or is this node).
    #[error("{0} is not another voter of this partition")]
    NotAVoter(NodeId),
}

/// How a two-phase proposal ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TicketOutcome {
    /// Delivered to the application.
    Committed,
    /// Never delivered.
    RolledBack,
}

/// Why an incoming message was not processed. The state machine is left unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StepError {
    /// The message is addressed to another partition.
    #[error("message for partition {got} delivered to partition {expected}")]
    WrongPartition {
        /// Partition of this state machine.
        expected: PartitionId,
        /// Partition named by the message.
        got: PartitionId,
    },
    /// The sender is not a member of this partition.
    #[error("message from {0}, which is not a member of this partition")]
    UnknownSender(NodeId),
    /// Entries of an append are not consecutive from `prev_log_index + 1`, or carry a term above the
    /// leader's.
    #[error("malformed append: {0}")]
    MalformedAppend(&'static str),
    /// An InstallSnapshot chunk failed its checks.
    #[error("snapshot chunk refused: {0}")]
    SnapshotChunk(#[from] crate::snapshot::SnapshotChunkError),
    /// The state machine is halted after a fatal condition.
    #[error("partition halted: {0}")]
    Halted(FatalError),
}

/// A condition after which a partition must stop serving and be restarted from its WAL.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FatalError {
    /// A leader tried to replace an entry at or below the commit index: the log would be rewritten.
    #[error(
        "conflict at committed index {index} (commit {commit}, local term {local_term}, incoming term {incoming_term})"
    )]
    CommittedEntryConflict {
        /// Conflicting index.
        index: LogIndex,
        /// Local commit index.
        commit: LogIndex,
        /// Term of the local entry.
        local_term: Term,
        /// Term of the incoming entry.
        incoming_term: Term,
    },
    /// Restored state is inconsistent (for example entries not consecutive or terms decreasing).
    #[error("corrupt restore state: {0}")]
    CorruptRestore(String),
}

/// Invalid configuration.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// A timing value is out of range.
    #[error("invalid timing: {0}")]
    Timing(&'static str),
    /// The voter set is empty or does not contain this node.
    #[error("invalid membership: {0}")]
    Membership(&'static str),
    /// A limit is zero.
    #[error("invalid limit: {0}")]
    Limit(&'static str),
}

//! Errors of the runtime's public API.

use kommander_core::{NodeId, PartitionId, ProposeError, Ticket, TicketOutcome};
use thiserror::Error;

/// Why a replicate, commit or rollback call failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ReplicateError {
    /// This node does not lead the partition. Retry on `leader` (reachable at `endpoint`).
    #[error("not the leader of {partition} (leader: {leader:?} at {endpoint:?})")]
    NotLeader {
        /// The partition asked for.
        partition: PartitionId,
        /// Last known leader.
        leader: Option<NodeId>,
        /// The leader's address, when discovery knows it.
        endpoint: Option<String>,
    },
    /// This node just won an election; its leadership barrier has not committed yet.
    #[error("leadership of {0} not established yet; retry shortly")]
    LeadershipPending(PartitionId),
    /// The proposal did not complete within the configured proposal timeout. It may still commit.
    #[error("timed out waiting for {0} to commit")]
    Timeout(PartitionId),
    /// Too much is queued (WAL backlog or uncommitted entries): retry later.
    #[error("backpressure on {partition}: {detail}")]
    Backpressure {
        /// The partition asked for.
        partition: PartitionId,
        /// Which limit was hit.
        detail: String,
    },
    /// The partition does not exist on this node.
    #[error("unknown partition {0}")]
    UnknownPartition(PartitionId),
    /// Partition 0 is reserved for the system.
    #[error("partition 0 is reserved for the system")]
    SystemPartitionReserved,
    /// The partition is restoring from its WAL or restarting after a failure.
    #[error("partition {0} is unavailable (restoring or restarting)")]
    PartitionUnavailable(PartitionId),
    /// The proposal lost its place in the log to another leader's entries.
    #[error("proposal superseded at index {index} of {partition}")]
    Superseded {
        /// The partition.
        partition: PartitionId,
        /// Where it was replaced.
        index: u64,
    },
    /// The ticket is unknown to the leader.
    #[error("unknown ticket {0}")]
    UnknownTicket(Ticket),
    /// The ticket was already resolved the other way.
    #[error("ticket {ticket} already {outcome:?}")]
    AlreadyResolved {
        /// The ticket.
        ticket: Ticket,
        /// How it was resolved.
        outcome: TicketOutcome,
    },
    /// The ticket belongs to an auto-commit proposal.
    #[error("ticket {0} is an auto-commit proposal")]
    NotTwoPhase(Ticket),
    /// The proposal carried no payloads.
    #[error("a proposal needs at least one payload")]
    EmptyProposal,
    /// The manager has not joined the cluster (or has left it).
    #[error("not joined to the cluster")]
    NotJoined,
    /// The partition map changed under a guarded write (the partition split, merged, or is being
    /// moved): look the key up again with [`crate::RaftManager::partition_for_key`] and retry.
    #[error("{partition} moved: write expected generation {expected}, partition is at {current}")]
    PartitionMoved {
        /// The partition written to.
        partition: PartitionId,
        /// Generation the writer routed with.
        expected: u64,
        /// The partition's generation.
        current: u64,
    },
    /// A reserved log type (prefix `kommander.`) was used by the application.
    #[error("log type {0:?} is reserved for the runtime")]
    ReservedLogType(String),
    /// No leader showed up while the transport refused frames for authentication: this node and
    /// its peers disagree on the cluster id or the secret (`detail` says what was refused).
    #[error("no leader for {partition}; {rejected} frame(s) refused meanwhile: {detail}")]
    PeersRejected {
        /// The partition waited for.
        partition: PartitionId,
        /// Frames refused during the wait.
        rejected: u64,
        /// The last refusal.
        detail: String,
    },
    /// A partition-map or membership operation was refused (see the message).
    #[error("system operation refused: {0}")]
    SystemRefused(String),
}

impl ReplicateError {
    /// A short stable name of the error's kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ReplicateError::NotLeader { .. } => "not-leader",
            ReplicateError::LeadershipPending(_) => "leadership-pending",
            ReplicateError::Timeout(_) => "timeout",
            ReplicateError::Backpressure { .. } => "backpressure",
            ReplicateError::PartitionUnavailable(_) => "unavailable",
            ReplicateError::Superseded { .. } => "superseded",
            _ => "other",
        }
    }

    /// Translate a core error for `partition`.
    pub fn from_core(partition: PartitionId, error: ProposeError) -> Self {
        match error {
            ProposeError::NotLeader { leader } => ReplicateError::NotLeader { partition, leader, endpoint: None },
            ProposeError::LeadershipPending => ReplicateError::LeadershipPending(partition),
            ProposeError::EmptyProposal => ReplicateError::EmptyProposal,
            ProposeError::Backpressure { in_flight } => {
                ReplicateError::Backpressure { partition, detail: format!("{in_flight} uncommitted entries") }
            }
            ProposeError::Superseded { index } => ReplicateError::Superseded { partition, index },
            ProposeError::UnknownTicket(ticket) => ReplicateError::UnknownTicket(ticket),
            ProposeError::AlreadyResolved { ticket, outcome } => ReplicateError::AlreadyResolved { ticket, outcome },
            ProposeError::NotTwoPhase(ticket) => ReplicateError::NotTwoPhase(ticket),
            ProposeError::MembershipChangePending | ProposeError::InvalidMembership => {
                ReplicateError::SystemRefused(error.to_string())
            }
            ProposeError::PartitionMoved { expected, current } => {
                ReplicateError::PartitionMoved { partition, expected, current }
            }
        }
    }
}

/// Why the manager could not be built or could not join.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ManagerError {
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A required component was not given to the builder.
    #[error("missing {0}: set it on the builder")]
    Missing(&'static str),
    /// Discovery failed.
    #[error("discovery failed: {0}")]
    Discovery(String),
    /// The transport failed to start.
    #[error("transport failed: {0}")]
    Transport(String),
    /// `join_cluster` was called twice.
    #[error("already joined")]
    AlreadyJoined,
    /// Must be called inside a running actix `System`.
    #[error("no running actix System: call from within actix (e.g. #[actix::main])")]
    NoSystem,
    /// `RuntimeConfig::cluster_id` names another cluster than the transport authenticates for.
    /// Set the id once, on the transport, and leave `RuntimeConfig::cluster_id` as `None`.
    #[error("cluster id mismatch: the runtime is configured for {runtime:?}, the transport for {transport:?}")]
    ClusterIdMismatch {
        /// `RuntimeConfig::cluster_id`.
        runtime: String,
        /// The transport's.
        transport: String,
    },
}

//! Errors of the runtime's public API, one enum per domain: [`ReplicateError`] for writes and
//! reads of partitions, [`AdminError`] for changes of the partition map and the roster,
//! [`ManagerError`] for building and joining. Causes that have a type keep it (`#[source]`).

use kommander_core::system::SystemError;
use kommander_core::{NodeId, PartitionId, ProposeError, ReadError, TransferError};
use thiserror::Error;

/// The result of the runtime's partition calls.
pub type Result<T, E = ReplicateError> = std::result::Result<T, E>;

/// Which limit a proposal hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackpressureCause {
    /// Entries queued for the node's WAL (all partitions) above `max_wal_backlog_entries`.
    WalBacklog {
        /// Entries queued.
        queued: usize,
    },
    /// Uncommitted entries of the partition above `max_uncommitted_entries`.
    Uncommitted {
        /// Entries appended but not committed.
        in_flight: usize,
    },
}

impl std::fmt::Display for BackpressureCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackpressureCause::WalBacklog { queued } => write!(f, "{queued} entries queued for the WAL"),
            BackpressureCause::Uncommitted { in_flight } => write!(f, "{in_flight} uncommitted entries"),
        }
    }
}

/// Why a replicate, commit or rollback call failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ReplicateError {
    /// This node does not lead the partition. Retry on `leader`. `endpoint` is the leader's
    /// *transport* address (from the roster, or discovery before the roster is loaded) — where
    /// other kommander nodes reach it, not necessarily where your clients do: map the node id to
    /// your application's own address to forward a client.
    #[error("not the leader of {partition} (leader: {leader:?} at {endpoint:?})")]
    NotLeader {
        /// The partition asked for.
        partition: PartitionId,
        /// Last known leader.
        leader: Option<NodeId>,
        /// The leader's address, when discovery knows it.
        endpoint: Option<String>,
    },
    /// The proposal did not complete within the configured proposal timeout (it may still
    /// commit), or a read's index was not confirmed in time.
    #[error("timed out waiting for {0}")]
    Timeout(PartitionId),
    /// The leader stepped down (or the follower's leader changed) while it confirmed a read:
    /// retry, on the new leader or here.
    #[error("leadership of {0} was lost while a read was being confirmed")]
    LeadershipLost(PartitionId),
    /// A leadership transfer could not start (the target is not another voter).
    #[error("{partition} cannot transfer its leadership: {source}")]
    Transfer {
        /// The partition.
        partition: PartitionId,
        /// The core's reason.
        #[source]
        source: TransferError,
    },
    /// Too much is queued (WAL backlog or uncommitted entries): retry later.
    #[error("backpressure on {partition}: {cause}")]
    Backpressure {
        /// The partition asked for.
        partition: PartitionId,
        /// Which limit was hit.
        cause: BackpressureCause,
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
    /// The manager has not joined the cluster (or has left it).
    #[error("not joined to the cluster")]
    NotJoined,
    /// No snapshot can be taken of the partition: no application actor writes its snapshots
    /// ([`crate::RaftManagerBuilder::snapshots`]), or it is still restoring.
    #[error("no snapshot of {0} can be taken (no snapshot writer registered, or restoring)")]
    SnapshotUnavailable(PartitionId),
    /// The partition map changed under a guarded write or a read by key (the partition split,
    /// merged, or is being moved): look the key up again with
    /// [`crate::RaftManager::partition_for_key`] and retry ([`crate::RaftManager::read_for_key`]
    /// does so itself once this node's map caught up).
    #[error("{partition} moved: routed with generation {expected}, partition is at {current}")]
    PartitionMoved {
        /// The partition written to or read.
        partition: PartitionId,
        /// Generation the writer or reader routed with.
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
    /// No partition of the map owns the key (the map is not loaded yet).
    #[error("no partition owns the key")]
    NoPartitionForKey,
    /// The partition's Raft replica refused the request: leadership not established yet, an empty
    /// proposal, a proposal superseded by another leader's entries, an unknown, already resolved
    /// or auto-commit ticket, a membership change while another is pending. (`NotLeader`,
    /// `Backpressure` and `PartitionMoved` have variants of their own: the runtime adds routing
    /// information to them.) [`ReplicateError::is_retryable`] tells which are worth retrying.
    #[error("{partition} refused the request: {source}")]
    Rejected {
        /// The partition.
        partition: PartitionId,
        /// The core's reason.
        #[source]
        source: ProposeError,
    },
}

/// Why a change of the partition map or the roster (create, remove, split, merge, add a learner,
/// remove a node, abort) failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AdminError {
    /// Changes are made by the partition-0 leader: ask `leader`.
    #[error("not the partition-0 leader (leader: {leader:?})")]
    NotLeader {
        /// The partition-0 leader, if known.
        leader: Option<NodeId>,
    },
    /// The committed change was refused by the partition map or roster (applied everywhere as a
    /// no-op).
    #[error("refused: {0}")]
    Refused(#[source] SystemError),
    /// The split or merge was aborted (it took longer than `operation_timeout`, or
    /// `abort_operation` was called) before it completed.
    #[error("the operation was aborted")]
    Aborted,
    /// The application's exporter failed to export the moving range (its own message).
    #[error("the application's export failed: {0}")]
    ExportFailed(String),
    /// Proposing the change on partition 0 failed (timeout, unavailable, not joined, …).
    #[error(transparent)]
    Replicate(#[from] ReplicateError),
}

impl ReplicateError {
    /// A short stable name of the error's kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ReplicateError::NotLeader { .. } => "not-leader",
            ReplicateError::Rejected { source: ProposeError::LeadershipPending, .. } => "leadership-pending",
            ReplicateError::Timeout(_) => "timeout",
            ReplicateError::LeadershipLost(_) => "leadership-lost",
            ReplicateError::Backpressure { .. } => "backpressure",
            ReplicateError::PartitionUnavailable(_) => "unavailable",
            ReplicateError::Rejected { source: ProposeError::Superseded { .. }, .. } => "superseded",
            _ => "other",
        }
    }

    /// Would the same request succeed later, or elsewhere? (Leadership moving or not yet
    /// established, a restarting partition, a full queue, a timeout whose outcome is unknown, a
    /// proposal superseded by a new leader's entries, a moved partition after re-routing.)
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ReplicateError::NotLeader { .. }
                | ReplicateError::Timeout(_)
                | ReplicateError::LeadershipLost(_)
                | ReplicateError::Backpressure { .. }
                | ReplicateError::PartitionUnavailable(_)
                | ReplicateError::PartitionMoved { .. }
                | ReplicateError::Rejected {
                    source: ProposeError::LeadershipPending
                        | ProposeError::Superseded { .. }
                        | ProposeError::LeadershipTransfer { .. },
                    ..
                }
        )
    }

    /// Translate a core read error for `partition`.
    pub fn from_read(partition: PartitionId, error: ReadError) -> Self {
        match error {
            ReadError::NotLeader { leader } => ReplicateError::NotLeader { partition, leader, endpoint: None },
            ReadError::LeadershipLost => ReplicateError::LeadershipLost(partition),
            ReadError::Timeout => ReplicateError::Timeout(partition),
        }
    }

    /// Translate a core transfer error for `partition`.
    pub fn from_transfer(partition: PartitionId, error: TransferError) -> Self {
        match error {
            TransferError::NotLeader { leader } => ReplicateError::NotLeader { partition, leader, endpoint: None },
            source => ReplicateError::Transfer { partition, source },
        }
    }

    /// Translate a core error for `partition`.
    pub fn from_core(partition: PartitionId, error: ProposeError) -> Self {
        match error {
            ProposeError::NotLeader { leader } => ReplicateError::NotLeader { partition, leader, endpoint: None },
            ProposeError::Backpressure { in_flight } => {
                ReplicateError::Backpressure { partition, cause: BackpressureCause::Uncommitted { in_flight } }
            }
            ProposeError::PartitionMoved { expected, current } => {
                ReplicateError::PartitionMoved { partition, expected, current }
            }
            source => ReplicateError::Rejected { partition, source },
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

//! Commands committed on partition 0, what applying them did, and why one was refused.

use super::map::HashRange;
use crate::ids::{NodeId, PartitionId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A change to the system state, proposed on partition 0 and applied by every node in log order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SystemCommand {
    /// Record the founding members (once, by the first partition-0 leader); later bootstraps are
    /// refused.
    Bootstrap {
        /// The founding voters and their addresses.
        members: Vec<(NodeId, String)>,
    },
    /// Create a partition addressed by id only (no key range); it gets the next unused id.
    CreatePartition,
    /// Tombstone a partition that owns no key range (its id is never reused).
    RemovePartition {
        /// The partition.
        id: PartitionId,
    },
    /// Start splitting `source` at `boundary`: a new partition (the next id) will own
    /// `[boundary, source.end]`.
    BeginSplit {
        /// The partition to split.
        source: PartitionId,
        /// First hash that moves to the new partition.
        boundary: u64,
    },
    /// Finish the split in progress (the new partition has imported its state).
    CompleteSplit {
        /// The split partition.
        source: PartitionId,
        /// The new partition.
        target: PartitionId,
    },
    /// Start merging `source` into `survivor` (their ranges must touch).
    BeginMerge {
        /// The partition that remains.
        survivor: PartitionId,
        /// The partition that is absorbed and removed.
        source: PartitionId,
    },
    /// Finish the merge in progress (the survivor has imported the source's state).
    CompleteMerge {
        /// The partition that remains.
        survivor: PartitionId,
        /// The absorbed partition.
        source: PartitionId,
    },
    /// Undo the split or merge in progress.
    AbortOperation,
    /// Add a node as a learner (replicates, never votes).
    AddLearner {
        /// The node.
        node: NodeId,
        /// Where peers reach it.
        address: String,
    },
    /// Make a learner a voter.
    PromoteLearner {
        /// The node.
        node: NodeId,
    },
    /// Remove a member (voter or learner).
    RemoveNode {
        /// The node.
        node: NodeId,
    },
    /// Record where a member's application serves clients.
    SetApplicationAddress {
        /// The member.
        node: NodeId,
        /// Its application's address (`None`: forget it).
        address: Option<String>,
    },
}

/// What applying a command changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SystemEvent {
    /// A partition was created (by `CreatePartition` or as a split target).
    PartitionCreated(PartitionId),
    /// A partition was tombstoned.
    PartitionRemoved(PartitionId),
    /// A split started.
    SplitStarted {
        /// Split partition.
        source: PartitionId,
        /// New partition.
        target: PartitionId,
        /// The range that moves.
        moving: HashRange,
    },
    /// A split finished.
    SplitCompleted {
        /// Split partition.
        source: PartitionId,
        /// New partition.
        target: PartitionId,
    },
    /// A merge started.
    MergeStarted {
        /// Remaining partition.
        survivor: PartitionId,
        /// Absorbed partition.
        source: PartitionId,
    },
    /// A merge finished (the source is removed).
    MergeCompleted {
        /// Remaining partition.
        survivor: PartitionId,
        /// Absorbed partition.
        source: PartitionId,
    },
    /// The operation in progress was undone.
    OperationAborted,
    /// The roster changed.
    RosterChanged,
    /// The state as rebuilt from partition 0's log when the node started (announced once).
    Loaded,
}

/// Why a command was refused (it changed nothing).
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum SystemError {
    /// No such partition (or it was removed).
    #[error("unknown or removed partition {0}")]
    UnknownPartition(PartitionId),
    /// The partition is busy in another state.
    #[error("partition {0} is not active")]
    NotActive(PartitionId),
    /// A split or merge is already in progress (one at a time).
    #[error("another split or merge is in progress")]
    OperationPending,
    /// No split or merge is in progress (or a different one is).
    #[error("no matching split or merge is in progress")]
    NoMatchingOperation,
    /// The partition owns no key range (split/merge need one) or owns one (remove needs none).
    #[error("partition {0} has the wrong kind of key range for this operation")]
    RangeMismatch(PartitionId),
    /// The split boundary is not strictly inside the source's range.
    #[error("boundary {0:#x} is not inside the partition's range")]
    BoundaryOutsideRange(u64),
    /// The two partitions' ranges do not touch.
    #[error("partitions {0} and {1} are not adjacent")]
    NotAdjacent(PartitionId, PartitionId),
    /// A partition cannot merge with itself.
    #[error("a partition cannot merge with itself")]
    SamePartition,
    /// Partition ids are exhausted.
    #[error("no partition ids left")]
    IdsExhausted,
    /// The node is already a member.
    #[error("{0} is already a member")]
    AlreadyMember(NodeId),
    /// The node is not a member.
    #[error("{0} is not a member")]
    NotMember(NodeId),
    /// The node is not a learner.
    #[error("{0} is not a learner")]
    NotLearner(NodeId),
    /// The roster was already bootstrapped.
    #[error("the roster is already bootstrapped")]
    AlreadyBootstrapped,
    /// Membership commands need a bootstrapped roster.
    #[error("the roster is not bootstrapped yet")]
    NotBootstrapped,
    /// Removing the node would leave no voter.
    #[error("cannot remove the last voter {0}")]
    LastVoter(NodeId),
}

//! What the runtime tells the application, as one actix message type delivered to a `Recipient`
//! the application registers. Per partition, events arrive in log order and committed entries
//! exactly once per partition incarnation: after a restart (process or supervisor), the partition
//! announces `RestoreStarted` and replays its committed entries as `Restored` first.

use crate::snapshot_store::SnapshotSource;
use actix::Message;
use kommander_core::system::{HashRange, PartitionMap, Roster, SystemEvent};
use kommander_core::{LogEntry, LogIndex, NodeId, PartitionId, Term};

/// An event of one partition. Entries are batched: one event per executor turn, never one message
/// per entry.
#[derive(Clone, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum RaftEvent {
    /// The partition starts replaying its WAL: rebuild its state from the `Restored` events that follow.
    RestoreStarted {
        /// The partition.
        partition: PartitionId,
    },
    /// The partition's state is replaced by a snapshot: on restore, right after `RestoreStarted`
    /// (the latest snapshot, then the entries after it as `Restored`); on a follower far behind,
    /// when the leader's snapshot was installed (the entries after it follow as `Replicated`).
    /// Read the bytes with [`SnapshotSource::open`].
    SnapshotInstalled {
        /// The partition.
        partition: PartitionId,
        /// The last log index the snapshot covers.
        index: LogIndex,
        /// The snapshot's bytes (written by the application's snapshot of `index`).
        snapshot: SnapshotSource,
    },
    /// Committed entries replayed from the WAL, in order.
    Restored {
        /// The partition.
        partition: PartitionId,
        /// The entries.
        entries: Vec<LogEntry>,
    },
    /// Replay finished; the partition takes part in Raft from now on.
    RestoreFinished {
        /// The partition.
        partition: PartitionId,
    },
    /// Newly committed entries, in order.
    Replicated {
        /// The partition.
        partition: PartitionId,
        /// The entries.
        entries: Vec<LogEntry>,
    },
    /// The partition's leader changed (this node reports itself only once its leadership is established).
    LeaderChanged {
        /// The partition.
        partition: PartitionId,
        /// Term of the observation.
        term: Term,
        /// The new leader, if known.
        leader: Option<NodeId>,
    },
    /// State moved into `partition` from `source` by a split or merge: replace the state of every
    /// key whose hash lies in `range` with `data` (what the application's export produced). In log
    /// order with the partition's other entries; replayed on restore like them.
    Imported {
        /// The receiving partition.
        partition: PartitionId,
        /// Where the state comes from.
        source: PartitionId,
        /// The key-hash range it covers.
        range: HashRange,
        /// The application's exported bytes.
        data: Vec<u8>,
        /// Log index of the import entry.
        index: LogIndex,
    },
    /// The partition map changed (applied from partition 0). After a split or merge completes,
    /// a partition keeps only the keys whose hash lies in its new range. `partition` is
    /// [`PartitionId::SYSTEM`].
    PartitionMapChanged {
        /// Always partition 0.
        partition: PartitionId,
        /// What changed.
        change: SystemEvent,
        /// The map after the change.
        map: PartitionMap,
    },
    /// The cluster roster changed (applied from partition 0).
    RosterChanged {
        /// Always partition 0.
        partition: PartitionId,
        /// The roster after the change.
        roster: Roster,
    },
}

impl RaftEvent {
    /// The partition the event belongs to.
    pub fn partition(&self) -> PartitionId {
        match self {
            RaftEvent::RestoreStarted { partition }
            | RaftEvent::SnapshotInstalled { partition, .. }
            | RaftEvent::Restored { partition, .. }
            | RaftEvent::RestoreFinished { partition }
            | RaftEvent::Replicated { partition, .. }
            | RaftEvent::LeaderChanged { partition, .. }
            | RaftEvent::Imported { partition, .. }
            | RaftEvent::PartitionMapChanged { partition, .. }
            | RaftEvent::RosterChanged { partition, .. } => *partition,
        }
    }
}

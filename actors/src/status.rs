//! A partition's status, shared between its executor (writer) and the manager (readers), so
//! `am_i_leader` and `get_leader` need no actor round trip.

use kommander_core::{LogIndex, NodeId, PartitionId, PartitionStateMachine, Role, Term};
use std::sync::Mutex;

/// Snapshot of a partition replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionStatus {
    /// Role in the current term.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// This replica leads with established (published) leadership.
    pub is_leader: bool,
    /// Commit index.
    pub commit_index: LogIndex,
    /// Applied index.
    pub applied_index: LogIndex,
    /// Last log index.
    pub last_index: LogIndex,
    /// Still replaying the WAL (or restarting).
    pub restoring: bool,
    /// Partition generation: the highest fence applied.
    pub generation: u64,
    /// The last import applied: (source partition, source generation).
    pub last_import: Option<(PartitionId, u64)>,
}

impl Default for PartitionStatus {
    fn default() -> Self {
        PartitionStatus {
            role: Role::Follower,
            term: 0,
            leader: None,
            is_leader: false,
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            restoring: true,
            generation: 0,
            last_import: None,
        }
    }
}

impl PartitionStatus {
    /// The status of a running state machine.
    pub fn of(sm: &PartitionStateMachine) -> Self {
        PartitionStatus {
            role: sm.role(),
            term: sm.term(),
            leader: if sm.role() == Role::Leader && !sm.is_leader() { None } else { sm.leader() },
            is_leader: sm.is_leader(),
            commit_index: sm.commit_index(),
            applied_index: sm.applied_index(),
            last_index: sm.last_index(),
            restoring: false,
            generation: sm.generation(),
            last_import: None,
        }
    }
}

/// Shared cell holding the latest status.
#[derive(Debug, Default)]
pub struct StatusCell(Mutex<PartitionStatus>);

impl StatusCell {
    /// Replace the status.
    pub fn set(&self, status: PartitionStatus) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }
    /// Read the status.
    pub fn get(&self) -> PartitionStatus {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

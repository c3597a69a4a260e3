//! A partition's status, shared between its executor (writer) and the manager (readers), so
//! `is_leader` and `leader` need no actor round trip; a change bumps the node's [`Changes`] signal
//! so waiters (`wait_for_leader`, `leave_cluster`) wake instead of polling.

use crate::changes::Changes;
use kommander_core::{LogIndex, NodeId, PartitionId, PartitionStateMachine, Role, Term};
use std::sync::{Arc, Mutex};

/// Snapshot of a partition replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionStatus {
    /// Role in the current term.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// The leader, once its leadership is established (see
    /// [`PartitionStateMachine::established_leader`]): a proposal sent there is not refused as
    /// `LeadershipPending`.
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
    /// Index of the latest snapshot whose meta is durable (0 when none).
    pub snapshot_index: LogIndex,
    /// The WAL's compaction floor: entries at or below it are gone.
    pub compacted_through: LogIndex,
    /// The snapshot's bytes were lost: the replica applies nothing until the leader's snapshot
    /// replaces them.
    pub repairing: bool,
    /// The partition is quiet here: idle, neither ticking nor heartbeating (quiescence).
    pub quiesced: bool,
    /// Read-index rounds this replica ran (as leader) since it started: divided by the reads it
    /// served, how many reads share a round.
    pub read_rounds: u64,
    /// On the leader: entries its furthest-behind peer lacks (0 elsewhere).
    pub replication_lag: LogIndex,
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
            snapshot_index: 0,
            compacted_through: 0,
            repairing: false,
            quiesced: false,
            read_rounds: 0,
            replication_lag: 0,
        }
    }
}

impl PartitionStatus {
    /// The status without the indexes that move every turn: what a caller may wait for (see
    /// [`StatusCell::set`]).
    fn awaited(self) -> PartitionStatus {
        PartitionStatus {
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            compacted_through: 0,
            read_rounds: 0,
            replication_lag: 0,
            ..self
        }
    }

    /// The status of a running state machine.
    pub fn of(sm: &PartitionStateMachine) -> Self {
        PartitionStatus {
            role: sm.role(),
            term: sm.term(),
            leader: sm.established_leader(),
            is_leader: sm.is_leader(),
            commit_index: sm.commit_index(),
            applied_index: sm.applied_index(),
            last_index: sm.last_index(),
            restoring: false,
            generation: sm.generation(),
            last_import: None,
            snapshot_index: sm.snapshot().map_or(0, |m| m.index),
            compacted_through: sm.compacted_through(),
            repairing: sm.is_repairing(),
            quiesced: sm.is_quiesced(),
            read_rounds: sm.read_rounds(),
            replication_lag: sm.replication_lag(),
        }
    }
}

/// Shared cell holding the latest status.
#[derive(Debug)]
pub(crate) struct StatusCell {
    status: Mutex<PartitionStatus>,
    changes: Arc<Changes>,
}

impl StatusCell {
    /// A cell (status: restoring) that signals its changes on `changes`.
    pub(crate) fn new(changes: Arc<Changes>) -> Self {
        StatusCell { status: Mutex::new(PartitionStatus::default()), changes }
    }
    /// Replace the status, signalling waiters when something they wait for changed (leadership,
    /// restore, generation) — not on every commit, which changes the indexes every turn.
    pub(crate) fn set(&self, status: PartitionStatus) {
        let changed = {
            let mut current = self.status.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *current, status).awaited() != status.awaited()
        };
        if changed {
            self.changes.bump();
        }
    }
    /// Read the status.
    pub(crate) fn get(&self) -> PartitionStatus {
        *self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

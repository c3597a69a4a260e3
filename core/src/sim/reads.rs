//! The simulator's read clients and their checker: reads at every consistency level go to any
//! replica; a linearizable or lease read is served once the replica applied its read index, and
//! must then show a state at least as new as every write acknowledged before the read was issued
//! (the state a replica applied is committed, so the delivery checks already make sure it is
//! never rolled back). Local reads are served at once and promise nothing.

use super::checker::{Violation, ViolationKind};
use crate::ids::{LogIndex, NodeId, PartitionId};
use crate::raft::{ReadConsistency, ReadState};
use std::collections::BTreeMap;

/// A read waiting for its index, or for the replica to apply it.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    node: NodeId,
    partition: PartitionId,
    incarnation: u64,
    /// The highest index of a write acknowledged before the read was issued.
    required: LogIndex,
    consistency: ReadConsistency,
}

/// Reads in flight and what happened to them.
#[derive(Debug, Default)]
pub(crate) struct ReadClients {
    next_id: u64,
    pending: BTreeMap<u64, PendingRead>,
    /// Reads with an index, waiting for the replica to apply it.
    waiting: Vec<(u64, PendingRead, LogIndex)>,
    /// Linearizable and lease reads served and checked.
    pub(crate) served: u64,
    /// Of those, lease reads.
    pub(crate) lease_served: u64,
    /// Reads refused or failed (no leader, leadership lost, timeout).
    pub(crate) failed: u64,
    /// Local reads served.
    pub(crate) local: u64,
}

impl ReadClients {
    /// A new read on `node`: its identifier.
    pub(crate) fn issue(
        &mut self,
        node: NodeId,
        partition: PartitionId,
        incarnation: u64,
        required: LogIndex,
        consistency: ReadConsistency,
    ) -> u64 {
        self.next_id += 1;
        self.pending.insert(self.next_id, PendingRead { node, partition, incarnation, required, consistency });
        self.next_id
    }

    /// The replica refused the read at once.
    pub(crate) fn refused(&mut self, id: u64) {
        self.pending.remove(&id);
        self.failed += 1;
    }

    /// The replica answered read `state.id`; it has applied `applied`.
    pub(crate) fn answered(&mut self, state: &ReadState, applied: LogIndex) -> Result<(), Violation> {
        let Some(read) = self.pending.remove(&state.id) else { return Ok(()) };
        match state.result {
            Err(_) => {
                self.failed += 1;
                Ok(())
            }
            Ok(index) if applied >= index => self.serve(state.id, read, index, applied),
            Ok(index) => {
                self.waiting.push((state.id, read, index));
                Ok(())
            }
        }
    }

    /// The replica (`incarnation` of it) has applied `applied`: serve the reads it waited for.
    pub(crate) fn applied(
        &mut self,
        node: NodeId,
        partition: PartitionId,
        incarnation: u64,
        applied: LogIndex,
    ) -> Result<(), Violation> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        let mine = |r: &PendingRead| r.node == node && r.partition == partition;
        // Reads of an earlier incarnation died with it.
        self.waiting.retain(|(_, r, _)| !mine(r) || r.incarnation == incarnation);
        let (due, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.waiting).into_iter().partition(|(_, r, index)| mine(r) && *index <= applied);
        self.waiting = rest;
        for (id, read, index) in due {
            self.serve(id, read, index, applied)?;
        }
        Ok(())
    }

    fn serve(&mut self, id: u64, read: PendingRead, index: LogIndex, applied: LogIndex) -> Result<(), Violation> {
        if applied < read.required {
            return Err(Violation {
                kind: ViolationKind::StaleRead,
                detail: format!(
                    "{} {}: {:?} read #{id} got read index {index} and was served at applied index {applied}, \
                     but a write acknowledged before it was issued ends at {}",
                    read.node, read.partition, read.consistency, read.required
                ),
            });
        }
        self.served += 1;
        if read.consistency == ReadConsistency::Lease {
            self.lease_served += 1;
        }
        Ok(())
    }
}

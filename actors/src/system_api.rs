//! The partition-map and membership API of [`RaftManager`]: routing keys, reading the map and the
//! roster, guarded writes, and the changes committed through partition 0 (create, remove, split,
//! merge). Changes must be asked of the partition-0 leader (other nodes answer `NotLeader` with
//! the leader's id); reads work on every node and see the map as applied locally.

use crate::error::{AdminError, ReplicateError};
use crate::executor::GetMembership;
use crate::executor::Replicate;
use crate::manager::RaftManager;
use bytes::Bytes;
use kommander_core::raft::Membership;
use kommander_core::raft::ProposalCommitted;
use kommander_core::system::{
    PartitionInfo, PartitionMap, PartitionState, Roster, SystemCommand, SystemEvent, SystemState,
};
use kommander_core::{NodeId, PartitionId};

impl RaftManager {
    /// Read the applied system state under its lock, without copying the whole of it (writes
    /// look up one partition per call).
    pub(crate) fn with_state<T>(&self, read: impl FnOnce(&SystemState) -> T) -> Result<T, ReplicateError> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        let running = running.as_ref().ok_or(ReplicateError::NotJoined)?;
        let state = running.state.read().unwrap_or_else(|p| p.into_inner());
        Ok(read(&state))
    }

    pub(crate) fn system_client(&self) -> Result<crate::coordinator::SystemClient, ReplicateError> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        Ok(running.as_ref().ok_or(ReplicateError::NotJoined)?.client.clone())
    }

    pub(crate) fn is_live_partition(&self, partition: PartitionId) -> bool {
        partition.is_system() || self.with_state(|s| s.map.get(partition).is_some_and(|p| p.is_live())).unwrap_or(false)
    }

    /// The partition map as applied on this node.
    pub fn partition_map(&self) -> Result<PartitionMap, ReplicateError> {
        self.with_state(|s| s.map.clone())
    }

    /// The roster as applied on this node.
    pub fn roster(&self) -> Result<Roster, ReplicateError> {
        self.with_state(|s| s.roster.clone())
    }

    /// The partition owning `key` (xxHash64 of the key, looked up in the map), with its generation
    /// to pass to [`RaftManager::replicate_guarded`].
    pub fn partition_for_key(&self, key: &[u8]) -> Result<PartitionInfo, ReplicateError> {
        self.with_state(|s| s.map.route(key).cloned())?.ok_or(ReplicateError::NoPartitionForKey)
    }

    /// Replicate auto-commit entries on `partition` guarded by `generation` (from
    /// [`RaftManager::partition_for_key`]): if the map changed the partition since (a split or
    /// merge started or finished), the write fails with [`ReplicateError::PartitionMoved`] and is
    /// never delivered — look the key up again and retry.
    pub async fn replicate_guarded(
        &self,
        partition: PartitionId,
        generation: u64,
        log_type: &str,
        payloads: impl IntoIterator<Item = impl Into<Bytes>>,
    ) -> Result<ProposalCommitted, ReplicateError> {
        if partition.is_system() {
            return Err(ReplicateError::SystemPartitionReserved);
        }
        // A writer that routed with a newer map than this node has applied waits for it to catch up.
        let info = self.map_entry_at_least(partition, generation).await?;
        if info.generation != generation || info.state != PartitionState::Active {
            return Err(ReplicateError::PartitionMoved { partition, expected: generation, current: info.generation });
        }
        self.propose(partition, Replicate::guarded(log_type, payloads, generation)).await
    }

    /// This node's map entry of `partition` once it is at `generation` or newer, waiting for the
    /// map to catch up (at most the proposal timeout; after it, the entry as it stands).
    pub(crate) async fn map_entry_at_least(
        &self,
        partition: PartitionId,
        generation: u64,
    ) -> Result<PartitionInfo, ReplicateError> {
        let lookup = || {
            self.with_state(|s| s.map.get(partition).cloned())
                .and_then(|info| info.ok_or(ReplicateError::UnknownPartition(partition)))
        };
        let changes = self.changes().ok_or(ReplicateError::NotJoined)?;
        let caught_up = changes
            .wait_until(self.inner.config.proposal_timeout, || match lookup() {
                Ok(info) if info.generation < generation => None,
                other => Some(other),
            })
            .await;
        caught_up.unwrap_or_else(lookup)
    }

    /// Route `key` with the current map and replicate one guarded entry to its partition.
    pub async fn replicate_for_key(
        &self,
        key: &[u8],
        log_type: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(PartitionId, ProposalCommitted), ReplicateError> {
        let info = self.partition_for_key(key)?;
        let committed = self.replicate_guarded(info.id, info.generation, log_type, vec![payload]).await?;
        Ok((info.id, committed))
    }

    async fn propose_system(&self, command: SystemCommand) -> Result<SystemEvent, AdminError> {
        let p0 = PartitionId::SYSTEM;
        if !self.is_leader(p0) {
            return Err(AdminError::NotLeader { leader: self.leader(p0) });
        }
        self.system_client()?.propose(&command).await
    }

    /// Create a partition addressed by id only (it owns no key range). Returns its id once the
    /// change is committed; every node starts a replica.
    pub async fn create_partition(&self) -> Result<PartitionId, AdminError> {
        match self.propose_system(SystemCommand::CreatePartition).await? {
            SystemEvent::PartitionCreated(id) => Ok(id),
            other => unreachable!("creating a partition applied as {other:?}"),
        }
    }

    /// Remove a partition that owns no key range: it is tombstoned (its id is never reused), every
    /// node stops its replica and reclaims its WAL.
    pub async fn remove_partition(&self, partition: PartitionId) -> Result<(), AdminError> {
        self.propose_system(SystemCommand::RemovePartition { id: partition }).await.map(|_| ())
    }

    /// Split `source` at key hash `boundary`: a new partition takes `[boundary, end]` with the
    /// application state of those keys (see [`crate::transfer`]). Returns the new partition once
    /// the split completed; fails if it was aborted.
    pub async fn split_partition(&self, source: PartitionId, boundary: u64) -> Result<PartitionId, AdminError> {
        let SystemEvent::SplitStarted { target, .. } =
            self.propose_system(SystemCommand::BeginSplit { source, boundary }).await?
        else {
            unreachable!("a split that applied is a split that started");
        };
        self.await_operation(target).await.map(|()| target)
    }

    /// Merge `source` into `survivor` (their ranges must touch): the survivor takes over the
    /// source's range and state, the source is removed. Returns once the merge completed.
    pub async fn merge_partitions(&self, survivor: PartitionId, source: PartitionId) -> Result<(), AdminError> {
        self.propose_system(SystemCommand::BeginMerge { survivor, source }).await?;
        self.await_operation(survivor).await
    }

    /// The membership of `partition` in effect on this node's replica, and whether its last change
    /// is still uncommitted.
    pub async fn partition_membership(&self, partition: PartitionId) -> Result<(Membership, bool), ReplicateError> {
        self.ask(partition, GetMembership).await?.ok_or(ReplicateError::PartitionUnavailable(partition))
    }

    /// Add `node` (reachable at `address`) to the roster as a learner (partition-0 leader only);
    /// it is promoted to voter automatically once caught up. Joining nodes ask for this themselves.
    pub async fn add_learner(&self, node: NodeId, address: &str) -> Result<(), AdminError> {
        self.propose_system(SystemCommand::AddLearner { node, address: address.to_string() }).await.map(|_| ())
    }

    /// Remove `node` from the roster (partition-0 leader only); every partition then drops it.
    pub async fn remove_node(&self, node: NodeId) -> Result<(), AdminError> {
        self.propose_system(SystemCommand::RemoveNode { node }).await.map(|_| ())
    }

    /// Abort the split or merge in progress (partition-0 leader only).
    pub async fn abort_operation(&self) -> Result<(), AdminError> {
        self.propose_system(SystemCommand::AbortOperation).await.map(|_| ())
    }

    /// Wait until no operation is pending; Ok if `receiver` ended up active (completed).
    async fn await_operation(&self, receiver: PartitionId) -> Result<(), AdminError> {
        let timeout = self.inner.config.operation_timeout + self.inner.config.proposal_timeout;
        let changes = self.changes().ok_or(ReplicateError::NotJoined)?;
        let ended = changes
            .wait_until(timeout, || match self.with_state(|s| (s.pending, s.map.get(receiver).map(|i| i.state))) {
                Ok((Some(_), _)) => None,
                Ok((None, Some(PartitionState::Active))) => Some(Ok(())),
                Ok((None, _)) => Some(Err(AdminError::Aborted)),
                Err(error) => Some(Err(error.into())),
            })
            .await;
        ended.unwrap_or(Err(ReplicateError::Timeout(PartitionId::SYSTEM).into()))
    }
}

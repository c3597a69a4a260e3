//! The manager's read and leadership calls: read barriers at a [`Consistency`], reads of the
//! application's state behind one (by partition, or by key with a route that is never stale),
//! leadership transfer, and handing every led partition over before the node stops.
//!
//! # Reading by key
//! This node's partition map may be behind partition 0 (after a restart it replays the map, a
//! lagging replica applies it late), so the partition a key routes to may have handed the key to
//! another partition: its replica then holds a frozen, stale copy. [`RaftManager::read_for_key`]
//! rules that out with three checks:
//! - a route to an **active** partition carries the route's generation; every split or merge
//!   writes a fence of a newer generation into the source's log before the key moves, so a
//!   barrier whose read index covers that fence answers [`ReplicateError::PartitionMoved`] and the
//!   read waits for this node's map and routes again;
//! - a route to a partition **in a split or merge** (its fence is at the route's generation; only
//!   partition 0 knows whether the move completed) first takes a barrier on partition 0 at the
//!   read's consistency and waits until this node applied it, then routes again;
//! - the read itself runs on the application actor, which applies map changes too (and may drop
//!   the range a source handed over): if the key's route changed by the time the read returned,
//!   it routes and reads again.

use super::RaftManager;
use crate::application::{Read, StateMachine, StateMachineActor};
use crate::error::ReplicateError;
use crate::executor::{Consistency, ReadBarrier, TransferLeadership};
use actix::prelude::*;
use kommander_core::system::PartitionState;
use kommander_core::{LogIndex, NodeId, PartitionId};
use std::time::Instant;

/// Routes a read by key tries before giving up (each stale route waits for the map first).
const READ_ROUTES: usize = 4;
/// Times a read barrier is asked for while the partition's leadership moves (each after a leader
/// is known again; the proposal timeout bounds them all).
const LEADERSHIP_ATTEMPTS: usize = 8;

impl RaftManager {
    /// A read barrier on `partition` (any node: a follower asks the leader for the index, then
    /// serves locally). Returns the read index once every entry up to it has been handed to the
    /// application; a read the application makes through its actor afterwards sees every write
    /// acknowledged before this call (for [`Consistency::Linearizable`], and for
    /// [`Consistency::Lease`] while clocks drift within `max_clock_drift`).
    /// [`Consistency::Local`] returns at once. Concurrent barriers share quorum rounds. A barrier
    /// that meets a leadership change (or no leader) waits for the next leader and runs again,
    /// within the proposal timeout; so do [`RaftManager::read`] and [`RaftManager::read_for_key`].
    pub async fn read_barrier(
        &self,
        partition: PartitionId,
        consistency: Consistency,
    ) -> Result<LogIndex, ReplicateError> {
        self.barrier(partition, ReadBarrier::new(consistency)).await.map_err(|e| self.with_endpoint(e))
    }

    /// Ask `partition` for `barrier`, again while its leadership moves: a read has no effect, so
    /// one that failed because the leader changed during its round
    /// ([`ReplicateError::LeadershipLost`]) or because no leader was known
    /// ([`ReplicateError::NotLeader`] without one) waits for a leader and runs again, until the
    /// proposal timeout has passed since the call.
    async fn barrier(&self, partition: PartitionId, barrier: ReadBarrier) -> Result<LogIndex, ReplicateError> {
        let deadline = Instant::now() + self.inner.config.proposal_timeout;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match self.ask(partition, barrier).await.and_then(|r| r) {
                Err(error @ (ReplicateError::LeadershipLost(_) | ReplicateError::NotLeader { leader: None, .. })) => {
                    error
                }
                other => return other,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || attempts >= LEADERSHIP_ATTEMPTS || self.wait_for_leader(partition, left).await.is_err()
            {
                return Err(error);
            }
        }
    }

    /// Read the application's state after a [`RaftManager::read_barrier`]: `read` runs on the
    /// [`StateMachineActor`] registered with the builder, after every entry up to the read index.
    pub async fn read<S, R>(
        &self,
        app: &Addr<StateMachineActor<S>>,
        partition: PartitionId,
        consistency: Consistency,
        read: impl FnOnce(&S) -> R + Send + 'static,
    ) -> Result<R, ReplicateError>
    where
        S: StateMachine,
        R: Send + 'static,
    {
        self.read_barrier(partition, consistency).await?;
        app.send(Read::new(read)).await.map_err(|_| ReplicateError::NotJoined)
    }

    /// Read the state of the partition owning `key` at `consistency` (see the module docs on
    /// reading by key): `read` runs on the [`StateMachineActor`] with the partition it was routed
    /// to, after every entry up to the read index, and a split or merge that moved the key before
    /// this call never makes it see the key's old partition. If the route changed by the time
    /// `read` ran (the application may already have dropped the range it handed over), the read
    /// routes and runs again, so `read` may run more than once. Returns the partition and what `read`
    /// returned. [`ReplicateError::PartitionMoved`] or [`ReplicateError::Timeout`] when this
    /// node's map could not catch up.
    pub async fn read_for_key<S, R>(
        &self,
        app: &Addr<StateMachineActor<S>>,
        key: &[u8],
        consistency: Consistency,
        read: impl Fn(&S, PartitionId) -> R + Clone + Send + 'static,
    ) -> Result<(PartitionId, R), ReplicateError>
    where
        S: StateMachine,
        R: Send + 'static,
    {
        let mut system_checked = consistency == Consistency::Local;
        let mut routes = 0;
        loop {
            let info = self.partition_for_key(key)?;
            if info.state != PartitionState::Active && !system_checked {
                self.system_barrier(consistency).await?;
                system_checked = true;
                continue;
            }
            routes += 1;
            match self.barrier(info.id, ReadBarrier::routed(consistency, info.generation)).await {
                Ok(_) => {
                    let (partition, read) = (info.id, read.clone());
                    let value = app.send(Read::new(move |state| read(state, partition))).await;
                    let value = value.map_err(|_| ReplicateError::NotJoined)?;
                    // The application applies map changes too (it may drop a range the partition
                    // handed over): a read it served after the route changed may miss the key.
                    let current = self.partition_for_key(key)?;
                    if current == info {
                        return Ok((partition, value));
                    }
                    if routes >= READ_ROUTES {
                        let (expected, current) = (info.generation, current.generation);
                        return Err(ReplicateError::PartitionMoved { partition, expected, current });
                    }
                }
                Err(ReplicateError::PartitionMoved { current, .. }) if routes < READ_ROUTES => {
                    // The partition's log is ahead of this node's map: wait for the map.
                    if self.map_entry_at_least(info.id, current).await?.generation < current {
                        return Err(ReplicateError::Timeout(PartitionId::SYSTEM));
                    }
                }
                Err(error) => return Err(self.with_endpoint(error)),
            }
        }
    }

    /// A barrier on partition 0 at `consistency`, answered once this node's coordinator applied
    /// every system change up to its read index: the map then reflects every split and merge
    /// completed before the call.
    async fn system_barrier(&self, consistency: Consistency) -> Result<(), ReplicateError> {
        let index = self.read_barrier(PartitionId::SYSTEM, consistency).await?;
        let outcomes = self.system_client()?.outcomes;
        let changes = self.changes().ok_or(ReplicateError::NotJoined)?;
        changes
            .wait_until(self.inner.config.proposal_timeout, || (outcomes.applied_index() >= index).then_some(()))
            .await
            .ok_or(ReplicateError::Timeout(PartitionId::SYSTEM))
    }

    /// Hand this node's leadership of `partition` to the voter `to` (thesis §3.10): proposals
    /// fail fast with a hint while it runs; returns once `to` leads, or
    /// [`ReplicateError::Timeout`] when the transfer was abandoned (after the minimum election
    /// timeout) and this node leads again.
    pub async fn transfer_leadership(&self, partition: PartitionId, to: NodeId) -> Result<(), ReplicateError> {
        self.ask(partition, TransferLeadership { to: Some(to) }).await??;
        let changes = self.changes().ok_or(ReplicateError::NotJoined)?;
        let timeout = self.inner.config.election_timeout.1;
        changes
            .wait_until(timeout, || (self.leader(partition) == Some(to)).then_some(()))
            .await
            .ok_or(ReplicateError::Timeout(partition))
    }

    /// Hand every partition this node leads to its most caught-up live voter, and wait (at most
    /// the minimum election timeout, the transfers' own limit) until it leads none: a node that
    /// stops after this costs its partitions no election timeout.
    pub(crate) async fn hand_over_leaderships(&self) {
        let led: Vec<PartitionId> =
            self.partitions().into_iter().chain([PartitionId::SYSTEM]).filter(|&p| self.is_leader(p)).collect();
        if led.is_empty() {
            return;
        }
        let started = futures_util::future::join_all(led.iter().map(|&p| self.ask(p, TransferLeadership { to: None })));
        let started = started.await.into_iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        let Some(changes) = self.changes() else { return };
        let leads_any = || led.iter().any(|&p| self.is_leader(p));
        let done = changes.wait_until(self.inner.config.election_timeout.0, || (!leads_any()).then_some(())).await;
        let still: Vec<PartitionId> = led.iter().copied().filter(|&p| self.is_leader(p)).collect();
        tracing::info!(node = %self.node(), led = led.len(), started, handed_over = done.is_some(), ?still, "leaderships handed over");
    }
}

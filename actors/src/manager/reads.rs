//! The manager's read and leadership calls: read barriers at a [`Consistency`], reads of the
//! application's state behind one, leadership transfer, and handing every led partition over
//! before the node stops.

use super::RaftManager;
use crate::application::{Read, StateMachine, StateMachineActor};
use crate::error::ReplicateError;
use crate::executor::{Consistency, ReadBarrier, TransferLeadership};
use actix::prelude::*;
use kommander_core::{LogIndex, NodeId, PartitionId};

impl RaftManager {
    /// A read barrier on `partition` (any node: a follower asks the leader for the index, then
    /// serves locally). Returns the read index once every entry up to it has been handed to the
    /// application; a read the application makes through its actor afterwards sees every write
    /// acknowledged before this call (for [`Consistency::Linearizable`], and for
    /// [`Consistency::Lease`] while clocks drift within `max_clock_drift`).
    /// [`Consistency::Local`] returns at once. Concurrent barriers share quorum rounds.
    pub async fn read_barrier(
        &self,
        partition: PartitionId,
        consistency: Consistency,
    ) -> Result<LogIndex, ReplicateError> {
        self.ask(partition, ReadBarrier { consistency }).await.and_then(|r| r).map_err(|e| self.with_endpoint(e))
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

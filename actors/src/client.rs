//! [`RaftClient`]: what an application actor calls on the runtime — propose, commit and roll back
//! two-phase proposals, ask who leads, route keys — as a trait, so the actor can hold an
//! `Arc<dyn RaftClient>` and be tested against [`MockRaftClient`] (feature `mocks`) or a real
//! in-memory cluster (`kommander::testing`). [`crate::RaftManager`] implements it.
//!
//! Answers are [`Reply`] futures: boxed and `'static` (they own what they need), not `Send` —
//! like everything running on an actix arbiter — so an actor can wrap them in a `ResponseFuture`
//! or `actix::fut::wrap_future`.
//!
//! Testing an application actor against the mock (feature `mocks`):
//! ```
//! use actix::prelude::*;
//! use kommander_actors::{MockRaftClient, RaftClient, ReplicateError};
//! use kommander_core::raft::ProposalCommitted;
//! use kommander_core::{Bytes, HlcTimestamp, NodeId, PartitionId};
//!
//! const ORDERS: PartitionId = PartitionId(1);
//!
//! /// The user's actor: places orders through whichever node leads, or says who does.
//! struct Orders {
//!     raft: Box<dyn RaftClient>,
//! }
//! impl Actor for Orders {
//!     type Context = Context<Self>;
//! }
//!
//! #[derive(Message)]
//! #[rtype(result = "Result<u64, String>")]
//! struct Place(String);
//!
//! impl Handler<Place> for Orders {
//!     type Result = ResponseFuture<Result<u64, String>>;
//!     fn handle(&mut self, order: Place, _: &mut Context<Self>) -> Self::Result {
//!         if !self.raft.is_leader(ORDERS) {
//!             let leader = self.raft.leader(ORDERS);
//!             return Box::pin(async move { Err(format!("ask {leader:?}")) });
//!         }
//!         let reply = self.raft.replicate(ORDERS, "order", vec![Bytes::from(order.0)], true);
//!         Box::pin(async move { reply.await.map(|c| c.last_index).map_err(|e| e.to_string()) })
//!     }
//! }
//!
//! #[actix::main]
//! async fn main() {
//!     let mut raft = MockRaftClient::new();
//!     raft.expect_is_leader().returning(|p| p == ORDERS);
//!     raft.expect_replicate()
//!         .withf(|p, log_type, payloads, auto| {
//!             *p == ORDERS && log_type == "order" && payloads == &[Bytes::from_static(b"book")] && *auto
//!         })
//!         .times(1)
//!         .returning(|_, _, _, _| {
//!             let ticket = HlcTimestamp { physical_ms: 1, logical: 0, node: 1 };
//!             Box::pin(async move { Ok(ProposalCommitted { ticket, first_index: 7, last_index: 7 }) })
//!         });
//!     let orders = Orders { raft: Box::new(raft) }.start();
//!     assert_eq!(orders.send(Place("book".into())).await.unwrap(), Ok(7));
//!
//!     // A follower answers with the leader's id instead of writing.
//!     let mut follower = MockRaftClient::new();
//!     follower.expect_is_leader().return_const(false);
//!     follower.expect_leader().return_const(Some(NodeId(3)));
//!     follower.expect_replicate().never();
//!     let orders = Orders { raft: Box::new(follower) }.start();
//!     assert_eq!(orders.send(Place("pen".into())).await.unwrap(), Err("ask Some(NodeId(3))".into()));
//! }
//! ```

use crate::error::ReplicateError;
use crate::executor::Consistency;
use crate::manager::RaftManager;
use bytes::Bytes;
use kommander_core::raft::ProposalCommitted;
use kommander_core::system::PartitionInfo;
use kommander_core::{LogIndex, NodeId, PartitionId, Ticket, TicketOutcome};
use std::future::Future;
use std::pin::Pin;

/// The future of a runtime call.
pub type Reply<T> = Pin<Box<dyn Future<Output = Result<T, ReplicateError>>>>;

/// The calls an application makes on its node.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait RaftClient {
    /// Replicate `payloads` (one entry each) on `partition`; see [`RaftManager::replicate`].
    fn replicate(
        &self,
        partition: PartitionId,
        log_type: &str,
        payloads: Vec<Bytes>,
        auto_commit: bool,
    ) -> Reply<ProposalCommitted>;

    /// Deliver the held entries of a two-phase proposal; see [`RaftManager::commit`].
    fn commit(&self, partition: PartitionId, ticket: Ticket) -> Reply<TicketOutcome>;

    /// Drop the held entries of a two-phase proposal; see [`RaftManager::rollback`].
    fn rollback(&self, partition: PartitionId, ticket: Ticket) -> Reply<TicketOutcome>;

    /// Route `key` with the current map and replicate one guarded entry to its partition; see
    /// [`RaftManager::replicate_for_key`].
    fn replicate_for_key(&self, key: &[u8], log_type: &str, payload: Bytes) -> Reply<(PartitionId, ProposalCommitted)>;

    /// A read barrier on `partition` at `consistency`; see [`RaftManager::read_barrier`].
    fn read_barrier(&self, partition: PartitionId, consistency: Consistency) -> Reply<LogIndex>;

    /// Does this node lead `partition` (with established leadership)?
    fn is_leader(&self, partition: PartitionId) -> bool;

    /// The known leader of `partition`.
    fn leader(&self, partition: PartitionId) -> Option<NodeId>;

    /// Where the leader of `partition` serves clients (its `RuntimeConfig::application_address`,
    /// from the roster): forward a client there after `NotLeader`.
    fn leader_application_address(&self, partition: PartitionId) -> Option<String>;

    /// The partition owning `key`, with its generation.
    fn partition_for_key(&self, key: &[u8]) -> Result<PartitionInfo, ReplicateError>;
}

impl RaftClient for RaftManager {
    fn replicate(
        &self,
        partition: PartitionId,
        log_type: &str,
        payloads: Vec<Bytes>,
        auto_commit: bool,
    ) -> Reply<ProposalCommitted> {
        let (node, log_type) = (self.clone(), log_type.to_string());
        Box::pin(async move { node.replicate(partition, &log_type, payloads, auto_commit).await })
    }

    fn commit(&self, partition: PartitionId, ticket: Ticket) -> Reply<TicketOutcome> {
        let node = self.clone();
        Box::pin(async move { node.commit(partition, ticket).await })
    }

    fn rollback(&self, partition: PartitionId, ticket: Ticket) -> Reply<TicketOutcome> {
        let node = self.clone();
        Box::pin(async move { node.rollback(partition, ticket).await })
    }

    fn replicate_for_key(&self, key: &[u8], log_type: &str, payload: Bytes) -> Reply<(PartitionId, ProposalCommitted)> {
        let (node, key, log_type) = (self.clone(), key.to_vec(), log_type.to_string());
        Box::pin(async move { RaftManager::replicate_for_key(&node, &key, &log_type, payload).await })
    }

    fn read_barrier(&self, partition: PartitionId, consistency: Consistency) -> Reply<LogIndex> {
        let node = self.clone();
        Box::pin(async move { node.read_barrier(partition, consistency).await })
    }

    fn is_leader(&self, partition: PartitionId) -> bool {
        RaftManager::is_leader(self, partition)
    }

    fn leader(&self, partition: PartitionId) -> Option<NodeId> {
        RaftManager::leader(self, partition)
    }

    fn leader_application_address(&self, partition: PartitionId) -> Option<String> {
        RaftManager::leader_application_address(self, partition)
    }

    fn partition_for_key(&self, key: &[u8]) -> Result<PartitionInfo, ReplicateError> {
        RaftManager::partition_for_key(self, key)
    }
}

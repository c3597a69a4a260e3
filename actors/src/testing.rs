//! A test kit for applications: [`TestCluster`] starts an N-node cluster in one call — in memory
//! (an [`InMemoryNetwork`] and a `MemoryWal` per node), with fast timers and your
//! [`StateMachine`] on every node — for your own integration tests. Run it inside an actix system
//! (`#[actix::test]`). For testing one actor against the runtime's calls without a cluster, use
//! `MockRaftClient` (feature `mocks`).
//!
//! ```
//! use kommander_actors::testing::TestCluster;
//! use kommander_actors::{Read, StateMachine};
//! use kommander_core::{LogEntry, PartitionId};
//!
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     fn apply(&mut self, _: PartitionId, entries: &[LogEntry]) {
//!         self.0 += entries.len() as u64;
//!     }
//!     fn reset(&mut self, _: PartitionId) {
//!         self.0 = 0;
//!     }
//! }
//!
//! #[actix::main]
//! async fn main() {
//!     let cluster = TestCluster::<Counter>::start(3, 2).await.unwrap();
//!     cluster.replicate(PartitionId(1), "count", vec![b"+1".to_vec()]).await.unwrap();
//!     // Every node applies it (the leader answered once it committed; followers follow).
//!     for node in 0..3 {
//!         let seen = cluster.wait_for(node, |c: &Counter| c.0 == 1).await;
//!         assert!(seen, "node {node} applied the entry");
//!     }
//!     cluster.shutdown().await;
//! }
//! ```

use crate::application::{Read, StateMachine, StateMachineActor};
use crate::config::RuntimeConfig;
use crate::error::{ManagerError, ReplicateError};
use crate::manager::RaftManager;
use crate::memory_transport::InMemoryNetwork;
use actix::prelude::*;
use bytes::Bytes;
use kommander_core::raft::ProposalCommitted;
use kommander_core::{MemoryWal, NodeContact, NodeId, PartitionId, ProposeError, StaticDiscovery};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the kit's waits last before they give up.
const PATIENCE: Duration = Duration::from_secs(10);

/// One node of a [`TestCluster`].
pub struct TestNode<S: StateMachine> {
    /// The node's runtime.
    pub manager: RaftManager,
    /// The node's state machine actor.
    pub state: Addr<StateMachineActor<S>>,
}

/// An in-memory cluster of nodes running the same [`StateMachine`].
pub struct TestCluster<S: StateMachine> {
    network: InMemoryNetwork,
    nodes: Vec<TestNode<S>>,
}

impl<S: StateMachine + Default> TestCluster<S> {
    /// Start `nodes` nodes (ids 1..=nodes) with `partitions` user partitions each, and wait until
    /// every partition has a leader.
    pub async fn start(nodes: usize, partitions: u32) -> Result<Self, ManagerError> {
        let tick = Duration::from_millis(10);
        let config = RuntimeConfig {
            initial_partitions: partitions,
            tick,
            heartbeat_interval: tick,
            election_timeout: (tick * 10, tick * 20),
            proposal_timeout: Duration::from_secs(5),
            ..RuntimeConfig::default()
        };
        let network = InMemoryNetwork::new();
        let ids: Vec<NodeId> = (1..=nodes as u64).map(NodeId).collect();
        let mut started = Vec::new();
        for &node in &ids {
            let contacts = ids
                .iter()
                .filter(|&&n| n != node)
                .map(|&n| NodeContact { node: n, address: format!("memory://{n}") })
                .collect();
            let state = StateMachineActor::new(S::default()).start();
            let manager = RaftManager::builder(node)
                .config(config.clone())
                .wal(Arc::new(MemoryWal::new()))
                .transport(network.transport(node))
                .discovery(Arc::new(StaticDiscovery::new(contacts)))
                .state_machine(&state)
                .snapshot_store(crate::SnapshotStore::memory())
                .build()?;
            manager.join_cluster().await?;
            started.push(TestNode { manager, state });
        }
        let cluster = TestCluster { network, nodes: started };
        for partition in (1..=partitions).map(PartitionId) {
            cluster.leader(partition).await.map_err(|e| ManagerError::Config(format!("no leader: {e}")))?;
        }
        Ok(cluster)
    }
}

impl<S: StateMachine> TestCluster<S> {
    /// The nodes, in id order (node `i` has id `i + 1`).
    pub fn nodes(&self) -> &[TestNode<S>] {
        &self.nodes
    }

    /// Node `i` (id `i + 1`).
    pub fn node(&self, i: usize) -> &TestNode<S> {
        &self.nodes[i]
    }

    /// The network, to cut links and isolate nodes.
    pub fn network(&self) -> &InMemoryNetwork {
        &self.network
    }

    /// The node leading `partition` (waiting for one to be elected).
    pub async fn leader(&self, partition: PartitionId) -> Result<&TestNode<S>, ReplicateError> {
        let leader = self.nodes[0].manager.wait_for_leader(partition, PATIENCE).await?;
        self.nodes.iter().find(|n| n.manager.node() == leader).ok_or(ReplicateError::Timeout(partition))
    }

    /// Replicate auto-commit entries on `partition` through its current leader, retrying while
    /// leadership moves.
    pub async fn replicate(
        &self,
        partition: PartitionId,
        log_type: &str,
        payloads: impl IntoIterator<Item = impl Into<Bytes>>,
    ) -> Result<ProposalCommitted, ReplicateError> {
        let payloads: Vec<Bytes> = payloads.into_iter().map(Into::into).collect();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leader = self.leader(partition).await?;
            match leader.manager.replicate(partition, log_type, payloads.clone(), true).await {
                // Leadership moving: nothing was appended, so a retry cannot duplicate the write.
                Err(
                    ReplicateError::NotLeader { .. }
                    | ReplicateError::Rejected {
                        source: ProposeError::LeadershipPending | ProposeError::LeadershipTransfer { .. },
                        ..
                    },
                ) if Instant::now() < deadline => {
                    // Leadership is moving: the next leader is waited for above.
                    actix::clock::sleep(Duration::from_millis(10)).await;
                }
                other => return other,
            }
        }
    }

    /// Read node `i`'s state.
    pub async fn read<R: Send + 'static>(&self, i: usize, read: impl FnOnce(&S) -> R + Send + 'static) -> R {
        self.nodes[i].state.send(Read::new(read)).await.expect("the state machine actor runs")
    }

    /// Wait until `check` holds on node `i`'s state (true), or give up after a while (false).
    pub async fn wait_for(&self, i: usize, check: impl Fn(&S) -> bool + Clone + Send + 'static) -> bool {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if self.read(i, check.clone()).await {
                return true;
            }
            // The state lives on another actor; re-reading it is the only way to observe it.
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Stop every node.
    pub async fn shutdown(self) {
        for node in &self.nodes {
            node.manager.shutdown().await;
        }
    }
}

//! The openraft side of the harness: the type config (empty request and response), the "network"
//! (a `RaftNetworkV2` that calls the target node's `Raft` handle in this process directly) and a
//! fresh 3-node cluster's start (node 1 initialises the membership {1,2,3} and is awaited as
//! leader) and shutdown.

use crate::store::{LogStore, SnapshotData, StateMachine};
use futures_util::StreamExt;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{stream_append_sequential, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{Config, OptionalSend, Raft, RaftNetworkV2, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const NODES: [u64; 3] = [1, 2, 3];
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The empty application write.
#[derive(Debug, Clone, Copy)]
pub struct Request;

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Request")
    }
}

/// The state machine's empty answer to a write.
#[derive(Debug, Clone, Copy)]
pub struct Response;

openraft::declare_raft_types!(
    /// openraft's defaults (u64 ids and terms, `leader_id_adv`, tokio) with empty app data and nodes.
    pub TypeConfig:
        D = Request,
        R = Response,
        Node = (),
);

pub type BenchRaft = Raft<TypeConfig, StateMachine>;

/// The `Raft` handles of one cluster by node id; every node's network factory shares it.
#[derive(Clone)]
pub struct Router {
    nodes: Arc<Mutex<BTreeMap<u64, BenchRaft>>>,
    /// Replicate with the target's `Raft::stream_append` (pipelined) instead of one
    /// `append_entries` call at a time (openraft's default `stream_append_sequential`).
    pipeline: bool,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, _node: &()) -> Peer {
        let raft = self.nodes.lock().expect("router mutex poisoned")[&target].clone();
        Peer { raft, pipeline: self.pipeline }
    }
}

/// The connection to one peer: its `Raft` handle.
pub struct Peer {
    raft: BenchRaft,
    pipeline: bool,
}

/// A stopped target (its `Fatal`) looks like an unreachable peer to the sender.
fn unreachable(error: impl Error + 'static) -> Unreachable<TypeConfig> {
    Unreachable::new(&error)
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.raft.append_entries(rpc).await.map_err(|e| unreachable(e).into())
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        if !self.pipeline {
            return stream_append_sequential(self, input, option);
        }
        let output = self.raft.stream_append(input).map(|result| result.map_err(|e| unreachable(e).into()));
        Box::pin(async move { Ok(Box::pin(output) as BoxStream<'s, _>) })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.raft.vote(rpc).await.map_err(|e| unreachable(e).into())
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.raft.pre_vote(rpc).await.map_err(|e| unreachable(e).into())
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        self.raft.install_full_snapshot(vote, snapshot).await.map_err(|e| unreachable(e).into())
    }
}

/// A running 3-node cluster whose node 1 leads.
pub struct Cluster {
    router: Router,
    /// The nodes' handles, `nodes[i]` is node `NODES[i]`.
    pub nodes: Arc<Vec<BenchRaft>>,
}

impl Cluster {
    /// A fresh cluster: new stores, all three nodes built and registered before any runs, then node
    /// 1 initialises {1,2,3}; returns once node 1 is leader and has applied its own first entry.
    pub async fn start(config: Arc<Config>, pipeline: bool) -> Result<Cluster, Box<dyn Error>> {
        let router = Router { nodes: Arc::default(), pipeline };
        let mut nodes = Vec::new();
        for id in NODES {
            let raft =
                Raft::build(id, config.clone(), router.clone(), LogStore::default(), StateMachine::default()).await?;
            nodes.push(raft);
        }
        router.nodes.lock().expect("router mutex poisoned").extend(NODES.into_iter().zip(nodes.iter().cloned()));
        for raft in &nodes {
            raft.run();
        }
        let cluster = Cluster { router, nodes: Arc::new(nodes) };
        if let Err(error) = cluster.await_leader().await {
            cluster.shutdown().await;
            return Err(error);
        }
        Ok(cluster)
    }

    async fn await_leader(&self) -> Result<(), Box<dyn Error>> {
        let leader = &self.nodes[0];
        leader.initialize(BTreeSet::from(NODES)).await?;
        let metrics = leader.wait(Some(LEADER_TIMEOUT)).state(ServerState::Leader, "node 1 leads").await?;
        leader.wait(Some(LEADER_TIMEOUT)).applied_index_at_least(metrics.last_log_index, "leader's entry").await?;
        Ok(())
    }

    /// Index in `nodes` of node `id`.
    pub fn index_of(id: u64) -> Option<usize> {
        NODES.iter().position(|&node| node == id)
    }

    /// Stops every node and drops the router's handles (they reference each other's nodes).
    pub async fn shutdown(&self) {
        for raft in self.nodes.iter() {
            let _ = raft.shutdown().await;
        }
        self.router.nodes.lock().expect("router mutex poisoned").clear();
    }
}

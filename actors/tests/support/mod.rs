//! Shared by the system-partition tests: a key-value application per node (payload
//! `key=value`) that exports a hash range on request, replaces a range on `Imported`, and drops keys
//! its partition no longer owns when the map changes; and an in-process cluster of up to five
//! nodes (three founders, two that may join) on an in-memory network.

#![allow(dead_code)]

use actix::prelude::*;
use kommander_actors::{
    ExportState, InMemoryNetwork, RaftEvent, RaftManager, Read, ReplicateError, RuntimeConfig, SnapshotStore,
    StateMachine, StateMachineActor, TakeSnapshot,
};
use kommander_core::system::{key_hash, HashRange, PartitionMap, PartitionState};
use kommander_core::{LogEntry, MemoryWal, NodeContact, NodeId, PartitionId, ProposeError, StaticDiscovery, Wal};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every node a test may start: 1–3 found the cluster, 4 and 5 may join later.
pub const NODES: [u64; 5] = [1, 2, 3, 4, 5];
/// The founding nodes.
pub const FOUNDERS: usize = 3;
pub const P0: PartitionId = PartitionId::SYSTEM;

pub type Store = BTreeMap<PartitionId, BTreeMap<String, String>>;

/// The application of one node.
pub struct KvApp {
    pub store: Store,
    pub map: Option<PartitionMap>,
    /// While set, exports fail (to hold a split in the middle).
    pub export_blocked: Arc<AtomicBool>,
    /// Every (partition, term, leader) announced to this node.
    pub leaders: Vec<(PartitionId, u64, NodeId)>,
}

pub fn in_range(key: &str, range: &HashRange) -> bool {
    range.contains(key_hash(key.as_bytes()))
}

impl KvApp {
    fn prune(&mut self) {
        let Some(map) = &self.map else { return };
        for (partition, keys) in self.store.iter_mut() {
            match map.get(*partition) {
                Some(info) if info.state == PartitionState::Removed => keys.clear(),
                // A source keeps its whole range until the split completes.
                Some(info) => {
                    if let (Some(range), PartitionState::Active) = (info.range, info.state) {
                        keys.retain(|k, _| in_range(k, &range));
                    }
                }
                None => {}
            }
        }
    }
}

impl StateMachine for KvApp {
    fn apply(&mut self, partition: PartitionId, entries: &[LogEntry]) {
        let keys = self.store.entry(partition).or_default();
        for entry in entries {
            let text = std::str::from_utf8(&entry.payload).expect("utf-8 payload");
            let (k, v) = text.split_once('=').expect("key=value");
            keys.insert(k.to_string(), v.to_string());
        }
        self.prune();
    }

    fn reset(&mut self, partition: PartitionId) {
        self.store.remove(&partition);
    }

    fn export(&self, partition: PartitionId, range: HashRange) -> Result<Vec<u8>, String> {
        if self.export_blocked.load(Ordering::SeqCst) {
            return Err("export blocked by the test".into());
        }
        let keys: BTreeMap<&String, &String> = self
            .store
            .get(&partition)
            .map(|m| m.iter().filter(|(k, _)| in_range(k, &range)).collect())
            .unwrap_or_default();
        Ok(serde_json::to_vec(&keys).expect("serialize"))
    }

    fn import(&mut self, partition: PartitionId, _source: PartitionId, range: HashRange, data: &[u8]) {
        let keys = self.store.entry(partition).or_default();
        keys.retain(|k, _| !in_range(k, &range));
        let imported: BTreeMap<String, String> = serde_json::from_slice(data).expect("our own export");
        keys.extend(imported);
    }

    fn map_changed(&mut self, map: &PartitionMap) {
        self.map = Some(map.clone());
        self.prune();
    }

    fn leader_changed(&mut self, partition: PartitionId, term: u64, leader: Option<NodeId>) {
        if let Some(leader) = leader {
            self.leaders.push((partition, term, leader));
        }
    }
}

/// The node's application actor.
pub type App = Addr<StateMachineActor<KvApp>>;

/// Read a node's store.
pub fn dump() -> Read<KvApp, Store> {
    Read::new(|app: &KvApp| app.store.clone())
}

/// Read the leaderships announced to a node.
pub fn leaders() -> Read<KvApp, Vec<(PartitionId, u64, NodeId)>> {
    Read::new(|app: &KvApp| app.leaders.clone())
}

/// The one harness of the multi-node tests: nodes `NODES[..wals.len()]` in one process on an
/// `InMemoryNetwork`, each over its own WAL, each reporting to its own application actor `A` (the
/// key-value `StateMachine` by default; the cluster tests use a raw-event recorder). The first
/// `founders` nodes found the cluster; the others may join later.
pub struct Cluster<A = StateMachineActor<KvApp>>
where
    A: Actor<Context = Context<A>> + Handler<RaftEvent> + Handler<ExportState>,
{
    pub network: InMemoryNetwork,
    config: RuntimeConfig,
    founders: usize,
    pub wals: Vec<Arc<dyn Wal>>,
    /// Each node's snapshot storage (in memory, surviving restarts like the `MemoryWal`s).
    pub snapshot_stores: Vec<SnapshotStore>,
    pub apps: Vec<Addr<A>>,
    /// Who writes each node's snapshots (the key-value application's actor; none for raw-event
    /// applications).
    pub snapshot_writers: Vec<Option<Recipient<TakeSnapshot>>>,
    /// The running nodes' managers (`None`: not started, stopped or left), shared with writers.
    managers: Mutex<Vec<Option<RaftManager>>>,
    pub export_blocked: Arc<AtomicBool>,
}

pub fn config() -> RuntimeConfig {
    RuntimeConfig {
        cluster_id: Some("map-tests".into()),
        initial_partitions: 2,
        tick: Duration::from_millis(20),
        heartbeat_interval: Duration::from_millis(20),
        election_timeout: (Duration::from_millis(160), Duration::from_millis(300)),
        proposal_timeout: Duration::from_secs(3),
        operation_timeout: Duration::from_secs(20),
        system_check_interval: Duration::from_millis(20),
        promotion_window: Duration::from_millis(200),
        ..RuntimeConfig::default()
    }
}

impl Cluster {
    /// Five node slots over fresh `MemoryWal`s with the key-value application; nodes 1–3 found
    /// the cluster with [`config`].
    pub async fn start() -> Cluster {
        Cluster::start_kv(config()).await
    }

    /// [`Cluster::start`] with `config`.
    pub async fn start_kv(config: RuntimeConfig) -> Cluster {
        let wals = NODES.iter().map(|_| Arc::new(MemoryWal::new()) as Arc<dyn Wal>).collect();
        Cluster::start_kv_over(config, wals).await
    }

    /// [`Cluster::start_kv`] with node `i` over `wals[i]` (one per node slot).
    pub async fn start_kv_over(config: RuntimeConfig, wals: Vec<Arc<dyn Wal>>) -> Cluster {
        let export_blocked = Arc::new(AtomicBool::new(false));
        let apps = NODES
            .iter()
            .map(|_| {
                StateMachineActor::new(KvApp {
                    store: Store::new(),
                    map: None,
                    export_blocked: export_blocked.clone(),
                    leaders: Vec::new(),
                })
                .start()
            })
            .collect();
        let apps: Vec<Addr<StateMachineActor<KvApp>>> = apps;
        let writers = apps.iter().map(|a| Some(a.clone().recipient())).collect();
        let mut cluster = Cluster::start_with_writers(config, FOUNDERS, wals, apps, writers).await;
        cluster.export_blocked = export_blocked;
        cluster
    }

    /// Write `key=value` through the current owner of the key, retrying across leader changes and
    /// map changes; true once acknowledged.
    pub async fn put(&self, key: &str, value: &str) -> bool {
        self.put_avoiding(key, value, &[]).await
    }

    /// [`Cluster::put`] through any node but `avoid`'s (a node whose writes hang, say).
    pub async fn put_avoiding(&self, key: &str, value: &str, avoid: &[NodeId]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            for manager in self.running().into_iter().filter(|m| !avoid.contains(&m.node())) {
                let Ok(info) = manager.partition_for_key(key.as_bytes()) else { continue };
                if !manager.is_leader(info.id) {
                    continue;
                }
                let payload = format!("{key}={value}").into_bytes();
                match manager.replicate_guarded(info.id, info.generation, "kv", vec![payload]).await {
                    Ok(_) => return true,
                    Err(
                        ReplicateError::PartitionMoved { .. }
                        | ReplicateError::NotLeader { .. }
                        | ReplicateError::Rejected {
                            source:
                                ProposeError::LeadershipPending
                                | ProposeError::Superseded { .. }
                                | ProposeError::LeadershipTransfer { .. },
                            ..
                        }
                        | ReplicateError::Timeout(_)
                        | ReplicateError::PartitionUnavailable(_)
                        | ReplicateError::UnknownPartition(_),
                    ) => {}
                    Err(other) => panic!("unexpected write error: {other}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// Every acknowledged key is held, with its value, by the partition owning it, on every node.
    pub async fn check_readable(&self, acked: &HashMap<String, String>) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut problems = Vec::new();
            for manager in self.running() {
                let i = index_of(manager.node());
                let map = manager.partition_map().expect("map");
                let store = self.apps[i].send(dump()).await.expect("dump");
                for (key, value) in acked {
                    let owner = map.route(key.as_bytes()).expect("owner").id;
                    if store.get(&owner).and_then(|m| m.get(key)) != Some(value) {
                        problems.push(format!("n{}: {key} not in {owner}", NODES[i]));
                    }
                }
            }
            if problems.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} keys unreadable, e.g. {:?}",
                problems.len(),
                &problems[..problems.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// No partition had two leaders in one term, as announced to every node (running or not).
    /// Returns how many (partition, term) leaderships there were.
    pub async fn assert_one_leader_per_term(&self) -> usize {
        let mut by_term: BTreeMap<(PartitionId, u64), BTreeSet<NodeId>> = BTreeMap::new();
        for app in &self.apps {
            for (partition, term, leader) in app.send(leaders()).await.expect("app") {
                by_term.entry((partition, term)).or_default().insert(leader);
            }
        }
        for ((partition, term), leaders) in &by_term {
            assert_eq!(leaders.len(), 1, "{partition} had leaders {leaders:?} in term {term}");
        }
        by_term.len()
    }
}

impl<A> Cluster<A>
where
    A: Actor<Context = Context<A>> + Handler<RaftEvent> + Handler<ExportState>,
{
    /// Nodes `NODES[..wals.len()]` with `config`, node `i` over `wals[i]` reporting to `apps[i]`;
    /// starts the first `founders`.
    pub async fn start_with(
        config: RuntimeConfig,
        founders: usize,
        wals: Vec<Arc<dyn Wal>>,
        apps: Vec<Addr<A>>,
    ) -> Self {
        let writers = apps.iter().map(|_| None).collect();
        Self::start_with_writers(config, founders, wals, apps, writers).await
    }

    /// [`Cluster::start_with`], with who writes each node's snapshots.
    pub async fn start_with_writers(
        config: RuntimeConfig,
        founders: usize,
        wals: Vec<Arc<dyn Wal>>,
        apps: Vec<Addr<A>>,
        snapshot_writers: Vec<Option<Recipient<TakeSnapshot>>>,
    ) -> Self {
        assert_eq!(wals.len(), apps.len());
        let cluster = Cluster {
            snapshot_writers,
            snapshot_stores: wals.iter().map(|_| SnapshotStore::memory()).collect(),
            network: InMemoryNetwork::new(),
            config,
            founders,
            managers: Mutex::new(wals.iter().map(|_| None).collect()),
            wals,
            apps,
            export_blocked: Arc::new(AtomicBool::new(false)),
        };
        for i in 0..founders {
            cluster.start_node(i, false).await;
        }
        cluster
    }

    /// Start node `NODES[i]`: a founder, or (`join`) a node joining the running cluster.
    pub async fn start_node(&self, i: usize, join: bool) {
        let node = NodeId(NODES[i]);
        let contacts = NODES[..self.founders]
            .iter()
            .filter(|&&n| n != node.0)
            .map(|&n| NodeContact { node: NodeId(n), address: format!("memory://{n}") })
            .collect();
        let mut builder = RaftManager::builder(node)
            .config(RuntimeConfig {
                join_existing: join,
                advertise_address: format!("memory://{}", node.0),
                application_address: Some(application_address(node)),
                ..self.config.clone()
            })
            .wal(self.wals[i].clone())
            .transport(self.network.transport(node))
            .discovery(Arc::new(StaticDiscovery::new(contacts)))
            .events(self.apps[i].clone().recipient())
            .state_transfer(self.apps[i].clone().recipient())
            .snapshot_store(self.snapshot_stores[i].clone());
        if let Some(writer) = &self.snapshot_writers[i] {
            builder = builder.snapshots(writer.clone());
        }
        let manager = builder.build().expect("manager");
        manager.join_cluster().await.expect("join");
        self.managers.lock().unwrap()[i] = Some(manager);
    }

    /// Stop node `NODES[i]` (it stays a member; `start_node` restarts it from its WAL); returns
    /// its stopped manager.
    pub async fn stop_node(&self, i: usize) -> RaftManager {
        let manager =
            self.managers.lock().unwrap()[i].take().unwrap_or_else(|| panic!("node {} is not running", NODES[i]));
        manager.shutdown().await;
        manager
    }

    /// The indexes of the running nodes.
    pub fn running_indexes(&self) -> Vec<usize> {
        let managers = self.managers.lock().unwrap();
        (0..managers.len()).filter(|&i| managers[i].is_some()).collect()
    }

    /// Forget `node` after it left the cluster (`leave_cluster` stopped it).
    pub fn forget(&self, node: NodeId) {
        self.managers.lock().unwrap()[index_of(node)] = None;
    }

    /// The running node `NODES[i]`.
    pub fn manager(&self, i: usize) -> Option<RaftManager> {
        self.managers.lock().unwrap()[i].clone()
    }

    pub fn running(&self) -> Vec<RaftManager> {
        self.managers.lock().unwrap().iter().flatten().cloned().collect()
    }

    /// Wait until the roster and every partition's membership (as its leader sees it) list
    /// exactly `voters` as voters and nobody as learner.
    pub async fn converge_to(&self, voters: &[u64]) {
        let expected: BTreeSet<NodeId> = voters.iter().map(|&n| NodeId(n)).collect();
        let partitions = self.config.initial_partitions;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut settled = true;
            let mut seen = Vec::new();
            for partition in (0..=partitions).map(PartitionId) {
                let Some(leader) = self.running().into_iter().find(|m| m.is_leader(partition)) else {
                    settled = false;
                    continue;
                };
                let roster = leader.roster().unwrap();
                let roster_voters: BTreeSet<NodeId> = roster.voters().into_iter().collect();
                match leader.partition_membership(partition).await {
                    Ok((membership, pending)) => {
                        seen.push(format!("{partition}: {membership:?} pending={pending} roster={roster_voters:?}"));
                        settled &= !pending
                            && membership.voters == expected
                            && membership.learners.is_empty()
                            && roster_voters == expected
                            && roster.learners().is_empty();
                    }
                    Err(_) => settled = false,
                }
            }
            if settled {
                return;
            }
            assert!(Instant::now() < deadline, "membership did not converge to {voters:?}: {seen:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait for the running nodes to agree on a leader of `partition`; returns its manager.
    pub async fn leader(&self, partition: PartitionId) -> RaftManager {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let running = self.running();
            let leaders: Vec<_> = running.iter().filter(|m| m.is_leader(partition)).collect();
            if leaders.len() == 1 && running.iter().all(|m| m.leader(partition) == Some(leaders[0].node())) {
                return leaders[0].clone();
            }
            assert!(Instant::now() < deadline, "no agreed leader of {partition}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The running nodes hold the same map, with nothing pending.
    pub async fn settled_map(&self) -> PartitionMap {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let maps: Vec<PartitionMap> = self.running().iter().map(|m| m.partition_map().unwrap()).collect();
            if maps.iter().all(|m| *m == maps[0]) {
                return maps[0].clone();
            }
            assert!(Instant::now() < deadline, "maps differ: {maps:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Where the (pretend) application of `node` serves clients.
pub fn application_address(node: NodeId) -> String {
    format!("http://app-{}.example:8080", node.0)
}

/// The index in [`NODES`] of `node`.
pub fn index_of(node: NodeId) -> usize {
    NODES.iter().position(|&n| n == node.0).unwrap_or_else(|| panic!("unknown node {node}"))
}

impl<A> Drop for Cluster<A>
where
    A: Actor<Context = Context<A>> + Handler<RaftEvent> + Handler<ExportState>,
{
    /// Stop every node still running, even when a test fails, so no arbiter keeps ticking.
    /// (`shutdown` completes without awaiting anything, so one poll runs it to the end.)
    fn drop(&mut self) {
        let managers = std::mem::take(&mut *self.managers.lock().unwrap_or_else(|p| p.into_inner()));
        for manager in managers.into_iter().flatten() {
            let shutdown = std::pin::pin!(manager.shutdown());
            let _ = shutdown.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        }
    }
}

pub fn midpoint(range: HashRange) -> u64 {
    range.start + (range.end - range.start) / 2
}

/// Keep writing keys `prefix-0..` until `stop`; returns the acknowledged ones.
pub fn writer(cluster: Arc<Cluster>, prefix: String, stop: Arc<AtomicBool>) -> actix::prelude::Request<Writer, Run> {
    Writer { cluster, prefix, stop }.start().send(Run)
}

pub struct Writer {
    cluster: Arc<Cluster>,
    prefix: String,
    stop: Arc<AtomicBool>,
}

impl Actor for Writer {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "HashMap<String, String>")]
pub struct Run;

impl Handler<Run> for Writer {
    type Result = ResponseFuture<HashMap<String, String>>;
    fn handle(&mut self, _: Run, _: &mut Context<Self>) -> Self::Result {
        let (cluster, prefix, stop) = (self.cluster.clone(), self.prefix.clone(), self.stop.clone());
        Box::pin(async move {
            let mut acked = HashMap::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let (key, value) = (format!("{prefix}-{i}"), format!("v{i}"));
                if cluster.put(&key, &value).await {
                    acked.insert(key, value);
                }
                i += 1;
            }
            acked
        })
    }
}

//! The replicated partition map on partition 0, in a three-node in-process cluster: creating and
//! removing partitions, a split under write load followed by a merge with every acknowledged key
//! readable from the partition that owns it on every node, a stale-generation write rejected, and
//! a crash of the partition-0 leader in the middle of a split resolved after its restart.
//!
//! The application is a key-value store per partition (payload `key=value`). It exports the keys of
//! a hash range on request, replaces a range's keys on `Imported`, and drops keys its partition no
//! longer owns when the map changes.

use actix::prelude::*;
use kommander_actors::{
    ExportState, InMemoryNetwork, RaftEvent, RaftManager, Replicate, ReplicateError, RuntimeConfig,
};
use kommander_core::system::{key_hash, HashRange, PartitionMap, PartitionState};
use kommander_core::{MemoryWal, NodeContact, NodeId, PartitionId, StaticDiscovery, Wal};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: [u64; 3] = [1, 2, 3];
const P0: PartitionId = PartitionId::SYSTEM;

type Store = BTreeMap<PartitionId, BTreeMap<String, String>>;

/// The application of one node.
struct KvApp {
    store: Store,
    map: Option<PartitionMap>,
    /// While set, exports fail (to hold a split in the middle).
    export_blocked: Arc<AtomicBool>,
}

impl Actor for KvApp {
    type Context = Context<Self>;
}

fn in_range(key: &str, range: &HashRange) -> bool {
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

impl Handler<RaftEvent> for KvApp {
    type Result = ();
    fn handle(&mut self, event: RaftEvent, _: &mut Context<Self>) {
        match event {
            RaftEvent::RestoreStarted { partition } => {
                self.store.remove(&partition);
            }
            RaftEvent::Restored { partition, entries } | RaftEvent::Replicated { partition, entries } => {
                let keys = self.store.entry(partition).or_default();
                for entry in entries {
                    let text = String::from_utf8(entry.payload).expect("utf-8 payload");
                    let (k, v) = text.split_once('=').expect("key=value");
                    keys.insert(k.to_string(), v.to_string());
                }
                self.prune();
            }
            RaftEvent::Imported { partition, range, data, .. } => {
                let keys = self.store.entry(partition).or_default();
                keys.retain(|k, _| !in_range(k, &range));
                let imported: BTreeMap<String, String> = serde_json::from_slice(&data).expect("our own export");
                keys.extend(imported);
            }
            RaftEvent::PartitionMapChanged { map, .. } => {
                self.map = Some(map);
                self.prune();
            }
            _ => {}
        }
    }
}

impl Handler<ExportState> for KvApp {
    type Result = Result<Vec<u8>, String>;
    fn handle(&mut self, msg: ExportState, _: &mut Context<Self>) -> Self::Result {
        if self.export_blocked.load(Ordering::SeqCst) {
            return Err("export blocked by the test".into());
        }
        let keys: BTreeMap<&String, &String> = self
            .store
            .get(&msg.partition)
            .map(|m| m.iter().filter(|(k, _)| in_range(k, &msg.range)).collect())
            .unwrap_or_default();
        Ok(serde_json::to_vec(&keys).expect("serialize"))
    }
}

#[derive(Message)]
#[rtype(result = "Store")]
struct Dump;

impl Handler<Dump> for KvApp {
    type Result = MessageResult<Dump>;
    fn handle(&mut self, _: Dump, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.store.clone())
    }
}

struct Cluster {
    network: InMemoryNetwork,
    wals: Vec<MemoryWal>,
    apps: Vec<Addr<KvApp>>,
    managers: Vec<Option<RaftManager>>,
    export_blocked: Arc<AtomicBool>,
}

fn config() -> RuntimeConfig {
    RuntimeConfig {
        cluster_id: "map-tests".into(),
        initial_partitions: 2,
        tick: Duration::from_millis(20),
        heartbeat_interval: Duration::from_millis(20),
        election_timeout: (Duration::from_millis(160), Duration::from_millis(300)),
        proposal_timeout: Duration::from_secs(3),
        operation_timeout: Duration::from_secs(20),
        system_check_interval: Duration::from_millis(20),
        ..RuntimeConfig::default()
    }
}

impl Cluster {
    async fn start() -> Cluster {
        let export_blocked = Arc::new(AtomicBool::new(false));
        let apps = NODES
            .iter()
            .map(|_| KvApp { store: Store::new(), map: None, export_blocked: export_blocked.clone() }.start())
            .collect();
        let mut cluster = Cluster {
            network: InMemoryNetwork::new(),
            wals: NODES.iter().map(|_| MemoryWal::new()).collect(),
            apps,
            managers: NODES.iter().map(|_| None).collect(),
            export_blocked,
        };
        for i in 0..NODES.len() {
            cluster.start_node(i).await;
        }
        cluster
    }

    async fn start_node(&mut self, i: usize) {
        let node = NodeId(NODES[i]);
        let contacts = NODES
            .iter()
            .filter(|&&n| n != node.0)
            .map(|&n| NodeContact { node: NodeId(n), address: format!("memory://{n}") })
            .collect();
        let manager = RaftManager::builder(node)
            .config(config())
            .wal(Arc::new(self.wals[i].clone()))
            .transport(self.network.transport(node))
            .discovery(Arc::new(StaticDiscovery::new(contacts)))
            .events(self.apps[i].clone().recipient())
            .state_transfer(self.apps[i].clone().recipient())
            .build()
            .expect("manager");
        manager.join_cluster().await.expect("join");
        self.managers[i] = Some(manager);
    }

    fn running(&self) -> Vec<RaftManager> {
        self.managers.iter().flatten().cloned().collect()
    }

    /// Wait for the running nodes to agree on a leader of `partition`; returns its manager.
    async fn leader(&self, partition: PartitionId) -> RaftManager {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let running = self.running();
            let leaders: Vec<_> = running.iter().filter(|m| m.am_i_leader(partition)).collect();
            if leaders.len() == 1 && running.iter().all(|m| m.get_leader(partition) == Some(leaders[0].node())) {
                return leaders[0].clone();
            }
            assert!(Instant::now() < deadline, "no agreed leader of {partition}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Write `key=value` through the current owner of the key, retrying across leader changes and
    /// map changes; true once acknowledged.
    async fn put(&self, key: &str, value: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            for manager in self.running() {
                let Ok(info) = manager.partition_for_key(key.as_bytes()) else { continue };
                if !manager.am_i_leader(info.id) {
                    continue;
                }
                let payload = format!("{key}={value}").into_bytes();
                match manager.replicate_guarded(info.id, info.generation, "kv", vec![payload]).await {
                    Ok(_) => return true,
                    Err(
                        ReplicateError::PartitionMoved { .. }
                        | ReplicateError::NotLeader { .. }
                        | ReplicateError::LeadershipPending(_)
                        | ReplicateError::Timeout(_)
                        | ReplicateError::PartitionUnavailable(_)
                        | ReplicateError::UnknownPartition(_)
                        | ReplicateError::Superseded { .. },
                    ) => {}
                    Err(other) => panic!("unexpected write error: {other}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// Every acknowledged key is held, with its value, by the partition owning it, on every node.
    async fn check_readable(&self, acked: &HashMap<String, String>) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut problems = Vec::new();
            for (i, manager) in self.managers.iter().enumerate() {
                let Some(manager) = manager else { continue };
                let map = manager.partition_map().expect("map");
                let store = self.apps[i].send(Dump).await.expect("dump");
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

    /// The running nodes hold the same map, with nothing pending.
    async fn settled_map(&self) -> PartitionMap {
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

fn midpoint(range: HashRange) -> u64 {
    range.start + (range.end - range.start) / 2
}

/// Keep writing keys `prefix-0..` until `stop`; returns the acknowledged ones.
fn writer(cluster: Arc<Cluster>, prefix: String, stop: Arc<AtomicBool>) -> actix::prelude::Request<Writer, Run> {
    Writer { cluster, prefix, stop }.start().send(Run)
}

struct Writer {
    cluster: Arc<Cluster>,
    prefix: String,
    stop: Arc<AtomicBool>,
}

impl Actor for Writer {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "HashMap<String, String>")]
struct Run;

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

#[actix_rt::test]
async fn split_under_load_then_merge_keeps_every_key_readable_from_its_owner() {
    let cluster = Arc::new(Cluster::start().await);
    let p1 = PartitionId(1);
    cluster.leader(P0).await;
    cluster.leader(p1).await;
    cluster.leader(PartitionId(2)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4).map(|w| writer(cluster.clone(), format!("w{w}"), stop.clone())).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = cluster.settled_map().await;
    let range = before.get(p1).unwrap().range.unwrap();
    let boundary = midpoint(range);
    let p0_leader = cluster.leader(P0).await;
    let target = p0_leader.split_partition(p1, boundary).await.expect("split completes");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let after_split = cluster.settled_map().await;
    assert_eq!(after_split.get(p1).unwrap().range, Some(HashRange { start: range.start, end: boundary - 1 }));
    assert_eq!(after_split.get(target).unwrap().range, Some(HashRange { start: boundary, end: range.end }));
    assert!(after_split.get(p1).unwrap().generation > before.get(p1).unwrap().generation);

    let p0_leader = cluster.leader(P0).await;
    p0_leader.merge_partitions(p1, target).await.expect("merge completes");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = HashMap::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    let after_merge = cluster.settled_map().await;
    assert_eq!(after_merge.get(p1).unwrap().range, Some(range));
    assert_eq!(after_merge.get(target).unwrap().state, PartitionState::Removed);
    assert!(acked.len() > 50, "the writers made progress ({} keys)", acked.len());
    let moved = acked.keys().filter(|k| key_hash(k.as_bytes()) >= boundary && in_range(k, &range)).count();
    assert!(moved > 0, "some keys lived in the split-off partition");
    cluster.check_readable(&acked).await;
    println!("{} acknowledged keys readable after split + merge ({moved} passed through {target})", acked.len());
}

#[actix_rt::test]
async fn a_write_with_a_stale_generation_is_rejected() {
    let cluster = Cluster::start().await;
    let p1 = PartitionId(1);
    let leader = cluster.leader(p1).await;
    let key =
        (0..).map(|i| format!("key{i}")).find(|k| leader.partition_for_key(k.as_bytes()).unwrap().id == p1).unwrap();
    let info = leader.partition_for_key(key.as_bytes()).unwrap();
    leader
        .replicate_guarded(p1, info.generation, "kv", vec![format!("{key}=1").into_bytes()])
        .await
        .expect("fresh write");

    let range = info.range.unwrap();
    cluster.leader(P0).await.split_partition(p1, midpoint(range)).await.expect("split");
    let leader = cluster.leader(p1).await;
    let stale = leader.replicate_guarded(p1, info.generation, "kv", vec![format!("{key}=2").into_bytes()]).await;
    assert!(matches!(stale, Err(ReplicateError::PartitionMoved { .. })), "{stale:?}");

    // Bypassing the manager's map check, the partition's log itself rejects the stale guard.
    let executor = leader.partition(p1).unwrap();
    let direct = Replicate {
        log_type: "kv".into(),
        payloads: vec![b"x=1".to_vec()],
        auto_commit: true,
        guard: Some(info.generation),
    };
    let result = executor.send(direct).await.unwrap();
    assert!(
        matches!(result, Err(ReplicateError::PartitionMoved { expected, current, .. }) if expected < current),
        "{result:?}"
    );

    let fresh = leader.partition_for_key(key.as_bytes()).unwrap();
    assert!(fresh.generation > info.generation);
    let owner = cluster.leader(fresh.id).await;
    owner
        .replicate_guarded(fresh.id, fresh.generation, "kv", vec![format!("{key}=3").into_bytes()])
        .await
        .expect("re-routed write");
    assert!(matches!(
        leader.replicate_logs(p1, "kommander.import", vec![vec![]], true).await,
        Err(ReplicateError::ReservedLogType(_))
    ));
}

#[actix_rt::test]
async fn created_partitions_replicate_and_removed_ones_are_reclaimed() {
    let cluster = Cluster::start().await;
    let p0_leader = cluster.leader(P0).await;
    let created = p0_leader.create_partition().await.expect("create");
    assert_eq!(created, PartitionId(3));
    let leader = cluster.leader(created).await;
    for i in 0..5 {
        leader.replicate_logs(created, "kv", vec![format!("k{i}=v").into_bytes()], true).await.expect("write");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.wals.iter().any(|w| w.last_index(created).unwrap() < 6) {
        assert!(Instant::now() < deadline, "not every node stored the new partition's log");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let follower = cluster.running().into_iter().find(|m| !m.am_i_leader(P0)).unwrap();
    assert!(matches!(follower.create_partition().await, Err(ReplicateError::NotLeader { .. })));
    assert!(matches!(p0_leader.remove_partition(PartitionId(1)).await, Err(ReplicateError::SystemRefused(_))));
    p0_leader.remove_partition(created).await.expect("remove");
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.wals.iter().any(|w| w.last_index(created).unwrap() != 0) {
        assert!(Instant::now() < deadline, "the removed partition's WAL was not reclaimed everywhere");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for manager in cluster.running() {
        let result = manager.replicate_logs(created, "kv", vec![b"k=v".to_vec()], true).await;
        assert!(matches!(result, Err(ReplicateError::UnknownPartition(_))), "{result:?}");
        assert_eq!(manager.partition_map().unwrap().get(created).unwrap().state, PartitionState::Removed);
    }
    assert_eq!(p0_leader.create_partition().await.expect("create"), PartitionId(4), "ids are never reused");
}

#[actix_rt::test]
async fn a_crash_of_the_partition_0_leader_mid_split_is_resolved_after_restart() {
    let mut cluster = Cluster::start().await;
    let p1 = PartitionId(1);
    cluster.leader(p1).await;
    let mut acked = HashMap::new();
    for i in 0..40 {
        let (k, v) = (format!("pre-{i}"), format!("v{i}"));
        assert!(cluster.put(&k, &v).await);
        acked.insert(k, v);
    }
    // Hold the split after it began: exports fail until released.
    cluster.export_blocked.store(true, Ordering::SeqCst);
    let p0_leader = cluster.leader(P0).await;
    let range = p0_leader.partition_map().unwrap().get(p1).unwrap().range.unwrap();
    let split = {
        let leader = p0_leader.clone();
        actix_rt::spawn(async move { leader.split_partition(p1, midpoint(range)).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while p0_leader.partition_map().unwrap().get(p1).unwrap().state == PartitionState::Active {
        assert!(Instant::now() < deadline, "the split never began");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Crash (stop) the partition-0 leader mid-split, then restart it from its WAL.
    let crashed =
        cluster.managers.iter().position(|m| m.as_ref().is_some_and(|m| m.node() == p0_leader.node())).unwrap();
    cluster.managers[crashed].take().unwrap().shutdown().await;
    drop(split);
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.start_node(crashed).await;
    cluster.export_blocked.store(false, Ordering::SeqCst);

    let deadline = Instant::now() + Duration::from_secs(20);
    let map = loop {
        let map = cluster.settled_map().await;
        let pending = cluster
            .running()
            .iter()
            .any(|m| m.partition_map().unwrap().live().any(|p| !matches!(p.state, PartitionState::Active)));
        if !pending {
            break map;
        }
        assert!(Instant::now() < deadline, "the interrupted split was never resolved: {map:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let target = map.partitions.keys().copied().max().unwrap();
    let resolved = match map.get(target).unwrap().state {
        PartitionState::Active => "completed",
        PartitionState::Removed => "aborted",
        other => panic!("unexpected state {other:?}"),
    };
    for i in 0..20 {
        let (k, v) = (format!("post-{i}"), format!("v{i}"));
        assert!(cluster.put(&k, &v).await);
        acked.insert(k, v);
    }
    cluster.check_readable(&acked).await;
    println!("split interrupted by a partition-0 leader crash was {resolved} after the restart");
}

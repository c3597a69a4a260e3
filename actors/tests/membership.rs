//! Dynamic membership in a running cluster (in-process, in-memory network): a three-node cluster
//! grows to five by joins — each joiner starts as a learner of every partition, asks to join, is
//! committed to the roster, catches up and is promoted — and shrinks back to three by leaves, while
//! clients keep writing. Afterwards no acknowledged write is missing, every remaining node applied
//! the same sequence per partition, and no partition ever had two leaders in one term.

use actix::prelude::*;
use kommander_actors::{
    InMemoryNetwork, RaftManager, Read, ReplicateError, RuntimeConfig, StateMachine, StateMachineActor,
};
use kommander_core::system::MemberRole;
use kommander_core::{LogEntry, MemoryWal, NodeContact, NodeId, PartitionId, ProposeError, StaticDiscovery};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FOUNDERS: [u64; 3] = [1, 2, 3];
const PARTITIONS: u32 = 2;

#[derive(Default)]
struct Recorder {
    applied: BTreeMap<PartitionId, Vec<Vec<u8>>>,
    leaders: Vec<(PartitionId, u64, NodeId)>,
}

impl StateMachine for Recorder {
    fn apply(&mut self, partition: PartitionId, entries: &[LogEntry]) {
        self.applied.entry(partition).or_default().extend(entries.iter().map(|e| e.payload.clone()));
    }
    fn reset(&mut self, partition: PartitionId) {
        self.applied.remove(&partition);
    }
    fn leader_changed(&mut self, partition: PartitionId, term: u64, leader: Option<NodeId>) {
        if let Some(leader) = leader {
            self.leaders.push((partition, term, leader));
        }
    }
}

type Dumped = (BTreeMap<PartitionId, Vec<Vec<u8>>>, Vec<(PartitionId, u64, NodeId)>);

fn dump() -> Read<Recorder, Dumped> {
    Read::new(|r: &Recorder| (r.applied.clone(), r.leaders.clone()))
}

fn config(join: bool, node: u64) -> RuntimeConfig {
    RuntimeConfig {
        cluster_id: Some("membership".into()),
        initial_partitions: PARTITIONS,
        tick: Duration::from_millis(20),
        heartbeat_interval: Duration::from_millis(20),
        election_timeout: (Duration::from_millis(160), Duration::from_millis(300)),
        proposal_timeout: Duration::from_secs(3),
        operation_timeout: Duration::from_secs(20),
        system_check_interval: Duration::from_millis(20),
        join_existing: join,
        advertise_address: format!("memory://{node}"),
        promotion_window: Duration::from_millis(200),
        ..RuntimeConfig::default()
    }
}

struct Cluster {
    network: InMemoryNetwork,
    nodes: Mutex<BTreeMap<u64, RaftManager>>,
    recorders: BTreeMap<u64, Addr<StateMachineActor<Recorder>>>,
}

impl Cluster {
    fn running(&self) -> Vec<RaftManager> {
        self.nodes.lock().unwrap().values().cloned().collect()
    }

    async fn start(&self, node: u64, join: bool) {
        let contacts = FOUNDERS
            .iter()
            .filter(|&&n| n != node)
            .map(|&n| NodeContact { node: NodeId(n), address: format!("memory://{n}") })
            .collect();
        let manager = RaftManager::builder(NodeId(node))
            .config(config(join, node))
            .wal(Arc::new(MemoryWal::new()))
            .transport(self.network.transport(NodeId(node)))
            .discovery(Arc::new(StaticDiscovery::new(contacts)))
            .state_machine(&self.recorders[&node])
            .build()
            .expect("manager");
        manager.join_cluster().await.expect("join");
        self.nodes.lock().unwrap().insert(node, manager);
    }

    /// Write through whichever running node leads `partition`; true once acknowledged.
    async fn write(&self, partition: PartitionId, payload: Vec<u8>) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(leader) = self.running().into_iter().find(|m| m.is_leader(partition)) {
                match leader.replicate(partition, "w", vec![payload.clone()], true).await {
                    Ok(_) => return true,
                    Err(
                        ReplicateError::ReservedLogType(_)
                        | ReplicateError::Rejected { source: ProposeError::EmptyProposal, .. },
                    ) => {
                        panic!("bad write")
                    }
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// Wait until the roster and every partition's membership (as seen by its leader) list
    /// exactly `voters` as voters and nobody as learner.
    async fn converge_to(&self, voters: &[u64]) {
        let expected: BTreeSet<NodeId> = voters.iter().map(|&n| NodeId(n)).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut settled = true;
            let mut seen = Vec::new();
            for p in 0..=PARTITIONS {
                let partition = PartitionId(p);
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
}

#[actix_rt::test]
async fn a_cluster_grows_to_five_by_joins_and_shrinks_back_by_leaves_under_writes() {
    let recorders = (1..=5).map(|n| (n, StateMachineActor::new(Recorder::default()).start())).collect();
    let cluster = Arc::new(Cluster { network: InMemoryNetwork::new(), nodes: Mutex::new(BTreeMap::new()), recorders });
    for node in FOUNDERS {
        cluster.start(node, false).await;
    }
    cluster.converge_to(&FOUNDERS).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let (cluster, stop, acked) = (cluster.clone(), stop.clone(), acked.clone());
        writers.push(actix_rt::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let partition = PartitionId(1 + (i + w) % PARTITIONS);
                let payload = format!("w{w}-{i}").into_bytes();
                if cluster.write(partition, payload.clone()).await {
                    acked.lock().unwrap().push((partition, payload));
                }
                i += 1;
            }
        }));
    }

    // Grow: 4 joins, is a learner first, then a voter everywhere; then 5.
    cluster.start(4, true).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen_as_learner = false;
    loop {
        let roster = cluster.running()[0].roster().unwrap();
        match roster.members.get(&NodeId(4)).map(|m| m.role) {
            Some(MemberRole::Learner) => seen_as_learner = true,
            Some(MemberRole::Voter) => break,
            None => {}
        }
        assert!(Instant::now() < deadline, "node 4 was never promoted: {roster:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.converge_to(&[1, 2, 3, 4]).await;
    cluster.start(5, true).await;
    cluster.converge_to(&[1, 2, 3, 4, 5]).await;
    println!("grew to 5 voters (node 4 observed as a learner first: {seen_as_learner})");

    // Shrink: the leader of partition 1 leaves, then the leader of partition 0 (or another node):
    // leaders remove themselves and step down once the change commits.
    for partition in [PartitionId(1), PartitionId::SYSTEM] {
        let running = cluster.running();
        let manager = running.iter().find(|m| m.is_leader(partition)).unwrap_or(&running[0]).clone();
        let node = manager.node().0;
        println!("node {node} (leader of {partition}: {}) leaves", manager.is_leader(partition));
        manager.leave_cluster().await;
        cluster.nodes.lock().unwrap().remove(&node);
        let remaining: Vec<u64> = cluster.nodes.lock().unwrap().keys().copied().collect();
        cluster.converge_to(&remaining).await;
    }
    println!("shrank back to 3 voters");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }

    // Every remaining node applied identical sequences containing every acknowledged write.
    let remaining: Vec<u64> = cluster.nodes.lock().unwrap().keys().copied().collect();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "writers made progress: {}", acked.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all_leaders = Vec::new();
    loop {
        let mut dumps = Vec::new();
        for node in &remaining {
            dumps.push(cluster.recorders[node].send(dump()).await.unwrap());
        }
        let same = dumps.iter().all(|(applied, _)| *applied == dumps[0].0);
        let applied: BTreeSet<(PartitionId, Vec<u8>)> =
            dumps[0].0.iter().flat_map(|(p, v)| v.iter().map(move |x| (*p, x.clone()))).collect();
        let missing = acked.iter().filter(|w| !applied.contains(w)).count();
        if same && missing == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "replicas differ ({same}) or {missing} acknowledged writes are missing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in 1..=5u64 {
        all_leaders.extend(cluster.recorders[&node].send(dump()).await.unwrap().1);
    }
    let mut by_term: BTreeMap<(PartitionId, u64), BTreeSet<NodeId>> = BTreeMap::new();
    for (partition, term, leader) in all_leaders {
        by_term.entry((partition, term)).or_default().insert(leader);
    }
    for ((partition, term), leaders) in &by_term {
        assert_eq!(leaders.len(), 1, "{partition} term {term} had leaders {leaders:?}");
    }
    println!(
        "{} acknowledged writes on identical replicas; {} (partition, term) leaderships, one leader each",
        acked.len(),
        by_term.len()
    );
    for manager in cluster.running() {
        manager.shutdown().await;
    }
}

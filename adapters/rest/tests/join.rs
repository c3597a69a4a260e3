//! Dynamic membership over REST, in one process: three founders whose transports know only each
//! other, then a fourth node started with `join_existing` whose transport knows only the founders.
//! The founders learn node 4's address from the roster (their transports are told it), node 4
//! becomes a voter of every partition and applies every write, before and after it joined; then it
//! leaves, the cluster shrinks back to three voters, and the founders' transports forget it.

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer};
use kommander_actors::{RaftManager, RuntimeConfig};
use kommander_core::system::MemberRole;
use kommander_core::{MemoryWal, NodeContact, NodeId, PartitionId, StaticDiscovery};
use kommander_transport_rest::{RestConfig, RestTransport};
use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLUSTER: &str = "rest-join";
const SECRET: &[u8] = b"shared secret of the join test";
const PARTITIONS: u32 = 2;
const PATIENCE: Duration = Duration::from_secs(30);

struct Node {
    manager: RaftManager,
    transport: RestTransport,
    server: ServerHandle,
}

fn runtime_config(join: bool, advertise: &str) -> RuntimeConfig {
    RuntimeConfig {
        initial_partitions: PARTITIONS,
        tick: Duration::from_millis(20),
        heartbeat_interval: Duration::from_millis(20),
        election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
        proposal_timeout: Duration::from_secs(5),
        operation_timeout: Duration::from_secs(20),
        system_check_interval: Duration::from_millis(20),
        join_existing: join,
        advertise_address: advertise.into(),
        promotion_window: Duration::from_millis(200),
        ..RuntimeConfig::default()
    }
}

/// Start `node` listening on `listener`; its transport and discovery know exactly `seeds`.
async fn start(node: u64, listener: TcpListener, seeds: &BTreeMap<u64, String>, join: bool) -> Node {
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = RestConfig::new(NodeId(node), CLUSTER, SECRET.to_vec());
    config.outbox.backoff_min = Duration::from_millis(10);
    config.outbox.backoff_max = Duration::from_millis(200);
    let mut contacts = Vec::new();
    for (&peer, address) in seeds.iter().filter(|(&peer, _)| peer != node) {
        config = config.peer(NodeId(peer), address.clone());
        contacts.push(NodeContact { node: NodeId(peer), address: address.clone() });
    }
    let transport = RestTransport::new(config).expect("transport");
    let routes = transport.routes();
    let server = HttpServer::new(move || App::new().configure(routes.clone()))
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    let manager = RaftManager::builder(NodeId(node))
        .config(runtime_config(join, &base))
        .wal(Arc::new(MemoryWal::new()))
        .transport(Arc::new(transport.clone()))
        .discovery(Arc::new(StaticDiscovery::new(contacts)))
        .build()
        .expect("manager");
    manager.join_cluster().await.expect("join");
    Node { manager, transport, server: handle }
}

async fn until(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Write through whichever node leads `partition`; the index it committed at.
async fn write(nodes: &[&Node], partition: PartitionId, payload: &[u8]) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(leader) = nodes.iter().find(|n| n.manager.is_leader(partition)) {
            if let Ok(committed) = leader.manager.replicate(partition, "kv", vec![payload.to_vec()], true).await {
                return committed.last_index;
            }
        }
        assert!(Instant::now() < deadline, "write to {partition} never acknowledged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// True once every partition's leader among `nodes` has exactly `voters` as voters, no learner,
/// and no change pending, and the roster says the same.
async fn settled(nodes: &[&Node], voters: &BTreeSet<NodeId>) -> bool {
    for p in 0..=PARTITIONS {
        let partition = PartitionId(p);
        let Some(leader) = nodes.iter().find(|n| n.manager.is_leader(partition)) else { return false };
        let Ok(roster) = leader.manager.roster() else { return false };
        if roster.voters().into_iter().collect::<BTreeSet<_>>() != *voters || !roster.learners().is_empty() {
            return false;
        }
        match leader.manager.partition_membership(partition).await {
            Ok((membership, pending)) if !pending && membership.voters == *voters && membership.learners.is_empty() => {
            }
            _ => return false,
        }
    }
    true
}

async fn converge(nodes: &[&Node], voters: &[u64]) {
    let voters: BTreeSet<NodeId> = voters.iter().map(|&n| NodeId(n)).collect();
    let deadline = Instant::now() + PATIENCE;
    while !settled(nodes, &voters).await {
        assert!(Instant::now() < deadline, "membership never converged to {voters:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn a_node_unknown_to_the_founders_joins_over_rest_and_leaves_again() {
    let listeners: Vec<TcpListener> = (0..4).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let bases: Vec<String> = listeners.iter().map(|l| format!("http://{}", l.local_addr().unwrap())).collect();
    let seeds: BTreeMap<u64, String> = (1..=3).map(|n| (n, bases[n as usize - 1].clone())).collect();
    let mut listeners = listeners.into_iter();
    let mut founders = Vec::new();
    for node in 1..=3 {
        founders.push(start(node, listeners.next().unwrap(), &seeds, false).await);
    }
    let founder_refs: Vec<&Node> = founders.iter().collect();
    converge(&founder_refs, &[1, 2, 3]).await;
    // The highest index written per partition.
    let mut written: BTreeMap<PartitionId, u64> = BTreeMap::new();
    for i in 0..20u32 {
        let (partition, payload) = (PartitionId(1 + i % PARTITIONS), format!("before-{i}").into_bytes());
        let index = write(&founder_refs, partition, &payload).await;
        written.insert(partition, index.max(written.get(&partition).copied().unwrap_or(0)));
    }
    for founder in &founders {
        assert!(!founder.transport.peers().contains_key(&NodeId(4)), "a founder knew node 4 beforehand");
    }

    // Node 4: only the founders are known to its transport; nobody knows node 4.
    let joiner = start(4, listeners.next().unwrap(), &seeds, true).await;
    let mut promoted = false;
    let deadline = Instant::now() + PATIENCE;
    while !promoted {
        let roster = founders[0].manager.roster().unwrap();
        promoted = roster.members.get(&NodeId(4)).is_some_and(|m| m.role == MemberRole::Voter);
        assert!(Instant::now() < deadline, "node 4 was never promoted: {roster:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all: Vec<&Node> = founders.iter().chain([&joiner]).collect();
    converge(&all, &[1, 2, 3, 4]).await;
    for founder in &founders {
        let known = founder.transport.peers();
        assert_eq!(known.get(&NodeId(4)).map(|url| url.starts_with(&bases[3])), Some(true), "{known:?}");
    }
    for i in 0..20u32 {
        let (partition, payload) = (PartitionId(1 + i % PARTITIONS), format!("after-{i}").into_bytes());
        let index = write(&all, partition, &payload).await;
        written.insert(partition, index.max(written.get(&partition).copied().unwrap_or(0)));
    }
    // Entries are applied in index order: node 4 applied every write once it applied the last.
    until("node 4 to apply every write", || {
        written.iter().all(|(&p, &index)| joiner.manager.status(p).is_ok_and(|s| s.applied_index >= index))
    })
    .await;
    for p in 1..=PARTITIONS {
        let partition = PartitionId(p);
        let leader = founders[0].manager.leader(partition);
        until("node 4 to know the leader", || joiner.manager.leader(partition) == leader).await;
    }
    println!("node 4 joined, was promoted and applied every write ({written:?})");

    // Node 4 leaves: the cluster shrinks back to the founders, whose transports then forget it.
    let leaving = Instant::now();
    joiner.manager.leave_cluster().await;
    println!("node 4's leave_cluster returned after {:?}", leaving.elapsed());
    joiner.server.stop(false).await;
    converge(&founder_refs, &[1, 2, 3]).await;
    until("the founders' transports to forget node 4", || {
        founders.iter().all(|f| !f.transport.peers().contains_key(&NodeId(4)))
    })
    .await;
    for i in 0..10u32 {
        write(&founder_refs, PartitionId(1 + i % PARTITIONS), format!("left-{i}").as_bytes()).await;
    }
    println!("node 4 left; the founders forgot it and keep accepting writes");
    for founder in founders {
        founder.manager.shutdown().await;
        founder.server.stop(false).await;
    }
}

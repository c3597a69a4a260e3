//! Three kommander nodes in one process talking over the REST transport on loopback ports. Each
//! node mounts the transport's routes inside its own actix-web `App`, next to an application route,
//! exactly as a user service would. The cluster elects leaders in every partition and replicates
//! writes; the application route keeps working; batches of all partitions share requests; and a
//! node with the wrong secret is rejected without disturbing anyone.

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use kommander_actors::{RaftManager, RuntimeConfig};
use kommander_core::transport::InboundSink;
use kommander_core::{
    Envelope, InboundRejection, MemoryWal, MessageBatch, NodeContact, NodeId, PartitionId, RaftMessage,
    StaticDiscovery, Transport,
};
use kommander_transport_rest::{RestConfig, RestTransport};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLUSTER: &str = "rest-cluster";
const SECRET: &[u8] = b"shared secret of the test cluster";
const PARTITIONS: u32 = 4;

struct RunningNode {
    manager: RaftManager,
    transport: RestTransport,
    base: String,
    server: ServerHandle,
}

fn runtime_config() -> RuntimeConfig {
    RuntimeConfig {
        initial_partitions: PARTITIONS,
        tick: Duration::from_millis(20),
        heartbeat_interval: Duration::from_millis(20),
        election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
        proposal_timeout: Duration::from_secs(5),
        ..RuntimeConfig::default()
    }
}

/// Start nodes 1..=3: listeners first (so every node knows its peers' ports), then transports,
/// then a user `App` per node with the transport mounted, then the managers.
async fn start_cluster() -> Vec<RunningNode> {
    start_nodes([CLUSTER; 3]).await
}

/// Three nodes over REST, node `i + 1` configured for cluster `clusters[i]`.
async fn start_nodes(clusters: [&str; 3]) -> Vec<RunningNode> {
    let listeners: Vec<TcpListener> = (0..3).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    let bases: Vec<String> = listeners.iter().map(|l| format!("http://{}", l.local_addr().unwrap())).collect();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let node = NodeId(i as u64 + 1);
        let mut config = RestConfig::new(node, clusters[i], SECRET.to_vec());
        let mut contacts = Vec::new();
        for (j, base) in bases.iter().enumerate() {
            if j != i {
                config = config.peer(NodeId(j as u64 + 1), base.clone());
                contacts.push(NodeContact { node: NodeId(j as u64 + 1), address: base.clone() });
            }
        }
        let transport = RestTransport::new(config).expect("transport");
        let routes = transport.routes();
        let server = HttpServer::new(move || {
            App::new()
                .route("/app/ping", web::get().to(|| async { HttpResponse::Ok().body("pong") }))
                .configure(routes.clone())
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        let manager = RaftManager::builder(node)
            .config(runtime_config())
            .wal(Arc::new(MemoryWal::new()))
            .transport(Arc::new(transport.clone()))
            .discovery(Arc::new(StaticDiscovery::new(contacts)))
            .build()
            .expect("manager");
        nodes.push(RunningNode { manager, transport, base: bases[i].clone(), server: handle });
    }
    for node in &nodes {
        node.manager.join_cluster().await.expect("join");
    }
    nodes
}

async fn agreed_leader(nodes: &[RunningNode], partition: PartitionId) -> NodeId {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let leaders: Vec<_> = nodes.iter().map(|n| n.manager.leader(partition)).collect();
        if let Some(Some(leader)) = leaders.first() {
            let leading = nodes.iter().any(|n| n.manager.node() == *leader && n.manager.is_leader(partition));
            if leading && leaders.iter().all(|l| *l == Some(*leader)) {
                return *leader;
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader for {partition}: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn three_nodes_replicate_over_rest_inside_user_apps() {
    let nodes = start_cluster().await;
    let client = reqwest::Client::new();
    for node in &nodes {
        let body = client.get(format!("{}/app/ping", node.base)).send().await.unwrap().text().await.unwrap();
        assert_eq!(body, "pong", "the application's own route is served next to the transport");
    }
    for p in 1..=PARTITIONS {
        let partition = PartitionId(p);
        let leader = agreed_leader(&nodes, partition).await;
        let manager = &nodes[(leader.0 - 1) as usize].manager;
        for i in 0..20 {
            let payload = format!("p{p}-w{i}").into_bytes();
            manager.replicate(partition, "kv", vec![payload], true).await.expect("write commits");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let applied: Vec<Vec<u64>> = nodes
            .iter()
            .map(|n| (1..=PARTITIONS).map(|p| n.manager.status(PartitionId(p)).unwrap().applied_index).collect())
            .collect();
        if applied.iter().all(|a| a == &applied[0] && a.iter().all(|&i| i >= 21)) {
            break;
        }
        assert!(Instant::now() < deadline, "replicas did not converge: {applied:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = nodes[0].transport.stats();
    let (frames, batches) = (stats.frames_sent.load(Ordering::Relaxed), stats.batches_sent.load(Ordering::Relaxed));
    println!("node 1 sent {batches} batches in {frames} frames");
    assert!(frames > 0 && batches >= frames);
    assert_eq!(stats.rejected_auth.load(Ordering::Relaxed), 0);
    for node in nodes {
        node.manager.shutdown().await;
        node.server.stop(false).await;
    }
}

struct NullSink;

impl InboundSink for NullSink {
    fn deliver(&self, _batch: MessageBatch) -> Result<(), InboundRejection> {
        Ok(())
    }
}

/// A node configured for another cluster id than its peers is told so: `wait_for_leader` answers
/// `PeersRejected` naming both cluster ids (and the rejection is counted and logged), while the
/// other two elect their leaders undisturbed.
#[actix_rt::test]
async fn a_node_of_another_cluster_learns_why_no_leader_shows_up() {
    use kommander_actors::ReplicateError;
    let nodes = start_nodes([CLUSTER, CLUSTER, "elsewhere"]).await;
    let p1 = PartitionId(1);
    for node in &nodes[..2] {
        node.manager.wait_for_leader(p1, Duration::from_secs(10)).await.expect("the two agree on a leader");
    }
    match nodes[2].manager.wait_for_leader(p1, Duration::from_secs(2)).await {
        Err(ReplicateError::PeersRejected { partition, rejected, detail }) => {
            assert_eq!(partition, p1);
            assert!(rejected > 0);
            assert!(detail.contains(CLUSTER) && detail.contains("elsewhere"), "detail: {detail}");
        }
        other => panic!("expected PeersRejected, got {other:?}"),
    }
    assert!(nodes[0].transport.stats().rejected_auth.load(Ordering::Relaxed) > 0, "counted on the others too");
    for node in nodes {
        node.manager.shutdown().await;
        node.server.stop(false).await;
    }
}

#[actix_rt::test]
async fn a_node_with_the_wrong_secret_or_cluster_is_rejected() {
    let nodes = start_cluster().await;
    let p1 = PartitionId(1);
    let leader = agreed_leader(&nodes, p1).await;
    let target = &nodes[(leader.0 - 1) as usize];
    let term_before = target.manager.status(p1).unwrap().term;
    let heartbeat = |cluster: &str| MessageBatch {
        cluster_id: cluster.into(),
        from: NodeId(4),
        to: leader,
        messages: vec![Envelope {
            partition: p1,
            from: NodeId(4),
            to: leader,
            message: RaftMessage::AppendRequest {
                term: 1_000_000,
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![],
                leader_commit: 0,
            },
        }],
    };
    let intruders = [
        (RestConfig::new(NodeId(4), CLUSTER, b"not the secret".to_vec()), CLUSTER),
        (RestConfig::new(NodeId(4), "other-cluster", SECRET.to_vec()), "other-cluster"),
    ];
    for (config, cluster) in intruders {
        let intruder = RestTransport::new(config.peer(leader, target.base.clone())).unwrap();
        intruder.start(Arc::new(NullSink)).unwrap();
        let rejected_before = target.transport.stats().rejected_auth.load(Ordering::Relaxed);
        intruder.send(heartbeat(cluster)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while intruder.stats().frames_failed.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the intruder's frame was never answered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(intruder.stats().frames_sent.load(Ordering::Relaxed), 0);
        assert!(target.transport.stats().rejected_auth.load(Ordering::Relaxed) > rejected_before);
        intruder.stop();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = target.manager.status(p1).unwrap();
    assert!(after.term < 1_000_000 && after.term >= term_before, "the intruder's term leaked in: {after:?}");
    assert!(after.is_leader, "the leader was disturbed: {after:?}");
    for node in nodes {
        node.manager.shutdown().await;
        node.server.stop(false).await;
    }
}

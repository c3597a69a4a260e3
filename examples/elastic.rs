//! Elastic cluster demo: three founding nodes over the REST transport on loopback (SQLite WALs in
//! a temporary directory), clients writing keys routed by the partition map, then a fourth node
//! **joins** (learner → caught up → voter), partition 1 is **split** in two while writes continue,
//! every acknowledged key is checked on every node in the partition that now owns it, and the
//! fourth node **leaves** again.
//!
//! ```text
//! cargo run --example elastic
//! ```

use actix::prelude::*;
use kommander::core::system::{key_hash, PartitionState};
use kommander::prelude::*;
use kommander::transport::rest::{serve, RestConfig, RestTransport};
use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"elastic-demo-secret";

/// A key-value map per partition; keeps only the keys its partition owns.
#[derive(Default)]
struct Kv {
    data: BTreeMap<PartitionId, BTreeMap<String, String>>,
}

impl StateMachine for Kv {
    fn apply(&mut self, partition: PartitionId, entries: &[LogEntry]) {
        let map = self.data.entry(partition).or_default();
        for entry in entries {
            let (key, value) = String::from_utf8_lossy(&entry.payload)
                .split_once('=')
                .map_or_else(|| (String::new(), String::new()), |(k, v)| (k.to_string(), v.to_string()));
            map.insert(key, value);
        }
    }

    fn reset(&mut self, partition: PartitionId) {
        self.data.remove(&partition);
    }

    fn export(&self, partition: PartitionId, range: HashRange) -> Result<Vec<u8>, String> {
        let keys = self.data.get(&partition).into_iter().flatten();
        let lines: Vec<String> =
            keys.filter(|(k, _)| range.contains(key_hash(k.as_bytes()))).map(|(k, v)| format!("{k}={v}")).collect();
        Ok(lines.join("\n").into_bytes())
    }

    fn import(&mut self, partition: PartitionId, _source: PartitionId, range: HashRange, data: &[u8]) {
        let map = self.data.entry(partition).or_default();
        map.retain(|k, _| !range.contains(key_hash(k.as_bytes())));
        for line in String::from_utf8_lossy(data).lines() {
            if let Some((k, v)) = line.split_once('=') {
                map.insert(k.to_string(), v.to_string());
            }
        }
    }

    fn map_changed(&mut self, map: &PartitionMap) {
        for (partition, keys) in &mut self.data {
            if let Some(info) = map.get(*partition).filter(|p| p.state == PartitionState::Active) {
                let range = info.range;
                keys.retain(|k, _| range.is_some_and(|r| r.contains(key_hash(k.as_bytes()))));
            }
        }
    }
}

struct Node {
    manager: RaftManager,
    app: Addr<StateMachineActor<Kv>>,
}

/// Start node `id` on `listener` with the founders `1..=3` as contacts.
async fn start_node(
    id: u64,
    listener: TcpListener,
    urls: &BTreeMap<u64, String>,
    dir: &std::path::Path,
    join: bool,
) -> Result<Node, Box<dyn std::error::Error>> {
    let node = NodeId(id);
    let mut rest = RestConfig::new(node, "elastic", SECRET.to_vec());
    let mut contacts = Vec::new();
    for (&peer, url) in urls.iter().filter(|(&p, _)| p != id && p <= 3) {
        rest = rest.peer(NodeId(peer), url.clone());
        contacts.push(NodeContact { node: NodeId(peer), address: url.clone() });
    }
    let transport = RestTransport::new(rest)?;
    actix::spawn(serve(&transport, listener)?);
    let app = StateMachineActor::new(Kv::default()).start();
    let config = RuntimeConfig {
        initial_partitions: 2,
        tick: Duration::from_millis(20),
        heartbeat_interval: Duration::from_millis(20),
        election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
        join_existing: join,
        advertise_address: urls[&id].clone(),
        promotion_window: Duration::from_millis(300),
        ..RuntimeConfig::default()
    };
    let manager = RaftManager::builder(node)
        .config(config)
        .wal_backend(&WalBackend::Sqlite(dir.join(format!("node-{id}.sqlite"))))?
        .transport(Arc::new(transport))
        .discovery(Arc::new(StaticDiscovery::new(contacts)))
        .state_machine(&app)
        .build()?;
    manager.join_cluster().await?;
    Ok(Node { manager, app })
}

/// Write `key=value` through whichever node leads the key's partition, re-routing on map changes.
async fn put(nodes: &[RaftManager], key: &str, value: &str) -> bool {
    for _ in 0..400 {
        for manager in nodes {
            let Ok(info) = manager.partition_for_key(key.as_bytes()) else { continue };
            if manager.is_leader(info.id) {
                let payload = format!("{key}={value}").into_bytes();
                if manager.replicate_guarded(info.id, info.generation, "kv", vec![payload]).await.is_ok() {
                    return true;
                }
            }
        }
        actix::clock::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn show_map(title: &str, map: &PartitionMap) {
    println!("{title} (map version {}):", map.version);
    for p in map.live() {
        let range = p.range.map_or("-".to_string(), |r| format!("{:#018x}..={:#018x}", r.start, r.end));
        println!("  {}  gen {:>2}  {:?}  {range}", p.id, p.generation, p.state);
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let listeners: Vec<TcpListener> = (0..4).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let urls: BTreeMap<u64, String> =
        (1..=4).map(|i| (i, format!("http://{}", listeners[i as usize - 1].local_addr().unwrap()))).collect();
    let mut listeners = listeners.into_iter();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start_node(id, listeners.next().unwrap(), &urls, dir.path(), false).await?);
    }
    let managers = |nodes: &[Node]| nodes.iter().map(|n| n.manager.clone()).collect::<Vec<_>>();
    for p in 0..=2 {
        nodes[0].manager.wait_for_leader(PartitionId(p), Duration::from_secs(10)).await?;
    }
    println!(
        "3 founders up over REST ({}), SQLite WALs in {}",
        urls.values().take(3).cloned().collect::<Vec<_>>().join(", "),
        dir.path().display()
    );

    // Clients keep writing while the cluster changes shape.
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(std::sync::Mutex::new(managers(&nodes)));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (stop, shared) = (stop.clone(), shared.clone());
        clients.push(actix::spawn(async move {
            let mut acked = HashMap::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let (key, value) = (format!("user-{c}-{i}"), format!("v{i}"));
                let current = shared.lock().unwrap().clone();
                if put(&current, &key, &value).await {
                    acked.insert(key, value);
                }
                i += 1;
            }
            acked
        }));
    }
    actix::clock::sleep(Duration::from_millis(500)).await;

    // A fourth node joins.
    let started = Instant::now();
    nodes.push(start_node(4, listeners.next().unwrap(), &urls, dir.path(), true).await?);
    *shared.lock().unwrap() = managers(&nodes);
    loop {
        let roster = nodes[0].manager.roster()?;
        if roster.voters().contains(&NodeId(4)) {
            println!(
                "node 4 joined as a learner and was promoted to voter after {:.2} s; voters {:?}",
                started.elapsed().as_secs_f64(),
                roster.voters()
            );
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("node 4 was never promoted".into());
        }
        actix::clock::sleep(Duration::from_millis(20)).await;
    }

    // Split partition 1 at the middle of its range while the clients write.
    let before = nodes[0].manager.partition_map()?;
    show_map("partition map before the split", &before);
    let range = before.get(PartitionId(1)).and_then(|p| p.range).ok_or("p1 has no range")?;
    let boundary = range.start + (range.end - range.start) / 2;
    let p0_leader = nodes.iter().find(|n| n.manager.is_leader(PartitionId::SYSTEM)).ok_or("no p0 leader")?;
    let started = Instant::now();
    let new = p0_leader.manager.split_partition(PartitionId(1), boundary).await?;
    println!("split p1 at {boundary:#x} into p1 + {new} in {:.2} s", started.elapsed().as_secs_f64());
    show_map(
        "partition map after the split (as applied on the partition-0 leader)",
        &p0_leader.manager.partition_map()?,
    );
    actix::clock::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = HashMap::new();
    for client in clients {
        acked.extend(client.await?);
    }

    // Every acknowledged key must be held by its owner partition on every node.
    let mut missing = usize::MAX;
    for _ in 0..100 {
        missing = 0;
        for node in &nodes {
            let map = node.manager.partition_map()?;
            let data = node.app.send(Read::new(|kv: &Kv| kv.data.clone())).await?;
            for (key, value) in &acked {
                let owner = map.route(key.as_bytes()).map(|p| p.id);
                if owner.and_then(|o| data.get(&o)).and_then(|m| m.get(key)) != Some(value) {
                    missing += 1;
                }
            }
        }
        if missing == 0 {
            break;
        }
        actix::clock::sleep(Duration::from_millis(100)).await;
    }
    let per_partition: BTreeMap<PartitionId, usize> = nodes[0]
        .app
        .send(Read::new(|kv: &Kv| kv.data.clone()))
        .await?
        .into_iter()
        .map(|(p, keys)| (p, keys.len()))
        .collect();
    println!("{} acknowledged keys; keys per partition on node 1: {per_partition:?}", acked.len());

    // Node 4 leaves through a committed roster change.
    let leaving = nodes.pop().ok_or("no node 4")?;
    leaving.manager.leave_cluster().await;
    println!("node 4 left; voters {:?}", nodes[0].manager.roster()?.voters());
    for node in &nodes {
        node.manager.shutdown().await;
    }
    if missing != 0 {
        eprintln!("MISMATCH: {missing} (node, key) pairs not readable from the owning partition");
        std::process::exit(1);
    }
    println!("every acknowledged key is readable from the partition that owns it on all 4 nodes");
    Ok(())
}

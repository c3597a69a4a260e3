//! Quickstart: a 3-node cluster with 8 user partitions in one process — SQLite WAL files, and the
//! REST transport on loopback ports (each node serves the transport's routes from its own actix-web
//! server) — a write workload across partitions, the leader of partition 1 stopped and restarted
//! from its WAL file mid-run, then linearizable reads on every node (each must see every
//! acknowledged write at once) and a check that every node applied the same sequence per partition.
//!
//! ```text
//! cargo run --example quickstart [-- --dir PATH] [--wal sqlite|memory]
//! ```
//! Without `--dir` the WAL files go to a temporary directory removed at exit.
//! Prints a table (partition, leader, term, committed entries) and the throughput; exits non-zero
//! on any mismatch.

use actix::prelude::*;
use kommander::prelude::*;
use kommander::transport::rest::{serve, RestConfig, RestTransport};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: [u64; 3] = [1, 2, 3];
const PARTITIONS: u32 = 8;
const WRITES: usize = 4_000;
const CLIENTS: usize = 32;
/// The cluster's shared secret: every request between nodes is signed with it.
const SECRET: &[u8] = b"quickstart-secret";

/// The application's replicated state: the applied payloads per partition, in order.
#[derive(Default)]
struct Applied(BTreeMap<PartitionId, Vec<Vec<u8>>>);

impl StateMachine for Applied {
    fn apply(&mut self, partition: PartitionId, entries: &[LogEntry]) {
        self.0.entry(partition).or_default().extend(entries.iter().map(|e| e.payload.to_vec()));
    }
    fn reset(&mut self, partition: PartitionId) {
        self.0.remove(&partition);
    }
}

type KvApp = StateMachineActor<Applied>;

fn config() -> RuntimeConfig {
    RuntimeConfig {
        initial_partitions: PARTITIONS,
        tick: Duration::from_millis(20),
        heartbeat_interval: Duration::from_millis(20),
        election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
        proposal_timeout: Duration::from_secs(5),
        ..RuntimeConfig::default()
    }
}

/// The REST transport of every node, each served by its own HTTP server on a loopback port.
fn start_transports() -> Result<Vec<RestTransport>, Box<dyn std::error::Error>> {
    let listeners: Vec<TcpListener> =
        NODES.iter().map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let urls: Vec<String> =
        listeners.iter().map(|l| l.local_addr().map(|a| format!("http://{a}"))).collect::<Result<_, _>>()?;
    let mut transports = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let mut config = RestConfig::new(NodeId(NODES[i]), "quickstart", SECRET.to_vec());
        for (j, url) in urls.iter().enumerate().filter(|(j, _)| *j != i) {
            config = config.peer(NodeId(NODES[j]), url.clone());
        }
        let transport = RestTransport::new(config)?;
        actix::spawn(serve(&transport, listener)?);
        transports.push(transport);
    }
    println!("REST transport: nodes listen on {}", urls.join(", "));
    Ok(transports)
}

async fn start_node(
    node: u64,
    transport: &RestTransport,
    wal: &WalBackend,
    app: &Addr<KvApp>,
) -> Result<RaftManager, Box<dyn std::error::Error>> {
    let contacts = NODES
        .iter()
        .filter(|&&n| n != node)
        .map(|&n| NodeContact { node: NodeId(n), address: format!("node-{n}") })
        .collect();
    let manager = RaftManager::builder(NodeId(node))
        .config(config())
        .wal_backend(wal)?
        .transport(Arc::new(transport.clone()))
        .discovery(Arc::new(StaticDiscovery::new(contacts)))
        .state_machine(app)
        .build()?;
    manager.join_cluster().await?;
    Ok(manager)
}

/// Write through whichever node leads the partition, retrying while leadership moves.
async fn write(managers: &[RaftManager], partition: PartitionId, payload: Vec<u8>) -> Result<(), ReplicateError> {
    let mut last_error = None;
    for attempt in 0..200 {
        let leader = managers.iter().find(|m| m.is_leader(partition));
        if let Some(manager) = leader {
            match manager.replicate(partition, "kv.put", vec![payload.clone()], true).await {
                Ok(_) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
        }
        actix::clock::sleep(Duration::from_millis(10 + attempt)).await;
    }
    Err(last_error.unwrap_or(ReplicateError::Timeout(partition)))
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut dir, mut backend) = (None, "sqlite".to_string());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = args.next().map(std::path::PathBuf::from),
            "--wal" => backend = args.next().unwrap_or_default(),
            other => {
                return Err(format!("unknown argument {other}; usage: quickstart [--dir PATH] [--wal NAME]").into())
            }
        }
    }
    let temp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let wals: Vec<WalBackend> =
        NODES.iter().map(|n| WalBackend::from_name(&backend, &dir, &format!("node-{n}"))).collect::<Result<_, _>>()?;
    println!("WAL: {backend} files in {}", dir.display());
    let transports = start_transports()?;
    let apps: Vec<Addr<KvApp>> = NODES.iter().map(|_| KvApp::new(Applied::default()).start()).collect();
    let mut managers = Vec::new();
    for (i, &node) in NODES.iter().enumerate() {
        managers.push(start_node(node, &transports[i], &wals[i], &apps[i]).await?);
    }
    for p in 1..=PARTITIONS {
        managers[0].wait_for_leader(PartitionId(p), Duration::from_secs(10)).await?;
    }
    println!("3 nodes up, {PARTITIONS} partitions have leaders; writing {WRITES} entries with {CLIENTS} clients");

    let started = Instant::now();
    let shared = Arc::new(std::sync::Mutex::new(managers.clone()));
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let shared = shared.clone();
        tasks.push(actix::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in (client..WRITES).step_by(CLIENTS) {
                let partition = PartitionId(1 + (i as u32 % PARTITIONS));
                let current = shared.lock().unwrap().clone();
                let payload = format!("key-{i}").into_bytes();
                if write(&current, partition, payload.clone()).await.is_ok() {
                    acknowledged.push((partition, payload));
                }
            }
            acknowledged
        }));
    }

    // Mid-run: stop the node leading partition 1, then restart it from its WAL.
    actix::clock::sleep(Duration::from_millis(300)).await;
    let victim = managers.iter().position(|m| m.is_leader(PartitionId(1))).unwrap_or(0);
    println!("stopping node {} (leader of p1) mid-run", NODES[victim]);
    managers[victim].shutdown().await;
    actix::clock::sleep(Duration::from_millis(800)).await;
    // A new manager reopens the same WAL file: everything acknowledged before the stop is there.
    let restarted = start_node(NODES[victim], &transports[victim], &wals[victim], &apps[victim]).await?;
    managers[victim] = restarted;
    *shared.lock().unwrap() = managers.clone();
    println!("node {} restarted from its WAL", NODES[victim]);

    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await?);
    }
    let elapsed = started.elapsed();
    let failures = WRITES - acknowledged.len();

    // Linearizable reads on every node, followers included (they ask the leader for a read
    // index): each must already show every write acknowledged before it, without waiting.
    let mut acked_in: BTreeMap<PartitionId, usize> = BTreeMap::new();
    for (partition, _) in &acknowledged {
        *acked_in.entry(*partition).or_default() += 1;
    }
    // A node that knows no leader yet (the restarted one, say) answers NotLeader: like any
    // client, retry while the error says a retry can succeed.
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, manager) in managers.iter().enumerate() {
        for (&partition, &acked) in &acked_in {
            let count = move |state: &Applied| state.0.get(&partition).map_or(0, Vec::len);
            let seen = loop {
                match manager.read(&apps[i], partition, Consistency::Linearizable, count).await {
                    Ok(seen) => break seen,
                    Err(error) if error.is_retryable() && Instant::now() < deadline => {
                        actix::clock::sleep(Duration::from_millis(20)).await;
                    }
                    Err(error) => return Err(error.into()),
                }
            };
            if seen < acked {
                eprintln!(
                    "MISMATCH: a linearizable read on node {} saw {seen} of {acked} writes in {partition}",
                    NODES[i]
                );
                std::process::exit(1);
            }
        }
    }
    println!("linearizable reads on all 3 nodes saw every acknowledged write");

    // Every node must converge to the same sequence per partition.
    let mut converged = false;
    let mut snapshots = Vec::new();
    for _ in 0..100 {
        snapshots.clear();
        for app in &apps {
            snapshots.push(app.send(Read::new(|state: &Applied| state.0.clone())).await?);
        }
        if snapshots.iter().all(|s| *s == snapshots[0]) {
            converged = true;
            break;
        }
        actix::clock::sleep(Duration::from_millis(100)).await;
    }

    println!("\n{:>9} {:>7} {:>5} {:>9}", "partition", "leader", "term", "committed");
    let mut total = 0;
    for p in 1..=PARTITIONS {
        let partition = PartitionId(p);
        let status = managers[0].status(partition)?;
        let committed = snapshots[0].get(&partition).map_or(0, Vec::len);
        total += committed;
        let leader = status.leader.map_or("-".to_string(), |l| l.to_string());
        println!("{:>9} {:>7} {:>5} {:>9}", partition.to_string(), leader, status.term, committed);
    }
    println!(
        "\n{total} entries committed for {} acknowledged writes ({failures} failed; extra entries are client \
         retries of writes whose outcome was unknown), {:.0} writes/s over {:.2} s",
        acknowledged.len(),
        (WRITES - failures) as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    for m in &managers {
        m.shutdown().await;
    }
    if !converged {
        eprintln!("MISMATCH: nodes applied different sequences");
        std::process::exit(1);
    }
    // Retried writes may apply twice (at-least-once), but no acknowledged write may be missing.
    let applied: std::collections::HashSet<(PartitionId, &Vec<u8>)> =
        snapshots[0].iter().flat_map(|(p, payloads)| payloads.iter().map(move |v| (*p, v))).collect();
    let lost = acknowledged.iter().filter(|(p, v)| !applied.contains(&(*p, v))).count();
    if lost > 0 || failures > 0 {
        eprintln!("MISMATCH: {lost} acknowledged writes missing, {failures} writes failed");
        std::process::exit(1);
    }
    println!("all 3 nodes applied identical sequences in every partition");
    Ok(())
}

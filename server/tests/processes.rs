//! Whole-system tests with real processes: three `kommander-server` binaries on loopback ports,
//! SQLite WAL files in a temporary directory, talking REST or gRPC.
//!
//! * Every partition elects a leader all three nodes agree on; writes through any node replicate.
//! * The leader of partition 1 is killed with SIGKILL mid-run; writes continue on the other two;
//!   the killed node restarts from its WAL file and catches up: every write acknowledged before
//!   or after the kill is readable on all three nodes, with the acknowledged value.
//! * SIGTERM stops every node cleanly (exit status 0).
//! * A node started with the wrong secret or cluster id is rejected by the others and never
//!   learns a leader, while the other two keep working.
//! * A fourth node started with `--join` (knowing the three as seeds; they know nothing of it)
//!   catches up and serves every key written before and after it joined; SIGTERM under
//!   `--leave-on-sigterm` takes it out of the cluster: afterwards the three tolerate the loss of
//!   one of them (a quorum of two out of three voters), which they could not if it were still a
//!   voter.
//! * A partition is split through the HTTP admin API while writers keep writing: every write
//!   acknowledged before, during or after the split is readable on every node from the partition
//!   that owns its key after the split (the server routes by the partition map).

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/ports.rs"]
mod ports;

use ports::free_port;

const SERVER: &str = env!("CARGO_BIN_EXE_kommander-server");
const PARTITIONS: u32 = 4;
const SECRET: &str = "process-test-secret";

/// How to start one node (kept to restart it identically).
#[derive(Clone)]
struct NodeSpec {
    id: u64,
    args: Vec<String>,
    http: String,
    log: PathBuf,
}

struct Cluster {
    specs: Vec<NodeSpec>,
    children: BTreeMap<u64, Child>,
    transport: String,
    /// HTTP and gRPC ports of nodes 1..=3.
    ports: Vec<(u16, u16)>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Specs for nodes 1..=3 over `transport`; `overrides` replaces (secret, cluster id) per node.
    fn new(transport: &str, overrides: &[(u64, &str, &str)]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let http: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let grpc: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut specs = Vec::new();
        for i in 0..3 {
            let id = i as u64 + 1;
            let (secret, cluster) = overrides
                .iter()
                .find(|(n, _, _)| *n == id)
                .map(|(_, s, c)| (s.to_string(), c.to_string()))
                .unwrap_or((SECRET.to_string(), "process-tests".to_string()));
            let mut args = vec![
                format!("--node-id={id}"),
                format!("--listen=127.0.0.1:{}", http[i]),
                format!("--grpc-listen=127.0.0.1:{}", grpc[i]),
                format!("--partitions={PARTITIONS}"),
                format!("--dir={}", dir.path().join(format!("n{id}")).display()),
                "--wal=sqlite".into(),
                format!("--transport={transport}"),
                format!("--secret={secret}"),
                format!("--cluster-id={cluster}"),
                "--tick-ms=25".into(),
            ];
            for j in 0..3 {
                if j != i {
                    args.push(format!("--peer={}=http://127.0.0.1:{}", j + 1, http[j]));
                    args.push(format!("--peer-grpc={}=http://127.0.0.1:{}", j + 1, grpc[j]));
                }
            }
            let log = dir.path().join(format!("n{id}.log"));
            specs.push(NodeSpec { id, args, http: format!("http://127.0.0.1:{}", http[i]), log });
        }
        let ports = http.into_iter().zip(grpc).collect();
        Cluster { specs, children: BTreeMap::new(), transport: transport.to_string(), ports, _dir: dir }
    }

    /// Add the spec of node `id` (the next id) joining the running cluster: `--join`, nodes 1..=3
    /// as `--peer` seeds, `--leave-on-sigterm`. The other nodes are not told about it.
    fn add_joiner(&mut self, id: u64) {
        assert_eq!(id as usize, self.specs.len() + 1);
        let (http, grpc) = (free_port(), free_port());
        let dir = self._dir.path();
        let mut args = vec![
            format!("--node-id={id}"),
            format!("--listen=127.0.0.1:{http}"),
            format!("--grpc-listen=127.0.0.1:{grpc}"),
            format!("--partitions={PARTITIONS}"),
            format!("--dir={}", dir.join(format!("n{id}")).display()),
            "--wal=sqlite".into(),
            format!("--transport={}", self.transport),
            format!("--secret={SECRET}"),
            "--cluster-id=process-tests".into(),
            "--tick-ms=25".into(),
            "--join".into(),
            "--leave-on-sigterm".into(),
        ];
        for (i, (seed_http, seed_grpc)) in self.ports.iter().enumerate() {
            args.push(format!("--peer={}=http://127.0.0.1:{seed_http}", i + 1));
            args.push(format!("--peer-grpc={}=http://127.0.0.1:{seed_grpc}", i + 1));
        }
        let log = dir.join(format!("n{id}.log"));
        self.specs.push(NodeSpec { id, args, http: format!("http://127.0.0.1:{http}"), log });
    }

    fn spec(&self, id: u64) -> &NodeSpec {
        &self.specs[(id - 1) as usize]
    }

    fn spec_mut(&mut self, id: u64) -> &mut NodeSpec {
        &mut self.specs[(id - 1) as usize]
    }

    fn start(&mut self, id: u64) {
        let spec = self.spec(id).clone();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&spec.log).unwrap();
        let child = Command::new(SERVER)
            .args(&spec.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kommander-server");
        self.children.insert(id, child);
    }

    fn start_all(&mut self) {
        for id in 1..=3 {
            self.start(id);
        }
    }

    fn sigkill(&mut self, id: u64) {
        let mut child = self.children.remove(&id).expect("running");
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }

    /// SIGTERM node `id` and require a clean exit within `patience`; returns how long it took.
    fn sigterm(&mut self, id: u64, patience: Duration) -> Duration {
        let mut child = self.children.remove(&id).expect("running");
        let started = Instant::now();
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        assert!(status.success());
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "node {id} exited with {status} after SIGTERM\n{}", self.logs());
                return started.elapsed();
            }
            if started.elapsed() > patience {
                let _ = child.kill();
                panic!("node {id} did not stop within {patience:?} of SIGTERM\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM every node and require a clean exit within 15 s.
    fn terminate_all(&mut self) {
        for child in self.children.values() {
            let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
            assert!(status.success());
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (id, mut child) in std::mem::take(&mut self.children) {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "node {id} exited with {status} after SIGTERM\n{}", self.logs());
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("node {id} did not stop on SIGTERM\n{}", self.logs());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn logs(&self) -> String {
        self.specs
            .iter()
            .map(|s| {
                let text = std::fs::read_to_string(&s.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(25).collect();
                format!("--- node {} (last lines) ---\n{}", s.id, tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // A failed run keeps its logs (the temporary directory goes with the cluster).
            let keep =
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("process-logs-{}", std::process::id()));
            if std::fs::create_dir_all(&keep).is_ok() {
                for spec in &self.specs {
                    let _ = std::fs::copy(&spec.log, keep.join(format!("n{}.log", spec.id)));
                }
                eprintln!("node logs kept in {}", keep.display());
            }
        }
    }
}

async fn status(client: &reqwest::Client, spec: &NodeSpec) -> Option<Value> {
    let response = client.get(format!("{}/status", spec.http)).send().await.ok()?;
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

/// Leader of each user partition as reported by one node's status (if its leadership is known).
fn leaders(status: &Value) -> BTreeMap<u64, Option<u64>> {
    status["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["partition"].as_u64() != Some(0))
        .map(|p| (p["partition"].as_u64().unwrap(), p["leader"].as_u64()))
        .collect()
}

/// Wait until `nodes` agree on a leader for every user partition; returns them.
async fn agreed_leaders(client: &reqwest::Client, cluster: &Cluster, nodes: &[u64]) -> BTreeMap<u64, u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut views = Vec::new();
        for &id in nodes {
            views.push(status(client, cluster.spec(id)).await.map(|s| leaders(&s)));
        }
        if let Some(Some(first)) = views.first() {
            let complete = first.len() == PARTITIONS as usize && first.values().all(|l| l.is_some());
            if complete && views.iter().all(|v| v.as_ref() == Some(first)) {
                return first.iter().map(|(p, l)| (*p, l.unwrap())).collect();
            }
        }
        assert!(Instant::now() < deadline, "nodes {nodes:?} never agreed on leaders: {views:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Put `key` through any of `nodes` (retrying across leader changes); true once acknowledged.
async fn put(client: &reqwest::Client, cluster: &Cluster, nodes: &[u64], key: &str, value: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0;
    while Instant::now() < deadline {
        let spec = cluster.spec(nodes[attempt % nodes.len()]);
        attempt += 1;
        let sent = client.put(format!("{}/kv/{key}", spec.http)).body(value.to_string()).send().await;
        if let Ok(response) = sent {
            if response.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn get(client: &reqwest::Client, spec: &NodeSpec, key: &str) -> Option<String> {
    let response = client.get(format!("{}/kv/{key}", spec.http)).send().await.ok()?;
    if response.status().is_success() {
        response.text().await.ok()
    } else {
        None
    }
}

/// Wait until every node in `nodes` returns every acknowledged value.
async fn all_readable(client: &reqwest::Client, cluster: &Cluster, nodes: &[u64], acked: &BTreeMap<String, String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut missing = Vec::new();
        for &id in nodes {
            for (key, value) in acked {
                if get(client, cluster.spec(id), key).await.as_deref() != Some(value.as_str()) {
                    missing.push(format!("n{id}:{key}"));
                }
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged writes not readable, e.g. {:?}\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn leader_crash_and_restart(transport: &str) {
    let client = client();
    let mut cluster = Cluster::new(transport, &[]);
    cluster.start_all();
    let leaders = agreed_leaders(&client, &cluster, &[1, 2, 3]).await;
    println!("[{transport}] leaders after start: {leaders:?}");

    let mut acked = BTreeMap::new();
    for i in 0..40 {
        let (key, value) = (format!("before-{i}"), format!("value-{i}"));
        assert!(put(&client, &cluster, &[1, 2, 3], &key, &value).await, "write {key} never acknowledged");
        acked.insert(key, value);
    }
    all_readable(&client, &cluster, &[1, 2, 3], &acked).await;

    let victim = leaders[&1];
    cluster.sigkill(victim);
    println!("[{transport}] SIGKILLed node {victim}, the leader of partition 1");
    let survivors: Vec<u64> = (1..=3).filter(|&n| n != victim).collect();
    for i in 0..40 {
        let (key, value) = (format!("during-{i}"), format!("value-{i}"));
        assert!(put(&client, &cluster, &survivors, &key, &value).await, "write {key} failed without node {victim}");
        acked.insert(key, value);
    }
    let after_kill = agreed_leaders(&client, &cluster, &survivors).await;
    assert!(after_kill.values().all(|l| *l != victim), "a dead node still leads: {after_kill:?}");

    cluster.start(victim);
    all_readable(&client, &cluster, &[1, 2, 3], &acked).await;
    let final_leaders = agreed_leaders(&client, &cluster, &[1, 2, 3]).await;
    println!(
        "[{transport}] node {victim} restarted and caught up; {} writes readable everywhere; leaders {final_leaders:?}",
        acked.len()
    );
    cluster.terminate_all();
}

/// Writers put keys through every node while partition 1 is split through node 1's admin API.
async fn split_under_writes(transport: &str) {
    let client = client();
    let mut cluster = Cluster::new(transport, &[]);
    cluster.start_all();
    agreed_leaders(&client, &cluster, &[1, 2, 3]).await;
    let urls: Vec<String> = (1..=3).map(|id| cluster.spec(id).http.clone()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (client, urls, stop) = (client.clone(), urls.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = BTreeMap::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let (key, value) = (format!("w{w}-{i}"), format!("v{w}-{i}"));
                    let url = format!("{}/kv/{key}", urls[i % urls.len()]);
                    if let Ok(response) = client.put(url).body(value.clone()).send().await {
                        if response.status().is_success() {
                            acked.insert(key, value);
                        }
                    }
                    i += 1;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let split = client.post(format!("{}/admin/split/1", urls[0])).send().await.expect("split request");
    let status = split.status();
    let answer = split.text().await.unwrap_or_default();
    assert!(status.is_success(), "split failed: {status} {answer}\n{}", cluster.logs());
    println!("[{transport}] split: {answer}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acked = BTreeMap::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer"));
    }
    assert!(acked.len() > 50, "the writers must actually write ({} acknowledged)", acked.len());
    let map = status_of(&client, &cluster, 1).await;
    let partitions: Vec<u64> =
        map["partitions"].as_array().unwrap().iter().filter_map(|p| p["partition"].as_u64()).collect();
    assert!(partitions.contains(&u64::from(PARTITIONS + 1)), "the new partition serves: {partitions:?}");
    all_readable(&client, &cluster, &[1, 2, 3], &acked).await;
    println!(
        "[{transport}] {} keys acknowledged around the split, all readable from their owners on 3 nodes",
        acked.len()
    );
    cluster.terminate_all();
}

async fn status_of(client: &reqwest::Client, cluster: &Cluster, id: u64) -> Value {
    status(client, cluster.spec(id)).await.expect("status answers")
}

#[tokio::test]
async fn rest_cluster_keeps_every_key_across_a_split_under_writes() {
    split_under_writes("rest").await;
}

#[tokio::test]
async fn rest_cluster_survives_sigkill_of_a_leader() {
    leader_crash_and_restart("rest").await;
}

#[tokio::test]
async fn grpc_cluster_survives_sigkill_of_a_leader() {
    leader_crash_and_restart("grpc").await;
}

async fn impostor_is_rejected(transport: &str, secret: &str, cluster_id: &str) {
    let client = client();
    let mut cluster = Cluster::new(transport, &[(3, secret, cluster_id)]);
    cluster.start_all();
    agreed_leaders(&client, &cluster, &[1, 2]).await;
    assert!(put(&client, &cluster, &[1, 2], "k", "v").await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let impostor = status(&client, cluster.spec(3)).await.expect("node 3 answers");
    assert!(leaders(&impostor).values().all(|l| l.is_none()), "node 3 learned a leader: {impostor}");
    let mut rejected = 0;
    for id in [1, 2] {
        let s = status(&client, cluster.spec(id)).await.unwrap();
        rejected += s["transport"]["rejected_auth"].as_u64().unwrap();
    }
    assert!(rejected > 0, "nodes 1 and 2 never rejected node 3");
    println!("[{transport}] impostor ({secret:?}, {cluster_id:?}) rejected {rejected} times");
    cluster.terminate_all();
}

#[tokio::test]
async fn rest_node_with_wrong_secret_is_rejected() {
    impostor_is_rejected("rest", "not-the-secret", "process-tests").await;
}

#[tokio::test]
async fn grpc_node_of_another_cluster_is_rejected() {
    impostor_is_rejected("grpc", SECRET, "some-other-cluster").await;
}

fn log_of(cluster: &Cluster, id: u64) -> String {
    std::fs::read_to_string(&cluster.spec(id).log).unwrap_or_default()
}

/// Write `count` keys named `{prefix}-{i}` through any of `nodes`, recording them in `acked`.
async fn put_keys(
    client: &reqwest::Client,
    cluster: &Cluster,
    nodes: &[u64],
    prefix: &str,
    count: usize,
    acked: &mut BTreeMap<String, String>,
) {
    for i in 0..count {
        let (key, value) = (format!("{prefix}-{i}"), format!("{prefix}-value-{i}"));
        assert!(put(client, cluster, nodes, &key, &value).await, "write {key} through {nodes:?} never acknowledged");
        acked.insert(key, value);
    }
}

async fn node_joins_and_leaves(transport: &str) {
    let client = client();
    let mut cluster = Cluster::new(transport, &[]);
    cluster.start_all();
    agreed_leaders(&client, &cluster, &[1, 2, 3]).await;
    let mut acked = BTreeMap::new();
    put_keys(&client, &cluster, &[1, 2, 3], "before", 20, &mut acked).await;

    // Node 4 knows the three as seeds; they were started knowing nothing of it.
    cluster.add_joiner(4);
    cluster.start(4);
    let joined = Instant::now();
    let leaders = agreed_leaders(&client, &cluster, &[1, 2, 3, 4]).await;
    println!("[{transport}] node 4 knows every partition's leader after {:?}: {leaders:?}", joined.elapsed());
    put_keys(&client, &cluster, &[1, 2, 3, 4], "joined", 20, &mut acked).await;
    all_readable(&client, &cluster, &[1, 2, 3, 4], &acked).await;
    println!("[{transport}] node 4 serves all {} keys, written before and after it joined", acked.len());
    // The HTTP API has no roster endpoint: the promotion of node 4 to voter is read from the log of
    // the partition-0 leader that committed it (so the removal checked below is that of a voter).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(1..=3).any(|id| log_of(&cluster, id).contains("PromoteLearner")) {
        assert!(Instant::now() < deadline, "node 4 was never promoted to voter\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("[{transport}] node 4 was promoted to voter");

    // SIGTERM with --leave-on-sigterm: node 4 asks to be removed (a roster change committed by the
    // partition-0 leader), sees the removal applied (leaders keep a departing node a few heartbeats
    // after it holds everything committed), and exits. Under message loss it could still miss that
    // and wait out `leave_cluster`'s limit (the operation timeout, 30 s), hence the patience. The
    // removal itself is checked below through the other nodes' behaviour.
    let took = cluster.sigterm(4, Duration::from_secs(45));
    println!("[{transport}] node 4 left the cluster and exited in {took:?}");
    assert!(log_of(&cluster, 4).contains("leaving the cluster"), "node 4 did not leave on SIGTERM\n{}", cluster.logs());
    put_keys(&client, &cluster, &[1, 2, 3], "left", 20, &mut acked).await;

    // The roster through behaviour: with node 4 removed, two of the three voters are a quorum
    // everywhere; had it stayed a voter, every partition would need three of the four and stall.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = 3;
    cluster.sigkill(victim);
    put_keys(&client, &cluster, &[1, 2], "two-left", 20, &mut acked).await;
    let survivors = agreed_leaders(&client, &cluster, &[1, 2]).await;
    println!("[{transport}] with node {victim} killed too, nodes 1 and 2 keep writing; leaders {survivors:?}");
    cluster.start(victim);
    all_readable(&client, &cluster, &[1, 2, 3], &acked).await;
    println!("[{transport}] node {victim} restarted and caught up; {} keys readable on 1..=3", acked.len());
    cluster.terminate_all();
}

#[tokio::test]
async fn rest_node_joins_a_running_cluster_and_leaves_on_sigterm() {
    node_joins_and_leaves("rest").await;
}

#[tokio::test]
async fn grpc_node_joins_a_running_cluster_and_leaves_on_sigterm() {
    node_joins_and_leaves("grpc").await;
}

/// A node loses its whole data directory (SIGKILL, then `rm -r`) while the others compacted
/// their logs: restarted with `--join`, it rejoins through snapshot installs and serves every
/// acknowledged write.
#[tokio::test]
async fn rest_node_whose_data_directory_was_deleted_rejoins_through_a_snapshot() {
    let client = client();
    let mut cluster = Cluster::new("rest", &[]);
    for spec in &mut cluster.specs {
        spec.args.push("--snapshot-interval=50".into());
        spec.args.push("--snapshot-tail=10".into());
    }
    cluster.start_all();
    agreed_leaders(&client, &cluster, &[1, 2, 3]).await;
    let mut acked = BTreeMap::new();
    put_keys(&client, &cluster, &[1, 2, 3], "before", 150, &mut acked).await;

    let victim = 3;
    cluster.sigkill(victim);
    let data = cluster._dir.path().join(format!("n{victim}"));
    std::fs::remove_dir_all(&data).expect("delete the data directory");
    put_keys(&client, &cluster, &[1, 2], "while-gone", 150, &mut acked).await;
    // The survivors compacted past everything the victim ever had.
    for id in [1, 2] {
        let status = status_of(&client, &cluster, id).await;
        let compacted: Vec<u64> =
            status["partitions"].as_array().unwrap().iter().map(|p| p["compacted_through"].as_u64().unwrap()).collect();
        assert!(compacted.iter().skip(1).all(|&c| c > 0), "node {id} compacted every user partition: {compacted:?}");
    }

    cluster.spec_mut(victim).args.push("--join".into());
    cluster.start(victim);
    all_readable(&client, &cluster, &[1, 2, 3], &acked).await;
    let status = status_of(&client, &cluster, victim).await;
    let installed: Vec<u64> =
        status["partitions"].as_array().unwrap().iter().map(|p| p["snapshot_index"].as_u64().unwrap()).collect();
    assert!(
        log_of(&cluster, victim).contains("installing a snapshot from the leader"),
        "node {victim} caught up without a snapshot install\n{}",
        cluster.logs()
    );
    println!(
        "node {victim} lost its data directory, rejoined by snapshot (snapshot indexes {installed:?}); {} keys readable on 1..=3",
        acked.len()
    );
    cluster.terminate_all();
}

/// `GET /kv/{key}` at `consistency` on node `id`: the value, `None` for 404, or the status of a
/// refusal (503 means the node could not confirm a read index: not stale, just unavailable; 502
/// stands for a request that could not be sent, a node not listening yet).
async fn get_at(
    client: &reqwest::Client,
    spec: &NodeSpec,
    key: &str,
    consistency: &str,
) -> Result<Option<String>, reqwest::StatusCode> {
    let url = format!("{}/kv/{key}?consistency={consistency}", spec.http);
    let Ok(response) = client.get(url).send().await else { return Err(reqwest::StatusCode::BAD_GATEWAY) };
    match response.status() {
        s if s.is_success() => Ok(Some(response.text().await.unwrap_or_default())),
        reqwest::StatusCode::NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

/// After each acknowledged write, a linearizable (and a lease) read on every node returns it —
/// on the first try, followers included — and never an older value; then a rolling restart
/// (SIGTERM: each node hands its partitions over before it stops) keeps that true.
#[tokio::test]
async fn rest_reads_after_acknowledged_writes_are_never_stale_across_a_rolling_restart() {
    let client = client();
    let mut cluster = Cluster::new("rest", &[]);
    cluster.start_all();
    agreed_leaders(&client, &cluster, &[1, 2, 3]).await;
    let bad = client.get(format!("{}/kv/k?consistency=eventual", cluster.spec(1).http)).send().await.unwrap();
    assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST);
    let mut unavailable = 0;
    for phase in 0..4 {
        if phase > 0 {
            // Restart node `phase` with a SIGTERM (handover) and carry on.
            cluster.sigterm(phase, Duration::from_secs(15));
            cluster.start(phase);
        }
        for i in 0..10 {
            let value = format!("p{phase}-v{i}");
            assert!(put(&client, &cluster, &[1, 2, 3], "rw", &value).await, "write {value} never acknowledged");
            for id in 1..=3 {
                for consistency in ["linearizable", "lease"] {
                    match get_at(&client, cluster.spec(id), "rw", consistency).await {
                        Ok(seen) => assert_eq!(
                            seen.as_deref(),
                            Some(value.as_str()),
                            "node {id} at {consistency} after {value}\n{}",
                            cluster.logs()
                        ),
                        Err(status) => {
                            // 503: no read index could be confirmed; 502: the restarted node does
                            // not accept connections yet. Unavailable, never stale.
                            let expected = [reqwest::StatusCode::SERVICE_UNAVAILABLE, reqwest::StatusCode::BAD_GATEWAY];
                            assert!(expected.contains(&status), "node {id}: {status}");
                            unavailable += 1;
                        }
                    }
                }
            }
        }
    }
    println!("consistent reads unavailable (503, or the restarting node not listening yet): {unavailable} of 240");
    assert!(unavailable < 120, "most consistent reads must be served ({unavailable} refused)");
    cluster.terminate_all();
}

const CLIENT_TOKEN: &str = "process-client-token";
const ADMIN_TOKEN: &str = "process-admin-token-0";

/// A client sending `token` as its bearer token on every request.
fn client_with(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder().timeout(Duration::from_secs(10)).default_headers(headers).build().unwrap()
}

#[tokio::test]
async fn the_http_api_needs_its_tokens_and_the_load_generator_its_flag() {
    let mut cluster = Cluster::new("rest", &[]);
    for id in 1..=3 {
        let args = &mut cluster.spec_mut(id).args;
        args.push(format!("--client-token={CLIENT_TOKEN}"));
        args.push(format!("--admin-token={ADMIN_TOKEN}"));
    }
    cluster.start_all();
    let (anonymous, client, admin) = (client(), client_with(CLIENT_TOKEN), client_with(ADMIN_TOKEN));
    let n1 = cluster.spec(1).http.clone();
    // Health probes are open; readiness comes once every partition knows its leader.
    let leaders = agreed_leaders(&client, &cluster, &[1, 2, 3]).await;
    let healthz = anonymous.get(format!("{n1}/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while anonymous.get(format!("{n1}/readyz")).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "node 1 never became ready\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Without a token, or with a wrong one: 401, and nothing is written.
    let wrong = client_with("not-the-client-token");
    for who in [&anonymous, &wrong] {
        let put = who.put(format!("{n1}/kv/refused")).body("x").send().await.unwrap();
        assert_eq!(put.status(), 401);
        assert_eq!(who.get(format!("{n1}/kv/refused")).send().await.unwrap().status(), 401);
        assert_eq!(who.get(format!("{n1}/status")).send().await.unwrap().status(), 401);
    }
    // The client token writes and reads through any node: a follower forwards the write to the
    // leader with its own token.
    let follower = (1..=3).find(|id| leaders.values().any(|leader| leader != id)).unwrap();
    assert!(put(&client, &cluster, &[follower], "granted", "yes").await, "the client token could not write");
    assert_eq!(get(&client, cluster.spec(follower), "granted").await.as_deref(), Some("yes"));
    assert_eq!(get(&admin, cluster.spec(1), "granted").await.as_deref(), Some("yes"), "admin is also a client");
    assert_eq!(get(&admin, cluster.spec(1), "refused").await, None, "a refused write wrote nothing");
    // Admin endpoints need the admin token.
    let snapshot = |who: &reqwest::Client| who.post(format!("{n1}/admin/snapshot/1")).send();
    assert_eq!(snapshot(&client).await.unwrap().status(), 403);
    assert_eq!(snapshot(&anonymous).await.unwrap().status(), 401);
    assert_eq!(snapshot(&admin).await.unwrap().status(), 200);
    // Metrics: client scope; the runtime's histograms, the partitions' state, WAL and transport.
    assert_eq!(anonymous.get(format!("{n1}/metrics")).send().await.unwrap().status(), 401);
    let mut texts = BTreeMap::new();
    for id in 1..=3 {
        let metrics = client.get(format!("{}/metrics", cluster.spec(id).http)).send().await.unwrap();
        assert_eq!(metrics.status(), 200);
        texts.insert(id, metrics.text().await.unwrap());
    }
    let leader_of_1 = &texts[&leaders[&1]];
    for series in [
        "kommander_wal_sync_duration_seconds_bucket",
        "kommander_partitions_led",
        "kommander_partition_term{partition=\"1\"}",
        "kommander_partition_is_leader{partition=\"1\"} 1",
        "kommander_wal_syncs_total",
        "kommander_transport_frames_accepted_total",
    ] {
        assert!(leader_of_1.contains(series), "GET /metrics lacks {series}:\n{leader_of_1}");
    }
    // The acknowledged write was proposed on its partition's leader.
    let proposed = texts.values().filter(|t| t.contains("kommander_proposal_duration_seconds_bucket")).count();
    assert!(proposed >= 1, "no node recorded a proposal latency");
    // The load generator is not served without --enable-bench, whoever asks.
    let load = admin.post(format!("{n1}/bench/load")).header("content-type", "application/json").body("{}").send();
    let load = load.await.unwrap();
    assert_eq!(load.status(), 404);
    cluster.terminate_all();
}

/// The partition map and the roster as `GET /admin/cluster` shows them.
async fn cluster_view(admin: &reqwest::Client, spec: &NodeSpec) -> Value {
    let response = admin.get(format!("{}/admin/cluster", spec.http)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn the_admin_api_refuses_bad_requests_and_changes_nothing_then_works() {
    let mut cluster = Cluster::new("rest", &[]);
    for id in 1..=3 {
        cluster.spec_mut(id).args.push(format!("--admin-token={ADMIN_TOKEN}"));
    }
    cluster.start_all();
    let admin = client_with(ADMIN_TOKEN);
    let leaders = agreed_leaders(&admin, &cluster, &[1, 2, 3]).await;
    let n1 = cluster.spec(1).http.clone();
    // Nodes record their API address in the roster after they start: wait for all three, so the
    // roster compared below changes only if a refused request changed it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let view = cluster_view(&admin, cluster.spec(1)).await;
        let members = view["roster"]["members"].as_object().cloned().unwrap_or_default();
        if members.len() == 3 && members.values().all(|m| m["application_address"].is_string()) {
            break view;
        }
        assert!(Instant::now() < deadline, "the roster never recorded every API address: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // (method, path, body, expected status): each refused, through node 1 (forwarded to the
    // partition-0 leader where needed).
    let bad: &[(&str, &str, &str, u16)] = &[
        ("POST", "admin/split/1", "0", 400), // boundary outside (at the start of) the range
        ("POST", "admin/split/1", "not-a-number", 400), // malformed boundary
        ("POST", "admin/split/99", "", 404), // unknown partition
        ("POST", "admin/merge/1/1", "", 400), // a partition with itself
        ("POST", "admin/merge/1/3", "", 400), // not adjacent
        ("POST", "admin/merge/1/99", "", 404), // unknown partition
        ("DELETE", "admin/partitions/1", "", 400), // owns a key range
        ("DELETE", "admin/partitions/99", "", 404), // unknown partition
        ("DELETE", "admin/nodes/9", "", 404), // not a member
        ("POST", "admin/nodes/1", "http://127.0.0.1:1", 409), // already a member
        ("POST", "admin/nodes/9", "ftp://nowhere", 400), // not a transport URL
        ("POST", "admin/transfer/1/9", "", 400), // not a voter
        ("POST", "admin/transfer/99/2", "", 404), // unknown partition
        ("POST", "admin/merge/x/1", "", 404), // not a partition id
    ];
    for &(method, path, body, expected) in bad {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = admin.request(method.clone(), format!("{n1}/{path}")).body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, expected, "{method} /{path} {body:?} answered {status}: {text}");
    }
    let after = cluster_view(&admin, cluster.spec(1)).await;
    assert_eq!(after["map"]["partitions"], before["map"]["partitions"], "a refused change changed the map");
    assert_eq!(after["roster"]["members"], before["roster"]["members"], "a refused change changed the roster");

    // What works: create and remove a partition, move a leader.
    let created = admin.post(format!("{n1}/admin/partitions")).send().await.unwrap();
    assert_eq!(created.status(), 200);
    let created: Value = serde_json::from_slice(&created.bytes().await.unwrap()).unwrap();
    let id = created["partition"].as_u64().expect("the new partition's id");
    let removed = admin.delete(format!("{n1}/admin/partitions/{id}")).send().await.unwrap();
    assert_eq!(removed.status(), 200, "{}", removed.text().await.unwrap());
    let leader = leaders[&1];
    let target = (1..=3).find(|&n| n != leader).unwrap();
    let moved = admin.post(format!("{n1}/admin/transfer/1/{target}")).send().await.unwrap();
    assert_eq!(moved.status(), 200, "{}", moved.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while leaders_now(&admin, &cluster).await.get(&1).copied().flatten() != Some(target) {
        assert!(Instant::now() < deadline, "partition 1 never moved to {target}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The same through kommanderctl.
    let ctl_at = |url: &str, args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_kommanderctl"))
            .args(["--url", url, "--token", ADMIN_TOKEN])
            .args(args)
            .output()
            .unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (output.status.code(), text(&output.stdout), text(&output.stderr))
    };
    let ctl = |args: &[&str]| ctl_at(&n1, args);
    let (code, table, _) = ctl(&["status"]);
    assert_eq!(code, Some(0));
    assert!(table.lines().next().is_some_and(|l| l.starts_with("node 1")), "{table}");
    assert_eq!(table.lines().filter(|l| l.trim_start().starts_with(char::is_numeric)).count(), 1 + PARTITIONS as usize);
    let (code, json, _) = ctl(&["--json", "cluster"]);
    assert_eq!(code, Some(0));
    let view: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(view["roster"]["members"].as_object().map(|m| m.len()), Some(3), "{json}");
    let (code, _, error) = ctl(&["merge", "1", "1"]);
    assert_eq!(code, Some(1), "a refused command exits with 1");
    assert!(error.contains("400") && error.contains("itself"), "{error}");
    let (code, written, _) = ctl(&["put", "ctl-key", "ctl-value"]);
    assert_eq!(code, Some(0), "{written}");
    assert_eq!(ctl(&["get", "ctl-key"]).1.trim(), "ctl-value");
    let (code, _, error) = ctl_at("http://127.0.0.1:1", &["status"]);
    assert_eq!(code, Some(2), "an unreachable node exits with 2: {error}");
    assert!(error.contains("127.0.0.1:1/status"), "{error}");
    cluster.terminate_all();
}

/// Leaders of the user partitions as node 1 sees them.
async fn leaders_now(client: &reqwest::Client, cluster: &Cluster) -> BTreeMap<u64, Option<u64>> {
    status(client, cluster.spec(1)).await.map(|s| leaders(&s)).unwrap_or_default()
}

/// The headless Chromium the status-page test drives (`KOMMANDER_CHROMIUM`, else `chromium` or
/// `chromium-browser` on the PATH; `.ci/run` installs Debian's `chromium`). `None` when there is
/// none: the test then says so and passes without a browser on a developer's machine, but
/// `.ci/run` sets `KOMMANDER_REQUIRE_BROWSER`, which makes a missing browser a failure.
fn chromium() -> Option<String> {
    if let Ok(path) = std::env::var("KOMMANDER_CHROMIUM") {
        return Some(path);
    }
    let found = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|name| Command::new("which").arg(name).output().is_ok_and(|o| o.status.success()))
        .map(str::to_string);
    if found.is_none() && std::env::var_os("KOMMANDER_REQUIRE_BROWSER").is_some() {
        panic!("the status-page test needs a headless Chromium: apt-get install chromium (what .ci/run does)");
    }
    found
}

/// Load `url` in headless Chromium (`browser`), let its scripts run, and return the DOM (or, with
/// `screenshot`, write a PNG there).
fn browse(browser: &str, url: &str, screenshot: Option<&std::path::Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new(browser);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=4000",
        "--window-size=1280,800",
        &format!("--user-data-dir={}", profile.path().display()),
    ]);
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    let output = command.arg(url).stderr(Stdio::null()).output().expect("chromium runs");
    assert!(output.status.success(), "chromium failed on {url}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_every_leader_and_follows_a_killed_one_in_a_real_browser() {
    let Some(browser) = chromium() else {
        println!("NOT RUN: no headless Chromium here (apt-get install chromium); .ci/run installs and requires it");
        return;
    };
    let browse = |url: &str, screenshot: Option<&std::path::Path>| browse(&browser, url, screenshot);
    let client = client();
    let mut cluster = Cluster::new("rest", &[]);
    cluster.start_all();
    let leaders = agreed_leaders(&client, &cluster, &[1, 2, 3]).await;
    let page = format!("{}/ui", cluster.spec(1).http);
    let shows =
        |dom: &str, partition: u64, leader: u64| dom.contains(&format!("data-leader-of=\"{partition}\">{leader}<"));

    // Every partition's leader as node 1 reports it (retried: the balancer may move one between
    // the page load and the status read), and every node up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dom = tokio::task::block_in_place(|| browse(&page, None));
        let current = leaders_now(&client, &cluster).await;
        let all_shown = current.len() == PARTITIONS as usize
            && current.iter().all(|(&p, l)| l.is_some_and(|l| shows(&dom, p, l)))
            && (1..=3).all(|node| dom.contains(&format!("data-node-state=\"{node}\">up<")));
        if all_shown {
            break;
        }
        assert!(Instant::now() < deadline, "the page never showed every leader ({current:?}) and node:\n{dom}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Kill the leader of a partition node 1 (serving the page) does not lead.
    let (&partition, &victim) = leaders.iter().find(|(_, &leader)| leader != 1).expect("node 1 leads everything");
    cluster.sigkill(victim);
    let survivors: Vec<u64> = (1..=3).filter(|&n| n != victim).collect();
    agreed_leaders(&client, &cluster, &survivors).await;
    // The survivors elect a successor, and the leader balancer may move it again: the page must
    // show the leader node 1 reports at the time, a survivor, and the victim unreachable.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dom = tokio::task::block_in_place(|| browse(&page, None));
        let current = leaders_now(&client, &cluster).await.get(&partition).copied().flatten();
        let updated = current.is_some_and(|leader| leader != victim && shows(&dom, partition, leader))
            && dom.contains(&format!("data-node-state=\"{victim}\">unreachable<"));
        if updated {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed a survivor leading {partition} (node 1 says {current:?}):\n{dom}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The screenshot stays as a CI artifact.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    tokio::task::block_in_place(|| browse(&page, Some(&shot)));
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 1000).unwrap_or(false), "no screenshot at {}", shot.display());
    println!("status page screenshot: {}", shot.display());
    cluster.terminate_all();
}

/// A CA and the one certificate every node serves (for `localhost` and `127.0.0.1`), written as
/// PEM files into `dir`.
struct TestPki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca_pem: Vec<u8>,
}

fn write_pki(dir: &std::path::Path, name: &str) -> TestPki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let write = |suffix: &str, text: String| {
        let path = dir.join(format!("{name}-{suffix}.pem"));
        std::fs::write(&path, text).unwrap();
        path
    };
    TestPki {
        ca: write("ca", ca.pem()),
        cert: write("cert", cert.pem()),
        key: write("key", key.serialize_pem()),
        ca_pem: ca.pem().into_bytes(),
    }
}

/// The node of `spec` serves TLS with `pki`'s certificate and trusts its CA; its peers are named
/// by `https://` URLs.
fn serve_tls(spec: &mut NodeSpec, pki: &TestPki) {
    for arg in &mut spec.args {
        if arg.starts_with("--peer=") || arg.starts_with("--peer-grpc=") {
            *arg = arg.replace("=http://", "=https://");
        }
    }
    spec.args.push(format!("--tls-cert={}", pki.cert.display()));
    spec.args.push(format!("--tls-key={}", pki.key.display()));
    spec.args.push(format!("--tls-ca={}", pki.ca.display()));
    spec.http = spec.http.replace("http://", "https://");
}

/// A client trusting only the CA of `ca_pem`.
fn client_trusting(ca_pem: &[u8]) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem).unwrap();
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(10)).tls_built_in_root_certs(false);
    builder.add_root_certificate(ca).build().unwrap()
}

/// An error and its sources (reqwest's own message does not say why a connection failed).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// Three nodes serving TLS (the HTTP listener, and the gRPC one with `--transport grpc`), naming
/// each other by `https://` URLs: every partition elects a leader (Raft traffic over TLS), writes
/// through every node (followers forward over https) are readable on every node, the roster
/// records `https://` addresses; plain HTTP to the listener and clients that do not trust the CA
/// are refused; kommanderctl works with `--ca` and refuses the node without it; a fourth node
/// joins over TLS and serves every key.
async fn cluster_over_tls(transport: &str) {
    let mut cluster = Cluster::new(transport, &[]);
    let pki = write_pki(cluster._dir.path(), "cluster");
    let stranger = write_pki(cluster._dir.path(), "stranger");
    for id in 1..=3 {
        serve_tls(cluster.spec_mut(id), &pki);
    }
    cluster.start_all();
    let (untrusting, client) = (client(), client_trusting(&pki.ca_pem));
    let leaders = agreed_leaders(&client, &cluster, &[1, 2, 3]).await;
    println!("[{transport} over TLS] leaders: {leaders:?}");

    let mut acked = BTreeMap::new();
    for i in 0..12 {
        let (key, value) = (format!("tls-{i}"), format!("value-{i}"));
        let through = i % 3 + 1;
        assert!(put(&client, &cluster, &[through], &key, &value).await, "write {key} through n{through} failed");
        acked.insert(key, value);
    }
    all_readable(&client, &cluster, &[1, 2, 3], &acked).await;
    // Some writes went through a follower, which forwarded them to the leader over https.
    assert!((1..=3).any(|n| leaders.values().any(|&l| l != n)));

    // The roster records https:// addresses for the transport and the API.
    let n1 = cluster.spec(1).http.clone();
    assert!(n1.starts_with("https://127.0.0.1:"), "{n1}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = cluster_view(&client, cluster.spec(1)).await;
        let members = view["roster"]["members"].as_object().cloned().unwrap_or_default();
        let https = |m: &Value, field: &str| m[field].as_str().is_some_and(|a| a.starts_with("https://127.0.0.1:"));
        if members.len() == 3 && members.values().all(|m| https(m, "address") && https(m, "application_address")) {
            break;
        }
        assert!(Instant::now() < deadline, "the roster never recorded https:// addresses: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Plain HTTP to the TLS listener gets no answer.
    // (The gRPC listener's refusal of plaintext peers is tested in the transport's own tests.)
    let http_port = cluster.ports[0].0;
    let plain = untrusting.get(format!("http://127.0.0.1:{http_port}/healthz")).send().await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // Clients that trust no CA, or another one, are refused at the handshake.
    for (who, untrusting) in [("no CA", untrusting), ("another CA", client_trusting(&stranger.ca_pem))] {
        let error = untrusting.get(format!("{n1}/healthz")).send().await.expect_err(who);
        let chain = error_chain(&error);
        assert!(chain.contains("certificate"), "{who}: {chain}");
    }
    assert_eq!(client.get(format!("{n1}/healthz")).send().await.unwrap().status(), 200);

    // kommanderctl trusts the CA with --ca, and nothing without it.
    let ctl = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_kommanderctl")).args(["--url", &n1]).args(args).output().unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (output.status.code(), text(&output.stdout), text(&output.stderr))
    };
    let ca = pki.ca.display().to_string();
    let (code, table, error) = ctl(&["--ca", &ca, "status"]);
    assert_eq!(code, Some(0), "{error}");
    assert!(table.lines().next().is_some_and(|l| l.starts_with("node 1")), "{table}");
    let (code, _, error) = ctl(&["--ca", &ca, "put", "ctl-tls", "over-tls"]);
    assert_eq!(code, Some(0), "{error}");
    let (code, value, error) = ctl(&["--ca", &ca, "get", "ctl-tls"]);
    assert_eq!((code, value.trim()), (Some(0), "over-tls"), "{error}");
    let other = stranger.ca.display().to_string();
    for args in [&["status"][..], &["--ca", &other, "status"][..]] {
        let (code, _, error) = ctl(args);
        assert_eq!(code, Some(2), "an untrusted node exits with 2: {args:?} {error}");
        assert!(error.contains("certificate"), "{args:?}: {error}");
    }
    let (code, _, error) = ctl(&["--ca", &cluster.spec(1).log.display().to_string(), "status"]);
    assert_eq!(code, Some(2), "{error}");
    assert!(error.contains("--ca"), "{error}");

    // A fourth node joins over TLS: its join request to the seeds and its catch-up travel over
    // https (or TLS gRPC); it then serves every key. (It stays a member on SIGTERM, so that all
    // four stop together.)
    cluster.add_joiner(4);
    let joiner = cluster.spec_mut(4);
    joiner.args.retain(|arg| arg != "--leave-on-sigterm");
    serve_tls(joiner, &pki);
    cluster.start(4);
    agreed_leaders(&client, &cluster, &[1, 2, 3, 4]).await;
    all_readable(&client, &cluster, &[4], &acked).await;
    cluster.terminate_all();
}

#[tokio::test]
async fn rest_cluster_over_tls_replicates_and_refuses_plain_or_untrusting_clients() {
    cluster_over_tls("rest").await;
}

#[tokio::test]
async fn grpc_cluster_over_tls_replicates_and_refuses_plain_or_untrusting_clients() {
    cluster_over_tls("grpc").await;
}

/// A node whose TLS flags cannot work exits at start-up with an error naming the flag and file.
#[test]
fn a_node_with_unusable_tls_flags_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), "node");
    let other = write_pki(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let path = |p: &PathBuf| p.display().to_string();
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (vec![format!("--tls-cert={}", path(&pki.cert))], vec!["--tls-cert needs --tls-key"]),
        (
            vec![format!("--tls-cert={}", path(&missing)), format!("--tls-key={}", path(&pki.key))],
            vec!["--tls-cert", "missing.pem", "cannot read"],
        ),
        (
            vec![format!("--tls-cert={}", path(&garbage)), format!("--tls-key={}", path(&pki.key))],
            vec!["--tls-cert", "garbage.pem", "not valid PEM"],
        ),
        (
            vec![format!("--tls-cert={}", path(&pki.cert)), format!("--tls-key={}", path(&other.key))],
            vec!["--tls-cert", "--tls-key", "other-key.pem"],
        ),
        (vec![format!("--tls-ca={}", path(&pki.key))], vec!["--tls-ca", "node-key.pem", "no certificate"]),
        (vec!["--peer=2=https://127.0.0.1:1".to_string()], vec!["--tls-ca"]),
    ];
    for (flags, expected) in cases {
        let output = Command::new(SERVER)
            .args(["--node-id=1", &format!("--listen=127.0.0.1:{}", free_port()), "--wal=memory"])
            .args([format!("--secret={SECRET}"), format!("--dir={}", dir.path().join("data").display())])
            .args(&flags)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?} did not stop the node at start-up: {stderr}");
        for part in expected {
            assert!(stderr.contains(part), "{flags:?}: {stderr:?} lacks {part:?}");
        }
    }
}

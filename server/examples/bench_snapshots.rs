//! Snapshot and compaction benchmark on real `kommander-server` processes (SQLite WAL, REST, one
//! partition), compaction off (`--snapshot-interval 0`) against on (10,000), in one run:
//!
//! 1. **Restart after a long history**: write `--entries` 100-byte entries (the node's load
//!    generator), SIGKILL a follower, restart it, and time process start → serving (partition 0
//!    and 1 restored, applied up to the commit index at the kill); the WAL + snapshot bytes on its
//!    disk before the restart, and its peak RSS (VmHWM) after.
//! 2. **A learner joins a partition holding `--state-mb` of state** (1 KiB values through the KV
//!    API, so the state is real): time from start to caught up (every key readable there), bytes
//!    it received, its peak RSS.
//!
//! ```text
//! cargo build --release -p kommander-server --examples
//! target/release/examples/bench_snapshots [--entries 1000000] [--state-mb 100]
//! ```

use serde_json::Value;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/support/ports.rs"]
mod ports;

use ports::free_port;

const SECRET: &str = "bench-snapshots-secret";

struct Options {
    entries: u64,
    state_mb: u64,
}

fn parse_args() -> Options {
    let mut options = Options { entries: 1_000_000, state_mb: 100 };
    // `--entries 0` skips the restart measurement, `--state-mb 0` the join.
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{arg} needs a number"));
        match arg.as_str() {
            "--entries" => options.entries = value,
            "--state-mb" => options.state_mb = value,
            other => panic!("unknown flag {other}"),
        }
    }
    options
}

fn server_binary() -> PathBuf {
    let me = std::env::current_exe().expect("exe");
    let release = me.parent().and_then(Path::parent).expect("target/<profile>");
    release.join("kommander-server")
}

/// Three (or four) node processes on loopback.
struct Nodes {
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: PathBuf,
    interval: u64,
}

impl Nodes {
    fn new(dir: &Path, interval: u64) -> Nodes {
        Nodes {
            ports: (0..4).map(|_| free_port()).collect(),
            children: (0..4).map(|_| None).collect(),
            dir: dir.into(),
            interval,
        }
    }

    fn url(&self, id: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[id - 1])
    }

    fn start(&mut self, id: usize, join: bool) {
        let mut args = vec![
            format!("--node-id={id}"),
            format!("--listen=127.0.0.1:{}", self.ports[id - 1]),
            "--partitions=1".into(),
            format!("--dir={}", self.dir.join(format!("n{id}")).display()),
            "--wal=sqlite".into(),
            format!("--secret={SECRET}"),
            "--tick-ms=25".into(),
            format!("--snapshot-interval={}", self.interval),
        ];
        for peer in 1..=3 {
            if peer != id {
                args.push(format!("--peer={peer}={}", self.url(peer)));
            }
        }
        if join {
            args.push("--join".into());
        }
        let log = std::fs::File::create(self.dir.join(format!("n{id}.log"))).unwrap();
        let child = Command::new(server_binary())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kommander-server (build it first)");
        self.children[id - 1] = Some(child);
    }

    fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.children[id - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self, id: usize) -> u32 {
        self.children[id - 1].as_ref().expect("running").id()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for id in 1..=4 {
            self.kill(id);
        }
    }
}

async fn status(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = client.get(format!("{url}/status")).send().await.ok()?;
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

fn partition(status: &Value, p: u64) -> Option<&Value> {
    status["partitions"].as_array()?.iter().find(|s| s["partition"].as_u64() == Some(p))
}

/// The node id leading partition 1, once one does.
async fn leader(client: &reqwest::Client, nodes: &Nodes) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for id in 1..=3 {
            if let Some(s) = status(client, &nodes.url(id)).await {
                if partition(&s, 1).and_then(|p| p["is_leader"].as_bool()) == Some(true) {
                    return id;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn index(status: &Value, p: u64, field: &str) -> u64 {
    partition(status, p).and_then(|s| s[field].as_u64()).unwrap_or(0)
}

/// Wait until node `id` serves partitions 0 and 1 with partition 1 applied to `target`.
async fn serving(client: &reqwest::Client, url: &str, target: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(s) = status(client, url).await {
            let restored = [0, 1].iter().all(|&p| partition(&s, p).is_some_and(|p| p["restoring"] == false));
            if restored && index(&s, 1, "applied_index") >= target {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "{url} never served");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                dir_bytes(&path)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// Peak resident set of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = text
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

struct Restart {
    entries: u64,
    disk_mb: f64,
    restart_s: f64,
    rss_mib: f64,
}

/// Three founding nodes over `dir` and the leader of partition 1.
async fn founders(dir: &Path, interval: u64, client: &reqwest::Client) -> (Nodes, usize) {
    let mut nodes = Nodes::new(dir, interval);
    for id in 1..=3 {
        nodes.start(id, false);
    }
    let leader = leader(client, &nodes).await;
    (nodes, leader)
}

async fn restart_after_history(interval: u64, entries: u64) -> Result<Restart, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let (mut nodes, leader) = founders(dir.path(), interval, &client).await;
    // Fill through the leader's load generator: 64 closed-loop clients, 100-byte payloads.
    let mut commit = 0;
    while commit < entries {
        let body = serde_json::json!({ "seconds": 5.0, "payload_bytes": 100, "clients": vec![1; 64] });
        let url = format!("{}/bench/load", nodes.url(leader));
        let request = client.post(url).header("content-type", "application/json").body(body.to_string());
        request.send().await?.bytes().await?;
        commit = index(&status(&client, &nodes.url(leader)).await.ok_or("leader status")?, 1, "commit_index");
    }
    let follower = (1..=3).find(|&id| id != leader).unwrap_or(1);
    serving(&client, &nodes.url(follower), commit).await;
    nodes.kill(follower);
    let disk = dir_bytes(&dir.path().join(format!("n{follower}")));
    let started = Instant::now();
    nodes.start(follower, false);
    serving(&client, &nodes.url(follower), commit).await;
    let restart_s = started.elapsed().as_secs_f64();
    let rss_mib = peak_rss_mib(nodes.pid(follower));
    Ok(Restart { entries: commit, disk_mb: disk as f64 / 1e6, restart_s, rss_mib })
}

/// Wait until the node at `url` holds `keys` keys in partition 1; its status then.
async fn holding(client: &reqwest::Client, url: &str, keys: u64) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s = status(client, url).await.ok_or("status")?;
        let held = partition(&s, 1).and_then(|p| p["keys"].as_u64()).unwrap_or(0);
        if held == keys {
            return Ok(s);
        }
        if Instant::now() > deadline {
            return Err(format!("{url} holds {held} of {keys} keys"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Join {
    keys: u64,
    join_s: f64,
    received_mb: f64,
    rss_mib: f64,
    snapshot_index: u64,
}

async fn learner_joins(interval: u64, state_mb: u64) -> Result<Join, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let (mut nodes, leader) = founders(dir.path(), interval, &client).await;
    let keys = state_mb * 1024;
    let value = "v".repeat(1000);
    // 32 concurrent writers through the leader's KV API.
    let mut writers = Vec::new();
    for w in 0..32 {
        let (client, url, value) = (client.clone(), nodes.url(leader), value.clone());
        writers.push(tokio::spawn(async move {
            let mut k = w;
            while k < keys {
                let put = client.put(format!("{url}/kv/key-{k}")).body(value.clone()).send().await;
                if put.is_ok_and(|r| r.status().is_success()) {
                    k += 32;
                }
            }
        }));
    }
    for writer in writers {
        writer.await?;
    }
    // The leader's application applies after the commit is acknowledged: wait until it holds
    // every key written.
    let leader_status = holding(&client, &nodes.url(leader), keys).await?;
    let commit = index(&leader_status, 1, "commit_index");
    let started = Instant::now();
    nodes.start(4, true);
    serving(&client, &nodes.url(4), commit).await;
    // The application applies after the partition does: caught up once it holds every key.
    let caught_up = holding(&client, &nodes.url(4), keys).await?;
    let join_s = started.elapsed().as_secs_f64();
    let received = caught_up["transport"]["bytes_accepted"].as_u64().unwrap_or(0);
    Ok(Join {
        keys,
        join_s,
        received_mb: received as f64 / 1e6,
        rss_mib: peak_rss_mib(nodes.pid(4)),
        snapshot_index: index(&caught_up, 1, "snapshot_index"),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let options = parse_args();
    println!("restart of a follower after a long history (one partition, 100-byte entries, SQLite)");
    println!("| compaction | entries | WAL + snapshots on disk | restart to serving | peak RSS after |");
    println!("|---|---:|---:|---:|---:|");
    for (name, interval) in [("off", 0), ("on (10,000)", 10_000)].into_iter().filter(|_| options.entries > 0) {
        let r = restart_after_history(interval, options.entries).await?;
        println!("| {name} | {} | {:.1} MB | {:.2} s | {:.0} MiB |", r.entries, r.disk_mb, r.restart_s, r.rss_mib);
    }
    println!();
    println!("a learner joins a partition holding {} MB of state (1 KiB values)", options.state_mb);
    println!("| compaction | keys | start to caught up | bytes received | snapshot installed at | peak RSS |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, interval) in
        [("off (log replay)", 0), ("on (10,000)", 10_000)].into_iter().filter(|_| options.state_mb > 0)
    {
        let j = learner_joins(interval, options.state_mb).await?;
        println!(
            "| {name} | {} | {:.2} s | {:.1} MB | {} | {:.0} MiB |",
            j.keys, j.join_s, j.received_mb, j.snapshot_index, j.rss_mib
        );
    }
    Ok(())
}

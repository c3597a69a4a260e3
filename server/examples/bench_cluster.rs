//! Cluster benchmark: 3 real `kommander-server` processes on loopback, REST and/or gRPC transport.
//!
//! For each transport it starts three nodes (fresh WAL files in a temporary directory, free
//! loopback ports, `RUST_LOG=warn`, each node's stderr in `n<id>.log`), waits until all three agree
//! on an established leader for every partition, then for each client count assigns client `i` to
//! partition `1 + i % partitions`, hands each partition's clients to the node currently leading it
//! and starts them on all three nodes at once with `POST /bench/load` (the clients run inside the
//! servers, so only Raft traffic crosses the network). Each node warms up, measures for `--seconds`
//! and returns its commit latencies; they are merged (weighted by each node's op count).
//!
//! ```text
//! cargo build --release -p kommander-server --bin kommander-server --example bench_cluster
//! target/release/examples/bench_cluster [--transport rest|grpc|both] [--clients 1,64,256] [--seconds 5]
//!     [--partitions 16] [--wal sqlite|memory] [--dir PATH] [--payload-bytes 0] [--warmup 0.5] [--tick-ms 50]
//! ```
//! Prints one table per transport (proposals/s, p50/p99 commit latency, entries per WAL sync and
//! syncs per second per node from the nodes' `/status` counters, transport frames, CPU use of the
//! three processes) and a side-by-side table of the transports.

use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/support/ports.rs"]
mod ports;

use ports::free_port;

const NODES: [u64; 3] = [1, 2, 3];
const SECRET: &str = "bench-cluster-secret";
const LEADER_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between two configurations so trailing proposals and heartbeats settle.
const SETTLE: Duration = Duration::from_millis(500);

/// Command-line options.
struct Options {
    transports: Vec<String>,
    clients: Vec<usize>,
    seconds: f64,
    partitions: u32,
    wal: String,
    dir: Option<PathBuf>,
    payload_bytes: usize,
    warmup: f64,
    tick_ms: u64,
}

const USAGE: &str = "usage: bench_cluster [--transport rest|grpc|both] [--clients 1,64,256] [--seconds 5] \
                     [--partitions 16] [--wal sqlite|memory] [--dir PATH] [--payload-bytes 0] [--warmup 0.5] \
                     [--tick-ms 50]";

fn value<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
    let value = value.ok_or(format!("{flag} needs a value"))?;
    value.trim().parse().map_err(|_| format!("{flag}: cannot parse {value:?}"))
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        transports: vec!["rest".into(), "grpc".into()],
        clients: vec![1, 64, 256],
        seconds: 5.0,
        partitions: 16,
        wal: "sqlite".into(),
        dir: None,
        payload_bytes: 0,
        warmup: 0.5,
        tick_ms: 50,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--transport" => {
                options.transports = match value::<String>("--transport", args.next())?.as_str() {
                    "both" => vec!["rest".into(), "grpc".into()],
                    one @ ("rest" | "grpc") => vec![one.to_string()],
                    other => return Err(format!("--transport: expected rest, grpc or both, got {other:?}")),
                }
            }
            "--clients" => {
                let list: String = value("--clients", args.next())?;
                options.clients = list
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("--clients: expected a comma-separated list of numbers, got {list:?}"))?;
            }
            "--seconds" => options.seconds = value("--seconds", args.next())?,
            "--partitions" => options.partitions = value("--partitions", args.next())?,
            "--wal" => {
                options.wal = value("--wal", args.next())?;
                if options.wal != "sqlite" && options.wal != "memory" {
                    return Err(format!("--wal: expected sqlite or memory, got {:?}", options.wal));
                }
            }
            "--dir" => options.dir = Some(value("--dir", args.next())?),
            "--payload-bytes" => options.payload_bytes = value("--payload-bytes", args.next())?,
            "--warmup" => options.warmup = value("--warmup", args.next())?,
            "--tick-ms" => options.tick_ms = value("--tick-ms", args.next())?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    // A client count of 0 is allowed: it measures the idle cluster (heartbeats only).
    if options.clients.is_empty() || options.partitions == 0 {
        return Err("--clients needs at least one count and --partitions must be at least 1".into());
    }
    if !(options.seconds.is_finite() && options.seconds > 0.0 && options.warmup.is_finite() && options.warmup >= 0.0) {
        return Err("--seconds must be positive and --warmup not negative".into());
    }
    Ok(options)
}

/// The `kommander-server` binary next to this example's directory (`target/<profile>/`).
fn server_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this executable: {e}"))?;
    let server = exe.parent().and_then(Path::parent).map(|dir| dir.join("kommander-server"));
    match server {
        Some(server) if server.is_file() => Ok(server),
        other => Err(format!(
            "kommander-server not found (looked for {}); build it first with\n    cargo build --release --bin \
             kommander-server",
            other.map_or_else(|| "<no parent directory>".into(), |p| p.display().to_string())
        )),
    }
}

/// One running node.
struct Node {
    id: u64,
    http: String,
    log: PathBuf,
    child: Option<Child>,
}

/// Three `kommander-server` processes; killed on drop unless stopped with [`Cluster::stop`].
struct Cluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl Cluster {
    fn start(server: &Path, transport: &str, options: &Options, dir: &Path) -> Result<Cluster, Box<dyn Error>> {
        let http: Vec<u16> = NODES.iter().map(|_| free_port()).collect();
        let grpc: Vec<u16> = NODES.iter().map(|_| free_port()).collect();
        let mut cluster = Cluster { nodes: Vec::new(), dir: dir.to_path_buf() };
        for (i, &id) in NODES.iter().enumerate() {
            let mut args = vec![
                format!("--node-id={id}"),
                format!("--listen=127.0.0.1:{}", http[i]),
                format!("--grpc-listen=127.0.0.1:{}", grpc[i]),
                format!("--partitions={}", options.partitions),
                format!("--dir={}", dir.join(format!("n{id}")).display()),
                format!("--wal={}", options.wal),
                format!("--transport={transport}"),
                "--cluster-id=bench-cluster".into(),
                // The load generator is off unless asked for.
                "--enable-bench".into(),
                format!("--tick-ms={}", options.tick_ms),
            ];
            for (j, &peer) in NODES.iter().enumerate().filter(|&(j, _)| j != i) {
                args.push(format!("--peer={peer}=http://127.0.0.1:{}", http[j]));
                if transport == "grpc" {
                    args.push(format!("--peer-grpc={peer}=http://127.0.0.1:{}", grpc[j]));
                }
            }
            let log = dir.join(format!("n{id}.log"));
            let child = Command::new(server)
                .args(&args)
                .env("RUST_LOG", "warn")
                .env("KOMMANDER_SECRET", SECRET)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()?;
            cluster.nodes.push(Node { id, http: format!("http://127.0.0.1:{}", http[i]), log, child: Some(child) });
        }
        Ok(cluster)
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(|n| n.child.as_ref().map(Child::id)).collect()
    }

    /// The last lines of every node's log.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- node {} ({}) ---\n{}",
                    n.id,
                    n.log.display(),
                    lines[lines.len().saturating_sub(15)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM every node and wait for them to exit; returns the nodes that did not exit cleanly.
    fn stop(&mut self) -> Vec<String> {
        for pid in self.pids() {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut problems = Vec::new();
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else { continue };
            loop {
                match child.try_wait() {
                    Ok(Some(status)) if status.success() => break,
                    Ok(Some(status)) => {
                        problems.push(format!("node {} exited with {status}", node.id));
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        problems.push(format!("node {} did not stop on SIGTERM; killed", node.id));
                        break;
                    }
                }
            }
        }
        problems
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().filter_map(|n| n.child.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One node's `/status`, reduced to what the benchmark reads.
#[derive(Clone, Debug, Default)]
struct NodeStatus {
    /// `partition -> (term, leader, is_leader)` for user partitions.
    partitions: BTreeMap<u64, (u64, Option<u64>, bool)>,
    wal_syncs: u64,
    wal_entries: u64,
    frames_sent: u64,
    batches_sent: u64,
    frames_failed: u64,
}

async fn status(client: &reqwest::Client, node: &Node) -> Result<NodeStatus, String> {
    let url = format!("{}/status", node.http);
    // One retry: a pooled connection may have been closed by the server just as it was reused.
    let response = match client.get(&url).send().await {
        Ok(response) => response,
        Err(_) => client.get(&url).send().await.map_err(|e| format!("node {}: GET /status: {e}", node.id))?,
    };
    let body: Value = serde_json::from_slice(&response.bytes().await.map_err(|e| e.to_string())?)
        .map_err(|e| format!("node {}: bad /status: {e}", node.id))?;
    let partitions = body["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let id = p["partition"].as_u64().filter(|&id| id != 0)?;
            Some((id, (p["term"].as_u64()?, p["leader"].as_u64(), p["is_leader"].as_bool()?)))
        })
        .collect();
    let counter = |section: &str, name: &str| body[section][name].as_u64().unwrap_or(0);
    Ok(NodeStatus {
        partitions,
        wal_syncs: counter("wal", "syncs"),
        wal_entries: counter("wal", "entries"),
        frames_sent: counter("transport", "frames_sent"),
        batches_sent: counter("transport", "batches_sent"),
        frames_failed: counter("transport", "frames_failed"),
    })
}

async fn all_status(client: &reqwest::Client, cluster: &Cluster) -> Result<Vec<NodeStatus>, String> {
    let mut views = Vec::new();
    for node in &cluster.nodes {
        views.push(status(client, node).await?);
    }
    Ok(views)
}

/// The leader of every partition if all nodes agree on it and it holds established leadership.
fn agreed(views: &[NodeStatus], partitions: u32) -> Option<BTreeMap<u64, u64>> {
    let mut leaders = BTreeMap::new();
    for p in 1..=u64::from(partitions) {
        let leader = views.first()?.partitions.get(&p)?.1?;
        let same = views.iter().all(|v| v.partitions.get(&p).is_some_and(|s| s.1 == Some(leader)));
        let established = views.get((leader as usize).checked_sub(1)?)?.partitions.get(&p).is_some_and(|s| s.2);
        if !same || !established {
            return None;
        }
        leaders.insert(p, leader);
    }
    Some(leaders)
}

/// Wait until all nodes agree on an established leader for every partition.
async fn wait_for_leaders(
    client: &reqwest::Client,
    cluster: &Cluster,
    partitions: u32,
) -> Result<BTreeMap<u64, u64>, String> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let views = all_status(client, cluster).await;
        if let Some(leaders) = views.as_ref().ok().and_then(|v| agreed(v, partitions)) {
            return Ok(leaders);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the nodes did not agree on leaders within {LEADER_TIMEOUT:?} (last: {views:?})\n{}",
                cluster.logs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node's answer to `POST /bench/load`.
#[derive(Debug, Default, Deserialize)]
struct LoadReport {
    ops: u64,
    errors: u64,
    #[serde(default)]
    error_kinds: BTreeMap<String, u64>,
    #[serde(default)]
    warmup_errors: u64,
    latencies_us: Vec<u32>,
    /// CPU ticks of the HTTP worker thread that ran the node's clients, over the window.
    #[serde(default)]
    worker_cpu_ticks: Option<u64>,
}

async fn post_load(client: reqwest::Client, url: String, body: Vec<u8>) -> Result<LoadReport, String> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST /bench/load: {e}"))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| format!("POST /bench/load: {e}"))?;
    if !status.is_success() {
        return Err(format!("POST /bench/load: {status}: {}", String::from_utf8_lossy(&bytes)));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("POST /bench/load: bad answer: {e}"))
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second)
}

/// CPU seconds the whole host has been busy (user, nice, system, irq, softirq, steal), from `/proc/stat`.
fn host_busy_seconds(ticks_per_second: f64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat.lines().next()?.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0.0)).collect();
    let busy = [0, 1, 2, 5, 6, 7].iter().map(|&i| fields.get(i).copied().unwrap_or(0.0)).sum::<f64>();
    Some(busy / ticks_per_second)
}

/// Every thread of a process: `tid -> (name, CPU seconds, context switches)`.
type Threads = BTreeMap<u32, (String, f64, u64)>;

/// The threads of `pid` from `/proc/<pid>/task` (empty if unreadable).
fn threads(pid: u32, ticks_per_second: f64) -> Threads {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Threads::new() };
    dir.filter_map(Result::ok)
        .filter_map(|entry| {
            let tid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_string();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let cpu = (fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / ticks_per_second;
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let switches = status
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            Some((tid, (name, cpu, switches)))
        })
        .collect()
}

/// Thread name without its instance number (`tokio-rt-worker`, `actix-rt|system`, ...).
fn thread_group(name: &str) -> String {
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '#' || c == ' ').to_string()
}

/// CPU seconds per thread group and context switches between two samples of the same processes
/// (threads started in between count from zero; threads that ended are lost).
fn thread_deltas(first: &[Threads], last: &[Threads]) -> (BTreeMap<String, f64>, BTreeMap<String, u64>) {
    let mut groups: BTreeMap<String, f64> = BTreeMap::new();
    let mut switches: BTreeMap<String, u64> = BTreeMap::new();
    for (before, after) in first.iter().zip(last) {
        for (tid, (name, cpu, sw)) in after {
            let (cpu0, sw0) = before.get(tid).map_or((0.0, 0), |t| (t.1, t.2));
            *groups.entry(thread_group(name)).or_default() += cpu - cpu0;
            *switches.entry(thread_group(name)).or_default() += sw.saturating_sub(sw0);
        }
    }
    (groups, switches)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// What is sampled at the start and end of the measured window.
struct Snapshot {
    status: Vec<NodeStatus>,
    cpu: Vec<Option<f64>>,
    host: Option<f64>,
    threads: Vec<Threads>,
    at: Instant,
}

async fn snapshot(client: &reqwest::Client, cluster: &Cluster, ticks: f64) -> Result<Snapshot, String> {
    let at = Instant::now();
    let cpu = cluster.pids().into_iter().map(|pid| cpu_seconds(pid, ticks)).collect();
    let host = host_busy_seconds(ticks);
    let threads = cluster.pids().into_iter().map(|pid| threads(pid, ticks)).collect();
    Ok(Snapshot { status: all_status(client, cluster).await?, cpu, host, threads, at })
}

/// The `q` quantile (ms) of samples that each stand for `weight` proposals.
fn weighted_percentile_ms(samples: &[(u32, f64)], q: f64) -> f64 {
    let total: f64 = samples.iter().map(|s| s.1).sum();
    if samples.is_empty() || total <= 0.0 {
        return f64::NAN;
    }
    let target = total * q;
    let mut seen = 0.0;
    for &(us, weight) in samples {
        seen += weight;
        if seen >= target {
            return f64::from(us) / 1000.0;
        }
    }
    f64::from(samples[samples.len() - 1].0) / 1000.0
}

/// One configuration's merged result.
struct RunResult {
    clients: usize,
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    entries_per_sync: f64,
    syncs_per_s_node: f64,
    frames_per_s: f64,
    batches_per_frame: f64,
    frames_failed: u64,
    cpu_percent: Vec<f64>,
    /// Host CPU busy outside the three nodes (this driver, kernel softirq for loopback, other jobs).
    other_cpu_percent: f64,
    /// CPU % of one core per thread group, summed over the nodes; `client worker` is the HTTP
    /// worker thread running the bench clients (with REST it also serves some inbound Raft
    /// frames), split out of `actix-rt|system` (the Raft arbiter and the other HTTP worker).
    thread_cpu_percent: Vec<(String, f64)>,
    /// Context switches of the nodes' threads per committed proposal.
    switches_per_op: f64,
    /// The same, per thread group, largest first.
    switches_per_op_by_group: Vec<(String, f64)>,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    warmup_errors: u64,
    term_changes: usize,
    clients_per_node: Vec<usize>,
    fsync_p50_ms: Option<f64>,
}

/// Run `clients` closed-loop clients on the cluster for one window.
async fn run_once(
    client: &reqwest::Client,
    cluster: &Cluster,
    options: &Options,
    clients: usize,
    ticks: f64,
) -> Result<RunResult, Box<dyn Error>> {
    let leaders = wait_for_leaders(client, cluster, options.partitions).await?;
    let before = all_status(client, cluster).await?;
    // Client i writes to partition 1 + i % partitions, on the node leading that partition.
    let mut per_node: BTreeMap<u64, Vec<u32>> = NODES.iter().map(|&n| (n, Vec::new())).collect();
    for i in 0..clients {
        let partition = (i as u64 % u64::from(options.partitions)) + 1;
        per_node.entry(leaders[&partition]).or_default().push(partition as u32);
    }
    let fsync_p50_ms = if options.wal == "memory" { None } else { Some(fdatasync_p50_ms(&cluster.dir)?) };

    let started = Instant::now();
    let tasks: Vec<_> = cluster
        .nodes
        .iter()
        .map(|node| {
            let body = json!({
                "seconds": options.seconds,
                "payload_bytes": options.payload_bytes,
                "clients": per_node[&node.id],
                "warmup_seconds": options.warmup,
            });
            let url = format!("{}/bench/load", node.http);
            tokio::spawn(post_load(client.clone(), url, serde_json::to_vec(&body).expect("JSON")))
        })
        .collect();
    // Sample the counters when the window opens and closes (while the loads run).
    tokio::time::sleep_until((started + Duration::from_secs_f64(options.warmup)).into()).await;
    let first = snapshot(client, cluster, ticks).await?;
    tokio::time::sleep_until((first.at + Duration::from_secs_f64(options.seconds)).into()).await;
    let last = snapshot(client, cluster, ticks).await?;
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await??);
    }
    let after = all_status(client, cluster).await?;

    let mut samples: Vec<(u32, f64)> = Vec::new();
    let mut result_errors = BTreeMap::new();
    for report in &reports {
        let weight =
            if report.latencies_us.is_empty() { 0.0 } else { report.ops as f64 / report.latencies_us.len() as f64 };
        samples.extend(report.latencies_us.iter().map(|&us| (us, weight)));
        for (kind, n) in &report.error_kinds {
            *result_errors.entry(kind.clone()).or_default() += n;
        }
    }
    samples.sort_unstable_by_key(|s| s.0);
    let window = last.at.duration_since(first.at).as_secs_f64();
    let delta = |f: fn(&NodeStatus) -> u64| -> u64 {
        first.status.iter().zip(&last.status).map(|(a, b)| f(b).saturating_sub(f(a))).sum()
    };
    let (syncs, entries) = (delta(|s| s.wal_syncs), delta(|s| s.wal_entries));
    let (frames, batches) = (delta(|s| s.frames_sent), delta(|s| s.batches_sent));
    let cpu_percent: Vec<f64> = first
        .cpu
        .iter()
        .zip(&last.cpu)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => (b - a) / window * 100.0,
            _ => f64::NAN,
        })
        .collect();
    let host_percent = match (first.host, last.host) {
        (Some(a), Some(b)) => (b - a) / window * 100.0,
        _ => f64::NAN,
    };
    let ops: u64 = reports.iter().map(|r| r.ops).sum();
    let (mut groups, switches_by_group) = thread_deltas(&first.threads, &last.threads);
    let switches: u64 = switches_by_group.values().sum();
    let proposals = ops as f64 * window / options.seconds;
    let mut switches_per_op_by_group: Vec<(String, f64)> =
        switches_by_group.into_iter().map(|(name, n)| (name, n as f64 / proposals)).collect();
    switches_per_op_by_group.sort_by(|a, b| b.1.total_cmp(&a.1));
    let worker_seconds: f64 = reports.iter().filter_map(|r| r.worker_cpu_ticks).map(|t| t as f64 / ticks).sum();
    if worker_seconds > 0.0 {
        if let Some(arbiters) = groups.get_mut("actix-rt|system") {
            *arbiters -= worker_seconds;
        }
        groups.insert("client worker".into(), worker_seconds);
    }
    let mut thread_cpu_percent: Vec<(String, f64)> =
        groups.into_iter().map(|(name, seconds)| (name, seconds / window * 100.0)).collect();
    thread_cpu_percent.sort_by(|a, b| b.1.total_cmp(&a.1));
    let max_term = |views: &[NodeStatus], p: u64| views.iter().filter_map(|v| v.partitions.get(&p)).map(|s| s.0).max();
    Ok(RunResult {
        clients,
        throughput: ops as f64 / options.seconds,
        thread_cpu_percent,
        switches_per_op: if ops == 0 { f64::NAN } else { switches as f64 / proposals },
        switches_per_op_by_group,
        p50_ms: weighted_percentile_ms(&samples, 0.50),
        p99_ms: weighted_percentile_ms(&samples, 0.99),
        entries_per_sync: if syncs == 0 { f64::NAN } else { entries as f64 / syncs as f64 },
        syncs_per_s_node: syncs as f64 / window / NODES.len() as f64,
        frames_per_s: frames as f64 / window,
        batches_per_frame: if frames == 0 { f64::NAN } else { batches as f64 / frames as f64 },
        frames_failed: delta(|s| s.frames_failed),
        other_cpu_percent: (host_percent - cpu_percent.iter().sum::<f64>()).max(0.0),
        cpu_percent,
        errors: reports.iter().map(|r| r.errors).sum(),
        error_kinds: result_errors,
        warmup_errors: reports.iter().map(|r| r.warmup_errors).sum(),
        term_changes: (1..=u64::from(options.partitions))
            .filter(|&p| max_term(&before, p) != max_term(&after, p))
            .count(),
        clients_per_node: NODES.iter().map(|n| per_node[n].len()).collect(),
        fsync_p50_ms,
    })
}

/// p50 (ms) of appending 4 KiB to a file in `dir` and `fdatasync`-ing it (200 samples), as
/// `examples/bench.rs` probes it.
fn fdatasync_p50_ms(dir: &Path) -> std::io::Result<f64> {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = vec![0xa5u8; 4096];
    let mut samples = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    std::fs::remove_file(&path)?;
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

const HEADER: [&str; 12] = [
    "clients",
    "proposals/s",
    "p50 ms",
    "p99 ms",
    "entries/sync",
    "syncs/s/nd",
    "frames/s",
    "batch/frm",
    "cpu % (n1,n2,n3)",
    "errors",
    "elect.",
    "clients/node",
];

fn print_header() {
    let h = HEADER;
    println!(
        "{:>7} {:>12} {:>8} {:>8} {:>12} {:>10} {:>9} {:>9} {:>17} {:>6} {:>6} {:>12}",
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11]
    );
}

fn print_row(r: &RunResult) {
    let cpu: Vec<String> = r.cpu_percent.iter().map(|c| format!("{c:.0}")).collect();
    let per_node: Vec<String> = r.clients_per_node.iter().map(usize::to_string).collect();
    println!(
        "{:>7} {:>12.0} {:>8.3} {:>8.3} {:>12.1} {:>10.0} {:>9.0} {:>9.1} {:>17} {:>6} {:>6} {:>12}",
        r.clients,
        r.throughput,
        r.p50_ms,
        r.p99_ms,
        r.entries_per_sync,
        r.syncs_per_s_node,
        r.frames_per_s,
        r.batches_per_frame,
        cpu.join(","),
        r.errors,
        r.term_changes,
        per_node.join("/")
    );
}

/// Start a cluster over `transport`, run every client count, stop it.
async fn bench_transport(
    server: &Path,
    transport: &str,
    options: &Options,
    base: &Path,
    ticks: f64,
) -> Result<Vec<RunResult>, Box<dyn Error>> {
    let dir = tempfile::Builder::new().prefix(&format!("bench-cluster-{transport}-")).tempdir_in(base)?;
    let timeout = Duration::from_secs_f64(options.seconds + options.warmup + 60.0);
    // Idle connections are dropped well before actix-web's 5 s keep-alive closes them, so a request
    // never races the server closing the pooled connection it reuses.
    let client = reqwest::Client::builder().timeout(timeout).pool_idle_timeout(Duration::from_secs(1)).build()?;
    let mut cluster = Cluster::start(server, transport, options, dir.path())?;
    let leaders = wait_for_leaders(&client, &cluster, options.partitions).await?;
    let mut leading: BTreeMap<u64, usize> = BTreeMap::new();
    for leader in leaders.values() {
        *leading.entry(*leader).or_default() += 1;
    }
    println!("\n[{transport}] 3 processes up (data in {}); partitions led per node: {leading:?}", dir.path().display());
    print_header();
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for &clients in &options.clients {
        match run_once(&client, &cluster, options, clients, ticks).await {
            Ok(r) => {
                print_row(&r);
                if r.errors > 0 || r.warmup_errors > 0 || r.frames_failed > 0 {
                    notes.push(format!(
                        "clients={clients}: errors in window {:?}, {} during warm-up, {} transport frames failed",
                        r.error_kinds, r.warmup_errors, r.frames_failed
                    ));
                }
                notes.push(format!(
                    "clients={clients}: host CPU outside the nodes {:.0} % (driver, kernel, other jobs)",
                    r.other_cpu_percent
                ));
                let threads: Vec<String> =
                    r.thread_cpu_percent.iter().filter(|t| t.1 >= 0.5).map(|(n, c)| format!("{n} {c:.0}")).collect();
                notes.push(format!(
                    "clients={clients}: CPU % by thread group (3 nodes): {}; context switches per proposal {:.1}",
                    threads.join(", "),
                    r.switches_per_op
                ));
                if r.switches_per_op.is_finite() {
                    let by_group: Vec<String> = r
                        .switches_per_op_by_group
                        .iter()
                        .filter(|t| t.1 >= 0.05)
                        .map(|(n, c)| format!("{n} {c:.1}"))
                        .collect();
                    notes.push(format!(
                        "clients={clients}: context switches per proposal by thread group: {}",
                        by_group.join(", ")
                    ));
                }
                if let Some(fsync) = r.fsync_p50_ms.filter(|_| r.p50_ms.is_finite()) {
                    notes.push(format!(
                        "clients={clients}: fdatasync p50 {fsync:.3} ms; commit p50 = {:.2} x fdatasync p50",
                        r.p50_ms / fsync
                    ));
                }
                results.push(r);
            }
            Err(error) => {
                println!("{clients:>7}   FAILED: {error}");
                notes.push(format!("clients={clients}: failed: {error}\n{}", cluster.logs()));
            }
        }
        let _ = std::io::stdout().flush();
        tokio::time::sleep(SETTLE).await;
    }
    let problems = cluster.stop();
    println!(
        "\n(entries/sync: WAL entries per group-commit sync, summed over the 3 nodes; syncs/s/nd: syncs per second \
         per node; frames/s: transport frames sent per second, all nodes; batch/frm: Raft message batches per frame; \
         cpu %: CPU time of each process over the window, 100 = one core; elect.: partitions whose term changed; \
         clients/node: clients run by each node, i.e. by the leaders of their partitions; thread groups in the notes: \
         kommander-rest/grpc = the transport's tokio runtime, actix-rt|system = the Raft arbiter and the HTTP worker \
         without clients (with REST both HTTP workers also serve inbound Raft frames), client worker = the HTTP \
         worker running the clients, tokio-rt-worker = the blocking pool running WAL writes and reads)"
    );
    for note in &notes {
        println!("note: {note}");
    }
    for problem in &problems {
        println!("note: {problem}\n{}", cluster.logs());
    }
    Ok(results)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("bench_cluster: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let server = match server_binary() {
        Ok(server) => server,
        Err(error) => {
            eprintln!("bench_cluster: {error}");
            return ExitCode::from(2);
        }
    };
    let base = options.dir.clone().unwrap_or_else(std::env::temp_dir);
    if let Err(error) = std::fs::create_dir_all(&base) {
        eprintln!("bench_cluster: cannot create {}: {error}", base.display());
        return ExitCode::from(2);
    }
    println!(
        "kommander cluster bench: 3 kommander-server processes on loopback ({}), {} WAL, {} partitions, \
         {}-byte payloads, tick {} ms, warm-up {:.1} s, window {:.1} s per client count; clients run inside the \
         nodes (POST /bench/load)",
        server.display(),
        options.wal,
        options.partitions,
        options.payload_bytes,
        options.tick_ms,
        options.warmup,
        options.seconds
    );
    let ticks = clock_ticks();
    let mut all: BTreeMap<String, Vec<RunResult>> = BTreeMap::new();
    let mut failed = false;
    for transport in &options.transports {
        match bench_transport(&server, transport, &options, &base, ticks).await {
            Ok(results) => {
                failed |= results.len() != options.clients.len();
                all.insert(transport.clone(), results);
            }
            Err(error) => {
                println!("[{transport}] FAILED: {error}");
                failed = true;
            }
        }
    }

    println!("\nside by side ({} WAL, {} partitions):", options.wal, options.partitions);
    print!("{:>7}", "clients");
    for transport in &options.transports {
        print!(" {:>13} {:>8} {:>8}", format!("{transport} ops/s"), "p50 ms", "p99 ms");
    }
    if all.len() == 2 {
        print!(" {:>10}", "grpc/rest");
    }
    println!();
    for &clients in &options.clients {
        print!("{clients:>7}");
        let mut throughput = Vec::new();
        for transport in &options.transports {
            match all.get(transport).and_then(|rs| rs.iter().find(|r| r.clients == clients)) {
                Some(r) => {
                    print!(" {:>13.0} {:>8.3} {:>8.3}", r.throughput, r.p50_ms, r.p99_ms);
                    throughput.push(r.throughput);
                }
                None => print!(" {:>13} {:>8} {:>8}", "-", "-", "-"),
            }
        }
        if let [rest, grpc] = throughput[..] {
            print!(" {:>9.2}x", grpc / rest);
        }
        println!();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

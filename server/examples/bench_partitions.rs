//! Many-partitions benchmark on real `kommander-server` processes: 3 nodes on loopback (SQLite WAL,
//! REST transport, `--tick-ms 50`) with N user partitions, quiescence off (`--quiesce-ticks 0`)
//! against on (`--quiesce-ticks 30`), side by side. Per (N, mode) row:
//!
//! 1. **all leaders**: process start → every partition 0..=N has a leader in node 1's `GET /status`
//!    (polled every 50–500 ms, slower for more partitions; timeout 300 s).
//! 2. **leaders per node**: user partitions each node leads (its own `is_leader`).
//! 3. **idle CPU** of the 3 processes (utime + stime from `/proc/<pid>/stat`, 100 % = one core) over
//!    `--idle-secs`, starting 5 s after all leaders are elected (the bench's own `/status` reads
//!    at the window's edges are outside it); **RSS** (max VmRSS) at its end;
//!    **frames/s**: the sum of the nodes' `transport.frames_sent` deltas over the window (HTTP
//!    requests; in brackets `batches_sent`: per-partition messages, coalesced into frames).
//! 4. **light load**: for another `--idle-secs`, one PUT per second to each of 1 % of the partitions
//!    (at least 1; keys picked by the genesis partition map so each lands on its own partition),
//!    sent to the partition's leader: CPU, frames/s and write latency p50/p99.
//! 5. **busy partition**: for 10 s, 16 closed-loop clients PUT to one partition (through its
//!    leader) while all the others idle: ops/s and p50/p99 latency — to compare across N.
//! 6. **failover**: SIGKILL the node leading the most user partitions; time until a survivor sees a
//!    new leader for every partition the victim led (election timeout: 10–20 ticks, 500–1000 ms).
//!
//! ```text
//! cargo build --release -p kommander-server --bins --examples && target/release/examples/bench_partitions
//! target/release/examples/bench_partitions --partitions 10,100 --idle-secs 30 --modes off,on
//! ```
//! `--server <path>` picks another `kommander-server` binary; `BENCH_NO_QUIESCE_FLAG=1` omits the
//! quiescence flag (for servers that do not know it: both modes then run the server's default);
//! `BENCH_WAL=memory` runs the nodes on the in-memory WAL instead of SQLite.

#[path = "support/nodes.rs"]
mod nodes;

use nodes::{default_server, keys_for, leaders, status, Nodes};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TICK_MS: u64 = 50;
/// The server flag selecting quiescence, and its value in each mode.
const QUIESCE_FLAG: &str = "--quiesce-ticks";
const QUIESCE_OFF: u32 = 0;
const QUIESCE_ON: u32 = 30;
const LEADER_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between all leaders elected and the idle window (lets quiescence kick in).
const SETTLE: Duration = Duration::from_secs(5);

struct Options {
    partitions: Vec<u32>,
    idle_secs: u64,
    modes: Vec<bool>,
    server: PathBuf,
}

fn list<T: std::str::FromStr>(flag: &str, text: &str) -> Vec<T> {
    text.split(',').map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{flag}: bad value {v:?}"))).collect()
}

fn parse_args() -> Options {
    let mut options = Options {
        partitions: vec![10, 100, 1_000, 10_000],
        idle_secs: 30,
        modes: vec![false, true],
        server: default_server(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--partitions" => options.partitions = list(&flag, &value),
            "--idle-secs" => options.idle_secs = value.parse().expect("--idle-secs needs a number of seconds"),
            "--modes" => options.modes = list::<String>(&flag, &value).iter().map(String::as_str).map(mode).collect(),
            "--server" => options.server = value.into(),
            other => panic!("unknown flag {other} (flags: --partitions, --idle-secs, --modes, --server)"),
        }
    }
    assert!(options.server.is_file(), "{} not found: build it first", options.server.display());
    options
}

/// Quiescence on (`on`) or off (`off`).
fn mode(name: &str) -> bool {
    match name {
        "on" => true,
        "off" => false,
        other => panic!("--modes: {other:?} is neither on nor off"),
    }
}

/// The three nodes of one row: SQLite (or `BENCH_WAL`), `--tick-ms 50`, quiescence on or off.
fn start(server: &Path, partitions: u32, quiesce: bool) -> std::io::Result<Nodes> {
    let mut flags = vec![
        format!("--partitions={partitions}"),
        format!("--wal={}", std::env::var("BENCH_WAL").unwrap_or_else(|_| "sqlite".into())),
        format!("--tick-ms={TICK_MS}"),
    ];
    if std::env::var("BENCH_NO_QUIESCE_FLAG").as_deref() != Ok("1") {
        flags.push(format!("{QUIESCE_FLAG}={}", if quiesce { QUIESCE_ON } else { QUIESCE_OFF }));
    }
    Nodes::start(server, "bench-partitions", flags)
}

/// Poll interval for a status listing `n` partitions (about 250 bytes of JSON each).
fn poll_interval(n: u32) -> Duration {
    Duration::from_millis(u64::from(n / 10).clamp(50, 500))
}

/// Poll node `id` until every partition of `wanted` has a leader other than `not`: the seconds
/// since `started`, or `None` on timeout; and how many had one at the end. Fails if a node died.
async fn wait_for_leaders(
    client: &reqwest::Client,
    cluster: &mut Nodes,
    id: usize,
    wanted: &BTreeSet<u64>,
    not: Option<u64>,
    started: Instant,
) -> Result<(Option<f64>, usize), String> {
    let interval = poll_interval(wanted.len() as u32);
    let mut led = 0;
    loop {
        if let Some(s) = status(client, &cluster.url(id)).await {
            let view = leaders(&s);
            let ok = |p: &&u64| view.get(p).and_then(|(l, _)| *l).is_some_and(|l| Some(l) != not);
            led = wanted.iter().filter(ok).count();
            if led == wanted.len() {
                return Ok((Some(started.elapsed().as_secs_f64()), led));
            }
        }
        if let Some(crash) = cluster.crashed() {
            return Err(crash);
        }
        if started.elapsed() > LEADER_TIMEOUT {
            return Ok((None, led));
        }
        tokio::time::sleep(interval).await;
    }
}

/// User partitions each node leads (by its own `is_leader`), node 1 first.
async fn spread(client: &reqwest::Client, cluster: &Nodes) -> Vec<usize> {
    let mut counts = Vec::new();
    for id in 1..=3 {
        let s = status(client, &cluster.url(id)).await.unwrap_or_default();
        counts.push(leaders(&s).iter().filter(|(&p, (_, is))| p > 0 && *is).count());
    }
    counts
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / ticks
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8(o.stdout).ok()).and_then(|s| s.trim().parse().ok()).unwrap_or(100.0)
}

/// Resident set of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with("VmRSS:"));
    line.and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

/// CPU seconds, frames (HTTP requests) and batches (per-partition messages, coalesced into frames)
/// sent so far, summed over the running nodes.
struct Sample {
    at: Instant,
    cpu: f64,
    frames: u64,
    batches: u64,
}

/// A window's first sample reads `/status` before the CPU times, its last one after them, so the
/// CPU the nodes spend answering the bench's `/status` (all N partitions) stays out of the window.
#[derive(Clone, Copy, PartialEq)]
enum Edge {
    Start,
    End,
}

async fn sample(client: &reqwest::Client, cluster: &Nodes, ticks: f64, edge: Edge) -> Sample {
    let cpu_now =
        || -> (f64, Instant) { (cluster.pids().into_iter().map(|pid| cpu_seconds(pid, ticks)).sum(), Instant::now()) };
    let end = (edge == Edge::End).then(cpu_now);
    let (mut frames, mut batches) = (0, 0);
    for id in (1..=3).filter(|&id| cluster.is_running(id)) {
        let s = status(client, &cluster.url(id)).await.unwrap_or_default();
        frames += s["transport"]["frames_sent"].as_u64().unwrap_or(0);
        batches += s["transport"]["batches_sent"].as_u64().unwrap_or(0);
    }
    let (cpu, at) = end.unwrap_or_else(cpu_now);
    Sample { at, cpu, frames, batches }
}

/// CPU % of one core, and frames/s (batches/s), between two samples.
fn rates(first: &Sample, last: &Sample) -> (String, String) {
    let secs = last.at.duration_since(first.at).as_secs_f64().max(1e-9);
    let per_second = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    let frames = per_second(first.frames, last.frames);
    let batches = per_second(first.batches, last.batches);
    (format!("{:.1}", 100.0 * (last.cpu - first.cpu) / secs), format!("{frames:.0} ({batches:.0} batches)"))
}

/// Latency of one PUT in ms and the partition it landed on, or `None` if it failed.
async fn put(client: reqwest::Client, url: String) -> Option<(f64, u64)> {
    let started = Instant::now();
    let response = client.put(url).body("v").send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: Value = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
    Some((started.elapsed().as_secs_f64() * 1e3, body["partition"].as_u64()?))
}

struct Load {
    latencies: Vec<f64>,
    failed: usize,
    touched: usize,
}

/// One PUT per second to each of 1 % of the partitions, through its leader, for `secs` seconds.
async fn light_load(client: &reqwest::Client, cluster: &Nodes, partitions: u32, secs: u64) -> Load {
    let count = (partitions / 100).max(1);
    let wanted: Vec<u64> = (0..count).map(|i| 1 + u64::from(i) * u64::from(partitions) / u64::from(count)).collect();
    let keys = keys_for(partitions, &wanted);
    let view = leaders(&status(client, &cluster.url(1)).await.unwrap_or_default());
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut writes = Vec::new();
    for _ in 0..secs {
        ticker.tick().await;
        for (p, key) in &keys {
            let leader = view.get(p).and_then(|(l, _)| *l).unwrap_or(1) as usize;
            writes.push(tokio::spawn(put(client.clone(), format!("{}/kv/{key}", cluster.url(leader)))));
        }
    }
    ticker.tick().await;
    let mut load = Load { latencies: Vec::new(), failed: 0, touched: 0 };
    let mut touched = BTreeSet::new();
    for write in writes {
        match write.await.ok().flatten() {
            Some((ms, p)) => {
                load.latencies.push(ms);
                touched.insert(p);
            }
            None => load.failed += 1,
        }
    }
    load.touched = touched.len();
    load
}

/// Clients of the busy-partition phase, and its length.
const BUSY_CLIENTS: usize = 16;
const BUSY: Duration = Duration::from_secs(10);

/// `BUSY_CLIENTS` closed-loop writers on partition 1, through its leader, for `BUSY`: ops/s and
/// the sorted latencies (ms).
async fn busy_partition(client: &reqwest::Client, cluster: &Nodes, partitions: u32) -> (f64, Vec<f64>, usize) {
    let key = keys_for(partitions, &[1]).remove(&1).unwrap_or_default();
    let view = leaders(&status(client, &cluster.url(1)).await.unwrap_or_default());
    let leader = view.get(&1).and_then(|(l, _)| *l).unwrap_or(1) as usize;
    let url = format!("{}/kv/{key}", cluster.url(leader));
    let started = Instant::now();
    let workers: Vec<_> = (0..BUSY_CLIENTS)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::new(), 0);
                while started.elapsed() < BUSY {
                    match put(client.clone(), url.clone()).await {
                        Some((ms, _)) => latencies.push(ms),
                        None => failed += 1,
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let (mut latencies, mut failed) = (Vec::new(), 0);
    for worker in workers {
        if let Ok((l, f)) = worker.await {
            latencies.extend(l);
            failed += f;
        }
    }
    let ops = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    (ops, latencies, failed)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN)
}

fn seconds(measured: (Option<f64>, usize), of: usize) -> String {
    match measured {
        (Some(s), _) => format!("{s:.2}"),
        (None, led) => format!(">{} s ({led}/{of} led)", LEADER_TIMEOUT.as_secs()),
    }
}

/// SIGKILL the node leading the most user partitions; seconds until a survivor sees a new leader
/// for every partition it led.
async fn failover(client: &reqwest::Client, cluster: &mut Nodes, counts: &[usize]) -> Result<String, String> {
    let victim = (1..=3).max_by_key(|&id| counts[id - 1]).unwrap_or(1);
    let victim_status = status(client, &cluster.url(victim)).await.unwrap_or_default();
    let led: BTreeSet<u64> = leaders(&victim_status).into_iter().filter(|(_, (_, is))| *is).map(|(p, _)| p).collect();
    let survivor = if victim == 1 { 2 } else { 1 };
    let killed = Instant::now();
    cluster.kill(victim);
    let measured = wait_for_leaders(client, cluster, survivor, &led, Some(victim as u64), killed).await?;
    Ok(format!("{} (node {victim}, {} partitions)", seconds(measured, led.len()), led.len()))
}

/// Measure one (N, mode) row; the table row's cells.
async fn row(options: &Options, partitions: u32, quiesce: bool, ticks: f64) -> Result<Vec<String>, String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut cluster = start(&options.server, partitions, quiesce).map_err(|e| format!("start: {e}"))?;
    let all: BTreeSet<u64> = (0..=u64::from(partitions)).collect();
    let elected = wait_for_leaders(&client, &mut cluster, 1, &all, None, started).await?;
    let counts = spread(&client, &cluster).await;
    tokio::time::sleep(SETTLE).await;
    let window = Duration::from_secs(options.idle_secs);
    let idle_start = sample(&client, &cluster, ticks, Edge::Start).await;
    tokio::time::sleep(window).await;
    let idle_end = sample(&client, &cluster, ticks, Edge::End).await;
    let rss = cluster.pids().into_iter().map(rss_mib).fold(0.0, f64::max);
    let (idle_cpu, idle_frames) = rates(&idle_start, &idle_end);

    let load_start = sample(&client, &cluster, ticks, Edge::Start).await;
    let mut load = light_load(&client, &cluster, partitions, options.idle_secs).await;
    let load_end = sample(&client, &cluster, ticks, Edge::End).await;
    let (load_cpu, load_frames) = rates(&load_start, &load_end);
    load.latencies.sort_by(f64::total_cmp);

    let (busy_ops, busy, busy_failed) = busy_partition(&client, &cluster, partitions).await;
    let busy = format!(
        "{busy_ops:.0} ({:.1} / {:.1}{})",
        percentile(&busy, 0.5),
        percentile(&busy, 0.99),
        if busy_failed > 0 { format!(", {busy_failed} failed") } else { String::new() }
    );

    let failover = match elected.0 {
        Some(_) => failover(&client, &mut cluster, &counts).await?,
        None => "skipped (not all led)".into(),
    };
    let writes = format!(
        "{:.1} / {:.1} ({} ok, {} failed, {} partitions)",
        percentile(&load.latencies, 0.5),
        percentile(&load.latencies, 0.99),
        load.latencies.len(),
        load.failed,
        load.touched
    );
    Ok(vec![
        partitions.to_string(),
        (if quiesce { "on" } else { "off" }).into(),
        seconds(elected, all.len()),
        format!("{counts:?}"),
        idle_cpu,
        format!("{rss:.0}"),
        idle_frames,
        load_cpu,
        load_frames,
        writes,
        busy,
        failover,
    ])
}

const HEADER: &str = "| partitions | quiescence | all leaders (s) | leaders per node | idle CPU (% of a core) | \
                      RSS max (MiB) | frames/s idle | CPU light load | frames/s light | write p50/p99 (ms) | \
                      busy partition ops/s (p50 / p99 ms) | failover (s) |";

fn print_table(rows: &[String]) {
    println!("{HEADER}\n|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    rows.iter().for_each(|r| println!("{r}"));
    let _ = std::io::stdout().flush();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = parse_args();
    let ticks = clock_ticks();
    println!(
        "kommander-server x3 on loopback (SQLite WAL, REST, tick {TICK_MS} ms, election timeout {}–{} ms), \
         windows of {} s, server {}{}",
        TICK_MS * 10,
        TICK_MS * 20,
        options.idle_secs,
        options.server.display(),
        if std::env::var("BENCH_NO_QUIESCE_FLAG").as_deref() == Ok("1") { " (quiescence flag omitted)" } else { "" }
    );
    print_table(&[]);
    let mut rows = Vec::new();
    for &partitions in &options.partitions {
        for &quiesce in &options.modes {
            let line = match row(&options, partitions, quiesce, ticks).await {
                Ok(cells) => format!("| {} |", cells.join(" | ")),
                Err(e) => format!("| {partitions} | {} | error: {e} |", if quiesce { "on" } else { "off" }),
            };
            println!("{line}");
            let _ = std::io::stdout().flush();
            rows.push(line);
        }
    }
    println!();
    print_table(&rows);
}

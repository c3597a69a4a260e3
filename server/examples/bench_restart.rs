//! Rolling-restart benchmark (issue 14) on real `kommander-server` processes: 3 nodes on loopback
//! (SQLite WAL, REST transport, `--tick-ms 50`: election timeout 500–1000 ms), 16 partitions,
//! with leadership hand-over on shutdown (the default) against without (`--no-hand-over`), side by
//! side. Per mode:
//!
//! 1. Start the nodes and wait until every partition has a leader.
//! 2. Writers (`--writers`, one key per partition, spread over the partitions) PUT in a closed
//!    loop to the nodes in turn (a refused or failed PUT moves to the next node after 20 ms).
//! 3. Rolling restart: node 1, then 2, then 3 get SIGTERM, are restarted once they exited, and
//!    the next one goes `--pause-secs` after the restarted node serves again.
//! 4. Report the writes acknowledged and failed during the restarts, and per partition the
//!    longest time without an acknowledged write (the worst partition and the median one).
//!
//! ```text
//! cargo build --release -p kommander-server --bins --examples && target/release/examples/bench_restart
//! target/release/examples/bench_restart --writers 32 --pause-secs 3 --modes on,off
//! ```

#[path = "support/nodes.rs"]
mod nodes;

use nodes::{default_server, keys_for, leaders, status, Nodes};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 16;

struct Options {
    writers: usize,
    pause_secs: f64,
    modes: Vec<bool>,
    server: PathBuf,
}

fn parse_args() -> Options {
    let mut options = Options { writers: 32, pause_secs: 3.0, modes: vec![true, false], server: default_server() };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--writers" => options.writers = value.parse().expect("--writers needs a number"),
            "--pause-secs" => options.pause_secs = value.parse().expect("--pause-secs needs seconds"),
            "--modes" => {
                options.modes = value
                    .split(',')
                    .map(|m| match m.trim() {
                        "on" => true,
                        "off" => false,
                        other => panic!("--modes: {other:?} is neither on nor off"),
                    })
                    .collect()
            }
            "--server" => options.server = value.into(),
            other => panic!("unknown flag {other} (flags: --writers, --pause-secs, --modes, --server)"),
        }
    }
    assert!(options.server.is_file(), "{} not found: build it first", options.server.display());
    options
}

/// When each partition's writes were acknowledged.
type Acks = Arc<Mutex<Vec<Vec<Instant>>>>;

/// What the writers share.
#[derive(Clone)]
struct Load {
    client: reqwest::Client,
    urls: Vec<String>,
    acks: Acks,
    /// Failed PUTs, with when they failed.
    failed: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

/// One closed-loop writer of `key` (partition `slot + 1`), starting on node `first`.
async fn writer(load: Load, key: String, slot: usize, first: usize) {
    let mut node = first;
    let mut n = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        n += 1;
        let sent = load.client.put(format!("{}/kv/{key}", load.urls[node])).body(n.to_string()).send().await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            load.acks.lock().unwrap()[slot].push(Instant::now());
        } else {
            load.failed.lock().unwrap().push(Instant::now());
            node = (node + 1) % load.urls.len();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Wait until node `id` answers `/status` with every partition restored and led.
async fn serving(client: &reqwest::Client, nodes: &mut Nodes, id: usize) -> Result<f64, String> {
    let started = Instant::now();
    loop {
        if let Some(s) = status(client, &nodes.url(id)).await {
            let view = leaders(&s);
            let restored = s["partitions"].as_array().is_some_and(|ps| ps.iter().all(|p| p["restoring"] == false));
            if restored && view.len() as u32 > PARTITIONS && view.values().all(|(l, _)| l.is_some()) {
                return Ok(started.elapsed().as_secs_f64());
            }
        }
        if let Some(crash) = nodes.crashed() {
            return Err(crash);
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!("node {id} not serving after 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The longest gap between acknowledged writes of each partition over `[start, end]`, in seconds,
/// and when it began (seconds after `start`).
fn longest_gaps(acks: &[Vec<Instant>], start: Instant, end: Instant) -> Vec<(f64, f64)> {
    acks.iter()
        .map(|times| {
            let inside = times.iter().copied().filter(|&t| t >= start && t <= end);
            let mut last = start;
            let mut worst = (Duration::ZERO, Duration::ZERO);
            for t in inside.chain(std::iter::once(end)) {
                if t - last > worst.0 {
                    worst = (t - last, last - start);
                }
                last = t;
            }
            (worst.0.as_secs_f64(), worst.1.as_secs_f64())
        })
        .collect()
}

async fn run(options: &Options, hand_over: bool) -> Result<String, String> {
    let mut flags = vec![format!("--partitions={PARTITIONS}"), "--wal=sqlite".into(), "--tick-ms=50".into()];
    if !hand_over {
        flags.push("--no-hand-over".into());
    }
    let mut nodes = Nodes::start(&options.server, "bench-restart", flags).map_err(|e| format!("start: {e}"))?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| e.to_string())?;
    for id in 1..=3 {
        serving(&client, &mut nodes, id).await?;
    }
    let keys = keys_for(PARTITIONS, &(1..=u64::from(PARTITIONS)).collect::<Vec<_>>());
    let load = Load {
        client: client.clone(),
        urls: (1..=3).map(|id| nodes.url(id)).collect(),
        acks: Arc::new(Mutex::new(vec![Vec::new(); PARTITIONS as usize])),
        failed: Arc::default(),
        stop: Arc::default(),
    };
    let tasks: Vec<_> = (0..options.writers)
        .map(|i| {
            let slot = i % PARTITIONS as usize;
            tokio::spawn(writer(load.clone(), keys[&(slot as u64 + 1)].clone(), slot, i % 3))
        })
        .collect();
    // Warm up for a second, then count from the first SIGTERM.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    let mut exits = Vec::new();
    let mut rejoins = Vec::new();
    let mut timeline = Vec::new();
    for id in 1..=3 {
        timeline.push(format!("SIGTERM n{id} at {:.2}", start.elapsed().as_secs_f64()));
        exits.push(nodes.terminate(id, Duration::from_secs(20)).as_secs_f64());
        nodes.spawn(id).map_err(|e| format!("restart {id}: {e}"))?;
        timeline.push(format!("restarted n{id} at {:.2}", start.elapsed().as_secs_f64()));
        rejoins.push(serving(&client, &mut nodes, id).await?);
        tokio::time::sleep(Duration::from_secs_f64(options.pause_secs)).await;
    }
    let end = Instant::now();
    load.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let inside = |t: &&Instant| **t >= start && **t <= end;
    let acks = load.acks.lock().unwrap().clone();
    let acked: usize = acks.iter().map(|a| a.iter().filter(inside).count()).sum();
    let failed = load.failed.lock().unwrap().iter().filter(inside).count();
    let mut gaps = longest_gaps(&acks, start, end);
    gaps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let worst_at: Vec<String> = gaps.iter().rev().take(3).map(|(g, at)| format!("{g:.2} s at {at:.2}")).collect();
    eprintln!(
        "  [{}] {}; worst gaps: {}",
        if hand_over { "on" } else { "off" },
        timeline.join(", "),
        worst_at.join(", ")
    );
    let gaps: Vec<f64> = gaps.into_iter().map(|(g, _)| g).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok(format!(
        "{:>9} {:>8.1} {:>9} {:>8} {:>12.2} {:>12.2} {:>11.2} {:>12.2}",
        if hand_over { "on" } else { "off" },
        (end - start).as_secs_f64(),
        acked,
        failed,
        gaps[gaps.len() - 1],
        gaps[gaps.len() / 2],
        mean(&exits),
        mean(&rejoins)
    ))
}

#[tokio::main]
async fn main() {
    let options = parse_args();
    println!(
        "rolling restart of 3 kommander-server processes (SQLite WAL, REST, tick 50 ms, election timeout \
         500–1000 ms), {PARTITIONS} partitions, {} closed-loop writers, {:.1} s between restarts\n",
        options.writers, options.pause_secs
    );
    let header = format!(
        "{:>9} {:>8} {:>9} {:>8} {:>12} {:>12} {:>11} {:>12}",
        "hand-over", "secs", "acked", "failed", "worst gap s", "median gap s", "exit s avg", "rejoin s avg"
    );
    println!("{header}");
    for &mode in &options.modes {
        match run(&options, mode).await {
            Ok(row) => println!("{row}"),
            Err(error) => println!("{:>9} FAILED: {error}", if mode { "on" } else { "off" }),
        }
    }
    println!(
        "\n(gap: per partition, the longest time without an acknowledged write over the restarts; exit: SIGTERM to \
         process exit; rejoin: restart to the node serving every partition with a leader)"
    );
}

//! openraft (`=0.10.0-alpha.37`) under the conditions of kommander's in-process bench
//! (`examples/bench.rs`): 3 nodes in one process, in-memory log and state machine, a "network" that
//! calls the target `Raft` handle directly, empty payloads, one Raft group. For every client count a
//! fresh cluster is started (node 1 initialises {1,2,3} and is awaited as leader); N closed-loop
//! clients (tokio tasks) call `client_write` on the leader, warm up for 0.5 s and are then measured
//! for `--seconds` seconds. Everything runs on one tokio multi-thread runtime with 2 workers.
//!
//! ```text
//! cargo run --release [--features mimalloc] -- [--seconds 3] [--clients 1,64,256,1024]
//!                                              [--pipeline] [--minimal-config]
//! ```
//! Config: heartbeat 50 ms, election timeout 500–1000 ms (as kommander's bench), everything else
//! openraft's default (among them: `max_payload_entries` 300, a snapshot every 5000 entries,
//! `purge_batch_size` 1). `--minimal-config` sets `max_payload_entries` and `purge_batch_size` to
//! 1024, as openraft's own `benchmarks/minimal` does. `--pipeline` replicates through the target's
//! `Raft::stream_append` instead of one `append_entries` call at a time per follower (openraft's
//! default `stream_append_sequential`, which `benchmarks/minimal` also uses).
//!
//! stdout: a table like kommander's; stderr: one line per client count for `benches/compare.sh`:
//! `RESULT system=openraft partitions=1 clients=N ops=… p50_ms=… p99_ms=… errors=N`.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cluster;
mod store;

use cluster::{BenchRaft, Cluster, Request};
use openraft::Config;
use std::error::Error;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WARMUP: Duration = Duration::from_millis(500);
const WORKER_THREADS: usize = 2;

/// Client phases, in an `AtomicU8`.
const PHASE_WARMUP: u8 = 0;
const PHASE_MEASURE: u8 = 1;
const PHASE_STOP: u8 = 2;

struct Options {
    seconds: f64,
    clients: Vec<usize>,
    pipeline: bool,
    minimal_config: bool,
}

fn parse_list(flag: &str, value: Option<String>) -> Result<Vec<usize>, String> {
    let value = value.ok_or(format!("{flag} needs a value"))?;
    let list: Result<Vec<usize>, _> = value.split(',').map(|v| v.trim().parse()).collect();
    match list {
        Ok(list) if !list.is_empty() && !list.contains(&0) => Ok(list),
        _ => Err(format!("{flag}: expected a comma-separated list of positive numbers, got {value:?}")),
    }
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options { seconds: 3.0, clients: vec![1, 64, 256, 1024], pipeline: false, minimal_config: false };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().ok_or("--seconds needs a value")?;
                options.seconds = value.parse().map_err(|_| format!("--seconds: not a number: {value:?}"))?;
                if options.seconds.is_nan() || options.seconds <= 0.0 {
                    return Err("--seconds must be positive".into());
                }
            }
            "--clients" => options.clients = parse_list("--clients", args.next())?,
            "--pipeline" => options.pipeline = true,
            "--minimal-config" => options.minimal_config = true,
            "-h" | "--help" => {
                println!(
                    "usage: openraft-baseline [--seconds N] [--clients 1,64,256,1024] [--pipeline] [--minimal-config]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(options)
}

fn config(minimal: bool) -> Result<Arc<Config>, Box<dyn Error>> {
    let mut config = Config {
        cluster_name: "bench".into(),
        heartbeat_interval: 50,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        ..Config::default()
    };
    if minimal {
        config.max_payload_entries = 1024;
        config.purge_batch_size = 1024;
    }
    Ok(Arc::new(config.validate()?))
}

#[derive(Default)]
struct ClientResult {
    /// Latency of every write that completed inside the measured window, in µs.
    latencies_us: Vec<u32>,
    /// Errors inside the measured window.
    errors: u64,
    /// Errors during warm-up.
    warmup_errors: u64,
}

/// One closed-loop client: write, wait until it is applied, repeat; follows a leader hint on error.
async fn client(nodes: Arc<Vec<BenchRaft>>, leader: Arc<AtomicU64>, phase: Arc<AtomicU8>) -> ClientResult {
    let mut result = ClientResult::default();
    while phase.load(Ordering::Relaxed) != PHASE_STOP {
        let target = leader.load(Ordering::Relaxed);
        let node = &nodes[Cluster::index_of(target).expect("leader is a cluster node")];
        let started = Instant::now();
        let outcome = node.client_write(Request).await;
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        let measuring = phase.load(Ordering::Relaxed) == PHASE_MEASURE;
        match outcome {
            Ok(_) if measuring => result.latencies_us.push(micros),
            Ok(_) => {}
            Err(error) => {
                if measuring {
                    result.errors += 1;
                } else {
                    result.warmup_errors += 1;
                }
                match error.forward_to_leader().and_then(|forward| forward.leader_id) {
                    Some(hint) if hint != target && Cluster::index_of(hint).is_some() => {
                        leader.store(hint, Ordering::Relaxed)
                    }
                    _ => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        }
    }
    result
}

/// The `q` quantile of sorted microsecond latencies, in milliseconds (as kommander's
/// `in_process::percentile_ms`: rank = ceil(n·q)).
fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

struct RunResult {
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    warmup_errors: u64,
    /// The node leading at the end (the clients' last known leader).
    leader: u64,
}

async fn run(clients: usize, window: Duration, options: &Options) -> Result<RunResult, Box<dyn Error>> {
    let cluster = Cluster::start(config(options.minimal_config)?, options.pipeline).await?;
    let leader = Arc::new(AtomicU64::new(cluster::NODES[0]));
    let phase = Arc::new(AtomicU8::new(PHASE_WARMUP));
    let tasks: Vec<_> =
        (0..clients).map(|_| tokio::spawn(client(cluster.nodes.clone(), leader.clone(), phase.clone()))).collect();

    tokio::time::sleep(WARMUP).await;
    phase.store(PHASE_MEASURE, Ordering::Relaxed);
    let measure_started = Instant::now();
    tokio::time::sleep(window).await;
    phase.store(PHASE_STOP, Ordering::Relaxed);
    let elapsed = measure_started.elapsed().as_secs_f64();

    let mut latencies = Vec::new();
    let (mut errors, mut warmup_errors) = (0, 0);
    for task in tasks {
        let result = task.await?;
        latencies.extend(result.latencies_us);
        errors += result.errors;
        warmup_errors += result.warmup_errors;
    }
    latencies.sort_unstable();
    cluster.shutdown().await;

    Ok(RunResult {
        throughput: latencies.len() as f64 / elapsed,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        errors,
        warmup_errors,
        leader: leader.load(Ordering::Relaxed),
    })
}

async fn bench(options: Options) -> Result<(), Box<dyn Error>> {
    let window = Duration::from_secs_f64(options.seconds);
    println!(
        "openraft 0.10.0-alpha.37 in-process bench: 3 nodes, in-memory log and state machine, direct-call network{}, \
         empty payloads, {WORKER_THREADS} tokio workers, {} config, warm-up {:.1} s, window {:.1} s",
        if options.pipeline { " (pipelined stream_append)" } else { "" },
        if options.minimal_config { "benchmarks/minimal" } else { "default" },
        WARMUP.as_secs_f64(),
        window.as_secs_f64()
    );
    println!(
        "\n{:>7} {:>13} {:>8} {:>8} {:>7} {:>7}",
        "clients", "proposals/s", "p50 ms", "p99 ms", "errors", "leader"
    );
    let mut notes = Vec::new();
    for &clients in &options.clients {
        match run(clients, window, &options).await {
            Ok(r) => {
                println!(
                    "{clients:>7} {:>13.0} {:>8.3} {:>8.3} {:>7} {:>7}",
                    r.throughput, r.p50_ms, r.p99_ms, r.errors, r.leader
                );
                // One machine-readable line per configuration for `benches/compare.sh`.
                eprintln!(
                    "RESULT system=openraft partitions=1 clients={clients} ops={:.0} p50_ms={:.3} p99_ms={:.3} \
                     errors={}",
                    r.throughput, r.p50_ms, r.p99_ms, r.errors
                );
                if r.errors > 0 || r.warmup_errors > 0 {
                    notes.push(format!(
                        "clients={clients}: {} errors in window, {} during warm-up",
                        r.errors, r.warmup_errors
                    ));
                }
            }
            Err(error) => {
                println!("{clients:>7}   FAILED: {error}");
                notes.push(format!("clients={clients}: failed: {error}"));
            }
        }
        let _ = std::io::stdout().flush();
    }
    for note in &notes {
        println!("note: {note}");
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let options = match parse_args() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("openraft-baseline: {error}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(WORKER_THREADS).enable_all().build()?;
    runtime.block_on(bench(options))
}

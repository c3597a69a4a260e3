//! In-process benchmark (issue 3): 3 nodes in one process, in-memory WAL and transport, empty
//! payloads. For every configuration (partitions × concurrent clients) a fresh cluster is started,
//! leaders are awaited, clients warm up for ~0.5 s and are then measured for `--seconds` seconds.
//! Client `i` writes to partition `1 + i % partitions` through the manager leading it.
//!
//! ```text
//! cargo run --release --example bench -- [--seconds 3] [--partitions 1,16] [--clients 1,64,256,1024]
//! ```
//! Prints proposals/s, p50/p99 latency and entries per WAL sync (leader nodes) per configuration,
//! and one `RESULT …` line per configuration on stderr for `benches/compare.sh`, which runs this
//! bench and the openraft baseline (`benches/openraft-baseline`) alternately and prints the ratios.
//! Each node runs a counting state machine with snapshots and log compaction, as openraft's does.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/in_process.rs"]
mod in_process;

use in_process::*;
use kommander::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::error::Error;
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

struct Options {
    seconds: f64,
    partitions: Vec<u32>,
    clients: Vec<usize>,
    /// WAL backend: memory, sqlite or rocksdb (files in a temp dir).
    wal: String,
    /// Install a Prometheus recorder, so the runtime's metrics are recorded (their cost measured).
    metrics: bool,
    /// Install a `tracing` subscriber at info level (the runtime's debug spans and events stay off).
    tracing: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        seconds: 3.0,
        partitions: vec![1, 16],
        clients: vec![1, 64, 256, 1024],
        wal: "memory".into(),
        metrics: false,
        tracing: false,
    };
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
            "--partitions" => options.partitions = parse_list("--partitions", args.next())?,
            "--clients" => options.clients = parse_list("--clients", args.next())?,
            "--wal" => options.wal = args.next().ok_or("--wal needs memory, sqlite or rocksdb")?,
            "--metrics" => options.metrics = true,
            "--tracing" => options.tracing = true,
            "-h" | "--help" => {
                println!("usage: bench [--seconds N] [--partitions 1,16] [--clients 1,64,256,1024] [--wal memory|sqlite|rocksdb] [--metrics] [--tracing]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if options.partitions.contains(&0) || options.clients.contains(&0) {
        return Err("partitions and clients must be at least 1".into());
    }
    Ok(options)
}

#[derive(Default)]
struct ClientResult {
    /// Latency of every proposal that completed inside the measured window, in µs.
    latencies_us: Vec<u32>,
    /// Errors inside the measured window, by kind.
    errors: BTreeMap<&'static str, u64>,
    /// Errors during warm-up.
    warmup_errors: u64,
}

/// One closed-loop client: propose, wait for the commit, repeat.
async fn client(
    index: usize,
    managers: Rc<Vec<RaftManager>>,
    leaders: Rc<RefCell<Vec<usize>>>,
    phase: Rc<Cell<Phase>>,
) -> ClientResult {
    let slot = index % leaders.borrow().len();
    let partition = PartitionId(slot as u32 + 1);
    let mut result = ClientResult::default();
    loop {
        if phase.get() == Phase::Stop {
            return result;
        }
        let leader = leaders.borrow()[slot];
        let started = Instant::now();
        let outcome = managers[leader].replicate(partition, "bench", [Bytes::new()], true).await;
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        let measuring = phase.get() == Phase::Measure;
        match outcome {
            Ok(_) if measuring => result.latencies_us.push(micros),
            Ok(_) => {}
            Err(error) => {
                if measuring {
                    *result.errors.entry(error.kind()).or_default() += 1;
                } else {
                    result.warmup_errors += 1;
                }
                // Refresh the cached leader: established leadership first, then the error's hint.
                let hint = match error {
                    ReplicateError::NotLeader { leader: Some(node), .. } => {
                        managers.iter().position(|m| m.node() == node)
                    }
                    _ => None,
                };
                match find_leader(&managers, partition).or(hint) {
                    Some(found) if found != leader => leaders.borrow_mut()[slot] = found,
                    _ => actix::clock::sleep(Duration::from_millis(1)).await,
                }
            }
        }
    }
}

/// `(syncs, entries)` of every node's WAL scheduler.
fn wal_counters(managers: &[RaftManager]) -> Vec<(u64, u64)> {
    managers
        .iter()
        .map(|m| {
            let stats = m.wal_stats();
            (stats.syncs.load(Ordering::Relaxed), stats.entries.load(Ordering::Relaxed))
        })
        .collect()
}

fn terms(managers: &[RaftManager], partitions: u32) -> Vec<u64> {
    (1..=partitions).map(|p| managers[0].status(PartitionId(p)).map_or(0, |s| s.term)).collect()
}

struct RunResult {
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    entries_per_sync: f64,
    syncs_per_s: f64,
    errors: BTreeMap<&'static str, u64>,
    warmup_errors: u64,
    term_changes: usize,
    leader_nodes: Vec<u64>,
}

async fn run(partitions: u32, clients: usize, window: Duration, wal: &str) -> Result<RunResult, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let managers = start_cluster(partitions, wal, dir.path()).await?;
    let leaders = match wait_for_leaders(&managers, partitions).await {
        Ok(leaders) => leaders,
        Err(error) => {
            for m in &managers {
                m.shutdown().await;
            }
            return Err(error.into());
        }
    };
    let managers = Rc::new(managers);
    let leaders = Rc::new(RefCell::new(leaders));
    let phase = Rc::new(Cell::new(Phase::Warmup));
    let tasks: Vec<_> =
        (0..clients).map(|i| actix::spawn(client(i, managers.clone(), leaders.clone(), phase.clone()))).collect();

    actix::clock::sleep(WARMUP).await;
    let before = wal_counters(&managers);
    let terms_before = terms(&managers, partitions);
    phase.set(Phase::Measure);
    let measure_started = Instant::now();
    actix::clock::sleep(window).await;
    phase.set(Phase::Stop);
    let elapsed = measure_started.elapsed().as_secs_f64();
    let after = wal_counters(&managers);
    let terms_after = terms(&managers, partitions);

    let mut latencies = Vec::new();
    let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut warmup_errors = 0;
    for task in tasks {
        let result = task.await?;
        latencies.extend(result.latencies_us);
        for (kind, n) in result.errors {
            *errors.entry(kind).or_default() += n;
        }
        warmup_errors += result.warmup_errors;
    }
    latencies.sort_unstable();

    // Group commit as seen by the nodes leading at least one partition at the end of the window.
    let mut leading: Vec<usize> = (1..=partitions).filter_map(|p| find_leader(&managers, PartitionId(p))).collect();
    leading.sort_unstable();
    leading.dedup();
    let (syncs, entries) = leading
        .iter()
        .map(|&i| (after[i].0 - before[i].0, after[i].1 - before[i].1))
        .fold((0, 0), |(s, e), (ds, de)| (s + ds, e + de));
    let leader_nodes = leading.iter().map(|&i| managers[i].node().0).collect();

    for m in managers.iter() {
        m.shutdown().await;
    }
    // Let the node arbiters wind down before the next cluster starts.
    actix::clock::sleep(Duration::from_millis(200)).await;

    Ok(RunResult {
        throughput: latencies.len() as f64 / elapsed,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        entries_per_sync: if syncs == 0 { f64::NAN } else { entries as f64 / syncs as f64 },
        syncs_per_s: syncs as f64 / elapsed / leading.len().max(1) as f64,
        errors,
        warmup_errors,
        term_changes: terms_before.iter().zip(&terms_after).filter(|(a, b)| a != b).count(),
        leader_nodes,
    })
}

/// p50 and p99 (ms) of appending 4 KiB to a file and `fdatasync`-ing it, measured in this run.
fn fdatasync_latency() -> std::io::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let mut file = std::fs::File::create(dir.path().join("probe"))?;
    let block = vec![0xa5u8; 4096];
    let mut samples = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    Ok((samples[samples.len() / 2], samples[samples.len() * 99 / 100]))
}

/// p50 and p99 (ms) of the physical floor of a 3-node commit on this one disk: three threads (one
/// file per node) each append 4 KiB and `fdatasync` at the same moment; a commit needs two of the
/// three durable (leader + one follower, or two followers), so each round records when the second
/// sync finished.
fn quorum_fdatasync_latency() -> std::io::Result<(f64, f64)> {
    use std::sync::{Arc, Barrier};
    let dir = tempfile::tempdir()?;
    let rounds = 200;
    let start = Arc::new(Barrier::new(4));
    let done = Arc::new(Barrier::new(4));
    let mut threads = Vec::new();
    for node in 0..3 {
        let mut file = std::fs::File::create(dir.path().join(format!("quorum-probe-{node}")))?;
        let (start, done) = (start.clone(), done.clone());
        threads.push(std::thread::spawn(move || -> std::io::Result<Vec<Instant>> {
            let block = vec![0x5au8; 4096];
            let mut finished = Vec::new();
            for _ in 0..rounds {
                start.wait();
                file.write_all(&block)?;
                file.sync_data()?;
                finished.push(Instant::now());
                done.wait();
            }
            Ok(finished)
        }));
    }
    let mut began = Vec::new();
    for _ in 0..rounds {
        began.push(Instant::now());
        start.wait();
        done.wait();
    }
    let finished: Vec<Vec<Instant>> =
        threads.into_iter().map(|t| t.join().expect("probe thread")).collect::<std::io::Result<_>>()?;
    let mut samples: Vec<f64> = (0..rounds)
        .map(|round| {
            let mut ends: Vec<f64> =
                finished.iter().map(|f| f[round].duration_since(began[round]).as_secs_f64() * 1000.0).collect();
            ends.sort_by(f64::total_cmp);
            ends[1]
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    Ok((samples[samples.len() / 2], samples[samples.len() * 99 / 100]))
}

#[actix::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let options = match parse_args() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("bench: {error}");
            std::process::exit(2);
        }
    };
    if options.tracing {
        tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_writer(std::io::stderr).init();
    }
    if options.metrics {
        // Before the clusters are built: the runtime registers its metric handles then.
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
        kommander::actors::metrics::describe();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            handle.run_upkeep();
        });
    }
    let window = Duration::from_secs_f64(options.seconds);
    println!(
        "kommander in-process bench: 3 nodes, {} WAL, in-memory transport, empty payloads, warm-up {:.1} s, \
         window {:.1} s, metrics {}, tracing {}",
        options.wal,
        WARMUP.as_secs_f64(),
        window.as_secs_f64(),
        if options.metrics { "recorded (Prometheus recorder)" } else { "off (no recorder)" },
        if options.tracing { "subscriber at info" } else { "no subscriber" }
    );
    if options.wal != "memory" {
        println!("fdatasync (append 4 KiB + fdatasync, 200 samples) is probed before every configuration");
    }
    println!(
        "\n{:>10} {:>7} {:>13} {:>8} {:>8} {:>13} {:>11} {:>7} {:>8} {:>9}",
        "partitions",
        "clients",
        "proposals/s",
        "p50 ms",
        "p99 ms",
        "entries/sync",
        "syncs/s/nd",
        "errors",
        "elect.",
        "leaders"
    );
    let mut notes = Vec::new();
    for &partitions in &options.partitions {
        for &clients in &options.clients {
            // fdatasync latency moves with the machine's load: probe it next to every configuration.
            let fsync = if options.wal == "memory" { None } else { Some(fdatasync_latency()?) };
            let quorum = if options.wal == "memory" { None } else { Some(quorum_fdatasync_latency()?) };
            match run(partitions, clients, window, &options.wal).await {
                Ok(r) => {
                    let errors: u64 = r.errors.values().sum();
                    let leaders: Vec<String> = r.leader_nodes.iter().map(u64::to_string).collect();
                    println!(
                        "{:>10} {:>7} {:>13.0} {:>8.3} {:>8.3} {:>13.1} {:>11.0} {:>7} {:>8} {:>9}",
                        partitions,
                        clients,
                        r.throughput,
                        r.p50_ms,
                        r.p99_ms,
                        r.entries_per_sync,
                        r.syncs_per_s,
                        errors,
                        r.term_changes,
                        leaders.join(",")
                    );
                    // One machine-readable line per configuration for `benches/compare.sh`.
                    eprintln!(
                        "RESULT system=kommander partitions={partitions} clients={clients} ops={:.0} p50_ms={:.3} \
                         p99_ms={:.3} errors={errors}",
                        r.throughput, r.p50_ms, r.p99_ms
                    );
                    if let (Some((fsync_p50, fsync_p99)), Some((quorum_p50, _))) = (fsync, quorum) {
                        notes.push(format!(
                            "partitions={partitions} clients={clients}: fdatasync p50 {fsync_p50:.3} ms / p99 \
                             {fsync_p99:.3} ms; commit p50 = {:.2} x fdatasync p50; 2-of-3 concurrent fdatasync \
                             p50 {quorum_p50:.3} ms; commit p50 = {:.2} x that floor",
                            r.p50_ms / fsync_p50,
                            r.p50_ms / quorum_p50
                        ));
                    }
                    if errors > 0 || r.warmup_errors > 0 {
                        notes.push(format!(
                            "partitions={partitions} clients={clients}: errors in window {:?}, {} during warm-up",
                            r.errors, r.warmup_errors
                        ));
                    }
                }
                Err(error) => {
                    println!("{partitions:>10} {clients:>7}   FAILED: {error}");
                    notes.push(format!("partitions={partitions} clients={clients}: failed: {error}"));
                }
            }
            let _ = std::io::stdout().flush();
        }
    }
    println!(
        "\n(entries/sync: WAL entries per group-commit sync summed over the nodes leading a partition at the end \
         (they also persist what they follow); syncs/s/nd: syncs per second per such node; elect.: partitions whose \
         term changed during the window)"
    );
    for note in &notes {
        println!("note: {note}");
    }

    println!(
        "\nAgainst openraft: benches/compare.sh runs openraft (benches/openraft-baseline) and this bench \
         alternately on this machine and prints the ratios (BENCHMARKS.md)."
    );
    Ok(())
}

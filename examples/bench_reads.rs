//! Read benchmark (issue 14): 3 nodes in one process, in-memory WAL and transport. For every
//! configuration (read consistency × partitions × concurrent readers) a fresh cluster is started
//! and leaders are awaited; then 16 closed-loop writers (empty payloads, through each
//! partition's leader) run next to the readers, which ask for read barriers
//! (`RaftManager::read_barrier`) on partition `1 + i % partitions` — at its leader, or for
//! `follower` rows at another node (follower reads: the leader hands out the index). After a
//! 0.5 s warm-up both are measured for `--seconds`.
//!
//! ```text
//! cargo run --release --example bench_reads -- [--seconds 2] [--partitions 1,16] [--readers 1,64,256]
//! ```
//! Prints reads/s with p50/p99 latency, the writes/s of the same window, and read-index rounds
//! per read (summed over the leaders: how many reads share a quorum round).

#[path = "support/in_process.rs"]
mod in_process;

use in_process::*;
use kommander::prelude::*;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::error::Error;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

const WRITERS: usize = 16;

/// What the readers ask for, and where.
#[derive(Clone, Copy)]
struct Mode {
    name: &'static str,
    consistency: Consistency,
    at_follower: bool,
}

const MODES: [Mode; 4] = [
    Mode { name: "local", consistency: Consistency::Local, at_follower: false },
    Mode { name: "lease", consistency: Consistency::Lease, at_follower: false },
    Mode { name: "linearizable", consistency: Consistency::Linearizable, at_follower: false },
    Mode { name: "lin. follower", consistency: Consistency::Linearizable, at_follower: true },
];

fn parse_args() -> Result<(f64, Vec<u32>, Vec<usize>), String> {
    let (mut seconds, mut partitions, mut readers) = (2.0, vec![1, 16], vec![1, 64, 256]);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--seconds" => seconds = parse_list::<f64>(&flag, args.next())?[0],
            "--partitions" => partitions = parse_list(&flag, args.next())?,
            "--readers" => readers = parse_list(&flag, args.next())?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok((seconds, partitions, readers))
}

#[derive(Default)]
struct Outcome {
    latencies_us: Vec<u32>,
    errors: u64,
}

/// One closed-loop client: a read barrier (or a write when `mode` is `None`), again and again.
async fn client(
    index: usize,
    mode: Option<Mode>,
    managers: Rc<Vec<RaftManager>>,
    partitions: u32,
    phase: Rc<Cell<Phase>>,
) -> Outcome {
    let partition = PartitionId(1 + (index as u32 % partitions));
    let mut outcome = Outcome::default();
    while phase.get() != Phase::Stop {
        let Some(leader) = find_leader(&managers, partition) else {
            actix::clock::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let node = match mode {
            Some(Mode { at_follower: true, .. }) => (leader + 1 + index % 2) % managers.len(),
            _ => leader,
        };
        let started = Instant::now();
        let ok = match mode {
            Some(mode) => managers[node].read_barrier(partition, mode.consistency).await.is_ok(),
            None => managers[node].replicate(partition, "bench", vec![Vec::new()], true).await.is_ok(),
        };
        if phase.get() == Phase::Measure {
            if ok {
                outcome.latencies_us.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
            } else {
                outcome.errors += 1;
            }
        }
    }
    outcome
}

fn rounds(managers: &[RaftManager], partitions: u32) -> u64 {
    let ids = (1..=partitions).map(PartitionId);
    ids.flat_map(|p| managers.iter().filter_map(move |m| m.status(p).ok())).map(|s| s.read_rounds).sum()
}

struct Row {
    reads: f64,
    p50: f64,
    p99: f64,
    writes: f64,
    rounds_per_read: f64,
    errors: u64,
}

async fn run(mode: Mode, partitions: u32, readers: usize, window: Duration) -> Result<Row, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let managers = start_cluster(partitions, "memory", dir.path()).await?;
    if let Err(error) = wait_for_leaders(&managers, partitions).await {
        for m in &managers {
            m.shutdown().await;
        }
        return Err(error.into());
    }
    let managers = Rc::new(managers);
    let phase = Rc::new(Cell::new(Phase::Warmup));
    let spawn =
        |i: usize, mode: Option<Mode>| actix::spawn(client(i, mode, managers.clone(), partitions, phase.clone()));
    let read_tasks: Vec<_> = (0..readers).map(|i| spawn(i, Some(mode))).collect();
    let write_tasks: Vec<_> = (0..WRITERS).map(|i| spawn(i, None)).collect();
    actix::clock::sleep(WARMUP).await;
    let rounds_before = rounds(&managers, partitions);
    phase.set(Phase::Measure);
    let started = Instant::now();
    actix::clock::sleep(window).await;
    phase.set(Phase::Stop);
    let elapsed = started.elapsed().as_secs_f64();
    let rounds_during = rounds(&managers, partitions) - rounds_before;
    let (mut reads, mut writes, mut errors) = (Vec::new(), 0usize, 0);
    for task in read_tasks {
        let outcome = task.await?;
        reads.extend(outcome.latencies_us);
        errors += outcome.errors;
    }
    for task in write_tasks {
        let outcome = task.await?;
        writes += outcome.latencies_us.len();
        errors += outcome.errors;
    }
    for m in managers.iter() {
        m.shutdown().await;
    }
    actix::clock::sleep(Duration::from_millis(200)).await;
    reads.sort_unstable();
    Ok(Row {
        reads: reads.len() as f64 / elapsed,
        p50: percentile_ms(&reads, 0.5),
        p99: percentile_ms(&reads, 0.99),
        writes: writes as f64 / elapsed,
        rounds_per_read: rounds_during as f64 / reads.len().max(1) as f64,
        errors,
    })
}

#[actix::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (seconds, partitions, readers) = parse_args().map_err(|e| {
        eprintln!("bench_reads: {e}");
        e
    })?;
    let window = Duration::from_secs_f64(seconds);
    println!(
        "kommander read bench: 3 nodes in one process, in-memory WAL and transport, {WRITERS} writers next to the \
         readers, warm-up {:.1} s, window {:.1} s\n",
        WARMUP.as_secs_f64(),
        seconds
    );
    println!(
        "{:>13} {:>10} {:>7} {:>10} {:>8} {:>8} {:>9} {:>12} {:>7}",
        "consistency", "partitions", "readers", "reads/s", "p50 ms", "p99 ms", "writes/s", "rounds/read", "errors"
    );
    let mut summary: BTreeMap<(&str, u32, usize), f64> = BTreeMap::new();
    for &p in &partitions {
        for &r in &readers {
            for mode in MODES {
                match run(mode, p, r, window).await {
                    Ok(row) => {
                        println!(
                            "{:>13} {:>10} {:>7} {:>10.0} {:>8.3} {:>8.3} {:>9.0} {:>12.3} {:>7}",
                            mode.name, p, r, row.reads, row.p50, row.p99, row.writes, row.rounds_per_read, row.errors
                        );
                        summary.insert((mode.name, p, r), row.reads);
                    }
                    Err(error) => println!("{:>13} {:>10} {:>7}   FAILED: {error}", mode.name, p, r),
                }
                let _ = std::io::stdout().flush();
            }
        }
    }
    println!("\nlinearizable reads/s relative to local reads/s of the same configuration:");
    for &p in &partitions {
        for &r in &readers {
            if let (Some(lin), Some(local), Some(lease)) =
                (summary.get(&("linearizable", p, r)), summary.get(&("local", p, r)), summary.get(&("lease", p, r)))
            {
                println!("  P={p:<3} readers={r:<4} linearizable {:.2}x, lease {:.2}x", lin / local, lease / local);
            }
        }
    }
    Ok(())
}

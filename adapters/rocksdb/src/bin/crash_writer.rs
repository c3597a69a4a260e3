//! Crash-test helper for `tests/crash.rs`: `rocks-wal-crash-writer <db-path> [seed]`.
//!
//! Opens a [`RocksWal`] at `<db-path>`, resumes every partition from its last index, and then
//! loops forever writing group-commit batches: each batch touches 1 to all of the partitions
//! `1..=PARTITIONS`, appending 1–20 deterministic entries to each (sometimes rewriting, with
//! `truncate_from`, an identical copy of the last few entries first) together with a hard state
//! whose `commit` is the new last index. After each `write` returns `Ok` it prints one
//! `ACK <partition> <last_index>` line per partition of the batch and flushes stdout. The test
//! kills it with SIGKILL at a random point and checks that every acknowledged index survived.

#[path = "../../tests/support/crash_model.rs"]
mod crash_model;

use crash_model::{crash_entry, SplitMix64, MAX_ENTRIES, PARTITIONS};
use kommander_core::{HardState, NodeId, PartitionId, PartitionWrite, Wal, WalBatch};
use kommander_wal_rocksdb::RocksWal;
use std::io::Write;
use std::process::ExitCode;

/// Stop eventually even if nobody kills us (a crashed test must not leave a writer running).
const MAX_WRITES: u64 = 1_000_000;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: rocks-wal-crash-writer <db-path> [seed]");
        return ExitCode::from(2);
    };
    let seed = args.next().map_or(1, |s| s.parse().expect("seed must be a u64"));
    let wal = match RocksWal::open(&path) {
        Ok(wal) => wal,
        Err(error) => {
            eprintln!("crash writer: cannot open {path}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut last: Vec<u64> =
        (1..=PARTITIONS).map(|p| wal.last_index(PartitionId(p)).expect("last_index on startup")).collect();
    let mut rng = SplitMix64::new(seed);
    let stdout = std::io::stdout();

    for _ in 0..MAX_WRITES {
        let count = rng.range_inclusive(1, u64::from(PARTITIONS)) as u32;
        let first = rng.range_inclusive(0, u64::from(PARTITIONS) - 1) as u32;
        let mut writes = Vec::new();
        for k in 0..count {
            let slot = ((first + k) % PARTITIONS) as usize;
            let partition = PartitionId(slot as u32 + 1);
            let old_last = last[slot];
            // Sometimes rewrite the last 1..=10 entries (identical content) before appending, to
            // exercise the range tombstone of a suffix replacement under crashes. The log never
            // shrinks: the new last index is always ≥ the old one.
            let rewrite = if old_last > 0 && rng.range_inclusive(0, 3) == 0 {
                rng.range_inclusive(1, old_last.min(10))
            } else {
                0
            };
            let from = old_last - rewrite + 1;
            let new_last = old_last + rng.range_inclusive(1, MAX_ENTRIES);
            writes.push(PartitionWrite {
                partition,
                truncate_from: (rewrite > 0 && rng.range_inclusive(0, 1) == 0).then_some(from),
                entries: (from..=new_last).map(|i| crash_entry(partition, i)).collect(),
                hard_state: Some(HardState { term: 1, voted_for: Some(NodeId(1)), commit: new_last }),
                ..PartitionWrite::default()
            });
            last[slot] = new_last;
        }
        if let Err(error) = wal.write(&WalBatch { writes: writes.clone() }) {
            eprintln!("crash writer: write failed: {error}");
            return ExitCode::FAILURE;
        }
        let mut out = stdout.lock();
        for write in &writes {
            let index = write.entries.last().map_or(0, |e| e.index);
            // A closed pipe means the test is gone: stop.
            if writeln!(out, "ACK {} {index}", write.partition.0).is_err() {
                return ExitCode::SUCCESS;
            }
        }
        if out.flush().is_err() {
            return ExitCode::SUCCESS;
        }
    }
    ExitCode::SUCCESS
}

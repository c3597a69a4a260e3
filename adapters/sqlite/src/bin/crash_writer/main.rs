//! `sqlite-wal-crash-writer`: **test support** for `tests/crash.rs`, not a tool.
//!
//! Usage: `sqlite-wal-crash-writer <database path> <seed>`.
//!
//! Opens a `SqliteWal` at the path and writes batches forever (see `workload.rs`: several
//! partitions per batch, 1–20 deterministic 100-byte entries each, continuing from each
//! partition's `last_index`). After each `write` returns `Ok` it prints one line
//! `ACK <partition> <last_index>` per partition of the batch and flushes stdout, so every
//! acknowledged index is durable by the `Wal` contract. The test SIGKILLs it at a random moment
//! and checks that everything acknowledged survived. It exits 0 when stdout is closed, and 1 (with
//! a message on stderr) on any WAL error.

use kommander_core::{PartitionId, Wal};
use kommander_wal_sqlite::SqliteWal;
use std::io::Write;
use std::process::ExitCode;

mod workload;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(seed)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok())) else {
        eprintln!("usage: sqlite-wal-crash-writer <database path> <seed>");
        return ExitCode::from(2);
    };
    match run(path, seed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sqlite-wal-crash-writer: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &str, seed: u64) -> Result<(), String> {
    let wal = SqliteWal::open(path).map_err(|e| format!("open {path}: {e}"))?;
    let mut last = [0; workload::PARTITIONS as usize];
    for (slot, p) in last.iter_mut().zip(1..=workload::PARTITIONS) {
        *slot = wal.last_index(PartitionId(p)).map_err(|e| format!("last_index(p{p}): {e}"))?;
    }
    let mut rng = workload::SplitMix64::new(seed);
    let mut stdout = std::io::stdout().lock();
    loop {
        let batch = workload::next_batch(&mut rng, &mut last);
        wal.write(&batch).map_err(|e| format!("write: {e}"))?;
        let mut acks = String::new();
        for write in &batch.writes {
            let index = write.entries.last().map_or(0, |e| e.index);
            acks.push_str(&format!("ACK {} {index}\n", write.partition.0));
        }
        // A closed pipe means the test is done with us.
        if stdout.write_all(acks.as_bytes()).and_then(|()| stdout.flush()).is_err() {
            return Ok(());
        }
    }
}

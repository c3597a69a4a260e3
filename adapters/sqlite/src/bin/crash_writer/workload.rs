//! The deterministic workload of the crash test, shared by the writer binary (`main.rs`) and by
//! `tests/crash.rs` (which includes this file with `#[path]`), so that the test can recompute
//! every batch the killed writer may have committed.
//!
//! Entries and hard states are pure functions of (partition, index); the sequence of batches is a
//! pure function of the seed and of the last index of each partition when the writer started.

use kommander_core::{EntryKind, HardState, HlcTimestamp, LogEntry, LogIndex, NodeId, PartitionId, PartitionWrite};
use kommander_core::{Term, WalBatch};

/// Partitions written: `1..=PARTITIONS`.
pub const PARTITIONS: u32 = 6;

/// Payload bytes of every entry.
pub const PAYLOAD_LEN: usize = 100;

/// Most entries appended to one partition in one batch.
pub const MAX_ENTRIES_PER_WRITE: u64 = 20;

/// Term of the entry at `index`.
pub fn term_of(index: LogIndex) -> Term {
    index / 64 + 1
}

/// The entry the writer stores at `index` of `partition`.
pub fn expected_entry(partition: PartitionId, index: LogIndex) -> LogEntry {
    let mut rng = SplitMix64::new((u64::from(partition.0) << 40) ^ index);
    let payload = (0..PAYLOAD_LEN).map(|_| rng.next_u64() as u8).collect();
    LogEntry {
        index,
        term: term_of(index),
        kind: EntryKind::Application { auto_commit: index % 3 != 0 },
        log_type: format!("crash-p{}", partition.0).into(),
        payload,
        ticket: HlcTimestamp { physical_ms: index, logical: partition.0, node: 7 },
    }
}

/// The hard state the writer stores together with entries up to `last` of `partition`.
pub fn expected_hard_state(partition: PartitionId, last: LogIndex) -> HardState {
    HardState { term: term_of(last), voted_for: Some(NodeId(u64::from(partition.0))), commit: last }
}

/// The next batch: 2 to `PARTITIONS` consecutive partitions (cyclically), 1 to
/// `MAX_ENTRIES_PER_WRITE` entries each, appended after `last[partition - 1]`, half of them with a
/// hard state. Advances `last` to the state after the batch.
pub fn next_batch(rng: &mut SplitMix64, last: &mut [LogIndex; PARTITIONS as usize]) -> WalBatch {
    let count = 2 + rng.below(u64::from(PARTITIONS) - 1) as u32;
    let first = rng.below(u64::from(PARTITIONS)) as u32;
    let writes = (0..count)
        .map(|k| {
            let partition = PartitionId((first + k) % PARTITIONS + 1);
            let slot = &mut last[(partition.0 - 1) as usize];
            let n = 1 + rng.below(MAX_ENTRIES_PER_WRITE);
            let entries = (*slot + 1..=*slot + n).map(|i| expected_entry(partition, i)).collect();
            *slot += n;
            let hard_state = (rng.below(2) == 0).then(|| expected_hard_state(partition, *slot));
            PartitionWrite { partition, truncate_from: None, entries, hard_state, ..Default::default() }
        })
        .collect();
    WalBatch { writes }
}

pub use kommander_core::rng::SplitMix64;

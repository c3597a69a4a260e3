//! What the crash writer writes, shared by `src/bin/crash_writer.rs` and `tests/crash.rs` so that
//! the test can recompute every entry from its position.
//!
//! Every partition's log only ever grows, and the entry at `(partition, index)` is always
//! [`crash_entry`]`(partition, index)` (overwrites rewrite identical entries), so after any crash
//! the log of each partition must be exactly `crash_entry(p, 1..=n)` for some `n` no smaller than
//! the last acknowledged index, with a hard state whose `commit` equals `n` (entries and hard
//! state are written in the same atomic batch).

#![allow(dead_code)]

use kommander_core::{EntryKind, HlcTimestamp, LogEntry, LogIndex, PartitionId};

/// Partitions the writer spreads its batches over (ids `1..=PARTITIONS`).
pub const PARTITIONS: u32 = 6;

/// Most entries appended to one partition in one write.
pub const MAX_ENTRIES: u64 = 20;

/// Payload length of every entry.
pub const PAYLOAD_LEN: usize = 100;

pub use kommander_core::rng::SplitMix64;

/// The deterministic 100-byte payload of `(partition, index)`.
pub fn payload(partition: PartitionId, index: LogIndex) -> Vec<u8> {
    let mut state = SplitMix64::new(u64::from(partition.0) << 40 ^ index);
    (0..PAYLOAD_LEN).map(|_| state.next_u64() as u8).collect()
}

/// The entry the writer stores at `(partition, index)`.
pub fn crash_entry(partition: PartitionId, index: LogIndex) -> LogEntry {
    LogEntry {
        index,
        term: index / 100 + 1,
        kind: EntryKind::Application { auto_commit: true },
        log_type: "crash".into(),
        payload: payload(partition, index).into(),
        ticket: HlcTimestamp { physical_ms: index, logical: partition.0, node: 7 },
    }
}

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

/// SplitMix64: a tiny, seedable generator (no dependency needed).
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

/// The deterministic 100-byte payload of `(partition, index)`.
pub fn payload(partition: PartitionId, index: LogIndex) -> Vec<u8> {
    let mut state = SplitMix64(u64::from(partition.0) << 40 ^ index);
    (0..PAYLOAD_LEN).map(|_| state.next_u64() as u8).collect()
}

/// The entry the writer stores at `(partition, index)`.
pub fn crash_entry(partition: PartitionId, index: LogIndex) -> LogEntry {
    LogEntry {
        index,
        term: index / 100 + 1,
        kind: EntryKind::Application { auto_commit: true },
        log_type: "crash".into(),
        payload: payload(partition, index),
        ticket: HlcTimestamp { physical_ms: index, logical: partition.0, node: 7 },
    }
}

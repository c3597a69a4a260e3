//! The write-ahead-log contract every storage adapter implements, and the data it stores.
//!
//! # Contract
//!
//! * **Durability.** When [`Wal::write`] returns `Ok`, every write in the batch is durable: it
//!   survives a process crash and a power loss (the adapter has synced). When it returns `Err`,
//!   the caller must assume any prefix of the batch may or may not be durable and must stop the
//!   affected partitions (a failed sync is never retried as if nothing happened).
//! * **One call, many partitions.** A [`WalBatch`] carries writes of any number of partitions so
//!   that one storage transaction and one sync serve them all (group commit).
//! * **Order.** Writes are applied in batch order. For each [`PartitionWrite`]: first the suffix
//!   from `truncate_from` is removed (if set), then the prefix through `compact_through` (if set;
//!   the floor may move past the last entry), then the suffix from the first new entry's index is
//!   replaced by the new entries, then the snapshot meta is stored (if set), then the hard state
//!   (if set). A write whose
//!   entries are not consecutive, or would leave a gap after the current last index, is rejected
//!   with [`WalError::NonContiguous`]; one that touches compacted entries or compacts past the
//!   partition's snapshot with [`WalError::Compacted`]; either way the whole batch changes nothing.
//! * **Compaction.** A partition's log starts after its compaction floor (`compacted_through`,
//!   never above the index of its stored snapshot). After compacting past its last entry, the log
//!   is empty and `last_index` is the floor, so the next entry is `floor + 1`. The space of
//!   compacted entries is reclaimed by the adapter (SQLite: freed pages; RocksDB: range deletion
//!   and compaction of the range).
//! * **Reads see completed writes.** Reads may run concurrently with writes (the trait is
//!   `Sync`); they observe every write whose call has returned.
//! * **Index 0** is the empty prefix: `term_at(p, 0)` is `Some(0)`; real entries start at 1.
//!
//! Run [`crate::conformance::wal`] against every implementation.

use crate::entry::LogEntry;
use crate::ids::{LogIndex, NodeId, PartitionId, Term};
use crate::snapshot::SnapshotMeta;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The state Raft must persist besides the log: current term, vote, and commit frontier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this replica has seen.
    pub term: Term,
    /// Candidate voted for in `term`, if any.
    pub voted_for: Option<NodeId>,
    /// Highest index known committed (may lag the true commit index; never ahead of the log).
    pub commit: LogIndex,
}

/// Everything one partition needs written in one step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionWrite {
    /// Partition written.
    pub partition: PartitionId,
    /// Remove every entry with index ≥ this, before appending.
    pub truncate_from: Option<LogIndex>,
    /// Entries to append, consecutive; replaces any stored suffix from the first one's index.
    pub entries: Vec<LogEntry>,
    /// Remove every entry with index ≤ this (prefix compaction), after the truncation and before
    /// the appends. Must not exceed the snapshot index the partition has once this write is
    /// applied.
    pub compact_through: Option<LogIndex>,
    /// Store this as the partition's latest snapshot (after compaction, before the hard state).
    pub snapshot: Option<SnapshotMeta>,
    /// Hard state to store after the entries.
    pub hard_state: Option<HardState>,
}

impl PartitionWrite {
    /// True when the write changes nothing.
    pub fn is_empty(&self) -> bool {
        self.truncate_from.is_none()
            && self.entries.is_empty()
            && self.compact_through.is_none()
            && self.snapshot.is_none()
            && self.hard_state.is_none()
    }
}

/// A group-commit batch: writes of many partitions, made durable together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalBatch {
    /// The writes, applied in order.
    pub writes: Vec<PartitionWrite>,
}

impl WalBatch {
    /// Total entries across all partitions.
    pub fn entry_count(&self) -> usize {
        self.writes.iter().map(|w| w.entries.len()).sum()
    }
}

/// Errors of WAL implementations.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum WalError {
    /// The storage layer failed (I/O, sync, database error). Treat as fatal for the partitions
    /// involved.
    #[error("wal i/o failure: {0}")]
    Io(String),
    /// A stored record failed its integrity check.
    #[error("corrupt wal record in partition {partition} at index {index}: {reason}")]
    Corrupt {
        /// Partition of the record.
        partition: PartitionId,
        /// Index of the record (0 for hard state).
        index: LogIndex,
        /// What was wrong.
        reason: String,
    },
    /// A write would leave a gap or its entries are not consecutive.
    #[error("non-contiguous write in partition {partition}: expected index ≤ {expected}, got {got}")]
    NonContiguous {
        /// Partition of the write.
        partition: PartitionId,
        /// Highest acceptable index for the entry.
        expected: LogIndex,
        /// Index found.
        got: LogIndex,
    },
    /// A write touches entries at or below the compaction floor, or compacts past the
    /// partition's snapshot.
    #[error("partition {partition}: index {index} is compacted or past the snapshot ({reason})")]
    Compacted {
        /// Partition of the write.
        partition: PartitionId,
        /// Index concerned.
        index: LogIndex,
        /// What was wrong.
        reason: &'static str,
    },
    /// The WAL was closed.
    #[error("wal closed")]
    Closed,
}

/// A durable (or, for tests, in-memory) log store shared by all partitions of a node.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait Wal: Send + Sync {
    /// Apply the batch and make it durable before returning (see the module contract).
    fn write(&self, batch: &WalBatch) -> Result<(), WalError>;

    /// Whether calls may block the calling thread (disk I/O, fsync). The runtime runs the writes
    /// of a blocking WAL on a thread pool and calls a non-blocking one (the in-memory WAL) inline,
    /// saving two thread hops per group commit. Default `true`.
    fn blocks(&self) -> bool {
        true
    }

    /// Remove every entry of `partition` with index ≥ `from` (no-op past the end), durably.
    fn truncate_suffix(&self, partition: PartitionId, from: LogIndex) -> Result<(), WalError>;

    /// Entries of `partition` with `from ≤ index ≤ to`, in index order (missing ones omitted).
    fn read_range(&self, partition: PartitionId, from: LogIndex, to: LogIndex) -> Result<Vec<LogEntry>, WalError>;

    /// Term of the entry at `index` (`Some(0)` for index 0, `None` past the end).
    fn term_at(&self, partition: PartitionId, index: LogIndex) -> Result<Option<Term>, WalError>;

    /// Index of the last stored entry of `partition`; the compaction floor when no entry above it
    /// is stored (0 for a partition never written).
    fn last_index(&self, partition: PartitionId) -> Result<LogIndex, WalError>;

    /// The compaction floor of `partition`: entries at or below it are gone (0 when never
    /// compacted).
    fn compacted_through(&self, partition: PartitionId) -> Result<LogIndex, WalError>;

    /// The latest snapshot meta stored for `partition`, if any.
    fn load_snapshot(&self, partition: PartitionId) -> Result<Option<SnapshotMeta>, WalError>;

    /// Remove the entries of `partition` at or below `through` (one write; see
    /// [`PartitionWrite::compact_through`]).
    fn compact(&self, partition: PartitionId, through: LogIndex) -> Result<(), WalError> {
        let write = PartitionWrite { partition, compact_through: Some(through), ..Default::default() };
        self.write(&WalBatch { writes: vec![write] })
    }

    /// Store the hard state of `partition`, durably.
    fn save_hard_state(&self, partition: PartitionId, state: &HardState) -> Result<(), WalError>;

    /// The last stored hard state of `partition`, if any.
    fn load_hard_state(&self, partition: PartitionId) -> Result<Option<HardState>, WalError>;

    /// Every partition with stored entries or hard state, ascending.
    fn partitions(&self) -> Result<Vec<PartitionId>, WalError>;

    /// Recover from a failed write without restarting the process: close the storage and open it
    /// again, re-reading what is really stored (as a process restart would) and clearing any
    /// fail-stop state the failure left (a fenced SQLite WAL, RocksDB's read-only mode). After an
    /// `Ok`, every write that returned `Ok` before is still there, the failed write's data may or
    /// may not be, and writes are accepted again.
    ///
    /// The runtime calls it after a failed [`write`](Wal::write), with no write running, before
    /// any partition re-reads its log; it retries (on the next restart of a partition) while it
    /// fails, e.g. while the disk is still full. Default: nothing to reopen (`Ok`).
    fn reopen(&self) -> Result<(), WalError> {
        Ok(())
    }
}

/// What a partition's log looks like to a write: its last index, its compaction floor and the
/// index of its stored snapshot (0 when none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogBounds {
    /// Last stored index (the floor when nothing above it is stored).
    pub last_index: LogIndex,
    /// Entries at or below this are compacted.
    pub compacted_through: LogIndex,
    /// Index of the stored snapshot (0 when none).
    pub snapshot_index: LogIndex,
}

/// How to apply one validated [`PartitionWrite`]: where its suffix cut falls (if anywhere) and the
/// bounds the partition has afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WritePlan {
    /// Remove the stored suffix from this index first.
    pub cut: Option<LogIndex>,
    /// Then remove the stored prefix through this index (above the current floor), then append.
    pub compact: Option<LogIndex>,
    /// The partition's bounds once the write is applied.
    pub after: LogBounds,
}

/// Validate that `write` can be applied to a log with `bounds` and say how. Shared by adapters so
/// that they all reject the same inputs.
pub fn plan_partition_write(write: &PartitionWrite, bounds: LogBounds) -> Result<WritePlan, WalError> {
    let partition = write.partition;
    let mut floor = bounds.compacted_through;
    let mut effective_last = bounds.last_index;
    let mut cut = None;
    if let Some(from) = write.truncate_from {
        if from == 0 {
            return Err(WalError::NonContiguous { partition, expected: 1, got: 0 });
        }
        if from <= floor {
            return Err(WalError::Compacted { partition, index: from, reason: "truncation below the floor" });
        }
        if from <= effective_last {
            effective_last = from - 1;
            cut = Some(from);
        }
    }
    if let Some(snapshot) = &write.snapshot {
        if snapshot.partition != partition || snapshot.index == 0 {
            return Err(WalError::Compacted { partition, index: snapshot.index, reason: "invalid snapshot meta" });
        }
    }
    let snapshot_index = write.snapshot.as_ref().map_or(bounds.snapshot_index, |s| s.index);
    let mut compact = None;
    if let Some(through) = write.compact_through {
        if through > snapshot_index {
            return Err(WalError::Compacted { partition, index: through, reason: "compaction past the snapshot" });
        }
        if through > floor {
            floor = through;
            compact = Some(through);
            effective_last = effective_last.max(through);
        }
    }
    if snapshot_index < floor {
        return Err(WalError::Compacted { partition, index: snapshot_index, reason: "snapshot below the floor" });
    }
    if let Some(first) = write.entries.first() {
        if first.index == 0 || first.index > effective_last + 1 {
            return Err(WalError::NonContiguous { partition, expected: effective_last + 1, got: first.index });
        }
        if first.index <= floor {
            return Err(WalError::Compacted { partition, index: first.index, reason: "entry at or below the floor" });
        }
        for pair in write.entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(WalError::NonContiguous { partition, expected: pair[0].index + 1, got: pair[1].index });
            }
        }
        if first.index <= effective_last {
            cut = Some(cut.map_or(first.index, |c: LogIndex| c.min(first.index)));
        }
    }
    let last = write.entries.last().map_or(effective_last, |e| e.index);
    Ok(WritePlan { cut, compact, after: LogBounds { last_index: last, compacted_through: floor, snapshot_index } })
}

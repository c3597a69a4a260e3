//! [`MemoryWal`]: an in-memory [`Wal`] for tests, the simulator and benchmarks.
//!
//! It owns, per partition, the log entries above the compaction floor (a `Vec` whose position `i`
//! holds index `floor + i + 1`), the floor, the last snapshot meta and the last hard state, all behind one `Mutex`. Nothing is durable beyond the process: "durable" in
//! the [`Wal`] contract means "stored in the shared map". Clones share the same storage, so a test
//! can simulate a restart by dropping one handle and carrying on with another.
//!
//! It follows the same contract as the durable adapters (and passes the same
//! [`crate::conformance::wal`] suite): a batch is validated as a whole with
//! [`plan_partition_write`] before anything is applied, so a rejected batch changes nothing.

use crate::entry::LogEntry;
use crate::ids::{LogIndex, PartitionId, Term};
use crate::snapshot::SnapshotMeta;
use crate::wal::{plan_partition_write, HardState, LogBounds, Wal, WalBatch, WalError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// What one partition has stored.
#[derive(Clone, Debug, Default)]
struct PartitionLog {
    /// The log above the floor; `entries[i].index == floor + i + 1`.
    entries: Vec<LogEntry>,
    /// Compaction floor: entries at or below it are gone.
    floor: LogIndex,
    /// The last hard state stored, if any.
    hard_state: Option<HardState>,
    /// The latest snapshot meta stored, if any.
    snapshot: Option<SnapshotMeta>,
}

impl PartitionLog {
    fn last_index(&self) -> LogIndex {
        self.floor + self.entries.len() as LogIndex
    }

    fn bounds(&self) -> LogBounds {
        LogBounds {
            last_index: self.last_index(),
            compacted_through: self.floor,
            snapshot_index: self.snapshot.as_ref().map_or(0, |s| s.index),
        }
    }

    /// Position of `index` in `entries`, if stored.
    fn position(&self, index: LogIndex) -> Option<usize> {
        (index > self.floor && index <= self.last_index()).then(|| (index - self.floor - 1) as usize)
    }

    /// Remove every entry with index ≥ `from` (treating 0 as 1); no-op past the end.
    fn truncate_from(&mut self, from: LogIndex) {
        let keep = usize::try_from(from.max(self.floor + 1) - self.floor - 1).unwrap_or(usize::MAX);
        self.entries.truncate(keep);
    }

    /// Remove every entry with index ≤ `through` (the floor moves up even past the last entry).
    fn compact(&mut self, through: LogIndex) {
        if through <= self.floor {
            return;
        }
        let drop = usize::try_from(through - self.floor).unwrap_or(usize::MAX).min(self.entries.len());
        self.entries.drain(..drop);
        self.floor = through;
    }

    /// True when nothing is stored, so the partition need not be listed.
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.hard_state.is_none() && self.snapshot.is_none() && self.floor == 0
    }
}

/// The storage all clones of one [`MemoryWal`] share.
#[derive(Debug, Default)]
struct Shared {
    partitions: Mutex<BTreeMap<PartitionId, PartitionLog>>,
    writes: AtomicU64,
    entries_written: AtomicU64,
}

/// An in-memory, thread-safe [`Wal`]. Clones share the same storage (and counters).
#[derive(Clone, Debug, Default)]
pub struct MemoryWal {
    shared: Arc<Shared>,
}

impl MemoryWal {
    /// An empty WAL.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of successful [`Wal::write`] calls so far (across all clones). Rejected batches,
    /// [`Wal::truncate_suffix`] and [`Wal::save_hard_state`] are not counted.
    pub fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::Relaxed)
    }

    /// Total entries carried by successful [`Wal::write`] calls so far (across all clones),
    /// including entries that replaced an existing suffix.
    pub fn entries_written(&self) -> u64 {
        self.shared.entries_written.load(Ordering::Relaxed)
    }

    /// Lock the shared map. A panic while the lock was held cannot have left a half-applied batch
    /// (batches are validated before they are applied), so a poisoned lock is simply reused.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<PartitionId, PartitionLog>> {
        self.shared.partitions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Wal for MemoryWal {
    fn blocks(&self) -> bool {
        false
    }

    fn write(&self, batch: &WalBatch) -> Result<(), WalError> {
        let mut partitions = self.lock();

        // Pass 1: validate every write against the bounds its partition will have once the
        // earlier writes of the batch are applied. Nothing is changed yet.
        let mut bounds: BTreeMap<PartitionId, LogBounds> = BTreeMap::new();
        for write in &batch.writes {
            let current = *bounds.entry(write.partition).or_insert_with(|| {
                partitions.get(&write.partition).map_or_else(LogBounds::default, PartitionLog::bounds)
            });
            let plan = plan_partition_write(write, current)?;
            bounds.insert(write.partition, plan.after);
        }

        // Pass 2: apply. Every write was validated against exactly this sequence of states.
        for write in &batch.writes {
            if write.is_empty() {
                continue;
            }
            let log = partitions.entry(write.partition).or_default();
            let plan = plan_partition_write(write, log.bounds())
                .expect("the write was validated against this state in the first pass");
            if let Some(cut) = plan.cut {
                log.truncate_from(cut);
            }
            if let Some(through) = plan.compact {
                log.compact(through);
            }
            log.entries.extend(write.entries.iter().cloned());
            if let Some(snapshot) = &write.snapshot {
                log.snapshot = Some(snapshot.clone());
            }
            if let Some(state) = write.hard_state {
                log.hard_state = Some(state);
            }
            if log.is_empty() {
                partitions.remove(&write.partition);
            }
        }

        self.shared.writes.fetch_add(1, Ordering::Relaxed);
        self.shared.entries_written.fetch_add(batch.entry_count() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn truncate_suffix(&self, partition: PartitionId, from: LogIndex) -> Result<(), WalError> {
        let mut partitions = self.lock();
        if let Some(log) = partitions.get_mut(&partition) {
            log.truncate_from(from);
            if log.is_empty() {
                partitions.remove(&partition);
            }
        }
        Ok(())
    }

    fn read_range(&self, partition: PartitionId, from: LogIndex, to: LogIndex) -> Result<Vec<LogEntry>, WalError> {
        let partitions = self.lock();
        let Some(log) = partitions.get(&partition) else {
            return Ok(Vec::new());
        };
        let from = from.max(log.floor + 1);
        let to = to.min(log.last_index());
        let (Some(start), Some(end)) = (log.position(from), log.position(to)) else {
            return Ok(Vec::new());
        };
        if start > end {
            return Ok(Vec::new());
        }
        Ok(log.entries[start..=end].to_vec())
    }

    fn term_at(&self, partition: PartitionId, index: LogIndex) -> Result<Option<Term>, WalError> {
        if index == 0 {
            return Ok(Some(0));
        }
        let partitions = self.lock();
        Ok(partitions.get(&partition).and_then(|log| log.position(index).map(|at| log.entries[at].term)))
    }

    fn last_index(&self, partition: PartitionId) -> Result<LogIndex, WalError> {
        Ok(self.lock().get(&partition).map_or(0, PartitionLog::last_index))
    }

    fn compacted_through(&self, partition: PartitionId) -> Result<LogIndex, WalError> {
        Ok(self.lock().get(&partition).map_or(0, |log| log.floor))
    }

    fn load_snapshot(&self, partition: PartitionId) -> Result<Option<SnapshotMeta>, WalError> {
        Ok(self.lock().get(&partition).and_then(|log| log.snapshot.clone()))
    }

    fn save_hard_state(&self, partition: PartitionId, state: &HardState) -> Result<(), WalError> {
        self.lock().entry(partition).or_default().hard_state = Some(*state);
        Ok(())
    }

    fn load_hard_state(&self, partition: PartitionId) -> Result<Option<HardState>, WalError> {
        Ok(self.lock().get(&partition).and_then(|log| log.hard_state))
    }

    fn partitions(&self) -> Result<Vec<PartitionId>, WalError> {
        // Emptied partitions are removed eagerly, so every key has entries or a hard state.
        Ok(self.lock().keys().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use crate::wal::PartitionWrite;

    const P: PartitionId = PartitionId(1);
    const Q: PartitionId = PartitionId(2);

    use crate::conformance::wal::entry;

    fn append(partition: PartitionId, from: LogIndex, to: LogIndex, term: Term) -> PartitionWrite {
        PartitionWrite {
            partition,
            entries: (from..=to).map(|i| entry(i, term)).collect(),
            ..PartitionWrite::default()
        }
    }

    fn batch(writes: Vec<PartitionWrite>) -> WalBatch {
        WalBatch { writes }
    }

    #[test]
    fn clones_share_storage_and_survive_dropping_the_original() {
        let wal = MemoryWal::new();
        let other = wal.clone();
        wal.write(&batch(vec![append(P, 1, 3, 1)])).unwrap();
        let state = HardState { term: 1, voted_for: Some(NodeId(4)), commit: 2 };
        other.save_hard_state(P, &state).unwrap();
        assert_eq!(other.last_index(P).unwrap(), 3);
        assert_eq!(wal.load_hard_state(P).unwrap(), Some(state));

        drop(wal);
        assert_eq!(other.read_range(P, 1, 10).unwrap().len(), 3);
        assert_eq!(other.load_hard_state(P).unwrap(), Some(state));
        assert_eq!(other.writes(), 1);
    }

    #[test]
    fn independent_instances_do_not_share_storage() {
        let a = MemoryWal::new();
        let b = MemoryWal::new();
        a.write(&batch(vec![append(P, 1, 2, 1)])).unwrap();
        assert_eq!(b.last_index(P).unwrap(), 0);
        assert!(b.partitions().unwrap().is_empty());
    }

    #[test]
    fn counters_count_only_successful_writes() {
        let wal = MemoryWal::new();
        assert_eq!((wal.writes(), wal.entries_written()), (0, 0));
        wal.write(&batch(vec![append(P, 1, 3, 1), append(Q, 1, 2, 1)])).unwrap();
        wal.write(&batch(vec![append(P, 3, 4, 2)])).unwrap();
        assert_eq!((wal.writes(), wal.entries_written()), (2, 7));

        let rejected = wal.write(&batch(vec![append(Q, 3, 3, 1), append(P, 9, 9, 2)]));
        assert!(matches!(rejected, Err(WalError::NonContiguous { .. })));
        wal.truncate_suffix(P, 2).unwrap();
        wal.save_hard_state(P, &HardState::default()).unwrap();
        assert_eq!((wal.writes(), wal.entries_written()), (2, 7));
        assert_eq!(wal.clone().writes(), 2);
    }

    #[test]
    fn rejected_batch_leaves_storage_untouched() {
        let wal = MemoryWal::new();
        wal.write(&batch(vec![append(P, 1, 5, 1)])).unwrap();
        // Valid on its own against the stored log (index 5 ≤ 6), but not after the first write
        // of the same batch shortened the log to 3.
        let result = wal.write(&batch(vec![
            append(Q, 1, 1, 1),
            PartitionWrite { partition: P, truncate_from: Some(4), ..PartitionWrite::default() },
            append(P, 5, 5, 2),
        ]));
        assert_eq!(result, Err(WalError::NonContiguous { partition: P, expected: 4, got: 5 }));
        assert_eq!(wal.read_range(P, 1, 10).unwrap(), (1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>());
        assert_eq!(wal.partitions().unwrap(), vec![P]);
    }

    #[test]
    fn emptied_partitions_are_forgotten_unless_they_keep_a_hard_state() {
        let wal = MemoryWal::new();
        wal.write(&batch(vec![append(P, 1, 2, 1), append(Q, 1, 2, 1)])).unwrap();
        wal.save_hard_state(Q, &HardState { term: 1, voted_for: None, commit: 0 }).unwrap();
        wal.truncate_suffix(P, 1).unwrap();
        wal.truncate_suffix(Q, 0).unwrap();
        assert_eq!(wal.partitions().unwrap(), vec![Q]);
        assert_eq!(wal.last_index(Q).unwrap(), 0);

        // Empty writes and truncations of unknown partitions create nothing.
        wal.write(&batch(vec![PartitionWrite { partition: P, ..PartitionWrite::default() }])).unwrap();
        wal.truncate_suffix(PartitionId(9), 1).unwrap();
        assert_eq!(wal.partitions().unwrap(), vec![Q]);
    }

    #[test]
    fn read_range_handles_extreme_bounds() {
        let wal = MemoryWal::new();
        wal.write(&batch(vec![append(P, 1, 3, 1)])).unwrap();
        assert_eq!(wal.read_range(P, 0, LogIndex::MAX).unwrap().len(), 3);
        assert!(wal.read_range(P, LogIndex::MAX, LogIndex::MAX).unwrap().is_empty());
        assert!(wal.read_range(P, 3, 2).unwrap().is_empty());
        assert_eq!(wal.term_at(P, LogIndex::MAX).unwrap(), None);
    }
}

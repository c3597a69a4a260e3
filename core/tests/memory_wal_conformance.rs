//! Runs the WAL conformance suite against [`MemoryWal`], and checks that the suite catches
//! deliberately broken WALs.

use kommander_core::conformance::wal::{self, WalFactory};
use kommander_core::{
    HardState, LogEntry, LogIndex, MemoryWal, PartitionId, PartitionWrite, Term, Wal, WalBatch, WalError,
};
use std::collections::HashSet;

/// Fresh `MemoryWal`s; "reopening" drops the handle and continues with a clone of it.
struct MemoryFactory;

impl WalFactory for MemoryFactory {
    type Wal = MemoryWal;

    fn create(&mut self) -> MemoryWal {
        MemoryWal::new()
    }

    fn reopen(&mut self, wal: MemoryWal) -> MemoryWal {
        let reopened = wal.clone();
        drop(wal);
        reopened
    }
}

#[test]
fn memory_wal_passes_the_conformance_suite() {
    wal::run_all(&mut MemoryFactory);
}

#[test]
fn suite_has_at_least_twenty_uniquely_named_cases() {
    let names = wal::case_names();
    assert!(names.len() >= 20, "only {} cases", names.len());
    let unique: HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "duplicate case names in {names:?}");
    let case_names: Vec<_> = wal::cases::<MemoryFactory>().iter().map(|c| c.name).collect();
    assert_eq!(case_names, names);
}

#[test]
fn run_case_runs_one_case_by_name() {
    wal::run_case(&mut MemoryFactory, "gap_rejects_whole_batch");
}

#[test]
#[should_panic(expected = "no wal conformance case named `no_such_case`")]
fn run_case_rejects_unknown_names() {
    wal::run_case(&mut MemoryFactory, "no_such_case");
}

/// Which mutation a [`BrokenWal`] carries.
#[derive(Clone, Copy, PartialEq)]
enum Bug {
    /// Applies the writes of a batch one by one, so a rejected batch keeps its valid prefix.
    NonAtomicBatch,
    /// Lists partitions in descending order.
    UnsortedPartitions,
    /// Forgets the hard state on reopen.
    HardStateNotDurable,
    /// Stores the snapshot meta but never removes compacted entries (no space reclaimed).
    CompactionKeepsEntries,
    /// Reopening in place (after a failed write) drops each partition's last entry.
    ReopenInPlaceLosesTheLastEntry,
}

/// A `MemoryWal` with one deliberate contract violation.
struct BrokenWal {
    inner: MemoryWal,
    bug: Bug,
}

impl Wal for BrokenWal {
    fn write(&self, batch: &WalBatch) -> Result<(), WalError> {
        if self.bug == Bug::NonAtomicBatch {
            for write in &batch.writes {
                self.inner.write(&WalBatch { writes: vec![write.clone()] })?;
            }
            Ok(())
        } else if self.bug == Bug::CompactionKeepsEntries {
            let mut batch = batch.clone();
            for write in &mut batch.writes {
                write.compact_through = None;
            }
            self.inner.write(&batch)
        } else {
            self.inner.write(batch)
        }
    }

    fn compacted_through(&self, partition: PartitionId) -> Result<LogIndex, WalError> {
        self.inner.compacted_through(partition)
    }

    fn load_snapshot(&self, partition: PartitionId) -> Result<Option<kommander_core::SnapshotMeta>, WalError> {
        self.inner.load_snapshot(partition)
    }

    fn truncate_suffix(&self, partition: PartitionId, from: LogIndex) -> Result<(), WalError> {
        self.inner.truncate_suffix(partition, from)
    }

    fn read_range(&self, partition: PartitionId, from: LogIndex, to: LogIndex) -> Result<Vec<LogEntry>, WalError> {
        self.inner.read_range(partition, from, to)
    }

    fn term_at(&self, partition: PartitionId, index: LogIndex) -> Result<Option<Term>, WalError> {
        self.inner.term_at(partition, index)
    }

    fn last_index(&self, partition: PartitionId) -> Result<LogIndex, WalError> {
        self.inner.last_index(partition)
    }

    fn save_hard_state(&self, partition: PartitionId, state: &HardState) -> Result<(), WalError> {
        self.inner.save_hard_state(partition, state)
    }

    fn load_hard_state(&self, partition: PartitionId) -> Result<Option<HardState>, WalError> {
        self.inner.load_hard_state(partition)
    }

    fn partitions(&self) -> Result<Vec<PartitionId>, WalError> {
        let mut partitions = self.inner.partitions()?;
        if self.bug == Bug::UnsortedPartitions {
            partitions.reverse();
        }
        Ok(partitions)
    }

    fn reopen(&self) -> Result<(), WalError> {
        if self.bug == Bug::ReopenInPlaceLosesTheLastEntry {
            for partition in self.inner.partitions()? {
                let last = self.inner.last_index(partition)?;
                if last > self.inner.compacted_through(partition)? {
                    self.inner.truncate_suffix(partition, last)?;
                }
            }
        }
        Ok(())
    }
}

struct BrokenFactory(Bug);

impl WalFactory for BrokenFactory {
    type Wal = BrokenWal;

    fn create(&mut self) -> BrokenWal {
        BrokenWal { inner: MemoryWal::new(), bug: self.0 }
    }

    fn reopen(&mut self, wal: BrokenWal) -> BrokenWal {
        if self.0 == Bug::HardStateNotDurable {
            // Copy the entries into fresh storage, leaving the hard states behind.
            let fresh = MemoryWal::new();
            for partition in wal.inner.partitions().unwrap() {
                let entries = wal.inner.read_range(partition, 1, LogIndex::MAX).unwrap();
                if !entries.is_empty() {
                    let write = PartitionWrite { partition, entries, ..Default::default() };
                    fresh.write(&WalBatch { writes: vec![write] }).unwrap();
                }
            }
            BrokenWal { inner: fresh, bug: self.0 }
        } else {
            wal
        }
    }
}

/// Names of the cases that fail against a WAL with `bug`.
fn failing_cases(bug: Bug) -> Vec<&'static str> {
    let mut factory = BrokenFactory(bug);
    wal::cases::<BrokenFactory>()
        .iter()
        .filter(|case| wal::check_case(&mut factory, case).is_err())
        .map(|case| case.name)
        .collect()
}

#[test]
fn suite_catches_non_atomic_batches() {
    let failing = failing_cases(Bug::NonAtomicBatch);
    assert!(failing.contains(&"gap_rejects_whole_batch"), "{failing:?}");
    assert!(failing.contains(&"gap_after_earlier_write_in_batch_rejected"), "{failing:?}");
}

#[test]
fn suite_catches_compaction_that_keeps_entries() {
    let failing = failing_cases(Bug::CompactionKeepsEntries);
    assert!(failing.contains(&"compaction_removes_the_prefix_atomically_with_the_snapshot"), "{failing:?}");
    assert!(failing.contains(&"compaction_past_the_last_entry_moves_the_floor"), "{failing:?}");
}

#[test]
fn suite_catches_unsorted_partitions() {
    let failing = failing_cases(Bug::UnsortedPartitions);
    assert!(failing.contains(&"partitions_listed_ascending"), "{failing:?}");
}

#[test]
fn suite_catches_hard_state_lost_on_reopen() {
    let failing = failing_cases(Bug::HardStateNotDurable);
    assert!(failing.contains(&"reopen_preserves_hard_state"), "{failing:?}");
    assert!(failing.contains(&"hard_state_save_load_last_wins"), "{failing:?}");
}

#[test]
fn suite_catches_a_reopen_in_place_that_loses_writes() {
    let failing = failing_cases(Bug::ReopenInPlaceLosesTheLastEntry);
    assert_eq!(failing, vec!["reopen_in_place_keeps_everything_and_writes_on"]);
}

#[test]
fn run_all_names_the_failing_case() {
    let result = std::panic::catch_unwind(|| wal::run_all(&mut BrokenFactory(Bug::NonAtomicBatch)));
    let payload = result.expect_err("run_all must panic on a broken wal");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    assert!(message.starts_with("wal conformance case `") && message.contains("` failed: "), "{message}");
}

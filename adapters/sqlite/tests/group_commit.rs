//! Group commit: one `write` is one SQLite transaction (one sync), whatever the number of
//! partitions it carries.

use kommander_core::conformance::wal::entry;
use kommander_core::{HardState, LogIndex, PartitionId, PartitionWrite, Wal, WalBatch};
use kommander_wal_sqlite::SqliteWal;

const PARTITIONS: u32 = 50;
const PER_PARTITION: u64 = 10;

/// `PER_PARTITION` entries from `from` for each of partitions `1..=PARTITIONS`, every other one
/// with a hard state.
fn batch(from: LogIndex) -> WalBatch {
    WalBatch {
        writes: (1..=PARTITIONS)
            .map(|p| PartitionWrite {
                partition: PartitionId(p),
                truncate_from: None,
                entries: (from..from + PER_PARTITION).map(|i| entry(i, 1)).collect(),
                hard_state: (p % 2 == 0).then_some(HardState { term: 1, voted_for: None, commit: from }),
                ..PartitionWrite::default()
            })
            .collect(),
    }
}

#[test]
fn one_write_of_fifty_partitions_is_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SqliteWal::open(dir.path().join("wal.db")).unwrap();
    assert_eq!((wal.syncs(), wal.entries_written()), (0, 0));

    wal.write(&batch(1)).unwrap();
    assert_eq!(wal.syncs(), 1, "50 partitions × 10 entries in one write must be one transaction");
    assert_eq!(wal.entries_written(), 500);

    wal.write(&batch(PER_PARTITION + 1)).unwrap();
    assert_eq!((wal.syncs(), wal.entries_written()), (2, 1000));

    // A batch rejected by its last partition commits nothing and syncs nothing.
    let mut rejected = batch(2 * PER_PARTITION + 1);
    rejected.writes.last_mut().unwrap().entries.remove(0);
    assert!(wal.write(&rejected).is_err());
    assert_eq!((wal.syncs(), wal.entries_written()), (2, 1000));
    for p in 1..=PARTITIONS {
        assert_eq!(wal.last_index(PartitionId(p)).unwrap(), 2 * PER_PARTITION, "partition {p}");
    }
}

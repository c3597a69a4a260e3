//! Integrity and group-commit behaviour of [`RocksWal`] beyond the conformance suite:
//!
//! * a damaged, torn or misplaced record (written under an entry or hard-state key with the raw
//!   RocksDB API, bypassing the adapter) is reported as [`WalError::Corrupt`], never skipped;
//! * one `write` covering 50 partitions is one synced RocksDB write.

use kommander_core::codec::{encode_entry, encode_hard_state};
use kommander_core::conformance::wal::entry;
use kommander_core::{HardState, LogIndex, NodeId, PartitionId, PartitionWrite, Wal, WalBatch, WalError};
use kommander_wal_rocksdb::RocksWal;
use std::path::Path;

const P: PartitionId = PartitionId(1);
const Q: PartitionId = PartitionId(2);

fn append(partition: PartitionId, from: LogIndex, to: LogIndex) -> PartitionWrite {
    PartitionWrite { partition, entries: (from..=to).map(|i| entry(i, 1)).collect(), ..PartitionWrite::default() }
}

/// The adapter's entry key (see the crate documentation).
fn entry_key(partition: PartitionId, index: LogIndex) -> Vec<u8> {
    let mut key = vec![b'e'];
    key.extend_from_slice(&partition.0.to_be_bytes());
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The adapter's hard-state key.
fn hard_state_key(partition: PartitionId) -> Vec<u8> {
    let mut key = vec![b'h'];
    key.extend_from_slice(&partition.0.to_be_bytes());
    key
}

/// A WAL at `path` holding P: 1..=5 and Q: 1..=3 with hard states, closed again.
fn populate(path: &Path) {
    let wal = RocksWal::open(path).expect("open");
    let mut p = append(P, 1, 5);
    p.hard_state = Some(HardState { term: 1, voted_for: Some(NodeId(1)), commit: 4 });
    let mut q = append(Q, 1, 3);
    q.hard_state = Some(HardState { term: 2, voted_for: None, commit: 3 });
    wal.write(&WalBatch { writes: vec![p, q] }).expect("write");
}

/// Put `value` under `key` with the raw RocksDB API, bypassing the adapter.
fn raw_put(path: &Path, key: &[u8], value: &[u8]) {
    let db = rocksdb::DB::open_default(path).expect("open raw db");
    db.put(key, value).expect("raw put");
    db.flush().expect("flush");
}

fn expect_corrupt<T: std::fmt::Debug>(
    result: Result<T, WalError>,
    partition: PartitionId,
    index: LogIndex,
    what: &str,
) {
    match result {
        Err(WalError::Corrupt { partition: p, index: i, ref reason }) if p == partition && i == index => {
            assert!(!reason.is_empty(), "{what}: empty reason");
        }
        other => panic!("{what}: expected Corrupt at ({partition}, {index}), got {other:?}"),
    }
}

/// Damage the record of P at index 3 with `damage`, reopen, and check every read that touches it.
fn check_entry_damage(damage: impl FnOnce(Vec<u8>) -> Vec<u8>, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    raw_put(dir.path(), &entry_key(P, 3), &damage(encode_entry(P, &entry(3, 1))));

    let wal = RocksWal::open(dir.path()).expect("reopen");
    expect_corrupt(wal.read_range(P, 1, 5), P, 3, &format!("{what}: read_range(1, 5)"));
    expect_corrupt(wal.read_range(P, 3, 3), P, 3, &format!("{what}: read_range(3, 3)"));
    expect_corrupt(wal.read_range(P, 0, LogIndex::MAX), P, 3, &format!("{what}: read_range(0, MAX)"));
    expect_corrupt(wal.term_at(P, 3), P, 3, &format!("{what}: term_at(3)"));
    // Reads that do not touch the damaged record still work.
    assert_eq!(wal.read_range(P, 1, 2).unwrap(), vec![entry(1, 1), entry(2, 1)], "{what}");
    assert_eq!(wal.read_range(P, 4, 5).unwrap(), vec![entry(4, 1), entry(5, 1)], "{what}");
    assert_eq!(wal.term_at(P, 5).unwrap(), Some(1), "{what}");
    assert_eq!(wal.read_range(Q, 1, 10).unwrap().len(), 3, "{what}");
    assert_eq!(wal.last_index(P).unwrap(), 5, "{what}");
}

#[test]
fn flipped_byte_in_an_entry_is_corrupt() {
    for position in [0, 1, 5, 20] {
        check_entry_damage(
            |mut record| {
                let at = position.min(record.len() - 1);
                record[at] ^= 0x40;
                record
            },
            &format!("byte {position} flipped"),
        );
    }
    check_entry_damage(
        |mut record| {
            let last = record.len() - 1;
            record[last] ^= 0x01;
            record
        },
        "last payload byte flipped",
    );
}

#[test]
fn torn_entry_is_corrupt() {
    check_entry_damage(|record| record[..record.len() / 2].to_vec(), "record torn in half");
    check_entry_damage(|_| Vec::new(), "empty record");
}

#[test]
fn misplaced_entry_is_corrupt() {
    // A valid record, but of index 4 / of partition Q: its checksum covers its position.
    check_entry_damage(|_| encode_entry(P, &entry(4, 1)), "record of index 4 under index 3");
    check_entry_damage(|_| encode_entry(Q, &entry(3, 1)), "record of partition Q under P");
}

#[test]
fn corrupt_hard_state_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let mut record = encode_hard_state(P, &HardState { term: 1, voted_for: Some(NodeId(1)), commit: 4 });
    record[9] ^= 0x10;
    raw_put(dir.path(), &hard_state_key(P), &record);

    let wal = RocksWal::open(dir.path()).expect("reopen");
    expect_corrupt(wal.load_hard_state(P), P, 0, "flipped hard state");
    assert_eq!(wal.load_hard_state(Q).unwrap(), Some(HardState { term: 2, voted_for: None, commit: 3 }));
    assert_eq!(wal.read_range(P, 1, 5).unwrap().len(), 5, "entries are unaffected");
    drop(wal);

    // A hard state of another partition, copied under P's key.
    raw_put(dir.path(), &hard_state_key(P), &encode_hard_state(Q, &HardState::default()));
    let wal = RocksWal::open(dir.path()).expect("reopen");
    expect_corrupt(wal.load_hard_state(P), P, 0, "misplaced hard state");

    // Saving a new hard state repairs it.
    let state = HardState { term: 5, voted_for: None, commit: 5 };
    wal.save_hard_state(P, &state).unwrap();
    assert_eq!(wal.load_hard_state(P).unwrap(), Some(state));
}

#[test]
fn malformed_key_in_a_partition_range_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    // Sorts after every well-formed key of P (index < 0xffff…), so it is what last_index finds.
    let mut key = entry_key(P, 0)[..5].to_vec();
    key.extend_from_slice(&[0xff, 0xff]);
    raw_put(dir.path(), &key, b"junk");

    let wal = RocksWal::open(dir.path()).expect("reopen");
    expect_corrupt(wal.last_index(P), P, 0, "last_index");
    expect_corrupt(wal.read_range(P, 1, LogIndex::MAX), P, 0, "read_range");
    // partitions() only looks at the first key of each partition, which is well formed here.
    assert_eq!(wal.partitions().unwrap(), vec![P, Q]);
    assert_eq!(wal.last_index(Q).unwrap(), 3, "Q is unaffected");
}

#[test]
fn one_write_for_50_partitions_is_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let wal = RocksWal::open(dir.path()).expect("open");
    assert_eq!((wal.syncs(), wal.entries_written()), (0, 0));

    let ids: Vec<PartitionId> = (0..50).map(|i| PartitionId(i * 3 + 1)).collect();
    let writes = ids
        .iter()
        .map(|&p| PartitionWrite {
            hard_state: Some(HardState { term: 1, voted_for: Some(NodeId(1)), commit: 2 }),
            ..append(p, 1, 4)
        })
        .collect();
    wal.write(&WalBatch { writes }).expect("group write");
    assert_eq!(wal.syncs(), 1, "one write for 50 partitions must be one synced RocksDB write");
    assert_eq!(wal.entries_written(), 200);

    // A second group write, with suffix replacements, is again one sync.
    let writes = ids.iter().map(|&p| append(p, 3, 6)).collect();
    wal.write(&WalBatch { writes }).expect("second group write");
    assert_eq!((wal.syncs(), wal.entries_written()), (2, 400));

    // Writes that change nothing, and rejected batches, do not sync.
    wal.write(&WalBatch::default()).unwrap();
    wal.write(&WalBatch { writes: vec![PartitionWrite { partition: P, ..PartitionWrite::default() }] }).unwrap();
    let rejected = wal.write(&WalBatch { writes: vec![append(P, 1, 1), append(Q, 9, 9)] });
    assert!(matches!(rejected, Err(WalError::NonContiguous { .. })), "{rejected:?}");
    wal.truncate_suffix(P, 100).unwrap();
    assert_eq!((wal.syncs(), wal.entries_written()), (2, 400));

    // Single-partition calls are one sync each.
    wal.truncate_suffix(P, 6).unwrap();
    wal.save_hard_state(P, &HardState::default()).unwrap();
    assert_eq!(wal.syncs(), 4);

    drop(wal);
    let wal = RocksWal::open(dir.path()).expect("reopen");
    assert_eq!(wal.partitions().unwrap(), ids);
    for &p in &ids {
        let expected = if p == P { 5 } else { 6 };
        assert_eq!(wal.last_index(p).unwrap(), expected, "partition {p}");
        assert_eq!(
            wal.read_range(p, 1, LogIndex::MAX).unwrap(),
            (1..=expected).map(|i| entry(i, 1)).collect::<Vec<_>>()
        );
    }
    assert_eq!((wal.syncs(), wal.entries_written()), (0, 0), "counters are per handle");
}

#[test]
fn a_database_open_elsewhere_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let wal = RocksWal::open(dir.path()).expect("open");
    match RocksWal::open(dir.path()) {
        Err(WalError::Io(message)) => assert!(!message.is_empty()),
        other => panic!("expected Io for a locked database, got {other:?}"),
    }
    assert_eq!(wal.path(), dir.path());
}

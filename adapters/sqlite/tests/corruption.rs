//! Physical corruption of the database while the WAL is closed (reliability plan §3.3 item 2):
//! every damaged record must come back as `WalError::Corrupt` for its partition and index, a
//! damaged file must fail with a typed error (never a panic), and a torn `-wal` tail must recover
//! to a committed prefix.

use kommander_core::conformance::wal::entry;
use kommander_core::{HardState, LogEntry, LogIndex, NodeId, PartitionId, PartitionWrite, Wal, WalBatch, WalError};
use kommander_wal_sqlite::SqliteWal;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

const P: PartitionId = PartitionId(1);
const Q: PartitionId = PartitionId(2);
const R: PartitionId = PartitionId(3);

/// The index of `Q` whose payload is the marker.
const MARKED: LogIndex = 5;

fn marker() -> Vec<u8> {
    b"<kommander-corruption-marker>".iter().copied().cycle().take(64).collect()
}

fn append(partition: PartitionId, entries: Vec<LogEntry>) -> PartitionWrite {
    PartitionWrite { partition, entries, ..PartitionWrite::default() }
}

fn expected(partition: PartitionId) -> Vec<LogEntry> {
    (1..=10)
        .map(|i| {
            let mut e = entry(i, 1);
            if partition == Q && i == MARKED {
                e.payload = marker().into();
            }
            e
        })
        .collect()
}

/// A distinctive hard state: its bytes can be found in the file.
fn marked_hard_state() -> HardState {
    HardState { term: 0x1122_3344_5566_7788, voted_for: Some(NodeId(0x0102_0304_0506_0708)), commit: 9 }
}

fn plain_hard_state() -> HardState {
    HardState { term: 3, voted_for: None, commit: 10 }
}

/// A closed database holding `expected(p)` for P, Q and R, the marked hard state for R and a plain
/// one for P, checkpointed so that everything is in the main file.
fn populated_db(dir: &Path) -> PathBuf {
    let path = dir.join("wal.db");
    let wal = SqliteWal::open(&path).unwrap();
    wal.write(&WalBatch { writes: vec![append(P, expected(P)), append(Q, expected(Q))] }).unwrap();
    wal.write(&WalBatch { writes: vec![append(R, expected(R))] }).unwrap();
    wal.save_hard_state(P, &plain_hard_state()).unwrap();
    wal.save_hard_state(R, &marked_hard_state()).unwrap();
    drop(wal);
    checkpoint(&path);
    path
}

/// Move everything from the `-wal` file into the main file and empty the `-wal` file.
fn checkpoint(path: &Path) {
    let conn = Connection::open(path).unwrap();
    let (busy, _, _): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    assert_eq!(busy, 0, "checkpoint blocked");
    drop(conn);
    let wal_file = PathBuf::from(format!("{}-wal", path.display()));
    assert!(std::fs::metadata(&wal_file).map_or(true, |m| m.len() == 0), "the -wal file must be empty");
}

/// Flip one bit in the middle of every occurrence of `needle` in the file; returns the count.
fn flip_inside(path: &Path, needle: &[u8]) -> usize {
    let mut bytes = std::fs::read(path).unwrap();
    let hits: Vec<usize> =
        bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
    for &at in &hits {
        bytes[at + needle.len() / 2] ^= 0x10;
    }
    std::fs::write(path, bytes).unwrap();
    hits.len()
}

fn expect_corrupt<T: std::fmt::Debug>(
    result: Result<T, WalError>,
    partition: PartitionId,
    index: LogIndex,
    what: &str,
) {
    match result {
        Err(WalError::Corrupt { partition: p, index: i, reason }) => {
            assert_eq!((p, i), (partition, index), "{what}: wrong position reported ({reason})");
        }
        other => panic!("{what}: expected Corrupt at {partition}/{index}, got {other:?}"),
    }
}

#[test]
fn a_flipped_byte_in_an_entry_record_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_db(dir.path());
    let flipped = flip_inside(&path, &marker());
    assert!(flipped >= 1, "the marker payload must be in the checkpointed database file");

    let wal = SqliteWal::open(&path).unwrap();
    expect_corrupt(wal.read_range(Q, 1, 10), Q, MARKED, "read_range over the record");
    expect_corrupt(wal.read_range(Q, MARKED, MARKED), Q, MARKED, "read_range of the record alone");
    expect_corrupt(wal.read_range(Q, 0, LogIndex::MAX), Q, MARKED, "read_range(0, MAX)");
    expect_corrupt(wal.term_at(Q, MARKED), Q, MARKED, "term_at");
    // Everything around the damaged record still reads, and nothing is skipped or invented.
    assert_eq!(wal.read_range(Q, 1, MARKED - 1).unwrap(), expected(Q)[..4]);
    assert_eq!(wal.read_range(Q, MARKED + 1, 10).unwrap(), expected(Q)[5..]);
    assert_eq!(wal.last_index(Q).unwrap(), 10);
    assert_eq!(wal.read_range(P, 1, 10).unwrap(), expected(P));
    assert_eq!(wal.read_range(R, 1, 10).unwrap(), expected(R));
    assert_eq!(wal.partitions().unwrap(), vec![P, Q, R]);
}

#[test]
fn a_flipped_byte_in_a_hard_state_record_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_db(dir.path());
    let term_bytes = marked_hard_state().term.to_le_bytes();
    assert!(flip_inside(&path, &term_bytes) >= 1, "the hard state must be in the checkpointed database file");

    let wal = SqliteWal::open(&path).unwrap();
    expect_corrupt(wal.load_hard_state(R), R, 0, "load_hard_state");
    assert_eq!(wal.load_hard_state(P).unwrap(), Some(plain_hard_state()));
    assert_eq!(wal.read_range(R, 1, 10).unwrap(), expected(R));
}

#[test]
fn records_rewritten_behind_the_wals_back_are_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_db(dir.path());
    let conn = Connection::open(&path).unwrap();
    let update = |sql: &str| assert_eq!(conn.execute(sql, []).unwrap(), 1, "{sql}");
    // Torn: the record of P/3 loses its last byte.
    update("UPDATE entries SET record = substr(record, 1, length(record) - 1) WHERE partition = 1 AND idx = 3");
    // Misdirected within a partition: P/6 holds the record of P/7.
    update("UPDATE entries SET record = (SELECT record FROM entries WHERE partition = 1 AND idx = 7) WHERE partition = 1 AND idx = 6");
    // Misdirected across partitions: Q/2 holds the record of R/2.
    update("UPDATE entries SET record = (SELECT record FROM entries WHERE partition = 3 AND idx = 2) WHERE partition = 2 AND idx = 2");
    // Not a blob at all.
    update("UPDATE entries SET record = 'text' WHERE partition = 3 AND idx = 8");
    update("UPDATE entries SET record = 42 WHERE partition = 3 AND idx = 9");
    // The hard state of P moved to R.
    update("UPDATE hard_state SET record = (SELECT record FROM hard_state WHERE partition = 1) WHERE partition = 3");
    drop(conn);

    let wal = SqliteWal::open(&path).unwrap();
    expect_corrupt(wal.read_range(P, 1, 10), P, 3, "torn record");
    expect_corrupt(wal.term_at(P, 3), P, 3, "term_at of the torn record");
    expect_corrupt(wal.read_range(P, 4, 10), P, 6, "record of another index");
    assert_eq!(wal.term_at(P, 7).unwrap(), Some(1), "the source of the copy is intact");
    expect_corrupt(wal.read_range(Q, 1, 10), Q, 2, "record of another partition");
    expect_corrupt(wal.read_range(R, 3, 10), R, 8, "text record");
    expect_corrupt(wal.term_at(R, 9), R, 9, "integer record");
    expect_corrupt(wal.load_hard_state(R), R, 0, "hard state of another partition");
    assert_eq!(wal.load_hard_state(P).unwrap(), Some(plain_hard_state()));
}

/// Open `path` and read everything through the WAL; returns the first error. Must never panic.
fn open_and_read_everything(path: &Path) -> Result<(), WalError> {
    let wal = SqliteWal::open(path)?;
    for p in [P, Q, R] {
        wal.last_index(p)?;
        wal.read_range(p, 0, LogIndex::MAX)?;
        wal.term_at(p, 10)?;
        wal.load_hard_state(p)?;
    }
    wal.partitions()?;
    Ok(())
}

#[test]
fn a_garbage_database_file_fails_open_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    let garbage: Vec<u8> = (0..16_384u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&path, garbage).unwrap();
    match SqliteWal::open(&path) {
        Err(WalError::Io(message)) => assert!(message.contains("corrupt database"), "{message}"),
        other => panic!("expected Io(corrupt database ...), got {other:?}"),
    }
}

#[test]
fn a_truncated_database_file_fails_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Enough entries for a multi-page B-tree.
    let path = dir.path().join("wal.db");
    let wal = SqliteWal::open(&path).unwrap();
    let big: Vec<LogEntry> = (1..=500).map(|i| entry(i, 1)).collect();
    wal.write(&WalBatch { writes: vec![append(P, big.clone()), append(Q, big)] }).unwrap();
    wal.save_hard_state(R, &plain_hard_state()).unwrap();
    drop(wal);
    checkpoint(&path);
    let full = std::fs::read(&path).unwrap();
    assert!(full.len() > 16 * 4096, "expected a multi-page database, got {} bytes", full.len());

    // Not 0 or 1 byte: SQLite's unix VFS treats a 1-byte file like an empty one (a workaround it
    // applies to every file), and an empty file is a new, empty database; losing the whole file
    // is indistinguishable from a fresh node at this layer.
    let mut outcomes = Vec::new();
    for keep in [full.len() / 2, full.len() / 4, 4096, 1024, 100, 50, 2] {
        let copy = dir.path().join(format!("truncated-{keep}.db"));
        std::fs::write(&copy, &full[..keep]).unwrap();
        let outcome = open_and_read_everything(&copy);
        assert!(
            matches!(outcome, Err(WalError::Io(_) | WalError::Corrupt { .. })),
            "a database truncated to {keep} bytes must fail with a typed error, got {outcome:?}"
        );
        outcomes.push(format!("{keep} bytes: {}", outcome.unwrap_err()));
    }
    println!("truncated database outcomes:\n  {}", outcomes.join("\n  "));
}

/// Zeroed pages keep the file's size and header valid, so damage is found only when a read (or
/// the first write transaction) reaches them: still a typed error, never a panic or a silent gap.
#[test]
fn zeroed_pages_fail_reads_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let wal = SqliteWal::open(&path).unwrap();
    let big: Vec<LogEntry> = (1..=500).map(|i| entry(i, 1)).collect();
    wal.write(&WalBatch { writes: vec![append(P, big.clone()), append(Q, big)] }).unwrap();
    drop(wal);
    checkpoint(&path);
    let full = std::fs::read(&path).unwrap();
    let pages = full.len() / 4096;
    let mut outcomes = Vec::new();
    // Pointer-map pages (page 2 and every 820th after it with 4 KiB pages: the file uses
    // auto_vacuum=INCREMENTAL) hold no log data, only where pages live for the vacuum.
    let pointer_map = |number: usize| number >= 2 && (number - 2) % (4096 / 5 + 1) == 0;
    for page in (1..pages).filter(|&p| !pointer_map(p + 1)) {
        let mut damaged = full.clone();
        damaged[page * 4096..(page + 1) * 4096].fill(0);
        let copy = dir.path().join(format!("zeroed-{page}.db"));
        std::fs::write(&copy, &damaged).unwrap();
        let outcome = open_and_read_everything(&copy);
        assert!(outcome.is_err(), "zeroing page {} of {pages} went unnoticed", page + 1);
        outcomes.push(outcome.unwrap_err());
    }
    let corrupt = outcomes.iter().filter(|e| matches!(e, WalError::Corrupt { .. })).count();
    println!(
        "zeroed pages: {} damaged copies, {corrupt} reported as Corrupt, {} as Io; e.g. {}",
        outcomes.len(),
        outcomes.len() - corrupt,
        outcomes[outcomes.len() / 2]
    );
}

/// Copy the database and its `-wal` file while the WAL is open and idle (the image a crash would
/// leave), then cut the copied `-wal` file at many points: every cut must open to a prefix of the
/// committed batches, each batch whole, nothing corrupt.
#[test]
fn a_torn_wal_file_tail_recovers_to_a_committed_prefix() {
    const BATCHES: u64 = 20;
    const PER_BATCH: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let wal = SqliteWal::open(&path).unwrap();
    for b in 0..BATCHES {
        let entries: Vec<LogEntry> = (b * PER_BATCH + 1..=(b + 1) * PER_BATCH).map(|i| entry(i, 1)).collect();
        let state = HardState { term: 1, voted_for: None, commit: (b + 1) * PER_BATCH };
        wal.write(&WalBatch {
            writes: vec![
                append(P, entries.clone()),
                PartitionWrite {
                    partition: Q,
                    truncate_from: None,
                    entries,
                    hard_state: Some(state),
                    ..Default::default()
                },
            ],
        })
        .unwrap();
    }
    let main_image = std::fs::read(&path).unwrap();
    let wal_image = std::fs::read(format!("{}-wal", path.display())).unwrap();
    drop(wal);
    assert!(wal_image.len() > 32, "the batches must still be in the -wal file");

    let mut cuts: Vec<usize> = (0..=16).map(|k| wal_image.len() * k / 16).collect();
    cuts.extend([32, 33, 4096 + 32, 4096 + 56, wal_image.len() - 1]);
    let mut recovered = Vec::new();
    for cut in cuts {
        let case = dir.path().join(format!("cut-{cut}"));
        std::fs::create_dir(&case).unwrap();
        let copy = case.join("wal.db");
        std::fs::write(&copy, &main_image).unwrap();
        std::fs::write(case.join("wal.db-wal"), &wal_image[..cut]).unwrap();

        let wal = SqliteWal::open(&copy).unwrap_or_else(|e| panic!("cut at {cut}: open failed: {e}"));
        let last = wal.last_index(P).unwrap();
        assert_eq!(last % PER_BATCH, 0, "cut at {cut}: a batch was applied in part");
        assert_eq!(wal.last_index(Q).unwrap(), last, "cut at {cut}: the partitions of one batch diverge");
        let all: Vec<LogEntry> = (1..=last).map(|i| entry(i, 1)).collect();
        assert_eq!(wal.read_range(P, 1, LogIndex::MAX).unwrap(), all, "cut at {cut}");
        assert_eq!(wal.read_range(Q, 1, LogIndex::MAX).unwrap(), all, "cut at {cut}");
        let state = wal.load_hard_state(Q).unwrap();
        assert_eq!(state.map_or(0, |s| s.commit), last, "cut at {cut}: hard state out of step with entries");
        if cut == wal_image.len() {
            assert_eq!(last, BATCHES * PER_BATCH, "the whole -wal file must recover every batch");
        }
        recovered.push((cut, last / PER_BATCH));
    }
    recovered.sort();
    assert!(
        recovered.windows(2).all(|w| w[0].1 <= w[1].1),
        "a longer -wal prefix recovered fewer batches: {recovered:?}"
    );
    println!("torn -wal recovery (cut bytes, batches recovered): {recovered:?}");
}

//! A full disk under the real WAL backends: the test mounts a small tmpfs (root only), writes
//! until the file system is full, and checks that the failing write gives a clear I/O error and
//! stores nothing, that every acknowledged entry reads back intact, and that once space returns
//! (the tmpfs is remounted larger) the WAL writes again and holds everything. The SQLite WAL
//! fences itself after a failed commit (it never retries a write whose durability it cannot know:
//! the fsyncgate lesson) and writes again once reopened, which is what a node restart does.
//!
//! SQLite always; RocksDB with `--features rocksdb`. Without permission to mount, the test prints
//! `NOT RUN` and passes, except when `KOMMANDER_REQUIRE_TMPFS` is set (`.ci/run` sets it).

use kommander::core::conformance::wal::entry;
use kommander::core::{LogIndex, PartitionId, PartitionWrite, Wal, WalBatch, WalError};
use kommander::{open_wal, WalBackend};
use std::path::{Path, PathBuf};
use std::process::Command;

const P: PartitionId = PartitionId(1);
const BATCH: u64 = 50;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var_os("KOMMANDER_REQUIRE_TMPFS").is_none(),
                "KOMMANDER_REQUIRE_TMPFS is set but a tmpfs could not be mounted (needs root)"
            );
            println!("NOT RUN: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs { path, _dir: dir })
    }

    fn resize(&self, size: &str) {
        let status =
            Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.path).status().unwrap();
        assert!(status.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn batch(from: LogIndex) -> WalBatch {
    let entries = (from..from + BATCH)
        .map(|i| {
            let mut e = entry(i, 1);
            e.payload = vec![(i % 251) as u8; 1_000].into();
            e
        })
        .collect();
    WalBatch { writes: vec![PartitionWrite { partition: P, entries, ..Default::default() }] }
}

fn expect_intact(wal: &dyn Wal, through: LogIndex, what: &str) {
    assert_eq!(wal.last_index(P).unwrap(), through, "{what}: last index");
    let stored = wal.read_range(P, 1, through).unwrap();
    assert_eq!(stored.len() as u64, through, "{what}: entries");
    for (i, e) in (1..).zip(&stored) {
        assert_eq!(e.index, i, "{what}: index");
        assert_eq!(e.payload.as_ref(), vec![(i % 251) as u8; 1_000].as_slice(), "{what}: entry {i} changed");
    }
}

fn full_disk_round(backend: impl Fn(&Path) -> WalBackend, name: &str) {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let backend = backend(&fs.path);
    let wal = open_wal(&backend).unwrap_or_else(|e| panic!("{name}: open on the tmpfs: {e}"));
    let mut acked: LogIndex = 0;
    let error = loop {
        match wal.write(&batch(acked + 1)) {
            Ok(()) => acked += BATCH,
            Err(error) => break error,
        }
        assert!(acked < 100_000, "{name}: a 4 MiB file system never filled up");
    };
    println!("{name}: full after {acked} entries: {error}");
    assert!(matches!(error, WalError::Io(_)), "{name}: a full disk must be an I/O error, got {error:?}");
    expect_intact(wal.as_ref(), acked, &format!("{name} after the failed write"));

    // Space returns: the same WAL takes the write that failed, and more.
    fs.resize("64m");
    let mut retried = None;
    for _ in 0..3 {
        match wal.write(&batch(acked + 1)) {
            Ok(()) => {
                retried = Some(());
                break;
            }
            Err(error) => println!("{name}: write after the space returned: {error}"),
        }
    }
    match retried {
        Some(()) => {
            acked += BATCH;
            wal.write(&batch(acked + 1)).unwrap_or_else(|e| panic!("{name}: write with space: {e}"));
            acked += BATCH;
            expect_intact(wal.as_ref(), acked, &format!("{name} after space returned"));
            drop(wal);
        }
        None => {
            // The backend stays failed until reopened (RocksDB keeps a background error).
            drop(wal);
        }
    }
    let reopened = open_wal(&backend).unwrap_or_else(|e| panic!("{name}: reopen: {e}"));
    expect_intact(reopened.as_ref(), acked, &format!("{name} reopened"));
    reopened.write(&batch(acked + 1)).unwrap_or_else(|e| panic!("{name}: write after reopening: {e}"));
    expect_intact(reopened.as_ref(), acked + BATCH, &format!("{name} reopened and written"));
}

#[test]
fn sqlite_on_a_full_disk_fails_clearly_keeps_its_data_and_recovers_when_space_returns() {
    full_disk_round(|dir| WalBackend::Sqlite(dir.join("wal.sqlite")), "sqlite");
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_on_a_full_disk_fails_clearly_keeps_its_data_and_recovers_when_space_returns() {
    full_disk_round(|dir| WalBackend::RocksDb(dir.join("wal.rocksdb")), "rocksdb");
}

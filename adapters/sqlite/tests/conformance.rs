//! The WAL conformance suite of `kommander-core`, unchanged, against `SqliteWal` on real files.

use kommander_core::conformance::wal::{run_all, WalFactory};
use kommander_wal_sqlite::SqliteWal;
use tempfile::TempDir;

/// Each `create` opens a new database file in the factory's temporary directory; `reopen` closes
/// the WAL (dropping it) and opens the same file again, as a restarted process would.
struct SqliteFactory {
    dir: TempDir,
    created: usize,
}

impl WalFactory for SqliteFactory {
    type Wal = SqliteWal;

    fn create(&mut self) -> SqliteWal {
        self.created += 1;
        let path = self.dir.path().join(format!("case-{}.db", self.created));
        assert!(!path.exists(), "fresh storage must not exist yet");
        SqliteWal::open(&path).expect("open a fresh sqlite wal")
    }

    fn reopen(&mut self, wal: SqliteWal) -> SqliteWal {
        let path = wal.path().to_path_buf();
        drop(wal);
        SqliteWal::open(&path).expect("reopen the sqlite wal")
    }
}

#[test]
fn sqlite_wal_passes_the_conformance_suite() {
    let dir =
        tempfile::Builder::new().prefix("sqlite-wal-conformance").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut factory = SqliteFactory { dir, created: 0 };
    run_all(&mut factory);
    println!("conformance: {} storages created, every case passed", factory.created);
}

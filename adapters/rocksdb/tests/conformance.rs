//! The WAL conformance suite of `kommander-core`, unchanged, against [`RocksWal`] on temporary
//! directories. "Reopen" drops the handle (closing the database and releasing its lock) and opens
//! the same directory again, as a restarted process would.

use kommander_core::conformance::wal::{run_all, WalFactory};
use kommander_wal_rocksdb::RocksWal;
use tempfile::TempDir;

/// Hands out a fresh database directory under one temporary root per `create`.
struct RocksFactory {
    root: TempDir,
    created: usize,
}

impl WalFactory for RocksFactory {
    type Wal = RocksWal;

    fn create(&mut self) -> RocksWal {
        self.created += 1;
        let path = self.root.path().join(format!("wal-{}", self.created));
        RocksWal::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }

    fn reopen(&mut self, wal: RocksWal) -> RocksWal {
        let path = wal.path().to_path_buf();
        drop(wal);
        RocksWal::open(&path).unwrap_or_else(|e| panic!("reopen {}: {e}", path.display()))
    }
}

#[test]
fn rocks_wal_passes_the_wal_conformance_suite() {
    let mut factory = RocksFactory { root: tempfile::tempdir().expect("temp dir"), created: 0 };
    run_all(&mut factory);
    assert!(factory.created > 0, "the suite opened no storage");
}

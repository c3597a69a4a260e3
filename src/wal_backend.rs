//! Choosing a WAL: cargo features decide which backends are compiled in (`sqlite` by default,
//! `rocksdb` opt-in), [`WalBackend`] picks one at run time, and [`open_wal`] opens it.

use kommander_core::{MemoryWal, Wal, WalError};
use std::path::PathBuf;
use std::sync::Arc;

/// A WAL backend and where it keeps its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalBackend {
    /// In memory: nothing survives the process (tests, demos).
    Memory,
    /// SQLite database file (feature `sqlite`, on by default).
    #[cfg(feature = "sqlite")]
    Sqlite(PathBuf),
    /// RocksDB directory (feature `rocksdb`).
    #[cfg(feature = "rocksdb")]
    RocksDb(PathBuf),
}

impl WalBackend {
    /// Parse `memory`, `sqlite` or `rocksdb` with a directory for the files; `file_stem` names the
    /// node's database inside it.
    pub fn from_name(name: &str, dir: impl Into<PathBuf>, file_stem: &str) -> Result<Self, String> {
        let dir = dir.into();
        match name {
            "memory" => Ok(WalBackend::Memory),
            #[cfg(feature = "sqlite")]
            "sqlite" => Ok(WalBackend::Sqlite(dir.join(format!("{file_stem}.sqlite")))),
            #[cfg(feature = "rocksdb")]
            "rocksdb" => Ok(WalBackend::RocksDb(dir.join(format!("{file_stem}.rocksdb")))),
            other => {
                let _ = (dir, file_stem);
                Err(format!("unknown or not compiled-in WAL backend {other:?} (features: sqlite, rocksdb)"))
            }
        }
    }
}

/// Open (creating if needed) the WAL described by `backend`.
pub fn open_wal(backend: &WalBackend) -> Result<Arc<dyn Wal>, WalError> {
    Ok(match backend {
        WalBackend::Memory => Arc::new(MemoryWal::new()),
        #[cfg(feature = "sqlite")]
        WalBackend::Sqlite(path) => Arc::new(kommander_wal_sqlite::SqliteWal::open(path)?),
        #[cfg(feature = "rocksdb")]
        WalBackend::RocksDb(path) => Arc::new(kommander_wal_rocksdb::RocksWal::open(path)?),
    })
}

/// Builder shortcut: `RaftManager::builder(id).wal_backend(&WalBackend::Sqlite(path))?`.
pub trait WalBackendExt: Sized {
    /// Open `backend` and use it as the node's WAL.
    fn wal_backend(self, backend: &WalBackend) -> Result<Self, WalError>;
}

impl WalBackendExt for kommander_actors::RaftManagerBuilder {
    fn wal_backend(self, backend: &WalBackend) -> Result<Self, WalError> {
        Ok(self.wal(open_wal(backend)?))
    }
}

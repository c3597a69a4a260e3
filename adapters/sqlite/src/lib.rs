//! `kommander-wal-sqlite`: a durable, checksummed, group-committed [`Wal`] on one SQLite database
//! file (SQLite is compiled in, `rusqlite`'s `bundled` feature).
//!
//! # What it owns
//!
//! [`SqliteWal`] owns one database file and SQLite's companions beside it (`<file>-wal` and
//! `<file>-shm`). Nothing else may write to them. The schema is two tables:
//!
//! * `entries(partition INTEGER NOT NULL, idx INTEGER NOT NULL, record BLOB NOT NULL,
//!   PRIMARY KEY(partition, idx)) WITHOUT ROWID`: one row per log entry, clustered by
//!   (partition, index) so range reads and "last index" are B-tree seeks;
//! * `hard_state(partition INTEGER PRIMARY KEY, record BLOB NOT NULL)`: the last hard state of
//!   each partition;
//! * `snapshots(partition INTEGER PRIMARY KEY, record BLOB NOT NULL)`: each compacted
//!   partition's floor and latest snapshot meta (a [`SnapshotRecord`]), written in the same
//!   transaction as the compaction it allows.
//!
//! Compaction deletes the entries at or below the floor (one range `DELETE`); the database runs
//! with `auto_vacuum=INCREMENTAL` (set when the file is created), and a write that compacted ends
//! with `PRAGMA incremental_vacuum`, so the freed pages go back to the file system at the next
//! checkpoint instead of only to SQLite's free list.
//!
//! Every `record` is a checksummed record of [`kommander_core::codec`], whose CRC32C covers the
//! content **and the position** (partition and index). SQLite has no page checksums, so every read
//! decodes and verifies its records: a flipped, torn or misplaced record comes back as
//! [`WalError::Corrupt`] for that partition and index, never skipped and never turned into a
//! different entry. `PRAGMA user_version` records the schema version (2; a version-1 file gains
//! the `snapshots` table when opened).
//!
//! # Durability
//!
//! The database runs with `journal_mode=WAL` and `synchronous=FULL`. In WAL mode a commit appends
//! the transaction's pages to the `-wal` file; with `FULL`, SQLite fsyncs the `-wal` file at every
//! commit before the commit returns, so a transaction whose `COMMIT` returned survives a process
//! crash *and* a power loss. (With `NORMAL`, WAL mode syncs only at checkpoints: the last
//! committed transactions can be lost on power loss, which would break "acknowledged ⇒ durable".)
//! A checkpoint syncs the main file before the `-wal` file is reused, and SQLite syncs the
//! directory when it creates the `-wal` file; [`SqliteWal::open`] also syncs the directory after
//! creating a new database file, so the file itself cannot vanish after a power loss.
//!
//! Each [`Wal::write`] is **one** SQLite transaction covering every partition of the batch (group
//! commit: one sync for the whole batch). Every [`PartitionWrite`] is validated with
//! [`plan_partition_write`] inside that transaction, against the last index its partition has
//! after the earlier writes of the same batch; on any error the transaction is rolled back, so a
//! rejected or failed batch changes nothing. [`Wal::truncate_suffix`] and
//! [`Wal::save_hard_state`] are one transaction each.
//!
//! # Fail-stop after a storage failure
//!
//! When a write transaction fails with a storage error (I/O, full disk, failed sync, corruption),
//! the instance *fences itself*: every later write, truncation or hard-state save returns
//! [`WalError::Io`] until the WAL is reopened (reads keep working). A failed sync is never retried
//! as if nothing had happened: after a failed `fsync` the kernel may have dropped the dirty pages,
//! and the frames of the failed commit may or may not be found on recovery, so only a reopen
//! (which re-reads what is really stored, as a process restart does) may continue: closing the
//! instance and opening the file again, or [`Wal::reopen`] on the running instance, which replaces
//! both connections with new ones and clears the fence (the runtime calls it after a failed write,
//! before its partitions re-read their logs, so a node recovers from a full disk once space
//! returns, without a restart). Rejected batches ([`WalError::NonContiguous`],
//! [`WalError::Compacted`]) do not fence.
//!
//! # Errors
//!
//! SQLite errors map to [`WalError::Io`], except SQLite's own corruption reports
//! (`SQLITE_CORRUPT` "database disk image is malformed", `SQLITE_NOTADB`) met while reading or
//! writing the rows of a known partition, which map to [`WalError::Corrupt`] for that partition
//! (index: the first index the operation touched, 0 when none). Corruption found where no single
//! partition is involved (opening the file, `BEGIN`/`COMMIT`, listing partitions) maps to
//! [`WalError::Io`] with a message starting `corrupt database`: the fields of `Corrupt` would
//! name a partition that is not known to be the damaged one.
//!
//! # Concurrency
//!
//! Writes go through one write connection behind a `Mutex`; reads use a separate read-only
//! connection behind its own `Mutex`. WAL mode lets the reader run while a write transaction is in
//! progress; each read is one statement and so sees one consistent snapshot that includes every
//! transaction committed before it started, i.e. every `write` that has returned.

#![warn(missing_docs)]

use kommander_core::codec::{
    decode_entry, decode_hard_state, decode_snapshot_record, encode_entry, encode_hard_state, encode_snapshot_record,
    SnapshotRecord,
};
use kommander_core::wal::{plan_partition_write, LogBounds};
use kommander_core::{
    HardState, LogEntry, LogIndex, PartitionId, PartitionWrite, SnapshotMeta, Term, Wal, WalBatch, WalError,
};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Schema version stored in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS entries (
        partition INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        record BLOB NOT NULL,
        PRIMARY KEY (partition, idx)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS hard_state (
        partition INTEGER PRIMARY KEY,
        record BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS snapshots (
        partition INTEGER PRIMARY KEY,
        record BLOB NOT NULL
    );
";

const SQL_DELETE_THROUGH: &str = "DELETE FROM entries WHERE partition = ?1 AND idx <= ?2";
const SQL_UPSERT_SNAPSHOT: &str = "INSERT INTO snapshots (partition, record) VALUES (?1, ?2) \
     ON CONFLICT (partition) DO UPDATE SET record = excluded.record";
const SQL_LOAD_SNAPSHOT: &str = "SELECT record FROM snapshots WHERE partition = ?1";

const SQL_LAST_INDEX: &str = "SELECT idx FROM entries WHERE partition = ?1 ORDER BY idx DESC LIMIT 1";
const SQL_DELETE_FROM: &str = "DELETE FROM entries WHERE partition = ?1 AND idx >= ?2";
const SQL_INSERT_ENTRY: &str = "INSERT INTO entries (partition, idx, record) VALUES (?1, ?2, ?3)";
const SQL_UPSERT_HARD_STATE: &str = "INSERT INTO hard_state (partition, record) VALUES (?1, ?2) \
     ON CONFLICT (partition) DO UPDATE SET record = excluded.record";
const SQL_READ_RANGE: &str =
    "SELECT idx, record FROM entries WHERE partition = ?1 AND idx BETWEEN ?2 AND ?3 ORDER BY idx";
const SQL_READ_ONE: &str = "SELECT record FROM entries WHERE partition = ?1 AND idx = ?2";
const SQL_LOAD_HARD_STATE: &str = "SELECT record FROM hard_state WHERE partition = ?1";
/// Distinct partitions of `entries` by skip-scan (one B-tree seek per partition, not a scan of
/// every entry), plus every partition with a hard state.
const SQL_PARTITIONS: &str = "
    WITH RECURSIVE seen(p) AS (
        SELECT (SELECT MIN(partition) FROM entries)
        UNION ALL
        SELECT (SELECT MIN(partition) FROM entries WHERE partition > seen.p) FROM seen WHERE seen.p IS NOT NULL
    )
    SELECT p FROM seen WHERE p IS NOT NULL
    UNION
    SELECT partition FROM hard_state
    UNION
    SELECT partition FROM snapshots";

/// A durable [`Wal`] on one SQLite database file. See the [crate documentation](crate) for the
/// schema, the durability argument and the error mapping.
///
/// `Send + Sync`: share it between threads behind an `Arc`.
pub struct SqliteWal {
    path: PathBuf,
    // Field order matters: fields drop in declaration order, so the read connection closes first
    // and the write connection, closing last, checkpoints the `-wal` file into the database.
    reader: Mutex<Connection>,
    writer: Mutex<Connection>,
    /// Set by the first storage failure of a write transaction; every later write is refused
    /// until [`Wal::reopen`] clears it.
    fence: Mutex<Option<String>>,
    syncs: AtomicU64,
    entries_written: AtomicU64,
}

impl SqliteWal {
    /// Open the WAL stored at `path`, creating the database file (and its schema) if it does not
    /// exist. The parent directory must exist.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] when the file cannot be opened or created, is not a SQLite database (the
    /// message then starts `corrupt database`), has an unknown schema version, or refuses WAL
    /// journal mode.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WalError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let existed = path.try_exists().map_err(|e| WalError::Io(format!("{shown}: {e}")))?;
        let writer = open_writer(&path, &shown)?;
        if !existed {
            sync_parent_dir(&path)?;
        }
        let reader = open_reader(&path, &shown)?;
        tracing::debug!(path = %shown, created = !existed, "opened sqlite wal");
        Ok(SqliteWal {
            path,
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
            fence: Mutex::new(None),
            syncs: AtomicU64::new(0),
            entries_written: AtomicU64::new(0),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of write transactions committed by this instance (each one sync of the `-wal` file,
    /// unless it changed nothing): successful [`Wal::write`] calls that carried at least one
    /// non-empty write, plus successful [`Wal::truncate_suffix`] and [`Wal::save_hard_state`]
    /// calls. A batch of any number of partitions counts once (group commit).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Total entries carried by successful [`Wal::write`] calls of this instance, including
    /// entries that replaced a stored suffix.
    pub fn entries_written(&self) -> u64 {
        self.entries_written.load(Ordering::Relaxed)
    }

    /// True once a storage failure has fenced this instance (see the crate documentation): every
    /// later write fails until the WAL is reopened.
    pub fn is_fenced(&self) -> bool {
        self.lock_fence().is_some()
    }

    fn lock_fence(&self) -> MutexGuard<'_, Option<String>> {
        self.fence.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held dropped the open `Transaction`, which rolled back.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_fence(&self) -> Result<(), WalError> {
        match self.lock_fence().as_ref() {
            Some(reason) => Err(WalError::Io(format!(
                "wal {} is fenced after an earlier storage failure ({reason}); reopen it to continue",
                self.path.display()
            ))),
            None => Ok(()),
        }
    }

    /// Run one write transaction on the write connection; count it on success, fence on a storage
    /// failure.
    fn transact(
        &self,
        what: &str,
        body: impl FnOnce(&Transaction<'_>) -> Result<(), WalError>,
    ) -> Result<(), WalError> {
        let mut conn = self.lock_writer();
        self.check_fence()?;
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error("begin"))?;
            body(&tx)?;
            // On an early return the `Transaction` is dropped, which rolls it back.
            tx.commit().map_err(db_error("commit"))
        })();
        match result {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error @ (WalError::NonContiguous { .. } | WalError::Compacted { .. })) => Err(error),
            Err(error) => {
                let reason = format!("{what}: {error}");
                tracing::error!(path = %self.path.display(), %reason, "sqlite wal write failed; fencing the wal");
                self.lock_fence().get_or_insert(reason);
                Err(error)
            }
        }
    }
}

impl fmt::Debug for SqliteWal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteWal")
            .field("path", &self.path)
            .field("syncs", &self.syncs())
            .field("entries_written", &self.entries_written())
            .field("fence", &*self.lock_fence())
            .finish_non_exhaustive()
    }
}

impl Wal for SqliteWal {
    fn write(&self, batch: &WalBatch) -> Result<(), WalError> {
        if batch.writes.iter().all(PartitionWrite::is_empty) {
            // Nothing to validate (an empty write is always valid) and nothing to make durable.
            return Ok(());
        }
        self.transact("write", |tx| apply_batch(tx, batch))?;
        self.entries_written.fetch_add(batch.entry_count() as u64, Ordering::Relaxed);
        if batch.writes.iter().any(|w| w.compact_through.is_some()) {
            // Return the pages the compaction freed to the file system (auto_vacuum=INCREMENTAL).
            // Not part of the durable write: a failure here only leaves free pages in the file.
            let conn = self.lock_writer();
            if let Err(error) = incremental_vacuum(&conn) {
                tracing::warn!(%error, "incremental vacuum after a compaction failed");
            }
        }
        Ok(())
    }

    fn truncate_suffix(&self, partition: PartitionId, from: LogIndex) -> Result<(), WalError> {
        // 0 means "everything", like 1; an index past i64::MAX is past every stored entry.
        let Some(from) = sql_index(from.max(1)) else {
            return self.check_fence();
        };
        self.transact("truncate_suffix", |tx| {
            let mut stmt = tx.prepare_cached(SQL_DELETE_FROM).map_err(db_error("prepare"))?;
            stmt.execute((partition.0, from)).map_err(partition_error(partition, from as LogIndex, "truncate"))?;
            Ok(())
        })
    }

    fn read_range(&self, partition: PartitionId, from: LogIndex, to: LogIndex) -> Result<Vec<LogEntry>, WalError> {
        let from = from.max(1);
        if from > to {
            return Ok(Vec::new());
        }
        let Some(lo) = sql_index(from) else {
            return Ok(Vec::new());
        };
        let hi = sql_index(to).unwrap_or(i64::MAX);
        let conn = self.lock_reader();
        let mut stmt = conn.prepare_cached(SQL_READ_RANGE).map_err(db_error("prepare"))?;
        // Index reported if SQLite itself finds the database damaged: the next one expected.
        let mut next = from;
        let sqlite_error = |next: LogIndex| partition_error(partition, next, "read_range");
        let mut rows = stmt.query((partition.0, lo, hi)).map_err(sqlite_error(next))?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite_error(next))? {
            let index = stored_index(partition, next, row.get_ref(0).map_err(sqlite_error(next))?)?;
            let record = blob(partition, index, row.get_ref(1).map_err(sqlite_error(index))?)?;
            entries.push(decode_entry(partition, index, record)?);
            next = index.saturating_add(1);
        }
        Ok(entries)
    }

    fn term_at(&self, partition: PartitionId, index: LogIndex) -> Result<Option<Term>, WalError> {
        if index == 0 {
            return Ok(Some(0));
        }
        let Some(key) = sql_index(index) else {
            return Ok(None);
        };
        let conn = self.lock_reader();
        let mut stmt = conn.prepare_cached(SQL_READ_ONE).map_err(db_error("prepare"))?;
        let sqlite_error = partition_error(partition, index, "term_at");
        let mut rows = stmt.query((partition.0, key)).map_err(&sqlite_error)?;
        match rows.next().map_err(&sqlite_error)? {
            Some(row) => {
                let record = blob(partition, index, row.get_ref(0).map_err(&sqlite_error)?)?;
                Ok(Some(decode_entry(partition, index, record)?.term))
            }
            None => Ok(None),
        }
    }

    fn last_index(&self, partition: PartitionId) -> Result<LogIndex, WalError> {
        let conn = self.lock_reader();
        let floor = stored_snapshot_record(&conn, partition)?.compacted_through;
        Ok(stored_last_index(&conn, partition)?.max(floor))
    }

    fn compacted_through(&self, partition: PartitionId) -> Result<LogIndex, WalError> {
        let conn = self.lock_reader();
        Ok(stored_snapshot_record(&conn, partition)?.compacted_through)
    }

    fn load_snapshot(&self, partition: PartitionId) -> Result<Option<SnapshotMeta>, WalError> {
        let conn = self.lock_reader();
        Ok(stored_snapshot_record(&conn, partition)?.meta)
    }

    fn save_hard_state(&self, partition: PartitionId, state: &HardState) -> Result<(), WalError> {
        self.transact("save_hard_state", |tx| put_hard_state(tx, partition, state))
    }

    fn load_hard_state(&self, partition: PartitionId) -> Result<Option<HardState>, WalError> {
        let conn = self.lock_reader();
        let mut stmt = conn.prepare_cached(SQL_LOAD_HARD_STATE).map_err(db_error("prepare"))?;
        let sqlite_error = partition_error(partition, 0, "load_hard_state");
        let mut rows = stmt.query([partition.0]).map_err(&sqlite_error)?;
        match rows.next().map_err(&sqlite_error)? {
            Some(row) => {
                let record = blob(partition, 0, row.get_ref(0).map_err(&sqlite_error)?)?;
                Ok(Some(decode_hard_state(partition, record)?))
            }
            None => Ok(None),
        }
    }

    fn partitions(&self) -> Result<Vec<PartitionId>, WalError> {
        let conn = self.lock_reader();
        let mut stmt = conn.prepare_cached(SQL_PARTITIONS).map_err(db_error("prepare"))?;
        let ids = stmt.query_map([], |row| row.get::<_, i64>(0)).map_err(db_error("partitions"))?;
        let mut partitions = BTreeSet::new();
        for id in ids {
            let id = id.map_err(db_error("partitions"))?;
            let id = u32::try_from(id)
                .map_err(|_| WalError::Io(format!("corrupt database: stored partition id {id} is out of range")))?;
            partitions.insert(PartitionId(id));
        }
        Ok(partitions.into_iter().collect())
    }

    /// Replace both connections with new ones on the same file and clear the fence. The new
    /// connections see what is really stored: every committed transaction, and the failed one
    /// only if SQLite finds it committed (its commit frame made it to the file), exactly as after
    /// a process restart. Holds the write lock throughout, so no write runs meanwhile; reads wait
    /// for the reader swap only.
    fn reopen(&self) -> Result<(), WalError> {
        let shown = self.path.display().to_string();
        let mut writer = self.lock_writer();
        let fresh_writer = open_writer(&self.path, &shown)?;
        let fresh_reader = open_reader(&self.path, &shown)?;
        *self.lock_reader() = fresh_reader;
        *writer = fresh_writer;
        if let Some(reason) = self.lock_fence().take() {
            tracing::warn!(path = %shown, %reason, "sqlite wal reopened after a storage failure; writes resume");
        }
        Ok(())
    }
}

/// Open the write connection on `path` (creating the file and schema when missing) with the
/// durability pragmas set.
fn open_writer(path: &Path, shown: &str) -> Result<Connection, WalError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut writer = Connection::open_with_flags(path, flags).map_err(open_error(shown, "open"))?;
    configure(&writer, shown)?;
    init_schema(&mut writer, shown)?;
    Ok(writer)
}

/// Open the read-only connection on `path`.
fn open_reader(path: &Path, shown: &str) -> Result<Connection, WalError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let reader = Connection::open_with_flags(path, flags).map_err(open_error(shown, "open for reading"))?;
    reader.busy_timeout(BUSY_TIMEOUT).map_err(open_error(shown, "busy_timeout"))?;
    Ok(reader)
}

/// Apply every write of `batch` inside `tx`, validating each against the state the earlier writes
/// of the batch left.
fn apply_batch(tx: &Transaction<'_>, batch: &WalBatch) -> Result<(), WalError> {
    let mut states: HashMap<PartitionId, (LogBounds, SnapshotRecord)> = HashMap::new();
    for write in &batch.writes {
        if write.is_empty() {
            continue;
        }
        let partition = write.partition;
        let (bounds, mut record) = match states.remove(&partition) {
            Some(state) => state,
            None => {
                let record = stored_snapshot_record(tx, partition)?;
                let last = stored_last_index(tx, partition)?.max(record.compacted_through);
                let snapshot_index = record.meta.as_ref().map_or(0, |m| m.index);
                let bounds =
                    LogBounds { last_index: last, compacted_through: record.compacted_through, snapshot_index };
                (bounds, record)
            }
        };
        let plan = plan_partition_write(write, bounds)?;
        if let Some(cut) = plan.cut {
            let key = sql_index(cut).ok_or_else(|| index_out_of_range(partition, cut))?;
            let mut stmt = tx.prepare_cached(SQL_DELETE_FROM).map_err(db_error("prepare"))?;
            stmt.execute((partition.0, key)).map_err(partition_error(partition, cut, "truncate"))?;
        }
        if let Some(through) = plan.compact {
            let key = sql_index(through).unwrap_or(i64::MAX);
            let mut stmt = tx.prepare_cached(SQL_DELETE_THROUGH).map_err(db_error("prepare"))?;
            stmt.execute((partition.0, key)).map_err(partition_error(partition, through, "compact"))?;
        }
        if !write.entries.is_empty() {
            let mut stmt = tx.prepare_cached(SQL_INSERT_ENTRY).map_err(db_error("prepare"))?;
            for entry in &write.entries {
                let key = sql_index(entry.index).ok_or_else(|| index_out_of_range(partition, entry.index))?;
                let encoded = encode_entry(partition, entry);
                stmt.execute((partition.0, key, encoded)).map_err(partition_error(partition, entry.index, "append"))?;
            }
        }
        if plan.compact.is_some() || write.snapshot.is_some() {
            record.compacted_through = plan.after.compacted_through;
            if let Some(meta) = &write.snapshot {
                record.meta = Some(meta.clone());
            }
            let mut stmt = tx.prepare_cached(SQL_UPSERT_SNAPSHOT).map_err(db_error("prepare"))?;
            stmt.execute((partition.0, encode_snapshot_record(partition, &record))).map_err(partition_error(
                partition,
                0,
                "store snapshot meta",
            ))?;
        }
        if let Some(state) = &write.hard_state {
            put_hard_state(tx, partition, state)?;
        }
        states.insert(partition, (plan.after, record));
    }
    Ok(())
}

/// Free every page on SQLite's free list (the statement frees one page per step).
fn incremental_vacuum(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached("PRAGMA incremental_vacuum")?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// The compaction record of `partition` (floor 0 and no meta when none is stored).
fn stored_snapshot_record(conn: &Connection, partition: PartitionId) -> Result<SnapshotRecord, WalError> {
    let mut stmt = conn.prepare_cached(SQL_LOAD_SNAPSHOT).map_err(db_error("prepare"))?;
    let sqlite_error = partition_error(partition, 0, "load snapshot meta");
    let mut rows = stmt.query([partition.0]).map_err(&sqlite_error)?;
    match rows.next().map_err(&sqlite_error)? {
        Some(row) => {
            let record = blob(partition, 0, row.get_ref(0).map_err(&sqlite_error)?)?;
            decode_snapshot_record(partition, record)
        }
        None => Ok(SnapshotRecord::default()),
    }
}

fn put_hard_state(tx: &Transaction<'_>, partition: PartitionId, state: &HardState) -> Result<(), WalError> {
    let mut stmt = tx.prepare_cached(SQL_UPSERT_HARD_STATE).map_err(db_error("prepare"))?;
    stmt.execute((partition.0, encode_hard_state(partition, state))).map_err(partition_error(
        partition,
        0,
        "save hard state",
    ))?;
    Ok(())
}

/// Index of the last stored entry of `partition` (0 when none), on either connection.
fn stored_last_index(conn: &Connection, partition: PartitionId) -> Result<LogIndex, WalError> {
    let mut stmt = conn.prepare_cached(SQL_LAST_INDEX).map_err(db_error("prepare"))?;
    let sqlite_error = partition_error(partition, 0, "last_index");
    let value = stmt.query_row([partition.0], |row| row.get::<_, i64>(0)).optional().map_err(&sqlite_error)?;
    match value {
        None => Ok(0),
        Some(index) if index >= 1 => Ok(index as LogIndex),
        Some(index) => Err(WalError::Corrupt { partition, index: 0, reason: format!("stored entry index {index}") }),
    }
}

/// Set the pragmas of the write connection (busy timeout, durability, sanity checks).
fn configure(conn: &Connection, shown: &str) -> Result<(), WalError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error(shown, "busy_timeout"))?;
    let version: i64 =
        conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(open_error(shown, "user_version"))?;
    if version == 0 {
        // Must be set before the file is first written (before WAL mode and the first table):
        // compacted pages then go back to the file system (`incremental_vacuum`).
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL").map_err(open_error(shown, "auto_vacuum"))?;
    }
    // A `-wal` file larger than this is truncated back after a checkpoint, so a burst (or a
    // compaction) does not leave a large companion file behind.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(open_error(shown, "journal_size_limit"))?;
    // Durability, see the crate documentation: WAL journal, synced at every commit.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open_error(shown, "journal_mode=WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(WalError::Io(format!("{shown}: SQLite refused WAL journal mode (journal mode is {mode})")));
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(open_error(shown, "synchronous=FULL"))?;
    let synchronous: i64 =
        conn.pragma_query_value(None, "synchronous", |row| row.get(0)).map_err(open_error(shown, "synchronous"))?;
    if synchronous != 2 {
        return Err(WalError::Io(format!("{shown}: SQLite refused synchronous=FULL (got {synchronous})")));
    }
    // Cheap extra B-tree sanity checks on every page read, so damage is reported, not misread.
    conn.pragma_update(None, "cell_size_check", true).map_err(open_error(shown, "cell_size_check"))?;
    Ok(())
}

fn init_schema(conn: &mut Connection, shown: &str) -> Result<(), WalError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(open_error(shown, "begin"))?;
    let version: i64 =
        tx.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(open_error(shown, "user_version"))?;
    match version {
        // A new file (auto_vacuum was set before any table existed) or a version-1 file (which
        // gains the snapshots table; it keeps auto_vacuum off, so its freed pages are reused
        // rather than returned).
        0 | 1 => {
            tx.execute_batch(SCHEMA).map_err(open_error(shown, "create schema"))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(open_error(shown, "user_version"))?;
        }
        SCHEMA_VERSION => {}
        other => {
            return Err(WalError::Io(format!(
                "{shown}: unsupported schema version {other} (this build reads version {SCHEMA_VERSION})"
            )))
        }
    }
    tx.commit().map_err(open_error(shown, "commit schema"))
}

/// Make the directory entry of a newly created database file durable.
fn sync_parent_dir(path: &Path) -> Result<(), WalError> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| WalError::Io(format!("sync directory {}: {e}", parent.display())))
}

/// A log index as an SQLite integer, `None` past `i64::MAX` (where no entry can be stored).
fn sql_index(index: LogIndex) -> Option<i64> {
    i64::try_from(index).ok()
}

fn index_out_of_range(partition: PartitionId, index: LogIndex) -> WalError {
    WalError::Io(format!("partition {partition}: index {index} exceeds what SQLite can store"))
}

fn is_corruption(error: &rusqlite::Error) -> bool {
    matches!(error.sqlite_error_code(), Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase))
}

/// Map an error of a step that involves no single partition.
fn db_error(what: &'static str) -> impl Fn(rusqlite::Error) -> WalError {
    move |error| {
        if is_corruption(&error) {
            WalError::Io(format!("corrupt database: sqlite {what}: {error}"))
        } else {
            WalError::Io(format!("sqlite {what}: {error}"))
        }
    }
}

/// Map an error of a step touching the rows of `partition` from `index` on.
fn partition_error(
    partition: PartitionId,
    index: LogIndex,
    what: &'static str,
) -> impl Fn(rusqlite::Error) -> WalError {
    move |error| {
        if is_corruption(&error) {
            WalError::Corrupt { partition, index, reason: format!("sqlite {what}: {error}") }
        } else {
            WalError::Io(format!("sqlite {what} (partition {partition}): {error}"))
        }
    }
}

fn open_error<'a>(shown: &'a str, what: &'static str) -> impl Fn(rusqlite::Error) -> WalError + 'a {
    move |error| {
        if is_corruption(&error) {
            WalError::Io(format!("corrupt database: {shown}: {what}: {error}"))
        } else {
            WalError::Io(format!("{shown}: {what}: {error}"))
        }
    }
}

/// The `idx` column of a row read for `partition`; `expected` is reported if it is not an index.
fn stored_index(partition: PartitionId, expected: LogIndex, value: ValueRef<'_>) -> Result<LogIndex, WalError> {
    match value {
        ValueRef::Integer(index) if index >= 1 => Ok(index as LogIndex),
        other => Err(WalError::Corrupt {
            partition,
            index: expected,
            reason: format!("stored index is {:?}, not a positive integer", other.data_type()),
        }),
    }
}

/// The `record` column of a row, which must be a blob.
fn blob<'a>(partition: PartitionId, index: LogIndex, value: ValueRef<'a>) -> Result<&'a [u8], WalError> {
    match value {
        ValueRef::Blob(bytes) => Ok(bytes),
        other => Err(WalError::Corrupt {
            partition,
            index,
            reason: format!("stored record is {:?}, not a blob", other.data_type()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kommander_core::conformance::wal::entry;

    const P: PartitionId = PartitionId(1);

    fn append(partition: PartitionId, from: LogIndex, to: LogIndex) -> WalBatch {
        WalBatch {
            writes: vec![PartitionWrite {
                partition,
                entries: (from..=to).map(|i| entry(i, 1)).collect(),
                ..PartitionWrite::default()
            }],
        }
    }

    #[test]
    fn open_enables_wal_mode_and_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let wal = SqliteWal::open(dir.path().join("wal.db")).unwrap();
        let conn = wal.lock_writer();
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!((mode.as_str(), synchronous, version), ("wal", 2, SCHEMA_VERSION));
    }

    #[test]
    fn unknown_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 7).unwrap();
        let error = SqliteWal::open(&path).unwrap_err();
        assert!(matches!(&error, WalError::Io(m) if m.contains("unsupported schema version 7")), "{error:?}");
    }

    #[test]
    fn a_storage_failure_fences_writes_until_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let wal = SqliteWal::open(&path).unwrap();
        wal.write(&append(P, 1, 3)).unwrap();
        {
            // Simulate a full disk: forbid the database from growing.
            let conn = wal.lock_writer();
            let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0)).unwrap();
            conn.pragma_update(None, "max_page_count", pages).unwrap();
        }
        let mut big = append(P, 4, 4);
        big.writes[0].entries[0].payload = vec![7; 1 << 20].into();
        let error = wal.write(&big).unwrap_err();
        assert!(matches!(&error, WalError::Io(m) if m.contains("full")), "{error:?}");
        assert!(wal.is_fenced());
        assert_eq!(wal.syncs(), 1);

        // Later writes are refused even though they would fit; reads go on.
        for result in
            [wal.write(&append(P, 4, 4)), wal.truncate_suffix(P, 2), wal.save_hard_state(P, &HardState::default())]
        {
            assert!(matches!(&result, Err(WalError::Io(m)) if m.contains("fenced")), "{result:?}");
        }
        assert_eq!(wal.read_range(P, 1, 10).unwrap(), (1..=3).map(|i| entry(i, 1)).collect::<Vec<_>>());

        // Reopened in place (new connections: the size limit, a connection setting, is gone),
        // the same instance writes again, the big entry included.
        wal.reopen().unwrap();
        assert!(!wal.is_fenced());
        wal.write(&big).unwrap();
        assert_eq!(wal.last_index(P).unwrap(), 4);
        assert_eq!(wal.syncs(), 2);

        drop(wal);
        let wal = SqliteWal::open(&path).unwrap();
        assert!(!wal.is_fenced());
        wal.write(&append(P, 5, 5)).unwrap();
        assert_eq!(wal.last_index(P).unwrap(), 5);
        assert_eq!(wal.read_range(P, 4, 4).unwrap(), big.writes[0].entries);
    }

    #[test]
    fn rejected_batches_do_not_fence_or_count() {
        let dir = tempfile::tempdir().unwrap();
        let wal = SqliteWal::open(dir.path().join("wal.db")).unwrap();
        wal.write(&append(P, 1, 2)).unwrap();
        let error = wal.write(&append(P, 5, 5)).unwrap_err();
        assert_eq!(error, WalError::NonContiguous { partition: P, expected: 3, got: 5 });
        assert!(!wal.is_fenced());
        assert_eq!((wal.syncs(), wal.entries_written()), (1, 2));
        wal.write(&append(P, 3, 3)).unwrap();
        assert_eq!((wal.syncs(), wal.entries_written()), (2, 3));
    }

    #[test]
    fn empty_batches_need_no_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let wal = SqliteWal::open(dir.path().join("wal.db")).unwrap();
        wal.write(&WalBatch::default()).unwrap();
        wal.write(&WalBatch { writes: vec![PartitionWrite { partition: P, ..PartitionWrite::default() }] }).unwrap();
        assert_eq!(wal.syncs(), 0);
        assert!(wal.partitions().unwrap().is_empty());
    }

    #[test]
    fn extreme_indexes_are_handled_without_sqlite_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let wal = SqliteWal::open(dir.path().join("wal.db")).unwrap();
        wal.write(&append(P, 1, 3)).unwrap();
        assert_eq!(wal.term_at(P, LogIndex::MAX).unwrap(), None);
        assert!(wal.read_range(P, LogIndex::MAX, LogIndex::MAX).unwrap().is_empty());
        assert_eq!(wal.read_range(P, 0, LogIndex::MAX).unwrap().len(), 3);
        wal.truncate_suffix(P, LogIndex::MAX).unwrap();
        wal.truncate_suffix(P, 0).unwrap();
        assert_eq!(wal.last_index(P).unwrap(), 0);
    }
}

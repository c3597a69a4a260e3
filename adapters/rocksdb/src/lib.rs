//! [`RocksWal`]: a durable, checksummed, group-committed [`Wal`] on RocksDB.
//!
//! # Key layout
//!
//! Everything lives in the default column family, under two key families whose big-endian
//! encoding makes RocksDB's byte order match `(partition, index)` order:
//!
//! | record     | key                                                   | value                          |
//! |------------|-------------------------------------------------------|--------------------------------|
//! | log entry  | `b'e'` ++ partition `u32` BE ++ index `u64` BE (13 B) | [`encode_entry`] record        |
//! | hard state | `b'h'` ++ partition `u32` BE (5 B)                    | [`encode_hard_state`] record   |
//! | compaction | `b's'` ++ partition `u32` BE (5 B)                    | [`encode_snapshot_record`]     |
//!
//! So the entries of one partition are one contiguous key range, in index order:
//!
//! * [`Wal::read_range`] is one bounded forward scan;
//! * [`Wal::last_index`] is one reverse seek (`seek_for_prev` of `(p, u64::MAX)`) bounded below by
//!   the partition's prefix;
//! * suffix truncation (an explicit `truncate_from`, [`Wal::truncate_suffix`], or appending over
//!   an existing suffix) is one range tombstone (`delete_range`) from `(p, from)` up to the key
//!   just past `(p, u64::MAX)`, whatever the length of the suffix;
//! * prefix compaction is one range tombstone from `(p, 0)` through `(p, floor)` written in the
//!   same batch as the partition's compaction record (floor and latest snapshot meta); once the
//!   batch is durable, a manual `compact_range` over that key range drops the tombstoned data
//!   from the SST files, so the space comes back;
//! * [`Wal::partitions`] seeks prefix by prefix: one seek per listed partition, not one step per
//!   entry.
//!
//! # Durability and group commit
//!
//! Each [`Wal::write`] call becomes **one** RocksDB [`WriteBatch`] covering every partition of the
//! [`WalBatch`], written with `WriteOptions::set_sync(true)`. RocksDB appends the batch to its own
//! write-ahead log as one record and fsyncs that log before the call returns, so one batch costs
//! one fsync however many partitions and entries it carries, and the batch is atomic: after a
//! crash it is recovered entirely or not at all. [`Wal::truncate_suffix`] and
//! [`Wal::save_hard_state`] are likewise one synced write each. [`RocksWal::syncs`] counts these
//! synced writes. Calls that change nothing (an empty batch, a truncation past the end) write
//! nothing and do not sync.
//!
//! Writers are serialized by a mutex, so that the last index each write is validated against
//! (with [`plan_partition_write`], taking earlier writes of the same batch into account) is still
//! current when the batch is applied. The whole batch is validated before anything is written, so
//! a rejected batch changes nothing. Readers do not take the mutex: RocksDB applies a write batch
//! atomically and every scan reads from an implicit snapshot, so readers see each write entirely
//! or not at all.
//!
//! # Integrity
//!
//! Every value is a checksummed [`kommander_core::codec`] record whose CRC also covers its
//! position (partition and index). Every read decodes and verifies the records it returns; a bad
//! record is reported as [`WalError::Corrupt`] and never skipped. A RocksDB failure is reported as
//! [`WalError::Io`].
//!
//! # After a failed write
//!
//! A failed write or sync (a full disk, say) puts RocksDB in read-only mode: every later write
//! fails, reads go on. [`Wal::reopen`] closes the database and opens it again (RocksDB replays its
//! log, as after a process restart), which is how the runtime resumes writing once the cause is
//! gone, without restarting the node.

#![warn(missing_docs)]

use kommander_core::codec::{
    decode_entry, decode_hard_state, decode_snapshot_record, encode_entry, encode_hard_state, encode_snapshot_record,
    SnapshotRecord,
};
use kommander_core::wal::{plan_partition_write, LogBounds};
use kommander_core::{HardState, LogEntry, LogIndex, PartitionId, SnapshotMeta, Term, Wal, WalBatch, WalError};
use rocksdb::{DBCompressionType, DBRecoveryMode, Options, ReadOptions, WriteBatch, WriteOptions, DB};
use std::collections::btree_map::{BTreeMap, Entry};
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};

/// First byte of every log-entry key.
const ENTRY_TAG: u8 = b'e';
/// First byte of every hard-state key.
const HARD_STATE_TAG: u8 = b'h';
/// First byte of every compaction-record key.
const SNAPSHOT_TAG: u8 = b's';
/// Length of a log-entry key: tag, partition, index.
const ENTRY_KEY_LEN: usize = 1 + 4 + 8;
/// Length of a hard-state key: tag, partition.
const HARD_STATE_KEY_LEN: usize = 1 + 4;

/// `b'e' ++ partition BE`: the prefix shared by every entry key of `partition`.
fn entry_prefix(partition: PartitionId) -> [u8; 5] {
    let mut key = [0u8; 5];
    key[0] = ENTRY_TAG;
    key[1..5].copy_from_slice(&partition.0.to_be_bytes());
    key
}

/// `b'e' ++ partition BE ++ index BE`.
fn entry_key(partition: PartitionId, index: LogIndex) -> [u8; ENTRY_KEY_LEN] {
    let mut key = [0u8; ENTRY_KEY_LEN];
    key[..5].copy_from_slice(&entry_prefix(partition));
    key[5..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The smallest key strictly greater than `entry_key(partition, index)` (that key followed by a
/// zero byte), and still below every key of the next partition: an exclusive upper bound that
/// includes `index`, even for `index == u64::MAX` and `partition == u32::MAX`.
fn entry_key_after(partition: PartitionId, index: LogIndex) -> [u8; ENTRY_KEY_LEN + 1] {
    let mut key = [0u8; ENTRY_KEY_LEN + 1];
    key[..ENTRY_KEY_LEN].copy_from_slice(&entry_key(partition, index));
    key
}

/// `b'h' ++ partition BE`.
fn hard_state_key(partition: PartitionId) -> [u8; HARD_STATE_KEY_LEN] {
    let mut key = [0u8; HARD_STATE_KEY_LEN];
    key[0] = HARD_STATE_TAG;
    key[1..].copy_from_slice(&partition.0.to_be_bytes());
    key
}

/// `b's' ++ partition BE`: the key of `partition`'s compaction record.
fn snapshot_key(partition: PartitionId) -> [u8; HARD_STATE_KEY_LEN] {
    let mut key = hard_state_key(partition);
    key[0] = SNAPSHOT_TAG;
    key
}

/// The partition named by bytes 1..5 of a key of either family, if the key is long enough.
fn key_partition(key: &[u8]) -> Option<PartitionId> {
    let bytes: [u8; 4] = key.get(1..5)?.try_into().ok()?;
    Some(PartitionId(u32::from_be_bytes(bytes)))
}

/// Split a log-entry key into partition and index.
fn parse_entry_key(key: &[u8]) -> Option<(PartitionId, LogIndex)> {
    if key.len() != ENTRY_KEY_LEN || key[0] != ENTRY_TAG {
        return None;
    }
    let index = u64::from_be_bytes(key[5..].try_into().ok()?);
    Some((key_partition(key)?, index))
}

/// A key of `partition`'s range that is not a well-formed key of its family.
fn malformed_key(partition: PartitionId, key: &[u8]) -> WalError {
    WalError::Corrupt { partition, index: 0, reason: format!("malformed key {key:02x?}") }
}

fn io(error: rocksdb::Error) -> WalError {
    tracing::warn!(%error, "rocksdb wal failure");
    WalError::Io(error.into_string())
}

/// A [`Wal`] stored in a RocksDB database (see the [crate documentation](crate) for the key
/// layout and the durability guarantees).
///
/// It is `Send + Sync`: share it (e.g. in an `Arc`) between the writer and any number of readers.
/// Dropping it closes the database and releases its lock, so the same path can be opened again.
pub struct RocksWal {
    /// The open database; `None` only after a [`Wal::reopen`] that could not open it again.
    db: RwLock<Option<DB>>,
    path: PathBuf,
    /// Serializes writers, so that validation and application see the same last indexes.
    write_lock: Mutex<()>,
    syncs: AtomicU64,
    entries_written: AtomicU64,
}

impl fmt::Debug for RocksWal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksWal")
            .field("path", &self.path)
            .field("syncs", &self.syncs())
            .field("entries_written", &self.entries_written())
            .finish_non_exhaustive()
    }
}

impl RocksWal {
    /// Open the WAL stored in the RocksDB database directory `path`, creating it if missing.
    ///
    /// RocksDB replays its own write-ahead log on open (point-in-time recovery), so every write
    /// acknowledged before a crash is visible again.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] when the database cannot be opened (including when another `RocksWal`, in
    /// this or another process, holds it open).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WalError> {
        let path = path.as_ref().to_path_buf();
        let db = open_db(&path)?;
        tracing::debug!(path = %path.display(), "opened rocksdb wal");
        Ok(Self {
            db: RwLock::new(Some(db)),
            path,
            write_lock: Mutex::new(()),
            syncs: AtomicU64::new(0),
            entries_written: AtomicU64::new(0),
        })
    }

    /// The open database, or an error when a failed [`Wal::reopen`] left none.
    fn db(&self) -> Result<OpenDb<'_>, WalError> {
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            return Err(WalError::Io(format!(
                "rocksdb wal {} is closed: reopening it after a failure failed; reopen it again",
                self.path.display()
            )));
        }
        Ok(OpenDb(guard))
    }

    /// The database directory this WAL was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of synced RocksDB writes (each one fsync of RocksDB's log) made through this handle:
    /// one per [`Wal::write`] that changed something, whatever the number of partitions in it,
    /// plus one per effective [`Wal::truncate_suffix`] and per [`Wal::save_hard_state`].
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Total entries carried by successful [`Wal::write`] calls through this handle, including
    /// entries that replaced an existing suffix.
    pub fn entries_written(&self) -> u64 {
        self.entries_written.load(Ordering::Relaxed)
    }

    /// Write `batch` atomically and fsync RocksDB's log before returning.
    fn commit(&self, batch: WriteBatch) -> Result<(), WalError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db()?.write_opt(batch, &options).map_err(io)?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Read options bounding an iterator to `[lower, upper)`.
    fn bounded(lower: &[u8], upper: &[u8]) -> ReadOptions {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(lower.to_vec());
        options.set_iterate_upper_bound(upper.to_vec());
        options
    }

    /// Every partition with at least one key of the family `tag`, ascending. Entry keys are
    /// skipped a partition at a time by seeking to the next partition's prefix.
    fn partitions_with(&self, tag: u8, into: &mut BTreeSet<PartitionId>) -> Result<(), WalError> {
        let expected_len = if tag == ENTRY_TAG { ENTRY_KEY_LEN } else { HARD_STATE_KEY_LEN };
        let (lower, upper) = ([tag], [tag + 1]);
        let db = self.db()?;
        let mut iter = db.raw_iterator_opt(Self::bounded(&lower, &upper));
        iter.seek(lower);
        while let Some(key) = iter.key() {
            let partition = key_partition(key).ok_or_else(|| malformed_key(PartitionId::SYSTEM, key))?;
            if key.len() != expected_len {
                return Err(malformed_key(partition, key));
            }
            into.insert(partition);
            match partition.0.checked_add(1) {
                Some(next) if tag == ENTRY_TAG => iter.seek(entry_prefix(PartitionId(next))),
                Some(_) => iter.next(),
                None => break,
            }
        }
        iter.status().map_err(io)
    }
}

impl Wal for RocksWal {
    fn write(&self, batch: &WalBatch) -> Result<(), WalError> {
        let _writer = self.write_lock.lock().unwrap_or_else(PoisonError::into_inner);

        // Validate every write against the last index its partition has once the earlier writes of
        // the batch are applied, and build the RocksDB batch alongside. Nothing is written unless
        // every write is valid.
        let mut states: BTreeMap<PartitionId, (LogBounds, SnapshotRecord)> = BTreeMap::new();
        let mut compacted: Vec<(PartitionId, LogIndex)> = Vec::new();
        let mut rocks_batch = WriteBatch::default();
        for write in &batch.writes {
            let partition = write.partition;
            let (bounds, mut record) = match states.entry(partition) {
                Entry::Occupied(known) => known.get().clone(),
                Entry::Vacant(slot) => {
                    let record = self.stored_record(partition)?;
                    let last = self.stored_last_index(partition)?.max(record.compacted_through);
                    let snapshot_index = record.meta.as_ref().map_or(0, |m| m.index);
                    let bounds =
                        LogBounds { last_index: last, compacted_through: record.compacted_through, snapshot_index };
                    slot.insert((bounds, record)).clone()
                }
            };
            let plan = plan_partition_write(write, bounds)?;
            if let Some(cut) = plan.cut {
                rocks_batch
                    .delete_range(&entry_key(partition, cut)[..], &entry_key_after(partition, LogIndex::MAX)[..]);
            }
            if let Some(through) = plan.compact {
                rocks_batch.delete_range(&entry_key(partition, 0)[..], &entry_key_after(partition, through)[..]);
                compacted.push((partition, through));
            }
            for entry in &write.entries {
                rocks_batch.put(entry_key(partition, entry.index), encode_entry(partition, entry));
            }
            if plan.compact.is_some() || write.snapshot.is_some() {
                record.compacted_through = plan.after.compacted_through;
                if let Some(meta) = &write.snapshot {
                    record.meta = Some(meta.clone());
                }
                rocks_batch.put(snapshot_key(partition), encode_snapshot_record(partition, &record));
            }
            if let Some(state) = &write.hard_state {
                rocks_batch.put(hard_state_key(partition), encode_hard_state(partition, state));
            }
            states.insert(partition, (plan.after, record));
        }

        if rocks_batch.is_empty() {
            return Ok(());
        }
        self.commit(rocks_batch)?;
        self.entries_written.fetch_add(batch.entry_count() as u64, Ordering::Relaxed);
        for (partition, through) in compacted {
            // The tombstone is durable; drop the data it covers from the SST files.
            self.db()?
                .compact_range(Some(&entry_key(partition, 0)[..]), Some(&entry_key_after(partition, through)[..]));
        }
        Ok(())
    }

    fn truncate_suffix(&self, partition: PartitionId, from: LogIndex) -> Result<(), WalError> {
        let _writer = self.write_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let from = from.max(1);
        if from > self.stored_last_index(partition)? {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        batch.delete_range(&entry_key(partition, from)[..], &entry_key_after(partition, LogIndex::MAX)[..]);
        self.commit(batch)
    }

    fn read_range(&self, partition: PartitionId, from: LogIndex, to: LogIndex) -> Result<Vec<LogEntry>, WalError> {
        let from = from.max(1);
        if from > to {
            return Ok(Vec::new());
        }
        let start = entry_key(partition, from);
        let db = self.db()?;
        let mut iter = db.raw_iterator_opt(Self::bounded(&start, &entry_key_after(partition, to)));
        iter.seek(start);
        let mut entries = Vec::new();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let index = match parse_entry_key(key) {
                Some((p, index)) if p == partition => index,
                _ => return Err(malformed_key(partition, key)),
            };
            entries.push(decode_entry(partition, index, value)?);
            iter.next();
        }
        iter.status().map_err(io)?;
        Ok(entries)
    }

    fn term_at(&self, partition: PartitionId, index: LogIndex) -> Result<Option<Term>, WalError> {
        if index == 0 {
            return Ok(Some(0));
        }
        match self.db()?.get_pinned(entry_key(partition, index)).map_err(io)? {
            Some(record) => Ok(Some(decode_entry(partition, index, &record)?.term)),
            None => Ok(None),
        }
    }

    fn last_index(&self, partition: PartitionId) -> Result<LogIndex, WalError> {
        Ok(self.stored_last_index(partition)?.max(self.stored_record(partition)?.compacted_through))
    }

    fn compacted_through(&self, partition: PartitionId) -> Result<LogIndex, WalError> {
        Ok(self.stored_record(partition)?.compacted_through)
    }

    fn load_snapshot(&self, partition: PartitionId) -> Result<Option<SnapshotMeta>, WalError> {
        Ok(self.stored_record(partition)?.meta)
    }

    fn save_hard_state(&self, partition: PartitionId, state: &HardState) -> Result<(), WalError> {
        let _writer = self.write_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = WriteBatch::default();
        batch.put(hard_state_key(partition), encode_hard_state(partition, state));
        self.commit(batch)
    }

    fn load_hard_state(&self, partition: PartitionId) -> Result<Option<HardState>, WalError> {
        match self.db()?.get_pinned(hard_state_key(partition)).map_err(io)? {
            Some(record) => Ok(Some(decode_hard_state(partition, &record)?)),
            None => Ok(None),
        }
    }

    fn partitions(&self) -> Result<Vec<PartitionId>, WalError> {
        let mut partitions = BTreeSet::new();
        self.partitions_with(ENTRY_TAG, &mut partitions)?;
        self.partitions_with(HARD_STATE_TAG, &mut partitions)?;
        self.partitions_with(SNAPSHOT_TAG, &mut partitions)?;
        Ok(partitions.into_iter().collect())
    }

    /// Close the database and open it again: RocksDB replays its log (what a process restart
    /// does) and leaves the read-only mode a failed write put it in. No write runs meanwhile;
    /// reads wait. When the open fails (the disk still full, say), the WAL stays closed and every
    /// call fails until a later `reopen` succeeds.
    fn reopen(&self) -> Result<(), WalError> {
        let _writer = self.write_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // The old handle must be closed first: it holds the database's lock file.
        drop(db.take());
        *db = Some(open_db(&self.path)?);
        tracing::warn!(path = %self.path.display(), "rocksdb wal reopened");
        Ok(())
    }
}

/// A read guard on an open database.
struct OpenDb<'a>(RwLockReadGuard<'a, Option<DB>>);

impl Deref for OpenDb<'_> {
    type Target = DB;

    fn deref(&self) -> &DB {
        self.0.as_ref().expect("checked open when the guard was taken")
    }
}

/// Open (creating if missing) the database at `path` with the WAL's options.
fn open_db(path: &Path) -> Result<DB, WalError> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.set_paranoid_checks(true);
    // Stop at the first damaged record of RocksDB's own log, never skip over it.
    options.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    // The crate is built without compression libraries; records are checksummed, not packed.
    options.set_compression_type(DBCompressionType::None);
    DB::open(&options, path).map_err(io)
}

impl RocksWal {
    /// The compaction record of `partition` (floor 0 and no meta when none is stored).
    fn stored_record(&self, partition: PartitionId) -> Result<SnapshotRecord, WalError> {
        match self.db()?.get_pinned(snapshot_key(partition)).map_err(io)? {
            Some(record) => decode_snapshot_record(partition, &record),
            None => Ok(SnapshotRecord::default()),
        }
    }

    /// Index of the last stored entry of `partition` (0 when none).
    fn stored_last_index(&self, partition: PartitionId) -> Result<LogIndex, WalError> {
        let prefix = entry_prefix(partition);
        let db = self.db()?;
        let mut iter = db.raw_iterator_opt(Self::bounded(&prefix, &entry_key_after(partition, LogIndex::MAX)));
        iter.seek_for_prev(entry_key(partition, LogIndex::MAX));
        match iter.key() {
            Some(key) => match parse_entry_key(key) {
                Some((p, index)) if p == partition => Ok(index),
                _ => Err(malformed_key(partition, key)),
            },
            None => iter.status().map(|()| 0).map_err(io),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_partition_then_index() {
        let mut keys = [
            entry_key(PartitionId(2), 1),
            entry_key(PartitionId(1), 256),
            entry_key(PartitionId(1), 255),
            entry_key(PartitionId(1), 1),
            entry_key(PartitionId(256), 0),
        ];
        keys.sort();
        let parsed: Vec<_> = keys.iter().map(|k| parse_entry_key(k).unwrap()).collect();
        assert_eq!(
            parsed,
            vec![
                (PartitionId(1), 1),
                (PartitionId(1), 255),
                (PartitionId(1), 256),
                (PartitionId(2), 1),
                (PartitionId(256), 0)
            ]
        );
    }

    #[test]
    fn key_after_bounds_the_partition() {
        for p in [PartitionId(0), PartitionId(7), PartitionId(u32::MAX)] {
            let end = entry_key_after(p, LogIndex::MAX);
            assert!(entry_key(p, LogIndex::MAX)[..] < end[..]);
            assert!(entry_key(p, 5)[..] < entry_key_after(p, 5)[..]);
            assert!(entry_key_after(p, 5)[..] < entry_key(p, 6)[..]);
            if let Some(next) = p.0.checked_add(1) {
                assert!(end[..] < entry_prefix(PartitionId(next))[..]);
            }
            assert!(end[..] < hard_state_key(PartitionId(0))[..]);
        }
    }
}

//! Where snapshot bytes live: the node's snapshot directory (by default `snapshots/` next to the
//! WAL files; [`crate::RuntimeConfig::snapshot_dir`]) or, for in-memory nodes, a map in memory.
//! The runtime owns the bytes; the application only writes them (through a [`SnapshotSink`]) and
//! reads them back (through a [`SnapshotSource`]).
//!
//! Layout: `<dir>/p<partition>/<index>-<term>.snap` for complete snapshots and
//! `<dir>/p<partition>/<index>-<term>.partial` while one is being written or received. A snapshot
//! becomes visible only by an atomic rename after its bytes were synced (and, for a received one,
//! checked against the size and CRC32C of its meta), so a crash never leaves a half-written
//! snapshot under a final name. Older snapshots of a partition are removed once a newer meta is
//! durable in the WAL ([`SnapshotStore::retain_from`]).

use kommander_core::codec::{crc32c, crc32c_extend};
use kommander_core::snapshot::SnapshotMeta;
use kommander_core::{Bytes, LogIndex, PartitionId, Term};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Why a snapshot could not be stored, read or checked.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file system failed.
    #[error("snapshot i/o failure: {0}")]
    Io(#[from] io::Error),
    /// A snapshot's bytes do not match its meta (size or checksum).
    #[error("snapshot {index}@{term} of {partition} is corrupt: {reason}")]
    Corrupt {
        /// Partition of the snapshot.
        partition: PartitionId,
        /// Its index.
        index: LogIndex,
        /// Its term.
        term: Term,
        /// What was wrong.
        reason: String,
    },
    /// The snapshot is not stored (removed, or never completed).
    #[error("snapshot {index}@{term} of {partition} is not stored")]
    Missing {
        /// Partition of the snapshot.
        partition: PartitionId,
        /// Its index.
        index: LogIndex,
        /// Its term.
        term: Term,
    },
    /// The application failed to write its snapshot.
    #[error("the application could not write its snapshot: {0}")]
    Application(String),
}

type MemoryMap = BTreeMap<(PartitionId, LogIndex, Term), Vec<u8>>;

#[derive(Debug)]
enum Backing {
    Dir(PathBuf),
    /// Complete snapshots and partial ones.
    Memory {
        complete: Mutex<MemoryMap>,
        partial: Mutex<MemoryMap>,
    },
}

/// A node's snapshot storage (cheap to clone: shared).
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    backing: Arc<Backing>,
}

impl SnapshotStore {
    /// Snapshots as files under `dir` (created if missing).
    pub fn dir(dir: impl Into<PathBuf>) -> io::Result<SnapshotStore> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(SnapshotStore { backing: Arc::new(Backing::Dir(dir)) })
    }

    /// Snapshots in memory (for nodes whose WAL is in memory too).
    pub fn memory() -> SnapshotStore {
        SnapshotStore { backing: Arc::new(Backing::Memory { complete: Mutex::default(), partial: Mutex::default() }) }
    }

    fn partition_dir(dir: &Path, partition: PartitionId) -> PathBuf {
        dir.join(format!("p{}", partition.0))
    }

    fn file(dir: &Path, partition: PartitionId, index: LogIndex, term: Term, ext: &str) -> PathBuf {
        Self::partition_dir(dir, partition).join(format!("{index}-{term}.{ext}"))
    }

    /// A sink the application writes the snapshot `(partition, index, term)` into.
    pub fn sink(&self, partition: PartitionId, index: LogIndex, term: Term) -> Result<SnapshotSink, SnapshotError> {
        let target = match &*self.backing {
            Backing::Dir(dir) => {
                fs::create_dir_all(Self::partition_dir(dir, partition))?;
                let path = Self::file(dir, partition, index, term, "partial");
                SinkTarget::File { writer: BufWriter::with_capacity(1 << 20, File::create(&path)?), path }
            }
            Backing::Memory { .. } => SinkTarget::Memory(Vec::new()),
        };
        Ok(SnapshotSink { store: self.clone(), partition, index, term, target, size: 0, crc: crc32c(&[]) })
    }

    /// A reader of the complete snapshot `(partition, index, term)`.
    pub fn source(&self, partition: PartitionId, index: LogIndex, term: Term) -> SnapshotSource {
        SnapshotSource { store: self.clone(), partition, index, term }
    }

    /// `len` bytes at `offset` of a complete snapshot (fewer at its end).
    pub fn read_chunk(
        &self,
        partition: PartitionId,
        index: LogIndex,
        term: Term,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, SnapshotError> {
        let missing = || SnapshotError::Missing { partition, index, term };
        match &*self.backing {
            Backing::Dir(dir) => {
                let mut file = match File::open(Self::file(dir, partition, index, term, "snap")) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
                    Err(e) => return Err(e.into()),
                };
                file.seek(SeekFrom::Start(offset))?;
                let mut buffer = Vec::with_capacity(len.min(16 << 20) as usize);
                file.take(len).read_to_end(&mut buffer)?;
                Ok(buffer.into())
            }
            Backing::Memory { complete, .. } => {
                let map = complete.lock().unwrap_or_else(PoisonError::into_inner);
                let bytes = map.get(&(partition, index, term)).ok_or_else(missing)?;
                Ok(Bytes::copy_from_slice(&bytes[kommander_core::snapshot::chunk_range(bytes.len(), offset, len)]))
            }
        }
    }

    /// Stage a chunk received from the leader; with `done`, check the whole snapshot against
    /// `meta` and publish it. A chunk at offset 0 starts over.
    pub fn stage_chunk(&self, meta: &SnapshotMeta, offset: u64, data: &[u8], done: bool) -> Result<(), SnapshotError> {
        let (partition, index, term) = (meta.partition, meta.index, meta.term);
        let corrupt = |reason: String| SnapshotError::Corrupt { partition, index, term, reason };
        match &*self.backing {
            Backing::Dir(dir) => {
                fs::create_dir_all(Self::partition_dir(dir, partition))?;
                let path = Self::file(dir, partition, index, term, "partial");
                let mut file =
                    if offset == 0 { File::create(&path)? } else { OpenOptions::new().append(true).open(&path)? };
                if file.metadata()?.len() != offset {
                    return Err(corrupt(format!("chunk at {offset} does not follow the staged bytes")));
                }
                file.write_all(data)?;
                if done {
                    file.sync_all()?;
                    drop(file);
                    let (size, crc) = checksum_file(&path)?;
                    if size != meta.size || crc != meta.checksum {
                        let _ = fs::remove_file(&path);
                        return Err(corrupt(format!("received {size} bytes with crc {crc:08x}")));
                    }
                    publish(&path, &Self::file(dir, partition, index, term, "snap"))?;
                }
                Ok(())
            }
            Backing::Memory { complete, partial } => {
                let mut partial = partial.lock().unwrap_or_else(PoisonError::into_inner);
                let staged = partial.entry((partition, index, term)).or_default();
                if offset == 0 {
                    staged.clear();
                }
                if staged.len() as u64 != offset {
                    return Err(corrupt(format!("chunk at {offset} does not follow the staged bytes")));
                }
                staged.extend_from_slice(data);
                if done {
                    let bytes = partial.remove(&(partition, index, term)).unwrap_or_default();
                    if bytes.len() as u64 != meta.size || crc32c(&bytes) != meta.checksum {
                        return Err(corrupt("received bytes do not match the meta".into()));
                    }
                    complete.lock().unwrap_or_else(PoisonError::into_inner).insert((partition, index, term), bytes);
                }
                Ok(())
            }
        }
    }

    /// Check that the complete snapshot of `meta` is stored with its size and checksum.
    pub fn verify(&self, meta: &SnapshotMeta) -> Result<(), SnapshotError> {
        let (partition, index, term) = (meta.partition, meta.index, meta.term);
        let (size, crc) = match &*self.backing {
            Backing::Dir(dir) => {
                let path = Self::file(dir, partition, index, term, "snap");
                if !path.exists() {
                    return Err(SnapshotError::Missing { partition, index, term });
                }
                checksum_file(&path)?
            }
            Backing::Memory { complete, .. } => {
                let map = complete.lock().unwrap_or_else(PoisonError::into_inner);
                let bytes =
                    map.get(&(partition, index, term)).ok_or(SnapshotError::Missing { partition, index, term })?;
                (bytes.len() as u64, crc32c(bytes))
            }
        };
        if size != meta.size || crc != meta.checksum {
            return Err(SnapshotError::Corrupt {
                partition,
                index,
                term,
                reason: format!(
                    "{size} bytes with crc {crc:08x}, the meta says {} bytes with {:08x}",
                    meta.size, meta.checksum
                ),
            });
        }
        Ok(())
    }

    /// Remove every snapshot of `partition` below `index` and every partial one below or at it
    /// (a newer meta is durable in the WAL).
    pub fn retain_from(&self, partition: PartitionId, index: LogIndex) -> io::Result<()> {
        match &*self.backing {
            Backing::Dir(dir) => {
                let entries = match fs::read_dir(Self::partition_dir(dir, partition)) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                };
                for entry in entries {
                    let path = entry?.path();
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    let Some((at, ext)) =
                        name.split_once('-').and_then(|(i, rest)| Some((i.parse::<u64>().ok()?, rest)))
                    else {
                        continue;
                    };
                    let old = if ext.ends_with(".snap") { at < index } else { at <= index };
                    if old {
                        fs::remove_file(&path)?;
                    }
                }
                Ok(())
            }
            Backing::Memory { complete, partial } => {
                complete
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|&(p, i, _), _| p != partition || i >= index);
                partial
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|&(p, i, _), _| p != partition || i > index);
                Ok(())
            }
        }
    }

    /// Remove everything stored for `partition` (it was removed from the node).
    pub fn remove_partition(&self, partition: PartitionId) -> io::Result<()> {
        match &*self.backing {
            Backing::Dir(dir) => match fs::remove_dir_all(Self::partition_dir(dir, partition)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            Backing::Memory { .. } => self.retain_from(partition, LogIndex::MAX),
        }
    }

    /// Bytes stored for `partition` (complete snapshots), for measurements.
    pub fn stored_bytes(&self, partition: PartitionId) -> u64 {
        match &*self.backing {
            Backing::Dir(dir) => fs::read_dir(Self::partition_dir(dir, partition))
                .map(|entries| entries.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
                .unwrap_or(0),
            Backing::Memory { complete, .. } => complete
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|((p, _, _), _)| *p == partition)
                .map(|(_, b)| b.len() as u64)
                .sum(),
        }
    }
}

/// Size and CRC32C of a file, streamed.
fn checksum_file(path: &Path) -> io::Result<(u64, u32)> {
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    let (mut size, mut crc) = (0u64, crc32c(&[]));
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok((size, crc));
        }
        size += n as u64;
        crc = crc32c_extend(crc, &buffer[..n]);
    }
}

/// Make `partial` (already synced) the file `target`, durably.
fn publish(partial: &Path, target: &Path) -> io::Result<()> {
    fs::rename(partial, target)?;
    if let Some(parent) = target.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

enum SinkTarget {
    File { writer: BufWriter<File>, path: PathBuf },
    Memory(Vec<u8>),
}

/// Where the application writes a snapshot: an [`io::Write`] that counts and checksums what it
/// is given. [`SnapshotSink::finish`] syncs and publishes it.
pub struct SnapshotSink {
    store: SnapshotStore,
    partition: PartitionId,
    index: LogIndex,
    term: Term,
    target: SinkTarget,
    size: u64,
    crc: u32,
}

impl fmt::Debug for SnapshotSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotSink")
            .field("partition", &self.partition)
            .field("index", &self.index)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Write for SnapshotSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.target {
            SinkTarget::File { writer, .. } => writer.write(buf)?,
            SinkTarget::Memory(bytes) => {
                bytes.extend_from_slice(buf);
                buf.len()
            }
        };
        self.size += n as u64;
        self.crc = crc32c_extend(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.target {
            SinkTarget::File { writer, .. } => writer.flush(),
            SinkTarget::Memory(_) => Ok(()),
        }
    }
}

impl SnapshotSink {
    /// Sync the bytes and make them the snapshot `(index, term)`. Returns its size and CRC32C.
    pub fn finish(self) -> Result<(u64, u32), SnapshotError> {
        let (size, crc) = (self.size, self.crc);
        match self.target {
            SinkTarget::File { writer, path } => {
                let file = writer.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                drop(file);
                let Backing::Dir(dir) = &*self.store.backing else {
                    unreachable!("a file sink belongs to a directory")
                };
                publish(&path, &SnapshotStore::file(dir, self.partition, self.index, self.term, "snap"))?;
            }
            SinkTarget::Memory(bytes) => {
                if let Backing::Memory { complete, .. } = &*self.store.backing {
                    complete
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((self.partition, self.index, self.term), bytes);
                }
            }
        }
        Ok((size, crc))
    }
}

/// A complete snapshot the application reads its state back from.
#[derive(Clone)]
pub struct SnapshotSource {
    store: SnapshotStore,
    partition: PartitionId,
    index: LogIndex,
    term: Term,
}

impl SnapshotSource {
    /// Open the snapshot's bytes for reading (a buffered file, or the bytes in memory).
    pub fn open(&self) -> Result<Box<dyn Read + Send>, SnapshotError> {
        let (partition, index, term) = (self.partition, self.index, self.term);
        match &*self.store.backing {
            Backing::Dir(dir) => {
                let path = SnapshotStore::file(dir, partition, index, term, "snap");
                match File::open(path) {
                    Ok(file) => Ok(Box::new(io::BufReader::with_capacity(1 << 20, file))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        Err(SnapshotError::Missing { partition, index, term })
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Backing::Memory { complete, .. } => {
                let map = complete.lock().unwrap_or_else(PoisonError::into_inner);
                let bytes =
                    map.get(&(partition, index, term)).ok_or(SnapshotError::Missing { partition, index, term })?;
                Ok(Box::new(io::Cursor::new(bytes.clone())))
            }
        }
    }

    /// The last log index the snapshot covers.
    pub fn index(&self) -> LogIndex {
        self.index
    }

    /// The term of that entry.
    pub fn term(&self) -> Term {
        self.term
    }
}

impl fmt::Debug for SnapshotSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnapshotSource({} {}@{})", self.partition, self.index, self.term)
    }
}

impl PartialEq for SnapshotSource {
    fn eq(&self, other: &Self) -> bool {
        (self.partition, self.index, self.term) == (other.partition, other.index, other.term)
    }
}

impl Eq for SnapshotSource {}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(data: &[u8]) -> SnapshotMeta {
        SnapshotMeta {
            partition: PartitionId(3),
            index: 9,
            term: 2,
            size: data.len() as u64,
            checksum: crc32c(data),
            ..Default::default()
        }
    }

    fn stores() -> Vec<(SnapshotStore, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        vec![(SnapshotStore::dir(dir.path()).unwrap(), Some(dir)), (SnapshotStore::memory(), None)]
    }

    #[test]
    fn written_snapshots_read_back_in_chunks_and_verify() {
        for (store, _dir) in stores() {
            let mut sink = store.sink(PartitionId(3), 9, 2).unwrap();
            sink.write_all(b"hello ").unwrap();
            sink.write_all(b"snapshot").unwrap();
            let (size, crc) = sink.finish().unwrap();
            let data = b"hello snapshot";
            assert_eq!((size, crc), (data.len() as u64, crc32c(data)));
            assert_eq!(&store.read_chunk(PartitionId(3), 9, 2, 6, 100).unwrap()[..], b"snapshot");
            store.verify(&meta(data)).unwrap();
            let mut read = Vec::new();
            store.source(PartitionId(3), 9, 2).open().unwrap().read_to_end(&mut read).unwrap();
            assert_eq!(read, data);
            store.retain_from(PartitionId(3), 10).unwrap();
            assert!(matches!(store.read_chunk(PartitionId(3), 9, 2, 0, 1), Err(SnapshotError::Missing { .. })));
        }
    }

    #[test]
    fn received_chunks_publish_only_a_complete_matching_snapshot() {
        for (store, _dir) in stores() {
            let data = b"0123456789";
            let m = meta(data);
            store.stage_chunk(&m, 0, &data[..4], false).unwrap();
            assert!(
                matches!(store.verify(&m), Err(SnapshotError::Missing { .. })),
                "a partial snapshot is not visible"
            );
            assert!(store.stage_chunk(&m, 6, &data[6..], true).is_err(), "a gap is refused");
            store.stage_chunk(&m, 4, &data[4..], true).unwrap();
            store.verify(&m).unwrap();
            // A snapshot whose bytes do not match its meta is never published.
            let bad = SnapshotMeta { index: 12, checksum: m.checksum ^ 1, ..m.clone() };
            assert!(matches!(store.stage_chunk(&bad, 0, data, true), Err(SnapshotError::Corrupt { .. })));
            assert!(matches!(store.verify(&bad), Err(SnapshotError::Missing { .. })));
        }
    }

    #[test]
    fn a_damaged_file_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::dir(dir.path()).unwrap();
        let mut sink = store.sink(PartitionId(3), 9, 2).unwrap();
        sink.write_all(b"abcdef").unwrap();
        sink.finish().unwrap();
        let path = dir.path().join("p3").join("9-2.snap");
        let mut bytes = fs::read(&path).unwrap();
        bytes[2] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(store.verify(&meta(b"abcdef")), Err(SnapshotError::Corrupt { .. })));
    }
}

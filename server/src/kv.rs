//! The demo application: a replicated key-value map per partition, as a [`StateMachine`]. A put
//! is one log entry of type `kv.put` whose payload is the JSON `{"key": .., "value": ..}`. Keys are
//! routed by the partition map (`RaftManager::partition_for_key`), so a split moves the keys of
//! the moving range (export/import) and each partition keeps only the keys of its range.

use kommander::core::system::{key_hash, PartitionState};
use kommander::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Log type of puts.
pub const PUT: &str = "kv.put";

/// One put, as stored in the log.
#[derive(Debug, Serialize, Deserialize)]
pub struct Put {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

type Keys = BTreeMap<String, String>;

/// The applied state, shared with the HTTP handlers (the runtime drives it through a
/// [`StateMachineActor`]), and which partitions finished replaying their log after the start.
#[derive(Clone)]
pub struct KvState {
    keys: Arc<RwLock<HashMap<PartitionId, Keys>>>,
    /// Partitions whose replay finished (readers wait on it).
    restored: Arc<watch::Sender<BTreeSet<PartitionId>>>,
}

impl Default for KvState {
    fn default() -> Self {
        KvState { keys: Arc::default(), restored: Arc::new(watch::Sender::new(BTreeSet::new())) }
    }
}

/// A partition still replaying its log on this replica after `waited`.
#[derive(Debug, thiserror::Error)]
#[error("{partition} is still replaying its log on this replica (waited {waited:?})")]
pub struct StillRestoring {
    /// The partition.
    pub partition: PartitionId,
    /// How long the read waited.
    pub waited: Duration,
}

impl KvState {
    /// The value of `key` in `partition` on this replica, once the partition finished replaying
    /// its log here (waiting at most `timeout`): during the replay a missing key cannot be told
    /// from one never written.
    pub async fn get_restored(
        &self,
        partition: PartitionId,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<String>, StillRestoring> {
        let mut restored = self.restored.subscribe();
        let ready = tokio::time::timeout(timeout, restored.wait_for(|done| done.contains(&partition))).await;
        match ready {
            Ok(Ok(_)) => Ok(self.get(partition, key)),
            _ => Err(StillRestoring { partition, waited: timeout }),
        }
    }

    /// The value of `key` in `partition` on this replica.
    pub fn get(&self, partition: PartitionId, key: &str) -> Option<String> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).get(&partition).and_then(|m| m.get(key).cloned())
    }

    /// Keys per partition on this replica.
    pub fn sizes(&self) -> BTreeMap<PartitionId, usize> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(p, m)| (*p, m.len())).collect()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<PartitionId, Keys>> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn in_range(key: &str, range: &HashRange) -> bool {
    range.contains(key_hash(key.as_bytes()))
}

impl StateMachine for KvState {
    fn apply(&mut self, partition: PartitionId, entries: &[LogEntry]) {
        let mut state = self.write();
        let map = state.entry(partition).or_default();
        for entry in entries.iter().filter(|e| e.log_type == PUT) {
            match serde_json::from_slice::<Put>(&entry.payload) {
                Ok(put) => {
                    map.insert(put.key, put.value);
                }
                Err(error) => tracing::warn!(%partition, index = entry.index, %error, "skipping unreadable put"),
            }
        }
    }

    fn reset(&mut self, partition: PartitionId) {
        // Called when the partition starts replaying (its snapshot installs do not reset).
        self.restored.send_modify(|done| {
            done.remove(&partition);
        });
        self.write().remove(&partition);
    }

    fn restore_finished(&mut self, partition: PartitionId) {
        self.restored.send_modify(|done| {
            done.insert(partition);
        });
    }

    fn export(&self, partition: PartitionId, range: HashRange) -> Result<Vec<u8>, String> {
        let state = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let keys: Keys = state
            .get(&partition)
            .map(|m| m.iter().filter(|(k, _)| in_range(k, &range)).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        serde_json::to_vec(&keys).map_err(|e| e.to_string())
    }

    fn import(&mut self, partition: PartitionId, source: PartitionId, range: HashRange, data: &[u8]) {
        let imported: Keys = match serde_json::from_slice(data) {
            Ok(keys) => keys,
            Err(error) => {
                tracing::error!(%partition, %source, %error, "unreadable import; range left empty");
                Keys::new()
            }
        };
        let mut state = self.write();
        let keys = state.entry(partition).or_default();
        keys.retain(|k, _| !in_range(k, &range));
        keys.extend(imported);
    }

    /// Streamed: one `(key length u32 LE, key, value length u32 LE, value)` record per key, in key
    /// order, written straight into the runtime's snapshot file (no buffer of the whole state).
    fn snapshot(&self, partition: PartitionId, out: &mut dyn Write) -> io::Result<()> {
        let state = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut out = io::BufWriter::new(out);
        for (key, value) in state.get(&partition).into_iter().flatten() {
            for field in [key, value] {
                out.write_all(&(field.len() as u32).to_le_bytes())?;
                out.write_all(field.as_bytes())?;
            }
        }
        out.flush()
    }

    /// Read the records of [`StateMachine::snapshot`] back, one at a time.
    fn restore_snapshot(&mut self, partition: PartitionId, input: &mut dyn Read) -> io::Result<()> {
        let mut input = io::BufReader::new(input);
        let mut keys = Keys::new();
        let field = |input: &mut io::BufReader<&mut dyn Read>| -> io::Result<Option<String>> {
            let mut len = [0u8; 4];
            match input.read_exact(&mut len) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                other => other?,
            }
            let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
            input.read_exact(&mut bytes)?;
            String::from_utf8(bytes).map(Some).map_err(io::Error::other)
        };
        while let Some(key) = field(&mut input)? {
            let value = field(&mut input)?.ok_or_else(|| io::Error::other("a key without its value"))?;
            keys.insert(key, value);
        }
        self.write().insert(partition, keys);
        Ok(())
    }

    fn map_changed(&mut self, map: &PartitionMap) {
        let mut state = self.write();
        for (partition, keys) in state.iter_mut() {
            match map.get(*partition) {
                Some(info) if info.state == PartitionState::Removed => keys.clear(),
                // A splitting source keeps its whole range until the split completes.
                Some(info) if info.state == PartitionState::Active => {
                    if let Some(range) = info.range {
                        keys.retain(|k, _| in_range(k, &range));
                    }
                }
                _ => {}
            }
        }
    }

    fn leader_changed(&mut self, partition: PartitionId, term: Term, leader: Option<NodeId>) {
        tracing::info!(%partition, term, leader = ?leader, "leader changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(index: u64, key: &str, value: &str) -> LogEntry {
        let payload = serde_json::to_vec(&Put { key: key.into(), value: value.into() }).unwrap();
        let mut entry = kommander::core::conformance::wal::entry(index, 1);
        entry.log_type = PUT.into();
        entry.payload = payload.into();
        entry
    }

    #[actix_rt::test]
    async fn a_read_waits_for_its_partitions_replay() {
        let p = PartitionId(1);
        let mut kv = KvState::default();
        let wait = Duration::from_millis(50);
        // Before its replay finished, a partition's keys are unknown, not absent.
        let early = kv.get_restored(p, "k", wait).await;
        assert!(matches!(early, Err(StillRestoring { partition, .. }) if partition == p), "{early:?}");
        // A reader already waiting is woken by the end of the replay.
        let reader = {
            let kv = kv.clone();
            tokio::spawn(async move { kv.get_restored(p, "k", Duration::from_secs(5)).await })
        };
        kv.reset(p);
        kv.apply(p, &[put(1, "k", "v1")]);
        kv.restore_finished(p);
        assert_eq!(reader.await.unwrap().unwrap(), Some("v1".to_string()));
        assert_eq!(kv.get_restored(p, "missing", wait).await.unwrap(), None, "after the replay, absent is absent");
        // A restart replays again: reads wait again.
        kv.reset(p);
        assert!(kv.get_restored(p, "k", wait).await.is_err());
        assert!(kv.get_restored(PartitionId(2), "k", wait).await.is_err(), "other partitions wait for their own");
    }
}

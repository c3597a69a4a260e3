//! The demo application: a replicated key-value map per partition, rebuilt from `RaftEvent`s.
//! A put is one log entry of type `kv.put` whose payload is the JSON `{"key": .., "value": ..}`.

use actix::prelude::*;
use kommander::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

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

/// The applied state, shared with the HTTP handlers.
#[derive(Clone, Default)]
pub struct KvState(Arc<RwLock<HashMap<PartitionId, BTreeMap<String, String>>>>);

impl KvState {
    /// The value of `key` in `partition` on this replica.
    pub fn get(&self, partition: PartitionId, key: &str) -> Option<String> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(&partition).and_then(|m| m.get(key).cloned())
    }

    /// Keys per partition on this replica.
    pub fn sizes(&self) -> BTreeMap<PartitionId, usize> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(p, m)| (*p, m.len())).collect()
    }

    fn apply(&self, partition: PartitionId, entries: Vec<LogEntry>) {
        let mut state = self.0.write().unwrap_or_else(|p| p.into_inner());
        let map = state.entry(partition).or_default();
        for entry in entries.into_iter().filter(|e| e.log_type == PUT) {
            match serde_json::from_slice::<Put>(&entry.payload) {
                Ok(put) => {
                    map.insert(put.key, put.value);
                }
                Err(error) => tracing::warn!(%partition, index = entry.index, %error, "skipping unreadable put"),
            }
        }
    }
}

/// The actor the runtime sends events to.
pub struct KvApp {
    /// State it maintains.
    pub state: KvState,
}

impl Actor for KvApp {
    type Context = Context<Self>;
}

impl Handler<RaftEvent> for KvApp {
    type Result = ();
    fn handle(&mut self, event: RaftEvent, _: &mut Context<Self>) {
        match event {
            RaftEvent::RestoreStarted { partition } => {
                self.state.0.write().unwrap_or_else(|p| p.into_inner()).remove(&partition);
            }
            RaftEvent::Restored { partition, entries } | RaftEvent::Replicated { partition, entries } => {
                self.state.apply(partition, entries);
            }
            RaftEvent::RestoreFinished { partition } => tracing::info!(%partition, "restored from the WAL"),
            RaftEvent::LeaderChanged { partition, term, leader } => {
                tracing::info!(%partition, term, leader = ?leader, "leader changed")
            }
            _ => {}
        }
    }
}

/// The partition that owns `key`: FNV-1a 64 of the key modulo the partition count, plus one.
pub fn partition_for_key(key: &str, partitions: u32) -> PartitionId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    PartitionId((hash % u64::from(partitions.max(1))) as u32 + 1)
}

//! In-memory transport between managers in one process, with fault injection for tests: cut
//! links (whole or for one partition's messages), isolate nodes, drop a share of batches, delay
//! delivery.

use kommander_core::transport::{InboundSink, Transport, TransportError};
use kommander_core::{MessageBatch, NodeId, PartitionId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct NetState {
    sinks: HashMap<NodeId, Arc<dyn InboundSink>>,
    cut: HashSet<(NodeId, NodeId)>,
    /// Links cut for one partition's messages only.
    partition_cut: HashSet<(NodeId, NodeId, PartitionId)>,
    drop_per_mille: u64,
    delay: Option<Duration>,
}

/// The shared "network" of an in-process cluster.
#[derive(Clone, Default)]
pub struct InMemoryNetwork {
    state: Arc<Mutex<NetState>>,
    rng: Arc<AtomicU64>,
    /// Batches delivered.
    pub delivered: Arc<AtomicU64>,
    /// Batches dropped by faults or because the destination is not running.
    pub dropped: Arc<AtomicU64>,
}

impl InMemoryNetwork {
    /// An empty network without faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport endpoint of `node`.
    pub fn transport(&self, node: NodeId) -> Arc<InMemoryTransport> {
        Arc::new(InMemoryTransport { node, network: self.clone() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cut both directions between `a` and `b`.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut s = self.lock();
        s.cut.insert((a, b));
        s.cut.insert((b, a));
    }

    /// Cut both directions between `a` and `b` for the messages of `partition` only (e.g. to leave
    /// a node's partition-0 replica, and so its partition map, behind).
    pub fn cut_partition(&self, a: NodeId, b: NodeId, partition: PartitionId) {
        let mut s = self.lock();
        s.partition_cut.insert((a, b, partition));
        s.partition_cut.insert((b, a, partition));
    }

    /// Cut `node` off from every other registered node.
    pub fn isolate(&self, node: NodeId) {
        let others: Vec<NodeId> = self.lock().sinks.keys().copied().filter(|&n| n != node).collect();
        for other in others {
            self.cut(node, other);
        }
    }

    /// Restore every link and remove random drops and delays.
    pub fn heal(&self) {
        let mut s = self.lock();
        s.cut.clear();
        s.partition_cut.clear();
        s.drop_per_mille = 0;
        s.delay = None;
    }

    /// Drop this share (per mille) of batches.
    pub fn set_drop_per_mille(&self, per_mille: u64) {
        self.lock().drop_per_mille = per_mille.min(1000);
    }

    /// Delay every batch by `delay` (requires a tokio runtime, as inside actix).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.lock().delay = delay;
    }

    fn random_per_mille(&self) -> u64 {
        let mut x = self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        (x ^ (x >> 29)) % 1000
    }

    fn route(&self, mut batch: MessageBatch) {
        let (sink, delay) = {
            let s = self.lock();
            if !s.partition_cut.is_empty() {
                batch.messages.retain(|m| !s.partition_cut.contains(&(batch.from, batch.to, m.partition)));
            }
            let blocked = s.cut.contains(&(batch.from, batch.to));
            let sink = if blocked { None } else { s.sinks.get(&batch.to).cloned() };
            let drop = s.drop_per_mille > 0 && self.random_per_mille() < s.drop_per_mille;
            (if drop { None } else { sink }, s.delay)
        };
        let Some(sink) = sink else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.delivered.fetch_add(1, Ordering::Relaxed);
        match delay {
            Some(delay) => {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = sink.deliver(batch);
                });
            }
            None => {
                let _ = sink.deliver(batch);
            }
        }
    }
}

/// One node's endpoint on an [`InMemoryNetwork`].
pub struct InMemoryTransport {
    node: NodeId,
    network: InMemoryNetwork,
}

impl Transport for InMemoryTransport {
    fn start(&self, inbox: Arc<dyn InboundSink>) -> Result<(), TransportError> {
        self.network.lock().sinks.insert(self.node, inbox);
        Ok(())
    }

    fn send(&self, batch: MessageBatch) -> Result<(), TransportError> {
        if batch.from != self.node {
            return Err(TransportError::Setup(format!(
                "batch from {} sent through {}'s transport",
                batch.from, self.node
            )));
        }
        if !self.network.lock().sinks.contains_key(&self.node) {
            return Err(TransportError::NotRunning);
        }
        self.network.route(batch);
        Ok(())
    }

    fn stop(&self) {
        self.network.lock().sinks.remove(&self.node);
    }
}

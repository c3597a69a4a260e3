//! Test support shared by the integration tests: a recording [`InboundSink`] that checks batches
//! the way the node's router does, batch builders, and polling helpers.

#![allow(dead_code)]

use kommander_core::transport::{InboundRejection, InboundSink};
use kommander_core::{validate_batch, Envelope, MessageBatch, MessageLimits, NodeId, PartitionId, RaftMessage};
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CLUSTER: &str = "cluster-test";
pub const SECRET: &[u8] = b"cluster-test-secret";

/// Records accepted batches after the checks `actors/src/router.rs` runs: cluster, destination,
/// [`validate_batch`] (any failure rejects the whole batch), then partitions: envelopes of
/// partitions not hosted here are dropped, and the batch is rejected only if none is hosted.
pub struct RecordingSink {
    node: NodeId,
    cluster_id: String,
    partitions: BTreeSet<PartitionId>,
    limits: MessageLimits,
    batches: Mutex<Vec<MessageBatch>>,
}

impl RecordingSink {
    pub fn new(node: NodeId, partitions: impl IntoIterator<Item = u32>) -> Arc<Self> {
        Self::with_limits(node, partitions, MessageLimits::default())
    }

    pub fn with_limits(node: NodeId, partitions: impl IntoIterator<Item = u32>, limits: MessageLimits) -> Arc<Self> {
        Arc::new(RecordingSink {
            node,
            cluster_id: CLUSTER.to_owned(),
            partitions: partitions.into_iter().map(PartitionId).collect(),
            limits,
            batches: Mutex::new(Vec::new()),
        })
    }

    pub fn batches(&self) -> Vec<MessageBatch> {
        self.batches.lock().unwrap().clone()
    }

    pub fn message_count(&self) -> usize {
        self.batches.lock().unwrap().iter().map(|b| b.messages.len()).sum()
    }

    /// Every received envelope from `from`, in arrival order.
    pub fn envelopes_from(&self, from: NodeId) -> Vec<Envelope> {
        let batches = self.batches.lock().unwrap();
        batches.iter().filter(|b| b.from == from).flat_map(|b| b.messages.iter().cloned()).collect()
    }
}

impl InboundSink for RecordingSink {
    fn deliver(&self, batch: MessageBatch) -> Result<(), InboundRejection> {
        if batch.cluster_id != self.cluster_id {
            return Err(InboundRejection::WrongCluster(batch.cluster_id));
        }
        if batch.to != self.node {
            return Err(InboundRejection::WrongDestination { addressed: batch.to, local: self.node });
        }
        validate_batch(&batch, &self.limits)?;
        let mut batch = batch;
        let unknown = batch.messages.iter().map(|e| e.partition).filter(|p| !self.partitions.contains(p)).min();
        batch.messages.retain(|e| self.partitions.contains(&e.partition));
        match unknown {
            Some(partition) if batch.messages.is_empty() => Err(InboundRejection::UnknownPartition(partition)),
            _ => {
                self.batches.lock().unwrap().push(batch);
                Ok(())
            }
        }
    }
}

/// A vote request whose term numbers it (terms start at 1).
pub fn vote(partition: u32, from: NodeId, to: NodeId, term: u64) -> Envelope {
    Envelope {
        partition: PartitionId(partition),
        from,
        to,
        message: RaftMessage::VoteRequest {
            term,
            last_log_index: 0,
            last_log_term: 0,
            pre_vote: false,
            transfer: false,
        },
    }
}

pub fn batch(from: NodeId, to: NodeId, messages: Vec<Envelope>) -> MessageBatch {
    MessageBatch { cluster_id: CLUSTER.to_owned(), from, to, messages }
}

/// Loopback ports that were free a moment ago (for configs that must name each other).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..count).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

pub fn uri(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Poll `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

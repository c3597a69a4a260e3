//! Routes batches arriving from the transport to partition executors: drops batches of other
//! clusters or addressed to another node, groups the rest by partition (one actor message per
//! partition per batch), and counts what it dropped.

use crate::executor::{Inbound, PartitionExecutor};
use actix::Addr;
use kommander_core::transport::InboundSink;
use kommander_core::{Envelope, MessageBatch, NodeId, PartitionId};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// The node's inbound router.
#[derive(Debug)]
pub struct InboundRouter {
    node: NodeId,
    cluster_id: String,
    partitions: RwLock<HashMap<PartitionId, Addr<PartitionExecutor>>>,
    /// Batches dropped for a wrong cluster or destination.
    pub rejected_batches: AtomicU64,
    /// Messages dropped for an unknown partition or a wrong sender field.
    pub rejected_messages: AtomicU64,
}

impl InboundRouter {
    /// A router for `node` in `cluster_id`.
    pub fn new(node: NodeId, cluster_id: String) -> Self {
        InboundRouter {
            node,
            cluster_id,
            partitions: RwLock::new(HashMap::new()),
            rejected_batches: AtomicU64::new(0),
            rejected_messages: AtomicU64::new(0),
        }
    }

    /// Route messages of `partition` to `executor`.
    pub fn register(&self, partition: PartitionId, executor: Addr<PartitionExecutor>) {
        self.partitions.write().unwrap_or_else(|p| p.into_inner()).insert(partition, executor);
    }

    /// Stop routing to every partition.
    pub fn clear(&self) {
        self.partitions.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl InboundSink for InboundRouter {
    fn deliver(&self, batch: MessageBatch) {
        if batch.cluster_id != self.cluster_id || batch.to != self.node {
            self.rejected_batches.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut by_partition: BTreeMap<PartitionId, Vec<Envelope>> = BTreeMap::new();
        for envelope in batch.messages {
            if envelope.from != batch.from || envelope.to != self.node {
                self.rejected_messages.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            by_partition.entry(envelope.partition).or_default().push(envelope);
        }
        let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        for (partition, envelopes) in by_partition {
            match partitions.get(&partition) {
                Some(executor) => executor.do_send(Inbound(envelopes)),
                None => {
                    self.rejected_messages.fetch_add(envelopes.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

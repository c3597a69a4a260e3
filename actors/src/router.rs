//! Routes batches arriving from the transport to partition executors. A batch is checked whole
//! before any of it is dispatched — cluster, destination, structure ([`validate_batch`]) and that
//! every partition it names is hosted here — so a rejected batch changes nothing. Accepted batches
//! are grouped by partition: one actor message per partition per batch.

use crate::executor::{Inbound, PartitionExecutor};
use actix::Addr;
use kommander_core::transport::{InboundRejection, InboundSink};
use kommander_core::{validate_batch, Envelope, MessageBatch, MessageLimits, NodeId, PartitionId};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// The node's inbound router.
#[derive(Debug)]
pub struct InboundRouter {
    node: NodeId,
    cluster_id: String,
    limits: MessageLimits,
    partitions: RwLock<HashMap<PartitionId, Addr<PartitionExecutor>>>,
    /// Batches dispatched to partitions.
    pub accepted_batches: AtomicU64,
    /// Batches rejected (wrong cluster or destination, malformed, unknown partition).
    pub rejected_batches: AtomicU64,
}

impl InboundRouter {
    /// A router for `node` in `cluster_id`.
    pub fn new(node: NodeId, cluster_id: String) -> Self {
        InboundRouter {
            node,
            cluster_id,
            limits: MessageLimits::default(),
            partitions: RwLock::new(HashMap::new()),
            accepted_batches: AtomicU64::new(0),
            rejected_batches: AtomicU64::new(0),
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

    fn check(&self, batch: &MessageBatch) -> Result<(), InboundRejection> {
        if batch.cluster_id != self.cluster_id {
            return Err(InboundRejection::WrongCluster(batch.cluster_id.clone()));
        }
        if batch.to != self.node {
            return Err(InboundRejection::WrongDestination { addressed: batch.to, local: self.node });
        }
        validate_batch(batch, &self.limits)?;
        Ok(())
    }
}

impl InboundSink for InboundRouter {
    fn deliver(&self, batch: MessageBatch) -> Result<(), InboundRejection> {
        let outcome = self.check(&batch).and_then(|()| {
            let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
            if partitions.is_empty() {
                return Err(InboundRejection::NotRunning);
            }
            let mut by_partition: BTreeMap<PartitionId, Vec<Envelope>> = BTreeMap::new();
            for envelope in batch.messages {
                by_partition.entry(envelope.partition).or_default().push(envelope);
            }
            let mut targets = Vec::with_capacity(by_partition.len());
            for (partition, envelopes) in by_partition {
                let executor = partitions.get(&partition).ok_or(InboundRejection::UnknownPartition(partition))?;
                targets.push((executor, envelopes));
            }
            for (executor, envelopes) in targets {
                executor.do_send(Inbound(envelopes));
            }
            Ok(())
        });
        let counter = if outcome.is_ok() { &self.accepted_batches } else { &self.rejected_batches };
        counter.fetch_add(1, Ordering::Relaxed);
        outcome
    }
}

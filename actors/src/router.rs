//! Routes batches arriving from the transport to partition executors. A batch is checked whole
//! before any of it is dispatched — cluster, destination and structure ([`validate_batch`]) — so a
//! batch failing those checks changes nothing. Accepted batches are grouped by partition: one actor
//! message per partition per batch.
//!
//! Envelopes of partitions this node does not host (not created yet, or already moved away) are
//! dropped and counted in [`InboundRouter::dropped_messages`]; they never hold back the envelopes of
//! the other partitions in the same batch. Only a batch of which *nothing* could be delivered is
//! rejected with [`InboundRejection::UnknownPartition`], so the sender hears about it.

use crate::executor::{Inbound, PartitionExecutor};
use actix::{Addr, Message, Recipient};
use kommander_core::transport::{InboundRejection, InboundSink};
use kommander_core::{validate_batch, Envelope, MessageBatch, MessageLimits, NodeId, PartitionId, RaftMessage};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

/// Another node asks to join (as a learner) or to leave the cluster.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct MembershipAsk {
    /// The asking node.
    pub node: NodeId,
    /// Join (true) or leave (false).
    pub join: bool,
    /// Where it is reachable.
    pub address: String,
    /// Where its application serves clients, if it says.
    pub application_address: Option<String>,
}

/// The node's inbound router.
#[derive(Debug)]
pub struct InboundRouter {
    node: NodeId,
    cluster_id: String,
    limits: MessageLimits,
    partitions: RwLock<HashMap<PartitionId, Addr<PartitionExecutor>>>,
    membership_asks: RwLock<Option<Recipient<MembershipAsk>>>,
    /// Batches dispatched to partitions.
    pub accepted_batches: AtomicU64,
    /// Batches rejected (wrong cluster or destination, malformed, only unknown partitions).
    pub rejected_batches: AtomicU64,
    /// Envelopes dropped because their partition is not hosted here.
    pub dropped_messages: AtomicU64,
    /// Senders of accepted batches since the node clock last looked (its failure detector).
    heard: Mutex<BTreeSet<NodeId>>,
}

impl InboundRouter {
    /// A router for `node` in `cluster_id`.
    pub fn new(node: NodeId, cluster_id: String) -> Self {
        InboundRouter {
            node,
            cluster_id,
            limits: MessageLimits::default(),
            partitions: RwLock::new(HashMap::new()),
            membership_asks: RwLock::new(None),
            accepted_batches: AtomicU64::new(0),
            rejected_batches: AtomicU64::new(0),
            dropped_messages: AtomicU64::new(0),
            heard: Mutex::new(BTreeSet::new()),
        }
    }

    /// The nodes a batch was accepted from since the last call.
    pub(crate) fn take_heard(&self) -> BTreeSet<NodeId> {
        std::mem::take(&mut *self.heard.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Every hosted partition's executor.
    pub(crate) fn executors(&self) -> Vec<Addr<PartitionExecutor>> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Route messages of `partition` to `executor`.
    pub fn register(&self, partition: PartitionId, executor: Addr<PartitionExecutor>) {
        self.partitions.write().unwrap_or_else(|p| p.into_inner()).insert(partition, executor);
    }

    /// Hand join and leave requests of other nodes to `recipient` (the system coordinator).
    pub fn set_membership_asks(&self, recipient: Recipient<MembershipAsk>) {
        *self.membership_asks.write().unwrap_or_else(|p| p.into_inner()) = Some(recipient);
    }

    /// Stop routing to `partition`.
    pub fn unregister(&self, partition: PartitionId) {
        self.partitions.write().unwrap_or_else(|p| p.into_inner()).remove(&partition);
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

impl InboundRouter {
    /// Hand the envelopes of hosted partitions to their executors; drop (and count) the others.
    fn dispatch(&self, batch: MessageBatch) -> Result<(), InboundRejection> {
        let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        if partitions.is_empty() {
            return Err(InboundRejection::NotRunning);
        }
        let mut by_partition: BTreeMap<PartitionId, Vec<Envelope>> = BTreeMap::new();
        for envelope in batch.messages {
            if let RaftMessage::MembershipRequest { join, address, application_address } = envelope.message {
                let asks = self.membership_asks.read().unwrap_or_else(|p| p.into_inner());
                if let Some(asks) = asks.as_ref() {
                    asks.do_send(MembershipAsk { node: envelope.from, join, address, application_address });
                }
                continue;
            }
            by_partition.entry(envelope.partition).or_default().push(envelope);
        }
        let (mut delivered, mut dropped, mut first_unknown) = (0usize, 0u64, None);
        for (partition, envelopes) in by_partition {
            match partitions.get(&partition) {
                Some(executor) => {
                    executor.do_send(Inbound(envelopes));
                    delivered += 1;
                }
                None => {
                    dropped += envelopes.len() as u64;
                    first_unknown.get_or_insert(partition);
                }
            }
        }
        if let Some(partition) = first_unknown {
            self.dropped_messages.fetch_add(dropped, Ordering::Relaxed);
            tracing::debug!(from = %batch.from, %partition, dropped, "dropped messages of partitions not hosted here");
            if delivered == 0 {
                return Err(InboundRejection::UnknownPartition(partition));
            }
        }
        Ok(())
    }
}

impl InboundSink for InboundRouter {
    fn deliver(&self, batch: MessageBatch) -> Result<(), InboundRejection> {
        let checked = self.check(&batch);
        if checked.is_ok() {
            // Any valid frame, an empty keep-alive included, shows its sender is alive.
            self.heard.lock().unwrap_or_else(|p| p.into_inner()).insert(batch.from);
        }
        let outcome = checked.and_then(|()| self.dispatch(batch));
        let counter = if outcome.is_ok() { &self.accepted_batches } else { &self.rejected_batches };
        counter.fetch_add(1, Ordering::Relaxed);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::dev::channel::{channel, AddressReceiver};
    use actix::prelude::Stream;
    use kommander_core::RaftMessage;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    const LOCAL: NodeId = NodeId(1);

    /// Actor messages waiting in `mailbox`.
    fn queued(mailbox: &mut AddressReceiver<PartitionExecutor>) -> usize {
        let mut cx = Context::from_waker(Waker::noop());
        let mut count = 0;
        while let Poll::Ready(Some(_)) = Pin::new(&mut *mailbox).poll_next(&mut cx) {
            count += 1;
        }
        count
    }

    fn router_hosting(partitions: &[u32]) -> (InboundRouter, Vec<AddressReceiver<PartitionExecutor>>) {
        let router = InboundRouter::new(LOCAL, "c".into());
        let mailboxes = partitions
            .iter()
            .map(|&p| {
                let (tx, rx) = channel::<PartitionExecutor>(16);
                router.register(PartitionId(p), Addr::new(tx));
                rx
            })
            .collect();
        (router, mailboxes)
    }

    fn batch(partitions: &[u32]) -> MessageBatch {
        let messages = partitions
            .iter()
            .map(|&p| Envelope {
                partition: PartitionId(p),
                from: NodeId(2),
                to: LOCAL,
                message: RaftMessage::VoteRequest {
                    term: 5,
                    last_log_index: 0,
                    last_log_term: 0,
                    pre_vote: true,
                    transfer: false,
                },
            })
            .collect();
        MessageBatch { cluster_id: "c".into(), from: NodeId(2), to: LOCAL, messages }
    }

    fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    #[test]
    fn unknown_partitions_do_not_block_the_known_ones() {
        let (router, mut mailboxes) = router_hosting(&[1, 2]);
        assert_eq!(router.deliver(batch(&[1, 9, 2, 9, 1])), Ok(()));
        assert_eq!(queued(&mut mailboxes[0]), 1, "one actor message for partition 1");
        assert_eq!(queued(&mut mailboxes[1]), 1, "one actor message for partition 2");
        assert_eq!(count(&router.dropped_messages), 2);
        assert_eq!((count(&router.accepted_batches), count(&router.rejected_batches)), (1, 0));
    }

    #[test]
    fn a_batch_of_only_unknown_partitions_is_rejected() {
        let (router, mut mailboxes) = router_hosting(&[1]);
        assert_eq!(router.deliver(batch(&[8, 9, 9])), Err(InboundRejection::UnknownPartition(PartitionId(8))));
        assert_eq!(queued(&mut mailboxes[0]), 0);
        assert_eq!(count(&router.dropped_messages), 3);
        assert_eq!((count(&router.accepted_batches), count(&router.rejected_batches)), (0, 1));
        assert_eq!(router.deliver(batch(&[])), Ok(()), "an empty batch is not an unknown partition");
    }

    #[test]
    fn structural_cluster_and_destination_failures_still_reject_the_whole_batch() {
        let (router, mut mailboxes) = router_hosting(&[1]);
        let mut zero_term = batch(&[1, 1]);
        zero_term.messages[1].message =
            RaftMessage::VoteRequest { term: 0, last_log_index: 0, last_log_term: 0, pre_vote: true, transfer: false };
        assert!(matches!(router.deliver(zero_term), Err(InboundRejection::Invalid(_))));
        let other_cluster = MessageBatch { cluster_id: "other".into(), ..batch(&[1]) };
        assert!(matches!(router.deliver(other_cluster), Err(InboundRejection::WrongCluster(_))));
        let mut elsewhere = batch(&[1]);
        elsewhere.to = NodeId(7);
        elsewhere.messages[0].to = NodeId(7);
        assert!(matches!(router.deliver(elsewhere), Err(InboundRejection::WrongDestination { .. })));
        assert_eq!(queued(&mut mailboxes[0]), 0);
        assert_eq!(count(&router.rejected_batches), 3);
        router.clear();
        assert_eq!(router.deliver(batch(&[1])), Err(InboundRejection::NotRunning));
    }
}

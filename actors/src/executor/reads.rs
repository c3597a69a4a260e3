//! Consistent reads and leadership transfer on a partition executor: [`ReadBarrier`] (public:
//! applications address partitions directly) and the runtime's own [`TransferLeadership`].
//!
//! A read barrier answers with a read index once every entry up to it has been handed to the
//! application (its events are in the application actor's mailbox): whatever the caller sends
//! that actor afterwards is handled after those entries, so a read through it sees every write
//! acknowledged before the barrier started. Lease time is measured on a monotonic clock of this
//! process, never in ticks (a slowed node clock would stretch it).

use super::PartitionExecutor;
use crate::error::ReplicateError;
use actix::prelude::*;
use kommander_core::raft::ReadConsistency;
use kommander_core::{LogIndex, NodeId, TransferError};
use std::sync::OnceLock;
use std::time::Instant;

/// How a read is ordered against writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Sees every write acknowledged before the read started (read-index: a quorum confirms the
    /// leader, concurrent reads share the round). On a follower the leader hands out the index
    /// and the follower serves the read (follower reads).
    #[default]
    Linearizable,
    /// Linearizable as long as clocks drift within `RuntimeConfig::max_clock_drift`: a leader
    /// holding a lease answers without a quorum round (else a round runs).
    Lease,
    /// This replica's applied state, at once: may miss acknowledged writes.
    Local,
}

impl Consistency {
    fn core(self) -> Option<ReadConsistency> {
        match self {
            Consistency::Linearizable => Some(ReadConsistency::Linearizable),
            Consistency::Lease => Some(ReadConsistency::Lease),
            Consistency::Local => None,
        }
    }
}

/// Ask the partition for a read barrier: answered with the read index once every entry up to it
/// has been handed to the application (see the module docs). [`Consistency::Local`] answers with
/// the index handed so far, at once. Errors: [`ReplicateError::NotLeader`] (no leader known),
/// [`ReplicateError::LeadershipLost`] (the leader changed during the round),
/// [`ReplicateError::PartitionUnavailable`] (restoring or restarting), and for a read routed by
/// key ([`crate::RaftManager::read_for_key`]) [`ReplicateError::PartitionMoved`]: a fence newer
/// than the route applied by the read index, so the key may live elsewhere now.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Result<LogIndex, ReplicateError>")]
pub struct ReadBarrier {
    /// The consistency asked for.
    pub consistency: Consistency,
    /// The partition generation a key was routed with (checked once the read index is handed).
    routed: Option<u64>,
}

impl ReadBarrier {
    /// A barrier on a partition addressed directly.
    pub fn new(consistency: Consistency) -> Self {
        Self { consistency, routed: None }
    }

    /// A barrier for a key routed to this partition with map generation `generation`.
    pub(crate) fn routed(consistency: Consistency, generation: u64) -> Self {
        Self { consistency, routed: Some(generation) }
    }
}

/// Hand this leader's leadership to `to`, or to its most caught-up voter (`None`); answered once
/// the transfer started.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Result<NodeId, ReplicateError>")]
pub(crate) struct TransferLeadership {
    pub(crate) to: Option<NodeId>,
}

/// Milliseconds on this process's monotonic clock (the `now` of lease reads).
pub(crate) fn monotonic_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Handler<ReadBarrier> for PartitionExecutor {
    type Result = ResponseFuture<Result<LogIndex, ReplicateError>>;

    fn handle(&mut self, msg: ReadBarrier, ctx: &mut Context<Self>) -> Self::Result {
        let partition = self.partition();
        let Some(sm) = self.sm.as_mut() else {
            return Box::pin(async move { Err(ReplicateError::PartitionUnavailable(partition)) });
        };
        let Some(consistency) = msg.consistency.core() else {
            let read = super::waiters::routed_read(partition, msg.routed, sm.generation(), sm.applied_index());
            return Box::pin(async move { read });
        };
        self.next_read_id += 1;
        let id = self.next_read_id;
        let receiver = match sm.read(id, consistency, monotonic_ms()) {
            Ok(()) => {
                let rx = self.waiters.read(id, msg.routed);
                self.schedule_flush(ctx);
                Ok(rx)
            }
            Err(error) => Err(ReplicateError::from_read(partition, error)),
        };
        super::messages::reply_later(partition, receiver)
    }
}

impl Handler<TransferLeadership> for PartitionExecutor {
    type Result = Result<NodeId, ReplicateError>;

    fn handle(&mut self, msg: TransferLeadership, ctx: &mut Context<Self>) -> Self::Result {
        let partition = self.partition();
        let sm = self.sm.as_mut().ok_or(ReplicateError::PartitionUnavailable(partition))?;
        let to = match msg.to {
            Some(to) => to,
            None => {
                // The most caught-up voter whose node the failure detector does not report down.
                let me = sm.node();
                let down = self.shared.down_peers.read().unwrap_or_else(|p| p.into_inner()).clone();
                let candidates = sm.voters().into_iter().filter(|n| *n != me && !down.contains(n));
                let best = candidates.max_by_key(|&n| sm.progress(n).map_or(0, |p| p.match_index));
                let no_target = || ReplicateError::Transfer { partition, source: TransferError::NotAVoter(me) };
                best.ok_or_else(no_target)?
            }
        };
        sm.transfer_leadership(to).map_err(|e| ReplicateError::from_transfer(partition, e))?;
        self.schedule_flush(ctx);
        Ok(to)
    }
}

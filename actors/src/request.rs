//! The one request path from the manager, the system API and the coordinator to an actor of the
//! node: send, bounded by a timeout, and map a timeout or a stopped actor to the partition's typed
//! error. Proposals take [`propose`]: the same contract with one channel per proposal.

use crate::error::ReplicateError;
use crate::executor::{PartitionExecutor, Propose, Replicate};
use actix::prelude::*;
use kommander_core::raft::ProposalCommitted;
use kommander_core::PartitionId;
use std::time::Duration;

/// Send `message` to `actor` (serving `partition`) and wait at most `timeout` for its answer:
/// [`ReplicateError::Timeout`] when the time runs out, [`ReplicateError::PartitionUnavailable`]
/// when the actor stopped (restarting, retired) before answering.
pub(crate) async fn ask<A, M>(
    actor: &Addr<A>,
    partition: PartitionId,
    message: M,
    timeout: Duration,
) -> Result<M::Result, ReplicateError>
where
    A: Actor + Handler<M>,
    A::Context: actix::dev::ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    match tokio::time::timeout(timeout, actor.send(message)).await {
        Err(_) => Err(ReplicateError::Timeout(partition)),
        Ok(Err(_mailbox)) => Err(ReplicateError::PartitionUnavailable(partition)),
        Ok(Ok(answer)) => Ok(answer),
    }
}

/// Propose `replicate` on `executor` (serving `partition`) and wait at most `timeout` for the
/// commit, like [`ask`]: the executor answers on the proposal's own channel (no response future,
/// no task per proposal), and a stopped executor drops it unanswered.
pub(crate) async fn propose(
    executor: &Addr<PartitionExecutor>,
    partition: PartitionId,
    replicate: Replicate,
    timeout: Duration,
) -> Result<ProposalCommitted, ReplicateError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    // Unconditionally queued: the executor applies its own backpressure (in-flight bound).
    executor.do_send(Propose { replicate, reply });
    match tokio::time::timeout(timeout, answer).await {
        Err(_) => Err(ReplicateError::Timeout(partition)),
        Ok(Err(_dropped)) => Err(ReplicateError::PartitionUnavailable(partition)),
        Ok(Ok(answer)) => answer,
    }
}

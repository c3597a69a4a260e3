//! The one request path from the manager, the system API and the coordinator to an actor of the
//! node: send, bounded by a timeout, and map a timeout or a stopped actor to the partition's typed
//! error.

use crate::error::ReplicateError;
use actix::prelude::*;
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

//! The transport contract: moving [`MessageBatch`]es between nodes.
//!
//! # Contract
//!
//! * [`Transport::send`] never blocks on the network: it enqueues the batch for `batch.to` and
//!   returns. A full outbound queue for that peer returns [`TransportError::QueueFull`]; a slow or
//!   dead peer never delays sends to other peers.
//! * Batches to one peer are delivered in send order (per-peer FIFO) or not at all. Raft tolerates
//!   loss, duplication and delay, so a transport may drop batches when a peer is unreachable.
//! * Incoming batches are handed to the [`InboundSink`] given to [`Transport::start`]; batches
//!   whose `cluster_id` differs from the local one, or that fail authentication, are dropped before
//!   they reach any partition.

use crate::ids::NodeId;
use crate::message::MessageBatch;
use std::sync::Arc;
use thiserror::Error;

/// Receives batches that arrived from other nodes.
pub trait InboundSink: Send + Sync {
    /// Deliver one batch. Must not block.
    fn deliver(&self, batch: MessageBatch);
}

/// Errors of transports.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TransportError {
    /// The destination is not known to the transport.
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// The outbound queue to the peer is full; the batch was not enqueued.
    #[error("outbound queue to {0} is full")]
    QueueFull(NodeId),
    /// The transport has not been started or was stopped.
    #[error("transport not running")]
    NotRunning,
    /// Setup failed (bind, TLS, configuration).
    #[error("transport setup failed: {0}")]
    Setup(String),
}

/// Moves message batches between nodes.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait Transport: Send + Sync {
    /// Start receiving; incoming batches go to `inbox`.
    fn start(&self, inbox: Arc<dyn InboundSink>) -> Result<(), TransportError>;

    /// Enqueue a batch for `batch.to` (see the module contract).
    fn send(&self, batch: MessageBatch) -> Result<(), TransportError>;

    /// Stop sending and receiving.
    fn stop(&self);
}

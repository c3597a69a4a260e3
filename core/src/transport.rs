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

use crate::ids::{NodeId, PartitionId};
use crate::message::MessageBatch;
use crate::validate::InvalidBatch;
use std::sync::Arc;
use thiserror::Error;

/// Receives batches that arrived from other nodes.
pub trait InboundSink: Send + Sync {
    /// Deliver one batch. Must not block. A rejected batch is dropped whole: no message of it
    /// reaches any partition.
    fn deliver(&self, batch: MessageBatch) -> Result<(), InboundRejection>;
}

/// Why a node refused an inbound batch. Network transports map these to their status codes.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InboundRejection {
    /// The batch belongs to another cluster.
    #[error("batch of cluster {0:?} rejected")]
    WrongCluster(String),
    /// The batch is addressed to another node.
    #[error("batch addressed to {addressed}, this node is {local}")]
    WrongDestination {
        /// Destination named by the batch.
        addressed: NodeId,
        /// This node.
        local: NodeId,
    },
    /// A message names a partition this node does not host.
    #[error("unknown partition {0}")]
    UnknownPartition(PartitionId),
    /// The batch is malformed (see [`crate::validate`]).
    #[error("invalid batch: {0}")]
    Invalid(#[from] InvalidBatch),
    /// The node is not running (not joined yet, or stopped).
    #[error("node is not running")]
    NotRunning,
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

    /// The cluster this transport authenticates for, if it has one (network transports sign and
    /// check every batch with it). The runtime takes its cluster id from here, so the id is set
    /// once, where the transport is configured. The default (`None`) is for transports without
    /// authentication.
    fn cluster_id(&self) -> Option<String> {
        None
    }

    /// Inbound frames refused for authentication (another cluster id or secret) so far, and the
    /// last one described. The runtime reports a growing count as the likely reason when no
    /// leader shows up. The default (`(0, None)`) is for transports without authentication.
    fn auth_rejections(&self) -> (u64, Option<String>) {
        (0, None)
    }

    /// Make `node` reachable at `address` (an address as given to `advertise_address` or by
    /// discovery, e.g. a base URL). Replaces a known peer's address; idempotent (adding a known
    /// peer at the same address changes nothing). May be called before [`Transport::start`]: the
    /// peer is remembered and used once started, also across a stop and restart. Adding the local
    /// node is a no-op. The default does nothing, for transports that reach every node anyway.
    fn add_peer(&self, node: NodeId, address: &str) -> Result<(), TransportError> {
        let _ = (node, address);
        Ok(())
    }

    /// Forget `node`: batches still queued for it are dropped and later sends to it fail with
    /// [`TransportError::UnknownPeer`] (on transports that know their peers). Idempotent. The
    /// default does nothing.
    fn remove_peer(&self, node: NodeId) {
        let _ = node;
    }
}

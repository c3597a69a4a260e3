//! The inbound path every network transport shares. [`InboundGate::accept`] takes a frame's signed
//! header, signature and raw body and either hands the decoded batch to the node or returns a typed
//! [`InboundError`] — in which case nothing reached any partition. Checks run cheapest first: size,
//! authentication, destination, decoding, header/body agreement, then the node's own checks
//! (structure, partitions) in its [`InboundSink`].

use crate::auth::{AuthError, ClusterAuth, FrameHeader};
use crate::stats::NetStats;
use kommander_core::transport::{InboundRejection, InboundSink};
use kommander_core::{MessageBatch, NodeId};
use std::sync::{Arc, RwLock};
use thiserror::Error;

/// Why an inbound frame was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InboundError {
    /// Authentication failed (wrong cluster, bad signature, expired or replayed).
    #[error("unauthenticated: {0}")]
    Unauthenticated(#[from] AuthError),
    /// The body exceeds the size limit.
    #[error("body of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Body size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// The body could not be decoded.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// The decoded batch disagrees with the signed header.
    #[error("batch field {0} disagrees with the signed header")]
    HeaderMismatch(&'static str),
    /// The node refused the batch.
    #[error(transparent)]
    Rejected(#[from] InboundRejection),
}

/// The family of an [`InboundError`], which transports map to their status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// 401 / `Unauthenticated`.
    Unauthenticated,
    /// 413 / `ResourceExhausted`.
    TooLarge,
    /// 400 / `InvalidArgument`.
    Invalid,
    /// 404 / `NotFound` (unknown partition).
    NotFound,
    /// 421 / `FailedPrecondition` (addressed to another node).
    Misdirected,
    /// 503 / `Unavailable` (node not running).
    Unavailable,
}

impl InboundError {
    /// The error's family.
    pub fn class(&self) -> ErrorClass {
        match self {
            InboundError::Unauthenticated(_) | InboundError::Rejected(InboundRejection::WrongCluster(_)) => {
                ErrorClass::Unauthenticated
            }
            InboundError::TooLarge { .. } => ErrorClass::TooLarge,
            InboundError::Malformed(_)
            | InboundError::HeaderMismatch(_)
            | InboundError::Rejected(InboundRejection::Invalid(_)) => ErrorClass::Invalid,
            InboundError::Rejected(InboundRejection::UnknownPartition(_)) => ErrorClass::NotFound,
            InboundError::Rejected(InboundRejection::WrongDestination { .. }) => ErrorClass::Misdirected,
            InboundError::Rejected(InboundRejection::NotRunning) => ErrorClass::Unavailable,
        }
    }

    /// The HTTP status code of the error.
    pub fn http_status(&self) -> u16 {
        match self.class() {
            ErrorClass::Unauthenticated => 401,
            ErrorClass::TooLarge => 413,
            ErrorClass::Invalid => 400,
            ErrorClass::NotFound => 404,
            ErrorClass::Misdirected => 421,
            ErrorClass::Unavailable => 503,
        }
    }
}

/// Authenticates, decodes and forwards inbound frames for one node.
pub struct InboundGate {
    auth: ClusterAuth,
    local: NodeId,
    max_body_bytes: usize,
    sink: RwLock<Option<Arc<dyn InboundSink>>>,
    stats: Arc<NetStats>,
}

impl std::fmt::Debug for InboundGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundGate").field("local", &self.local).field("max_body_bytes", &self.max_body_bytes).finish()
    }
}

impl InboundGate {
    /// A gate for node `local`; bodies above `max_body_bytes` are refused.
    pub fn new(local: NodeId, auth: ClusterAuth, max_body_bytes: usize, stats: Arc<NetStats>) -> Self {
        InboundGate { auth, local, max_body_bytes, sink: RwLock::new(None), stats }
    }

    /// The cluster auth (also used to sign outbound frames).
    pub fn auth(&self) -> &ClusterAuth {
        &self.auth
    }

    /// The largest body accepted.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Start forwarding accepted batches to `sink`.
    pub fn open(&self, sink: Arc<dyn InboundSink>) {
        *self.sink.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// Stop forwarding: frames get [`InboundRejection::NotRunning`].
    pub fn close(&self) {
        *self.sink.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Process one frame; `decode` turns the body into a batch. Returns the number of messages
    /// delivered.
    pub fn accept(
        &self,
        header: &FrameHeader,
        signature: &[u8],
        body: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<MessageBatch, String>,
    ) -> Result<usize, InboundError> {
        let outcome = self.check_and_deliver(header, signature, body, decode);
        match &outcome {
            Ok(_) => NetStats::bump(&self.stats.frames_accepted),
            Err(error) => self.count_rejection(error),
        }
        outcome
    }

    /// Count (and log at debug level) a frame the transport refused before it reached
    /// [`InboundGate::accept`], e.g. for unreadable auth headers.
    pub fn count_rejection(&self, error: &InboundError) {
        if error.class() == ErrorClass::Unauthenticated {
            NetStats::bump(&self.stats.rejected_auth);
        } else {
            NetStats::bump(&self.stats.rejected_invalid);
        }
        tracing::debug!(%error, "inbound frame rejected");
    }

    fn check_and_deliver(
        &self,
        header: &FrameHeader,
        signature: &[u8],
        body: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<MessageBatch, String>,
    ) -> Result<usize, InboundError> {
        if body.len() > self.max_body_bytes {
            return Err(InboundError::TooLarge { size: body.len(), limit: self.max_body_bytes });
        }
        self.auth.verify(header, body, signature, crate::unix_millis())?;
        if header.to != self.local {
            return Err(InboundRejection::WrongDestination { addressed: header.to, local: self.local }.into());
        }
        let batch = decode(body).map_err(InboundError::Malformed)?;
        if batch.cluster_id != header.cluster_id {
            return Err(InboundError::HeaderMismatch("cluster_id"));
        }
        if batch.from != header.from {
            return Err(InboundError::HeaderMismatch("from"));
        }
        if batch.to != header.to {
            return Err(InboundError::HeaderMismatch("to"));
        }
        let sink = self.sink.read().unwrap_or_else(|p| p.into_inner()).clone();
        let sink = sink.ok_or(InboundRejection::NotRunning)?;
        let messages = batch.messages.len();
        sink.deliver(batch)?;
        Ok(messages)
    }
}

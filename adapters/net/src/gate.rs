//! The inbound path every network transport shares. [`InboundGate::accept`] takes a frame's signed
//! header, signature and raw body and either hands the decoded batch to the node or returns a typed
//! [`InboundError`] — in which case nothing reached any partition. Checks run cheapest first: size,
//! authentication, destination (only then is the sender's nonce recorded), decoding, header/body
//! agreement, then the node's own checks (structure, partitions) in its [`InboundSink`].
//!
//! # Memory limits
//!
//! Bodies are buffered before they are authenticated, so the gate bounds what unauthenticated
//! peers can make a node hold:
//!
//! * one body: [`InboundGate::max_body_bytes`] (default [`crate::DEFAULT_MAX_BODY_BYTES`]);
//! * all bodies being received or processed at once: the in-flight budget
//!   ([`InboundGate::with_inflight_budget`], default [`crate::DEFAULT_MAX_INFLIGHT_BYTES`]). A
//!   transport [reserves](InboundGate::reserve) a body's size (or the largest body, when the size
//!   is not known up front) *before* reading it and holds the [`BodyPermit`] until the frame is
//!   handled. A reservation waits at most the budget's wait time, then fails with
//!   [`InboundError::Overloaded`] (HTTP 503 / gRPC `Unavailable`; the sender backs off and Raft
//!   retransmits).

use crate::auth::{AuthError, ClusterAuth, FrameHeader};
use crate::stats::NetStats;
use kommander_core::transport::{InboundRejection, InboundSink};
use kommander_core::{MessageBatch, NodeId};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget counts whole KiB (a reservation is rounded up), so any realistic budget fits the
/// semaphore's permit count and every body size fits one acquisition.
const BUDGET_UNIT: usize = 1024;

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
    /// Too many bytes of other frames are being received or processed; retry later.
    #[error("{requested} bytes do not fit the in-flight budget of {budget} bytes now")]
    Overloaded {
        /// Bytes the frame needed.
        requested: usize,
        /// The whole budget.
        budget: usize,
    },
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
    /// 503 / `Unavailable` (node not running, or the in-flight budget is exhausted).
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
            InboundError::Rejected(InboundRejection::NotRunning) | InboundError::Overloaded { .. } => {
                ErrorClass::Unavailable
            }
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
    inflight: Arc<Semaphore>,
    inflight_bytes: usize,
    budget_wait: Duration,
    sink: RwLock<Option<Arc<dyn InboundSink>>>,
    stats: Arc<NetStats>,
}

impl std::fmt::Debug for InboundGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundGate")
            .field("local", &self.local)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("inflight_bytes", &self.inflight_bytes)
            .field("budget_wait", &self.budget_wait)
            .finish()
    }
}

/// Bytes of the in-flight budget held by one frame; given back when dropped.
#[derive(Debug)]
pub struct BodyPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

fn budget_units(bytes: usize) -> usize {
    bytes.div_ceil(BUDGET_UNIT)
}

impl InboundGate {
    /// A gate for node `local`; bodies above `max_body_bytes` are refused. The in-flight budget is
    /// [`crate::DEFAULT_MAX_INFLIGHT_BYTES`] with a wait of [`crate::DEFAULT_BUDGET_WAIT`].
    pub fn new(local: NodeId, auth: ClusterAuth, max_body_bytes: usize, stats: Arc<NetStats>) -> Self {
        InboundGate {
            auth,
            local,
            max_body_bytes,
            inflight: Arc::new(Semaphore::new(0)),
            inflight_bytes: 0,
            budget_wait: Duration::ZERO,
            sink: RwLock::new(None),
            stats,
        }
        .with_inflight_budget(crate::DEFAULT_MAX_INFLIGHT_BYTES, crate::DEFAULT_BUDGET_WAIT)
    }

    /// Bound the bytes of all frames being received or processed at once to `max_inflight_bytes`
    /// (raised to at least one largest body); a reservation waits at most `wait` for room.
    pub fn with_inflight_budget(mut self, max_inflight_bytes: usize, wait: Duration) -> Self {
        let units = budget_units(max_inflight_bytes.max(self.max_body_bytes).max(1)).min(Semaphore::MAX_PERMITS);
        self.inflight = Arc::new(Semaphore::new(units));
        self.inflight_bytes = units.saturating_mul(BUDGET_UNIT);
        self.budget_wait = wait;
        self
    }

    /// The whole in-flight budget, in bytes.
    pub fn inflight_budget(&self) -> usize {
        self.inflight_bytes
    }

    /// Bytes of the in-flight budget free right now.
    pub fn inflight_available(&self) -> usize {
        self.inflight.available_permits().saturating_mul(BUDGET_UNIT)
    }

    /// Reserve `bytes` of the in-flight budget for a body about to be read (pass
    /// [`InboundGate::max_body_bytes`] when the size is not known). Fails at once with
    /// [`InboundError::TooLarge`] above the body limit, and with [`InboundError::Overloaded`] if
    /// the budget has no room within the wait time. Both are counted as rejections.
    pub async fn reserve(&self, bytes: usize) -> Result<BodyPermit, InboundError> {
        let outcome = self.try_reserve(bytes).await;
        if let Err(error) = &outcome {
            self.count_rejection(error);
        }
        outcome
    }

    async fn try_reserve(&self, bytes: usize) -> Result<BodyPermit, InboundError> {
        if bytes > self.max_body_bytes {
            return Err(InboundError::TooLarge { size: bytes, limit: self.max_body_bytes });
        }
        if bytes == 0 {
            return Ok(BodyPermit { _permit: None });
        }
        let overloaded = || InboundError::Overloaded { requested: bytes, budget: self.inflight_bytes };
        // At most the whole budget: it holds at least one largest body.
        let units = u32::try_from(budget_units(bytes)).unwrap_or(u32::MAX);
        if let Ok(permit) = self.inflight.clone().try_acquire_many_owned(units) {
            return Ok(BodyPermit { _permit: Some(permit) });
        }
        match tokio::time::timeout(self.budget_wait, self.inflight.clone().acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(BodyPermit { _permit: Some(permit) }),
            Ok(Err(_)) | Err(_) => Err(overloaded()),
        }
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
            Ok(_) => {
                NetStats::bump(&self.stats.frames_accepted);
                self.stats.bytes_accepted.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Err(error) => {
                self.count_rejection(error);
                if error.class() == ErrorClass::Unauthenticated {
                    self.stats.note_auth_rejection(format!(
                        "frame from {} claiming cluster {:?} rejected ({error}); this node is {} of cluster {:?} \
                         — check both nodes' cluster id and secret",
                        header.from,
                        header.cluster_id,
                        self.local,
                        self.auth.cluster_id()
                    ));
                }
            }
        }
        outcome
    }

    /// Count (and log at debug level) a frame the transport refused before it reached
    /// [`InboundGate::accept`], e.g. for unreadable auth headers.
    pub fn count_rejection(&self, error: &InboundError) {
        if error.class() == ErrorClass::Unauthenticated {
            NetStats::bump(&self.stats.rejected_auth);
        } else if matches!(error, InboundError::Overloaded { .. }) {
            NetStats::bump(&self.stats.rejected_overloaded);
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
        self.auth.check(header, body, signature, crate::unix_millis())?;
        if header.to != self.local {
            return Err(InboundRejection::WrongDestination { addressed: header.to, local: self.local }.into());
        }
        // Only frames meant for this node advance the sender's nonce.
        self.auth.commit_nonce(header)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const SECRET: &[u8] = b"gate-test-secret";

    #[derive(Default)]
    struct Recorder(Mutex<Vec<MessageBatch>>);

    impl InboundSink for Recorder {
        fn deliver(&self, batch: MessageBatch) -> Result<(), InboundRejection> {
            self.0.lock().unwrap().push(batch);
            Ok(())
        }
    }

    fn gate(max_body_bytes: usize) -> (InboundGate, Arc<Recorder>, Arc<NetStats>) {
        let stats = Arc::new(NetStats::default());
        let auth = ClusterAuth::new("c", SECRET, Duration::from_secs(30));
        let gate = InboundGate::new(NodeId(2), auth, max_body_bytes, stats.clone());
        let sink = Arc::new(Recorder::default());
        gate.open(sink.clone());
        (gate, sink, stats)
    }

    fn empty_batch(to: u64) -> MessageBatch {
        MessageBatch { cluster_id: "c".into(), from: NodeId(1), to: NodeId(to), messages: vec![] }
    }

    /// A correctly signed frame from node 1 to `to` with `nonce`.
    fn send(gate: &InboundGate, to: u64, nonce: u64) -> Result<usize, InboundError> {
        let header = FrameHeader {
            cluster_id: "c".into(),
            from: NodeId(1),
            to: NodeId(to),
            timestamp_ms: crate::unix_millis(),
            nonce,
        };
        let body = b"body";
        let signature = ClusterAuth::new("c", SECRET, Duration::from_secs(30)).sign(&header, body);
        gate.accept(&header, &signature, body, |_| Ok(empty_batch(to)))
    }

    #[test]
    fn a_misdirected_frame_does_not_burn_the_senders_nonce() {
        let (gate, sink, _) = gate(1024);
        let misdirected = send(&gate, 3, 100).unwrap_err();
        assert_eq!(misdirected.class(), ErrorClass::Misdirected);
        // A genuine frame to this node with a lower nonce (sent earlier, arriving later) passes.
        assert_eq!(send(&gate, 2, 50), Ok(0));
        assert!(matches!(send(&gate, 2, 50), Err(InboundError::Unauthenticated(AuthError::Replayed { .. }))));
        assert_eq!(sink.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_inflight_budget_bounds_concurrent_bodies() {
        let (gate, _, stats) = gate(10 * 1024);
        let gate = gate.with_inflight_budget(20 * 1024, Duration::from_millis(50));
        assert_eq!(gate.inflight_budget(), 20 * 1024);
        let first = gate.reserve(10 * 1024).await.expect("room for one");
        let second = gate.reserve(9 * 1024 + 1).await.expect("room for two");
        assert_eq!(gate.inflight_available(), 0);
        let refused = gate.reserve(1).await.unwrap_err();
        assert_eq!(refused, InboundError::Overloaded { requested: 1, budget: 20 * 1024 });
        assert_eq!(refused.http_status(), 503);
        drop(first);
        let third = gate.reserve(10 * 1024).await.expect("room after a release");
        assert!(matches!(gate.reserve(10 * 1024 + 1).await, Err(InboundError::TooLarge { .. })));
        assert!(gate.reserve(0).await.is_ok(), "empty bodies need no room");
        drop((second, third));
        assert_eq!(gate.inflight_available(), 20 * 1024);
        assert_eq!(NetStats::get(&stats.rejected_overloaded), 1);
        assert_eq!(NetStats::get(&stats.rejected_invalid), 1);
    }

    #[tokio::test]
    async fn a_reservation_waits_for_room_and_the_budget_holds_one_largest_body() {
        let (gate, _, _) = gate(10 * 1024);
        let gate = Arc::new(gate.with_inflight_budget(1, Duration::from_secs(10)));
        assert_eq!(gate.inflight_budget(), 10 * 1024, "raised to one largest body");
        let held = gate.reserve(10 * 1024).await.unwrap();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.reserve(10 * 1024).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[test]
    fn the_default_budget_holds_many_largest_bodies() {
        let (gate, _, _) = gate(crate::DEFAULT_MAX_BODY_BYTES);
        assert!(gate.inflight_budget() >= 8 * crate::DEFAULT_MAX_BODY_BYTES);
        assert_eq!(gate.inflight_available(), gate.inflight_budget());
    }
}

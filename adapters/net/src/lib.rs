//! `kommander-net`: what the REST and gRPC transports share, so both behave the same.
//!
//! * [`auth`]: frames signed with HMAC-SHA256 over the cluster id, both node ids, a timestamp, a
//!   monotonic nonce and the exact body bytes; a replay window rejects stale and repeated frames.
//! * [`gate`]: the inbound path — authenticate, decode, check the decoded batch against the signed
//!   header, validate it, hand it to the node — with typed errors that transports map to HTTP or
//!   gRPC status codes, and the memory bounds of inbound bodies (one body:
//!   [`DEFAULT_MAX_BODY_BYTES`]; all bodies in flight: [`DEFAULT_MAX_INFLIGHT_BYTES`]).
//! * [`outbox`]: one bounded queue and one worker per peer. The worker coalesces what is queued for
//!   the peer (all partitions) into one frame of at most [`OutboxConfig::max_messages_per_frame`]
//!   messages and about [`OutboxConfig::max_frame_bytes`] bytes, sends one frame at a time (per-peer
//!   FIFO) and backs off after failures; a slow or dead peer never delays the others. Peers can be
//!   added and removed while it runs (dynamic membership). Dropping the outbox stops its workers at
//!   once.
//! * [`runtime`]: the dedicated tokio runtime transports run their network I/O on, independent of
//!   the actix arbiters that run partitions.

#![warn(missing_docs)]

pub mod auth;
pub mod backoff;
pub mod gate;
pub mod outbox;
pub mod runtime;
pub mod stats;

pub use auth::{check_secret, AuthError, ClusterAuth, FrameHeader, NonceSource, MIN_SECRET_BYTES, SIGNATURE_LEN};
pub use gate::{BodyPermit, InboundError, InboundGate};
pub use outbox::{Outbox, OutboxConfig, PeerSender};
pub use runtime::NetRuntime;
pub use stats::NetStats;

/// Default largest body a transport accepts: one entry of the largest payload
/// [`kommander_core::MessageLimits`] allows (8 MiB) plus 256 KiB of slack for its log type, the
/// envelope, the batch header and the encoding's framing. Senders merge frames only up to
/// [`OutboxConfig::max_frame_bytes`] (default [`DEFAULT_MAX_FRAME_BYTES`]), well below this.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024 + 256 * 1024;

/// Default in-flight budget of a node's inbound gate: the bytes of all bodies being received or
/// processed at once (16 largest bodies, 132 MiB). See [`gate`].
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 16 * DEFAULT_MAX_BODY_BYTES;

/// Default time a body waits for room in the in-flight budget before it is refused.
pub const DEFAULT_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Default largest estimated frame an outbox merges batches into (4 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Milliseconds since the Unix epoch, from the system clock.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

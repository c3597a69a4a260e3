//! `kommander-net`: what the REST and gRPC transports share, so both behave the same.
//!
//! * [`auth`]: frames signed with HMAC-SHA256 over the cluster id, both node ids, a timestamp, a
//!   monotonic nonce and the exact body bytes; a replay window rejects stale and repeated frames.
//! * [`gate`]: the inbound path — authenticate, decode, check the decoded batch against the signed
//!   header, validate it, hand it to the node — with typed errors that transports map to HTTP or
//!   gRPC status codes.
//! * [`outbox`]: one bounded queue and one worker per peer. The worker coalesces everything queued
//!   for the peer (all partitions) into one frame, sends one frame at a time (per-peer FIFO) and backs
//!   off after failures; a slow or dead peer never delays the others.
//! * [`runtime`]: the dedicated tokio runtime transports run their network I/O on, independent of
//!   the actix arbiters that run partitions.

#![warn(missing_docs)]

pub mod auth;
pub mod backoff;
pub mod gate;
pub mod outbox;
pub mod runtime;
pub mod stats;

pub use auth::{AuthError, ClusterAuth, FrameHeader, NonceSource, SIGNATURE_LEN};
pub use gate::{InboundError, InboundGate};
pub use outbox::{Outbox, OutboxConfig, PeerSender};
pub use runtime::NetRuntime;
pub use stats::NetStats;

/// Milliseconds since the Unix epoch, from the system clock.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

//! Counters of a network transport, shared by its inbound gate and outboxes.

use std::sync::atomic::{AtomicU64, Ordering};

/// Transport counters (monotonic).
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames sent successfully.
    pub frames_sent: AtomicU64,
    /// Batches handed to `send` that went out inside some frame.
    pub batches_sent: AtomicU64,
    /// Frames whose send failed (peer down, timeout, rejected).
    pub frames_failed: AtomicU64,
    /// Batches refused because a peer's queue was full.
    pub queue_full: AtomicU64,
    /// Inbound frames accepted.
    pub frames_accepted: AtomicU64,
    /// Inbound frames rejected for authentication.
    pub rejected_auth: AtomicU64,
    /// Inbound frames rejected as malformed, oversized or invalid.
    pub rejected_invalid: AtomicU64,
    /// Inbound frames refused because the in-flight byte budget had no room.
    pub rejected_overloaded: AtomicU64,
}

impl NetStats {
    /// Add one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Read `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

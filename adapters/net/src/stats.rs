//! Counters of a network transport, shared by its inbound gate and outboxes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Transport counters (monotonic).
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames sent successfully.
    pub frames_sent: AtomicU64,
    /// Batches handed to `send` that went out inside some frame.
    pub batches_sent: AtomicU64,
    /// Frames whose send failed (peer down, timeout, rejected).
    pub frames_failed: AtomicU64,
    /// Long-lived outbound streams that ended (peer refused a frame, restarted or went silent);
    /// transports that send one request per frame leave it at 0.
    pub streams_ended: AtomicU64,
    /// Batches refused because a peer's queue was full.
    pub queue_full: AtomicU64,
    /// Inbound frames accepted.
    pub frames_accepted: AtomicU64,
    /// Body bytes of the inbound frames accepted.
    pub bytes_accepted: AtomicU64,
    /// Inbound frames rejected for authentication.
    pub rejected_auth: AtomicU64,
    /// Inbound frames rejected as malformed, oversized or invalid.
    pub rejected_invalid: AtomicU64,
    /// Inbound frames refused because the in-flight byte budget had no room.
    pub rejected_overloaded: AtomicU64,
    /// The last inbound frame refused for authentication, described (who sent it, which cluster
    /// it claimed, why it was refused).
    last_auth_rejection: Mutex<Option<String>>,
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

    /// Every counter with its name, read now: what status pages and metrics exporters list.
    pub fn counters(&self) -> [(&'static str, u64); 10] {
        [
            ("frames_sent", Self::get(&self.frames_sent)),
            ("batches_sent", Self::get(&self.batches_sent)),
            ("frames_failed", Self::get(&self.frames_failed)),
            ("streams_ended", Self::get(&self.streams_ended)),
            ("queue_full", Self::get(&self.queue_full)),
            ("frames_accepted", Self::get(&self.frames_accepted)),
            ("bytes_accepted", Self::get(&self.bytes_accepted)),
            ("rejected_auth", Self::get(&self.rejected_auth)),
            ("rejected_invalid", Self::get(&self.rejected_invalid)),
            ("rejected_overloaded", Self::get(&self.rejected_overloaded)),
        ]
    }

    /// Remember `detail` as the last authentication rejection; logged as a warning the first time
    /// and every hundredth time after (a misconfigured peer retries constantly).
    pub fn note_auth_rejection(&self, detail: String) {
        let count = Self::get(&self.rejected_auth);
        if count <= 1 || count % 100 == 0 {
            tracing::warn!(rejected = count, "{detail}");
        }
        *self.last_auth_rejection.lock().unwrap_or_else(|p| p.into_inner()) = Some(detail);
    }

    /// Frames refused for authentication so far, and the last one described.
    pub fn auth_rejections(&self) -> (u64, Option<String>) {
        let last = self.last_auth_rejection.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (Self::get(&self.rejected_auth), last)
    }
}

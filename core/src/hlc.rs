//! Hybrid logical clock (HLC). Its timestamps order events across nodes and serve as proposal
//! tickets. The clock owns no time source: callers pass the physical time in milliseconds, so the
//! core stays free of clocks and the simulator can drive it with virtual time.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A hybrid logical timestamp: physical milliseconds, a logical counter, and the node that issued
/// it (which makes timestamps from different nodes distinct). Ordered by (physical, logical, node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct HlcTimestamp {
    /// Physical component, milliseconds since the Unix epoch (or virtual time in simulation).
    pub physical_ms: u64,
    /// Logical counter that breaks ties within one physical millisecond.
    pub logical: u32,
    /// Issuing node.
    pub node: u64,
}

impl HlcTimestamp {
    /// The zero timestamp, used by entries that carry no ticket (barriers).
    pub const ZERO: HlcTimestamp = HlcTimestamp { physical_ms: 0, logical: 0, node: 0 };

    /// True for [`HlcTimestamp::ZERO`].
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }
}

impl fmt::Display for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.physical_ms, self.logical, self.node)
    }
}

/// A proposal ticket: the HLC timestamp taken when the proposal was accepted by the leader.
pub type Ticket = HlcTimestamp;

/// The largest physical component a timestamp received from elsewhere may carry:
/// 3000-01-01T00:00:00Z in milliseconds since the Unix epoch. Anything above is absurd (a corrupt
/// or hostile peer): [`HybridLogicalClock::observe`] ignores it, so one bad ticket cannot push the
/// clock to the end of its range, and [`crate::validate_batch`] rejects entries carrying one.
pub const MAX_PHYSICAL_MS: u64 = 32_503_680_000_000;

/// The clock itself. `now` is the "send or local event" operation, `observe` the "receive event".
#[derive(Clone, Debug)]
pub struct HybridLogicalClock {
    node: NodeId,
    last: HlcTimestamp,
}

impl HybridLogicalClock {
    /// A clock for `node` that has observed nothing yet.
    pub fn new(node: NodeId) -> Self {
        Self { node, last: HlcTimestamp { node: node.0, ..HlcTimestamp::ZERO } }
    }

    /// A new timestamp strictly greater than every timestamp issued or observed so far.
    pub fn now(&mut self, physical_ms: u64) -> HlcTimestamp {
        if physical_ms > self.last.physical_ms {
            self.last = HlcTimestamp { physical_ms, logical: 0, node: self.node.0 };
        } else {
            self.bump_logical();
        }
        self.last
    }

    /// Merge a timestamp received from another node so later local timestamps order after it.
    ///
    /// A remote timestamp whose physical component is above [`MAX_PHYSICAL_MS`] is ignored (the
    /// call then acts as a local event at `physical_ms`). Nothing here overflows: at the very end of
    /// the range the clock saturates instead of wrapping.
    pub fn observe(&mut self, remote: HlcTimestamp, physical_ms: u64) -> HlcTimestamp {
        let remote = if remote.physical_ms > MAX_PHYSICAL_MS { HlcTimestamp::ZERO } else { remote };
        let max_physical = physical_ms.max(remote.physical_ms).max(self.last.physical_ms);
        let base = if max_physical == self.last.physical_ms && max_physical == remote.physical_ms {
            Some(self.last.logical.max(remote.logical))
        } else if max_physical == self.last.physical_ms {
            Some(self.last.logical)
        } else if max_physical == remote.physical_ms {
            Some(remote.logical)
        } else {
            None
        };
        let logical = base.map_or(Some(0), |logical| logical.checked_add(1));
        self.last = HlcTimestamp { physical_ms: max_physical, logical: logical.unwrap_or(u32::MAX), node: self.node.0 };
        if logical.is_none() {
            // Counter exhausted within one millisecond: borrow the next millisecond.
            self.borrow_next_millisecond();
        }
        self.last
    }

    /// The most recent timestamp issued or observed.
    pub fn last(&self) -> HlcTimestamp {
        self.last
    }

    fn bump_logical(&mut self) {
        match self.last.logical.checked_add(1) {
            Some(logical) => self.last.logical = logical,
            // Counter exhausted within one millisecond: borrow the next millisecond.
            None => self.borrow_next_millisecond(),
        }
        self.last.node = self.node.0;
    }

    /// Move to logical 0 of the next millisecond; at the very end of the range (`u64::MAX` ms,
    /// unreachable with real clocks) stay on the last timestamp rather than wrap around.
    fn borrow_next_millisecond(&mut self) {
        if let Some(physical_ms) = self.last.physical_ms.checked_add(1) {
            self.last.physical_ms = physical_ms;
            self.last.logical = 0;
        } else {
            self.last.logical = u32::MAX;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_strictly_monotonic_even_if_physical_time_goes_back() {
        let mut clock = HybridLogicalClock::new(NodeId(1));
        let a = clock.now(100);
        let b = clock.now(100);
        let c = clock.now(50);
        let d = clock.now(200);
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        assert_eq!(d.logical, 0);
    }

    #[test]
    fn observe_orders_later_local_events_after_remote_ones() {
        let mut clock = HybridLogicalClock::new(NodeId(1));
        clock.now(10);
        let remote = HlcTimestamp { physical_ms: 500, logical: 7, node: 2 };
        clock.observe(remote, 20);
        let next = clock.now(30);
        assert!(next > remote, "{next} must follow {remote}");
    }

    #[test]
    fn absurd_remote_timestamps_are_ignored() {
        let mut clock = HybridLogicalClock::new(NodeId(1));
        let before = clock.now(1_000);
        for physical_ms in [MAX_PHYSICAL_MS + 1, u64::MAX] {
            let absurd = HlcTimestamp { physical_ms, logical: u32::MAX, node: 2 };
            let observed = clock.observe(absurd, 0);
            assert!(observed > before && observed.physical_ms == 1_000, "{observed}");
        }
        assert_eq!(clock.now(2_000).physical_ms, 2_000);
        // The cap itself is still a valid remote time.
        let far = HlcTimestamp { physical_ms: MAX_PHYSICAL_MS, logical: 3, node: 2 };
        assert!(clock.observe(far, 0) > far);
    }

    #[test]
    fn exhausted_counters_never_overflow() {
        let mut clock = HybridLogicalClock::new(NodeId(1));
        let remote = HlcTimestamp { physical_ms: 500, logical: u32::MAX, node: 2 };
        let observed = clock.observe(remote, 0);
        assert!(observed > remote, "{observed} must follow {remote}");
        assert_eq!((observed.physical_ms, observed.logical), (501, 0));
        let again = clock.observe(HlcTimestamp { physical_ms: 501, logical: u32::MAX, node: 2 }, 0);
        assert_eq!((again.physical_ms, again.logical), (502, 0));

        // At the very end of the range the clock saturates instead of panicking or wrapping.
        clock.last = HlcTimestamp { physical_ms: u64::MAX, logical: u32::MAX - 1, node: 1 };
        let a = clock.now(0);
        assert_eq!((a.physical_ms, a.logical), (u64::MAX, u32::MAX));
        let b = clock.now(u64::MAX);
        assert_eq!(b, a);
        let local_end = clock.observe(HlcTimestamp::ZERO, u64::MAX);
        assert_eq!((local_end.physical_ms, local_end.logical), (u64::MAX, u32::MAX));
    }
}

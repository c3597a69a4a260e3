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
    pub fn observe(&mut self, remote: HlcTimestamp, physical_ms: u64) -> HlcTimestamp {
        let max_physical = physical_ms.max(remote.physical_ms).max(self.last.physical_ms);
        let logical = if max_physical == self.last.physical_ms && max_physical == remote.physical_ms {
            self.last.logical.max(remote.logical).saturating_add(1)
        } else if max_physical == self.last.physical_ms {
            self.last.logical.saturating_add(1)
        } else if max_physical == remote.physical_ms {
            remote.logical.saturating_add(1)
        } else {
            0
        };
        self.last = HlcTimestamp { physical_ms: max_physical, logical, node: self.node.0 };
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
            None => {
                self.last.physical_ms += 1;
                self.last.logical = 0;
            }
        }
        self.last.node = self.node.0;
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
}

//! Identifiers shared by every layer: nodes, partitions, terms and log indexes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A Raft term. Terms start at 0 (no election held yet) and only ever grow.
pub type Term = u64;

/// A position in a partition's log. Index 0 means "before the first entry"; real entries start at 1.
pub type LogIndex = u64;

/// Identity of a node (one process running a `RaftManager`). Stable across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Identity of a partition (one Raft group). 0 is the system partition; user partitions are 1 and up.
/// The default is the system partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId(pub u32);

impl PartitionId {
    /// The system partition that holds the partition map and the roster.
    pub const SYSTEM: PartitionId = PartitionId(0);

    /// True for partition 0, which applications may not write to.
    pub fn is_system(self) -> bool {
        self == Self::SYSTEM
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_partition_is_zero_and_displays() {
        assert!(PartitionId(0).is_system());
        assert!(!PartitionId(1).is_system());
        assert_eq!(PartitionId(7).to_string(), "p7");
        assert_eq!(NodeId(3).to_string(), "n3");
    }
}

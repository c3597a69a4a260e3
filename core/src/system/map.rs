//! The partition map: which user partitions exist, which slice of the key-hash space each owns,
//! what state each is in, and a generation per partition bumped on every change that affects it.

use super::hash::key_hash;
use crate::ids::PartitionId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An inclusive range of key hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashRange {
    /// First hash in the range.
    pub start: u64,
    /// Last hash in the range (inclusive).
    pub end: u64,
}

impl HashRange {
    /// The whole hash space.
    pub const FULL: HashRange = HashRange { start: 0, end: u64::MAX };

    /// Does the range hold `hash`?
    pub fn contains(&self, hash: u64) -> bool {
        self.start <= hash && hash <= self.end
    }

    /// Split into `[start, boundary - 1]` and `[boundary, end]`; `None` unless both are non-empty.
    pub fn split_at(&self, boundary: u64) -> Option<(HashRange, HashRange)> {
        (boundary > self.start && boundary <= self.end)
            .then(|| (HashRange { start: self.start, end: boundary - 1 }, HashRange { start: boundary, end: self.end }))
    }

    /// The union of two ranges that touch (`a.end + 1 == b.start` or the reverse).
    pub fn join(&self, other: &HashRange) -> Option<HashRange> {
        if self.end.checked_add(1) == Some(other.start) {
            Some(HashRange { start: self.start, end: other.end })
        } else if other.end.checked_add(1) == Some(self.start) {
            Some(HashRange { start: other.start, end: self.end })
        } else {
            None
        }
    }

    /// `count` ranges of (nearly) equal size covering the whole hash space, in order.
    pub fn even(count: u32) -> Vec<HashRange> {
        let count = u128::from(count.max(1));
        let space = 1u128 << 64;
        (0..count)
            .map(|i| HashRange { start: (space * i / count) as u64, end: (space * (i + 1) / count - 1) as u64 })
            .collect()
    }
}

/// Lifecycle of a partition in the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionState {
    /// Serving its range.
    Active,
    /// Source of a split: still owns its whole range; keys from `boundary` up move to `target`.
    Splitting {
        /// The partition receiving the upper part.
        target: PartitionId,
        /// First hash that moves.
        boundary: u64,
    },
    /// New partition of a split, receiving state from `source`; owns no range yet.
    Importing {
        /// The partition it is split from.
        source: PartitionId,
    },
    /// Source of a merge: still owns its range until the merge completes, then is removed.
    Merging {
        /// The partition absorbing it.
        survivor: PartitionId,
    },
    /// Survivor of a merge, receiving `source`'s state.
    Absorbing {
        /// The partition being merged in.
        source: PartitionId,
    },
    /// Tombstone: the id is never reused and its WAL is reclaimed.
    Removed,
}

/// One user partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// The partition.
    pub id: PartitionId,
    /// Hashes it owns (`None`: addressed by id only, e.g. created with `create_partition`).
    pub range: Option<HashRange>,
    /// Lifecycle state.
    pub state: PartitionState,
    /// Bumped on every change affecting the partition; guarded writes carry it.
    pub generation: u64,
}

impl PartitionInfo {
    /// Not removed.
    pub fn is_live(&self) -> bool {
        self.state != PartitionState::Removed
    }
}

/// The map of user partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMap {
    /// Bumped on every change of the map.
    pub version: u64,
    /// Every partition ever created, removed ones as tombstones.
    pub partitions: BTreeMap<PartitionId, PartitionInfo>,
    /// The id the next new partition gets (ids are never reused).
    pub next_id: u32,
}

impl PartitionMap {
    /// The bootstrap map: partitions `1..=count` splitting the hash space evenly, generation 1.
    pub fn genesis(count: u32) -> Self {
        let partitions = HashRange::even(count)
            .into_iter()
            .enumerate()
            .map(|(i, range)| {
                let id = PartitionId(i as u32 + 1);
                (id, PartitionInfo { id, range: Some(range), state: PartitionState::Active, generation: 1 })
            })
            .collect();
        PartitionMap { version: 1, partitions, next_id: count.max(1) + 1 }
    }

    /// The partition.
    pub fn get(&self, id: PartitionId) -> Option<&PartitionInfo> {
        self.partitions.get(&id)
    }

    /// Partitions that are not removed.
    pub fn live(&self) -> impl Iterator<Item = &PartitionInfo> {
        self.partitions.values().filter(|p| p.is_live())
    }

    /// The partition owning `hash`.
    pub fn route_hash(&self, hash: u64) -> Option<&PartitionInfo> {
        self.live().find(|p| p.range.is_some_and(|r| r.contains(hash)))
    }

    /// The partition owning `key` (by [`key_hash`]).
    pub fn route(&self, key: &[u8]) -> Option<&PartitionInfo> {
        self.route_hash(key_hash(key))
    }

    pub(crate) fn get_mut(&mut self, id: PartitionId) -> Option<&mut PartitionInfo> {
        self.partitions.get_mut(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_ranges_tile_the_hash_space() {
        for count in [1, 2, 3, 7, 16] {
            let ranges = HashRange::even(count);
            assert_eq!(ranges.len(), count as usize);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges.last().unwrap().end, u64::MAX);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end + 1, pair[1].start);
            }
        }
    }

    #[test]
    fn split_and_join_are_inverse() {
        let r = HashRange { start: 10, end: 100 };
        let (low, high) = r.split_at(50).unwrap();
        assert_eq!((low, high), (HashRange { start: 10, end: 49 }, HashRange { start: 50, end: 100 }));
        assert_eq!(low.join(&high), Some(r));
        assert_eq!(high.join(&low), Some(r));
        assert!(r.split_at(10).is_none() && r.split_at(101).is_none());
        assert!(low.join(&HashRange { start: 51, end: 60 }).is_none());
    }

    #[test]
    fn every_key_routes_to_exactly_one_genesis_partition() {
        let map = PartitionMap::genesis(4);
        for key in ["a", "b", "user/42", ""] {
            let owners = map.live().filter(|p| p.range.unwrap().contains(key_hash(key.as_bytes()))).count();
            assert_eq!(owners, 1);
            assert!(map.route(key.as_bytes()).is_some());
        }
    }
}

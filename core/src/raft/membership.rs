//! A partition's membership: who votes, who only learns. Membership changes travel as
//! [`EntryKind::Config`] entries in the partition's own log, one node at a time (thesis §4.1:
//! any two majorities of configurations that differ by one voter overlap), and take effect as soon
//! as the entry is in a replica's log — committed or not; a truncated config entry reverts to the
//! previous configuration. A new change is refused while the last one is uncommitted.

use crate::entry::EntryKind;
use crate::entry::LogEntry;
use crate::ids::{LogIndex, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Voters and learners of a partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// Vote, count toward quorums, may lead.
    pub voters: BTreeSet<NodeId>,
    /// Receive the log; never vote, never campaign, never counted.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// Voters only.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership { voters: voters.into_iter().collect(), learners: BTreeSet::new() }
    }

    /// Is `node` a voter or a learner?
    pub fn contains(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.learners.contains(&node)
    }

    /// Voters, then learners.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// `count` voters need `count / 2 + 1` for a quorum.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// True when going from `self` to `next` changes at most one node's role (adding a learner,
    /// promoting, demoting or removing one node), keeps at least one voter and no node in both sets.
    pub fn is_single_step_to(&self, next: &Membership) -> bool {
        if next.voters.is_empty() || !next.voters.is_disjoint(&next.learners) {
            return false;
        }
        let all: BTreeSet<NodeId> = self.members().chain(next.members()).collect();
        let role = |m: &Membership, n: NodeId| (m.voters.contains(&n), m.learners.contains(&n));
        all.into_iter().filter(|&n| role(self, n) != role(next, n)).count() <= 1
    }

    /// The next single step from `self` toward `desired`, or `None` when there is nothing to do:
    /// drop learners that are not wanted, add missing members as learners, promote wanted voters
    /// once `caught_up` says so, then remove unwanted voters one at a time (never the last).
    /// A member is dropped only once `can_drop` allows it (a leader lets a departing node first
    /// receive everything committed, so it learns it was removed, unless it stopped answering).
    pub fn next_step_toward(
        &self,
        desired: &Membership,
        caught_up: impl Fn(NodeId) -> bool,
        can_drop: impl Fn(NodeId) -> bool,
    ) -> Option<Membership> {
        let mut next = self.clone();
        if let Some(&gone) = self.learners.iter().find(|n| !desired.contains(**n) && can_drop(**n)) {
            next.learners.remove(&gone);
            return Some(next);
        }
        if let Some(new) = desired.members().find(|n| !self.contains(*n)) {
            next.learners.insert(new);
            return Some(next);
        }
        if let Some(&ready) = self.learners.iter().find(|n| desired.voters.contains(*n) && caught_up(**n)) {
            next.learners.remove(&ready);
            next.voters.insert(ready);
            return Some(next);
        }
        // Voters leave only once every wanted voter votes, so the voter count never drops below
        // the target's while learners catch up.
        let waiting = desired.voters.iter().any(|n| !self.voters.contains(n));
        if let Some(&gone) = self.voters.iter().find(|n| !desired.voters.contains(*n) && can_drop(**n)) {
            if self.voters.len() > 1 && !waiting {
                next.voters.remove(&gone);
                if desired.learners.contains(&gone) {
                    next.learners.insert(gone);
                }
                return Some(next);
            }
        }
        None
    }

    /// Encode as a config entry's payload (the runtime's payload codec, [`crate::payload`]).
    pub fn encode(&self) -> Vec<u8> {
        crate::payload::encode(self)
    }

    /// Decode [`Membership::encode`]'s output; `None` if malformed or if a set has more than
    /// 4,096 members.
    pub fn decode(bytes: &[u8]) -> Option<Membership> {
        let membership: Membership = crate::payload::decode(bytes).ok()?;
        (membership.voters.len() <= 4096 && membership.learners.len() <= 4096).then_some(membership)
    }
}

/// The configurations in a log: a base (before any config entry) and every config entry's.
#[derive(Clone, Debug, Default)]
pub(crate) struct MembershipLog {
    base: Membership,
    changes: Vec<(LogIndex, Membership)>,
}

impl MembershipLog {
    /// Set the configuration before any config entry.
    pub(crate) fn set_base(&mut self, base: Membership) {
        self.base = base;
    }

    /// The configuration in effect: the last one in the log.
    pub(crate) fn current(&self) -> &Membership {
        self.changes.last().map_or(&self.base, |(_, m)| m)
    }

    /// The configuration before the last one (the base if there is at most one change).
    pub(crate) fn previous(&self) -> &Membership {
        match self.changes.len() {
            0 | 1 => &self.base,
            n => &self.changes[n - 2].1,
        }
    }

    /// Index of the last config entry (0 if none).
    pub(crate) fn latest_index(&self) -> LogIndex {
        self.changes.last().map_or(0, |(i, _)| *i)
    }

    /// Track `entry` just appended to the log.
    pub(crate) fn appended(&mut self, entry: &LogEntry) {
        if entry.kind == EntryKind::Config {
            match Membership::decode(&entry.payload) {
                Some(membership) => self.changes.push((entry.index, membership)),
                None => tracing::error!(index = entry.index, "unreadable config entry ignored"),
            }
        }
    }

    /// The configuration in effect at `index` (the last config entry at or below it).
    pub(crate) fn at(&self, index: LogIndex) -> &Membership {
        self.changes.iter().rev().find(|(i, _)| *i <= index).map_or(&self.base, |(_, m)| m)
    }

    /// Entries through `index` are covered by a snapshot whose configuration is `base`: it
    /// becomes the base, and only later changes are kept.
    pub(crate) fn rebase(&mut self, base: Membership, index: LogIndex) {
        self.base = base;
        self.changes.retain(|(i, _)| *i > index);
    }

    /// The log lost its suffix from `from`: forget the configurations it carried.
    pub(crate) fn truncated(&mut self, from: LogIndex) {
        self.changes.retain(|(i, _)| *i < from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_leave_only_after_every_wanted_voter_votes_and_never_the_last() {
        let current = m(&[1, 2, 3], &[4]);
        let target = m(&[1, 2, 4], &[]);
        assert_eq!(current.next_step_toward(&target, |_| false, |_| true), None, "4 is not caught up: 3 stays");
        assert_eq!(current.next_step_toward(&target, |_| true, |_| true), Some(m(&[1, 2, 3, 4], &[])));
        let alone = m(&[1], &[]);
        assert_eq!(alone.next_step_toward(&m(&[], &[1]), |_| true, |_| true), None, "never the last voter");
    }

    #[test]
    fn decode_accepts_up_to_4096_members_per_set() {
        let big = Membership::with_voters((1..=4096).map(NodeId));
        assert_eq!(Membership::decode(&big.encode()), Some(big));
        let too_big = Membership::with_voters((1..=4097).map(NodeId));
        assert_eq!(Membership::decode(&too_big.encode()), None);
    }

    fn config_entry(index: LogIndex, membership: &Membership) -> LogEntry {
        LogEntry {
            index,
            term: 1,
            kind: EntryKind::Config,
            log_type: crate::LogType::EMPTY,
            payload: membership.encode().into(),
            ticket: crate::hlc::HlcTimestamp::ZERO,
        }
    }

    #[test]
    fn truncation_keeps_earlier_configurations_and_previous_is_the_one_before_the_last() {
        let mut log = MembershipLog::default();
        log.set_base(m(&[1, 2, 3], &[]));
        log.appended(&config_entry(2, &m(&[1, 2, 3], &[4])));
        log.appended(&config_entry(5, &m(&[1, 3], &[4])));
        assert_eq!(log.previous(), &m(&[1, 2, 3], &[4]));
        assert_eq!(log.current(), &m(&[1, 3], &[4]));
        log.truncated(5);
        assert_eq!((log.current(), log.latest_index()), (&m(&[1, 2, 3], &[4]), 2));
        assert_eq!(log.previous(), &m(&[1, 2, 3], &[]));
    }

    fn m(voters: &[u64], learners: &[u64]) -> Membership {
        Membership {
            voters: voters.iter().map(|&n| NodeId(n)).collect(),
            learners: learners.iter().map(|&n| NodeId(n)).collect(),
        }
    }

    #[test]
    fn single_steps_change_one_node_at_a_time() {
        let base = m(&[1, 2, 3], &[]);
        assert!(base.is_single_step_to(&m(&[1, 2, 3], &[4])));
        assert!(m(&[1, 2, 3], &[4]).is_single_step_to(&m(&[1, 2, 3, 4], &[])));
        assert!(base.is_single_step_to(&m(&[1, 2], &[])));
        assert!(base.is_single_step_to(&m(&[1, 2], &[3])));
        assert!(!base.is_single_step_to(&m(&[1, 2, 3, 4, 5], &[])));
        assert!(!base.is_single_step_to(&m(&[1], &[])));
        assert!(!base.is_single_step_to(&m(&[], &[1, 2, 3])));
        assert!(!base.is_single_step_to(&m(&[1, 2, 3], &[3])));
    }

    #[test]
    fn steps_toward_a_target_are_single_and_wait_for_catch_up() {
        let desired = m(&[1, 2, 3, 4, 5], &[]);
        let mut current = m(&[1, 2, 3], &[]);
        while let Some(next) = current.next_step_toward(&desired, |n| n != NodeId(5), |_| true) {
            assert!(current.is_single_step_to(&next), "{current:?} -> {next:?}");
            current = next;
        }
        assert_eq!(current, m(&[1, 2, 3, 4], &[5]), "5 stays a learner until it caught up");
        while let Some(next) = current.next_step_toward(&desired, |_| true, |_| true) {
            assert!(current.is_single_step_to(&next), "{current:?} -> {next:?}");
            current = next;
        }
        assert_eq!(current, desired);
        let shrink = m(&[1, 2], &[]);
        while let Some(next) = current.next_step_toward(&shrink, |_| true, |_| true) {
            assert!(current.is_single_step_to(&next));
            current = next;
        }
        assert_eq!(current, shrink);
        assert_eq!(m(&[1], &[]).next_step_toward(&m(&[2], &[]), |_| false, |_| true), Some(m(&[1], &[2])));
        assert_eq!(m(&[1], &[2]).next_step_toward(&m(&[2], &[]), |_| false, |_| true), None, "2 must catch up first");
        assert_eq!(m(&[1], &[2]).next_step_toward(&m(&[2], &[]), |_| true, |_| true), Some(m(&[1, 2], &[])));
        assert_eq!(m(&[1, 2], &[]).next_step_toward(&m(&[2], &[]), |_| true, |_| true), Some(m(&[2], &[])));
        assert_eq!(m(&[1, 2], &[]).next_step_toward(&m(&[2], &[]), |_| true, |_| false), None, "1 not droppable yet");
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let membership = m(&[1, 2, 9], &[4]);
        assert_eq!(Membership::decode(&membership.encode()), Some(membership.clone()));
        let bytes = membership.encode();
        assert_eq!(Membership::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Membership::decode(&[0xff, 0xff, 0xff, 0xff]), None);
    }
}

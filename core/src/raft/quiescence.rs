//! Quiescence: an idle partition stops ticking and heartbeating, so a node can host thousands of
//! them (ARCHITECTURE.md, "Quiescence", has the rules and the safety argument).
//!
//! * A leader that has nothing to replicate — its whole log committed and applied, every live
//!   follower matching it, no membership change, snapshot or catch-up read in flight — for
//!   [`crate::PartitionConfig::quiesce_after_ticks`] ticks asks each live follower to go quiet
//!   ([`RaftMessage::Quiesce`] with `ack: false`) after every heartbeat, and goes quiet itself
//!   once all of them acknowledged.
//! * A follower goes quiet only when its log ends exactly where the leader's does (same index and
//!   term): it takes the commit index, stops its election timer and answers `ack: true`.
//! * A quiet replica's [`PartitionStateMachine::tick`] does nothing. A leader wakes on any input
//!   (a proposal, any message but an acknowledgement, a follower's node coming back) and sends a
//!   heartbeat at once; a follower wakes on its leader's messages and on anything that changes
//!   its term, vote, role or leader.
//! * Dead leaders are noticed at the node level: the driver's failure detector reports peers with
//!   [`PartitionStateMachine::set_peer_alive`]; a follower whose leader's node is down forgets the
//!   leader and runs its election timer, so it grants pre-votes and campaigns like after a lost
//!   heartbeat. Peers reported down do not keep a leader awake.

use super::{PartitionStateMachine, Role};
use crate::ids::{LogIndex, NodeId, Term};
use crate::message::{AppendResult, RaftMessage};

/// Term, vote, leader, last index and commit index of a replica.
pub(super) type QuietView = (Term, Option<NodeId>, Option<NodeId>, LogIndex, LogIndex);

/// Quiescence state of one replica.
#[derive(Debug, Default)]
pub(super) struct Quiescence {
    /// The replica is quiet: ticks do nothing.
    pub(super) quiet: bool,
    /// Leader: consecutive ticks with nothing to replicate.
    pub(super) idle_ticks: u32,
    /// Peers the node-level failure detector reports down.
    pub(super) down: std::collections::BTreeSet<NodeId>,
}

impl PartitionStateMachine {
    /// The replica is quiet: it neither ticks nor heartbeats until an input wakes it.
    pub fn is_quiesced(&self) -> bool {
        self.quiescence.quiet
    }

    /// The node-level failure detector's verdict on `node`. A follower whose leader's node is
    /// down forgets that leader (and wakes); a leader wakes when a follower's node comes back,
    /// and while a peer is down it does not wait for it to go quiet.
    pub fn set_peer_alive(&mut self, node: NodeId, alive: bool) {
        if node == self.config.node || self.halted.is_some() {
            return;
        }
        if alive {
            if self.quiescence.down.remove(&node) && self.role == Role::Leader && self.progress.contains_key(&node) {
                self.wake();
            }
            return;
        }
        if !self.quiescence.down.insert(node) {
            return;
        }
        if self.role != Role::Leader && self.leader == Some(node) && !self.canary_ignore_dead_leader() {
            self.wake();
            self.leader = None;
            self.publish_leader();
            self.campaign_soon_after(node);
        }
    }

    /// The detector reported the leader's node down: it already waited out the leader's silence
    /// (by default at least the minimum election timeout), so campaign within the election
    /// timeout's spread (`max − min` ticks) instead of a whole timeout more. The surviving voters
    /// take turns by rank (rotated per partition, so a dead node's partitions get leaders on
    /// every survivor): the first campaigns in the first slot of the spread, the next in the
    /// second, so they rarely split the vote. No randomness is drawn; pre-vote still asks.
    fn campaign_soon_after(&mut self, dead: NodeId) {
        let me = self.config.node;
        let voters: Vec<NodeId> = self.membership().voters.iter().copied().filter(|&n| n != dead).collect();
        let Some(position) = voters.iter().position(|&n| n == me) else { return };
        let n = voters.len() as u64;
        let rank = (position as u64 + u64::from(self.config.partition.0)) % n;
        let spread = u64::from(
            self.config.election_timeout_max_ticks.saturating_sub(self.config.election_timeout_min_ticks).max(1),
        );
        let slot = (spread / n).max(1);
        let delay = (1 + rank * slot).min(u64::from(self.randomized_election_timeout)) as u32;
        self.election_elapsed = self.randomized_election_timeout.saturating_sub(delay);
    }

    /// Planted bug: a quiet follower keeps believing in a leader reported dead (it never wakes).
    fn canary_ignore_dead_leader(&self) -> bool {
        self.quiescence.quiet && self.canary(|c| c.quiet_follower_ignores_dead_leader)
    }

    /// Leave the quiet state (no-op when awake). A leader heartbeats at once.
    pub(super) fn wake(&mut self) {
        if !std::mem::replace(&mut self.quiescence.quiet, false) {
            return;
        }
        self.quiescence.idle_ticks = 0;
        self.election_elapsed = 0;
        if self.role == Role::Leader {
            // A fresh check-quorum round: what followers said before going quiet is old news.
            self.check_quorum_elapsed = 0;
            self.heartbeat_elapsed = 0;
            for progress in self.progress.values_mut() {
                progress.recent_active = true;
                progress.quiesced = false;
            }
            self.heartbeat();
        }
    }

    /// A quiet leader wakes for any message but one confirming what it knows (an acknowledgement,
    /// or a late answer to a heartbeat from a follower that matches the whole log); followers
    /// decide after the message is handled ([`Self::wake_after_step`]).
    pub(super) fn wake_before_step(&mut self, message: &RaftMessage) {
        if !self.quiescence.quiet || self.role != Role::Leader {
            return;
        }
        let confirms = match *message {
            RaftMessage::Quiesce { ack, term, .. } => ack && term == self.term,
            RaftMessage::AppendResponse { term, result: AppendResult::Success { match_index }, .. } => {
                term == self.term && match_index == self.log.last_index()
            }
            _ => false,
        };
        if !confirms {
            self.wake();
        }
    }

    /// What a message must leave unchanged for a quiet follower to stay quiet.
    pub(super) fn quiet_view(&self) -> QuietView {
        (self.term, self.voted_for, self.leader, self.log.last_index(), self.log.commit)
    }

    /// A quiet follower wakes on its leader's entries and snapshots and on whatever changed its
    /// term, vote, leader, log or commit index; a heartbeat that changes nothing or a refused vote
    /// request leaves it quiet.
    pub(super) fn wake_after_step(&mut self, leader_traffic: bool, before: QuietView) {
        if !self.quiescence.quiet || self.role == Role::Leader {
            return;
        }
        if leader_traffic || self.role != Role::Follower || before != self.quiet_view() {
            self.wake();
        }
    }

    /// Leader, at the start of a tick: count an idle tick (or reset the count and every
    /// acknowledgement when there is work), and go quiet once idle long enough with every live
    /// follower's acknowledgement. Returns whether it is quiet now.
    pub(super) fn tick_quiescence(&mut self) -> bool {
        if self.config.quiesce_after_ticks == 0 || self.role != Role::Leader {
            return false;
        }
        if !self.idle() {
            self.quiescence.idle_ticks = 0;
            for progress in self.progress.values_mut() {
                progress.quiesced = false;
            }
            return false;
        }
        self.quiescence.idle_ticks = self.quiescence.idle_ticks.saturating_add(1);
        if self.quiescence.idle_ticks <= self.config.quiesce_after_ticks || !self.waiting_to_quiesce().is_empty() {
            return false;
        }
        tracing::trace!(partition = %self.config.partition, node = %self.config.node, "quiesced");
        self.quiescence.quiet = true;
        true
    }

    /// Leader, after a heartbeat: once idle long enough, ask the live followers that have not
    /// acknowledged yet to go quiet.
    pub(super) fn ask_to_quiesce(&mut self) {
        if self.config.quiesce_after_ticks == 0 || self.quiescence.idle_ticks < self.config.quiesce_after_ticks {
            return;
        }
        let (index, index_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.waiting_to_quiesce() {
            self.send(peer, RaftMessage::Quiesce { term: self.term, index, index_term, ack: false });
        }
    }

    /// Live followers that have not acknowledged going quiet.
    fn waiting_to_quiesce(&self) -> Vec<NodeId> {
        let down = &self.quiescence.down;
        self.progress.iter().filter(|(n, p)| !p.quiesced && !down.contains(n)).map(|(n, _)| *n).collect()
    }

    /// Nothing to replicate: the log is committed and applied, every live follower matches it,
    /// a quorum of voters is live, and nothing (membership, snapshot, read, write) is in flight.
    fn idle(&self) -> bool {
        let last = self.log.last_index();
        let settled = self.published
            && self.log.commit == last
            && self.log.applied == last
            && !self.membership_change_pending()
            && !self.hard_state_dirty
            && !self.log.has_unpersisted()
            && self.held_messages.is_empty()
            && self.pending_reads.is_empty()
            && self.reads.idle()
            && self.transfer.is_none()
            && self.snapshots.requested.is_none()
            && self.snapshots.pending_write.is_none();
        if !settled {
            return false;
        }
        let down = &self.quiescence.down;
        let caught_up = |(node, p): (&NodeId, &super::Progress)| {
            down.contains(node)
                || (p.match_index == last && p.inflight.is_empty() && p.snapshot.is_none() && !p.read_pending)
        };
        if !self.progress.iter().all(caught_up) {
            return false;
        }
        let live_voters = self.membership().voters.iter().filter(|n| !down.contains(n)).count();
        live_voters >= self.quorum()
    }

    /// `Quiesce` from `from`: a follower's ask (`ack: false`) or a leader's acknowledgement.
    pub(super) fn handle_quiesce(&mut self, from: NodeId, term: Term, index: LogIndex, index_term: Term, ack: bool) {
        if ack {
            let current = self.role == Role::Leader && term == self.term && index == self.log.last_index();
            if let Some(progress) = self.progress.get_mut(&from).filter(|_| current) {
                progress.recent_active = true;
                progress.quiesced = true;
            }
            return;
        }
        let followed = self.role == Role::Follower && term == self.term && self.leader == Some(from);
        if !followed || self.snapshots.repair_from.is_some() || self.snapshots.receiving.is_some() {
            return;
        }
        // The log ends where the leader's does, with the same entry there (or at or below the
        // commit index, where it matches by Leader Completeness): everything through `index` is
        // committed on the leader, so it is here too.
        let matches = self.log.term_at(index) == Some(index_term) || index <= self.log.commit;
        if self.log.last_index() != index || !matches {
            return;
        }
        if index > self.log.commit {
            self.log.commit = index;
            self.commit_dirty = true;
            self.apply_committed(false);
        }
        self.election_elapsed = 0;
        self.quiescence.quiet = true;
        self.send(from, RaftMessage::Quiesce { term, index, index_term, ack: true });
    }
}

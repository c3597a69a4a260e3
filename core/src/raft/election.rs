//! Elections: timeouts, pre-vote (thesis §9.6), votes with the freshness check (§5.4.1), becoming
//! leader with a barrier entry, and check-quorum (thesis §6.2).

use super::{PartitionStateMachine, Progress, Role};
use crate::entry::{EntryKind, LogEntry};
use crate::hlc::HlcTimestamp;
use crate::ids::{LogIndex, NodeId, Term};
use crate::message::RaftMessage;

impl PartitionStateMachine {
    pub(super) fn tick_election(&mut self) {
        // The timer runs on every replica (it tells whether a leader was heard from recently, which
        // pre-vote answers depend on), but learners and removed nodes never campaign.
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if !self.can_campaign() {
            return;
        }
        if self.election_elapsed >= self.randomized_election_timeout {
            self.start_pre_vote();
        }
    }

    /// Ticks until the next [`tick`](Self::tick) that can act here (start an election,
    /// heartbeat, check the quorum, go quiet): the ticks before it only count. A driver may
    /// therefore deliver ticks lazily — sleep until this deadline — provided it applies the
    /// ticks it skipped, in order, before any other input reaches the replica (the runtime's node
    /// clock does; the simulator checks the promise on every tick). `u32::MAX` when no tick will
    /// act: the replica is halted or quiet, or cannot campaign. A leader is due every tick.
    pub fn ticks_until_due(&self) -> u32 {
        if self.halted.is_some() || self.quiescence.quiet {
            return u32::MAX;
        }
        if self.role == Role::Leader {
            return 1;
        }
        if !self.can_campaign() {
            return u32::MAX;
        }
        if self.canary(|c| c.due_ignores_elapsed_ticks) {
            return self.randomized_election_timeout.max(1);
        }
        self.randomized_election_timeout.saturating_sub(self.election_elapsed).max(1)
    }

    pub(super) fn tick_leader(&mut self) {
        // Going quiet comes first: a heartbeat sent now would be answered after, waking it.
        if self.tick_quiescence() {
            return;
        }
        self.heartbeat_elapsed += 1;
        self.check_quorum_elapsed += 1;
        self.tick_transfer();
        if self.config.check_quorum && self.check_quorum_elapsed >= self.config.election_timeout_min_ticks {
            self.check_quorum_elapsed = 0;
            if !self.quorum_active() {
                tracing::debug!(partition = %self.config.partition, node = %self.config.node, term = self.term,
                    "leader lost contact with a quorum; stepping down");
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks && !self.canary_heartbeat_held_back() {
            self.heartbeat_elapsed = 0;
            self.heartbeat();
            self.send_read_round();
            self.advance_transfer();
            self.ask_to_quiesce();
        }
    }

    /// Check-quorum: did a quorum (counting this leader) talk to us since the last round?
    fn quorum_active(&mut self) -> bool {
        let voters = self.log.membership.current().voters.clone();
        let mut active = usize::from(voters.contains(&self.config.node));
        for (node, progress) in self.progress.iter_mut() {
            if std::mem::replace(&mut progress.recent_active, false) && voters.contains(node) {
                active += 1;
            }
        }
        active >= self.quorum()
    }

    /// The term a new election would run in, or `None` (after logging why) when the term space is
    /// exhausted: a replica at `u64::MAX` refuses to campaign rather than wrap around to term 0.
    /// Inbound validation keeps peers' terms far below that, so only corrupt local state gets here.
    fn next_campaign_term(&mut self) -> Option<Term> {
        let next = self.term.checked_add(1);
        if next.is_none() {
            tracing::error!(partition = %self.config.partition, node = %self.config.node, term = self.term,
                "term space exhausted; refusing to campaign");
            self.reset_election_timer();
        }
        next
    }

    /// Start a pre-vote round for `term + 1` without changing any durable state.
    pub(super) fn start_pre_vote(&mut self) {
        if !self.config.pre_vote || (self.membership().voters.len() == 1 && self.is_voter()) {
            self.start_election(false);
            return;
        }
        let Some(term) = self.next_campaign_term() else { return };
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.node, true);
        self.reset_election_timer();
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.voter_peers() {
            self.send(
                peer,
                RaftMessage::VoteRequest { term, last_log_index, last_log_term, pre_vote: true, transfer: false },
            );
        }
        self.publish_leader();
    }

    /// Become candidate in a new term, vote for ourselves and ask for votes once that is durable.
    /// With `transfer`, the leader handed over its leadership: the vote requests say so.
    pub(super) fn start_election(&mut self, transfer: bool) {
        let Some(term) = self.next_campaign_term() else { return };
        self.set_term(term);
        self.voted_for = Some(self.config.node);
        self.hard_state_dirty = true;
        self.vote_write_id = self.next_write_id;
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.node, true);
        self.reset_election_timer();
        if self.canary_lead_before_the_vote_is_durable() {
            return;
        }
        // A lone voter wins once its own vote is durable (`on_write_complete`): leading before
        // that would let a crash make it lead the same term twice with different logs.
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.voter_peers() {
            self.send_after_persist(
                peer,
                RaftMessage::VoteRequest { term, last_log_index, last_log_term, pre_vote: false, transfer },
            );
        }
    }

    /// Granted votes of voters of the configuration in effect (a candidate being removed does not
    /// count its own).
    fn votes_granted(&self) -> usize {
        let voters = &self.log.membership.current().voters;
        self.votes.iter().filter(|(n, &g)| g && voters.contains(n)).count()
    }

    fn votes_rejected(&self) -> usize {
        let voters = &self.log.membership.current().voters;
        self.votes.iter().filter(|(n, &g)| !g && voters.contains(n)).count()
    }

    /// §5.4.1: the candidate's log is at least as up-to-date as ours.
    fn candidate_is_fresh(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        (last_log_term, last_log_index) >= (self.log.last_term(), self.log.last_index())
    }

    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
        pre_vote: bool,
    ) {
        let fresh = self.candidate_is_fresh(last_log_index, last_log_term);
        if pre_vote {
            // Grant only if we would vote in that term and we have not heard from a live leader
            // within the minimum election timeout: a stable leader is never disturbed.
            let leader_alive = self.leader_recently_heard() && !self.canary(|c| c.grant_pre_vote_despite_leader);
            let granted = term > self.term && fresh && !leader_alive;
            let reply_term = if granted { term } else { self.term };
            self.send(from, RaftMessage::VoteResponse { term: reply_term, granted, pre_vote: true });
            return;
        }
        // Real vote: `step` already adopted a higher term.
        let can_vote = self.voted_for.is_none_or(|v| v == from) || self.canary(|c| c.grant_two_votes_per_term);
        let granted = term == self.term && can_vote && fresh && self.role != Role::Leader;
        if granted {
            self.voted_for = Some(from);
            self.hard_state_dirty = true;
            self.reset_election_timer();
        }
        self.send_after_persist(from, RaftMessage::VoteResponse { term: self.term, granted, pre_vote: false });
    }

    /// Planted bug `heartbeat_near_election_timeout`: heartbeats go out only every four fifths of
    /// the minimum election timeout, a margin that holds only while every clock runs at one rate.
    fn canary_heartbeat_held_back(&self) -> bool {
        self.canary(|c| c.heartbeat_near_election_timeout)
            && self.heartbeat_elapsed < self.config.election_timeout_min_ticks * 4 / 5
    }

    /// Planted bug: win at once, before the own vote is durable. Returns whether it won.
    fn canary_lead_before_the_vote_is_durable(&mut self) -> bool {
        let won = self.canary(|c| c.lead_before_vote_is_durable) && self.votes_granted() >= self.quorum();
        if won {
            self.become_leader();
        }
        won
    }

    /// This replica leads, or heard from a leader of its term within the minimum election timeout.
    /// With leases on, a replica restarted (with a term above 0) less than that timeout ago
    /// counts as having heard one: before it stopped it may have confirmed a leader's lease it no
    /// longer remembers. A replica that never saw a term cannot have (and a cluster's first
    /// elections are not delayed: at ten thousand partitions the delay fed an election storm).
    pub(super) fn leader_recently_heard(&self) -> bool {
        let min = self.config.election_timeout_min_ticks;
        let lease_guard = self.config.read_lease > 0 && self.restarted && self.ticks_since_start < min;
        self.role == Role::Leader || ((self.leader.is_some() || lease_guard) && self.election_elapsed < min)
    }

    /// Thesis §4.2.3 (with check-quorum): a real vote request of a higher term that arrives while a
    /// live leader is heard is ignored, term included, so a removed or partitioned voter cannot
    /// depose a healthy leader even without pre-vote.
    pub(super) fn ignores_vote_request(&self, term: Term) -> bool {
        self.config.check_quorum && term > self.term && self.leader_recently_heard()
    }

    /// A real vote request from a node outside this replica's configuration whose log is behind
    /// ours is never granted here; adopting its term would only reset this replica's election
    /// timer, so a removed node that never learnt of its removal could keep a survivor from
    /// ever campaigning (seen without pre-vote after a leader's crash). Ignore it, term included.
    pub(super) fn never_granted_to_outsider(
        &self,
        from: NodeId,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) -> bool {
        !self.membership().members().any(|n| n == from) && !self.candidate_is_fresh(last_log_index, last_log_term)
    }

    /// A candidate whose own vote just became durable (`start_election` deferred this).
    pub(super) fn win_if_elected(&mut self) {
        let vote_durable = self.completed_write_id >= self.vote_write_id;
        if self.role == Role::Candidate && vote_durable && self.votes_granted() >= self.quorum() {
            self.become_leader();
        }
    }

    pub(super) fn handle_vote_response(&mut self, from: NodeId, term: Term, granted: bool, pre_vote: bool) {
        let expected_role = if pre_vote { Role::PreCandidate } else { Role::Candidate };
        // A pre-candidate exists only where `term + 1` exists (see `next_campaign_term`).
        let expected_term = if pre_vote { self.term.saturating_add(1) } else { self.term };
        if self.role != expected_role || term != expected_term && granted || term < self.term {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        if self.votes_granted() >= self.quorum() {
            if pre_vote {
                self.start_election(false);
            } else {
                self.become_leader();
            }
        } else if self.votes_rejected() >= self.quorum() {
            self.become_follower(self.term, None);
        }
    }

    /// Win the election: set up follower progress and append the barrier (published once applied).
    fn become_leader(&mut self) {
        tracing::debug!(partition = %self.config.partition, node = %self.config.node, term = self.term, "elected leader");
        self.role = Role::Leader;
        self.leader = Some(self.config.node);
        self.published = false;
        self.heartbeat_elapsed = 0;
        self.check_quorum_elapsed = 0;
        self.votes.clear();
        let next = self.log.last_index() + 1;
        let peers: Vec<NodeId> = self.peers();
        self.progress = peers.into_iter().map(|p| (p, Progress::new(next))).collect();
        let barrier = LogEntry {
            index: next,
            term: self.term,
            kind: EntryKind::Barrier,
            log_type: crate::LogType::EMPTY,
            payload: bytes::Bytes::new(),
            ticket: HlcTimestamp::ZERO,
        };
        self.log.push(barrier);
        self.barrier_index = next;
        self.needs_broadcast = true;
        self.publish_leader();
        self.maybe_commit();
    }
}

#[cfg(test)]
mod tests {
    use crate::message::{Envelope, RaftMessage};
    use crate::raft::{RestoreState, Role};
    use crate::wal::HardState;
    use crate::{NodeId, PartitionConfig, PartitionId, PartitionStateMachine};

    fn at_last_term(voters: &[u64]) -> PartitionStateMachine {
        let config = PartitionConfig::new(NodeId(1), PartitionId(1), voters.iter().copied().map(NodeId).collect());
        let hard_state = HardState { term: u64::MAX, voted_for: None, commit: 0 };
        PartitionStateMachine::restore(
            config,
            RestoreState { hard_state: Some(hard_state), entries: vec![], ..Default::default() },
        )
        .expect("restore")
    }

    fn tick_past_election_timeouts(sm: &mut PartitionStateMachine) {
        for _ in 0..100 {
            sm.tick();
        }
    }

    #[test]
    fn a_replica_at_the_last_term_refuses_to_campaign_instead_of_overflowing() {
        for voters in [&[1][..], &[1, 2, 3][..]] {
            let mut sm = at_last_term(voters);
            sm.ready();
            tick_past_election_timeouts(&mut sm);
            assert_eq!(sm.term(), u64::MAX, "{voters:?}");
            assert_eq!(sm.role(), Role::Follower, "{voters:?}");
            let ready = sm.ready();
            assert!(ready.messages.is_empty(), "{voters:?}: {:?}", ready.messages);
            assert!(sm.halted().is_none());
        }
    }

    #[test]
    fn a_term_adopted_from_a_peer_at_the_last_term_cannot_overflow_elections() {
        let config = PartitionConfig::new(NodeId(1), PartitionId(1), vec![NodeId(1), NodeId(2), NodeId(3)]);
        let mut sm = PartitionStateMachine::new(config).expect("config");
        let response = RaftMessage::VoteResponse { term: u64::MAX, granted: false, pre_vote: false };
        sm.step(Envelope { partition: PartitionId(1), from: NodeId(2), to: NodeId(1), message: response }).unwrap();
        assert_eq!(sm.term(), u64::MAX);
        tick_past_election_timeouts(&mut sm);
        assert_eq!(sm.role(), Role::Follower);
        // A (hostile) granted pre-vote answer for the non-existent next term changes nothing.
        let granted = RaftMessage::VoteResponse { term: u64::MAX, granted: true, pre_vote: true };
        sm.step(Envelope { partition: PartitionId(1), from: NodeId(3), to: NodeId(1), message: granted }).unwrap();
        assert_eq!((sm.term(), sm.role()), (u64::MAX, Role::Follower));
    }
}

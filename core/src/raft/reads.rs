//! Consistent reads (thesis §6.4). A read asks for a *read index*; the driver serves it once the
//! local application applied that index (`Ready::read_states`).
//!
//! * **Read-index rounds** on the leader: once its barrier committed, the leader notes its commit
//!   index, asks the voters to confirm it still leads ([`RaftMessage::ReadRound`]) and hands that
//!   index to every read that was waiting when the round started once a quorum confirmed. One
//!   round runs at a time; reads arriving meanwhile wait for the next one, so concurrent readers
//!   share rounds and a round never serves a read that arrived after it started.
//! * **Lease reads**: a confirmed round that started at driver time `t` lets the leader answer
//!   lease reads without a round until `t + read_lease` (configured below the time a follower
//!   takes to stop honouring it, by the clock-drift bound). A step-down ends the lease, and so
//!   does a leadership transfer, for the rest of its term.
//! * **Follower reads**: a follower asks its leader for a read index
//!   ([`RaftMessage::ReadIndexRequest`]); the leader puts it in its next round and answers with
//!   the index ([`RaftMessage::ReadIndexResponse`]). A change of the follower's term or leader
//!   fails the reads it forwarded; unanswered ones are resent with heartbeats and time out.

use super::{PartitionStateMachine, ReadState, Role};
use crate::error::ReadError;
use crate::ids::{LogIndex, NodeId, Term};
use crate::message::RaftMessage;
use std::collections::{BTreeMap, BTreeSet};

/// Heartbeats a follower waits for the leader's answer to a forwarded read before resending it.
const RESEND_AFTER_HEARTBEATS: u32 = 2;
/// Heartbeats after which a forwarded read that was never answered fails with `Timeout`.
const GIVE_UP_AFTER_HEARTBEATS: u32 = 20;

/// How a read is ordered against writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadConsistency {
    /// Linearizable: the read index is confirmed by a quorum round.
    Linearizable,
    /// Linearizable while clocks drift no more than the configured bound: a leader holding a
    /// lease answers without a round; otherwise (or on a follower) a read-index round is run.
    Lease,
}

/// Who waits for a round's read index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reader {
    /// A read issued on this replica.
    Local(u64),
    /// A follower's read.
    Remote(NodeId, u64),
}

/// A read-index round in flight.
#[derive(Debug)]
struct Round {
    id: u64,
    term: Term,
    index: LogIndex,
    /// Driver time at the start (never later than the real start: the latest `now` seen).
    started_at: u64,
    acks: BTreeSet<NodeId>,
    readers: Vec<Reader>,
}

/// Read state of one replica.
#[derive(Debug, Default)]
pub(super) struct Reads {
    next_round: u64,
    round: Option<Round>,
    /// Reads waiting for the next round.
    queued: Vec<Reader>,
    /// Lease reads are answered without a round before this driver time.
    lease_until: u64,
    /// No lease in this term: a leadership transfer started in it.
    no_lease_term: Option<Term>,
    /// The latest driver time seen.
    now: u64,
    /// Follower: reads forwarded to the leader, with the heartbeats seen since.
    forwarded: BTreeMap<u64, u32>,
    /// The term and leader the forwarded reads were sent in.
    forwarded_to: (Term, Option<NodeId>),
}

impl Reads {
    /// No round running and no read waiting for one.
    pub(super) fn idle(&self) -> bool {
        self.round.is_none() && self.queued.is_empty()
    }
}

impl PartitionStateMachine {
    /// Ask for a read index for read `id` (the driver's identifier, unique on this replica) at
    /// driver time `now` (the unit of [`crate::PartitionConfig::read_lease`]). The outcome comes
    /// in `Ready::read_states`: serve the read once the application applied the index. A leader
    /// answers from its lease or runs a round (reads wait for its barrier to commit); a follower
    /// forwards the read to its leader. Fails at once only when no leader is known.
    pub fn read(&mut self, id: u64, consistency: ReadConsistency, now: u64) -> Result<(), ReadError> {
        if self.halted.is_some() {
            return Err(ReadError::NotLeader { leader: None });
        }
        self.reads.now = self.reads.now.max(now);
        if consistency == ReadConsistency::Lease && self.holds_lease(now) {
            let index = self.log.commit;
            self.out.read_states.push(ReadState { id, result: Ok(index) });
            return Ok(());
        }
        match (self.role, self.leader) {
            (Role::Leader, _) => {
                self.wake();
                self.reads.queued.push(Reader::Local(id));
                self.start_read_round();
                Ok(())
            }
            (Role::Follower, Some(leader)) => {
                self.reads.forwarded_to = (self.term, Some(leader));
                self.reads.forwarded.insert(id, 0);
                self.send(leader, RaftMessage::ReadIndexRequest { term: self.term, request: id });
                Ok(())
            }
            (_, leader) => Err(ReadError::NotLeader { leader }),
        }
    }

    /// Reads waiting for a read index here (in a round, queued for one, or forwarded).
    pub fn pending_reads(&self) -> usize {
        self.reads.round.as_ref().map_or(0, |r| r.readers.len()) + self.reads.queued.len() + self.reads.forwarded.len()
    }

    /// Read-index rounds started by this replica so far.
    pub fn read_rounds(&self) -> u64 {
        self.reads.next_round
    }

    /// The lease covers `now`: this published leader's last confirmed round started less than
    /// `read_lease` before, and no transfer started in its term.
    fn holds_lease(&self, now: u64) -> bool {
        if self.config.read_lease == 0 || now >= self.reads.lease_until {
            return false;
        }
        if self.canary(|c| c.lease_after_step_down) {
            return true;
        }
        self.role == Role::Leader && self.published && self.reads.no_lease_term != Some(self.term)
    }

    /// Leader: start a round for the queued reads when none runs (and the barrier committed).
    pub(super) fn start_read_round(&mut self) {
        if self.role != Role::Leader || !self.published || self.reads.round.is_some() || self.reads.queued.is_empty() {
            return;
        }
        let readers = std::mem::take(&mut self.reads.queued);
        if self.canary(|c| c.read_without_quorum_round) {
            let index = self.log.commit;
            self.serve_readers(&readers, index);
            return;
        }
        self.reads.next_round += 1;
        let mut acks = BTreeSet::new();
        if self.is_voter() {
            acks.insert(self.config.node);
        }
        self.reads.round = Some(Round {
            id: self.reads.next_round,
            term: self.term,
            index: self.log.commit,
            started_at: self.reads.now,
            acks,
            readers,
        });
        if !self.finish_read_round() {
            self.send_read_round();
        }
    }

    /// Leader: (re)send the running round to the voters that have not confirmed it.
    pub(super) fn send_read_round(&mut self) {
        let Some(round) = &self.reads.round else { return };
        let (term, id) = (round.term, round.id);
        let missing: Vec<NodeId> = self.voter_peers().into_iter().filter(|n| !round.acks.contains(n)).collect();
        for peer in missing {
            self.send(peer, RaftMessage::ReadRound { term, round: id, ack: false });
        }
    }

    /// Leader: serve the running round once a quorum of voters confirmed it, then start the next
    /// one. Returns whether it finished.
    fn finish_read_round(&mut self) -> bool {
        let Some(round) = &self.reads.round else { return false };
        let voters = &self.membership().voters;
        if round.acks.iter().filter(|n| voters.contains(n)).count() < self.quorum() {
            return false;
        }
        let Some(round) = self.reads.round.take() else { return false };
        if self.config.read_lease > 0 && self.reads.no_lease_term != Some(self.term) {
            self.reads.lease_until =
                self.reads.lease_until.max(round.started_at.saturating_add(self.config.read_lease));
        }
        self.serve_readers(&round.readers, round.index);
        self.start_read_round();
        true
    }

    fn serve_readers(&mut self, readers: &[Reader], index: LogIndex) {
        for reader in readers {
            match *reader {
                Reader::Local(id) => self.out.read_states.push(ReadState { id, result: Ok(index) }),
                Reader::Remote(peer, request) => {
                    let term = self.term;
                    self.send(peer, RaftMessage::ReadIndexResponse { term, request, index: Some(index) });
                }
            }
        }
    }

    /// The leader steps down: every read waiting for it fails, and its lease ends.
    pub(super) fn leader_reads_lost(&mut self) {
        let mut readers: Vec<Reader> = self.reads.round.take().map(|r| r.readers).unwrap_or_default();
        readers.append(&mut self.reads.queued);
        for reader in readers {
            match reader {
                Reader::Local(id) => {
                    self.out.read_states.push(ReadState { id, result: Err(ReadError::LeadershipLost) });
                }
                Reader::Remote(peer, request) => {
                    let term = self.term;
                    self.send(peer, RaftMessage::ReadIndexResponse { term, request, index: None });
                }
            }
        }
        if !self.canary(|c| c.lease_after_step_down) {
            self.reads.lease_until = 0;
        }
    }

    /// A leadership transfer started: no lease for the rest of this term (the target's
    /// election ignores the followers' loyalty to this leader).
    pub(super) fn end_lease_for_transfer(&mut self) {
        if !self.canary(|c| c.lease_after_step_down) {
            self.reads.no_lease_term = Some(self.term);
            self.reads.lease_until = 0;
        }
    }

    /// Follower: the forwarded reads fail once the term or the leader they were sent to changed.
    pub(super) fn settle_forwarded_reads(&mut self) {
        if self.reads.forwarded.is_empty() {
            return;
        }
        let unchanged = self.role == Role::Follower && self.reads.forwarded_to == (self.term, self.leader);
        if !unchanged {
            for id in std::mem::take(&mut self.reads.forwarded).into_keys() {
                self.out.read_states.push(ReadState { id, result: Err(ReadError::LeadershipLost) });
            }
        }
    }

    /// Follower, on a heartbeat from its leader: resend reads it did not answer, give up on old
    /// ones.
    pub(super) fn resend_forwarded_reads(&mut self, leader: NodeId) {
        if self.reads.forwarded.is_empty() || self.reads.forwarded_to != (self.term, Some(leader)) {
            return;
        }
        let mut resend = Vec::new();
        let mut expired = Vec::new();
        for (&id, heartbeats) in self.reads.forwarded.iter_mut() {
            *heartbeats += 1;
            if *heartbeats > GIVE_UP_AFTER_HEARTBEATS {
                expired.push(id);
            } else if *heartbeats % RESEND_AFTER_HEARTBEATS == 0 {
                resend.push(id);
            }
        }
        for id in expired {
            self.reads.forwarded.remove(&id);
            self.out.read_states.push(ReadState { id, result: Err(ReadError::Timeout) });
        }
        for request in resend {
            self.send(leader, RaftMessage::ReadIndexRequest { term: self.term, request });
        }
    }

    /// `ReadRound` from `from`: the leader's question or a voter's confirmation.
    pub(super) fn handle_read_round(&mut self, from: NodeId, term: Term, round: u64, ack: bool) {
        if ack {
            if self.role != Role::Leader || term != self.term {
                return;
            }
            if let Some(progress) = self.progress.get_mut(&from) {
                progress.recent_active = true;
            }
            let Some(current) = self.reads.round.as_mut().filter(|r| r.id == round && r.term == term) else { return };
            current.acks.insert(from);
            self.finish_read_round();
            return;
        }
        if term < self.term {
            // A stale leader: the answer's term makes it step down.
            self.send(from, RaftMessage::ReadRound { term: self.term, round, ack: true });
            return;
        }
        // term == self.term (`step` adopted a higher one): this is the term's leader.
        if self.role == Role::Leader {
            return;
        }
        self.heard_from_leader(from, term);
        self.send(from, RaftMessage::ReadRound { term, round, ack: true });
    }

    /// `ReadIndexRequest` from a follower: put its read in the next round, or refuse it.
    pub(super) fn handle_read_index_request(&mut self, from: NodeId, term: Term, request: u64) {
        if self.role != Role::Leader || term != self.term {
            self.send(from, RaftMessage::ReadIndexResponse { term: self.term, request, index: None });
            return;
        }
        self.reads.queued.push(Reader::Remote(from, request));
        self.start_read_round();
    }

    /// `ReadIndexResponse` from the leader: the forwarded read's index (or its refusal).
    pub(super) fn handle_read_index_response(
        &mut self,
        from: NodeId,
        term: Term,
        request: u64,
        index: Option<LogIndex>,
    ) {
        if term != self.term || self.reads.forwarded_to != (term, Some(from)) {
            return;
        }
        if self.reads.forwarded.remove(&request).is_some() {
            let result = index.ok_or(ReadError::LeadershipLost);
            self.out.read_states.push(ReadState { id: request, result });
        }
    }
}

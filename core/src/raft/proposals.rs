//! Client proposals on the leader: auto-commit and two-phase proposals, and their resolution by
//! commit / rollback markers. Markers are new entries; nothing already in the log is rewritten.

use super::apply::{WaitFor, Waiter};
use super::membership::Membership;
use super::{PartitionStateMachine, Role};
use crate::entry::{EntryKind, LogEntry};
use crate::error::{ProposeError, TicketOutcome};
use crate::hlc::Ticket;
use crate::ids::{LogIndex, NodeId};
use crate::log_type::LogType;

/// A client proposal: one or more payloads of one application log type, appended as consecutive
/// entries under one ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Application-defined type tag of the entries.
    pub log_type: LogType,
    /// One entry per payload.
    pub payloads: Vec<bytes::Bytes>,
    /// Deliver on Raft commit (true) or hold until `commit(ticket)` (false).
    pub auto_commit: bool,
}

/// A proposal accepted by the leader (not yet committed: the reply comes through
/// [`super::Ready::replies`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProposalAccepted {
    /// Ticket to commit or roll back with, and to match the reply.
    pub ticket: Ticket,
    /// Index of the first entry.
    pub first_index: LogIndex,
    /// Index of the last entry.
    pub last_index: LogIndex,
}

impl PartitionStateMachine {
    /// Append a proposal (leaders only). `now_ms` is the caller's physical time for the ticket.
    pub fn propose(&mut self, proposal: Proposal, now_ms: u64) -> Result<ProposalAccepted, ProposeError> {
        let kind = EntryKind::Application { auto_commit: proposal.auto_commit };
        self.append_proposal(proposal, kind, now_ms)
    }

    /// Append an auto-commit proposal guarded by partition generation `generation`: it is
    /// delivered only if no [`EntryKind::Fence`] of a newer generation applies before it, and
    /// otherwise answered with [`ProposeError::PartitionMoved`] (`proposal.auto_commit` is
    /// ignored: guarded writes are always auto-commit).
    pub fn propose_guarded(
        &mut self,
        proposal: Proposal,
        generation: u64,
        now_ms: u64,
    ) -> Result<ProposalAccepted, ProposeError> {
        self.append_proposal(proposal, EntryKind::Guarded { generation }, now_ms)
    }

    /// Append a fence raising the partition's generation to `generation` (leaders only). The reply
    /// comes when it is applied; guarded writes applied after it must carry `generation` or newer.
    pub fn propose_fence(&mut self, generation: u64, now_ms: u64) -> Result<ProposalAccepted, ProposeError> {
        let fence = Proposal { log_type: LogType::EMPTY, payloads: vec![bytes::Bytes::new()], auto_commit: true };
        self.append_proposal(fence, EntryKind::Fence { generation }, now_ms)
    }

    /// Members leaving toward `desired` that already hold everything committed here (a leader
    /// lets them also hear the commit index over a few heartbeats before dropping them, so they
    /// learn of their own removal). Empty on a follower.
    pub fn departing_caught_up(&self, desired: &Membership) -> Vec<NodeId> {
        if self.role != Role::Leader {
            return Vec::new();
        }
        let commit = self.log.commit;
        let departing = self.membership().members().filter(|n| !desired.contains(*n));
        departing.filter(|&n| self.progress(n).is_some_and(|p| p.match_index >= commit)).collect()
    }

    /// The leader's next membership step toward `desired`, or `None` (not the published leader,
    /// a change still uncommitted, or nothing to do): a member is promoted to voter once its log
    /// is within `max_lag` entries of the leader's; a departing member is dropped once `settled`
    /// says it held the commit index long enough (the driver keeps that clock) or once it stopped
    /// answering. One node at a time ([`Membership::next_step_toward`]).
    pub fn membership_step(
        &self,
        desired: &Membership,
        max_lag: u64,
        settled: impl Fn(NodeId) -> bool,
    ) -> Option<Membership> {
        if !self.is_leader() || self.membership_change_pending() {
            return None;
        }
        let last = self.last_index();
        let caught_up = |node| self.progress(node).is_some_and(|p| p.match_index + max_lag >= last);
        let can_drop = |node| self.progress(node).is_none_or(|p| !p.is_recently_active()) || settled(node);
        self.membership().next_step_toward(desired, caught_up, can_drop)
    }

    /// Propose changing the membership to `next` (leaders only): at most one node's role may
    /// change (see [`Membership::is_single_step_to`]), and only once the previous change has
    /// committed. Takes effect on this leader at once; the reply comes when it is applied.
    pub fn propose_membership(&mut self, next: Membership, now_ms: u64) -> Result<ProposalAccepted, ProposeError> {
        if self.membership_change_pending() {
            return Err(ProposeError::MembershipChangePending);
        }
        if !self.membership().is_single_step_to(&next) {
            return Err(ProposeError::InvalidMembership);
        }
        let change = Proposal { log_type: LogType::EMPTY, payloads: vec![next.encode().into()], auto_commit: true };
        let accepted = match self.canary_change_before_the_barrier(&change, now_ms) {
            Some(accepted) => accepted?,
            None => self.append_proposal(change, EntryKind::Config, now_ms)?,
        };
        self.membership_changed();
        Ok(accepted)
    }

    /// Planted bug: answer "unknown" from this leader's own view of the log.
    fn canary_unknown_ticket_from_own_view(&self, proposal_found: bool) -> bool {
        self.canary(|c| c.unknown_ticket_without_quorum) && !proposal_found
    }

    /// Planted bug: append a membership change without waiting for this term's barrier.
    fn canary_change_before_the_barrier(
        &mut self,
        change: &Proposal,
        now_ms: u64,
    ) -> Option<Result<ProposalAccepted, ProposeError>> {
        if !(self.canary(|c| c.membership_change_before_barrier) && self.role == Role::Leader) {
            return None;
        }
        self.published = true;
        let accepted = self.append_proposal(change.clone(), EntryKind::Config, now_ms);
        self.published = self.log.applied >= self.barrier_index;
        Some(accepted)
    }

    /// The partition generation: the highest fence applied so far.
    pub fn generation(&self) -> u64 {
        self.applier.generation
    }

    fn append_proposal(
        &mut self,
        proposal: Proposal,
        kind: EntryKind,
        now_ms: u64,
    ) -> Result<ProposalAccepted, ProposeError> {
        self.check_can_propose(proposal.payloads.len())?;
        self.wake();
        if proposal.payloads.is_empty() {
            return Err(ProposeError::EmptyProposal);
        }
        let mut ticket = self.clock.now(now_ms);
        if self.canary(|c| c.tickets_read_the_wall_clock) {
            ticket = crate::hlc::HlcTimestamp { physical_ms: now_ms, logical: 0, node: self.config.node.0 };
        }
        let first_index = self.log.last_index() + 1;
        for payload in proposal.payloads {
            let index = self.log.last_index() + 1;
            self.log.push(LogEntry {
                index,
                term: self.term,
                kind,
                log_type: proposal.log_type.clone(),
                payload,
                ticket,
            });
        }
        let last_index = self.log.last_index();
        self.applier.wait(last_index, Waiter { ticket, term: self.term, wait: WaitFor::Proposal { first_index } });
        self.needs_broadcast = true;
        self.maybe_commit();
        Ok(ProposalAccepted { ticket, first_index, last_index })
    }

    /// Ask to deliver the held entries of a two-phase proposal. Idempotent: the first terminal
    /// outcome recorded in the log wins. The reply comes through [`super::Ready::replies`]
    /// (immediately when the ticket is already resolved).
    pub fn commit(&mut self, ticket: Ticket) -> Result<(), ProposeError> {
        self.resolve(ticket, TicketOutcome::Committed)
    }

    /// Ask to drop the held entries of a two-phase proposal. Idempotent like [`Self::commit`].
    pub fn rollback(&mut self, ticket: Ticket) -> Result<(), ProposeError> {
        self.resolve(ticket, TicketOutcome::RolledBack)
    }

    fn check_can_propose(&self, extra: usize) -> Result<(), ProposeError> {
        self.check_published_leader()?;
        self.check_room_for(extra)
    }

    fn check_published_leader(&self) -> Result<(), ProposeError> {
        if let Some(fatal) = &self.halted {
            tracing::debug!(%fatal, "proposal to a halted partition");
            return Err(ProposeError::NotLeader { leader: None });
        }
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if !self.published {
            return Err(ProposeError::LeadershipPending);
        }
        if let Some(to) = self.transfer_target() {
            return Err(ProposeError::LeadershipTransfer { to });
        }
        Ok(())
    }

    fn check_room_for(&self, extra: usize) -> Result<(), ProposeError> {
        let in_flight = (self.log.last_index() - self.log.commit) as usize;
        if in_flight + extra > self.config.max_uncommitted_entries {
            return Err(ProposeError::Backpressure { in_flight });
        }
        Ok(())
    }

    fn resolve(&mut self, ticket: Ticket, requested: TicketOutcome) -> Result<(), ProposeError> {
        self.check_published_leader()?;
        self.wake();
        if ticket.is_zero() {
            return Err(ProposeError::UnknownTicket(ticket));
        }
        if let Some(&(outcome, _)) = self.applier.resolved.get(&ticket) {
            let result =
                if outcome == requested { Ok(outcome) } else { Err(ProposeError::AlreadyResolved { ticket, outcome }) };
            self.out.replies.push(super::ClientReply::Resolution { ticket, requested, result });
            return Ok(());
        }
        // Look at the unapplied tail: an existing marker decides; otherwise the proposal must exist.
        let mut proposal_found = self.applier.held.contains_key(&ticket);
        let mut existing_marker = None;
        for entry in self.log.iter_after(self.log.applied) {
            if entry.ticket != ticket {
                continue;
            }
            match entry.kind {
                EntryKind::CommitMarker | EntryKind::RollbackMarker => {
                    existing_marker = Some((entry.index, entry.term));
                    break;
                }
                EntryKind::Application { auto_commit: false } => proposal_found = true,
                EntryKind::Application { auto_commit: true } | EntryKind::Guarded { .. } => {
                    return Err(ProposeError::NotTwoPhase(ticket))
                }
                EntryKind::Barrier | EntryKind::Fence { .. } | EntryKind::Config => {}
            }
        }
        if let Some((index, term)) = existing_marker {
            self.applier.wait(index, Waiter { ticket, term, wait: WaitFor::Resolution { requested } });
            return Ok(());
        }
        // A ticket this replica does not know may still be committed: a newer leader may have
        // committed it while this one has not yet learned that it was deposed. "Unknown" is final
        // only when backed by the log, so the marker is appended anyway and the answer comes when
        // it applies (`Applier`: a marker for a ticket that holds nothing and was never resolved
        // answers `UnknownTicket`). A deposed leader's marker never commits: its caller gets a
        // retryable `Superseded`/`NotLeader` instead of a wrong final answer.
        if self.canary_unknown_ticket_from_own_view(proposal_found) {
            return Err(ProposeError::UnknownTicket(ticket));
        }
        tracing::debug!(partition = %self.config.partition, %ticket, known = proposal_found, "resolving through the log");
        self.check_room_for(1)?;
        let kind = match requested {
            TicketOutcome::Committed => EntryKind::CommitMarker,
            TicketOutcome::RolledBack => EntryKind::RollbackMarker,
        };
        let index = self.log.last_index() + 1;
        self.log.push(LogEntry {
            index,
            term: self.term,
            kind,
            log_type: LogType::EMPTY,
            payload: bytes::Bytes::new(),
            ticket,
        });
        self.applier.wait(index, Waiter { ticket, term: self.term, wait: WaitFor::Resolution { requested } });
        self.needs_broadcast = true;
        self.maybe_commit();
        Ok(())
    }
}

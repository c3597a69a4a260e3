//! Leadership transfer (thesis §3.10): the leader stops accepting proposals, brings the target's
//! log up to its own, and sends it [`RaftMessage::TimeoutNow`]; the target campaigns at once
//! (no pre-vote) with a vote request marked `transfer`, which voters grant even while they still
//! hear the old leader. A transfer that has not ended after `transfer_timeout_ticks` is
//! abandoned and proposals resume. Leases end for the rest of the term (see `reads`).

use super::{PartitionStateMachine, Role};
use crate::error::TransferError;
use crate::ids::{NodeId, Term};
use crate::message::RaftMessage;

/// A transfer in progress.
#[derive(Clone, Copy, Debug)]
pub(super) struct Transfer {
    pub(super) to: NodeId,
    elapsed: u32,
}

impl Transfer {
    /// A transfer to `to`, starting now.
    pub(super) fn new(to: NodeId) -> Self {
        Transfer { to, elapsed: 0 }
    }
}

impl PartitionStateMachine {
    /// Hand this leader's leadership to the voter `to`. Proposals fail with
    /// [`crate::ProposeError::LeadershipTransfer`] until the transfer ends: `to` wins (this
    /// replica steps down) or it is abandoned after `transfer_timeout_ticks`. A new call
    /// replaces a running transfer.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.halted.is_some() || self.role != Role::Leader || !self.published {
            let leader = if self.role == Role::Leader { None } else { self.leader };
            return Err(TransferError::NotLeader { leader });
        }
        if to == self.config.node || !self.membership().voters.contains(&to) {
            return Err(TransferError::NotAVoter(to));
        }
        tracing::debug!(partition = %self.config.partition, node = %self.config.node, %to, term = self.term, "transferring leadership");
        self.wake();
        self.transfer = Some(Transfer::new(to));
        self.end_lease_for_transfer();
        self.advance_transfer();
        Ok(())
    }

    /// The node this leader is handing its leadership to, while a transfer runs.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.to)
    }

    /// Is there a voter besides this replica?
    pub(super) fn has_other_voter(&self) -> bool {
        self.membership().voters.iter().any(|&n| n != self.config.node)
    }

    /// Leader that cannot serve (a stalled disk, a lost snapshot): unless a transfer runs, start
    /// one to the voter holding most of the log (its missing entries are sent from memory;
    /// proposals are refused meanwhile). Nothing happens without another voter.
    pub(super) fn hand_over(&mut self, why: &'static str) {
        if self.role != Role::Leader || self.transfer.is_some() {
            return;
        }
        let me = self.config.node;
        let voters = &self.log.membership.current().voters;
        let successor = self
            .progress
            .iter()
            .filter(|(node, _)| voters.contains(node) && **node != me)
            .max_by_key(|(node, p)| (p.match_index, std::cmp::Reverse(**node)))
            .map(|(&node, _)| node);
        let Some(successor) = successor else { return };
        tracing::warn!(partition = %self.config.partition, node = %me, term = self.term, %successor, why, "handing leadership over");
        self.wake();
        self.transfer = Some(Transfer::new(successor));
        self.end_lease_for_transfer();
        self.advance_transfer();
    }

    /// Leader: tell the target to campaign once it holds the whole log, else send it entries.
    pub(super) fn advance_transfer(&mut self) {
        let Some(Transfer { to, .. }) = self.transfer else { return };
        let caught_up = self.progress.get(&to).is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(to, RaftMessage::TimeoutNow { term: self.term });
        } else {
            self.send_append(to, false);
        }
    }

    /// Leader, every tick: abandon a transfer that took too long or whose target left.
    pub(super) fn tick_transfer(&mut self) {
        let Some(transfer) = self.transfer.as_mut() else { return };
        transfer.elapsed += 1;
        let to = transfer.to;
        if transfer.elapsed >= self.config.transfer_timeout_ticks || !self.membership().voters.contains(&to) {
            tracing::debug!(partition = %self.config.partition, node = %self.config.node, %to, "leadership transfer abandoned");
            self.transfer = None;
        }
    }

    /// `TimeoutNow` from the leader of this term: campaign at once.
    pub(super) fn handle_timeout_now(&mut self, from: NodeId, term: Term) {
        if term != self.term || self.role != Role::Follower || self.leader != Some(from) || !self.can_campaign() {
            return;
        }
        tracing::debug!(partition = %self.config.partition, node = %self.config.node, term, "leadership handed over; campaigning");
        self.start_election(true);
    }
}

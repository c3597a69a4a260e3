//! The callers waiting on one partition: proposals until they commit (or fail), ticket
//! resolutions until their marker applies. The executor answers them from the state machine's
//! replies; a restart drops them all (their callers then get `PartitionUnavailable`).

use crate::error::ReplicateError;
use kommander_core::raft::{ClientReply, ProposalCommitted};
use kommander_core::{PartitionId, Ticket, TicketOutcome};
use std::collections::HashMap;
use tokio::sync::oneshot;

type ProposalWaiter = oneshot::Sender<Result<ProposalCommitted, ReplicateError>>;
type ResolutionWaiter = oneshot::Sender<Result<TicketOutcome, ReplicateError>>;

/// The waiters of one partition incarnation.
#[derive(Default)]
pub(super) struct Waiters {
    proposals: HashMap<Ticket, ProposalWaiter>,
    resolutions: HashMap<Ticket, Vec<ResolutionWaiter>>,
}

impl Waiters {
    /// Wait for the proposal with `ticket`.
    pub(super) fn proposal(&mut self, ticket: Ticket) -> oneshot::Receiver<Result<ProposalCommitted, ReplicateError>> {
        let (tx, rx) = oneshot::channel();
        self.proposals.insert(ticket, tx);
        rx
    }

    /// Wait for a resolution of `ticket` (several may wait; answered in order).
    pub(super) fn resolution(&mut self, ticket: Ticket) -> oneshot::Receiver<Result<TicketOutcome, ReplicateError>> {
        let (tx, rx) = oneshot::channel();
        self.resolutions.entry(ticket).or_default().push(tx);
        rx
    }

    /// Drop every waiter (their callers see the channel closed).
    pub(super) fn clear(&mut self) {
        self.proposals.clear();
        self.resolutions.clear();
    }

    /// Answer the waiter `reply` is for, if any.
    pub(super) fn answer(&mut self, partition: PartitionId, reply: ClientReply) {
        match reply {
            ClientReply::Proposal { ticket, result } => {
                if let Some(waiter) = self.proposals.remove(&ticket) {
                    let _ = waiter.send(result.map_err(|e| ReplicateError::from_core(partition, e)));
                }
            }
            ClientReply::Resolution { ticket, result, .. } => {
                if let Some(waiters) = self.resolutions.get_mut(&ticket) {
                    if !waiters.is_empty() {
                        let waiter = waiters.remove(0);
                        let _ = waiter.send(result.map_err(|e| ReplicateError::from_core(partition, e)));
                    }
                    if waiters.is_empty() {
                        self.resolutions.remove(&ticket);
                    }
                }
            }
        }
    }
}

//! The callers waiting on one partition: proposals until they commit (or fail), ticket
//! resolutions until their marker applies, reads until their read index is confirmed and handed
//! to the application. The executor answers them from the state machine's outputs; a restart
//! drops them all (their callers then get `PartitionUnavailable`).

use crate::error::ReplicateError;
use kommander_core::raft::{ClientReply, ProposalCommitted, ReadState};
use kommander_core::{LogIndex, PartitionId, Ticket, TicketOutcome};
// Tickets and read ids come from this node's leader and executor: a fast non-keyed hash is fine.
use rustc_hash::FxHashMap as HashMap;
use tokio::sync::oneshot;

type ProposalWaiter = oneshot::Sender<Result<ProposalCommitted, ReplicateError>>;
type ResolutionWaiter = oneshot::Sender<Result<TicketOutcome, ReplicateError>>;
type ReadWaiter = oneshot::Sender<Result<LogIndex, ReplicateError>>;

/// The waiters of one partition incarnation.
#[derive(Default)]
pub(super) struct Waiters {
    proposals: HashMap<Ticket, ProposalWaiter>,
    resolutions: HashMap<Ticket, Vec<ResolutionWaiter>>,
    /// Reads waiting for their read index, by read id.
    reads: HashMap<u64, ReadWaiter>,
    /// Reads with an index the application has not been handed yet.
    parked: Vec<(LogIndex, ReadWaiter)>,
}

impl Waiters {
    /// Wait for the proposal with `ticket`.
    pub(super) fn proposal(&mut self, ticket: Ticket) -> oneshot::Receiver<Result<ProposalCommitted, ReplicateError>> {
        let (tx, rx) = oneshot::channel();
        self.proposal_with(ticket, tx);
        rx
    }

    /// Answer the proposal with `ticket` on `reply`.
    pub(super) fn proposal_with(
        &mut self,
        ticket: Ticket,
        reply: oneshot::Sender<Result<ProposalCommitted, ReplicateError>>,
    ) {
        self.proposals.insert(ticket, reply);
    }

    /// Wait for a resolution of `ticket` (several may wait; answered in order).
    pub(super) fn resolution(&mut self, ticket: Ticket) -> oneshot::Receiver<Result<TicketOutcome, ReplicateError>> {
        let (tx, rx) = oneshot::channel();
        self.resolutions.entry(ticket).or_default().push(tx);
        rx
    }

    /// Wait for the read index of read `id`.
    pub(super) fn read(&mut self, id: u64) -> oneshot::Receiver<Result<LogIndex, ReplicateError>> {
        let (tx, rx) = oneshot::channel();
        self.reads.insert(id, tx);
        rx
    }

    /// Drop every waiter (their callers see the channel closed).
    pub(super) fn clear(&mut self) {
        self.proposals.clear();
        self.resolutions.clear();
        self.reads.clear();
        self.parked.clear();
    }

    /// The state machine answered read `state.id`; entries up to `handed` are with the
    /// application. A read whose index is beyond that waits for [`Waiters::handed_through`].
    pub(super) fn read_answered(&mut self, partition: PartitionId, state: ReadState, handed: LogIndex) {
        let Some(waiter) = self.reads.remove(&state.id) else { return };
        match state.result {
            Ok(index) if index > handed => self.parked.push((index, waiter)),
            result => {
                let _ = waiter.send(result.map_err(|e| ReplicateError::from_read(partition, e)));
            }
        }
    }

    /// Entries up to `handed` are with the application: answer the reads waiting for them.
    pub(super) fn handed_through(&mut self, handed: LogIndex) {
        if self.parked.iter().all(|(index, _)| *index > handed) {
            return;
        }
        let (due, parked): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.parked).into_iter().partition(|(i, _)| *i <= handed);
        self.parked = parked;
        for (index, waiter) in due {
            let _ = waiter.send(Ok(index));
        }
    }

    /// Answer the waiter `reply` is for, if any.
    pub(super) fn answer(&mut self, partition: PartitionId, reply: ClientReply) {
        match reply {
            ClientReply::Proposal { ticket, result } => {
                match &result {
                    Ok(committed) => tracing::debug!(
                        %partition, ?ticket, first = committed.first_index, last = committed.last_index,
                        "proposal committed"
                    ),
                    Err(error) => tracing::debug!(%partition, ?ticket, %error, "proposal failed"),
                }
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

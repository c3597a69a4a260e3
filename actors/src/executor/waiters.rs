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

/// A read waiting for its index; `routed` is the partition generation the reader routed its key
/// with (`None`: the partition was addressed directly).
struct ReadWaiter {
    reply: oneshot::Sender<Result<LogIndex, ReplicateError>>,
    routed: Option<u64>,
}

impl ReadWaiter {
    fn answer(self, partition: PartitionId, index: LogIndex, generation: u64) {
        let _ = self.reply.send(routed_read(partition, self.routed, generation, index));
    }
}

/// A read's answer once entries up to `index` are handed and the partition is at `generation`:
/// `index`, or [`ReplicateError::PartitionMoved`] when a fence newer than the reader's route
/// (`routed`) applied: the key may have left the partition, so this replica's value may be stale.
pub(super) fn routed_read(
    partition: PartitionId,
    routed: Option<u64>,
    generation: u64,
    index: LogIndex,
) -> Result<LogIndex, ReplicateError> {
    match routed {
        Some(expected) if generation > expected => {
            Err(ReplicateError::PartitionMoved { partition, expected, current: generation })
        }
        _ => Ok(index),
    }
}

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

    /// Wait for the read index of read `id`, routed with partition generation `routed`.
    pub(super) fn read(&mut self, id: u64, routed: Option<u64>) -> oneshot::Receiver<Result<LogIndex, ReplicateError>> {
        let (reply, rx) = oneshot::channel();
        self.reads.insert(id, ReadWaiter { reply, routed });
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
    /// application and the partition's generation is `generation`. A read whose index is beyond
    /// that waits for [`Waiters::handed_through`].
    pub(super) fn read_answered(
        &mut self,
        partition: PartitionId,
        state: ReadState,
        handed: LogIndex,
        generation: u64,
    ) {
        let Some(waiter) = self.reads.remove(&state.id) else { return };
        match state.result {
            Ok(index) if index > handed => self.parked.push((index, waiter)),
            Ok(index) => waiter.answer(partition, index, generation),
            Err(error) => {
                let _ = waiter.reply.send(Err(ReplicateError::from_read(partition, error)));
            }
        }
    }

    /// Entries up to `handed` are with the application (the partition's generation is
    /// `generation`): answer the reads waiting for them.
    pub(super) fn handed_through(&mut self, partition: PartitionId, handed: LogIndex, generation: u64) {
        if self.parked.iter().all(|(index, _)| *index > handed) {
            return;
        }
        let (due, parked): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.parked).into_iter().partition(|(i, _)| *i <= handed);
        self.parked = parked;
        for (index, waiter) in due {
            waiter.answer(partition, index, generation);
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

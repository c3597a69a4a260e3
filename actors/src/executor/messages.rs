//! The messages a partition executor handles from outside its driver loop: the public ones
//! ([`Replicate`], [`Resolve`], [`GetStatus`] — checked here, whoever sends them) and the
//! runtime's own (transport input, fences, membership queries, retirement).

use super::{now_ms, PartitionExecutor};
use crate::error::ReplicateError;
use crate::status::PartitionStatus;
use crate::transfer::RESERVED_PREFIX;
use actix::prelude::*;
use bytes::Bytes;
use kommander_core::raft::{Membership, ProposalCommitted};
use kommander_core::{Envelope, LogType, NodeId, PartitionId, Ticket, TicketOutcome};
use std::collections::BTreeMap;
use tokio::sync::oneshot;

/// Messages from other replicas of this partition.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Inbound(pub(crate) Vec<Envelope>);

/// Propose entries (answered once committed: auto-commit entries delivered, two-phase ones held).
/// Built with [`Replicate::new`] or [`Replicate::two_phase`]; the partition refuses it with
/// [`ReplicateError::SystemPartitionReserved`] on partition 0 and with
/// [`ReplicateError::ReservedLogType`] for a `kommander.*` log type.
#[derive(Message)]
#[rtype(result = "Result<ProposalCommitted, ReplicateError>")]
pub struct Replicate {
    pub(crate) log_type: LogType,
    pub(crate) payloads: Vec<Bytes>,
    /// Deliver on commit (true) or hold until [`Resolve`] (false).
    pub(crate) auto_commit: bool,
    /// Partition generation the writer routed with: the write is rejected with
    /// [`ReplicateError::PartitionMoved`] if the partition was fenced at a newer generation before
    /// it applied (guarded writes are auto-commit).
    pub(crate) guard: Option<u64>,
    /// Written by the runtime itself (system commands, imports): exempt from the checks above.
    pub(crate) runtime: bool,
}

impl Replicate {
    /// Entries of `log_type`, one per payload, delivered once committed.
    pub fn new(log_type: impl Into<LogType>, payloads: impl IntoIterator<Item = impl Into<Bytes>>) -> Self {
        let payloads = payloads.into_iter().map(Into::into).collect();
        Replicate { log_type: log_type.into(), payloads, auto_commit: true, guard: None, runtime: false }
    }

    /// Entries held once committed until [`Resolve`] commits or rolls back their ticket.
    pub fn two_phase(log_type: impl Into<LogType>, payloads: impl IntoIterator<Item = impl Into<Bytes>>) -> Self {
        Replicate { auto_commit: false, ..Replicate::new(log_type, payloads) }
    }

    /// Auto-commit entries guarded by the partition `generation` the writer routed with (from
    /// [`crate::RaftManager::partition_for_key`]): refused with
    /// [`ReplicateError::PartitionMoved`] if the partition was fenced at a newer generation.
    pub fn guarded(
        log_type: impl Into<LogType>,
        payloads: impl IntoIterator<Item = impl Into<Bytes>>,
        generation: u64,
    ) -> Self {
        Replicate { guard: Some(generation), ..Replicate::new(log_type, payloads) }
    }

    /// The runtime's own entries (system commands on partition 0, imports).
    pub(crate) fn runtime(log_type: &str, payloads: Vec<Vec<u8>>) -> Self {
        Replicate { runtime: true, ..Replicate::new(log_type, payloads) }
    }

    /// Why this partition must refuse the write, if it must.
    fn refusal(&self, partition: PartitionId) -> Option<ReplicateError> {
        if self.runtime {
            None
        } else if partition.is_system() {
            Some(ReplicateError::SystemPartitionReserved)
        } else if self.log_type.starts_with(RESERVED_PREFIX) {
            Some(ReplicateError::ReservedLogType(self.log_type.to_string()))
        } else {
            None
        }
    }
}

/// The answer channel of one proposal.
pub(crate) type ProposalReply = oneshot::Sender<Result<ProposalCommitted, ReplicateError>>;

/// A [`Replicate`] whose answer goes to `reply` once committed (the manager's write path): sent
/// with `do_send`, it costs one channel per proposal — no response future, no task spawned per
/// proposal, no second channel. A stopped executor drops `reply`, which the caller reads as
/// [`ReplicateError::PartitionUnavailable`].
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Propose {
    pub(crate) replicate: Replicate,
    pub(crate) reply: ProposalReply,
}

/// Raise the partition's generation with a fence entry (leaders only; used by splits and merges).
#[derive(Message)]
#[rtype(result = "Result<ProposalCommitted, ReplicateError>")]
pub(crate) struct ProposeFence {
    /// The new generation.
    pub(crate) generation: u64,
}

/// Move this partition's membership one step toward `report.desired` (leaders only, and only
/// when the previous change committed). A member is promoted to voter only once its log is within
/// `max_lag` entries of the leader's. Answered with a [`MembershipReport`] message, not a
/// response future: the coordinator asks thousands of partitions at once, and an actor context
/// polls every future it holds whenever one of them completes.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ReconcileMembership {
    /// Largest lag (entries) at which a learner counts as caught up.
    pub(crate) max_lag: u64,
    /// What is asked for, and where the answer goes.
    pub(crate) report: ReportTo,
}

/// The answer to a [`ReconcileMembership`]: the membership in effect on the replica (after any
/// proposal) and its term — `None` when the replica is not running (or the request was dropped
/// unhandled).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct MembershipReport {
    /// The partition asked.
    pub(crate) partition: PartitionId,
    /// The membership asked for.
    pub(crate) desired: Membership,
    /// The roster version it came from.
    pub(crate) version: u64,
    /// What the replica has, and its term.
    pub(crate) reply: Option<(Membership, kommander_core::Term)>,
}

/// Where a [`MembershipReport`] goes. Dropped without [`ReportTo::send`] (a request lost with a
/// stopped executor's mailbox) it reports `None`, so the asker never waits forever.
pub(crate) struct ReportTo {
    partition: PartitionId,
    desired: Membership,
    version: u64,
    to: Option<Recipient<MembershipReport>>,
}

impl ReportTo {
    /// A report on `partition`, asked for `desired` (roster `version`), sent to `to`.
    pub(crate) fn new(
        partition: PartitionId,
        desired: Membership,
        version: u64,
        to: Recipient<MembershipReport>,
    ) -> Self {
        ReportTo { partition, desired, version, to: Some(to) }
    }

    /// The membership asked for.
    pub(crate) fn desired(&self) -> &Membership {
        &self.desired
    }

    /// Send the answer.
    pub(crate) fn send(mut self, reply: Option<(Membership, kommander_core::Term)>) {
        self.deliver(reply);
    }

    fn deliver(&mut self, reply: Option<(Membership, kommander_core::Term)>) {
        if let Some(to) = self.to.take() {
            let desired = std::mem::take(&mut self.desired);
            to.do_send(MembershipReport { partition: self.partition, desired, version: self.version, reply });
        }
    }
}

impl Drop for ReportTo {
    fn drop(&mut self) {
        self.deliver(None);
    }
}

/// The membership in effect on this replica, and whether its last change is uncommitted.
#[derive(Message)]
#[rtype(result = "Option<(Membership, bool)>")]
pub(crate) struct GetMembership;

/// On a leader: how many entries each learner is behind (empty on followers).
#[derive(Message)]
#[rtype(result = "BTreeMap<NodeId, u64>")]
pub(crate) struct LearnerLag;

/// Retire the partition replica for good (it was removed from the partition map): the executor
/// stops serving and never restarts.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Retire;

/// Commit or roll back a two-phase proposal by ticket.
#[derive(Message)]
#[rtype(result = "Result<TicketOutcome, ReplicateError>")]
pub struct Resolve {
    /// The proposal's ticket.
    pub ticket: Ticket,
    /// Commit or roll back.
    pub outcome: TicketOutcome,
}

/// Ask for the partition's current status.
#[derive(Message)]
#[rtype(result = "PartitionStatus")]
pub struct GetStatus;

impl Handler<Retire> for PartitionExecutor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        tracing::info!(partition = %self.partition(), "partition retired");
        self.retired = true;
        self.status.set(PartitionStatus { restoring: true, ..PartitionStatus::default() });
        ctx.stop();
    }
}

impl Handler<GetMembership> for PartitionExecutor {
    type Result = Option<(Membership, bool)>;

    fn handle(&mut self, _: GetMembership, _: &mut Context<Self>) -> Self::Result {
        self.sm.as_ref().map(|sm| (sm.membership().clone(), sm.membership_change_pending()))
    }
}

impl Handler<LearnerLag> for PartitionExecutor {
    type Result = MessageResult<LearnerLag>;

    fn handle(&mut self, _: LearnerLag, _: &mut Context<Self>) -> Self::Result {
        let Some(sm) = self.sm.as_ref().filter(|sm| sm.is_leader()) else { return MessageResult(BTreeMap::new()) };
        let last = sm.last_index();
        let lag = sm
            .membership()
            .learners
            .iter()
            .map(|&n| (n, last.saturating_sub(sm.progress(n).map_or(0, |p| p.match_index))))
            .collect();
        MessageResult(lag)
    }
}

impl Handler<ProposeFence> for PartitionExecutor {
    type Result = ResponseFuture<Result<ProposalCommitted, ReplicateError>>;

    fn handle(&mut self, msg: ProposeFence, ctx: &mut Context<Self>) -> Self::Result {
        let partition = self.partition();
        let started = match self.sm.as_mut() {
            None => Err(ReplicateError::PartitionUnavailable(partition)),
            Some(sm) => sm.propose_fence(msg.generation, now_ms()).map_err(|e| ReplicateError::from_core(partition, e)),
        };
        self.await_proposal(started, ctx)
    }
}

impl Handler<Inbound> for PartitionExecutor {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        let Some(sm) = self.sm.as_mut() else { return };
        for envelope in msg.0 {
            if let Err(error) = sm.step(envelope) {
                tracing::debug!(partition = %self.config.partition, %error, "message rejected");
            }
        }
        self.schedule_flush(ctx);
    }
}

impl Handler<Replicate> for PartitionExecutor {
    type Result = ResponseFuture<Result<ProposalCommitted, ReplicateError>>;

    fn handle(&mut self, msg: Replicate, ctx: &mut Context<Self>) -> Self::Result {
        let started = self.start_proposal(msg);
        self.await_proposal(started, ctx)
    }
}

impl Handler<Propose> for PartitionExecutor {
    type Result = ();

    fn handle(&mut self, msg: Propose, ctx: &mut Context<Self>) {
        match self.start_proposal(msg.replicate) {
            Ok(accepted) => {
                tracing::debug!(
                    partition = %self.partition(), ticket = ?accepted.ticket, first = accepted.first_index,
                    last = accepted.last_index, "proposal appended"
                );
                self.waiters.proposal_with(accepted.ticket, msg.reply);
                self.schedule_flush(ctx);
            }
            Err(error) => {
                let _ = msg.reply.send(Err(error));
            }
        }
    }
}

impl PartitionExecutor {
    /// Check `msg` (whoever sent it) and append it: the one entry point of both proposal messages.
    fn start_proposal(&mut self, msg: Replicate) -> Result<kommander_core::raft::ProposalAccepted, ReplicateError> {
        let partition = self.partition();
        match (msg.refusal(partition).or_else(|| self.backpressure()), self.sm.as_mut()) {
            (Some(error), _) => Err(error),
            (None, None) => Err(ReplicateError::PartitionUnavailable(partition)),
            (None, Some(sm)) => {
                let proposal = kommander_core::raft::Proposal {
                    log_type: msg.log_type,
                    payloads: msg.payloads,
                    auto_commit: msg.auto_commit,
                };
                match msg.guard {
                    Some(generation) => sm.propose_guarded(proposal, generation, now_ms()),
                    None => sm.propose(proposal, now_ms()),
                }
                .map_err(|e| ReplicateError::from_core(partition, e))
            }
        }
    }
}

impl Handler<Resolve> for PartitionExecutor {
    type Result = ResponseFuture<Result<TicketOutcome, ReplicateError>>;

    fn handle(&mut self, msg: Resolve, ctx: &mut Context<Self>) -> Self::Result {
        let partition = self.partition();
        let started = match self.sm.as_mut() {
            // Partition 0 holds no two-phase entries: only the runtime writes there.
            _ if partition.is_system() => Err(ReplicateError::SystemPartitionReserved),
            None => Err(ReplicateError::PartitionUnavailable(partition)),
            Some(sm) => match msg.outcome {
                TicketOutcome::Committed => sm.commit(msg.ticket),
                TicketOutcome::RolledBack => sm.rollback(msg.ticket),
            }
            .map_err(|e| ReplicateError::from_core(partition, e)),
        };
        let receiver = started.map(|()| {
            let rx = self.waiters.resolution(msg.ticket);
            self.schedule_flush(ctx);
            rx
        });
        reply_later(partition, receiver)
    }
}

impl Handler<GetStatus> for PartitionExecutor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status.get())
    }
}

impl PartitionExecutor {
    fn await_proposal(
        &mut self,
        started: Result<kommander_core::raft::ProposalAccepted, ReplicateError>,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<ProposalCommitted, ReplicateError>> {
        let partition = self.partition();
        let receiver = started.map(|accepted| {
            let rx = self.waiters.proposal(accepted.ticket);
            self.schedule_flush(ctx);
            rx
        });
        reply_later(partition, receiver)
    }
}

/// Answer with what `receiver` will carry once the state machine replies; a dropped waiter means
/// the partition restarted meanwhile.
pub(super) fn reply_later<T: 'static>(
    partition: PartitionId,
    receiver: Result<oneshot::Receiver<Result<T, ReplicateError>>, ReplicateError>,
) -> ResponseFuture<Result<T, ReplicateError>> {
    Box::pin(async move {
        match receiver {
            Ok(rx) => rx.await.unwrap_or(Err(ReplicateError::PartitionUnavailable(partition))),
            Err(error) => Err(error),
        }
    })
}

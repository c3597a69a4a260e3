//! `PartitionExecutor`: one actor per partition, the serial owner of that partition's
//! [`PartitionStateMachine`]. Client proposals, transport messages, timer ticks and WAL
//! completions arrive as messages and are processed one at a time; the state machine's outputs are
//! taken **once per turn** (after the mailbox drained a batch of messages), so many proposals
//! become one append per follower and one WAL write.
//!
//! It never blocks: writes go to the [`WalScheduler`], reads to the [`ReadScheduler`]. It runs
//! under an actix `Supervisor`: when a WAL call fails or the state machine halts, it stops, callers
//! in flight get [`ReplicateError::PartitionUnavailable`], and the supervisor restarts it, which
//! restores the partition from its WAL (with back-off). Requests that arrive while the WAL is
//! being replayed wait in the mailbox until the replay ends (bounded by the caller's timeout).

use crate::error::ReplicateError;
use crate::events::RaftEvent;
use crate::read_scheduler::{Read, ReadOutcome, ReadScheduler};
use crate::status::{PartitionStatus, StatusCell};
use crate::transfer::{decode_import, IMPORT_LOG_TYPE, RESERVED_PREFIX};
use crate::wal_scheduler::{FencePartition, Persist, WalScheduler, WalStats, WriteOutcome};
use actix::fut::{self, ActorFutureExt};
use actix::prelude::*;
use kommander_core::raft::{ClientReply, Membership, ProposalCommitted, RestoreState};
use kommander_core::{
    Envelope, HardState, LogEntry, MessageBatch, NodeId, PartitionConfig, PartitionId, PartitionStateMachine, Ticket,
    TicketOutcome, Transport, Wal, WalError,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// What every executor of a node shares.
#[derive(Clone)]
pub(crate) struct ExecutorShared {
    /// Cluster identity stamped on outgoing batches.
    pub(crate) cluster_id: String,
    /// The node's WAL (restore reads it directly, off the executor).
    pub(crate) wal: Arc<dyn Wal>,
    /// The node's transport.
    pub(crate) transport: Arc<dyn Transport>,
    /// Group-commit writer.
    pub(crate) wal_scheduler: Addr<WalScheduler>,
    /// Fair reader.
    pub(crate) read_scheduler: Addr<ReadScheduler>,
    /// WAL counters (backlog drives backpressure).
    pub(crate) wal_stats: Arc<WalStats>,
    /// Backlog limit.
    pub(crate) max_wal_backlog_entries: usize,
    /// Length of a tick.
    pub(crate) tick: Duration,
    /// Where application events go.
    pub(crate) events: Option<Recipient<RaftEvent>>,
    /// Where partition 0's events go (the system coordinator).
    pub(crate) system_events: Option<Recipient<RaftEvent>>,
}

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
    pub(crate) log_type: String,
    pub(crate) payloads: Vec<Vec<u8>>,
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
    pub fn new(log_type: impl Into<String>, payloads: Vec<Vec<u8>>) -> Self {
        Replicate { log_type: log_type.into(), payloads, auto_commit: true, guard: None, runtime: false }
    }

    /// Entries held once committed until [`Resolve`] commits or rolls back their ticket.
    pub fn two_phase(log_type: impl Into<String>, payloads: Vec<Vec<u8>>) -> Self {
        Replicate { auto_commit: false, ..Replicate::new(log_type, payloads) }
    }

    /// Auto-commit entries guarded by the partition `generation` the writer routed with (from
    /// [`crate::RaftManager::partition_for_key`]): refused with
    /// [`ReplicateError::PartitionMoved`] if the partition was fenced at a newer generation.
    pub fn guarded(log_type: impl Into<String>, payloads: Vec<Vec<u8>>, generation: u64) -> Self {
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
            Some(ReplicateError::ReservedLogType(self.log_type.clone()))
        } else {
            None
        }
    }
}

/// Raise the partition's generation with a fence entry (leaders only; used by splits and merges).
#[derive(Message)]
#[rtype(result = "Result<ProposalCommitted, ReplicateError>")]
pub(crate) struct ProposeFence {
    /// The new generation.
    pub(crate) generation: u64,
}

/// Move this partition's membership one step toward `desired` (leaders only, and only when the
/// previous change committed). A member is promoted to voter only once its log is within
/// `max_lag` entries of the leader's. Answers the membership now in effect (after any proposal).
#[derive(Message)]
#[rtype(result = "Option<Membership>")]
pub(crate) struct ReconcileMembership {
    /// The membership the roster asks for.
    pub(crate) desired: Membership,
    /// Largest lag (entries) at which a learner counts as caught up.
    pub(crate) max_lag: u64,
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

type ProposalWaiter = oneshot::Sender<Result<ProposalCommitted, ReplicateError>>;
type ResolutionWaiter = oneshot::Sender<Result<TicketOutcome, ReplicateError>>;

/// The actor owning one partition replica.
pub struct PartitionExecutor {
    config: PartitionConfig,
    shared: ExecutorShared,
    status: Arc<StatusCell>,
    sm: Option<PartitionStateMachine>,
    incarnation: u64,
    proposals: HashMap<Ticket, ProposalWaiter>,
    resolutions: HashMap<Ticket, Vec<ResolutionWaiter>>,
    flush_scheduled: bool,
    retired: bool,
    last_import: Option<(PartitionId, u64)>,
    /// Departing members that hold everything committed, and since when (they are dropped only
    /// after a few heartbeats told them the commit index too).
    departing_caught_up: HashMap<NodeId, std::time::Instant>,
}

impl PartitionExecutor {
    /// An executor for `config`'s partition; it restores from the WAL when started.
    pub(crate) fn new(config: PartitionConfig, shared: ExecutorShared, status: Arc<StatusCell>) -> Self {
        PartitionExecutor {
            config,
            shared,
            status,
            sm: None,
            incarnation: 0,
            proposals: HashMap::new(),
            resolutions: HashMap::new(),
            flush_scheduled: false,
            retired: false,
            last_import: None,
            departing_caught_up: HashMap::new(),
        }
    }

    fn partition(&self) -> PartitionId {
        self.config.partition
    }

    fn emit(&self, event: RaftEvent) {
        let target = if self.partition().is_system() { &self.shared.system_events } else { &self.shared.events };
        if let Some(events) = target {
            events.do_send(event);
        }
    }

    /// Emit delivered entries in order: runs of ordinary entries as one event, each import entry
    /// as its own [`RaftEvent::Imported`].
    fn emit_entries(&mut self, entries: Vec<LogEntry>, restored: bool) {
        let partition = self.partition();
        let mut run = Vec::new();
        let flush_run = |run: &mut Vec<LogEntry>, this: &Self| {
            if !run.is_empty() {
                let entries = std::mem::take(run);
                this.emit(if restored {
                    RaftEvent::Restored { partition, entries }
                } else {
                    RaftEvent::Replicated { partition, entries }
                });
            }
        };
        for entry in entries {
            if entry.log_type == IMPORT_LOG_TYPE && !partition.is_system() {
                if let Some((header, data)) = decode_import(&entry.payload) {
                    flush_run(&mut run, self);
                    self.last_import = Some((header.source, header.generation));
                    self.emit(RaftEvent::Imported {
                        partition,
                        source: header.source,
                        range: header.range,
                        data: data.to_vec(),
                        index: entry.index,
                    });
                    continue;
                }
            }
            run.push(entry);
        }
        flush_run(&mut run, self);
    }

    /// Read the WAL off the executor, then rebuild the state machine and start the timer.
    fn begin_restore(&mut self, ctx: &mut Context<Self>) {
        let partition = self.partition();
        self.status.set(PartitionStatus { restoring: true, ..PartitionStatus::default() });
        self.emit(RaftEvent::RestoreStarted { partition });
        let wal = self.shared.wal.clone();
        let backoff = if self.incarnation <= 1 {
            Duration::ZERO
        } else {
            Duration::from_millis((50u64 << (self.incarnation - 2).min(6)).min(5_000))
        };
        // No write of an earlier incarnation may land after the WAL is read.
        let fence = self.shared.wal_scheduler.send(FencePartition { partition, incarnation: self.incarnation });
        let load = async move {
            if !backoff.is_zero() {
                tokio::time::sleep(backoff).await;
            }
            if fence.await.is_err() {
                return Err(WalError::Closed);
            }
            tokio::task::spawn_blocking(move || load_partition(&*wal, partition))
                .await
                .unwrap_or_else(|e| Err(WalError::Io(format!("restore panicked: {e}"))))
        };
        ctx.wait(load.into_actor(self).map(|loaded, act, ctx| match loaded {
            Ok(state) => act.finish_restore(state, ctx),
            Err(error) => {
                tracing::error!(partition = %act.partition(), %error, "restore failed; retrying");
                ctx.stop();
            }
        }));
    }

    fn finish_restore(&mut self, state: RestoreState, ctx: &mut Context<Self>) {
        match PartitionStateMachine::restore(self.config.clone(), state) {
            Ok(sm) => self.sm = Some(sm),
            Err(error) => {
                tracing::error!(partition = %self.partition(), %error, "partition refuses to serve: WAL is inconsistent");
                ctx.stop();
                return;
            }
        }
        self.flush(ctx);
        self.emit(RaftEvent::RestoreFinished { partition: self.partition() });
        let tick = self.shared.tick;
        ctx.run_interval(tick, |act, ctx| {
            if let Some(sm) = act.sm.as_mut() {
                sm.tick();
                act.schedule_flush(ctx);
            }
        });
    }

    /// Take the state machine's outputs after the mailbox batch currently being processed.
    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.spawn(fut::ready(()).map(|(), act: &mut Self, ctx| act.flush(ctx)));
        }
    }

    /// Execute everything the state machine produced since the last turn.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        let partition = self.partition();
        let Some(sm) = self.sm.as_mut() else { return };
        let ready = sm.ready();
        let status = PartitionStatus::of(sm);

        let mut by_node: BTreeMap<NodeId, Vec<Envelope>> = BTreeMap::new();
        for envelope in ready.messages {
            by_node.entry(envelope.to).or_default().push(envelope);
        }
        for (to, messages) in by_node {
            let batch =
                MessageBatch { cluster_id: self.shared.cluster_id.clone(), from: self.config.node, to, messages };
            if let Err(error) = self.shared.transport.send(batch) {
                tracing::debug!(%partition, %to, %error, "message batch not sent (Raft retries)");
            }
        }
        if let Some(request) = ready.write {
            self.shared.wal_scheduler.do_send(Persist {
                partition,
                incarnation: self.incarnation,
                request,
                reply_to: ctx.address().recipient(),
            });
        }
        for request in ready.reads {
            self.shared.read_scheduler.do_send(Read {
                incarnation: self.incarnation,
                request,
                reply_to: ctx.address().recipient(),
            });
        }
        if !ready.deliveries.is_empty() {
            let (restored, replicated): (Vec<_>, Vec<_>) = ready.deliveries.into_iter().partition(|d| d.restored);
            let entries =
                |d: Vec<kommander_core::raft::Delivery>| d.into_iter().map(|d| d.entry).collect::<Vec<LogEntry>>();
            self.emit_entries(entries(restored), true);
            self.emit_entries(entries(replicated), false);
        }
        for reply in ready.replies {
            self.answer(reply);
        }
        if let Some(change) = ready.leader_change {
            self.emit(RaftEvent::LeaderChanged { partition, term: change.term, leader: change.leader });
        }
        self.status.set(PartitionStatus { last_import: self.last_import, ..status });
        if let Some(fatal) = ready.fatal {
            tracing::error!(%partition, %fatal, "partition halted; restarting from the WAL");
            ctx.stop();
        }
    }

    fn answer(&mut self, reply: ClientReply) {
        let partition = self.partition();
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

    fn backpressure(&self) -> Option<ReplicateError> {
        let backlog = self.shared.wal_stats.backlog_entries.load(Ordering::Relaxed);
        (backlog > self.shared.max_wal_backlog_entries).then(|| ReplicateError::Backpressure {
            partition: self.partition(),
            detail: format!("{backlog} entries queued for the WAL"),
        })
    }
}

/// Everything a partition's WAL holds, read in one go (runs on a blocking thread).
fn load_partition(wal: &dyn Wal, partition: PartitionId) -> Result<RestoreState, WalError> {
    let hard_state: Option<HardState> = wal.load_hard_state(partition)?;
    let last = wal.last_index(partition)?;
    let entries = if last == 0 { Vec::new() } else { wal.read_range(partition, 1, last)? };
    Ok(RestoreState { hard_state, entries })
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Actor for PartitionExecutor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.retired {
            return;
        }
        self.incarnation += 1;
        self.begin_restore(ctx);
    }
}

impl Supervised for PartitionExecutor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        tracing::warn!(partition = %self.partition(), incarnation = self.incarnation, "restarting partition");
        // Waiters are dropped: their callers get `PartitionUnavailable`, never a hang.
        self.proposals.clear();
        self.resolutions.clear();
        self.sm = None;
        self.flush_scheduled = false;
        self.last_import = None;
    }
}

impl Handler<Retire> for PartitionExecutor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        tracing::info!(partition = %self.partition(), "partition retired");
        self.retired = true;
        self.status.set(PartitionStatus { restoring: true, ..PartitionStatus::default() });
        ctx.stop();
    }
}

impl Handler<ReconcileMembership> for PartitionExecutor {
    type Result = Option<Membership>;

    fn handle(&mut self, msg: ReconcileMembership, ctx: &mut Context<Self>) -> Self::Result {
        let sm = self.sm.as_mut()?;
        if sm.is_leader() && !sm.membership_change_pending() {
            let last = sm.last_index();
            let commit = sm.commit_index();
            let caught_up = |node| sm.progress(node).is_some_and(|p| p.match_index + msg.max_lag >= last);
            // A departing node first gets everything committed and, over a few heartbeats, the
            // commit index (so it sees its own removal in the roster) — unless it stopped answering.
            let departing: Vec<NodeId> = sm.membership().members().filter(|n| !msg.desired.contains(*n)).collect();
            self.departing_caught_up.retain(|n, _| departing.contains(n));
            for &node in &departing {
                if sm.progress(node).is_some_and(|p| p.match_index >= commit) {
                    self.departing_caught_up.entry(node).or_insert_with(std::time::Instant::now);
                } else {
                    self.departing_caught_up.remove(&node);
                }
            }
            let settle = self.shared.tick * 4;
            let departing_caught_up = &self.departing_caught_up;
            let can_drop = |node| {
                sm.progress(node).is_none_or(|p| !p.is_recently_active())
                    || departing_caught_up.get(&node).is_some_and(|since| since.elapsed() >= settle)
            };
            if let Some(next) = sm.membership().next_step_toward(&msg.desired, caught_up, can_drop) {
                let partition = self.config.partition;
                match sm.propose_membership(next.clone(), now_ms()) {
                    Ok(_) => {
                        tracing::info!(%partition, voters = ?next.voters, learners = ?next.learners, "membership change proposed");
                        self.schedule_flush(ctx);
                    }
                    Err(error) => tracing::debug!(%partition, %error, "membership change not proposed"),
                }
            }
        }
        self.sm.as_ref().map(|sm| sm.membership().clone())
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
        let partition = self.partition();
        let started = match (msg.refusal(partition).or_else(|| self.backpressure()), self.sm.as_mut()) {
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
        };
        self.await_proposal(started, ctx)
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
            let (tx, rx) = oneshot::channel();
            self.proposals.insert(accepted.ticket, tx);
            self.schedule_flush(ctx);
            rx
        });
        Box::pin(async move {
            match receiver {
                Ok(rx) => rx.await.unwrap_or(Err(ReplicateError::PartitionUnavailable(partition))),
                Err(error) => Err(error),
            }
        })
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
            let (tx, rx) = oneshot::channel();
            self.resolutions.entry(msg.ticket).or_default().push(tx);
            self.schedule_flush(ctx);
            rx
        });
        Box::pin(async move {
            match receiver {
                Ok(rx) => rx.await.unwrap_or(Err(ReplicateError::PartitionUnavailable(partition))),
                Err(error) => Err(error),
            }
        })
    }
}

impl Handler<WriteOutcome> for PartitionExecutor {
    type Result = ();

    fn handle(&mut self, msg: WriteOutcome, ctx: &mut Context<Self>) {
        if msg.incarnation != self.incarnation {
            return;
        }
        match msg.result {
            Ok(()) => {
                if let Some(sm) = self.sm.as_mut() {
                    sm.on_write_complete(msg.id);
                    self.schedule_flush(ctx);
                }
            }
            Err(error) => {
                tracing::error!(partition = %self.partition(), %error, "wal write failed; restarting partition");
                ctx.stop();
            }
        }
    }
}

impl Handler<ReadOutcome> for PartitionExecutor {
    type Result = ();

    fn handle(&mut self, msg: ReadOutcome, ctx: &mut Context<Self>) {
        if msg.incarnation != self.incarnation {
            return;
        }
        let Some(sm) = self.sm.as_mut() else { return };
        if let Err(error) = sm.on_read_complete(msg.id, msg.result) {
            tracing::error!(partition = %self.config.partition, %error, "wal read failed; restarting partition");
            ctx.stop();
            return;
        }
        self.schedule_flush(ctx);
    }
}

impl Handler<GetStatus> for PartitionExecutor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status.get())
    }
}

#[cfg(test)]
mod tests;

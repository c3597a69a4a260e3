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

use crate::application::TakeSnapshot;
use crate::error::ReplicateError;
use crate::events::RaftEvent;
use crate::node_clock::{Asleep, DownPeers, NodeClock, TickCount, Timer};
use crate::read_scheduler::{Read, ReadOutcome, ReadScheduler};
use crate::snapshot_store::SnapshotStore;
use crate::status::{PartitionStatus, StatusCell};
use crate::transfer::{decode_import, ImportAssembly, IMPORT_CHUNK_LOG_TYPE, IMPORT_LOG_TYPE};
use crate::wal_scheduler::{FencePartition, Persist, WalScheduler, WalStats, WriteOutcome};
use actix::fut::{self, ActorFutureExt};
use actix::prelude::*;
use kommander_core::raft::{ClientReply, Delivery, RestoreState};
use kommander_core::{
    Envelope, HardState, LogEntry, LogIndex, MessageBatch, NodeId, PartitionConfig, PartitionId, PartitionStateMachine,
    Transport, Wal, WalError,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// The node's metric handles.
    pub(crate) metrics: crate::metrics::RuntimeMetrics,
    /// Length of a tick.
    pub(crate) tick: Duration,
    /// The node's timer: it ticks this executor while its partition is awake.
    pub(crate) clock: Addr<NodeClock>,
    /// The node clock's tick count (a replica catches up to it).
    pub(crate) ticks: TickCount,
    /// Peers the node's failure detector reports down (a restored partition starts knowing).
    pub(crate) down_peers: DownPeers,
    /// Where application events go.
    pub(crate) events: Option<Recipient<RaftEvent>>,
    /// Where partition 0's events go (the system coordinator).
    pub(crate) system_events: Option<Recipient<RaftEvent>>,
    /// Where snapshot bytes live.
    pub(crate) snapshots: SnapshotStore,
    /// The application actor that writes user partitions' snapshots.
    pub(crate) snapshot_requests: Option<Recipient<TakeSnapshot>>,
    /// The system coordinator, which writes partition 0's.
    pub(crate) system_snapshot_requests: Option<Recipient<TakeSnapshot>>,
}

impl ExecutorShared {
    /// Who writes `partition`'s snapshots, if anyone.
    pub(crate) fn snapshot_recipient(&self, partition: PartitionId) -> Option<Recipient<TakeSnapshot>> {
        if partition.is_system() {
            self.system_snapshot_requests.clone()
        } else {
            self.snapshot_requests.clone()
        }
    }
}

/// The actor owning one partition replica.
pub struct PartitionExecutor {
    config: PartitionConfig,
    shared: ExecutorShared,
    status: Arc<StatusCell>,
    sm: Option<clock::Replica>,
    incarnation: u64,
    waiters: Waiters,
    flush_scheduled: bool,
    retired: bool,
    last_import: Option<(PartitionId, u64)>,
    /// Departing members that hold everything committed, and since when (they are dropped only
    /// after a few heartbeats told them the commit index too).
    departing_caught_up: HashMap<NodeId, std::time::Instant>,
    /// WAL writes carrying a snapshot meta, and its index (older files go once one is durable).
    snapshot_writes: Vec<(u64, LogIndex)>,
    /// Index of the latest snapshot whose meta is durable (what the status reports).
    durable_snapshot: LogIndex,
    /// Import chunks applied so far of an import whose last chunk has not applied yet.
    import_assembly: ImportAssembly,
    /// The node clock ticks this executor (it was told `Awake` last, not `Asleep`).
    ticked: bool,
    /// When the next tick is due, and whether one is on its way (shared with the clock).
    timer: Arc<Timer>,
    /// Identifier of the last read asked of the state machine.
    next_read_id: u64,
}

impl PartitionExecutor {
    /// An executor for `config`'s partition; it restores from the WAL when started.
    pub(crate) fn new(mut config: PartitionConfig, shared: ExecutorShared, status: Arc<StatusCell>) -> Self {
        if shared.snapshot_recipient(config.partition).is_none() {
            // Nobody can write this partition's state: no automatic snapshots (and so no
            // compaction) for it.
            config.snapshot_interval_entries = 0;
            config.snapshot_interval_bytes = 0;
        }
        PartitionExecutor {
            config,
            shared,
            status,
            sm: None,
            incarnation: 0,
            waiters: Waiters::default(),
            flush_scheduled: false,
            retired: false,
            last_import: None,
            departing_caught_up: HashMap::new(),
            snapshot_writes: Vec::new(),
            durable_snapshot: 0,
            import_assembly: ImportAssembly::default(),
            ticked: false,
            timer: Arc::default(),
            next_read_id: 0,
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

    /// Emit delivered entries in log order, in one pass: each run of ordinary entries (replayed
    /// ones and newly replicated ones apart) as one event, each import entry as its own
    /// [`RaftEvent::Imported`].
    fn emit_deliveries(&mut self, deliveries: Vec<Delivery>) {
        let partition = self.partition();
        let mut run = Vec::with_capacity(deliveries.len());
        let mut run_restored = false;
        let flush_run = |run: &mut Vec<LogEntry>, restored: bool, this: &Self| {
            if !run.is_empty() {
                let entries = std::mem::take(run);
                this.emit(if restored {
                    RaftEvent::Restored { partition, entries }
                } else {
                    RaftEvent::Replicated { partition, entries }
                });
            }
        };
        for Delivery { entry, restored, .. } in deliveries {
            if restored != run_restored {
                flush_run(&mut run, run_restored, self);
                run_restored = restored;
            }
            let import = if partition.is_system() {
                None
            } else if entry.log_type == IMPORT_CHUNK_LOG_TYPE {
                // Chunks are the runtime's: the application sees the whole import, once.
                match self.import_assembly.push(&entry.payload) {
                    Some(import) => Some(import),
                    None => continue,
                }
            } else if entry.log_type == IMPORT_LOG_TYPE {
                decode_import(&entry.payload)
            } else {
                None
            };
            match import {
                Some((header, data)) => {
                    flush_run(&mut run, run_restored, self);
                    self.last_import = Some((header.source, header.generation));
                    let (source, range, index) = (header.source, header.range, entry.index);
                    self.emit(RaftEvent::Imported { partition, source, range, data, index });
                }
                None => run.push(entry),
            }
        }
        flush_run(&mut run, run_restored, self);
    }

    /// Read the WAL off the executor, then rebuild the state machine and start the timer.
    fn begin_restore(&mut self, ctx: &mut Context<Self>) {
        let partition = self.partition();
        self.status.set(PartitionStatus { restoring: true, ..PartitionStatus::default() });
        self.import_assembly.reset();
        self.emit(RaftEvent::RestoreStarted { partition });
        let wal = self.shared.wal.clone();
        let store = self.shared.snapshots.clone();
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
            // An error: the WAL could not be reopened after a failed write (the disk is still
            // full, say); this incarnation stops and the next one tries again after its backoff.
            fence.await.unwrap_or(Err(WalError::Closed))?;
            tokio::task::spawn_blocking(move || load_partition(&*wal, &store, partition))
                .await
                .unwrap_or_else(|e| Err(WalError::Io(format!("restore panicked: {e}"))))
        };
        ctx.wait(load.into_actor(self).map(|loaded, act, ctx| match loaded {
            Ok(state) => act.finish_restore(state, ctx),
            Err(error) => {
                tracing::error!(partition = %act.partition(), %error, "restore failed; the partition refuses to serve (retrying)");
                ctx.stop();
            }
        }));
    }

    fn finish_restore(&mut self, state: RestoreState, ctx: &mut Context<Self>) {
        if let Some(meta) = state.snapshot.as_ref().filter(|_| !state.snapshot_missing) {
            // The application starts from the snapshot; the replay continues after it.
            self.emit_install(meta);
        }
        self.durable_snapshot = state.snapshot.as_ref().map_or(0, |m| m.index);
        match PartitionStateMachine::restore(self.config.clone(), state) {
            Ok(mut sm) => {
                // What the node's failure detector knows, before the first turn.
                let down = self.shared.down_peers.read().unwrap_or_else(|p| p.into_inner()).clone();
                for node in down {
                    sm.set_peer_alive(node, false);
                }
                self.sm = Some(clock::Replica::new(sm, self.shared.ticks.clone(), self.timer.clone()));
            }
            Err(error) => {
                tracing::error!(partition = %self.partition(), %error, "partition refuses to serve: WAL is inconsistent");
                ctx.stop();
                return;
            }
        }
        self.flush(ctx);
        self.emit(RaftEvent::RestoreFinished { partition: self.partition() });
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
        // Debug level: what one turn of this partition does, to follow a slow commit across the
        // WAL and the transport (proposal → persist → send → commit → answer). Free when disabled.
        let _turn = tracing::debug_span!(
            "partition_turn", %partition, term = sm.term(), commit = sm.commit_index(), last = sm.last_index()
        )
        .entered();
        // Every entry up to here is handed to the application by the end of this turn.
        let handed = sm.applied_index();
        // The generation of the entries handed: a read routed with an older one may be stale.
        let generation = sm.generation();
        let status = PartitionStatus::of(sm);
        self.sync_clock(ctx);

        let mut by_node: BTreeMap<NodeId, Vec<Envelope>> = BTreeMap::new();
        for envelope in ready.messages {
            by_node.entry(envelope.to).or_default().push(envelope);
        }
        for (to, messages) in by_node {
            let batch =
                MessageBatch { cluster_id: self.shared.cluster_id.clone(), from: self.config.node, to, messages };
            tracing::debug!(%to, messages = batch.messages.len(), "messages sent");
            if let Err(error) = self.shared.transport.send(batch) {
                tracing::debug!(%partition, %to, %error, "message batch not sent (Raft retries)");
            }
        }
        if let Some(meta) = &ready.install {
            self.emit_install(meta);
        }
        if let Some(request) = ready.write {
            tracing::debug!(
                write = request.id,
                entries = request.write.entries.len(),
                through = request.write.entries.last().map(|e| e.index),
                "persist"
            );
            if let Some(meta) = &request.write.snapshot {
                self.snapshot_writes.push((request.id, meta.index));
            }
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
            self.emit_deliveries(ready.deliveries);
        }
        if let Some(request) = ready.snapshot_request {
            self.take_snapshot(request, ctx);
        }
        for read in ready.snapshot_reads {
            self.read_snapshot_chunk(read, ctx);
        }
        for chunk in ready.snapshot_writes {
            self.stage_snapshot_chunk(chunk, ctx);
        }
        for reply in ready.replies {
            self.answer(reply);
        }
        for state in ready.read_states {
            self.waiters.read_answered(partition, state, handed, generation);
        }
        self.waiters.handed_through(partition, handed, generation);
        if let Some(change) = ready.leader_change {
            self.shared.metrics.leader_changes.increment(1);
            self.emit(RaftEvent::LeaderChanged { partition, term: change.term, leader: change.leader });
        }
        self.status.set(PartitionStatus {
            last_import: self.last_import,
            snapshot_index: self.durable_snapshot,
            ..status
        });
        if let Some(fatal) = ready.fatal {
            tracing::error!(%partition, %fatal, "partition halted; restarting from the WAL");
            ctx.stop();
        }
    }

    fn answer(&mut self, reply: ClientReply) {
        self.waiters.answer(self.config.partition, reply);
    }

    fn backpressure(&self) -> Option<ReplicateError> {
        let backlog = self.shared.wal_stats.backlog_entries.load(Ordering::Relaxed);
        (backlog > self.shared.max_wal_backlog_entries).then(|| {
            self.shared.metrics.backpressure.increment(1);
            ReplicateError::Backpressure {
                partition: self.partition(),
                cause: crate::error::BackpressureCause::WalBacklog { queued: backlog },
            }
        })
    }
}

/// Everything a partition's WAL holds after its latest snapshot, read in one go (runs on a
/// blocking thread). The snapshot's bytes are checked against its meta first: when they are
/// missing or corrupt, the partition keeps its log and hard state, applies nothing and asks the
/// leader for a snapshot that replaces the lost one (`RestoreState::snapshot_missing`).
fn load_partition(wal: &dyn Wal, store: &SnapshotStore, partition: PartitionId) -> Result<RestoreState, WalError> {
    let hard_state: Option<HardState> = wal.load_hard_state(partition)?;
    let snapshot = wal.load_snapshot(partition)?;
    let compacted_through = wal.compacted_through(partition)?;
    let mut snapshot_missing = false;
    if let Some(meta) = &snapshot {
        if let Err(error) = store.verify(meta) {
            tracing::error!(%partition, index = meta.index, %error, "the snapshot is unusable; repairing it from the leader");
            snapshot_missing = true;
        }
    }
    let from = snapshot.as_ref().map_or(1, |m| m.index + 1);
    let last = wal.last_index(partition)?;
    let entries = if last < from { Vec::new() } else { wal.read_range(partition, from, last)? };
    Ok(RestoreState { hard_state, snapshot, compacted_through, entries, snapshot_missing })
}

pub(super) fn now_ms() -> u64 {
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

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.ticked = false;
        self.shared.clock.do_send(Asleep { partition: self.partition() });
    }
}

impl Supervised for PartitionExecutor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        tracing::warn!(partition = %self.partition(), incarnation = self.incarnation, "restarting partition");
        // Waiters are dropped: their callers get `PartitionUnavailable`, never a hang.
        self.waiters.clear();
        self.sm = None;
        self.flush_scheduled = false;
        self.last_import = None;
        self.ticked = false;
        self.shared.clock.do_send(Asleep { partition: self.partition() });
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
                self.snapshot_durable(msg.id);
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

mod clock;
mod membership;
mod messages;
mod reads;
mod snapshots;
#[cfg(test)]
mod tests;
mod waiters;

pub(crate) use messages::{
    GetMembership, Inbound, LearnerLag, MembershipReport, Propose, ProposeFence, ReconcileMembership, ReportTo, Retire,
};
pub use messages::{GetStatus, Replicate, Resolve};
pub(crate) use reads::TransferLeadership;
pub use reads::{Consistency, ReadBarrier};
pub(crate) use snapshots::RequestSnapshot;
use waiters::Waiters;

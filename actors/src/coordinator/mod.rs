//! `SystemCoordinator`: the node's owner of partition 0's state. It applies the
//! [`SystemCommand`]s committed on partition 0 (in log order, replayed on restore) to a
//! [`SystemState`] shared with the manager, keeps the node's running partitions equal to the
//! map's live partitions (starting new ones, retiring removed ones and reclaiming their WAL), tells
//! the application about map and roster changes, and drives the split or merge in progress.
//!
//! # Driving a split or merge
//! Each step is taken by whichever node currently holds the leadership it needs, found by a
//! periodic check, so a crash or a leadership change anywhere simply lets the next leader take the
//! step (operations are resumable by construction):
//! 1. the **source's leader** writes a fence at the source's new generation (guarded writes routed
//!    with the old map are rejected from then on);
//! 2. the **receiving partition's leader**, once its local replica of the source applied the
//!    fence, asks its local application to export the moving range and proposes the state as one
//!    import entry in the receiving partition;
//! 3. the **partition-0 leader**, once its local replica of the receiving partition applied that
//!    import, commits the completion.
//!
//! An operation still pending after `RuntimeConfig::operation_timeout` is aborted by the
//! partition-0 leader (the map returns to its previous ranges with bumped generations).

mod balance;
mod membership;

use crate::error::{AdminError, ReplicateError};
use crate::events::RaftEvent;
use crate::executor::{PartitionExecutor, ProposeFence, Replicate};
use crate::registry::PartitionRegistry;
use crate::transfer::{encode_import_chunks, ExportState, ImportHeader, IMPORT_CHUNK_LOG_TYPE, SYSTEM_LOG_TYPE};
use crate::wal_scheduler::{FencePartition, WalScheduler};
use actix::prelude::*;
use kommander_core::system::{HashRange, Operation, SystemCommand, SystemError, SystemEvent, SystemState};
use kommander_core::{LogIndex, PartitionId, ProposeError, Wal};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

type Outcome = Result<SystemEvent, SystemError>;

/// Outcomes of applied partition-0 entries, by log index, for proposers waiting on them.
#[derive(Debug, Default)]
pub struct AppliedOutcomes {
    /// Highest applied index, and the outcomes of the latest entries.
    inner: Mutex<(LogIndex, BTreeMap<LogIndex, Outcome>)>,
}

impl AppliedOutcomes {
    const KEEP: usize = 4096;

    fn record(&self, index: LogIndex, outcome: Result<SystemEvent, SystemError>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0 = inner.0.max(index);
        inner.1.insert(index, outcome);
        while inner.1.len() > Self::KEEP {
            inner.1.pop_first();
        }
    }

    /// Forget every outcome: the state now covers the log up to `index` (0: nothing applied).
    fn reset_to(&self, index: LogIndex) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = (index, BTreeMap::new());
    }

    /// The highest partition-0 index applied to this node's system state.
    pub(crate) fn applied_index(&self) -> LogIndex {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// The outcome of the entry at `index`, once applied (`Some(None)`: applied, not a command).
    pub fn get(&self, index: LogIndex) -> Option<Option<Result<SystemEvent, SystemError>>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.0 >= index).then(|| inner.1.get(&index).cloned())
    }
}

/// Proposes system commands through the local partition-0 leader and waits for their outcome.
#[derive(Clone)]
pub struct SystemClient {
    pub(crate) registry: Arc<PartitionRegistry>,
    pub(crate) outcomes: Arc<AppliedOutcomes>,
    pub(crate) timeout: Duration,
}

impl SystemClient {
    /// Ask the local executor of `partition` (see [`crate::request::ask`]).
    pub(crate) async fn ask<M>(&self, partition: PartitionId, message: M) -> Result<M::Result, ReplicateError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        PartitionExecutor: Handler<M>,
    {
        let (executor, _) = self.registry.get(partition).ok_or(ReplicateError::UnknownPartition(partition))?;
        crate::request::ask(&executor, partition, message, self.timeout).await
    }

    /// Commit `command` on partition 0 (this node must lead it) and return what applying it did.
    pub(crate) async fn propose(&self, command: &SystemCommand) -> Result<SystemEvent, AdminError> {
        let p0 = PartitionId::SYSTEM;
        let payload = kommander_core::payload::encode(command);
        let committed = self.ask(p0, Replicate::runtime(SYSTEM_LOG_TYPE, vec![payload])).await??;
        let index = committed.last_index;
        let applied = self.registry.changes().wait_until(self.timeout, || self.outcomes.get(index));
        match applied.await {
            Some(Some(outcome)) => outcome.map_err(AdminError::Refused),
            // Another entry took the index (a new leader's log replaced ours).
            Some(None) => {
                Err(ReplicateError::Rejected { partition: p0, source: ProposeError::Superseded { index } }.into())
            }
            None => Err(ReplicateError::Timeout(p0).into()),
        }
    }
}

/// The coordinator actor of one node.
pub struct SystemCoordinator {
    genesis: SystemState,
    state: Arc<RwLock<SystemState>>,
    client: SystemClient,
    events: Option<Recipient<RaftEvent>>,
    transfer: Option<Recipient<ExportState>>,
    wal: Arc<dyn Wal>,
    wal_scheduler: Addr<WalScheduler>,
    restored: bool,
    step_in_flight: bool,
    pending_since: Option<(Operation, Instant)>,
    operation_timeout: Duration,
    check_interval: Duration,
    /// Bytes per import chunk (the snapshots' chunk size).
    import_chunk_bytes: usize,
    members: membership::MembershipDriver,
    balancer: balance::Balancer,
}

pub(crate) use membership::MembershipSettings;

/// What the coordinator needs from the manager.
pub(crate) struct CoordinatorParts {
    pub(crate) genesis: SystemState,
    pub(crate) state: Arc<RwLock<SystemState>>,
    pub(crate) client: SystemClient,
    pub(crate) events: Option<Recipient<RaftEvent>>,
    pub(crate) transfer: Option<Recipient<ExportState>>,
    pub(crate) wal: Arc<dyn Wal>,
    pub(crate) wal_scheduler: Addr<WalScheduler>,
    pub(crate) operation_timeout: Duration,
    pub(crate) check_interval: Duration,
    pub(crate) import_chunk_bytes: usize,
    pub(crate) members: membership::MembershipSettings,
}

impl SystemCoordinator {
    pub(crate) fn new(parts: CoordinatorParts) -> Self {
        SystemCoordinator {
            genesis: parts.genesis,
            state: parts.state,
            client: parts.client,
            events: parts.events,
            transfer: parts.transfer,
            wal: parts.wal,
            wal_scheduler: parts.wal_scheduler,
            restored: false,
            step_in_flight: false,
            pending_since: None,
            operation_timeout: parts.operation_timeout,
            check_interval: parts.check_interval,
            import_chunk_bytes: parts.import_chunk_bytes,
            members: membership::MembershipDriver::new(parts.members),
            balancer: balance::Balancer::default(),
        }
    }

    fn registry(&self) -> &Arc<PartitionRegistry> {
        &self.client.registry
    }

    fn emit(&self, event: RaftEvent) {
        if let Some(events) = &self.events {
            events.do_send(event);
        }
    }

    fn apply_entries(&mut self, entries: Vec<kommander_core::LogEntry>) {
        for entry in entries {
            let outcome = if entry.log_type == SYSTEM_LOG_TYPE {
                let applied = match kommander_core::payload::decode::<SystemCommand>(&entry.payload) {
                    Ok(command) => {
                        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
                        state.apply(&command)
                    }
                    Err(error) => {
                        tracing::error!(index = entry.index, %error, "unreadable system command; ignored everywhere");
                        Err(SystemError::NoMatchingOperation)
                    }
                };
                if let Ok(change) = &applied {
                    self.announce(change.clone());
                }
                Some(applied)
            } else {
                None
            };
            match outcome {
                Some(outcome) => self.client.outcomes.record(entry.index, outcome),
                None => self.client.outcomes.record(entry.index, Err(SystemError::NoMatchingOperation)),
            }
        }
        self.reconcile_partitions();
        self.registry().changes().bump();
    }

    fn announce(&self, change: SystemEvent) {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner()).clone();
        tracing::info!(
            ?change,
            map_version = state.map.version,
            roster_version = state.roster.version,
            "system change applied"
        );
        let partition = PartitionId::SYSTEM;
        match change {
            SystemEvent::RosterChanged => self.emit(RaftEvent::RosterChanged { partition, roster: state.roster }),
            change => self.emit(RaftEvent::PartitionMapChanged { partition, change, map: state.map }),
        }
    }

    /// Run exactly the map's live partitions; retire and reclaim removed ones.
    fn reconcile_partitions(&mut self) {
        if !self.restored {
            return;
        }
        let state = self.state.read().unwrap_or_else(|p| p.into_inner()).clone();
        for info in state.map.partitions.values() {
            if info.is_live() {
                self.registry().ensure_running(info.id);
            } else if self.registry().retire(info.id) {
                self.reclaim(info.id);
            }
        }
    }

    /// Drop a removed partition's log from the WAL, after any write still queued for it.
    fn reclaim(&self, partition: PartitionId) {
        let fence = self.wal_scheduler.send(FencePartition { partition, incarnation: u64::MAX });
        let wal = self.wal.clone();
        actix::spawn(async move {
            let _ = fence.await;
            let result = tokio::task::spawn_blocking(move || wal.truncate_suffix(partition, 1)).await;
            match result {
                Ok(Ok(())) => tracing::info!(%partition, "removed partition's WAL reclaimed"),
                Ok(Err(error)) => tracing::warn!(%partition, %error, "reclaiming the WAL failed"),
                Err(error) => tracing::warn!(%partition, %error, "reclaiming the WAL panicked"),
            }
        });
    }

    /// Take the next step of the pending split or merge that this node's leaderships allow.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        if !self.restored || self.step_in_flight {
            return;
        }
        let state = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            // Nothing pending (the usual case): no clone of the whole state.
            if state.pending.is_none() {
                drop(state);
                self.pending_since = None;
                return;
            }
            state.clone()
        };
        let Some(operation) = state.pending else { return };
        let since = match self.pending_since {
            Some((op, since)) if op == operation => since,
            _ => {
                self.pending_since = Some((operation, Instant::now()));
                Instant::now()
            }
        };
        let registry = self.registry().clone();
        let p0_leader = registry.leads(PartitionId::SYSTEM);
        if p0_leader && since.elapsed() > self.operation_timeout {
            tracing::warn!(?operation, "split/merge timed out; aborting");
            self.run_step(ctx, StepKind::Complete(SystemCommand::AbortOperation));
            return;
        }
        let (source, receiver, range, complete) = match operation {
            Operation::Split { source, target, boundary } => {
                let range = state.map.get(source).and_then(|p| p.range).and_then(|r| r.split_at(boundary));
                let Some((_, moving)) = range else { return };
                (source, target, moving, SystemCommand::CompleteSplit { source, target })
            }
            Operation::Merge { survivor, source } => {
                let Some(range) = state.map.get(source).and_then(|p| p.range) else { return };
                (source, survivor, range, SystemCommand::CompleteMerge { survivor, source })
            }
        };
        let generation = state.map.get(source).map_or(0, |p| p.generation);
        let source_status = registry.status(source);
        let receiver_status = registry.status(receiver);
        let imported = receiver_status.is_some_and(|s| s.last_import == Some((source, generation)));
        if imported {
            if p0_leader {
                self.run_step(ctx, StepKind::Complete(complete));
            }
        } else if source_status.is_some_and(|s| s.is_leader && s.generation < generation) {
            self.run_step(ctx, StepKind::Fence { source, generation });
        } else if receiver_status.is_some_and(|s| s.is_leader)
            && source_status.is_some_and(|s| s.generation >= generation && !s.restoring)
        {
            self.run_step(ctx, StepKind::Import { source, receiver, range, generation });
        }
    }

    fn run_step(&mut self, ctx: &mut Context<Self>, step: StepKind) {
        self.step_in_flight = true;
        let client = self.client.clone();
        let transfer = self.transfer.clone();
        let chunk_bytes = self.import_chunk_bytes;
        let work = async move {
            let result = match &step {
                StepKind::Complete(command) => client.propose(command).await.map(|_| ()),
                StepKind::Fence { source, generation } => fence(&client, *source, *generation).await,
                StepKind::Import { source, receiver, range, generation } => {
                    import(&client, transfer, *source, *receiver, *range, *generation, chunk_bytes).await
                }
            };
            (step, result)
        };
        ctx.spawn(work.into_actor(self).map(|(step, result), act, _| {
            act.step_in_flight = false;
            if let Err(error) = result {
                tracing::debug!(?step, %error, "split/merge step failed; will retry");
            }
        }));
    }
}

#[derive(Debug)]
enum StepKind {
    Fence { source: PartitionId, generation: u64 },
    Import { source: PartitionId, receiver: PartitionId, range: HashRange, generation: u64 },
    Complete(SystemCommand),
}

async fn fence(client: &SystemClient, source: PartitionId, generation: u64) -> Result<(), AdminError> {
    Ok(client.ask(source, ProposeFence { generation }).await?.map(|_| ())?)
}

async fn import(
    client: &SystemClient,
    transfer: Option<Recipient<ExportState>>,
    source: PartitionId,
    receiver: PartitionId,
    range: HashRange,
    generation: u64,
    chunk_bytes: usize,
) -> Result<(), AdminError> {
    let data = match transfer {
        Some(transfer) => match transfer.send(ExportState { partition: source, range }).await {
            Ok(Ok(data)) => data,
            Ok(Err(error)) => return Err(AdminError::ExportFailed(error)),
            Err(_) => return Err(AdminError::ExportFailed("the application's exporter stopped".into())),
        },
        None => Vec::new(),
    };
    let header = ImportHeader { source, generation, range };
    for payload in encode_import_chunks(&header, &data, chunk_bytes) {
        client.ask(receiver, Replicate::runtime(IMPORT_CHUNK_LOG_TYPE, vec![payload])).await??;
    }
    Ok(())
}

impl Actor for SystemCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.check_interval, |act, ctx| {
            act.drive(ctx);
            act.drive_membership(ctx);
            act.balance_leaders();
        });
    }
}

impl SystemCoordinator {
    /// Partition 0's state is replaced by a snapshot (on restore, or installed from the leader).
    fn install_snapshot(&mut self, index: kommander_core::LogIndex, snapshot: &crate::snapshot_store::SnapshotSource) {
        let loaded = snapshot.open().map_err(|e| e.to_string()).and_then(|mut input| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut input, &mut bytes).map_err(|e| e.to_string())?;
            kommander_core::payload::decode::<SystemState>(&bytes).map_err(|e| e.to_string())
        });
        match loaded {
            Ok(state) => {
                tracing::info!(index, "system state restored from a snapshot");
                *self.state.write().unwrap_or_else(|p| p.into_inner()) = state.clone();
                self.client.outcomes.reset_to(index);
                self.registry().changes().bump();
                if self.restored {
                    // A live install (not the restore, which announces the map when it finishes).
                    self.announce_loaded(state);
                    self.reconcile_partitions();
                }
            }
            Err(error) => tracing::error!(index, %error, "partition 0's snapshot could not be read"),
        }
    }
}

impl SystemCoordinator {
    /// Tell the application the whole map and roster of `state` (restored or installed).
    fn announce_loaded(&self, state: SystemState) {
        let map = state.map;
        self.emit(RaftEvent::PartitionMapChanged { partition: PartitionId::SYSTEM, change: SystemEvent::Loaded, map });
        self.emit(RaftEvent::RosterChanged { partition: PartitionId::SYSTEM, roster: state.roster });
    }
}

impl Handler<crate::application::TakeSnapshot> for SystemCoordinator {
    type Result = Result<(u64, u32), String>;

    /// Partition 0's snapshot: the system state (map, roster, pending operation) as of the
    /// snapshot's index (every command up to it was applied, in mailbox order).
    fn handle(&mut self, request: crate::application::TakeSnapshot, _: &mut Context<Self>) -> Self::Result {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut sink = request.sink;
        std::io::Write::write_all(&mut sink, &kommander_core::payload::encode(&state)).map_err(|e| e.to_string())?;
        sink.finish().map_err(|e| e.to_string())
    }
}

impl Handler<RaftEvent> for SystemCoordinator {
    type Result = ();

    fn handle(&mut self, event: RaftEvent, _: &mut Context<Self>) {
        match event {
            RaftEvent::RestoreStarted { .. } => {
                *self.state.write().unwrap_or_else(|p| p.into_inner()) = self.genesis.clone();
                self.client.outcomes.reset_to(0);
                self.registry().changes().bump();
            }
            RaftEvent::Restored { entries, .. } | RaftEvent::Replicated { entries, .. } => self.apply_entries(entries),
            RaftEvent::RestoreFinished { .. } => {
                let first = !self.restored;
                self.restored = true;
                if first {
                    let state = self.state.read().unwrap_or_else(|p| p.into_inner()).clone();
                    self.announce_loaded(state);
                }
                self.reconcile_partitions();
            }
            RaftEvent::SnapshotInstalled { index, snapshot, .. } => self.install_snapshot(index, &snapshot),
            RaftEvent::LeaderChanged { .. }
            | RaftEvent::Imported { .. }
            | RaftEvent::PartitionMapChanged { .. }
            | RaftEvent::RosterChanged { .. } => {}
        }
    }
}

//! `RaftManager`: the node-level handle applications use. `join_cluster` runs the startup flow —
//! discovery, schedulers, partitions (each restores its WAL and replays committed entries as
//! `Restored`), then the transport — after which every partition's timer runs and leaders are
//! elected per partition. All of a node's actors live on one dedicated actix `Arbiter` (thread),
//! which `shutdown` stops. `leave_cluster` first removes the node from the cluster through a committed
//! roster change, then shuts down.

use crate::application::{StateMachine, StateMachineActor, TakeSnapshot};
use crate::changes::Changes;
use crate::config::RuntimeConfig;
use crate::coordinator::{AppliedOutcomes, CoordinatorParts, MembershipSettings, SystemClient, SystemCoordinator};
use crate::error::{ManagerError, ReplicateError};
use crate::events::RaftEvent;
use crate::executor::{ExecutorShared, PartitionExecutor, Replicate, Resolve};
use crate::node_clock::{ClockSettings, NodeClock};
use crate::read_scheduler::ReadScheduler;
use crate::registry::PartitionRegistry;
use crate::router::InboundRouter;
use crate::snapshot_store::SnapshotStore;
use crate::status::{PartitionStatus, StatusCell};
use crate::transfer::ExportState;
use crate::wal_scheduler::{WalScheduler, WalStats};
use actix::prelude::*;
use bytes::Bytes;
use kommander_core::raft::ProposalCommitted;
use kommander_core::system::SystemState;
use kommander_core::{Discovery, NodeId, PartitionId, Ticket, TicketOutcome, Transport, Wal};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

mod reads;

/// The cluster id of a runtime whose transport has none and whose config sets none.
pub const DEFAULT_CLUSTER_ID: &str = "kommander";

/// Builds a [`RaftManager`]. Settings compose in any order: `initial_partitions` given to the
/// builder wins over the one inside a [`RuntimeConfig`] passed to `config`, whichever came first.
pub struct RaftManagerBuilder {
    node: NodeId,
    config: RuntimeConfig,
    initial_partitions: Option<u32>,
    wal: Option<Arc<dyn Wal>>,
    transport: Option<Arc<dyn Transport>>,
    discovery: Option<Arc<dyn Discovery>>,
    events: Option<Recipient<RaftEvent>>,
    transfer: Option<Recipient<ExportState>>,
    snapshot_requests: Option<Recipient<TakeSnapshot>>,
    snapshot_store: Option<SnapshotStore>,
}

impl RaftManagerBuilder {
    /// Runtime settings (timing, limits, cluster id, initial partitions).
    pub fn config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }
    /// Number of user partitions at bootstrap (overrides `RuntimeConfig::initial_partitions`).
    pub fn initial_partitions(mut self, count: u32) -> Self {
        self.initial_partitions = Some(count);
        self
    }
    /// The node's WAL.
    pub fn wal(mut self, wal: Arc<dyn Wal>) -> Self {
        self.wal = Some(wal);
        self
    }
    /// The node's transport.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }
    /// Where to find the other nodes.
    pub fn discovery(mut self, discovery: Arc<dyn Discovery>) -> Self {
        self.discovery = Some(discovery);
        self
    }
    /// The actor receiving [`RaftEvent`]s.
    pub fn events(mut self, recipient: Recipient<RaftEvent>) -> Self {
        self.events = Some(recipient);
        self
    }
    /// The actor that exports a partition's state for splits and merges — the same actor that
    /// receives the events, so exports are ordered after the events sent before them. Without
    /// one, splits and merges move no application state (the import is empty).
    pub fn state_transfer(mut self, recipient: Recipient<ExportState>) -> Self {
        self.transfer = Some(recipient);
        self
    }
    /// The application's replicated state: `actor` (a started [`StateMachineActor`]) receives
    /// every event and answers the exports of splits and merges — the same as
    /// `.events(actor.recipient()).state_transfer(actor.recipient())`.
    pub fn state_machine<S: StateMachine>(self, actor: &Addr<StateMachineActor<S>>) -> Self {
        self.events(actor.clone().recipient())
            .state_transfer(actor.clone().recipient())
            .snapshots(actor.clone().recipient())
    }

    /// Where snapshot bytes live, instead of [`RuntimeConfig::snapshot_dir`] (for in-memory
    /// nodes that restart over the same memory, as tests do with a `MemoryWal`).
    pub fn snapshot_store(mut self, store: SnapshotStore) -> Self {
        self.snapshot_store = Some(store);
        self
    }

    /// The actor that writes partitions' snapshots ([`TakeSnapshot`]) — the same actor that
    /// receives the events, so a snapshot covers exactly the entries delivered before it. Without
    /// one, user partitions are never snapshotted and their logs are never compacted.
    pub fn snapshots(mut self, recipient: Recipient<TakeSnapshot>) -> Self {
        self.snapshot_requests = Some(recipient);
        self
    }

    /// Validate and build (nothing starts until [`RaftManager::join_cluster`]). The cluster id is
    /// the transport's unless the config names one; if both do, they must agree.
    pub fn build(mut self) -> Result<RaftManager, ManagerError> {
        if let Some(count) = self.initial_partitions {
            self.config.initial_partitions = count;
        }
        self.config.validate()?;
        if self.config.initial_partitions == 0 {
            return Err(ManagerError::Config("initial_partitions must be at least 1".into()));
        }
        let transport = self.transport.ok_or(ManagerError::Missing("transport"))?;
        // Snapshots need storage that lives as long as the WAL: a directory (or a store the caller
        // keeps, e.g. in memory beside a `MemoryWal`). Without one, this node never snapshots and
        // never compacts its log.
        let snapshots_enabled = self.snapshot_store.is_some() || self.config.snapshot_dir.is_some();
        if !snapshots_enabled {
            tracing::info!(node = %self.node, "no snapshot_dir: snapshots and log compaction are off on this node");
        }
        let snapshots = match (self.snapshot_store.take(), &self.config.snapshot_dir) {
            (Some(store), _) => store,
            (None, Some(dir)) => SnapshotStore::dir(dir)
                .map_err(|e| ManagerError::Config(format!("snapshot directory {}: {e}", dir.display())))?,
            (None, None) => SnapshotStore::memory(),
        };
        let cluster_id = match (self.config.cluster_id.take(), transport.cluster_id()) {
            (Some(runtime), Some(transport)) if runtime != transport => {
                return Err(ManagerError::ClusterIdMismatch { runtime, transport })
            }
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => DEFAULT_CLUSTER_ID.to_string(),
        };
        Ok(RaftManager {
            inner: Arc::new(Inner {
                node: self.node,
                cluster_id,
                config: self.config,
                wal: self.wal.ok_or(ManagerError::Missing("wal"))?,
                transport,
                discovery: self.discovery.ok_or(ManagerError::Missing("discovery"))?,
                events: self.events,
                transfer: self.transfer,
                snapshot_requests: self.snapshot_requests,
                snapshots,
                snapshots_enabled,
                wal_stats: Arc::new(WalStats::default()),
                metrics: crate::metrics::RuntimeMetrics::register(),
                running: Mutex::new(None),
                leaving: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            }),
        })
    }
}

pub(crate) struct Running {
    arbiter: Arbiter,
    pub(crate) registry: Arc<PartitionRegistry>,
    endpoints: BTreeMap<NodeId, String>,
    /// Held so the coordinator lives exactly as long as the running node.
    _coordinator: Addr<SystemCoordinator>,
    router: Arc<InboundRouter>,
    pub(crate) state: Arc<RwLock<SystemState>>,
    pub(crate) client: SystemClient,
}

pub(crate) struct Inner {
    node: NodeId,
    /// The one cluster id of this node (the transport's, see [`RaftManagerBuilder::build`]).
    cluster_id: String,
    pub(crate) config: RuntimeConfig,
    wal: Arc<dyn Wal>,
    transport: Arc<dyn Transport>,
    discovery: Arc<dyn Discovery>,
    events: Option<Recipient<RaftEvent>>,
    transfer: Option<Recipient<ExportState>>,
    snapshot_requests: Option<Recipient<TakeSnapshot>>,
    snapshots: SnapshotStore,
    /// A snapshot directory or store was configured (see [`RaftManagerBuilder::build`]).
    snapshots_enabled: bool,
    wal_stats: Arc<WalStats>,
    /// The node's metric handles (registered with the recorder installed at build time).
    pub(crate) metrics: crate::metrics::RuntimeMetrics,
    pub(crate) running: Mutex<Option<Running>>,
    /// Set while `leave_cluster` asks the cluster to remove this node.
    pub(crate) leaving: Arc<std::sync::atomic::AtomicBool>,
}

/// A node of a kommander cluster. Cheap to clone.
#[derive(Clone)]
pub struct RaftManager {
    pub(crate) inner: Arc<Inner>,
}

impl RaftManager {
    /// Start building the manager of `node`.
    pub fn builder(node: NodeId) -> RaftManagerBuilder {
        RaftManagerBuilder {
            node,
            config: RuntimeConfig::default(),
            initial_partitions: None,
            wal: None,
            transport: None,
            discovery: None,
            events: None,
            transfer: None,
            snapshot_requests: None,
            snapshot_store: None,
        }
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// The cluster this node belongs to (set once, on the transport).
    pub fn cluster_id(&self) -> &str {
        &self.inner.cluster_id
    }

    /// WAL counters of this node (syncs, entries, backlog).
    pub fn wal_stats(&self) -> Arc<WalStats> {
        self.inner.wal_stats.clone()
    }

    /// Start the node: discovery, schedulers, partitions (restore + replay), transport, timers.
    /// Returns once every partition of the map runs on this node with its WAL replayed (so
    /// `replicate` no longer answers `UnknownPartition`); leaders are elected after that
    /// ([`RaftManager::wait_for_leader`]). Must be called inside a running actix `System`.
    pub async fn join_cluster(&self) -> Result<(), ManagerError> {
        let inner = &self.inner;
        if System::try_current().is_none() {
            return Err(ManagerError::NoSystem);
        }
        let contacts: Vec<_> = inner
            .discovery
            .contacts()
            .map_err(|e| ManagerError::Discovery(e.to_string()))?
            .into_iter()
            .filter(|c| c.node != inner.node)
            .collect();
        let mut founders: Vec<(NodeId, String)> = contacts.iter().map(|c| (c.node, c.address.clone())).collect();
        founders.push((inner.node, inner.config.advertise_address.clone()));
        founders.sort();
        founders.dedup_by_key(|(node, _)| *node);
        let voters: Vec<NodeId> = founders.iter().map(|(node, _)| *node).collect();
        // A founding node starts with the founders as every partition's voters; a joining node as a
        // learner that knows nobody and learns the membership from the logs it receives.
        let base = if inner.config.join_existing { (Vec::new(), vec![inner.node]) } else { (voters, Vec::new()) };
        let endpoints = contacts.into_iter().map(|c| (c.node, c.address)).collect();
        {
            let mut running = inner.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.is_some() {
                return Err(ManagerError::AlreadyJoined);
            }
            let arbiter = Arbiter::new();
            let router = Arc::new(InboundRouter::new(inner.node, inner.cluster_id.clone()));
            let handle = arbiter.handle();
            let (wal, stats) = (inner.wal.clone(), inner.wal_stats.clone());
            let wal_scheduler = WalScheduler::start_in_arbiter(&handle, move |_| WalScheduler::new(wal, stats));
            let (wal, reads) = (inner.wal.clone(), inner.config.read_concurrency);
            let read_scheduler = ReadScheduler::start_in_arbiter(&handle, move |_| ReadScheduler::new(wal, reads));
            let down_peers = crate::node_clock::DownPeers::default();
            let ticks = crate::node_clock::TickCount::default();
            let settings = ClockSettings {
                node: inner.node,
                cluster_id: inner.cluster_id.clone(),
                tick: inner.config.tick,
                liveness: inner.config.liveness(),
                ticks: ticks.clone(),
            };
            let (transport, clock_router, down) = (inner.transport.clone(), router.clone(), down_peers.clone());
            let watched: Vec<NodeId> = founders.iter().map(|(node, _)| *node).collect();
            let clock = NodeClock::start_in_arbiter(&handle, move |_| {
                NodeClock::new(settings, transport, clock_router, down, watched)
            });
            let shared = ExecutorShared {
                clock: clock.clone(),
                ticks,
                down_peers: down_peers.clone(),
                cluster_id: inner.cluster_id.clone(),
                wal: inner.wal.clone(),
                transport: inner.transport.clone(),
                wal_scheduler: wal_scheduler.clone(),
                read_scheduler,
                wal_stats: inner.wal_stats.clone(),
                max_wal_backlog_entries: inner.config.max_wal_backlog_entries,
                metrics: inner.metrics.clone(),
                tick: inner.config.tick,
                events: inner.events.clone(),
                system_events: None,
                snapshots: inner.snapshots.clone(),
                snapshot_requests: inner.snapshot_requests.clone().filter(|_| inner.snapshots_enabled),
                system_snapshot_requests: None,
            };
            let registry = Arc::new(PartitionRegistry::new(
                inner.node,
                inner.config.clone(),
                handle.clone(),
                shared,
                router.clone(),
                base,
                Arc::new(Changes::default()),
            ));
            // Every node computes the same genesis from the same configuration; partition 0's log
            // is applied on top of it.
            let genesis = SystemState::genesis(inner.config.initial_partitions, []);
            let state = Arc::new(RwLock::new(genesis.clone()));
            let client = SystemClient {
                registry: registry.clone(),
                outcomes: Arc::new(AppliedOutcomes::default()),
                timeout: inner.config.proposal_timeout,
            };
            let parts = CoordinatorParts {
                genesis,
                state: state.clone(),
                client: client.clone(),
                events: inner.events.clone(),
                transfer: inner.transfer.clone(),
                wal: inner.wal.clone(),
                wal_scheduler,
                operation_timeout: inner.config.operation_timeout,
                import_chunk_bytes: usize::try_from(inner.config.snapshot_chunk_bytes).unwrap_or(usize::MAX),
                check_interval: inner.config.system_check_interval,
                members: MembershipSettings {
                    node: inner.node,
                    founders: (!inner.config.join_existing).then_some(founders),
                    advertise_address: inner.config.advertise_address.clone(),
                    application_address: inner.config.application_address.clone(),
                    cluster_id: inner.cluster_id.clone(),
                    transport: inner.transport.clone(),
                    discovery: inner.discovery.clone(),
                    promotion_lag: inner.config.promotion_lag,
                    promotion_window: inner.config.promotion_window,
                    leaving: inner.leaving.clone(),
                    clock,
                    down_peers: down_peers.clone(),
                    balance_leaders: inner.config.balance_leaders,
                },
            };
            let coordinator = SystemCoordinator::start_in_arbiter(&handle, move |_| SystemCoordinator::new(parts));
            let system_snapshots = inner.snapshots_enabled.then(|| coordinator.clone().recipient());
            registry.set_system_events(coordinator.clone().recipient(), system_snapshots);
            router.set_membership_asks(coordinator.clone().recipient());
            inner.leaving.store(false, std::sync::atomic::Ordering::SeqCst);
            // Partition 0 first: the coordinator starts the user partitions once it has rebuilt
            // the map from partition 0's log.
            registry.ensure_running(PartitionId::SYSTEM);
            if let Err(error) = inner.transport.start(router.clone()) {
                registry.clear();
                arbiter.stop();
                return Err(ManagerError::Transport(error.to_string()));
            }
            *running = Some(Running { arbiter, registry, endpoints, _coordinator: coordinator, router, state, client });
        }
        self.wait_until_serving().await;
        Ok(())
    }

    /// Wait (on the change signal) until partition 0 replayed its log and every live partition of
    /// the map runs here with its WAL replayed, for at most `operation_timeout`. Leaders are a
    /// cluster matter: [`RaftManager::wait_for_leader`] waits for those.
    async fn wait_until_serving(&self) {
        let Some(changes) = self.changes() else { return };
        let restored = |p: PartitionId| self.status(p).is_ok_and(|s| !s.restoring);
        let serving = || {
            let all = restored(PartitionId::SYSTEM) && self.partitions().into_iter().all(restored);
            all.then_some(())
        };
        if changes.wait_until(self.inner.config.operation_timeout, serving).await.is_none() {
            let waiting: Vec<PartitionId> =
                self.partitions().into_iter().chain([PartitionId::SYSTEM]).filter(|p| !restored(*p)).collect();
            tracing::warn!(node = %self.node(), ?waiting, "joined, but some partitions are still restoring");
        }
    }

    /// Leave the cluster for good: ask the partition-0 leader to remove this node from the roster
    /// (committed through Raft), wait until the removal is applied here and this node leads no
    /// partition any more (each partition's leader then takes it out of its membership; a leader
    /// that removes itself steps down once that commits), then [`RaftManager::shutdown`]. Gives up
    /// waiting after `operation_timeout` and shuts down anyway. A node that only stops and comes
    /// back later should call `shutdown` instead.
    pub async fn leave_cluster(&self) {
        self.inner.leaving.store(true, std::sync::atomic::Ordering::SeqCst);
        self.hand_over_leaderships().await;
        let removed = || self.roster().map(|r| !r.members.contains_key(&self.node())).unwrap_or(true);
        let leads_any = || self.partitions().into_iter().chain([PartitionId::SYSTEM]).any(|p| self.is_leader(p));
        let left = match self.changes() {
            Some(changes) => {
                changes
                    .wait_until(self.inner.config.operation_timeout, || (removed() && !leads_any()).then_some(()))
                    .await
            }
            None => Some(()),
        };
        if left.is_none() {
            let led: Vec<PartitionId> = self.partitions().into_iter().filter(|p| self.is_leader(*p)).collect();
            tracing::warn!(node = %self.node(), removed = removed(), ?led, "leaving: gave up waiting; shutting down anyway");
        }
        // Give the partitions' leaders a moment to commit the membership changes that drop us.
        tokio::time::sleep(self.inner.config.election_timeout.1).await;
        self.shutdown().await;
    }

    /// Stop the node without leaving the cluster (it stays a member; restart it with a new
    /// manager over the same WAL): first hand every partition it leads to another voter (unless
    /// `RuntimeConfig::hand_over_on_shutdown` is off), so none waits out an election timeout,
    /// then stop the transport and every actor of the node.
    pub async fn shutdown(&self) {
        if self.inner.config.hand_over_on_shutdown {
            self.hand_over_leaderships().await;
        }
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(running) = running {
            self.inner.transport.stop();
            running.registry.clear();
            running.arbiter.stop();
        }
    }

    fn executor(&self, partition: PartitionId) -> Result<(Addr<PartitionExecutor>, Arc<StatusCell>), ReplicateError> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        let running = running.as_ref().ok_or(ReplicateError::NotJoined)?;
        running.registry.get(partition).ok_or(ReplicateError::UnknownPartition(partition))
    }

    fn with_endpoint(&self, error: ReplicateError) -> ReplicateError {
        match error {
            ReplicateError::NotLeader { partition, leader: Some(leader), endpoint: None } => {
                // The committed roster knows every member (joined ones too); discovery's contacts
                // cover the founders before the roster is loaded.
                let from_roster = self.roster().ok().and_then(|r| r.members.get(&leader).map(|m| m.address.clone()));
                let from_roster = from_roster.filter(|a| !a.is_empty());
                let endpoint = from_roster.or_else(|| {
                    let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
                    running.as_ref().and_then(|r| r.endpoints.get(&leader).cloned())
                });
                ReplicateError::NotLeader { partition, leader: Some(leader), endpoint }
            }
            other => other,
        }
    }

    pub(crate) async fn ask<M>(&self, partition: PartitionId, message: M) -> Result<M::Result, ReplicateError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        PartitionExecutor: Handler<M>,
    {
        let (executor, _) = self.executor(partition)?;
        crate::request::ask(&executor, partition, message, self.inner.config.proposal_timeout).await
    }

    /// Take a snapshot of `partition` on this node now (whatever the interval) and compact its log
    /// behind it. Returns the index the node's latest snapshot covers once it is durable (the
    /// existing one when nothing was applied since). Any replica can snapshot; each compacts its
    /// own log.
    pub async fn snapshot(&self, partition: PartitionId) -> Result<kommander_core::LogIndex, ReplicateError> {
        let (_, status) = self.executor(partition)?;
        let target = self
            .ask(partition, crate::executor::RequestSnapshot)
            .await?
            .ok_or(ReplicateError::SnapshotUnavailable(partition))?;
        let changes = self.changes().ok_or(ReplicateError::NotJoined)?;
        changes
            .wait_until(self.inner.config.proposal_timeout, || {
                let index = status.get().snapshot_index;
                (index >= target).then_some(index)
            })
            .await
            .ok_or(ReplicateError::Timeout(partition))
    }

    /// Replicate `payloads` (one entry each) on `partition`. Returns once committed: auto-commit
    /// entries are delivered; two-phase ones (`auto_commit = false`) are held until
    /// [`RaftManager::commit`] or [`RaftManager::rollback`] with the returned ticket.
    pub async fn replicate(
        &self,
        partition: PartitionId,
        log_type: &str,
        payloads: impl IntoIterator<Item = impl Into<Bytes>>,
        auto_commit: bool,
    ) -> Result<ProposalCommitted, ReplicateError> {
        let message =
            if auto_commit { Replicate::new(log_type, payloads) } else { Replicate::two_phase(log_type, payloads) };
        self.propose(partition, message).await.map_err(|e| self.with_endpoint(e))
    }

    /// Propose `replicate` on this node's executor of `partition` (the write path).
    pub(crate) async fn propose(
        &self,
        partition: PartitionId,
        replicate: Replicate,
    ) -> Result<ProposalCommitted, ReplicateError> {
        let (executor, _) = self.executor(partition)?;
        let started = std::time::Instant::now();
        let outcome =
            crate::request::propose(&executor, partition, replicate, self.inner.config.proposal_timeout).await;
        let metrics = &self.inner.metrics;
        match &outcome {
            Ok(_) => {
                metrics.committed.increment(1);
                metrics.proposal_seconds.record(started.elapsed());
            }
            Err(_) => metrics.failed.increment(1),
        }
        outcome
    }

    /// Deliver the held entries of a two-phase proposal (idempotent; first outcome wins).
    pub async fn commit(&self, partition: PartitionId, ticket: Ticket) -> Result<TicketOutcome, ReplicateError> {
        self.resolve(partition, ticket, TicketOutcome::Committed).await
    }

    /// Drop the held entries of a two-phase proposal (idempotent; first outcome wins).
    pub async fn rollback(&self, partition: PartitionId, ticket: Ticket) -> Result<TicketOutcome, ReplicateError> {
        self.resolve(partition, ticket, TicketOutcome::RolledBack).await
    }

    async fn resolve(
        &self,
        partition: PartitionId,
        ticket: Ticket,
        outcome: TicketOutcome,
    ) -> Result<TicketOutcome, ReplicateError> {
        self.ask(partition, Resolve { ticket, outcome }).await.and_then(|r| r).map_err(|e| self.with_endpoint(e))
    }

    /// The partition's status as last seen by its executor.
    pub fn status(&self, partition: PartitionId) -> Result<PartitionStatus, ReplicateError> {
        self.executor(partition).map(|(_, status)| status.get())
    }

    /// Does this node lead `partition` (with established leadership)?
    pub fn is_leader(&self, partition: PartitionId) -> bool {
        self.status(partition).is_ok_and(|s| s.is_leader)
    }

    /// Where the application of `node` serves clients, as recorded in the roster (its
    /// `RuntimeConfig::application_address`).
    pub fn application_address(&self, node: NodeId) -> Option<String> {
        self.roster().ok()?.members.get(&node)?.application_address.clone()
    }

    /// Where the leader of `partition` serves clients: forward a client there after `NotLeader`.
    pub fn leader_application_address(&self, partition: PartitionId) -> Option<String> {
        self.application_address(self.leader(partition)?)
    }

    /// The known leader of `partition`.
    pub fn leader(&self, partition: PartitionId) -> Option<NodeId> {
        self.status(partition).ok().and_then(|s| s.leader)
    }

    /// Wait until `partition` has a known leader (or `timeout` passes). A partition the map has
    /// but this node has not started yet (the map is still being restored, or the partition was
    /// just created) is waited for too.
    /// When none shows up and the transport refused frames for authentication meanwhile (another
    /// cluster id or secret), the error is [`ReplicateError::PeersRejected`] with what was refused.
    pub async fn wait_for_leader(&self, partition: PartitionId, timeout: Duration) -> Result<NodeId, ReplicateError> {
        let changes = self.changes().ok_or(ReplicateError::NotJoined)?;
        let (rejected_before, _) = self.inner.transport.auth_rejections();
        let outcome = changes
            .wait_until(timeout, || match self.status(partition) {
                Ok(status) => status.leader.map(Ok),
                Err(ReplicateError::UnknownPartition(_)) if self.is_live_partition(partition) => None,
                Err(error) => Some(Err(error)),
            })
            .await;
        outcome.unwrap_or_else(|| match self.inner.transport.auth_rejections() {
            (rejected, Some(detail)) if rejected > rejected_before => {
                Err(ReplicateError::PeersRejected { partition, rejected: rejected - rejected_before, detail })
            }
            _ => Err(ReplicateError::Timeout(partition)),
        })
    }

    /// The node's change signal, while it runs.
    pub(crate) fn changes(&self) -> Option<Arc<Changes>> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        running.as_ref().map(|r| r.registry.changes().clone())
    }

    /// The actor handle of a user partition, for sending it typed messages ([`Replicate`],
    /// [`Resolve`], [`crate::GetStatus`]). Every message it accepts is checked where the partition
    /// handles it: the system partition and the runtime's reserved log types are refused there,
    /// so a handle cannot break the runtime's invariants. Partition 0 has no handle.
    pub fn partition(&self, partition: PartitionId) -> Result<Addr<PartitionExecutor>, ReplicateError> {
        if partition.is_system() {
            return Err(ReplicateError::SystemPartitionReserved);
        }
        self.executor(partition).map(|(addr, _)| addr)
    }

    /// Live user partitions of the partition map.
    pub fn partitions(&self) -> Vec<PartitionId> {
        self.with_state(|s| s.map.live().map(|p| p.id).collect()).unwrap_or_default()
    }

    /// The inbound router of a running node (its accepted/rejected batch counters).
    pub fn inbound_router(&self) -> Option<Arc<InboundRouter>> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        running.as_ref().map(|r| r.router.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kommander_core::transport::MockTransport;
    use kommander_core::{MemoryWal, StaticDiscovery};

    fn builder(transport: Option<&str>) -> RaftManagerBuilder {
        let mut mock = MockTransport::new();
        let id = transport.map(str::to_string);
        mock.expect_cluster_id().returning(move || id.clone());
        RaftManager::builder(NodeId(1))
            .wal(Arc::new(MemoryWal::new()))
            .transport(Arc::new(mock))
            .discovery(Arc::new(StaticDiscovery::new(Vec::new())))
    }

    #[test]
    fn the_cluster_id_is_set_once_on_the_transport() {
        let manager = builder(Some("payments")).build().unwrap();
        assert_eq!(manager.cluster_id(), "payments");
        let same = RuntimeConfig { cluster_id: Some("payments".into()), ..RuntimeConfig::default() };
        assert_eq!(builder(Some("payments")).config(same).build().unwrap().cluster_id(), "payments");
        assert_eq!(builder(None).build().unwrap().cluster_id(), DEFAULT_CLUSTER_ID);
    }

    #[test]
    fn a_runtime_cluster_id_that_contradicts_the_transport_is_an_error() {
        let other = RuntimeConfig { cluster_id: Some("my-cluster".into()), ..RuntimeConfig::default() };
        let error = builder(Some("payments")).config(other).build().err().expect("mismatch refused");
        assert_eq!(
            error,
            ManagerError::ClusterIdMismatch { runtime: "my-cluster".into(), transport: "payments".into() }
        );
    }

    #[test]
    fn builder_settings_do_not_overwrite_each_other() {
        let config = RuntimeConfig { initial_partitions: 2, ..RuntimeConfig::default() };
        let before = builder(None).initial_partitions(5).config(config.clone()).build().unwrap();
        let after = builder(None).config(config).initial_partitions(5).build().unwrap();
        assert_eq!(before.inner.config.initial_partitions, 5);
        assert_eq!(after.inner.config.initial_partitions, 5);
    }
}

//! The simulated cluster: nodes running one state machine per partition, a WAL per node whose
//! unsynced writes are lost on crash, a network that drops, duplicates, delays (and so reorders)
//! messages and can be partitioned, and clients. Everything is driven by one seeded event queue in
//! virtual time, so a seed always replays the same run.

use super::checker::{Checker, Violation, ViolationKind};
use super::reads::ReadClients;
use crate::config::PartitionConfig;
use crate::error::TicketOutcome;
use crate::hlc::Ticket;
use crate::ids::{NodeId, PartitionId, Term};
use crate::liveness::{LivenessChange, LivenessConfig, NodeLiveness};
use crate::memory_wal::MemoryWal;
use crate::message::Envelope;
use crate::raft::ReadConsistency;
use crate::raft::{ClientReply, Membership, PartitionStateMachine, Proposal, Ready, RestoreState, Role, WriteRequest};
use crate::rng::SplitMix64;
use crate::sim::app::{AppState, SnapshotStore};
use crate::snapshot::{SnapshotChunkRead, SnapshotChunkWrite, SnapshotMeta};
use crate::wal::{Wal, WalBatch};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// Virtual time, in abstract units (a tick is [`NetworkFaults::tick_interval`] units).
pub type SimTime = u64;

/// Network, clock and storage behaviour of a run. The default is a calm, healthy cluster.
#[derive(Clone, Debug)]
pub struct NetworkFaults {
    /// Probability (0..=1000 per mille) that a message is dropped.
    pub drop_per_mille: u32,
    /// Probability (per mille) that a message is delivered twice.
    pub duplicate_per_mille: u32,
    /// Minimum message delay.
    pub min_delay: SimTime,
    /// Maximum message delay (a wide range reorders messages).
    pub max_delay: SimTime,
    /// Probability (per mille) that a message is held back far longer than an election timeout
    /// (up to [`NetworkFaults::long_delay`]): it arrives after terms moved on.
    pub long_delay_per_mille: u32,
    /// Upper bound of a long delay.
    pub long_delay: SimTime,
    /// Time units per tick of a node whose clock runs at the nominal rate.
    pub tick_interval: SimTime,
    /// Clock drift: each node's tick lasts `tick_interval` ± up to this many per mille (drawn per
    /// node at its start).
    pub clock_drift_per_mille: u32,
    /// Minimum WAL write latency.
    pub min_wal_latency: SimTime,
    /// Maximum WAL write latency.
    pub max_wal_latency: SimTime,
    /// Probability (per mille) that a flush is slow (up to [`NetworkFaults::slow_wal_latency`]).
    pub slow_wal_per_mille: u32,
    /// Upper bound of a slow flush.
    pub slow_wal_latency: SimTime,
    /// Probability (per mille) that a flush fails: nothing in it becomes durable and every
    /// partition in it restarts from its WAL (the runtime's supervisor does the same).
    pub failed_wal_per_mille: u32,
    /// Probability (per mille) that a flush hangs until the node crashes.
    pub hung_wal_per_mille: u32,
}

impl Default for NetworkFaults {
    fn default() -> Self {
        NetworkFaults {
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            min_delay: 1,
            max_delay: 3,
            long_delay_per_mille: 0,
            long_delay: 0,
            tick_interval: 10,
            clock_drift_per_mille: 0,
            min_wal_latency: 1,
            max_wal_latency: 2,
            slow_wal_per_mille: 0,
            slow_wal_latency: 0,
            failed_wal_per_mille: 0,
            hung_wal_per_mille: 0,
        }
    }
}

#[derive(Clone, Debug)]
enum Event {
    Tick {
        node: NodeId,
        epoch: u64,
    },
    /// Messages are addressed to a node, not an incarnation: a delayed message may reach the node
    /// after it restarted.
    Deliver {
        envelope: Envelope,
    },
    /// A node-level keep-alive frame (no partition's messages), for the failure detector.
    KeepAlive {
        from: NodeId,
        to: NodeId,
    },
    /// Take a replica's outputs after it absorbed several inputs (explores batched turns).
    Ready {
        node: NodeId,
        epoch: u64,
        partition: PartitionId,
        incarnation: u64,
    },
    /// A group-commit flush finished: every write in it is durable (or, with `failed`, none).
    FlushDone {
        node: NodeId,
        epoch: u64,
        writes: Vec<QueuedWrite>,
        failed: bool,
    },
    ReadDone {
        node: NodeId,
        epoch: u64,
        partition: PartitionId,
        incarnation: u64,
        id: u64,
        from: u64,
        to: u64,
    },
    /// The application finished writing the snapshot asked for.
    SnapshotTaken {
        node: NodeId,
        epoch: u64,
        partition: PartitionId,
        incarnation: u64,
        meta: SnapshotMeta,
    },
    /// A chunk of a stored snapshot was read for a follower.
    ChunkRead {
        node: NodeId,
        epoch: u64,
        partition: PartitionId,
        incarnation: u64,
        read: SnapshotChunkRead,
    },
    /// A received chunk was staged (the last one: checked and published).
    ChunkWritten {
        node: NodeId,
        epoch: u64,
        partition: PartitionId,
        incarnation: u64,
        chunk: SnapshotChunkWrite,
    },
}

#[derive(Debug)]
struct Scheduled {
    time: SimTime,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time, self.seq).cmp(&(other.time, other.seq))
    }
}

/// A write waiting for (or in) a flush, with the incarnation of the replica that issued it.
#[derive(Clone, Debug)]
struct QueuedWrite {
    partition: PartitionId,
    incarnation: u64,
    request: WriteRequest,
}

/// One simulated node.
struct SimNode {
    alive: bool,
    /// Bumped on every crash; events of older incarnations are ignored.
    epoch: u64,
    /// The durable WAL (survives crashes; only completed writes reach it).
    wal: MemoryWal,
    /// Snapshot files (complete ones survive crashes, partial ones do not).
    store: SnapshotStore,
    partitions: BTreeMap<PartitionId, PartitionStateMachine>,
    /// Incarnation of each replica: bumped when the node or the partition alone restarts.
    incarnations: BTreeMap<PartitionId, u64>,
    /// Writes waiting for the next flush (group commit, like the runtime's WAL scheduler).
    wal_queue: Vec<QueuedWrite>,
    /// A flush is in progress.
    flushing: bool,
    /// The running flush hangs until the node crashes.
    hung: bool,
    /// The next flush hangs (scripted by [`World::hang_wal`]).
    hang_next: bool,
    /// This node's clock rate: a tick lasts `tick_interval × tick_per_mille / 1000` on average
    /// (clock drift, at a resolution of one per mille).
    tick_per_mille: u64,
    /// Ticks since the node started (to spread the rate's remainder over its ticks).
    ticks: u64,
    /// The process is paused (SIGSTOP) until then: nothing it would do happens before.
    paused_until: SimTime,
    /// The node-level failure detector (reset when the node starts).
    liveness: NodeLiveness,
    /// How far this node's wall clock (read for tickets) is off the simulated time, in time units.
    wall_offset: i64,
}

/// A two-phase ticket awaiting its commit/rollback decision.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingDecision {
    pub(crate) partition: PartitionId,
    pub(crate) ticket: Ticket,
    pub(crate) outcome: TicketOutcome,
}

/// The simulated cluster. Manual control (for scenario tests) and the random driver share it.
pub struct World {
    /// Ticks delivered to replicas.
    pub ticks: u64,
    /// Of those, ticks before the replica's deadline (`ticks_until_due`): ticks a lazily ticking
    /// driver skips, each checked to change nothing.
    pub lazy_ticks: u64,
    now: SimTime,
    seq: u64,
    steps: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: BTreeMap<NodeId, SimNode>,
    configs: BTreeMap<(NodeId, PartitionId), PartitionConfig>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Network and storage behaviour (may be changed between steps).
    pub faults: NetworkFaults,
    rng: SplitMix64,
    checker: Checker,
    trace: u64,
    /// Two-phase tickets acknowledged as held, waiting for the driver to decide them.
    pub(crate) held_tickets: Vec<(PartitionId, Ticket)>,
    /// Proposals acknowledged so far.
    pub acked: u64,
    /// Tickets of two-phase proposals.
    two_phase: std::collections::HashSet<(PartitionId, Ticket)>,
    /// Tickets of membership changes (never delivered).
    config_tickets: std::collections::HashSet<(PartitionId, Ticket)>,
    /// Source of replica incarnation numbers.
    incarnations: u64,
    /// Highest-term published leader seen per partition, and how often it changed.
    leadership: BTreeMap<PartitionId, (Term, NodeId)>,
    elections: u64,
    /// Each running replica's application state.
    apps: BTreeMap<(NodeId, PartitionId), AppState>,
    /// Snapshots installed from a leader.
    pub installs: u64,
    /// Nodes whose data directory was wiped.
    pub wipes: u64,
    /// Nodes whose snapshot files were lost.
    pub snapshot_losses: u64,
    /// Replicas restored without their snapshot's bytes, waiting for a repair.
    repairing: BTreeSet<(NodeId, PartitionId)>,
    /// Replicas repaired by the leader's snapshot.
    pub repairs: u64,
    /// Timing of every node's failure detector (applies to nodes started after a change).
    pub liveness: LivenessConfig,
    /// Read clients and their checker.
    pub(crate) reads: ReadClients,
    /// Leadership transfers started.
    pub transfers: u64,
}

impl World {
    /// A cluster of `configs` (one per node × partition), all nodes up and empty.
    pub fn new(seed: u64, configs: Vec<PartitionConfig>, faults: NetworkFaults) -> Result<World, Violation> {
        let mut world = World {
            ticks: 0,
            lazy_ticks: 0,
            now: 0,
            seq: 0,
            steps: 0,
            queue: BinaryHeap::new(),
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            cut: BTreeSet::new(),
            faults,
            rng: SplitMix64::new(seed),
            checker: Checker::default(),
            trace: 0xcbf2_9ce4_8422_2325,
            held_tickets: Vec::new(),
            acked: 0,
            two_phase: Default::default(),
            config_tickets: Default::default(),
            incarnations: 0,
            leadership: BTreeMap::new(),
            elections: 0,
            apps: BTreeMap::new(),
            installs: 0,
            wipes: 0,
            snapshot_losses: 0,
            repairing: BTreeSet::new(),
            repairs: 0,
            liveness: LivenessConfig::default(),
            reads: ReadClients::default(),
            transfers: 0,
        };
        for config in configs {
            world.nodes.entry(config.node).or_insert_with(|| SimNode {
                alive: false,
                epoch: 0,
                wal: MemoryWal::new(),
                store: SnapshotStore::default(),
                partitions: BTreeMap::new(),
                incarnations: BTreeMap::new(),
                wal_queue: Vec::new(),
                flushing: false,
                hung: false,
                hang_next: false,
                wall_offset: 0,
                tick_per_mille: 1000,
                ticks: 0,
                paused_until: 0,
                liveness: NodeLiveness::new(LivenessConfig::default()),
            });
            world.configs.insert((config.node, config.partition), config);
        }
        let nodes: Vec<NodeId> = world.nodes.keys().copied().collect();
        for node in nodes {
            world.start_node(node)?;
        }
        Ok(world)
    }

    // ----- observation -----------------------------------------------------------------------

    /// Current virtual time.
    pub fn now(&self) -> SimTime {
        self.now
    }
    /// Events processed so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }
    /// Hash of every event processed, in order (same seed ⇒ same hash).
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }
    /// The invariant checker.
    pub fn checker(&self) -> &Checker {
        &self.checker
    }
    /// All node ids.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }
    /// All partition ids.
    pub fn partition_ids(&self) -> Vec<PartitionId> {
        let set: BTreeSet<PartitionId> = self.configs.keys().map(|&(_, p)| p).collect();
        set.into_iter().collect()
    }
    /// Is the node running?
    pub fn is_alive(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.alive)
    }
    /// The state machine of a running replica.
    pub fn replica(&self, node: NodeId, partition: PartitionId) -> Option<&PartitionStateMachine> {
        self.nodes.get(&node).filter(|n| n.alive).and_then(|n| n.partitions.get(&partition))
    }
    /// The durable WAL of a node.
    pub fn wal(&self, node: NodeId) -> &MemoryWal {
        &self.nodes[&node].wal
    }
    /// How many times a partition's highest-term published leader changed (summed over
    /// partitions): the disruption measure.
    pub fn elections(&self) -> u64 {
        self.elections
    }
    /// Running replicas of `partition` in the leader role (published or not, deposed or not).
    pub fn leader_role(&self, partition: PartitionId) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.alive)
            .filter(|(_, n)| n.partitions.get(&partition).is_some_and(|sm| sm.role() == Role::Leader))
            .map(|(&id, _)| id)
            .collect()
    }
    /// The configuration of `node`'s replica of `partition`.
    pub fn config(&self, node: NodeId, partition: PartitionId) -> Option<&PartitionConfig> {
        self.configs.get(&(node, partition))
    }
    /// Running replicas that are quiet (quiescence).
    pub fn quiet_replicas(&self) -> usize {
        self.nodes
            .values()
            .filter(|n| n.alive)
            .flat_map(|n| n.partitions.values())
            .filter(|sm| sm.is_quiesced())
            .count()
    }
    /// A running replica that leads `partition` with published leadership (highest term wins).
    pub fn leader(&self, partition: PartitionId) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.alive)
            .filter_map(|(&id, n)| n.partitions.get(&partition).filter(|sm| sm.is_leader()).map(|sm| (sm.term(), id)))
            .max()
            .map(|(_, id)| id)
    }

    // ----- faults ----------------------------------------------------------------------------

    /// Cut both directions between `a` and `b`.
    pub fn cut_link(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }
    /// Restore both directions between `a` and `b`.
    pub fn restore_link(&mut self, a: NodeId, b: NodeId) {
        self.cut.remove(&(a, b));
        self.cut.remove(&(b, a));
    }
    /// Cut the direction `from` → `to` only (the other direction keeps working).
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }
    /// Pause `node` (like SIGSTOP) for `duration`: its timers, deliveries and flushes wait.
    pub fn pause(&mut self, node: NodeId, duration: SimTime) {
        let until = self.now + duration;
        if let Some(n) = self.nodes.get_mut(&node) {
            n.paused_until = n.paused_until.max(until);
        }
    }
    /// End every pause.
    pub fn unpause_all(&mut self) {
        for n in self.nodes.values_mut() {
            n.paused_until = 0;
        }
    }
    /// Is `node` up with a flush that hangs?
    pub fn is_hung(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.alive && n.hung)
    }
    /// Step `node`'s wall clock by `delta` (back when negative). It survives restarts (it is the
    /// machine's clock); the monotonic time of ticks and leases is not affected.
    pub fn jump_wall_clock(&mut self, node: NodeId, delta: i64) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.wall_offset = n.wall_offset.saturating_add(delta);
        }
    }
    /// `node`'s wall clock now.
    fn wall_clock(&self, node: NodeId) -> u64 {
        let offset = self.nodes.get(&node).map_or(0, |n| n.wall_offset);
        (self.now as i64).saturating_add(offset).max(0) as u64
    }
    /// Make `node`'s disk hang: its next WAL flush (and so every later one) never completes, until
    /// the node crashes. A flush already running still completes.
    pub fn hang_wal(&mut self, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.hang_next = true;
        }
        self.start_flush(node);
    }
    /// Cut every link of `node`.
    pub fn isolate(&mut self, node: NodeId) {
        for other in self.node_ids() {
            if other != node {
                self.cut_link(node, other);
            }
        }
    }
    /// Restore every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }
    /// Crash `node`: in-memory state and unsynced writes are lost.
    pub fn crash(&mut self, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.alive = false;
            n.epoch += 1;
            n.partitions.clear();
            n.wal_queue.clear();
            n.flushing = false;
            n.hung = false;
            n.hang_next = false;
            n.paused_until = 0;
            n.store.crashed();
        }
        self.apps.retain(|(n, _), _| *n != node);
    }

    /// Crash `node` and lose its snapshot files (its WAL, with their metas, is intact): on restart
    /// it repairs its partitions from the leaders' snapshots.
    pub fn lose_snapshots(&mut self, node: NodeId) {
        self.crash(node);
        if let Some(n) = self.nodes.get_mut(&node) {
            n.store.wipe();
            self.snapshot_losses += 1;
        }
    }

    /// Crash `node` and lose its data directory: log, snapshots and commit index. Its term and
    /// vote are kept (a replica that forgot a vote could vote twice in one term; the runtime's
    /// rejoin after data loss goes through a new learner membership instead). It catches up from
    /// the leaders (by snapshot when their logs are compacted) once restarted.
    pub fn wipe(&mut self, node: NodeId) -> Result<(), Violation> {
        self.crash(node);
        let Some(n) = self.nodes.get_mut(&node) else { return Ok(()) };
        let fresh = MemoryWal::new();
        for partition in n.wal.partitions().map_err(|e| fatal(node, e.to_string()))? {
            if let Some(hard_state) = n.wal.load_hard_state(partition).map_err(|e| fatal(node, e.to_string()))? {
                let kept = crate::wal::HardState { commit: 0, ..hard_state };
                fresh.save_hard_state(partition, &kept).map_err(|e| fatal(node, e.to_string()))?;
            }
        }
        n.wal = fresh;
        n.store.wipe();
        self.checker.wiped(node);
        self.wipes += 1;
        Ok(())
    }
    /// Restart a crashed node from its durable WAL.
    pub fn restart(&mut self, node: NodeId) -> Result<(), Violation> {
        if self.is_alive(node) {
            return Ok(());
        }
        self.start_node(node)
    }

    fn start_node(&mut self, node: NodeId) -> Result<(), Violation> {
        let partitions: Vec<PartitionId> = self.configs.keys().filter(|(n, _)| *n == node).map(|&(_, p)| p).collect();
        let drift = u64::from(self.faults.clock_drift_per_mille.min(900));
        let tick_per_mille = 1000 - drift + self.rng.next_u64() % (2 * drift + 1);
        let offset = self.rng.next_u64() % self.faults.tick_interval;
        let peers: Vec<NodeId> = self.nodes.keys().copied().filter(|&p| p != node).collect();
        let n = self.nodes.get_mut(&node).expect("node exists");
        n.alive = true;
        n.tick_per_mille = tick_per_mille;
        n.ticks = 0;
        n.liveness = NodeLiveness::new(self.liveness);
        n.liveness.set_peers(peers);
        let epoch = n.epoch;
        for &partition in &partitions {
            self.restore_partition(node, partition)?;
        }
        self.schedule(offset + 1, Event::Tick { node, epoch });
        for partition in partitions {
            self.process_ready(node, partition)?;
        }
        Ok(())
    }

    /// (Re)create one replica from the node's durable WAL, as a new incarnation.
    fn restore_partition(&mut self, node: NodeId, partition: PartitionId) -> Result<(), Violation> {
        let config = self.configs[&(node, partition)].clone();
        let wal = self.nodes[&node].wal.clone();
        let io = |e: crate::wal::WalError| fatal(node, e.to_string());
        let hard_state = wal.load_hard_state(partition).map_err(io)?;
        let last = wal.last_index(partition).map_err(io)?;
        let snapshot = wal.load_snapshot(partition).map_err(io)?;
        let compacted_through = wal.compacted_through(partition).map_err(io)?;
        let from = snapshot.as_ref().map_or(1, |m| m.index + 1);
        let entries = wal.read_range(partition, from, last).map_err(io)?;
        // A snapshot whose bytes are gone (or fail their checksum) is repaired from the leader.
        let app = match &snapshot {
            Some(meta) => {
                let bytes = self.nodes[&node].store.get(partition, meta.index, meta.term);
                bytes.filter(|b| crate::codec::crc32c(b) == meta.checksum).and_then(|b| AppState::decode(b))
            }
            None => Some(AppState::default()),
        };
        let snapshot_missing = app.is_none();
        if snapshot_missing {
            self.repairing.insert((node, partition));
        } else {
            self.repairing.remove(&(node, partition));
        }
        self.checker.restarted(node, partition, snapshot.as_ref().map(|m| (m, app)), &entries)?;
        let state = RestoreState { hard_state, snapshot, compacted_through, entries, snapshot_missing };
        let mut sm = PartitionStateMachine::restore(config, state).map_err(|e| fatal(node, e.to_string()))?;
        // A replica restarted alone learns what its node's failure detector knows.
        let liveness = &self.nodes[&node].liveness;
        for peer in liveness.peers().filter(|&p| !liveness.is_alive(p)).collect::<Vec<_>>() {
            sm.set_peer_alive(peer, false);
        }
        self.apps.insert((node, partition), app.unwrap_or_default());
        self.incarnations += 1;
        let n = self.nodes.get_mut(&node).expect("node exists");
        n.partitions.insert(partition, sm);
        n.incarnations.insert(partition, self.incarnations);
        Ok(())
    }

    /// A WAL failure stopped these replicas: each restarts from what is durable, and the writes
    /// it still had queued are dropped (the runtime fences its WAL scheduler the same way).
    fn restart_partitions(&mut self, node: NodeId, partitions: &BTreeSet<PartitionId>) -> Result<(), Violation> {
        self.nodes.get_mut(&node).expect("alive").wal_queue.retain(|w| !partitions.contains(&w.partition));
        for &partition in partitions {
            self.restore_partition(node, partition)?;
            self.process_ready(node, partition)?;
        }
        Ok(())
    }

    fn incarnation(&self, node: NodeId, partition: PartitionId) -> u64 {
        self.nodes.get(&node).and_then(|n| n.incarnations.get(&partition)).copied().unwrap_or(0)
    }

    // ----- clients ---------------------------------------------------------------------------

    /// Propose through the published leader of `partition`, if any. Returns whether it was accepted.
    pub fn propose(
        &mut self,
        partition: PartitionId,
        payloads: Vec<Vec<u8>>,
        auto_commit: bool,
    ) -> Result<bool, Violation> {
        let Some(leader) = self.leader(partition) else { return Ok(false) };
        self.propose_at(leader, partition, payloads, auto_commit)
    }

    /// Propose through the replica on `node`, whatever its role (an unpublished, deposed or
    /// follower replica must refuse or never acknowledge wrongly). Returns whether it was accepted.
    pub fn propose_at(
        &mut self,
        node: NodeId,
        partition: PartitionId,
        payloads: Vec<Vec<u8>>,
        auto_commit: bool,
    ) -> Result<bool, Violation> {
        let now = self.wall_clock(node);
        let Some(sm) = self.sm_mut(node, partition) else { return Ok(false) };
        let proposal =
            Proposal { log_type: "sim".into(), payloads: payloads.into_iter().map(Into::into).collect(), auto_commit };
        let accepted = sm.propose(proposal, now);
        if let Ok(accepted) = &accepted {
            // A ticket names the latest proposal issued with it: after a crash whose wall clock
            // went back, a replica may issue again a ticket of a proposal that never committed.
            if auto_commit {
                self.two_phase.remove(&(partition, accepted.ticket));
            } else {
                self.two_phase.insert((partition, accepted.ticket));
            }
        }
        self.process_ready(node, partition)?;
        Ok(accepted.is_ok())
    }

    /// A read on the replica on `node`, whatever its role: `None` reads the local state at once,
    /// otherwise the replica is asked for a read index and the read is checked once served.
    pub fn read_at(
        &mut self,
        node: NodeId,
        partition: PartitionId,
        consistency: Option<ReadConsistency>,
    ) -> Result<(), Violation> {
        let (now, incarnation) = (self.now, self.incarnation(node, partition));
        let required = self.checker.acked_through(partition);
        if self.sm_mut(node, partition).is_none() {
            return Ok(());
        }
        let Some(consistency) = consistency else {
            self.reads.local += 1;
            return Ok(());
        };
        let id = self.reads.issue(node, partition, incarnation, required, consistency);
        let Some(sm) = self.sm_mut(node, partition) else { return Ok(()) };
        if sm.read(id, consistency, now).is_err() {
            self.reads.refused(id);
        }
        self.process_ready(node, partition)
    }

    /// Ask the leader of `partition` on `node` to hand its leadership to `to`. Returns whether
    /// the transfer started.
    pub fn transfer_at(&mut self, node: NodeId, partition: PartitionId, to: NodeId) -> Result<bool, Violation> {
        let Some(sm) = self.sm_mut(node, partition) else { return Ok(false) };
        let started = sm.transfer_leadership(to).is_ok();
        self.transfers += u64::from(started);
        self.process_ready(node, partition)?;
        Ok(started)
    }

    /// Ask the replica on `node` for a snapshot now (an operator's `snapshot(partition)`).
    pub fn request_snapshot(&mut self, node: NodeId, partition: PartitionId) -> Result<(), Violation> {
        let Some(sm) = self.sm_mut(node, partition) else { return Ok(()) };
        sm.request_snapshot();
        self.process_ready(node, partition)
    }

    /// Is any running replica repairing a lost snapshot (or any node down, which may come back
    /// repairing)?
    pub fn any_repairing(&self) -> bool {
        self.nodes.values().any(|n| !n.alive || n.partitions.values().any(PartitionStateMachine::is_repairing))
    }

    /// Can `node` lose its data without a quorum losing what it acknowledged? Only when every
    /// node is up and no replica of any partition counts it as a voter or has a membership change
    /// pending (it is a learner or outside the membership everywhere). A learner's leader learns
    /// of the loss from its next answer and catches it up again.
    pub fn outside_every_quorum(&self, node: NodeId) -> bool {
        self.nodes.values().all(|n| n.alive)
            && self
                .nodes
                .values()
                .flat_map(|n| n.partitions.values())
                .all(|sm| !sm.membership().voters.contains(&node) && !sm.membership_change_pending())
    }

    /// Ask the published leader of `partition` to take one membership step toward `target`
    /// (adding learners, promoting learners within 4 entries of its log, removing nodes). Returns
    /// whether a change was proposed.
    pub fn change_membership(&mut self, partition: PartitionId, target: &Membership) -> Result<bool, Violation> {
        let Some(leader) = self.leader(partition) else { return Ok(false) };
        let Some(next) = self.next_membership_step(leader, partition, target) else { return Ok(false) };
        self.propose_membership_at(leader, partition, next)
    }

    /// The step the replica on `node` would take toward `target` (`None` when there is none).
    pub fn next_membership_step(
        &self,
        node: NodeId,
        partition: PartitionId,
        target: &Membership,
    ) -> Option<Membership> {
        let sm = self.replica(node, partition)?;
        let last = sm.last_index();
        sm.membership().next_step_toward(
            target,
            |n| sm.progress(n).is_some_and(|p| p.match_index + 4 >= last),
            |_| true,
        )
    }

    /// Propose membership `next` on the replica on `node`, unfiltered: the state machine itself
    /// must refuse what is not allowed (not a leader, a change pending, more than one step).
    pub fn propose_membership_at(
        &mut self,
        node: NodeId,
        partition: PartitionId,
        next: Membership,
    ) -> Result<bool, Violation> {
        let now = self.wall_clock(node);
        let Some(sm) = self.sm_mut(node, partition) else { return Ok(false) };
        let proposed = sm.propose_membership(next, now);
        if let Ok(accepted) = &proposed {
            self.config_tickets.insert((partition, accepted.ticket));
        }
        self.process_ready(node, partition)?;
        Ok(proposed.is_ok())
    }

    /// The members (voters and learners) of `partition` according to its current leader, or every
    /// configured replica when there is no leader.
    pub fn members(&self, partition: PartitionId) -> Vec<NodeId> {
        match self.leader(partition).and_then(|l| self.replica(l, partition)) {
            Some(sm) => sm.membership().members().collect(),
            None => self.configs.keys().filter(|(_, p)| *p == partition).map(|(n, _)| *n).collect(),
        }
    }

    /// Ask the replica on `node` (any role) to resolve `ticket` of `partition` with `outcome`.
    /// Returns whether it accepted the request (the answer comes later, through its replies).
    pub fn resolve_at(
        &mut self,
        node: NodeId,
        partition: PartitionId,
        ticket: Ticket,
        outcome: TicketOutcome,
    ) -> Result<bool, Violation> {
        self.decide_at(node, PendingDecision { partition, ticket, outcome })
    }

    /// Take the two-phase tickets acknowledged as Raft-committed since the last call.
    pub fn take_acknowledged_two_phase(&mut self) -> Vec<(PartitionId, Ticket)> {
        std::mem::take(&mut self.held_tickets)
    }

    /// Ask the replica on `node` (any role) to commit or roll back `ticket`. The answer arrives
    /// through its replies; a ticket acknowledged as Raft-committed must never be answered
    /// "unknown" (checked in [`Checker::unknown_ticket_answered`]).
    pub(crate) fn decide_at(&mut self, node: NodeId, decision: PendingDecision) -> Result<bool, Violation> {
        let Some(sm) = self.sm_mut(node, decision.partition) else { return Ok(false) };
        let result = match decision.outcome {
            TicketOutcome::Committed => sm.commit(decision.ticket),
            TicketOutcome::RolledBack => sm.rollback(decision.ticket),
        };
        self.process_ready(node, decision.partition)?;
        if let Err(crate::error::ProposeError::UnknownTicket(ticket)) = result {
            self.checker.unknown_ticket_answered(node, decision.partition, ticket)?;
        }
        Ok(result.is_ok())
    }

    /// Draw a random number in `[0, n)` from the world's generator.
    pub fn random(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn sm_mut(&mut self, node: NodeId, partition: PartitionId) -> Option<&mut PartitionStateMachine> {
        self.nodes.get_mut(&node).filter(|n| n.alive).and_then(|n| n.partitions.get_mut(&partition))
    }

    // ----- event loop ------------------------------------------------------------------------

    fn schedule(&mut self, delay: SimTime, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled { time: self.now + delay, seq: self.seq, event }));
    }

    /// Process events until virtual time `until`.
    pub fn run_until(&mut self, until: SimTime) -> Result<(), Violation> {
        while self.queue.peek().is_some_and(|Reverse(next)| next.time <= until) {
            self.step()?;
        }
        self.now = self.now.max(until);
        Ok(())
    }

    /// Process the next event, if any. Returns whether one was processed.
    pub fn step(&mut self) -> Result<bool, Violation> {
        let Some(Reverse(Scheduled { time, event, .. })) = self.queue.pop() else { return Ok(false) };
        self.now = time;
        self.steps += 1;
        self.handle(event)?;
        Ok(true)
    }

    /// Step until `condition` holds or `limit` time units pass. Returns whether it held.
    pub fn run_until_condition(
        &mut self,
        limit: SimTime,
        mut condition: impl FnMut(&World) -> bool,
    ) -> Result<bool, Violation> {
        let deadline = self.now + limit;
        while !condition(self) {
            if self.queue.peek().is_none_or(|Reverse(next)| next.time > deadline) {
                return Ok(false);
            }
            self.step()?;
        }
        Ok(true)
    }

    /// Run for `duration` more time units.
    pub fn run_for(&mut self, duration: SimTime) -> Result<(), Violation> {
        self.run_until(self.now + duration)
    }

    fn mix_trace(&mut self, a: u64, b: u64) {
        for v in [self.now, a, b] {
            self.trace ^= v;
            self.trace = self.trace.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The node an event happens on.
    fn event_node(event: &Event) -> NodeId {
        match event {
            Event::Tick { node, .. }
            | Event::Ready { node, .. }
            | Event::FlushDone { node, .. }
            | Event::ReadDone { node, .. }
            | Event::SnapshotTaken { node, .. }
            | Event::ChunkRead { node, .. }
            | Event::ChunkWritten { node, .. } => *node,
            Event::Deliver { envelope } => envelope.to,
            Event::KeepAlive { to, .. } => *to,
        }
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        let paused_until = self.nodes.get(&Self::event_node(&event)).map_or(0, |n| n.paused_until);
        if paused_until > self.now {
            // A paused process does nothing; whatever would have happened waits, in order.
            self.schedule(paused_until - self.now, event);
            return Ok(());
        }
        match event {
            Event::Tick { node, epoch } => {
                if !self.current(node, epoch) {
                    return Ok(());
                }
                self.mix_trace(1, node.0);
                let partitions: Vec<PartitionId> = self.nodes[&node].partitions.keys().copied().collect();
                for partition in partitions {
                    if let Some(sm) = self.sm_mut(node, partition) {
                        let due = sm.ticks_until_due();
                        let before = (sm.role(), sm.term(), sm.leader(), sm.has_ready());
                        sm.tick();
                        let after = (sm.role(), sm.term(), sm.leader(), sm.has_ready());
                        if due > 1 && after != before {
                            return Err(Violation {
                                kind: ViolationKind::TimerDeadline,
                                detail: format!(
                                    "{partition} on {node}: a tick {due} ticks before its deadline acted: \
                                     {before:?} -> {after:?}"
                                ),
                            });
                        }
                        self.ticks += 1;
                        self.lazy_ticks += u64::from(due > 1);
                    }
                    self.process_ready(node, partition)?;
                }
                let tick = self.nodes.get_mut(&node).expect("alive").liveness.tick();
                for to in tick.probes {
                    self.transmit(node, to, Event::KeepAlive { from: node, to });
                }
                for change in tick.changes {
                    self.liveness_changed(node, change)?;
                }
                let base = self.faults.tick_interval;
                let n = self.nodes.get_mut(&node).expect("alive");
                // The k-th tick ends at ⌊k × base × rate⌋: whole time units, the exact rate on average.
                let end = |k: u64| k * base * n.tick_per_mille / 1000;
                n.ticks += 1;
                let interval = (end(n.ticks + 1) - end(n.ticks)).max(1);
                self.schedule(interval, Event::Tick { node, epoch });
            }
            Event::Deliver { envelope } => {
                let (to, partition) = (envelope.to, envelope.partition);
                // A link cut while the message was in flight loses it too.
                if !self.is_alive(to) || self.cut.contains(&(envelope.from, to)) {
                    return Ok(());
                }
                self.mix_trace(2, envelope.from.0 << 32 | to.0);
                self.heard(to, envelope.from)?;
                if let Some(sm) = self.sm_mut(to, partition) {
                    // Errors (unknown sender, halted) leave the replica unchanged.
                    let _ = sm.step(envelope);
                }
                if self.random(3) == 0 {
                    // Let more inputs pile up before this replica's next turn.
                    let epoch = self.nodes[&to].epoch;
                    let incarnation = self.incarnation(to, partition);
                    let delay = self.random(3);
                    self.schedule(delay, Event::Ready { node: to, epoch, partition, incarnation });
                } else {
                    self.process_ready(to, partition)?;
                }
            }
            Event::KeepAlive { from, to } => {
                if self.is_alive(to) && !self.cut.contains(&(from, to)) {
                    self.mix_trace(6, from.0 << 32 | to.0);
                    self.heard(to, from)?;
                }
            }
            Event::Ready { node, epoch, partition, incarnation } => {
                if self.current(node, epoch) && self.incarnation(node, partition) == incarnation {
                    self.mix_trace(5, node.0);
                    self.process_ready(node, partition)?;
                }
            }
            Event::FlushDone { node, epoch, writes, failed } => {
                if !self.current(node, epoch) {
                    return Ok(());
                }
                self.mix_trace(3, writes.len() as u64 + u64::from(failed));
                self.nodes.get_mut(&node).expect("alive").flushing = false;
                if failed {
                    // One transaction: nothing in it is durable, and every replica in it stops.
                    let stopped: BTreeSet<PartitionId> = writes.iter().map(|w| w.partition).collect();
                    self.restart_partitions(node, &stopped)?;
                } else {
                    let batch = WalBatch { writes: writes.iter().map(|w| w.request.write.clone()).collect() };
                    self.nodes[&node].wal.write(&batch).map_err(|e| fatal(node, e.to_string()))?;
                    for write in &writes {
                        self.checker.durable(node, &write.request.write)?;
                        if let Some(meta) = &write.request.write.snapshot {
                            // Older snapshots are garbage once a newer meta is durable.
                            self.nodes.get_mut(&node).expect("alive").store.retain_from(meta.partition, meta.index);
                        }
                    }
                    for write in writes {
                        if self.incarnation(node, write.partition) != write.incarnation {
                            continue;
                        }
                        if let Some(sm) = self.sm_mut(node, write.partition) {
                            sm.on_write_complete(write.request.id);
                        }
                        self.process_ready(node, write.partition)?;
                    }
                }
                self.start_flush(node);
            }
            Event::SnapshotTaken { node, epoch, partition, incarnation, meta } => {
                if !self.current(node, epoch) || self.incarnation(node, partition) != incarnation {
                    return Ok(());
                }
                self.mix_trace(6, meta.index);
                if let Some(sm) = self.sm_mut(node, partition) {
                    sm.on_snapshot_taken(meta);
                }
                self.process_ready(node, partition)?;
            }
            Event::ChunkRead { node, epoch, partition, incarnation, read } => {
                if !self.current(node, epoch) || self.incarnation(node, partition) != incarnation {
                    return Ok(());
                }
                self.mix_trace(7, read.offset);
                let result = self.nodes[&node].store.read(partition, read.index, read.term, read.offset, read.len);
                if let Some(sm) = self.sm_mut(node, partition) {
                    sm.on_snapshot_chunk_read(read.id, result);
                }
                self.process_ready(node, partition)?;
            }
            Event::ChunkWritten { node, epoch, partition, incarnation, chunk } => {
                if !self.current(node, epoch) || self.incarnation(node, partition) != incarnation {
                    return Ok(());
                }
                self.mix_trace(8, chunk.offset);
                let failed = self.per_mille(self.faults.failed_wal_per_mille);
                let result = if failed {
                    Err("injected staging failure".to_string())
                } else {
                    self.nodes.get_mut(&node).expect("alive").store.stage(&chunk)
                };
                if let Some(sm) = self.sm_mut(node, partition) {
                    sm.on_snapshot_chunk_written(chunk.meta.index, chunk.meta.term, chunk.offset, result);
                }
                self.process_ready(node, partition)?;
            }
            Event::ReadDone { node, epoch, partition, incarnation, id, from, to } => {
                if !self.current(node, epoch) || self.incarnation(node, partition) != incarnation {
                    return Ok(());
                }
                self.mix_trace(4, id);
                let result = self.nodes[&node].wal.read_range(partition, from, to);
                if let Some(sm) = self.sm_mut(node, partition) {
                    let _ = sm.on_read_complete(id, result);
                }
                self.process_ready(node, partition)?;
            }
        }
        Ok(())
    }

    fn current(&self, node: NodeId, epoch: u64) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.alive && n.epoch == epoch)
    }

    /// Take the replica's outputs, feed the checker, and turn them into future events.
    fn process_ready(&mut self, node: NodeId, partition: PartitionId) -> Result<(), Violation> {
        let incarnation = self.incarnation(node, partition);
        let Some(sm) = self.sm_mut(node, partition) else { return Ok(()) };
        let ready: Ready = sm.ready();
        let (role, term, commit, published) = (sm.role(), sm.term(), sm.commit_index(), sm.is_leader());
        let applied = sm.applied_index();
        // A leader belongs to its configuration: a voter of it, or a voter being removed by a
        // change not yet committed (thesis §4.2.2).
        let outside_config =
            role == Role::Leader && !sm.membership().voters.contains(&node) && !sm.membership_change_pending();
        let epoch = self.nodes[&node].epoch;
        if let Some(fatal) = ready.fatal {
            return Err(Violation { kind: ViolationKind::Fatal, detail: format!("{node} {partition}: {fatal}") });
        }
        if let Some(request) = ready.write {
            self.checker.written(node, &request.write)?;
            self.nodes.get_mut(&node).expect("alive").wal_queue.push(QueuedWrite { partition, incarnation, request });
            self.start_flush(node);
        }
        self.checker.committed_to(node, partition, commit, term)?;
        if role == Role::Leader {
            self.checker.leader_seen(node, partition, term, incarnation)?;
            if outside_config {
                return Err(Violation {
                    kind: ViolationKind::LeaderOutsideConfiguration,
                    detail: format!(
                        "{node} leads {partition} in term {term} but is not a voter of its committed configuration"
                    ),
                });
            }
        }
        if published
            && self.leadership.get(&partition).is_none_or(|&(t, _)| t < term)
            && self.leadership.insert(partition, (term, node)).is_some()
        {
            self.elections += 1;
        }
        for read in ready.reads {
            let latency = self.between(self.faults.min_wal_latency, self.faults.max_wal_latency);
            self.schedule(
                latency,
                Event::ReadDone { node, epoch, partition, incarnation, id: read.id, from: read.from, to: read.to },
            );
        }
        if let Some(meta) = &ready.install {
            let bytes = self.nodes[&node].store.get(partition, meta.index, meta.term);
            let app = bytes.and_then(|b| AppState::decode(b));
            let app =
                app.ok_or_else(|| fatal(node, format!("{partition}: installed snapshot {} missing", meta.index)))?;
            self.checker.installed(node, meta, app)?;
            self.apps.insert((node, partition), app);
            self.installs += 1;
            if self.repairing.remove(&(node, partition)) {
                self.repairs += 1;
            }
        }
        for delivery in &ready.deliveries {
            self.checker.delivered(node, partition, delivery)?;
            self.apps.entry((node, partition)).or_default().apply(delivery);
        }
        for state in &ready.read_states {
            self.reads.answered(state, applied)?;
        }
        self.reads.applied(node, partition, incarnation, applied)?;
        if let Some(request) = ready.snapshot_request {
            let app = self.apps.get(&(node, partition)).copied().unwrap_or_default();
            let mut meta = request.meta;
            self.checker.snapshot_taken(node, &meta, app)?;
            let bytes = app.encode();
            meta.size = bytes.len() as u64;
            meta.checksum = crate::codec::crc32c(&bytes);
            self.nodes.get_mut(&node).expect("alive").store.put(&meta, bytes.into());
            let latency = self.between(self.faults.min_wal_latency, self.faults.max_wal_latency);
            self.schedule(latency, Event::SnapshotTaken { node, epoch, partition, incarnation, meta });
        }
        for read in ready.snapshot_reads {
            let latency = self.between(self.faults.min_wal_latency, self.faults.max_wal_latency);
            self.schedule(latency, Event::ChunkRead { node, epoch, partition, incarnation, read });
        }
        for chunk in ready.snapshot_writes {
            let latency = self.between(self.faults.min_wal_latency, self.faults.max_wal_latency);
            self.schedule(latency, Event::ChunkWritten { node, epoch, partition, incarnation, chunk });
        }
        for reply in ready.replies {
            match reply {
                ClientReply::Proposal { ticket, result: Ok(_) }
                    if self.config_tickets.contains(&(partition, ticket)) =>
                {
                    // A membership change committed: nothing to deliver.
                }
                ClientReply::Proposal { ticket, result: Ok(done) } => {
                    self.acked += 1;
                    let two_phase = self.two_phase.contains(&(partition, ticket));
                    self.checker.proposal_acked(partition, ticket, done.last_index, two_phase)?;
                    if two_phase {
                        self.held_tickets.push((partition, ticket));
                    }
                }
                ClientReply::Resolution { ticket, result: Ok(outcome), .. } => {
                    self.checker.resolution_acked(partition, ticket, outcome == TicketOutcome::Committed)?;
                }
                ClientReply::Resolution {
                    ticket, result: Err(crate::error::ProposeError::UnknownTicket(_)), ..
                } => {
                    self.checker.unknown_ticket_answered(node, partition, ticket)?;
                }
                _ => {}
            }
        }
        for envelope in ready.messages {
            self.send(envelope);
        }
        Ok(())
    }

    /// Start a flush of everything queued, unless one is running (it starts the next when done).
    fn start_flush(&mut self, node: NodeId) {
        let n = &self.nodes[&node];
        if n.flushing || n.wal_queue.is_empty() || !n.alive {
            return;
        }
        let epoch = n.epoch;
        let mut latency = self.between(self.faults.min_wal_latency, self.faults.max_wal_latency);
        if self.per_mille(self.faults.slow_wal_per_mille) {
            latency += self.between(0, self.faults.slow_wal_latency);
        }
        let failed = self.per_mille(self.faults.failed_wal_per_mille);
        let hung = self.per_mille(self.faults.hung_wal_per_mille);
        let n = self.nodes.get_mut(&node).expect("alive");
        let hung = hung || std::mem::take(&mut n.hang_next);
        n.flushing = true;
        let writes = std::mem::take(&mut n.wal_queue);
        if hung {
            // Never completes: the node's WAL is stuck until it crashes (the writes are lost).
            n.hung = true;
            return;
        }
        self.schedule(latency, Event::FlushDone { node, epoch, writes, failed });
    }

    fn per_mille(&mut self, p: u32) -> bool {
        p > 0 && self.rng.next_u64() % 1000 < u64::from(p)
    }

    fn between(&mut self, lo: SimTime, hi: SimTime) -> SimTime {
        lo + self.rng.next_u64() % (hi.saturating_sub(lo) + 1)
    }

    fn message_delay(&mut self) -> SimTime {
        if self.per_mille(self.faults.long_delay_per_mille) {
            self.between(self.faults.max_delay, self.faults.long_delay.max(self.faults.max_delay))
        } else {
            self.between(self.faults.min_delay, self.faults.max_delay)
        }
    }

    fn send(&mut self, envelope: Envelope) {
        let (from, to) = (envelope.from, envelope.to);
        if let Some(n) = self.nodes.get_mut(&from) {
            n.liveness.sent(to);
        }
        self.transmit(from, to, Event::Deliver { envelope });
    }

    /// Put a frame on the network: cut links and drops lose it, duplicates deliver it twice.
    fn transmit(&mut self, from: NodeId, to: NodeId, event: Event) {
        if self.cut.contains(&(from, to)) {
            return;
        }
        if self.per_mille(self.faults.drop_per_mille) {
            return;
        }
        if self.per_mille(self.faults.duplicate_per_mille) {
            let delay = self.message_delay();
            self.schedule(delay, event.clone());
        }
        let delay = self.message_delay();
        self.schedule(delay, event);
    }

    /// `node` received a frame from `from`: its failure detector hears `from`.
    fn heard(&mut self, node: NodeId, from: NodeId) -> Result<(), Violation> {
        let change = self.nodes.get_mut(&node).and_then(|n| n.liveness.heard(from));
        match change {
            Some(change) => self.liveness_changed(node, change),
            None => Ok(()),
        }
    }

    /// Hand a failure-detector verdict of `node`'s to every replica it hosts.
    fn liveness_changed(&mut self, node: NodeId, change: LivenessChange) -> Result<(), Violation> {
        let (peer, alive) = match change {
            LivenessChange::Down(peer) => (peer, false),
            LivenessChange::Up(peer) => (peer, true),
        };
        let partitions: Vec<PartitionId> = self.nodes[&node].partitions.keys().copied().collect();
        for partition in partitions {
            if let Some(sm) = self.sm_mut(node, partition) {
                sm.set_peer_alive(peer, alive);
            }
            self.process_ready(node, partition)?;
        }
        Ok(())
    }

    /// One line per replica: role, term, commit/applied/stable/last indexes, follower progress.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (&node, n) in &self.nodes {
            if !n.alive {
                out.push_str(&format!("{node}: down\n"));
                continue;
            }
            for (partition, sm) in &n.partitions {
                out.push_str(&format!(
                    "{node} {partition}: {:?}{} term {} leader {:?} commit {} applied {} stable {} last {} voters {:?} learners {:?} config@{}",
                    sm.role(),
                    match (sm.is_quiesced(), sm.is_write_stalled()) {
                        (true, _) => " (quiet)",
                        (false, true) => " (disk stalled)",
                        _ => "",
                    },
                    sm.term(),
                    sm.leader(),
                    sm.commit_index(),
                    sm.applied_index(),
                    sm.stable_index(),
                    sm.last_index(),
                    sm.membership().voters.iter().map(|n| n.0).collect::<Vec<_>>(),
                    sm.membership().learners.iter().map(|n| n.0).collect::<Vec<_>>(),
                    sm.membership_index()
                ));
                for peer in sm.membership().members().collect::<Vec<_>>() {
                    if let Some(pr) = sm.progress(peer) {
                        out.push_str(&format!(
                            " | {peer}: {:?} match {} next {}{}",
                            pr.state,
                            pr.match_index,
                            pr.next_index,
                            pr.snapshot_transfer().map_or(String::new(), |t| format!(" ({t})"))
                        ));
                    }
                }
                if let Some(meta) = sm.snapshot() {
                    out.push_str(&format!(" | snapshot {}@{} floor {}", meta.index, meta.term, sm.compacted_through()));
                }
                out.push('\n');
            }
        }
        out
    }

    /// Check the end state after faults healed: one delivery sequence everywhere, nothing lost.
    pub fn check_converged(&self) -> Result<(), Violation> {
        // Only current members must hold the whole sequence (removed nodes stop receiving it).
        let replicas: Vec<(NodeId, PartitionId)> =
            self.partition_ids().into_iter().flat_map(|p| self.members(p).into_iter().map(move |n| (n, p))).collect();
        for partition in self.partition_ids() {
            if self.leader(partition).is_none() {
                return Err(Violation {
                    kind: ViolationKind::Liveness,
                    detail: format!("{partition}: no leader after healing\n{}", self.describe()),
                });
            }
        }
        self.checker
            .check_final(&replicas)
            .map_err(|v| Violation { detail: format!("{}\n{}", v.detail, self.describe()), ..v })
    }
}

fn fatal(node: NodeId, detail: String) -> Violation {
    Violation { kind: ViolationKind::Fatal, detail: format!("{node}: {detail}") }
}

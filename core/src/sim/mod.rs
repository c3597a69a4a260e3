//! Deterministic simulator (feature `sim`): N nodes × P partitions of real
//! [`crate::raft::PartitionStateMachine`]s driven by one seeded event queue. The network drops,
//! duplicates, delays (some messages far past an election timeout), reorders and partitions —
//! symmetric, one-way, long or flapping; clocks drift per node (and, on demand, wall clocks jump
//! back and forth), and processes pause; nodes crash
//! (losing unsynced writes) and restart from their WAL, sometimes at once; WAL flushes are slow,
//! hang or fail (a failure restarts the partitions in the flush). Clients propose auto-commit and
//! two-phase entries, resolve tickets and change membership through published, unpublished and
//! deposed leaders alike; seeds run with pre-vote and check-quorum on or off. The [`checker`]
//! verifies the safety properties after every step, and after healing the run must converge with
//! no leadership change while the network stays stable (the disruption bound).
//!
//! [`run_seed`] runs one randomized scenario; the same seed always replays the same run (compare
//! [`SimReport::trace_hash`]). The test suite prints a failing seed together with the command that
//! replays it (`SIM_SEED=<seed>`).

pub mod app;
mod checker;
mod driver;
mod reads;
pub mod world;

pub use checker::{Checker, Violation, ViolationKind};
pub use driver::run_seed;
pub use world::{NetworkFaults, SimTime, World};

use crate::config::PartitionConfig;
use crate::ids::{NodeId, PartitionId};

/// Knobs of a randomized run (the seed picks the rest).
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Inject network faults, crashes and partitions.
    pub faults: bool,
    /// Length of the faulty phase, in ticks.
    pub active_ticks: u64,
    /// Length of the healing phase after faults stop, in ticks.
    pub heal_ticks: u64,
    /// Mean ticks between injected faults.
    pub fault_every_ticks: u64,
    /// Force the number of nodes (otherwise drawn from {1, 3, 5}).
    pub nodes: Option<usize>,
    /// Force the entries per append (otherwise drawn from 1..=6).
    pub max_entries_per_append: Option<usize>,
    /// In five-node scenarios, start with three voters (nodes 4 and 5 outside) and keep changing
    /// every partition's membership (add learners, promote, remove — one node at a time) toward
    /// random targets during the faulty phase (on about half of those seeds).
    pub membership_changes: bool,
    /// Force pre-vote on or off (otherwise drawn per seed: on in three seeds of four).
    pub pre_vote: Option<bool>,
    /// Force check-quorum on or off (otherwise drawn per seed: on in three seeds of four).
    pub check_quorum: Option<bool>,
    /// Ticks the healed cluster must run without any leadership change (the disruption bound).
    pub stable_ticks: u64,
    /// Snapshots and compaction: a random interval per seed (off in one seed of four), on-demand
    /// snapshots on random replicas, small chunks, and data-directory wipes of nodes outside every
    /// quorum (which then catch up by snapshot install). On by default.
    pub snapshots: bool,
    /// Quiescence: a random idle period per seed (off in one seed of three), node-level failure
    /// detection, and after the stable phase a failover check: the node leading the most
    /// partitions crashes, is cut off or has its disk hang while they are quiet, and every partition must have a
    /// leader on the other nodes within a bound. On by default.
    pub quiescence: bool,
    /// Reads at every consistency level on random replicas (each linearizable and lease read
    /// checked against the writes acknowledged before it), read leases on about half of the
    /// seeds with check-quorum, and random leadership transfers. On by default.
    pub reads: bool,
    /// Wall clocks step back or forward by up to 100 ticks (only the tickets' hybrid logical
    /// clock reads them; ticks and leases run on monotonic time). Off by default, so the default
    /// sweep's seeds keep their runs; `wall_clock_jumps_keep_every_invariant` sweeps with it on.
    pub clock_jumps: bool,
    /// Which classes of faults the faulty phase may inject (all by default; switching one off
    /// shows which planted bugs that class is needed for).
    pub classes: FaultClasses,
    /// Planted bugs (feature `canary-bugs`).
    #[cfg(feature = "canary-bugs")]
    pub canary: crate::config::CanaryBugs,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            faults: true,
            active_ticks: 400,
            heal_ticks: 300,
            fault_every_ticks: 40,
            nodes: None,
            max_entries_per_append: None,
            membership_changes: true,
            pre_vote: None,
            check_quorum: None,
            stable_ticks: 100,
            snapshots: true,
            quiescence: true,
            reads: true,
            clock_jumps: false,
            classes: FaultClasses::default(),
            #[cfg(feature = "canary-bugs")]
            canary: Default::default(),
        }
    }
}

/// The classes of faults a run may inject. Every class is on by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultClasses {
    /// Drops, duplicates, delays wider than a tick (reordering), partitions, one-way cuts, flaps.
    pub network: bool,
    /// Messages held back far past an election timeout (stale terms).
    pub long_delays: bool,
    /// Crashes (of any node or of a leader), with immediate or later restarts.
    pub crashes: bool,
    /// Processes paused shorter or longer than an election timeout.
    pub pauses: bool,
    /// Per-node clock rates (drift), kept through healing: a property of the machines; and, with
    /// [`SimOptions::clock_jumps`], wall clocks that step back or forward.
    pub drift: bool,
    /// Slow, hanging and failing WAL flushes.
    pub wal: bool,
}

impl Default for FaultClasses {
    fn default() -> Self {
        FaultClasses { network: true, long_delays: true, crashes: true, pauses: true, drift: true, wal: true }
    }
}

impl FaultClasses {
    /// No class at all: a faulty phase with only the clients' workload.
    pub const NONE: FaultClasses =
        FaultClasses { network: false, long_delays: false, crashes: false, pauses: false, drift: false, wal: false };
}

/// What one seed did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Membership changes proposed (0 when the scenario keeps a fixed membership).
    pub membership_changes: u64,
    /// Partitions per node.
    pub partitions: usize,
    /// Events processed.
    pub steps: u64,
    /// Proposals acknowledged to clients.
    pub acked: u64,
    /// Entries delivered (per the shared delivery sequence).
    pub delivered: usize,
    /// Crashes injected.
    pub crashes: u64,
    /// Pre-vote was on.
    pub pre_vote: bool,
    /// Check-quorum was on.
    pub check_quorum: bool,
    /// Leadership changes while the healed network was stable (bounded by 0 unless both pre-vote
    /// and check-quorum are off).
    pub disruptions: u64,
    /// Snapshots checked (taken, restored from or installed).
    pub snapshots: usize,
    /// Snapshots installed from a leader.
    pub installs: u64,
    /// Data directories wiped.
    pub wipes: u64,
    /// Replicas whose snapshot's bytes were lost and that were repaired by the leader's.
    pub snapshot_losses: u64,
    /// Ticks a leader idled before going quiet (0: quiescence off).
    pub quiesce_after_ticks: u32,
    /// Replicas quiet at the end of the stable phase.
    pub quiet_replicas: usize,
    /// Ticks from the failover check's fault to every partition having a leader elsewhere (None:
    /// no check this seed).
    pub failover_ticks: Option<u64>,
    /// Ticks delivered to replicas.
    pub ticks: u64,
    /// Of those, ticks before the replica's deadline: checked to change nothing (what a lazily
    /// ticking driver skips).
    pub lazy_ticks: u64,
    /// Read leases were on.
    pub read_lease: bool,
    /// Linearizable and lease reads served and checked.
    pub reads_served: u64,
    /// Of those, lease reads (served from the lease or, without one, by a round).
    pub lease_reads_served: u64,
    /// Reads refused or failed (no leader known, leadership lost, timeout).
    pub reads_failed: u64,
    /// Leadership transfers started.
    pub transfers: u64,
    /// Hash of the event trace (determinism check).
    pub trace_hash: u64,
}

/// A seed that broke an invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFailure {
    /// The seed, to replay with `SIM_SEED`.
    pub seed: u64,
    /// Virtual time of the violation.
    pub at: SimTime,
    /// What broke.
    pub violation: Violation,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed {} failed at t={}: {} (replay: SIM_SEED={} cargo test -p kommander-core --test simulation replay_seed -- --nocapture)",
            self.seed, self.at, self.violation, self.seed)
    }
}

/// Per-partition configs for a cluster shape.
pub fn cluster_configs(
    nodes: usize,
    partitions: usize,
    seed: u64,
    tune: impl Fn(&mut PartitionConfig),
) -> Vec<PartitionConfig> {
    let voters: Vec<NodeId> = (1..=nodes as u64).map(NodeId).collect();
    let mut configs = Vec::new();
    for &node in &voters {
        for p in 1..=partitions as u32 {
            let mut config = PartitionConfig::new(node, PartitionId(p), voters.clone());
            config.seed = seed;
            tune(&mut config);
            configs.push(config);
        }
    }
    configs
}

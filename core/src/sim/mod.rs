//! Deterministic simulator (feature `sim`): N nodes × P partitions of real
//! [`crate::raft::PartitionStateMachine`]s driven by one seeded event queue, with a network that
//! drops, duplicates, delays, reorders and partitions, nodes that crash (losing unsynced writes)
//! and restart from their WAL, and clients proposing auto-commit and two-phase entries. The
//! [`checker`] verifies the Raft safety properties after every step.
//!
//! [`run_seed`] runs one randomized scenario; the same seed always replays the same run (compare
//! [`SimReport::trace_hash`]). The test suite prints a failing seed together with the command that
//! replays it (`SIM_SEED=<seed>`).

pub mod checker;
pub mod world;

pub use checker::{Checker, Violation, ViolationKind};
pub use world::{NetworkFaults, SimTime, World};

use crate::config::PartitionConfig;
use crate::error::TicketOutcome;
use crate::ids::{NodeId, PartitionId};
use crate::rng::SplitMix64;
use world::PendingDecision;

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
            #[cfg(feature = "canary-bugs")]
            canary: Default::default(),
        }
    }
}

/// What one seed did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Nodes in the cluster.
    pub nodes: usize,
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

/// Run one randomized scenario for `seed`.
pub fn run_seed(seed: u64, options: &SimOptions) -> Result<SimReport, SimFailure> {
    let mut rng = SplitMix64::new(seed ^ 0x5eed_5eed_5eed_5eed);
    let nodes = [1usize, 3, 3, 3, 5, 5][(rng.next_u64() % 6) as usize];
    let nodes = options.nodes.unwrap_or(nodes);
    let partitions = 1 + (rng.next_u64() % 3) as usize;
    let cache = (rng.next_u64() % 6) as usize;
    let max_entries = options.max_entries_per_append.unwrap_or(1 + (rng.next_u64() % 6) as usize);
    let window = 1 + (rng.next_u64() % 4) as usize;
    #[cfg(feature = "canary-bugs")]
    let canary = options.canary;
    let configs = cluster_configs(nodes, partitions, seed, |c| {
        c.log_cache_entries = cache;
        c.max_entries_per_append = max_entries;
        c.max_inflight_appends = window;
        c.max_uncommitted_entries = 64;
        #[cfg(feature = "canary-bugs")]
        {
            c.canary = canary;
        }
    });
    let mut faults = NetworkFaults::default();
    if options.faults {
        faults.drop_per_mille = (rng.next_u64() % 150) as u32;
        faults.duplicate_per_mille = (rng.next_u64() % 80) as u32;
        faults.max_delay = 2 + rng.next_u64() % 40;
        faults.max_wal_latency = 1 + rng.next_u64() % 15;
    }
    let calm = NetworkFaults::default();
    let mut world = World::new(seed, configs, faults).map_err(|v| SimFailure { seed, at: 0, violation: v })?;
    let fail = |world: &World, violation: Violation| SimFailure { seed, at: world.now(), violation };
    let tick = world.faults.tick_interval;
    let active_end = options.active_ticks * tick;
    let node_ids = world.node_ids();
    let partition_ids = world.partition_ids();
    let mut crashes = 0;
    let mut decisions: Vec<(SimTime, PendingDecision)> = Vec::new();
    let mut payload = 0u64;
    while world.now() < active_end {
        let step = 1 + world.random(tick);
        world.run_for(step).map_err(|v| fail(&world, v))?;
        // Clients: a few proposals per tick on random partitions; some are two-phase.
        for _ in 0..world.random(3) {
            let partition = partition_ids[world.random(partition_ids.len() as u64) as usize];
            let auto_commit = world.random(5) != 0;
            let payloads = (0..1 + world.random(3))
                .map(|_| {
                    payload += 1;
                    payload.to_le_bytes().to_vec()
                })
                .collect();
            world.propose(partition, payloads, auto_commit).map_err(|v| fail(&world, v))?;
        }
        // Two-phase decisions: commit most, roll back some, sometimes race both.
        for (partition, ticket) in std::mem::take(&mut world.held_tickets) {
            let outcome = if world.random(3) == 0 { TicketOutcome::RolledBack } else { TicketOutcome::Committed };
            let at = world.now() + world.random(20 * tick);
            decisions.push((at, PendingDecision { partition, ticket, outcome }));
            if world.random(6) == 0 {
                let other = if outcome == TicketOutcome::Committed {
                    TicketOutcome::RolledBack
                } else {
                    TicketOutcome::Committed
                };
                decisions.push((at + world.random(3 * tick), PendingDecision { partition, ticket, outcome: other }));
            }
        }
        // While faults run, a client sometimes gives up on a decision it could not deliver.
        decide_due(&mut world, &mut decisions, |w| w.random(4) != 0).map_err(|v| fail(&world, v))?;
        if options.faults && world.random(options.fault_every_ticks * tick) < step {
            inject_fault(&mut world, &node_ids, &mut crashes).map_err(|v| fail(&world, v))?;
        }
    }
    // Heal: calm network, every node up, let the cluster converge, then check the end state.
    world.faults = calm;
    world.heal();
    for &node in &node_ids {
        world.restart(node).map_err(|v| fail(&world, v))?;
    }
    let heal_end = world.now() + options.heal_ticks * tick;
    while world.now() < heal_end {
        world.run_for(tick).map_err(|v| fail(&world, v))?;
        decide_due(&mut world, &mut decisions, |_| true).map_err(|v| fail(&world, v))?;
    }
    if let Err(v) = world.check_converged() {
        let violation = Violation { kind: v.kind, detail: format!("{}\n{}", v.detail, world.describe()) };
        return Err(fail(&world, violation));
    }
    Ok(SimReport {
        seed,
        nodes,
        partitions,
        steps: world.steps(),
        acked: world.acked,
        delivered: world.checker().delivered_count(),
        crashes,
        trace_hash: world.trace_hash(),
    })
}

/// Send every decision that is due to the current leader; one that could not be delivered (no
/// leader right now) is retried five ticks later when `retry` says so.
fn decide_due(
    world: &mut World,
    decisions: &mut Vec<(SimTime, PendingDecision)>,
    mut retry: impl FnMut(&mut World) -> bool,
) -> Result<(), Violation> {
    let now = world.now();
    let retry_at = now + 5 * world.faults.tick_interval;
    let (due, later): (Vec<_>, Vec<_>) = std::mem::take(decisions).into_iter().partition(|(at, _)| *at <= now);
    *decisions = later;
    for (_, decision) in due {
        if !world.decide(decision)? && retry(world) {
            decisions.push((retry_at, decision));
        }
    }
    Ok(())
}

fn inject_fault(world: &mut World, nodes: &[NodeId], crashes: &mut u64) -> Result<(), Violation> {
    let node = nodes[world.random(nodes.len() as u64) as usize];
    match world.random(6) {
        0 | 1 => {
            if world.is_alive(node) {
                world.crash(node);
                *crashes += 1;
            } else {
                world.restart(node)?;
            }
        }
        2 => world.isolate(node),
        3 => {
            // Split the cluster in two random halves.
            for &a in nodes {
                for &b in nodes {
                    if a < b && world.random(2) == 0 {
                        world.cut_link(a, b);
                    }
                }
            }
        }
        _ => {
            world.heal();
            for &n in nodes {
                if !world.is_alive(n) && world.random(2) == 0 {
                    world.restart(n)?;
                }
            }
        }
    }
    Ok(())
}

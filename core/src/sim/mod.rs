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
use crate::raft::Membership;
use crate::rng::SplitMix64;
use std::collections::BTreeMap;
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
    /// In five-node scenarios, start with three voters (nodes 4 and 5 outside) and keep changing
    /// every partition's membership (add learners, promote, remove — one node at a time) toward
    /// random targets during the faulty phase (on about half of those seeds).
    pub membership_changes: bool,
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
    let dynamic = options.membership_changes && nodes == 5 && rng.next_u64() % 2 == 0;
    let founders: Vec<NodeId> = (1..=if dynamic { 3 } else { nodes as u64 }).map(NodeId).collect();
    let configs = cluster_configs(nodes, partitions, seed, |c| {
        if !founders.contains(&c.node) {
            // Not a member yet: knows the founders, learns the membership from the log.
            c.voters = founders.clone();
            c.learners = vec![c.node];
        } else {
            c.voters = founders.clone();
        }
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
    let mut membership_changes = 0u64;
    let mut targets: BTreeMap<PartitionId, Membership> = BTreeMap::new();
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
        // Membership: pick new random targets now and then, and step every partition toward its own.
        if dynamic {
            for &partition in &partition_ids {
                if world.random(40) == 0 || !targets.contains_key(&partition) {
                    targets.insert(partition, random_membership(&mut world, &node_ids));
                }
                if world.random(4) == 0
                    && world.change_membership(partition, &targets[&partition]).map_err(|v| fail(&world, v))?
                {
                    membership_changes += 1;
                }
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
    // Heal for at least `heal_ticks`; learners far behind a fast single-voter group may need
    // longer to catch up, so keep going (up to ten times as long) until the check passes.
    let heal_end = world.now() + options.heal_ticks * tick;
    let give_up = world.now() + 10 * options.heal_ticks * tick;
    while world.now() < heal_end || (world.now() < give_up && world.check_converged().is_err()) {
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
        membership_changes,
    })
}

/// A random membership over `nodes`: three to five voters, some of the rest as learners.
fn random_membership(world: &mut World, nodes: &[NodeId]) -> Membership {
    let mut shuffled = nodes.to_vec();
    for i in (1..shuffled.len()).rev() {
        let j = world.random(i as u64 + 1) as usize;
        shuffled.swap(i, j);
    }
    let voters = 3 + world.random(nodes.len() as u64 - 2) as usize;
    let mut membership = Membership::with_voters(shuffled[..voters.min(nodes.len())].iter().copied());
    for &node in &shuffled[voters.min(nodes.len())..] {
        if world.random(2) == 0 {
            membership.learners.insert(node);
        }
    }
    membership
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

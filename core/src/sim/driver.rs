//! The randomized driver behind [`run_seed`]: draws a cluster shape and a fault profile from the
//! seed, runs a faulty phase (clients, two-phase decisions, membership changes and injected
//! faults), heals, checks convergence, and then checks the disruption bound: a healed, stable
//! cluster keeps its leaders.
//!
//! Clients do not only talk to published leaders: a share of every operation goes to whichever
//! replica holds the leader role (unpublished or deposed ones included) or to any replica, and
//! membership changes are sometimes proposed unfiltered, so the state machine's own refusals are
//! exercised.

use super::world::PendingDecision;
use super::{
    cluster_configs, FaultClasses, NetworkFaults, SimFailure, SimOptions, SimReport, SimTime, Violation, ViolationKind,
    World,
};
use crate::error::TicketOutcome;
use crate::hlc::HlcTimestamp;
use crate::ids::{NodeId, PartitionId};
use crate::raft::{Membership, ReadConsistency};
use crate::rng::SplitMix64;
use crate::PartitionConfig;
use std::collections::BTreeMap;

/// Run one randomized scenario for `seed`.
pub fn run_seed(seed: u64, options: &SimOptions) -> Result<SimReport, SimFailure> {
    let mut rng = SplitMix64::new(seed ^ 0x5eed_5eed_5eed_5eed);
    let nodes = [1usize, 3, 3, 5, 5, 5][(rng.next_u64() % 6) as usize];
    let nodes = options.nodes.unwrap_or(nodes);
    let partitions = 1 + (rng.next_u64() % 3) as usize;
    let cache = (rng.next_u64() % 6) as usize;
    let max_entries = options.max_entries_per_append.unwrap_or(1 + (rng.next_u64() % 6) as usize);
    let window = 1 + (rng.next_u64() % 4) as usize;
    let pre_vote = options.pre_vote.unwrap_or(rng.next_u64() % 4 != 0);
    let check_quorum = options.check_quorum.unwrap_or(rng.next_u64() % 4 != 0);
    #[cfg(feature = "canary-bugs")]
    let canary = options.canary;
    // Without pre-vote and check-quorum nothing keeps a removed voter (which never learns of its
    // removal) from deposing every leader forever (thesis §4.2.3): Raft itself loses liveness
    // there, so those seeds keep a fixed membership. The runtime never turns both off.
    let dynamic = options.membership_changes && nodes == 5 && (pre_vote || check_quorum);
    let founders: Vec<NodeId> = (1..=if dynamic { 3 } else { nodes as u64 }).map(NodeId).collect();
    let configs = cluster_configs(nodes, partitions, seed, |c| {
        if !founders.contains(&c.node) {
            // Not a member yet: knows the founders, learns the membership from the log.
            c.learners = vec![c.node];
        }
        c.voters = founders.clone();
        c.log_cache_entries = cache;
        c.max_entries_per_append = max_entries;
        c.max_inflight_appends = window;
        c.max_uncommitted_entries = 64;
        c.pre_vote = pre_vote;
        c.check_quorum = check_quorum;
        #[cfg(feature = "canary-bugs")]
        {
            c.canary = canary;
        }
    });
    // Snapshot settings come from their own generator, so they do not shift the other draws.
    let mut snap_rng = SplitMix64::new(seed ^ 0x5a9_5a9_5a9);
    let interval = if options.snapshots && snap_rng.next_u64() % 4 != 0 { 2 + snap_rng.next_u64() % 40 } else { 0 };
    let tail = snap_rng.next_u64() % 6;
    let chunk = 1 + snap_rng.next_u64() % 24;
    // Sometimes a byte trigger too (a few dozen payload bytes), drawn last so the draws above keep.
    let bytes = if interval > 0 && snap_rng.next_u64() % 3 == 0 { 16 + snap_rng.next_u64() % 200 } else { 0 };
    // Quiescence too, from a generator of its own.
    let mut quiet_rng = SplitMix64::new(seed ^ 0x9_1e5c_e9ce);
    let quiesce = if options.quiescence && quiet_rng.next_u64() % 3 != 0 { 2 + quiet_rng.next_u64() % 30 } else { 0 };
    let spread = if quiet_rng.next_u64() % 2 == 0 { quiet_rng.next_u64() % 30 } else { 0 };
    let configs: Vec<PartitionConfig> = configs
        .into_iter()
        .map(|mut c| {
            c.quiesce_after_ticks = quiesce as u32;
            c.initial_election_spread_ticks = spread as u32;
            c.snapshot_interval_entries = interval;
            c.snapshot_interval_bytes = bytes;
            c.snapshot_tail_entries = tail;
            c.snapshot_chunk_bytes = chunk;
            c
        })
        .collect();
    let faults = if options.faults { fault_profile(&mut rng, options.classes) } else { NetworkFaults::default() };
    // Read leases on about half of the seeds that can have them (check-quorum on), from a
    // generator of their own. The lease stays below the time a follower honours a leader it
    // confirmed — the minimum election timeout and the detector's down time, less a tick of
    // granularity on each side — at the fastest clock rate this seed's drift allows.
    let mut lease_rng = SplitMix64::new(seed ^ 0x1ea5_e1ea_5e00);
    let leases = options.reads && check_quorum && lease_rng.next_u64() % 2 == 0;
    let down_after = crate::liveness::LivenessConfig::default().down_after_ticks;
    let configs: Vec<PartitionConfig> = configs
        .into_iter()
        .map(|mut c| {
            if leases {
                let honoured = u64::from(c.election_timeout_min_ticks.min(down_after).saturating_sub(2));
                let fastest = 1000 - u64::from(faults.clock_drift_per_mille.min(900));
                c.read_lease = honoured * faults.tick_interval * fastest / 1000;
            }
            c
        })
        .collect();
    // Clocks drift in every phase: it is a property of the machines, not a fault that heals.
    let calm = NetworkFaults { clock_drift_per_mille: faults.clock_drift_per_mille, ..NetworkFaults::default() };
    let world = World::new(seed, configs, faults).map_err(|v| SimFailure { seed, at: 0, violation: v })?;
    let mut driver = Driver::new(world, dynamic, options.classes);
    let fail = |world: &World, violation: Violation| SimFailure { seed, at: world.now(), violation };

    let tick = driver.world.faults.tick_interval;
    let active_end = options.active_ticks * tick;
    while driver.world.now() < active_end {
        let step = 1 + driver.world.random(tick);
        driver.world.run_for(step).map_err(|v| fail(&driver.world, v))?;
        driver.active_turn(options, step).map_err(|v| fail(&driver.world, v))?;
    }

    // Heal: calm network, every node up and unpaused, let the cluster converge, check the end state.
    driver.world.faults = calm;
    driver.heal_all().map_err(|v| fail(&driver.world, v))?;
    // Heal for at least `heal_ticks`; learners far behind a fast single-voter group may need
    // longer to catch up, so keep going (up to ten times as long) until the check passes.
    let heal_end = driver.world.now() + options.heal_ticks * tick;
    let give_up = driver.world.now() + 10 * options.heal_ticks * tick;
    while driver.world.now() < heal_end || (driver.world.now() < give_up && driver.world.check_converged().is_err()) {
        driver.world.run_for(tick).map_err(|v| fail(&driver.world, v))?;
        driver.decide_due(|_| true).map_err(|v| fail(&driver.world, v))?;
    }
    let converged = |world: &World| {
        world
            .check_converged()
            .map_err(|v| Violation { kind: v.kind, detail: format!("{}\n{}", v.detail, world.describe()) })
    };
    converged(&driver.world).map_err(|v| fail(&driver.world, v))?;

    // Disruption bound: the healed network stays stable; with pre-vote or check-quorum on, no
    // partition may change leader (a removed or rejoined node must not depose a live one).
    let before = driver.world.elections();
    driver.world.run_for(options.stable_ticks * tick).map_err(|v| fail(&driver.world, v))?;
    let disruptions = driver.world.elections() - before;
    if disruptions > 0 && (pre_vote || check_quorum) {
        let detail = format!(
            "{disruptions} leadership change(s) in {} stable ticks (pre-vote {pre_vote}, check-quorum {check_quorum})\n{}",
            options.stable_ticks,
            driver.world.describe()
        );
        return Err(fail(&driver.world, Violation { kind: ViolationKind::Disruption, detail }));
    }
    converged(&driver.world).map_err(|v| fail(&driver.world, v))?;
    let quiet_replicas = driver.world.quiet_replicas();
    let failover_ticks =
        if quiesce > 0 { driver.failover_check(options).map_err(|v| fail(&driver.world, v))? } else { None };
    let world = &driver.world;
    Ok(SimReport {
        seed,
        nodes,
        partitions,
        steps: world.steps(),
        acked: world.acked,
        delivered: world.checker().delivered_count(),
        crashes: driver.crashes,
        trace_hash: world.trace_hash(),
        membership_changes: driver.membership_changes,
        snapshots: world.checker().snapshot_count(),
        installs: world.installs,
        wipes: world.wipes,
        snapshot_losses: world.repairs,
        pre_vote,
        check_quorum,
        disruptions,
        quiesce_after_ticks: quiesce as u32,
        quiet_replicas,
        failover_ticks,
        ticks: world.ticks,
        lazy_ticks: world.lazy_ticks,
        read_lease: leases,
        reads_served: world.reads.served,
        lease_reads_served: world.reads.lease_served,
        reads_failed: world.reads.failed,
        transfers: world.transfers,
    })
}

/// The faults of one seed's active phase, drawn from the seed (the draws are the same whichever
/// classes are on, so switching a class off changes nothing else about the seed).
fn fault_profile(rng: &mut SplitMix64, classes: FaultClasses) -> NetworkFaults {
    let mut draw = |n: u64| rng.next_u64() % n;
    let mut faults = NetworkFaults {
        drop_per_mille: draw(150) as u32,
        duplicate_per_mille: draw(80) as u32,
        max_delay: 2 + draw(40),
        max_wal_latency: 1 + draw(15),
        clock_drift_per_mille: draw(300) as u32,
        ..NetworkFaults::default()
    };
    if draw(2) == 0 {
        // Some messages arrive long after an election timeout (10–20 ticks): stale terms.
        faults.long_delay_per_mille = 1 + draw(30) as u32;
        faults.long_delay = faults.tick_interval * (20 + draw(40));
    }
    if draw(2) == 0 {
        faults.slow_wal_per_mille = 1 + draw(50) as u32;
        faults.slow_wal_latency = faults.tick_interval * (5 + draw(40));
    }
    if draw(3) == 0 {
        faults.failed_wal_per_mille = 1 + draw(8) as u32;
    }
    if draw(4) == 0 {
        faults.hung_wal_per_mille = 1 + draw(3) as u32;
    }
    let calm = NetworkFaults::default();
    if !classes.network {
        faults.drop_per_mille = 0;
        faults.duplicate_per_mille = 0;
        faults.max_delay = calm.max_delay;
    }
    if !classes.long_delays {
        faults.long_delay_per_mille = 0;
    }
    if !classes.drift {
        faults.clock_drift_per_mille = 0;
    }
    if !classes.wal {
        faults.max_wal_latency = calm.max_wal_latency;
        faults.slow_wal_per_mille = 0;
        faults.failed_wal_per_mille = 0;
        faults.hung_wal_per_mille = 0;
    }
    faults
}

/// The random workload and nemesis of one run.
struct Driver {
    world: World,
    nodes: Vec<NodeId>,
    partitions: Vec<PartitionId>,
    dynamic: bool,
    classes: FaultClasses,
    decisions: Vec<(SimTime, PendingDecision)>,
    /// Links cut by a flap, restored at the given time.
    flaps: Vec<(SimTime, Vec<(NodeId, NodeId)>)>,
    targets: BTreeMap<PartitionId, Membership>,
    payload: u64,
    crashes: u64,
    membership_changes: u64,
    /// Leaders that just handed over a partition, read from until the given time (the window in
    /// which a stale lease would show).
    handed_over: Vec<(SimTime, PartitionId, NodeId)>,
}

impl Driver {
    fn new(world: World, dynamic: bool, classes: FaultClasses) -> Self {
        let nodes = world.node_ids();
        let partitions = world.partition_ids();
        Driver {
            world,
            nodes,
            partitions,
            dynamic,
            classes,
            decisions: Vec::new(),
            flaps: Vec::new(),
            targets: BTreeMap::new(),
            payload: 0,
            crashes: 0,
            membership_changes: 0,
            handed_over: Vec::new(),
        }
    }

    /// One turn of the faulty phase, after `step` time units passed.
    fn active_turn(&mut self, options: &SimOptions, step: SimTime) -> Result<(), Violation> {
        self.proposals()?;
        if options.reads {
            self.reads()?;
            self.transfers()?;
        }
        self.schedule_decisions();
        if self.dynamic {
            self.membership()?;
        }
        // While faults run, a client sometimes gives up on a decision it could not deliver.
        self.decide_due(|w| w.random(4) != 0)?;
        self.end_flaps();
        if options.snapshots && self.world.random(30) == 0 {
            let node = self.random_node();
            let partition = self.partitions[self.world.random(self.partitions.len() as u64) as usize];
            self.world.request_snapshot(node, partition)?;
        }
        let tick = self.world.faults.tick_interval;
        if options.faults && self.world.random(options.fault_every_ticks * tick) < step {
            self.inject_fault(options)?;
        }
        Ok(())
    }

    /// Who a client operation goes to: mostly the published leader, sometimes any replica in the
    /// leader role (unpublished or deposed), sometimes any replica at all.
    fn target(&mut self, partition: PartitionId) -> Option<NodeId> {
        match self.world.random(10) {
            0..=6 => self.world.leader(partition),
            7 | 8 => {
                let leaders = self.world.leader_role(partition);
                (!leaders.is_empty()).then(|| leaders[self.world.random(leaders.len() as u64) as usize])
            }
            _ => Some(self.nodes[self.world.random(self.nodes.len() as u64) as usize]),
        }
    }

    /// A few proposals per turn on random partitions; some are two-phase.
    fn proposals(&mut self) -> Result<(), Violation> {
        for _ in 0..self.world.random(3) {
            let partition = self.partitions[self.world.random(self.partitions.len() as u64) as usize];
            let auto_commit = self.world.random(5) != 0;
            let payloads = (0..1 + self.world.random(3))
                .map(|_| {
                    self.payload += 1;
                    self.payload.to_le_bytes().to_vec()
                })
                .collect();
            if let Some(node) = self.target(partition) {
                self.world.propose_at(node, partition, payloads, auto_commit)?;
            }
        }
        Ok(())
    }

    /// A few reads per turn on random partitions and replicas, at every consistency level.
    fn reads(&mut self) -> Result<(), Violation> {
        for _ in 0..self.world.random(3) {
            let partition = self.partitions[self.world.random(self.partitions.len() as u64) as usize];
            let consistency = match self.world.random(3) {
                0 => None,
                1 => Some(ReadConsistency::Linearizable),
                _ => Some(ReadConsistency::Lease),
            };
            if let Some(node) = self.target(partition) {
                self.world.read_at(node, partition, consistency)?;
            }
        }
        // Lease reads on leaders that just handed over their leadership.
        let now = self.world.now();
        self.handed_over.retain(|&(until, _, _)| until > now);
        for (_, partition, node) in self.handed_over.clone() {
            if self.world.random(2) == 0 {
                self.world.read_at(node, partition, Some(ReadConsistency::Lease))?;
            }
        }
        Ok(())
    }

    /// Now and then a leader hands its leadership to another voter.
    fn transfers(&mut self) -> Result<(), Violation> {
        if self.world.random(40) != 0 {
            return Ok(());
        }
        let partition = self.partitions[self.world.random(self.partitions.len() as u64) as usize];
        let Some(leader) = self.world.leader(partition) else { return Ok(()) };
        let Some(voters) = self.world.replica(leader, partition).map(|sm| sm.voters()) else { return Ok(()) };
        let others: Vec<NodeId> = voters.into_iter().filter(|&n| n != leader).collect();
        if others.is_empty() {
            return Ok(());
        }
        let to = others[self.world.random(others.len() as u64) as usize];
        // A read first, so the leader often holds a fresh lease when it hands over.
        self.world.read_at(leader, partition, Some(ReadConsistency::Lease))?;
        if self.world.transfer_at(leader, partition, to)? {
            let until = self.world.now() + 20 * self.world.faults.tick_interval;
            self.handed_over.push((until, partition, leader));
        }
        Ok(())
    }

    /// Two-phase decisions: commit most, roll back some, sometimes race both, and now and then
    /// ask about a ticket nobody proposed.
    fn schedule_decisions(&mut self) {
        let tick = self.world.faults.tick_interval;
        for (partition, ticket) in std::mem::take(&mut self.world.held_tickets) {
            let outcome = if self.world.random(3) == 0 { TicketOutcome::RolledBack } else { TicketOutcome::Committed };
            let at = self.world.now() + self.world.random(20 * tick);
            self.decisions.push((at, PendingDecision { partition, ticket, outcome }));
            if self.world.random(6) == 0 {
                let other = match outcome {
                    TicketOutcome::Committed => TicketOutcome::RolledBack,
                    TicketOutcome::RolledBack => TicketOutcome::Committed,
                };
                let later = at + self.world.random(3 * tick);
                self.decisions.push((later, PendingDecision { partition, ticket, outcome: other }));
            }
        }
        if self.world.random(50) == 0 {
            let partition = self.partitions[self.world.random(self.partitions.len() as u64) as usize];
            let ticket = HlcTimestamp { physical_ms: self.world.random(1 << 20), logical: 7, node: 99 };
            let at = self.world.now() + self.world.random(5 * tick);
            self.decisions.push((at, PendingDecision { partition, ticket, outcome: TicketOutcome::Committed }));
        }
    }

    /// Send every decision that is due; one that could not be delivered (no target accepted it)
    /// is retried five ticks later when `retry` says so.
    fn decide_due(&mut self, mut retry: impl FnMut(&mut World) -> bool) -> Result<(), Violation> {
        let now = self.world.now();
        let retry_at = now + 5 * self.world.faults.tick_interval;
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.decisions).into_iter().partition(|(at, _)| *at <= now);
        self.decisions = later;
        for (_, decision) in due {
            let delivered = match self.target(decision.partition) {
                Some(node) => self.world.decide_at(node, decision)?,
                None => false,
            };
            if !delivered && retry(&mut self.world) {
                self.decisions.push((retry_at, decision));
            }
        }
        Ok(())
    }

    /// Pick new random targets now and then and step every partition toward its own, through any
    /// leader-role replica; one change in five is a random membership proposed unfiltered.
    fn membership(&mut self) -> Result<(), Violation> {
        for i in 0..self.partitions.len() {
            let partition = self.partitions[i];
            if self.world.random(40) == 0 || !self.targets.contains_key(&partition) {
                let target = random_membership(&mut self.world, &self.nodes);
                self.targets.insert(partition, target);
            }
            if self.world.random(4) != 0 {
                continue;
            }
            let Some(node) = self.target(partition) else { continue };
            let next = if self.world.random(5) == 0 {
                Some(random_membership(&mut self.world, &self.nodes))
            } else {
                self.world.next_membership_step(node, partition, &self.targets[&partition])
            };
            if let Some(next) = next {
                if self.world.propose_membership_at(node, partition, next)? {
                    self.membership_changes += 1;
                }
            }
        }
        Ok(())
    }

    fn random_node(&mut self) -> NodeId {
        self.nodes[self.world.random(self.nodes.len() as u64) as usize]
    }

    fn inject_fault(&mut self, options: &SimOptions) -> Result<(), Violation> {
        let node = self.random_node();
        let tick = self.world.faults.tick_interval;
        // Wall-clock jumps are a 13th kind only when asked for (the other seeds' draws are unchanged).
        let kind = self.world.random(if options.clock_jumps { 13 } else { 12 });
        let class_on = match kind {
            0 | 1 | 10 | 11 => self.classes.crashes,
            2..=5 => self.classes.network,
            6 => self.classes.pauses,
            7 => self.classes.wal,
            12 => self.classes.drift,
            _ => true,
        };
        if !class_on {
            return Ok(());
        }
        match kind {
            12 => {
                // The wall clock steps (NTP, an operator) back or forward by up to 100 ticks. Only the
                // tickets' hybrid logical clock reads it; ticks and leases use monotonic time.
                let span = 100 * tick;
                let delta = self.world.random(2 * span) as i64 - span as i64;
                self.world.jump_wall_clock(node, delta);
            }
            10 | 11 => {
                // Kill a leader (a new one, often, before its first entries spread); it may come
                // straight back.
                let partition = self.partitions[self.world.random(self.partitions.len() as u64) as usize];
                let leaders = self.world.leader_role(partition);
                if !leaders.is_empty() {
                    let leader = leaders[self.world.random(leaders.len() as u64) as usize];
                    self.world.crash(leader);
                    self.crashes += 1;
                    if self.world.random(2) == 0 {
                        self.world.restart(leader)?;
                    }
                }
            }
            0 | 1 if options.snapshots && self.nodes.len() >= 3 && self.world.random(8) == 0 => {
                // Lose the snapshot files only (a corrupt snapshot directory): the node repairs
                // from the leaders. One node at a time, so every partition keeps a node to lead.
                if !self.world.any_repairing() {
                    self.world.lose_snapshots(node);
                    self.crashes += 1;
                    self.world.restart(node)?;
                }
            }
            0 | 1 if options.snapshots && self.world.random(6) == 0 => {
                // Lose a data directory: only a node no quorum counts (it rejoins by catching up,
                // by snapshot when the leaders compacted their logs).
                if self.world.outside_every_quorum(node) {
                    self.world.wipe(node)?;
                    self.crashes += 1;
                    if self.world.random(2) == 0 {
                        self.world.restart(node)?;
                    }
                }
            }
            0 | 1 => {
                if self.world.is_alive(node) {
                    self.world.crash(node);
                    self.crashes += 1;
                    if self.world.random(3) == 0 {
                        // Crash and come straight back (a supervisor restart).
                        self.world.restart(node)?;
                    }
                } else {
                    self.world.restart(node)?;
                }
            }
            2 => self.world.isolate(node),
            3 => {
                // Split the cluster in two random halves.
                for (a, b) in self.pairs() {
                    if self.world.random(2) == 0 {
                        self.world.cut_link(a, b);
                    }
                }
            }
            4 => {
                // One-way cuts: some directions fail while their reverse works.
                for (a, b) in self.pairs() {
                    match self.world.random(4) {
                        0 => self.world.cut_one_way(a, b),
                        1 => self.world.cut_one_way(b, a),
                        _ => {}
                    }
                }
            }
            5 => {
                // A flap: a short partition that heals before any election timeout (10 ticks).
                let mut cut = Vec::new();
                for (a, b) in self.pairs() {
                    if self.world.random(2) == 0 {
                        self.world.cut_link(a, b);
                        cut.push((a, b));
                    }
                }
                let until = self.world.now() + (1 + self.world.random(9)) * tick;
                self.flaps.push((until, cut));
            }
            6 => {
                // A paused process (GC, SIGSTOP): shorter or longer than an election timeout.
                let duration = (1 + self.world.random(40)) * tick;
                self.world.pause(node, duration);
            }
            7 => {
                // A hung WAL only ends with a restart of its node.
                if self.world.is_hung(node) {
                    self.world.crash(node);
                    self.crashes += 1;
                    self.world.restart(node)?;
                }
            }
            _ => {
                self.world.heal();
                for i in 0..self.nodes.len() {
                    let n = self.nodes[i];
                    if !self.world.is_alive(n) && self.world.random(2) == 0 {
                        self.world.restart(n)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every unordered pair of nodes.
    fn pairs(&self) -> Vec<(NodeId, NodeId)> {
        let mut pairs = Vec::new();
        for (i, &a) in self.nodes.iter().enumerate() {
            for &b in &self.nodes[i + 1..] {
                pairs.push((a, b));
            }
        }
        pairs
    }

    fn end_flaps(&mut self) {
        let now = self.world.now();
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.flaps).into_iter().partition(|(at, _)| *at <= now);
        self.flaps = later;
        for (_, links) in due {
            for (a, b) in links {
                self.world.restore_link(a, b);
            }
        }
    }

    /// End every fault: links, pauses, hung WALs (their nodes restart), crashed nodes.
    /// Quiescence's and the stalled-disk step-down's liveness bound: crash, cut off or hang the
    /// disk of the node that leads the most partitions while they are quiet; every partition must
    /// have a leader elsewhere within the detector's timeout plus three maximum election timeouts
    /// (plus the stall bound for a hung disk). Then heal and converge again. Seeds whose
    /// partitions cannot lose a voter (fewer than three voters) skip it.
    fn failover_check(&mut self, options: &SimOptions) -> Result<Option<u64>, Violation> {
        let partitions = self.world.partition_ids();
        let mut led: BTreeMap<NodeId, usize> = BTreeMap::new();
        for &p in &partitions {
            let Some(leader) = self.world.leader(p) else { return Ok(None) };
            let voters = self.world.replica(leader, p).map_or(0, |sm| sm.membership().voters.len());
            if voters < 3 {
                return Ok(None);
            }
            *led.entry(leader).or_default() += 1;
        }
        let Some((&victim, _)) = led.iter().max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n))) else { return Ok(None) };
        let fault = self.world.random(3);
        let what = match fault {
            0 => {
                self.world.crash(victim);
                "crashed"
            }
            1 => {
                self.world.isolate(victim);
                "was cut off"
            }
            _ => {
                // A stalled disk: the victim stays up and connected but its writes hang. Quiet
                // leaders write nothing; a client's proposal to each makes the stall matter.
                self.world.hang_wal(victim);
                for &p in &partitions {
                    self.world.propose_at(victim, p, vec![b"stalled".to_vec()], true)?;
                }
                "had its disk hang"
            }
        };
        let tick = self.world.faults.tick_interval;
        let config = self.world.config(victim, partitions[0]);
        let election_max = config.map_or(20, |c| c.election_timeout_max_ticks);
        let stalled = config.map_or(0, |c| c.stalled_write_ticks);
        let bound = u64::from(self.world.liveness.down_after_ticks)
            + 3 * u64::from(election_max)
            + if fault == 2 { u64::from(stalled) } else { 0 };
        let start = self.world.now();
        // `leader` picks the highest term: a cut-off victim still leading an old term does not count.
        let elected = |world: &World| partitions.iter().all(|&p| world.leader(p).is_some_and(|l| l != victim));
        while !elected(&self.world) {
            if self.world.now() - start > bound * tick {
                let detail = format!(
                    "no new leader within {bound} ticks after {victim} {what} while its partitions were quiet\n{}",
                    self.world.describe()
                );
                return Err(Violation { kind: ViolationKind::Liveness, detail });
            }
            self.world.run_for(1)?;
        }
        let took = (self.world.now() - start).div_ceil(tick);
        if fault == 2 {
            // The hung disk comes back with a restart (part of the check, not a crash of the run),
            // after a down time its peers' failure detectors notice: a learner restarted at once
            // behind a quiet leader would wait for the next write to learn the commit index.
            self.world.crash(victim);
            self.world.run_for((u64::from(self.world.liveness.down_after_ticks) + 1) * tick)?;
        }
        self.heal_all()?;
        let end = self.world.now() + options.heal_ticks * tick;
        while self.world.now() < end && self.world.check_converged().is_err() {
            self.world.run_for(tick)?;
        }
        self.world.check_converged()?;
        Ok(Some(took))
    }

    fn heal_all(&mut self) -> Result<(), Violation> {
        self.world.heal();
        self.flaps.clear();
        for i in 0..self.nodes.len() {
            let node = self.nodes[i];
            if self.world.is_hung(node) {
                self.world.crash(node);
                self.crashes += 1;
            }
            self.world.restart(node)?;
        }
        self.world.unpause_all();
        Ok(())
    }
}

/// A random membership over `nodes`: three to five voters, some of the rest as learners.
fn random_membership(world: &mut World, nodes: &[NodeId]) -> Membership {
    let mut shuffled = nodes.to_vec();
    for i in (1..shuffled.len()).rev() {
        let j = world.random(i as u64 + 1) as usize;
        shuffled.swap(i, j);
    }
    let voters = (3 + world.random(nodes.len() as u64 - 2) as usize).min(nodes.len());
    let mut membership = Membership::with_voters(shuffled[..voters].iter().copied());
    for &node in &shuffled[voters..] {
        if world.random(2) == 0 {
            membership.learners.insert(node);
        }
    }
    membership
}

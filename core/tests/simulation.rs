//! The deterministic simulator against the real state machine: a sweep of faulty seeds with every
//! safety invariant checked after each step, replay of a single seed, determinism, and proof that
//! the faults and checker rules catch a planted bug of each class (feature `canary-bugs`).
//! Scripted scenarios of the known hard cases live in `scenarios.rs`.
//!
//! Knobs: `SIM_SEEDS` (default 10,000; the long mode is e.g. `SIM_SEEDS=1000000`) and
//! `SIM_FIRST_SEED` (default 1) for the sweep; `SIM_SEED=<n>` to replay one seed in `replay_seed`.

use kommander_core::config::CanaryBugs;
use kommander_core::sim::{run_seed, FaultClasses, SimFailure, SimOptions, SimReport, ViolationKind};
use std::time::Instant;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Run `seeds` on every core (seed `first + i` on thread `i % threads`); the first failure wins.
fn sweep(first: u64, seeds: u64, options: &SimOptions) -> Result<Vec<SimReport>, SimFailure> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let results: Vec<Result<Vec<SimReport>, SimFailure>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (first + t..first + seeds).step_by(threads as usize).map(|seed| run_seed(seed, options)).collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("sweep thread")).collect()
    });
    let mut reports = Vec::new();
    for result in results {
        reports.extend(result?);
    }
    Ok(reports)
}

#[test]
fn faulty_seeds_hold_every_invariant() {
    let seeds = env_u64("SIM_SEEDS", 10_000);
    let first = env_u64("SIM_FIRST_SEED", 1);
    let started = Instant::now();
    let reports = sweep(first, seeds, &SimOptions::default()).unwrap_or_else(|failure| panic!("{failure}"));
    let secs = started.elapsed().as_secs_f64();
    let sum = |f: fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
    let count = |f: fn(&SimReport) -> bool| reports.iter().filter(|r| f(r)).count() as u64;
    let (steps, acked, crashes, changes) =
        (sum(|r| r.steps), sum(|r| r.acked), sum(|r| r.crashes), sum(|r| r.membership_changes));
    let dynamic = count(|r| r.membership_changes > 0);
    let no_pre_vote = count(|r| !r.pre_vote);
    let no_check_quorum = count(|r| !r.check_quorum);
    let unprotected = count(|r| !r.pre_vote && !r.check_quorum);
    let disruptions = sum(|r| r.disruptions);
    let (snapshots, installs, wipes) = (sum(|r| r.snapshots as u64), sum(|r| r.installs), sum(|r| r.wipes));
    let losses = sum(|r| r.snapshot_losses);
    let installing = count(|r| r.installs > 0);
    let quiescing = count(|r| r.quiesce_after_ticks > 0);
    let quiet = sum(|r| r.quiet_replicas as u64);
    let failovers: Vec<u64> = reports.iter().filter_map(|r| r.failover_ticks).collect();
    let worst = failovers.iter().max().copied().unwrap_or(0);
    let mean = failovers.iter().sum::<u64>() as f64 / failovers.len().max(1) as f64;
    println!(
        "quiescence: on in {quiescing} seeds, {quiet} replicas quiet after the stable phase; failover \
         checks (the busiest leader crashed or cut off while quiet): {} seeds, new leaders within \
         {mean:.1} ticks on average, {worst} at worst",
        failovers.len()
    );
    let (ticks, lazy) = (sum(|r| r.ticks), sum(|r| r.lazy_ticks));
    println!(
        "timers: {ticks} ticks, {lazy} ({:.1} %) before the replica's deadline and checked to change nothing \
         (what the runtime's node clock skips)",
        lazy as f64 * 100.0 / ticks.max(1) as f64
    );
    let (reads, lease_reads, failed_reads, transfers) =
        (sum(|r| r.reads_served), sum(|r| r.lease_reads_served), sum(|r| r.reads_failed), sum(|r| r.transfers));
    let leasing = count(|r| r.read_lease);
    println!(
        "reads: {reads} linearizable and lease reads served and checked against every write acknowledged \
         before them ({lease_reads} at lease level, leases on in {leasing} seeds), {failed_reads} refused or \
         failed; {transfers} leadership transfers"
    );
    println!(
        "snapshots: {snapshots} taken, restored or installed and checked against every replica's state; \
         {installs} installs from a leader in {installing} seeds; {wipes} data directories wiped; \
         {losses} replicas repaired by the leader's snapshot after losing theirs"
    );
    println!(
        "simulator: {seeds} faulty seeds ({first}..{}), 0 violations, {steps} steps in {secs:.1} s ({:.0} steps/s), \
         {acked} proposals acknowledged, {crashes} crashes, {changes} membership changes in {dynamic} seeds, \
         pre-vote off in {no_pre_vote}, check-quorum off in {no_check_quorum}, \
         {disruptions} leadership changes in stable windows (all in the {unprotected} seeds with both off)",
        first + seeds - 1,
        steps as f64 / secs
    );
    assert!(dynamic > seeds / 4, "membership must change in a large share of seeds ({dynamic})");
    assert!(acked > seeds, "the workload must actually commit proposals ({acked} acknowledged)");
    assert!(crashes > seeds / 4, "faults must actually be injected ({crashes} crashes)");
    assert!(snapshots > seeds, "snapshots must be taken and checked ({snapshots})");
    assert!(installing > seeds / 20, "snapshots must be installed in many seeds ({installing})");
    assert!(wipes > seeds / 200, "data directories must be lost and rebuilt ({wipes})");
    assert!(losses > seeds / 100, "lost snapshots must be repaired from the leaders ({losses})");
    assert!(no_pre_vote > seeds / 8 && no_check_quorum > seeds / 8, "seeds must run without pre-vote / check-quorum");
    assert!(quiet > seeds / 4, "partitions must actually go quiet ({quiet} quiet replicas)");
    assert!(lazy > ticks / 4, "most follower ticks must come before their deadline ({lazy} of {ticks})");
    assert!(reads > seeds, "consistent reads must be served and checked ({reads})");
    assert!(lease_reads > seeds / 4 && leasing > seeds / 8, "lease reads must run ({lease_reads} in {leasing} seeds)");
    assert!(transfers > seeds / 4, "leaderships must be transferred ({transfers})");
    assert!(failovers.len() as u64 > seeds / 10, "quiet leaders must be failed over ({})", failovers.len());
}

#[test]
fn replay_seed() {
    let seed = env_u64("SIM_SEED", 1);
    let options = SimOptions { clock_jumps: env_u64("SIM_CLOCK_JUMPS", 0) == 1, ..SimOptions::default() };
    match run_seed(seed, &options) {
        Ok(report) => println!("{report:?}"),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn same_seed_replays_identically() {
    for seed in [3, 17, 99] {
        let a = run_seed(seed, &SimOptions::default()).expect("seed passes");
        let b = run_seed(seed, &SimOptions::default()).expect("seed passes");
        assert_eq!(a, b, "seed {seed} must replay to the same trace");
    }
    let a = run_seed(3, &SimOptions::default()).unwrap();
    let b = run_seed(4, &SimOptions::default()).unwrap();
    assert_ne!(a.trace_hash, b.trace_hash, "different seeds explore different runs");
}

#[test]
fn fault_free_runs_commit_everything_they_acknowledge() {
    let options = SimOptions { faults: false, ..SimOptions::default() };
    for seed in 1..=50 {
        let report = run_seed(seed, &options).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(report.crashes, 0);
        assert_eq!(report.disruptions, 0, "seed {seed}: a calm cluster keeps its leaders");
        assert!(report.acked > 100, "seed {seed}: only {} proposals acknowledged", report.acked);
    }
}

/// Search seeds until the planted bug makes a checker fire; return the first seed and violation.
fn first_violation(canary: CanaryBugs, max_seeds: u64) -> Option<(u64, ViolationKind)> {
    let options = SimOptions { canary, ..SimOptions::default() };
    (1..=max_seeds).find_map(|seed| run_seed(seed, &options).err().map(|f| (seed, f.violation.kind)))
}

/// Each planted bug, the most seeds the random sweep may need to expose it, and the violations
/// that count as catching it. The fault or rule that catches each is named in its comment.
fn planted_bugs() -> Vec<(&'static str, CanaryBugs, u64, &'static [ViolationKind])> {
    use ViolationKind::*;
    let bug = CanaryBugs::default();
    vec![
        // Election safety rule.
        ("two votes per term", CanaryBugs { grant_two_votes_per_term: true, ..bug }, 200, &[ElectionSafety]),
        // Log matching via conflicting appends.
        (
            "skipped conflict truncation",
            CanaryBugs { skip_conflict_truncation: true, ..bug },
            200,
            &[LogMatching, StateMachineSafety],
        ),
        // Long delays: stale-term appends arrive after terms moved on. (The first seed that
        // catches it sees replicas that can no longer converge.)
        (
            "stale-term append accepted",
            CanaryBugs { accept_stale_term_append: true, ..bug },
            400,
            &[LogMatching, StateMachineSafety, LeaderCompleteness, LostAcknowledgedWrite, Fatal, Liveness],
        ),
        // Immediate restarts + the "one leader per term across restarts" rule.
        (
            "lone voter leads before its vote is durable",
            CanaryBugs { lead_before_vote_is_durable: true, ..bug },
            1_000,
            &[ElectionSafety],
        ),
        // Reordered/duplicated heartbeats + the monotonic commit rule.
        ("commit index regresses", CanaryBugs { commit_index_regresses: true, ..bug }, 50, &[CommitRegressed]),
        // Crashes and slow WAL flushes: acknowledged before durable.
        (
            "leader counts its unsynced entries",
            CanaryBugs { count_unstable_self: true, ..bug },
            50,
            &[LeaderCompleteness, StateMachineSafety, LostAcknowledgedWrite, LogMatching],
        ),
        // Membership changes in most 5-node seeds + the "leader inside its configuration" rule.
        (
            "removed leader keeps leading",
            CanaryBugs { keep_leading_when_removed: true, ..bug },
            100,
            &[LeaderOutsideConfiguration],
        ),
        // Clients on deposed leaders + the "no unknown acknowledged ticket" rule.
        (
            "unknown ticket answered without the log",
            CanaryBugs { unknown_ticket_without_quorum: true, ..bug },
            600,
            &[UnknownAcknowledgedTicket],
        ),
        // Snapshots + restarts and installs: a replica that lost held two-phase entries with
        // its log delivers a different sequence when the ticket commits.
        (
            "snapshot without its held two-phase entries",
            CanaryBugs { snapshot_drops_held_tickets: true, ..bug },
            50,
            &[StateMachineSafety, LostAcknowledgedWrite, UnknownAcknowledgedTicket],
        ),
        // Installs under reordering and duplication: a stale snapshot takes a replica's state back.
        (
            "snapshot older than the commit index installed",
            CanaryBugs { install_stale_snapshot: true, ..bug },
            100,
            &[StateMachineSafety, CommitRegressed],
        ),
        // Lost snapshot directories: a replica that applies entries without the state under them.
        (
            "delivering while the lost snapshot is being repaired",
            CanaryBugs { deliver_while_repairing: true, ..bug },
            200,
            &[StateMachineSafety],
        ),
        // The failover check: a quiet follower must wake when its leader's node goes down.
        (
            "a quiet follower ignoring its dead leader",
            CanaryBugs { quiet_follower_ignores_dead_leader: true, ..bug },
            30,
            &[Liveness],
        ),
        // The failover check's hung disk: the leader must step down for another to be elected.
        ("a leader kept on a stalled disk", CanaryBugs { keep_leading_on_stalled_disk: true, ..bug }, 100, &[Liveness]),
        // Every tick is checked against the deadline the replica announced before it.
        (
            "a deadline that forgets the elapsed ticks",
            CanaryBugs { due_ignores_elapsed_ticks: true, ..bug },
            5,
            &[TimerDeadline],
        ),
        // Reads: every linearizable and lease read is checked against the acknowledged writes.
        (
            "a read index served without the quorum round",
            CanaryBugs { read_without_quorum_round: true, ..bug },
            1000,
            &[StaleRead],
        ),
        (
            "a read lease kept after stepping down",
            CanaryBugs { lease_after_step_down: true, ..bug },
            1000,
            &[StaleRead],
        ),
    ]
}

/// The random sweep catches every planted bug below. Three more are caught by scripted scenarios
/// (`scenarios.rs`), which the sweep does not reach within a CI budget: committing a previous-term
/// entry by counting (Figure 8), a membership change before the barrier commits (the
/// single-server change bug) and pre-votes granted despite a live leader (a disruption).
#[test]
fn every_planted_bug_is_caught_by_the_random_sweep() {
    let bugs = planted_bugs();
    let caught: Vec<(&str, Option<(u64, ViolationKind)>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = bugs
            .iter()
            .map(|&(name, canary, max_seeds, _)| scope.spawn(move || (name, first_violation(canary, max_seeds))))
            .collect();
        handles.into_iter().map(|h| h.join().expect("canary thread")).collect()
    });
    for ((name, found), (_, _, max_seeds, kinds)) in caught.iter().zip(&bugs) {
        let (seed, kind) = found.unwrap_or_else(|| panic!("{name}: not detected within {max_seeds} seeds"));
        println!("{name}: caught at seed {seed} as {kind:?}");
        assert!(kinds.contains(&kind), "{name}: unexpected violation {kind:?}");
    }
}

/// One fault class, a planted bug of its kind, and two runs over the same seeds: `with` the class
/// on (it must catch the bug) and `without` it (it must not) — so the class, not some other fault,
/// is what exposes bugs of its kind.
struct ClassBug {
    class: &'static str,
    with: SimOptions,
    without: SimOptions,
    seeds: u64,
    kinds: &'static [ViolationKind],
}

/// `base` classes plus the one `add` switches on, for planted `bug`; membership changes and
/// snapshots stay out (membership changes depose leaders on their own).
fn class_bug(
    class: &'static str,
    bug: CanaryBugs,
    base: FaultClasses,
    add: fn(&mut FaultClasses),
    seeds: u64,
    kinds: &'static [ViolationKind],
) -> ClassBug {
    // Snapshots and quiescence stay out too: this test is about the fault classes (they have
    // their own planted bugs in the sweep; quiet partitions send no heartbeats, which would hide
    // the heartbeat-timing bug of the clock-drift class).
    let without = SimOptions {
        canary: bug,
        classes: base,
        membership_changes: false,
        snapshots: false,
        quiescence: false,
        ..SimOptions::default()
    };
    let mut with = without.clone();
    add(&mut with.classes);
    ClassBug { class, with, without, seeds, kinds }
}

impl ClassBug {
    /// Apply `tweak` to both runs.
    fn also(mut self, tweak: impl Fn(&mut SimOptions)) -> Self {
        tweak(&mut self.with);
        tweak(&mut self.without);
        self
    }
}

fn class_bugs() -> Vec<ClassBug> {
    use ViolationKind::*;
    let bug = CanaryBugs::default();
    let none = FaultClasses::NONE;
    // Leadership never moves without a fault, and the first leader is the node whose clock runs
    // fastest: classes that need a deposed leader or a slower one build on crashes.
    let crashes = FaultClasses { crashes: true, ..none };
    vec![
        // Drops and partitions depose leaders holding entries nobody else has: the next leader's
        // appends conflict with them.
        class_bug(
            "network",
            CanaryBugs { skip_conflict_truncation: true, ..bug },
            none,
            |c| c.network = true,
            200,
            &[LogMatching, StateMachineSafety],
        ),
        // On top of WAL faults (whose partition restarts move terms on, but leave no message in
        // flight for long), messages held back past an election timeout: a deposed leader's
        // appends arrive after the term moved on. (Pauses alone deliver stale appends too: a
        // paused leader's messages all leave late.)
        class_bug(
            "long delays",
            CanaryBugs { accept_stale_term_append: true, ..bug },
            FaultClasses { wal: true, ..none },
            |c| c.long_delays = true,
            1000,
            &[LogMatching, StateMachineSafety, LeaderCompleteness, LostAcknowledgedWrite, Fatal, Liveness],
        ),
        // A crash and an immediate restart of a lone voter whose vote was not yet durable.
        class_bug(
            "crashes",
            CanaryBugs { lead_before_vote_is_durable: true, ..bug },
            none,
            |c| c.crashes = true,
            400,
            &[ElectionSafety],
        )
        .also(|o| o.nodes = Some(1)),
        // A paused leader is deposed, resumes believing it leads, and answers a client.
        class_bug(
            "pauses",
            CanaryBugs { unknown_ticket_without_quorum: true, ..bug },
            none,
            |c| c.pauses = true,
            200,
            &[UnknownAcknowledgedTicket],
        ),
        // A fast follower clock against a slow leader clock breaks a timing margin that holds at
        // one clock rate; the disruption bound catches it once the network is stable.
        class_bug(
            "clock drift",
            CanaryBugs { heartbeat_near_election_timeout: true, ..bug },
            crashes,
            |c| c.drift = true,
            400,
            &[Disruption],
        )
        .also(|o| {
            // Pre-vote would hide most of it (followers that heard the leader refuse).
            o.pre_vote = Some(false);
            o.check_quorum = Some(true);
        }),
        // Failed and hung flushes restart partitions from what is durable: a leader that counted
        // its unsynced entries acknowledged writes the restart loses.
        class_bug(
            "WAL faults",
            CanaryBugs { count_unstable_self: true, ..bug },
            none,
            |c| c.wal = true,
            200,
            &[LeaderCompleteness, StateMachineSafety, LostAcknowledgedWrite, LogMatching],
        ),
    ]
}

#[test]
fn each_fault_class_catches_a_planted_bug_only_it_exposes() {
    let bugs = class_bugs();
    let first = |options: &SimOptions, seeds: u64| {
        (1..=seeds).find_map(|seed| run_seed(seed, options).err().map(|f| (seed, f.violation.kind)))
    };
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            bugs.iter().map(|b| scope.spawn(move || (first(&b.with, b.seeds), first(&b.without, b.seeds)))).collect();
        handles.into_iter().map(|h| h.join().expect("class thread")).collect()
    });
    for ((with, without), b) in results.iter().zip(&bugs) {
        println!(
            "{}: with the class {with:?}, without it {without:?} (first seed and violation, of {})",
            b.class, b.seeds
        );
    }
    for ((with, without), b) in results.into_iter().zip(&bugs) {
        let (_, kind) = with.unwrap_or_else(|| panic!("{}: its planted bug survived {} seeds", b.class, b.seeds));
        assert!(b.kinds.contains(&kind), "{}: unexpected violation {kind:?}", b.class);
        assert_eq!(without, None, "{}: the bug must need its class to be caught", b.class);
    }
}

/// Wall clocks that jump back and forth (`SimOptions::clock_jumps`): the planted bug that takes
/// tickets from the wall clock as is must be caught, and no seed may break an invariant.
/// (`SIM_CLOCK_JUMP_SEEDS`, default 1,000; seed 3841 is where a replica restarted behind a
/// clock that went back first issued again the ticket of a proposal its crash lost.)
#[test]
fn wall_clock_jumps_keep_every_invariant() {
    let options = SimOptions { clock_jumps: true, ..SimOptions::default() };
    let canary = CanaryBugs { tickets_read_the_wall_clock: true, ..Default::default() };
    let bug = SimOptions { canary, ..options.clone() };
    let caught = (1..=50).find_map(|seed| run_seed(seed, &bug).err());
    let caught = caught.expect("tickets read from the wall clock went unnoticed");
    println!("tickets read from the wall clock: caught at seed {} as {:?}", caught.seed, caught.violation.kind);
    let seeds = env_u64("SIM_CLOCK_JUMP_SEEDS", 1_000);
    let failures: Vec<String> =
        (1..=seeds).chain([3841]).filter_map(|seed| run_seed(seed, &options).err().map(|f| f.to_string())).collect();
    assert!(
        failures.is_empty(),
        "{} seed(s) failed under wall-clock jumps (replay with SIM_CLOCK_JUMPS=1), e.g. {}",
        failures.len(),
        failures[0]
    );
}

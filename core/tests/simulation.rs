//! The deterministic simulator against the real state machine: thousands of faulty seeds with
//! every safety invariant checked after each step, replay of a single seed, determinism, and proof
//! that the checkers catch planted bugs (feature `canary-bugs`).
//!
//! Knobs: `SIM_SEEDS` (default 2000) and `SIM_FIRST_SEED` (default 1) for the seed sweep;
//! `SIM_SEED=<n>` to replay one seed in `replay_seed`.

use kommander_core::config::CanaryBugs;
use kommander_core::sim::{cluster_configs, run_seed, NetworkFaults, SimOptions, ViolationKind, World};
use kommander_core::{NodeId, PartitionId, Role};
use std::time::Instant;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn faulty_seeds_hold_every_invariant() {
    let seeds = env_u64("SIM_SEEDS", 2000);
    let first = env_u64("SIM_FIRST_SEED", 1);
    let options = SimOptions::default();
    let started = Instant::now();
    let (mut steps, mut acked, mut crashes, mut changes, mut dynamic) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for seed in first..first + seeds {
        match run_seed(seed, &options) {
            Ok(report) => {
                steps += report.steps;
                acked += report.acked;
                crashes += report.crashes;
                changes += report.membership_changes;
                dynamic += u64::from(report.membership_changes > 0);
            }
            Err(failure) => panic!("{failure}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "simulator: {seeds} faulty seeds ({first}..{}), 0 violations, {steps} steps in {secs:.1} s ({:.0} steps/s), \
         {acked} proposals acknowledged, {crashes} crashes, {changes} membership changes in {dynamic} seeds",
        first + seeds - 1,
        steps as f64 / secs
    );
    assert!(dynamic > seeds / 20, "membership must actually change in some seeds ({dynamic})");
    assert!(acked > seeds, "the workload must actually commit proposals ({acked} acknowledged)");
    assert!(crashes > seeds / 4, "faults must actually be injected ({crashes} crashes)");
}

#[test]
fn replay_seed() {
    let seed = env_u64("SIM_SEED", 1);
    match run_seed(seed, &SimOptions::default()) {
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
        assert!(report.acked > 100, "seed {seed}: only {} proposals acknowledged", report.acked);
    }
}

/// Search seeds until the planted bug makes a checker fire; return the first seed and violation.
fn first_violation(canary: CanaryBugs, max_seeds: u64) -> Option<(u64, ViolationKind)> {
    let options = SimOptions { canary, ..SimOptions::default() };
    (1..=max_seeds).find_map(|seed| run_seed(seed, &options).err().map(|f| (seed, f.violation.kind)))
}

#[test]
fn canary_two_votes_per_term_is_caught() {
    let canary = CanaryBugs { grant_two_votes_per_term: true, ..CanaryBugs::default() };
    let (seed, kind) = first_violation(canary, 200).expect("double voting must be detected within 200 seeds");
    println!("double vote caught at seed {seed}: {kind:?}");
    assert_eq!(kind, ViolationKind::ElectionSafety);
}

#[test]
fn canary_skipped_conflict_truncation_is_caught() {
    let canary = CanaryBugs { skip_conflict_truncation: true, ..CanaryBugs::default() };
    let (seed, kind) = first_violation(canary, 200).expect("a kept stale suffix must be detected within 200 seeds");
    println!("skipped truncation caught at seed {seed}: {kind:?}");
    assert!(
        matches!(kind, ViolationKind::LogMatching | ViolationKind::StateMachineSafety),
        "unexpected violation {kind:?}"
    );
}

/// Raft paper Figure 8, scripted on the simulator (5 nodes). Returns `Ok(true)` when the leader of
/// step (d) committed the previous-term entry before its own barrier reached a majority — which only
/// the planted bug allows — after which the scenario lets the stale candidate win.
fn figure_8(bug: bool) -> Result<bool, kommander_core::sim::Violation> {
    let p = PartitionId(1);
    let configs = cluster_configs(5, 1, 8, |c| {
        c.max_entries_per_append = 1;
        c.max_inflight_appends = 1;
        c.canary.commit_previous_term_by_count = bug;
    });
    let mut w = World::new(8, configs, NetworkFaults::default())?;
    let is_leader = |w: &World, n: NodeId| w.replica(n, p).is_some_and(|s| s.role() == Role::Leader);
    // (a) A leads and replicates its barrier everywhere, then entry X only to B.
    assert!(w.run_until_condition(50_000, |w| w.leader(p).is_some())?);
    let a = w.leader(p).unwrap();
    w.run_for(200)?;
    let others: Vec<NodeId> = w.node_ids().into_iter().filter(|&n| n != a).collect();
    let (b, rest) = (others[0], [others[1], others[2], others[3]]);
    for n in rest {
        w.cut_link(a, n);
    }
    assert!(w.propose(p, vec![b"X".to_vec()], true)?);
    let x = w.replica(a, p).unwrap().last_index();
    assert!(w.run_until_condition(1_000, |w| w.replica(b, p).is_some_and(|s| s.last_index() >= x))?);
    // (b) A crashes, B is cut off; one of C, D, E wins a new term and its barrier (index x) reaches nobody.
    w.crash(a);
    w.isolate(b);
    assert!(w.run_until_condition(50_000, |w| rest.iter().any(|&n| is_leader(w, n)))?);
    let stale = rest.into_iter().find(|&n| is_leader(&w, n)).unwrap();
    let followers: Vec<NodeId> = rest.into_iter().filter(|&n| n != stale).collect();
    w.isolate(stale);
    // (c) A restarts; A or B wins a later term and re-replicates X (previous term) to the followers.
    w.heal();
    w.isolate(stale);
    w.restart(a)?;
    let buggy_commit = w.run_until_condition(50_000, |w| {
        [a, b].iter().any(|&n| {
            is_leader(w, n)
                && w.replica(n, p).unwrap().commit_index() >= x
                && followers.iter().all(|&f| w.replica(f, p).unwrap().last_index() <= x)
        })
    })?;
    if !buggy_commit {
        return Ok(false);
    }
    // (d) A and B are cut off before their barrier spreads; the stale candidate (term-2 entry at x)
    // rejoins the followers and wins, overwriting the "committed" X.
    w.heal();
    w.isolate(a);
    w.isolate(b);
    w.run_for(50_000)?;
    Ok(true)
}

#[test]
fn canary_previous_term_commit_is_caught_in_figure_8() {
    let outcome = figure_8(true);
    let violation = outcome.expect_err("the planted bug must be detected");
    println!("figure 8 with the planted bug: {violation}");
    assert!(
        matches!(violation.kind, ViolationKind::LeaderCompleteness | ViolationKind::StateMachineSafety),
        "unexpected violation {violation}"
    );
}

#[test]
fn figure_8_without_the_bug_never_commits_a_previous_term_entry_by_count() {
    assert_eq!(figure_8(false), Ok(false));
}

//! Scripted simulator scenarios for the known hard cases, each run with and without the planted
//! bug it exists to catch: Raft paper Figure 8 (committing a previous-term entry by counting), the
//! single-server membership change bug (Ongaro, raft-dev 2015: a new leader changing membership
//! before its term's first entry commits), a disruptive rejoining node (pre-vote), and a two-phase
//! ticket resolved through a leader that was deposed without knowing it.

use kommander_core::raft::Membership;
use kommander_core::sim::{cluster_configs, NetworkFaults, Violation, ViolationKind, World};
use kommander_core::{NodeId, PartitionConfig, PartitionId, Role, TicketOutcome};

const P: PartitionId = PartitionId(1);

fn world(nodes: usize, seed: u64, tune: impl Fn(&mut PartitionConfig)) -> World {
    let configs = cluster_configs(nodes, 1, seed, tune);
    World::new(seed, configs, NetworkFaults::default()).expect("world starts")
}

fn is_leader(w: &World, n: NodeId) -> bool {
    w.replica(n, P).is_some_and(|s| s.role() == Role::Leader)
}

/// Run until `partition` has a published leader and return it.
fn elected(w: &mut World) -> Result<NodeId, Violation> {
    assert!(w.run_until_condition(100_000, |w| w.leader(P).is_some())?, "no leader\n{}", w.describe());
    Ok(w.leader(P).unwrap())
}

/// A scenario run with its planted bug must fail with one of `kinds`.
fn assert_caught<T: std::fmt::Debug>(outcome: Result<T, Violation>, kinds: &[ViolationKind]) {
    let violation = outcome.expect_err("the planted bug must be detected");
    println!("caught: {violation}");
    assert!(kinds.contains(&violation.kind), "unexpected violation {violation}");
}

/// Raft paper Figure 8, scripted on the simulator (5 nodes). Returns `Ok(true)` when the leader of
/// step (d) committed the previous-term entry before its own barrier reached a majority — which only
/// the planted bug allows — after which the scenario lets the stale candidate win.
fn figure_8(bug: bool) -> Result<bool, Violation> {
    let p = P;
    let mut w = world(5, 8, |c| {
        c.max_entries_per_append = 1;
        c.max_inflight_appends = 1;
        c.canary.commit_previous_term_by_count = bug;
    });
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
    assert_caught(figure_8(true), &[ViolationKind::LeaderCompleteness, ViolationKind::StateMachineSafety]);
}

#[test]
fn figure_8_without_the_bug_never_commits_a_previous_term_entry_by_count() {
    assert_eq!(figure_8(false), Ok(false));
}

/// The single-server membership change bug (Ongaro, raft-dev, 2015), with removals. Voters
/// {a, b, c, d}. Leader a appends C1 = {a, b, c} (removing d) and crashes before anyone else has
/// it. b wins term 2 with the votes of c and d, but its barrier reaches only d. If b may change the
/// membership before that barrier commits (the planted bug), it appends C2 = {a, b, d} (removing c)
/// and commits it with d alone — a majority of C2. a restarts and wins a later term with c, a
/// majority of C1 whose log does not hold b's term: it overwrites what b committed. Returns
/// `Ok(false)` when b's change is refused (the fix: a new leader changes membership only after its
/// barrier commits).
fn single_server_change(bug: bool) -> Result<bool, Violation> {
    let mut w = world(4, 21, |c| {
        c.check_quorum = false;
        c.canary.membership_change_before_barrier = bug;
    });
    let a = elected(&mut w)?;
    w.run_for(300)?;
    let others: Vec<NodeId> = w.node_ids().into_iter().filter(|&n| n != a).collect();
    // a appends C1 (remove the last of the others) where nobody else can see it, and crashes.
    w.isolate(a);
    let c1 = Membership::with_voters([a, others[0], others[1]]);
    assert!(w.propose_membership_at(a, P, c1)?, "C1 accepted by a");
    let c1_index = w.replica(a, P).unwrap().last_index();
    assert!(w.run_until_condition(1_000, |w| w.replica(a, P).is_some_and(|s| s.stable_index() >= c1_index))?);
    w.crash(a);
    // A new leader b among the others; cut it from c as soon as it wins, so its barrier reaches d only.
    assert!(w.run_until_condition(100_000, |w| others.iter().any(|&n| is_leader(w, n)))?);
    let b = others.iter().copied().find(|&n| is_leader(&w, n)).unwrap();
    // c: a node C1 keeps (a wins with it later); d: the remaining one.
    let c = [others[0], others[1]].into_iter().find(|&n| n != b).unwrap();
    let d = others.iter().copied().find(|&n| n != b && n != c).unwrap();
    w.cut_link(b, c);
    let c2 = Membership::with_voters([a, b, d]);
    if !w.propose_membership_at(b, P, c2)? {
        return Ok(false);
    }
    let c2_index = w.replica(b, P).unwrap().last_index();
    assert!(w.run_until_condition(50_000, |w| w.replica(b, P).is_some_and(|s| s.commit_index() >= c2_index))?);
    // b and d fall silent; a restarts and campaigns with c.
    w.isolate(b);
    w.isolate(d);
    w.restore_link(a, c);
    w.restart(a)?;
    w.run_for(50_000)?;
    w.heal();
    w.run_for(50_000)?;
    Ok(true)
}

#[test]
fn canary_membership_change_before_the_barrier_is_caught() {
    assert_caught(single_server_change(true), &[ViolationKind::StateMachineSafety, ViolationKind::LeaderCompleteness]);
}

#[test]
fn a_new_leader_changes_membership_only_after_its_barrier_commits() {
    assert_eq!(single_server_change(false), Ok(false));
}

/// A follower stops hearing the leader (a one-way cut: it still reaches everyone) for many
/// election timeouts, then the link heals, in an idle, healthy cluster. Its pre-votes are refused
/// by replicas that hear the live leader, so it never raises its term and nothing changes when it
/// rejoins. Returns the leadership changes seen from the cut on.
fn rejoining_node(bug: bool) -> Result<u64, Violation> {
    let mut w = world(3, 5, |c| c.canary.grant_pre_vote_despite_leader = bug);
    let leader = elected(&mut w)?;
    w.run_for(300)?;
    let before = w.elections();
    let follower = w.node_ids().into_iter().find(|&n| n != leader).unwrap();
    w.cut_one_way(leader, follower);
    w.run_for(1_000)?;
    if !bug {
        let term = w.replica(follower, P).unwrap().term();
        assert_eq!(term, w.replica(leader, P).unwrap().term(), "pre-vote kept the cut-off node's term");
    }
    w.heal();
    w.run_for(3_000)?;
    Ok(w.elections() - before)
}

#[test]
fn a_rejoining_node_does_not_disrupt_a_stable_leader() {
    assert_eq!(rejoining_node(false), Ok(0));
}

#[test]
fn canary_pre_vote_granted_despite_a_live_leader_is_caught_as_disruption() {
    let disruptions = rejoining_node(true).expect("no safety violation, only disruption");
    println!("pre-vote despite a live leader: {disruptions} leadership change(s) after the rejoin");
    assert!(disruptions > 0, "the planted bug must depose the stable leader");
}

/// The two-phase bug: leader a is cut off but (check-quorum off, so deterministically) keeps its
/// leader role; b is elected, a two-phase proposal commits and is acknowledged through b, b
/// crashes, and the client asks a — which has never seen the ticket — to commit it. a must not
/// answer `UnknownTicket` (the checker flags that for an acknowledged ticket): it appends a marker
/// that can never commit. After healing, the decision goes through the new leader and the held
/// entries are delivered everywhere.
fn two_phase_through_a_deposed_leader(bug: bool) -> Result<(), Violation> {
    let mut w = world(3, 11, |c| {
        c.check_quorum = false;
        c.canary.unknown_ticket_without_quorum = bug;
    });
    let a = elected(&mut w)?;
    w.run_for(300)?;
    w.isolate(a);
    assert!(w.run_until_condition(100_000, |w| w.leader(P).is_some_and(|l| l != a))?);
    let b = w.leader(P).unwrap();
    assert!(is_leader(&w, a), "a still believes it leads");
    assert!(w.propose_at(b, P, vec![b"held".to_vec()], false)?);
    assert!(w.run_until_condition(10_000, |w| w.replica(b, P).is_some_and(|s| s.held_tickets() > 0))?);
    // The acknowledgement reaches the client in b's next turn.
    let mut acked = w.take_acknowledged_two_phase();
    for _ in 0..100 {
        if !acked.is_empty() {
            break;
        }
        w.run_for(1)?;
        acked = w.take_acknowledged_two_phase();
    }
    let (_, ticket) = *acked.first().expect("the proposal was acknowledged");
    w.crash(b);
    w.resolve_at(a, P, ticket, TicketOutcome::Committed)?;
    w.run_for(500)?;
    // Heal: a steps down on contact, a new leader takes the decision and delivers the entries.
    w.heal();
    w.restart(b)?;
    assert!(w.run_until_condition(100_000, |w| w.leader(P).is_some_and(|l| w.replica(l, P).unwrap().term() > 1))?);
    let mut committed = false;
    for _ in 0..50 {
        if let Some(leader) = w.leader(P) {
            if w.resolve_at(leader, P, ticket, TicketOutcome::Committed)? {
                committed = true;
                break;
            }
        }
        w.run_for(100)?;
    }
    assert!(committed, "the new leader takes the decision");
    w.run_for(3_000)?;
    w.check_converged()?;
    assert!(w.checker().delivered_count() >= 1, "the held entry was delivered");
    Ok(())
}

#[test]
fn a_deposed_leader_never_denies_a_committed_two_phase_ticket() {
    two_phase_through_a_deposed_leader(false).unwrap_or_else(|v| panic!("{v}"));
}

#[test]
fn canary_unknown_ticket_without_the_log_is_caught() {
    assert_caught(two_phase_through_a_deposed_leader(true), &[ViolationKind::UnknownAcknowledgedTicket]);
}

/// A leader whose disk hangs (its WAL flushes never complete again) while clients write: it
/// hands its leadership to an up-to-date follower and steps down within `stalled_write_ticks`,
/// and a write proposed to the new leader commits. Returns the ticks from the hang to that
/// commit, or `None` when nothing committed on another leader within 300 ticks.
fn stalled_disk(bug: bool) -> Result<Option<u64>, Violation> {
    let mut w = world(3, 17, |c| c.canary.keep_leading_on_stalled_disk = bug);
    let victim = elected(&mut w)?;
    w.run_for(200)?;
    let tick = w.faults.tick_interval;
    let bound = w.config(victim, P).unwrap().stalled_write_ticks;
    w.hang_wal(victim);
    let start = w.now();
    let mut waiting_for: Option<(NodeId, u64)> = None;
    while w.now() - start < 300 * tick {
        // A client keeps writing to whoever leads.
        w.propose(P, vec![b"w".to_vec()], true)?;
        if let Some(leader) = w.leader(P).filter(|&l| l != victim) {
            let sm = w.replica(leader, P).unwrap();
            match waiting_for {
                Some((l, index)) if l == leader && sm.commit_index() >= index => {
                    let ticks = (w.now() - start).div_ceil(tick);
                    assert!(!w.replica(victim, P).unwrap().is_leader(), "the stalled node still calls itself leader");
                    println!(
                        "stalled disk: a write committed on {leader} {ticks} ticks after the hang (bound {bound})"
                    );
                    return Ok(Some(ticks));
                }
                Some((l, _)) if l == leader => {}
                _ => waiting_for = Some((leader, sm.last_index())),
            }
        }
        w.run_for(tick)?;
    }
    Ok(None)
}

#[test]
fn a_leader_on_a_stalled_disk_steps_down_and_writes_commit_elsewhere() {
    let ticks = stalled_disk(false).expect("no violation").expect("writes must commit on another leader");
    // The stall bound, then an immediate election (TimeoutNow) and the new leader's barrier.
    assert!(ticks <= 20 + 10, "took {ticks} ticks");
}

#[test]
fn canary_a_leader_kept_on_a_stalled_disk_is_caught() {
    assert_eq!(stalled_disk(true), Ok(None), "with the planted bug no other node may lead");
}

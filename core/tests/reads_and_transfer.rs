//! Consistent reads (thesis §6.4: read-index rounds shared by concurrent reads, lease reads,
//! follower reads) and leadership transfer (thesis §3.10, TimeoutNow), driven rule by rule on a
//! tiny in-test network (helpers shared with `raft_rules.rs`).
#![allow(dead_code, unused_imports)]

include!("support/rules_helpers.rs");

use kommander_core::{ReadConsistency, ReadError, TransferError};

const LINEARIZABLE: ReadConsistency = ReadConsistency::Linearizable;
const LEASE: ReadConsistency = ReadConsistency::Lease;

fn read_rounds_sent(messages: &[Envelope]) -> Vec<u64> {
    let mut rounds: Vec<u64> = messages
        .iter()
        .filter_map(|e| match e.message {
            RaftMessage::ReadRound { round, ack: false, .. } => Some(round),
            _ => None,
        })
        .collect();
    rounds.dedup();
    rounds
}

/// A lone voter is its own quorum: its read index is its commit index at once.
#[test]
fn a_single_voter_answers_a_read_at_once() {
    let mut net = Net::fresh(&[1]);
    tick_until_timeout(net.sm_mut(1));
    net.settle();
    assert!(net.sm(1).is_leader());
    net.sm_mut(1).read(7, LINEARIZABLE, 0).unwrap();
    let turn = net.flush(1);
    assert_eq!(turn.read_states, vec![ReadState { id: 7, result: Ok(net.sm(1).commit_index()) }]);
}

/// §6.4: the read index is the commit index when the round started, handed out only once a
/// quorum confirmed the leadership; reads that arrive during a round wait for the next one, and
/// every read waiting when a round starts shares it.
#[test]
fn reads_share_rounds_and_wait_for_a_quorum() {
    let mut net = three_with_leader();
    let commit = net.sm(1).commit_index();
    net.take_output(1);
    net.sm_mut(1).read(1, LINEARIZABLE, 0).unwrap();
    let first = net.flush(1);
    assert!(first.read_states.is_empty(), "no read index before the quorum confirmed");
    assert_eq!(read_rounds_sent(&first.messages), vec![1]);
    // Two more reads while round 1 runs: they must not be served by it.
    net.sm_mut(1).read(2, LINEARIZABLE, 0).unwrap();
    net.sm_mut(1).read(3, LINEARIZABLE, 0).unwrap();
    assert!(read_rounds_sent(&net.flush(1).messages).is_empty(), "one round at a time");
    // Node 2 confirms round 1: a quorum with the leader.
    net.sm_mut(1).step(env(2, 1, RaftMessage::ReadRound { term: 1, round: 1, ack: true })).unwrap();
    let after = net.flush(1);
    assert_eq!(after.read_states, vec![ReadState { id: 1, result: Ok(commit) }]);
    assert_eq!(read_rounds_sent(&after.messages), vec![2], "the waiting reads start the next round together");
    net.sm_mut(1).step(env(3, 1, RaftMessage::ReadRound { term: 1, round: 2, ack: true })).unwrap();
    let ids: Vec<u64> = net.flush(1).read_states.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![2, 3]);
    assert_eq!(net.sm(1).read_rounds(), 2, "three reads, two rounds");
    // A late or stale confirmation changes nothing.
    net.sm_mut(1).step(env(3, 1, RaftMessage::ReadRound { term: 1, round: 1, ack: true })).unwrap();
    assert!(net.flush(1).read_states.is_empty());
}

/// A follower's read goes to the leader, which answers with the index of the round it joined.
#[test]
fn a_follower_read_gets_its_index_from_the_leader() {
    let mut net = three_with_leader();
    net.sm_mut(1).propose(auto(b"x"), 0).unwrap();
    net.settle();
    net.take_output(2);
    net.sm_mut(2).read(42, LINEARIZABLE, 0).unwrap();
    net.settle();
    let turn = net.take_output(2);
    assert_eq!(turn.read_states, vec![ReadState { id: 42, result: Ok(net.sm(1).commit_index()) }]);
    assert_eq!(net.sm(2).pending_reads(), 0);
    // The follower serves it once it applied that index (the next heartbeat brings the commit).
    net.tick(1);
    net.settle();
    assert!(net.sm(2).applied_index() >= net.sm(1).commit_index());
}

/// A replica that knows no leader refuses at once, naming none.
#[test]
fn a_read_without_a_known_leader_is_refused() {
    let mut net = Net::fresh(&[1, 2, 3]);
    assert_eq!(net.sm_mut(2).read(1, LINEARIZABLE, 0), Err(ReadError::NotLeader { leader: None }));
}

/// A leader that steps down fails the reads waiting for its round; a follower whose leader
/// changes fails the reads it forwarded.
#[test]
fn losing_the_leadership_fails_waiting_reads() {
    let mut net = three_with_leader();
    net.isolate(1);
    net.sm_mut(1).read(1, LINEARIZABLE, 0).unwrap();
    net.sm_mut(2).read(2, LINEARIZABLE, 0).unwrap();
    net.settle();
    // Node 2 hears from a leader of a newer term: its forwarded read fails.
    net.sm_mut(2).step(env(3, 2, append_req(5, 0, 0, vec![], 0))).unwrap();
    let failed = net.flush(2).read_states;
    assert_eq!(failed, vec![ReadState { id: 2, result: Err(ReadError::LeadershipLost) }]);
    net.sm_mut(1).step(env(3, 1, append_req(5, 0, 0, vec![], 0))).unwrap();
    assert_eq!(net.sm(1).role(), Role::Follower);
    let lost = net.flush(1).read_states;
    assert_eq!(lost, vec![ReadState { id: 1, result: Err(ReadError::LeadershipLost) }]);
}

/// Lease reads: a confirmed round that started at `t` lets the leader answer without a round
/// until `t + read_lease`; afterwards a lease read runs a round again.
#[test]
fn a_lease_answers_without_a_round_until_it_expires() {
    let mut net = leased_three();
    net.sm_mut(1).read(1, LEASE, 1_000).unwrap();
    net.settle();
    assert_eq!(net.sm(1).read_rounds(), 1, "no lease yet: a round");
    net.take_output(1);
    net.sm_mut(1).read(2, LEASE, 1_099).unwrap();
    let turn = net.flush(1);
    assert_eq!(turn.read_states.len(), 1, "served from the lease");
    assert!(read_rounds_sent(&turn.messages).is_empty());
    net.sm_mut(1).read(3, LEASE, 1_100).unwrap();
    assert_eq!(read_rounds_sent(&net.flush(1).messages), vec![2], "expired: a round again");
}

/// With leases on, a replica restarted with a term honours an unknown leader for the minimum
/// election timeout (before it stopped it may have confirmed a lease it no longer remembers); a
/// replica that never saw a term, or one without leases, votes at once.
#[test]
fn with_leases_a_restarted_replica_does_not_vote_at_once() {
    let leased = |c: &mut PartitionConfig| c.read_lease = 100;
    let mut cfg = config(2, &[1, 2, 3]);
    leased(&mut cfg);
    cfg.election_timeout_max_ticks = 1_000;
    let mut restarted = restored(cfg.clone(), hs(4, None, 0), vec![]);
    restarted.step(env(3, 2, vote_req(5, 0, 0))).unwrap();
    assert_eq!(restarted.term(), 4, "the request is ignored, term included");
    for _ in 0..cfg.election_timeout_min_ticks {
        restarted.tick();
    }
    assert_eq!(restarted.role(), Role::Follower, "its own election timer has not fired");
    restarted.step(env(3, 2, vote_req(5, 0, 0))).unwrap();
    assert_eq!(restarted.voted_for(), Some(id(3)), "after the guard it votes");
    let mut fresh = machine_with(2, &[1, 2, 3], leased);
    fresh.step(env(3, 2, vote_req(1, 0, 0))).unwrap();
    assert_eq!(fresh.voted_for(), Some(id(3)), "a replica that never saw a term has no lease to honour");
    let mut without = restored(config(2, &[1, 2, 3]), hs(4, None, 0), vec![]);
    without.step(env(3, 2, vote_req(5, 0, 0))).unwrap();
    assert_eq!(without.voted_for(), Some(id(3)));
}

/// Three replicas with leases on and node 1 as published leader (node 1's timer fires at the
/// minimum election timeout; the others' much later).
fn leased_three() -> Net {
    let mut net = Net::fresh_with(&[1, 2, 3], |c| {
        c.read_lease = 100;
        c.election_timeout_max_ticks = if c.node == id(1) { c.election_timeout_min_ticks + 1 } else { 1_000 };
    });
    while net.sm(1).role() == Role::Follower {
        net.tick_all();
    }
    net.settle();
    assert!(net.sm(1).is_leader());
    net
}

fn machine_with(node: u64, voters: &[u64], tweak: impl Fn(&mut PartitionConfig)) -> PartitionStateMachine {
    let mut c = config(node, voters);
    tweak(&mut c);
    PartitionStateMachine::new(c).unwrap()
}

/// §3.10: the leader pauses proposals, sends TimeoutNow to the caught-up target, which campaigns
/// at once; the voters grant the transfer's vote although they heard the old leader just now.
/// The old leader's lease ends with the transfer.
#[test]
fn leadership_transfer_hands_over_without_waiting_for_a_timeout() {
    let mut net = leased_three();
    net.sm_mut(1).read(1, LEASE, 1_000).unwrap();
    net.settle();
    net.sm_mut(1).transfer_leadership(id(3)).unwrap();
    assert_eq!(net.sm(1).transfer_target(), Some(id(3)));
    assert_eq!(net.sm_mut(1).propose(auto(b"x"), 0).map(|_| ()), Err(ProposeError::LeadershipTransfer { to: id(3) }));
    net.take_output(1);
    net.sm_mut(1).read(2, LEASE, 1_001).unwrap();
    let turn = net.flush(1);
    assert!(turn.read_states.is_empty(), "no lease once a transfer started");
    for message in turn.messages {
        net.deliver(message);
    }
    net.settle();
    assert_eq!(net.sm(3).role(), Role::Leader, "the target won without an election timeout");
    assert!(net.sm(3).is_leader());
    assert_eq!(net.sm(3).term(), 2);
    assert_eq!(net.sm(1).role(), Role::Follower);
    assert_eq!(net.sm(1).transfer_target(), None);
}

/// Only the published leader transfers, and only to another voter.
#[test]
fn a_transfer_needs_a_leader_and_a_voter_target() {
    let mut net = three_with_leader();
    assert_eq!(net.sm_mut(2).transfer_leadership(id(3)), Err(TransferError::NotLeader { leader: Some(id(1)) }));
    assert_eq!(net.sm_mut(1).transfer_leadership(id(1)), Err(TransferError::NotAVoter(id(1))));
    assert_eq!(net.sm_mut(1).transfer_leadership(id(9)), Err(TransferError::NotAVoter(id(9))));
}

/// A transfer whose target never takes over is abandoned after `transfer_timeout_ticks`, and
/// proposals are accepted again.
#[test]
fn an_unfinished_transfer_is_abandoned() {
    let mut net = three_with_leader();
    net.isolate(3);
    net.sm_mut(1).transfer_leadership(id(3)).unwrap();
    let timeout = config(1, &[1, 2, 3]).transfer_timeout_ticks;
    for _ in 0..timeout {
        net.tick(1);
        net.settle();
    }
    assert_eq!(net.sm(1).transfer_target(), None);
    assert!(net.sm_mut(1).propose(auto(b"x"), 0).is_ok());
}

/// A vote request from a node outside the configuration whose log is behind is never granted
/// here, so it must not reset this replica's timer by raising its term either.
#[test]
fn a_stale_outsider_does_not_raise_the_term() {
    let mut net = three_with_leader();
    net.sm_mut(1).propose(auto(b"x"), 0).unwrap();
    net.settle();
    let term = net.sm(2).term();
    net.sm_mut(2).step(env(9, 2, vote_req(term + 5, 0, 0))).unwrap();
    assert_eq!(net.sm(2).term(), term);
}

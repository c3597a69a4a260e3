//! Rule-by-rule tests of the Raft state machine ([`PartitionStateMachine`]), driven directly: messages
//! are fed with `step`, time with `tick`, durability with `on_write_complete`, and the outputs of
//! `ready()` are inspected. Each test names the rule it checks and cites the Raft paper (Ongaro &
//! Ousterhout 2014, "In Search of an Understandable Consensus Algorithm (Extended Version)") or the
//! thesis (§6.2 check-quorum, §9.6 pre-vote, §10.2 batching and pipelining).
//!
//! Helpers at the top: entry and message builders, [`drain`] (take `ready()` and complete its write
//! at once so held messages are released), and a tiny in-test [`Net`] that moves `Ready.messages`
//! between a few machines with per-link filters and a `MemoryWal` per node.

// Builders, `drain` and the tiny `Net` are shared with `reads_and_transfer.rs`.
include!("support/rules_helpers.rs");

// ===== elections ===============================================================================

/// §5.2 (election timeout) + thesis §9.6 (pre-vote): when its election timer fires, a follower does
/// not bump its term; it first asks for pre-votes for term+1. Neither side changes term or vote.
#[test]
fn election_timeout_starts_a_pre_vote_that_changes_no_term_or_vote() {
    let voters = [1, 2, 3];
    let mut n1 = machine(1, &voters);
    let min = config(1, &voters).election_timeout_min_ticks;
    let max = config(1, &voters).election_timeout_max_ticks;
    for _ in 1..min {
        n1.tick();
        assert!(n1.ready().is_empty(), "nothing happens before the minimum election timeout");
    }
    let ticks = (min - 1) + tick_until_timeout(&mut n1);
    assert!((min..max).contains(&ticks), "timer fired after {ticks} ticks, outside [{min}, {max})");
    assert_eq!(n1.role(), Role::PreCandidate);
    assert_eq!((n1.term(), n1.voted_for()), (0, None), "pre-vote changes neither term nor vote");
    let ready = n1.ready();
    assert!(ready.write.is_none(), "a pre-vote needs no durable state: {:?}", ready.write);
    for peer in [2, 3] {
        assert_eq!(to_node(&ready.messages, peer), vec![&pre_vote_req(1, 0, 0)], "pre-vote carries term + 1");
    }

    // The receiver grants it (no leader known, log as fresh) without changing anything either.
    let mut n2 = machine(2, &voters);
    n2.step(env(1, 2, pre_vote_req(1, 0, 0))).unwrap();
    let ready = n2.ready();
    assert_eq!(to_node(&ready.messages, 1), vec![&vote_resp(1, true, true)]);
    assert!(ready.write.is_none());
    assert_eq!((n2.role(), n2.term(), n2.voted_for()), (Role::Follower, 0, None));

    // Only a quorum of pre-votes makes the node a real candidate of term+1, voting for itself.
    n1.step(env(2, 1, vote_resp(1, true, true))).unwrap();
    assert_eq!((n1.role(), n1.term(), n1.voted_for()), (Role::Candidate, 1, Some(id(1))));
}

/// Thesis §9.6: pre-vote keeps a partitioned node from disturbing a stable leader. While cut off it
/// keeps running pre-votes (never bumping its term); once it rejoins, followers that heard from the
/// leader recently and the leader itself reject it, and the leader keeps its term and role.
#[test]
fn pre_vote_does_not_disturb_a_stable_leader() {
    let mut net = three_with_leader();
    let min = config(1, &[1, 2, 3]).election_timeout_min_ticks;
    net.cut(3, 1);
    net.cut(3, 2);
    for _ in 0..3 * min {
        net.tick_all();
        net.settle();
    }
    let pre_votes: Vec<&Envelope> = net
        .dropped
        .iter()
        .filter(|e| e.from == id(3) && matches!(e.message, RaftMessage::VoteRequest { .. }))
        .collect();
    assert!(!pre_votes.is_empty(), "the cut-off node's timer fired");
    assert!(
        pre_votes.iter().all(|e| e.message == pre_vote_req(2, 1, 1)),
        "only pre-votes for term 2, never a real election: {pre_votes:?}"
    );
    assert_eq!(net.sm(3).term(), 1, "pre-votes never bump the term");
    assert_eq!(net.sm(3).role(), Role::PreCandidate);

    // Rejoin; the node's timer fires again before the leader's next heartbeat reaches it.
    net.heal();
    let since = net.delivered.len();
    for _ in 0..2 * min {
        net.tick(3);
        net.settle();
        if net.delivered[since..].iter().any(|e| e.from == id(3)) {
            break;
        }
    }
    let requests = net.delivered_since(since, |e| e.from == id(3));
    assert_eq!(requests.len(), 2, "one pre-vote to each peer: {requests:?}");
    assert!(requests.iter().all(|e| e.message == pre_vote_req(2, 1, 1)));
    let answers = net.delivered_since(since, |e| e.to == id(3));
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers.iter().all(|e| e.message == vote_resp(1, false, true)), "both reject: {answers:?}");

    assert!(net.sm(1).is_leader());
    for n in [1, 2, 3] {
        assert_eq!(net.sm(n).term(), 1, "node {n} kept term 1");
    }
    assert_eq!(net.sm(2).voted_for(), Some(id(1)));
    assert_eq!(net.sm(3).role(), Role::Follower, "a quorum of rejections ends the pre-vote round");

    net.tick(1);
    net.settle();
    assert_eq!(net.sm(3).leader(), Some(id(1)), "the next heartbeat reattaches the node");
}

/// §5.2 (Figure 2, RequestVote receiver): at most one vote per term, first come first served. A
/// repeated request from the same candidate is granted again (idempotent, e.g. after a lost reply).
#[test]
fn one_vote_per_term_and_repeat_requests_from_the_same_candidate_are_granted() {
    let mut n1 = machine(1, &[1, 2, 3]);
    n1.step(env(2, 1, vote_req(1, 0, 0))).unwrap();
    assert_eq!(drain(&mut n1).to(2), vec![&vote_resp(1, true, false)]);
    assert_eq!(n1.voted_for(), Some(id(2)));

    n1.step(env(3, 1, vote_req(1, 0, 0))).unwrap();
    assert_eq!(drain(&mut n1).to(3), vec![&vote_resp(1, false, false)], "already voted for 2 in term 1");
    assert_eq!(n1.voted_for(), Some(id(2)));

    n1.step(env(2, 1, vote_req(1, 0, 0))).unwrap();
    assert_eq!(drain(&mut n1).to(2), vec![&vote_resp(1, true, false)], "same candidate: granted again");
    assert_eq!((n1.term(), n1.voted_for()), (1, Some(id(2))));

    // Sanity check of the test: the planted double-vote bug grants 3 as well.
    let mut cfg = config(1, &[1, 2, 3]);
    cfg.canary = CanaryBugs { grant_two_votes_per_term: true, ..CanaryBugs::default() };
    let mut buggy = PartitionStateMachine::new(cfg).unwrap();
    buggy.step(env(2, 1, vote_req(1, 0, 0))).unwrap();
    drain(&mut buggy);
    buggy.step(env(3, 1, vote_req(1, 0, 0))).unwrap();
    assert_eq!(drain(&mut buggy).to(3), vec![&vote_resp(1, true, false)]);
}

/// §5.4.1 (election restriction): a vote is granted only to a candidate whose log is at least as
/// up-to-date: compare last terms first, then last indexes. Pre-votes apply the same check.
#[test]
fn vote_requires_a_log_at_least_as_up_to_date() {
    // Log: 1@1, 2@2, 3@2.
    let mut n1 = restored(config(1, &[1, 2, 3]), hs(2, None, 0), log_of(&[1, 2, 2]));

    n1.step(env(2, 1, vote_req(3, 2, 2))).unwrap();
    assert_eq!(drain(&mut n1).to(2), vec![&vote_resp(3, false, false)], "same last term, shorter: rejected");
    n1.step(env(3, 1, vote_req(3, 10, 1))).unwrap();
    assert_eq!(drain(&mut n1).to(3), vec![&vote_resp(3, false, false)], "longer but older last term: rejected");
    assert_eq!((n1.term(), n1.voted_for()), (3, None), "term adopted, no vote cast");

    n1.step(env(2, 1, pre_vote_req(4, 2, 2))).unwrap();
    assert_eq!(drain(&mut n1).to(2), vec![&vote_resp(3, false, true)], "pre-vote: same freshness check");

    n1.step(env(3, 1, vote_req(4, 1, 3))).unwrap();
    assert_eq!(drain(&mut n1).to(3), vec![&vote_resp(4, true, false)], "newer last term, though shorter: granted");
    assert_eq!(n1.voted_for(), Some(id(3)));

    n1.step(env(2, 1, vote_req(5, 3, 2))).unwrap();
    assert_eq!(drain(&mut n1).to(2), vec![&vote_resp(5, true, false)], "identical log: granted");
    assert_eq!(n1.last_index(), 3, "votes never touch the log");
}

/// §5.1 (Figure 2, rules for all servers): a message with a higher term makes any replica adopt the
/// term, clear its vote and become follower - whatever the message type.
#[test]
fn leader_steps_down_on_a_higher_term_in_any_message() {
    let cases: Vec<(&str, RaftMessage, Option<NodeId>)> = vec![
        ("append request", append_req(5, 0, 0, vec![], 0), Some(id(2))),
        (
            "append response",
            RaftMessage::AppendResponse { term: 5, prev_log_index: 1, result: AppendResult::StaleTerm },
            None,
        ),
        ("vote response", vote_resp(5, false, false), None),
    ];
    for (name, message, leader) in cases {
        let mut net = three_with_leader();
        assert_eq!(net.sm(1).voted_for(), Some(id(1)));
        let n1 = net.sm_mut(1);
        n1.step(env(2, 1, message)).unwrap();
        assert_eq!(n1.role(), Role::Follower, "{name}");
        assert_eq!(n1.term(), 5, "{name}");
        assert_eq!(n1.voted_for(), None, "{name}: the vote of term 1 does not carry over (and 2's log is stale)");
        assert_eq!(n1.leader(), leader, "{name}");
        assert!(!n1.is_leader(), "{name}");
        let turn = drain(n1);
        let hard = turn.writes.iter().filter_map(|w| w.write.hard_state).next_back();
        assert_eq!(hard.map(|h| (h.term, h.voted_for)), Some((5, None)), "{name}: new term persisted");
        assert!(turn.leader_changes.iter().any(|c| c.term == 5 && c.leader == leader), "{name}: {turn:?}");
        assert_eq!(n1.propose(auto(b"x"), 1), Err(ProposeError::NotLeader { leader }), "{name}");
    }
}

/// Thesis §4.2.3 (with check-quorum): a real vote request of a higher term reaching a live leader,
/// or a follower that heard from it within the minimum election timeout, is ignored — term
/// included — so a removed or rejoining voter cannot depose a healthy leader. Without
/// check-quorum, §5.1 applies: the higher term wins. A follower that has not heard from a leader
/// for an election timeout adopts the term either way.
#[test]
fn a_live_leader_and_its_followers_ignore_higher_term_vote_requests_with_check_quorum() {
    for check_quorum in [true, false] {
        let mut cfg = config(1, &[1, 2, 3]);
        cfg.check_quorum = check_quorum;
        let mut leader = PartitionStateMachine::new(cfg).expect("config");
        make_leader_by_hand(&mut leader);
        leader.step(env(3, 1, vote_req(5, 9, 9))).unwrap();
        let expected = if check_quorum { (Role::Leader, 1) } else { (Role::Follower, 5) };
        assert_eq!((leader.role(), leader.term()), expected, "leader, check-quorum {check_quorum}");

        let mut cfg = config(2, &[1, 2, 3]);
        cfg.check_quorum = check_quorum;
        let mut follower = PartitionStateMachine::new(cfg).expect("config");
        follower.step(env(1, 2, append_req(1, 0, 0, vec![], 0))).unwrap();
        follower.step(env(3, 2, vote_req(5, 9, 9))).unwrap();
        let expected = if check_quorum { 1 } else { 5 };
        assert_eq!(follower.term(), expected, "follower, check-quorum {check_quorum}");
        assert_eq!(follower.voted_for(), (!check_quorum).then_some(id(3)));
        // Silence for the minimum election timeout: the leader is no longer presumed alive.
        let mut silent = machine(2, &[1, 2, 3]);
        silent.step(env(1, 2, append_req(1, 0, 0, vec![], 0))).unwrap();
        for _ in 0..silent_ticks() {
            silent.tick();
        }
        silent.step(env(3, 2, vote_req(5, 9, 9))).unwrap();
        assert_eq!((silent.term(), silent.voted_for()), (5, Some(id(3))));
    }
}

/// The minimum election timeout of [`config`], in ticks.
fn silent_ticks() -> u32 {
    config(1, &[1]).election_timeout_min_ticks
}

/// §5.2: a candidate that receives an append from a leader of its own term recognises it and
/// returns to follower (keeping its own vote of that term).
#[test]
fn candidate_yields_to_a_leader_of_its_term() {
    let mut n1 = machine(1, &[1, 2, 3]);
    tick_until_timeout(&mut n1);
    n1.step(env(2, 1, vote_resp(1, true, true))).unwrap();
    assert_eq!((n1.role(), n1.term()), (Role::Candidate, 1));
    drain(&mut n1);
    n1.step(env(2, 1, append_req(1, 0, 0, vec![], 0))).unwrap();
    assert_eq!((n1.role(), n1.term(), n1.leader(), n1.voted_for()), (Role::Follower, 1, Some(id(2)), Some(id(1))));
}

/// Figure 2 ("persistent state ... updated on stable storage before responding to RPCs"): a vote
/// grant, a candidate's vote requests and a follower's append acknowledgement leave only after the
/// write carrying the vote / the entries is reported durable.
#[test]
fn vote_grants_and_append_acks_wait_for_their_write() {
    // Vote grant.
    let mut n1 = machine(1, &[1, 2, 3]);
    n1.step(env(2, 1, vote_req(1, 0, 0))).unwrap();
    let ready = n1.ready();
    assert!(ready.messages.is_empty(), "grant held until the vote is durable: {:?}", ready.messages);
    let write = ready.write.expect("the vote must be written");
    assert_eq!(write.write.hard_state, Some(hs(1, Some(2), 0)));
    assert!(n1.ready().messages.is_empty(), "still held while the write is in flight");
    n1.on_write_complete(write.id);
    assert_eq!(to_node(&n1.ready().messages, 2), vec![&vote_resp(1, true, false)]);

    // A candidate's own vote and term are durable before it asks for votes.
    let mut n2 = machine(2, &[1, 2, 3]);
    tick_until_timeout(&mut n2);
    drain(&mut n2);
    n2.step(env(1, 2, vote_resp(1, true, true))).unwrap();
    let ready = n2.ready();
    assert!(ready.messages.is_empty(), "vote requests held: {:?}", ready.messages);
    let write = ready.write.expect("term and self-vote written");
    assert_eq!(write.write.hard_state, Some(hs(1, Some(2), 0)));
    n2.on_write_complete(write.id);
    let ready = n2.ready();
    assert_eq!(to_node(&ready.messages, 1), vec![&vote_req(1, 0, 0)]);
    assert_eq!(to_node(&ready.messages, 3), vec![&vote_req(1, 0, 0)]);

    // A follower's success acknowledgement (and its deliveries) wait for its entries' write.
    let mut n3 = machine(3, &[1, 2, 3]);
    n3.step(env(1, 3, append_req(1, 0, 0, vec![app(1, 1), app(2, 1)], 2))).unwrap();
    let ready = n3.ready();
    assert!(ready.messages.is_empty(), "ack held: {:?}", ready.messages);
    assert!(ready.deliveries.is_empty(), "entries not yet durable are not applied");
    let write = ready.write.expect("entries written");
    assert_eq!(write.write.entries, vec![app(1, 1), app(2, 1)]);
    assert_eq!(write.write.hard_state.map(|h| h.term), Some(1));
    n3.on_write_complete(write.id);
    let ready = n3.ready();
    assert_eq!(to_node(&ready.messages, 1), vec![&success(1, 0, 2)]);
    assert_eq!(ready.deliveries.iter().map(|d| d.entry.index).collect::<Vec<_>>(), vec![1, 2]);
}

// ===== replication =============================================================================

/// §5.3 (Figure 2, AppendEntries receiver step 2): an append is accepted only if the follower has
/// an entry at prev_log_index with prev_log_term; otherwise it answers Conflict with a hint (first
/// index of the conflicting term run, or last+1 when its log is too short) and changes nothing.
#[test]
fn append_is_anchored_on_prev_index_and_term_and_conflicts_carry_a_hint() {
    // Log 1@1, 2@1, 3@2, 4@2.
    let mut n2 = restored(config(2, &[1, 2, 3]), hs(2, None, 1), log_of(&[1, 1, 2, 2]));
    n2.step(env(1, 2, append_req(3, 4, 3, vec![app(5, 3)], 4))).unwrap();
    let mismatch = conflict(3, 4, 3, Some(2));
    assert_eq!(drain(&mut n2).to(1), vec![&mismatch], "term mismatch: skip the whole term-2 run");
    assert_eq!((n2.last_index(), n2.last_term(), n2.commit_index()), (4, 2, 1), "log untouched");

    n2.step(env(1, 2, append_req(3, 7, 3, vec![app(8, 3)], 4))).unwrap();
    let short = conflict(3, 7, 5, None);
    assert_eq!(drain(&mut n2).to(1), vec![&short], "log too short: hint last + 1");
    assert_eq!(n2.last_index(), 4);

    n2.step(env(1, 2, append_req(3, 3, 3, vec![app(4, 3)], 4))).unwrap();
    let inside = conflict(3, 3, 3, Some(2));
    assert_eq!(drain(&mut n2).to(1), vec![&inside], "anchor inside the log: the term-2 run");

    n2.step(env(1, 2, append_req(3, 2, 1, vec![app(3, 2), app(4, 2), app(5, 3)], 4))).unwrap();
    assert_eq!(drain(&mut n2).to(1), vec![&success(3, 2, 5)], "matching anchor: accepted");
    assert_eq!((n2.last_index(), n2.commit_index()), (5, 4));

    // The hint never reaches down into the committed prefix, even when the run does.
    let mut n3 = restored(config(3, &[1, 2, 3]), hs(2, None, 2), log_of(&[2, 2, 2, 2]));
    n3.step(env(1, 3, append_req(3, 4, 3, vec![], 4))).unwrap();
    let floor = conflict(3, 4, 3, Some(2));
    assert_eq!(drain(&mut n3).to(1), vec![&floor]);
}

/// Leader Completeness, checked by followers: an anchor that contradicts a committed entry (a
/// safety violation elsewhere) halts the follower instead of being answered.
#[test]
fn an_anchor_contradicting_a_committed_entry_halts_the_follower() {
    let mut n2 = restored(config(2, &[1, 2, 3]), hs(2, None, 3), log_of(&[1, 1, 2]));
    drain(&mut n2);
    n2.step(env(1, 2, append_req(3, 2, 2, vec![], 3))).unwrap();
    let turn = drain(&mut n2);
    assert_eq!(
        turn.fatal,
        Some(FatalError::CommittedEntryConflict { index: 2, commit: 3, local_term: 1, incoming_term: 2 })
    );
}

/// Answers count only in the term they answer: a leader re-elected in a later term ignores
/// acknowledgements of its earlier term (its log may have been truncated in between).
#[test]
fn a_leader_ignores_acknowledgements_of_an_earlier_term() {
    let mut n1 = restored(config(1, &[1, 2, 3]), hs(1, None, 0), log_of(&[1]));
    drain(&mut n1);
    make_leader_by_hand(&mut n1);
    assert_eq!(n1.term(), 2);
    n1.step(env(2, 1, success(1, 0, 1))).unwrap();
    assert_eq!(n1.progress(id(2)).map(|p| p.match_index), Some(0), "a term-1 answer changes nothing");
    n1.step(env(2, 1, success(2, 0, 1))).unwrap();
    assert_eq!(n1.progress(id(2)).map(|p| p.match_index), Some(1));
}

/// §5.3 (end of section, the conflict-hint optimisation): the leader uses the follower's hint to
/// skip a whole conflicting term per round trip instead of one index at a time.
#[test]
fn leader_backs_off_a_whole_term_using_the_conflict_hint() {
    let voters = [1, 2, 3];
    let leader_log = log_of(&[1, 1, 3, 3, 3]);
    let follower_log = log_of(&[1, 1, 2, 2, 2]);
    let mut net = Net::restored(vec![
        (config(1, &voters), hs(3, None, 2), leader_log.clone()),
        (config(2, &voters), hs(3, None, 2), follower_log),
        (config(3, &voters), hs(3, None, 2), leader_log),
    ]);
    elect(&mut net, 1);
    assert_eq!(net.sm(1).term(), 4);

    let to2 = appends(net.delivered.iter().filter(|e| e.from == id(1) && e.to == id(2)).map(|e| &e.message));
    let prevs: Vec<(LogIndex, Term)> = to2.iter().map(|a| (a.prev_log_index, a.prev_log_term)).collect();
    assert_eq!(prevs, vec![(5, 3), (2, 1)], "one probe per conflicting term, not per index");
    let hint = net
        .delivered
        .iter()
        .find(|e| e.from == id(2) && matches!(e.message, RaftMessage::AppendResponse { .. }))
        .map(|e| e.message.clone());
    assert_eq!(hint, Some(conflict(4, 5, 3, Some(2))));
    let follower: Vec<Term> = (1..=6).map(|i| net.sm(2).term_at(i).unwrap()).collect();
    assert_eq!(follower, vec![1, 1, 3, 3, 3, 4], "the uncommitted term-2 suffix was replaced");

    // A follower whose log is too short: the leader jumps straight to its last index.
    let mut net = Net::restored(vec![
        (config(1, &voters), hs(1, None, 1), log_of(&[1, 1, 1, 1, 1])),
        (config(2, &voters), hs(1, None, 1), log_of(&[1])),
        (config(3, &voters), hs(1, None, 1), log_of(&[1, 1, 1, 1, 1])),
    ]);
    elect(&mut net, 1);
    let to2 = appends(net.delivered.iter().filter(|e| e.from == id(1) && e.to == id(2)).map(|e| &e.message));
    let prevs: Vec<LogIndex> = to2.iter().map(|a| a.prev_log_index).collect();
    assert_eq!(prevs, vec![5, 1], "hint last+1 = 2 => next probe anchored at 1");
    assert_eq!(to2[1].entries.len(), 5, "entries 2..=6 in one append");
    assert_eq!(net.sm(2).last_index(), 6);
}

/// §5.3 (Figure 2, AppendEntries receiver step 3): an existing entry that conflicts with a new one
/// (same index, different term) is deleted with everything after it - only in the uncommitted
/// suffix - and the WAL write carries the truncation.
#[test]
fn conflicting_uncommitted_suffix_is_truncated_and_replaced() {
    // 1@1, 2@1, 3@2, 4@2 with commit 2.
    let mut n2 = restored(config(2, &[1, 2, 3]), hs(2, None, 2), log_of(&[1, 1, 2, 2]));
    n2.step(env(1, 2, append_req(3, 2, 1, vec![app(3, 3)], 2))).unwrap();
    let ready = n2.ready();
    assert!(ready.messages.is_empty(), "ack waits for the truncation to be durable");
    let write = ready.write.expect("a write");
    assert_eq!(write.write.truncate_from, Some(3));
    assert_eq!(write.write.entries, vec![app(3, 3)]);
    assert_eq!(write.write.hard_state.map(|h| h.term), Some(3));
    assert_eq!((n2.last_index(), n2.term_at(3), n2.entry(4)), (3, Some(3), None));
    n2.on_write_complete(write.id);
    assert_eq!(to_node(&n2.ready().messages, 1), vec![&success(3, 2, 3)]);

    // Entries that already match are kept (no truncation for a duplicate append).
    n2.step(env(1, 2, append_req(3, 2, 1, vec![app(3, 3)], 2))).unwrap();
    let turn = drain(&mut n2);
    assert!(turn.writes.iter().all(|w| w.write.truncate_from.is_none() && w.write.entries.is_empty()));
    assert_eq!(turn.to(1), vec![&success(3, 2, 3)]);

    // Sanity check of the test: the planted bug overwrites in place and keeps the stale 4@2.
    let mut cfg = config(2, &[1, 2, 3]);
    cfg.canary = CanaryBugs { skip_conflict_truncation: true, ..CanaryBugs::default() };
    let mut buggy = restored(cfg, hs(2, None, 2), log_of(&[1, 1, 2, 2]));
    buggy.step(env(1, 2, append_req(3, 2, 1, vec![app(3, 3)], 2))).unwrap();
    drain(&mut buggy);
    assert_eq!((buggy.last_index(), buggy.term_at(4)), (4, Some(2)));
}

/// §5.4 (State Machine Safety) and Figure 2 step 3: entries at or below the commit index are never
/// rewritten, whatever a (buggy) leader sends. Both old terms stay and nothing is truncated.
#[test]
fn committed_entries_are_never_rewritten_by_a_conflicting_append() {
    let mut n2 = restored(config(2, &[1, 2, 3]), hs(2, None, 3), log_of(&[1, 1, 2]));
    drain(&mut n2);
    // Claims 3@3, where the follower has committed 3@2.
    let _ = n2.step(env(1, 2, append_req(3, 1, 1, vec![app(2, 1), app(3, 3)], 3)));
    let turn = drain(&mut n2);
    assert!(turn.writes.iter().all(|w| w.write.truncate_from.is_none() && w.write.entries.is_empty()), "{turn:?}");
    assert_eq!(n2.term_at(3), Some(2), "committed entry kept");
    assert_eq!(n2.commit_index(), 3);
}

/// §5.4 (State Machine Safety): a leader that tries to replace an entry at or below the follower's
/// commit index reveals a safety violation; the follower must halt (FatalError::CommittedEntryConflict)
/// rather than acknowledge a log that does not match, and refuse further input.
#[test]
fn conflict_at_or_below_commit_halts_the_follower() {
    let mut n2 = restored(config(2, &[1, 2, 3]), hs(2, None, 3), log_of(&[1, 1, 2]));
    drain(&mut n2);
    n2.step(env(1, 2, append_req(3, 1, 1, vec![app(2, 1), app(3, 3)], 3))).unwrap();
    let turn = drain(&mut n2);
    assert_eq!(
        turn.fatal,
        Some(FatalError::CommittedEntryConflict { index: 3, commit: 3, local_term: 2, incoming_term: 3 }),
        "the follower answered {:?}",
        turn.messages
    );
    assert!(
        !turn
            .messages
            .iter()
            .any(|e| matches!(e.message, RaftMessage::AppendResponse { result: AppendResult::Success { .. }, .. })),
        "never acknowledge a mismatching log"
    );
    assert_eq!(n2.term_at(3), Some(2), "never rewritten");
    assert!(matches!(n2.step(env(1, 2, append_req(3, 3, 3, vec![], 3))), Err(StepError::Halted(_))));
}

/// A halted replica emits nothing more: not even the acknowledgements it held for a write that
/// completes after the halt. Its accessors report the halt.
#[test]
fn a_halted_replica_releases_nothing_when_its_writes_complete() {
    let mut n2 = restored(config(2, &[1, 2, 3]), hs(2, None, 3), log_of(&[1, 1, 2]));
    drain(&mut n2);
    assert_eq!((n2.partition(), n2.halted()), (P, None));
    n2.step(env(1, 2, append_req(2, 3, 2, vec![app(4, 2)], 3))).unwrap();
    let held = n2.ready();
    let write = held.write.expect("entry 4 is written");
    assert!(to_node(&held.messages, 1).is_empty(), "the acknowledgement waits for the write");
    n2.step(env(1, 2, append_req(3, 1, 1, vec![app(2, 1), app(3, 3)], 3))).unwrap();
    assert!(n2.ready().fatal.is_some());
    assert!(n2.halted().is_some());
    n2.on_write_complete(write.id);
    assert!(n2.ready().messages.is_empty(), "a halted replica acknowledges nothing");
}

/// A write is issued only for something to persist: a message held for a write in flight does not
/// force another (empty) write, and a completion of an earlier id than the last one completed
/// changes nothing.
#[test]
fn no_empty_writes_and_no_backwards_completions() {
    let mut n2 = machine(2, &[1, 2, 3]);
    n2.step(env(1, 2, append_req(1, 0, 0, vec![app(1, 1)], 0))).unwrap();
    let first = n2.ready().write.expect("entry 1 and term 1");
    n2.step(env(1, 2, append_req(1, 1, 1, vec![app(2, 1)], 0))).unwrap();
    let second = n2.ready().write.expect("entry 2");
    assert!(n2.ready().write.is_none(), "held acknowledgements force no empty write");
    n2.on_write_complete(second.id);
    let acks = n2.ready().messages;
    assert_eq!(to_node(&acks, 1).len(), 2, "both acknowledgements released");
    assert_eq!(n2.stable_index(), 2);
    n2.on_write_complete(first.id);
    assert_eq!(n2.stable_index(), 2);
    n2.step(env(1, 2, append_req(1, 2, 1, vec![], 0))).unwrap();
    let turn = n2.ready();
    assert!(turn.write.is_none(), "nothing new to persist");
    assert_eq!(to_node(&turn.messages, 1).len(), 1, "a completed write is never waited for again");
}

/// §5.4.2 / Figure 8: a leader never commits an entry of a previous term by counting replicas; it
/// commits it indirectly once an entry of its own term (here its barrier) is on a majority.
#[test]
fn previous_term_entry_is_not_committed_by_counting_replicas() {
    fn leader_in_term_4(canary: bool) -> PartitionStateMachine {
        let mut cfg = config(1, &[1, 2, 3]);
        cfg.canary = CanaryBugs { commit_previous_term_by_count: canary, ..CanaryBugs::default() };
        // 1@1 committed, 2@2 not: the term-2 leader crashed before committing it.
        let mut n1 = restored(cfg, hs(3, None, 1), log_of(&[1, 2]));
        make_leader_by_hand(&mut n1);
        drain(&mut n1); // barrier 3@4 durable on the leader
        assert_eq!((n1.last_index(), n1.last_term(), n1.stable_index()), (3, 4, 3));
        n1
    }

    let mut n1 = leader_in_term_4(false);
    // Both followers store 2@2 (the barrier append is not acknowledged yet).
    n1.step(env(2, 1, success(4, 2, 2))).unwrap();
    n1.step(env(3, 1, success(4, 2, 2))).unwrap();
    assert_eq!(n1.commit_index(), 1, "2@2 is on all three replicas but is not of the current term");
    assert!(drain(&mut n1).deliveries.is_empty());
    assert!(!n1.is_leader());

    n1.step(env(2, 1, success(4, 2, 3))).unwrap();
    assert_eq!(n1.commit_index(), 3, "the term-4 barrier on a majority commits everything before it");
    assert_eq!(drain(&mut n1).delivered_indexes(), vec![2]);
    assert!(n1.is_leader());

    // Sanity check of the test: the planted bug commits 2@2 by counting.
    let mut buggy = leader_in_term_4(true);
    buggy.step(env(2, 1, success(4, 2, 2))).unwrap();
    assert_eq!(buggy.commit_index(), 2);
}

/// §5.3 + thesis §10.2.1 (leader writes its log in parallel with replication): the leader counts
/// itself toward the quorum only once its own write is durable.
#[test]
fn leader_counts_itself_only_after_its_own_write_is_durable() {
    let mut net = three_with_leader();
    let accepted = net.sm_mut(1).propose(auto(b"x"), 1).unwrap();
    let index = accepted.last_index;
    let ready = net.sm_mut(1).ready();
    let write = ready.write.expect("leader writes the entry");
    assert_eq!(write.write.entries.last().map(|e| e.index), Some(index));
    let to2: Vec<Envelope> = ready.messages.iter().filter(|e| e.to == id(2)).cloned().collect();
    assert_eq!(appends(to2.iter().map(|e| &e.message)).len(), 1, "replication does not wait for the leader's write");

    for e in to2 {
        net.deliver(e);
    }
    let acks = net.flush(2).messages;
    assert_eq!(to_node(&acks, 1), vec![&success(1, 1, index)]);
    for e in acks {
        net.deliver(e);
    }
    assert_eq!(net.sm(1).commit_index(), index - 1, "one follower + a non-durable leader is not a quorum of 3");
    let ready = net.sm_mut(1).ready();
    assert!(ready.deliveries.is_empty() && ready.replies.is_empty());

    net.sm_mut(1).on_write_complete(write.id);
    assert_eq!(net.sm(1).commit_index(), index);
    let ready = net.sm_mut(1).ready();
    assert_eq!(ready.deliveries.iter().map(|d| d.entry.index).collect::<Vec<_>>(), vec![index]);
    assert_eq!(
        ready.replies,
        vec![ClientReply::Proposal {
            ticket: accepted.ticket,
            result: Ok(ProposalCommitted { ticket: accepted.ticket, first_index: index, last_index: index })
        }]
    );
}

/// §8 (a new leader commits a blank no-op entry at the start of its term): the leader appends a
/// barrier in its term and only becomes usable (is_leader, proposals, leader_change naming itself)
/// once that barrier is committed and applied. The barrier is never delivered.
#[test]
fn new_leader_is_pending_until_its_barrier_is_applied() {
    let mut n1 = machine(1, &[1, 2, 3]);
    let mut seen = make_leader_by_hand(&mut n1);
    assert_eq!((n1.role(), n1.leader()), (Role::Leader, Some(id(1))));
    assert!(!n1.is_leader());
    assert_eq!(n1.propose(auto(b"x"), 1), Err(ProposeError::LeadershipPending));
    let barrier = n1.entry(1).cloned().expect("barrier");
    assert_eq!((barrier.index, barrier.term, barrier.kind), (1, 1, EntryKind::Barrier));

    let ready = n1.ready();
    let write = ready.write.clone().expect("barrier written");
    assert_eq!(write.write.entries, vec![barrier.clone()]);
    for peer in [2, 3] {
        let sent = appends(to_node(&ready.messages, peer));
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].prev_log_index, sent[0].entries.clone()), (0, vec![barrier.clone()]));
    }
    seen.absorb(ready);
    n1.on_write_complete(write.id);
    seen.extend(&drain(&mut n1));
    assert!(!n1.is_leader(), "durable on the leader alone is not committed");
    assert_eq!(n1.propose(auto(b"x"), 1), Err(ProposeError::LeadershipPending));
    assert!(seen.leader_changes.iter().all(|c| c.leader != Some(id(1))), "{:?}", seen.leader_changes);

    n1.step(env(2, 1, success(1, 0, 1))).unwrap();
    assert_eq!(n1.commit_index(), 1);
    let turn = drain(&mut n1);
    assert_eq!(turn.leader_changes, vec![LeaderChange { term: 1, leader: Some(id(1)) }]);
    assert!(turn.deliveries.is_empty(), "barriers are not delivered");
    assert!(n1.is_leader());
    assert!(n1.propose(auto(b"x"), 1).is_ok());
}

/// §5.3 with durability: after a conflict truncates its log, a follower counts as durable only what
/// precedes the conflict until the replacement is written (it never delivers an entry that is not
/// durable), and a truncation of entries that were never written is not sent to the WAL.
#[test]
fn a_truncated_suffix_is_not_durable_until_its_replacement_is_written() {
    let mut n2 = restored(config(2, &[1, 2, 3]), hs(2, None, 2), log_of(&[1, 1, 2, 2, 2]));
    drain(&mut n2);
    assert_eq!(n2.stable_index(), 5);
    n2.step(env(1, 2, append_req(3, 2, 1, vec![app(3, 3), app(4, 3)], 4))).unwrap();
    assert_eq!(n2.stable_index(), 2, "entries from the conflict on are not durable");
    let turn = n2.ready();
    assert!(turn.deliveries.is_empty(), "committed but not durable: not delivered yet");
    let write = turn.write.expect("the replacement is written");
    assert_eq!(write.write.truncate_from, Some(3));
    n2.on_write_complete(write.id);
    let turn = drain(&mut n2);
    assert_eq!(turn.delivered_indexes(), vec![3, 4]);

    // Entries 3 and 4 durable, 5 and 6 only in memory: replacing 5.. truncates nothing stored.
    n2.step(env(1, 2, append_req(3, 4, 3, vec![app(5, 3), app(6, 3)], 4))).unwrap();
    n2.step(env(1, 2, append_req(4, 4, 3, vec![app(5, 4)], 4))).unwrap();
    let write = n2.ready().write.expect("entry 5 of term 4");
    assert_eq!(write.write.truncate_from, None, "nothing from 5 on was ever written");
    assert_eq!(write.write.entries.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(5, 4)]);
}

/// A deposed leader's clients learn that their proposal was superseded as soon as a new leader's
/// entries truncate it, not only once something else commits at that index.
#[test]
fn waiters_of_truncated_entries_are_answered_at_the_truncation() {
    let mut net = three_with_leader();
    net.cut(1, 2);
    net.cut(1, 3);
    let lost = net.sm_mut(1).propose(auto(b"lost"), 1).unwrap();
    net.flush(1);
    let n1 = net.sm_mut(1);
    let term = n1.term() + 1;
    let barrier = protocol(lost.first_index, term, EntryKind::Barrier, HlcTimestamp::ZERO);
    n1.step(env(2, 1, append_req(term, lost.first_index - 1, 1, vec![barrier], 0))).unwrap();
    assert_eq!(n1.role(), Role::Follower);
    let turn = n1.ready();
    let index = lost.first_index;
    let superseded = ClientReply::Proposal { ticket: lost.ticket, result: Err(ProposeError::Superseded { index }) };
    assert!(turn.replies.contains(&superseded), "{:?}", turn.replies);
}

/// The barrier must be applied *locally*: followers can commit it before the leader's own write
/// is durable; applying the earlier entries it commits does not publish the leader.
#[test]
fn a_leader_is_published_only_once_its_own_barrier_is_applied() {
    let mut n1 = restored(config(1, &[1, 2, 3]), hs(1, None, 0), log_of(&[1, 1]));
    drain(&mut n1);
    make_leader_by_hand(&mut n1);
    let barrier = n1.last_index();
    let write = n1.ready().write.expect("barrier written");
    for peer in [2, 3] {
        n1.step(env(peer, 1, success(2, 0, barrier))).unwrap();
    }
    assert_eq!(n1.commit_index(), barrier, "committed by the followers");
    let turn = n1.ready();
    assert_eq!(turn.deliveries.len(), 2, "the entries before the barrier are applied");
    assert!(!n1.is_leader(), "the barrier is not durable here yet");
    assert_eq!(n1.propose(auto(b"x"), 1), Err(ProposeError::LeadershipPending));
    n1.on_write_complete(write.id);
    drain(&mut n1);
    assert!(n1.is_leader());
}

/// §5.3 + thesis §10.2 (batching): proposals made between two `ready()` calls go out to each follower
/// as one append message.
#[test]
fn proposals_between_two_readies_are_batched_into_one_append() {
    let mut net = three_with_leader();
    assert_eq!(net.sm(1).progress(id(2)).map(|p| p.state), Some(ProgressState::Replicate));
    let first = net.sm(1).last_index() + 1;
    for i in 0..5u8 {
        net.sm_mut(1).propose(auto(&[i]), 1).unwrap();
    }
    let ready = net.sm_mut(1).ready();
    for peer in [2, 3] {
        let sent = appends(to_node(&ready.messages, peer));
        assert_eq!(sent.len(), 1, "one append to {peer}: {sent:?}");
        assert_eq!(sent[0].prev_log_index, first - 1);
        let indexes: Vec<LogIndex> = sent[0].entries.iter().map(|e| e.index).collect();
        assert_eq!(indexes, (first..first + 5).collect::<Vec<_>>());
    }
    assert_eq!(ready.write.map(|w| w.write.entries.len()), Some(5), "and one WAL write");
}

/// Thesis §10.2.2 (pipelining): in Replicate state the leader keeps several appends in flight to a
/// follower, but never more than `max_inflight_appends` unacknowledged ones.
#[test]
fn pipelined_appends_are_bounded_by_the_inflight_window() {
    let voters = [1, 2, 3];
    let mut net = Net::fresh_with(&voters, |c| {
        c.max_inflight_appends = 2;
        c.max_entries_per_append = 1;
    });
    elect(&mut net, 1);
    assert_eq!(net.sm(1).progress(id(2)).map(|p| p.state), Some(ProgressState::Replicate));
    let base = net.sm(1).last_index();
    for i in 0..5u8 {
        net.sm_mut(1).propose(auto(&[i]), 1).unwrap();
    }

    // Only node 2 gets its appends; node 3's are dropped.
    net.isolate(3);
    let mut in_flight: VecDeque<Envelope> = VecDeque::new();
    let mut max_in_flight = 0;
    let mut sent_indexes = Vec::new();
    let mut take = |turn: Turn, in_flight: &mut VecDeque<Envelope>| {
        for e in turn.messages.into_iter().filter(|e| e.to == id(2)) {
            if let RaftMessage::AppendRequest { entries, .. } = &e.message {
                assert_eq!(entries.len(), 1, "max_entries_per_append = 1");
                sent_indexes.push(entries[0].index);
                in_flight.push_back(e);
            }
        }
    };
    let turn = net.flush(1);
    take(turn, &mut in_flight);
    assert_eq!(in_flight.len(), 2, "window of 2 filled at once");
    assert!(net.flush(1).messages.iter().all(|e| e.to != id(2)), "nothing more without acks");
    while let Some(request) = in_flight.pop_front() {
        net.deliver(request);
        for ack in net.flush(2).messages {
            net.deliver(ack);
        }
        let turn = net.flush(1);
        take(turn, &mut in_flight);
        max_in_flight = max_in_flight.max(in_flight.len());
        assert!(in_flight.len() <= 2, "{} appends in flight", in_flight.len());
    }
    assert_eq!(max_in_flight, 2);
    assert_eq!(sent_indexes, (base + 1..=base + 5).collect::<Vec<_>>(), "each entry sent once, in order");
    assert_eq!(net.sm(2).last_index(), base + 5);
    assert_eq!(net.sm(1).commit_index(), base + 5);
}

/// §5.3 (the leader brings a lagging follower's log up to date): entries no longer in the leader's
/// memory are read back from the WAL (a `ReadRequest`), then sent anchored on the right prev term.
#[test]
fn lagging_follower_is_caught_up_from_the_wal() {
    let voters = [1, 2, 3];
    let start = hs(1, None, 1);
    let mut net = Net::restored(
        voters
            .iter()
            .map(|&n| {
                let mut c = config(n, &voters);
                c.log_cache_entries = 0;
                (c, start, log_of(&[1]))
            })
            .collect(),
    );
    net.isolate(3);
    elect(&mut net, 1);
    assert_eq!(net.sm(1).term(), 2);
    let p = net.sm_mut(1).propose(
        Proposal {
            log_type: "t".into(),
            payloads: vec![b"a".to_vec().into(), b"b".to_vec().into(), b"c".to_vec().into()],
            auto_commit: true,
        },
        1,
    );
    assert_eq!(p.map(|a| (a.first_index, a.last_index)), Ok((3, 5)));
    net.settle();
    assert_eq!((net.sm(1).commit_index(), net.sm(1).applied_index()), (5, 5));
    assert_eq!((net.sm(1).entry(3), net.sm(1).entry(5)), (None, None), "applied entries evicted (cache of 0)");
    assert_eq!(net.sm(3).last_index(), 1);

    net.tick(1);
    let turn = net.flush(1);
    assert_eq!(turn.reads.len(), 1, "{turn:?}");
    let read = turn.reads[0].clone();
    assert_eq!((read.partition, read.from, read.to), (P, 1, 5));
    assert!(appends(turn.to(3)).is_empty(), "nothing can be sent to 3 before the read");

    // An empty result (a WAL that lost the range) is dropped; the next heartbeat reads again.
    net.sm_mut(1).on_read_complete(read.id, Ok(Vec::new())).unwrap();
    assert!(appends(net.flush(1).to(3)).is_empty());
    net.tick(1);
    let turn = net.flush(1);
    assert_eq!(turn.reads.len(), 1, "read again: {turn:?}");
    let read = turn.reads[0].clone();

    let entries = net.wals[&id(1)].read_range(P, read.from, read.to).unwrap();
    assert_eq!(entries.len(), 5);
    net.sm_mut(1).on_read_complete(read.id, Ok(entries.clone())).unwrap();
    let turn = net.flush(1);
    let sent = appends(turn.to(3));
    assert_eq!(sent.len(), 1, "{turn:?}");
    assert_eq!((sent[0].term, sent[0].prev_log_index, sent[0].prev_log_term, sent[0].leader_commit), (2, 1, 1, 5));
    assert_eq!(sent[0].entries, entries[1..].to_vec());

    net.heal();
    for e in turn.messages.into_iter().filter(|e| e.to == id(3)) {
        net.deliver(e);
    }
    net.settle();
    assert_eq!(net.sm(3).last_index(), 5);
    assert_eq!(net.sm(1).progress(id(3)).map(|p| p.match_index), Some(5));
    assert_eq!(net.sm(3).commit_index(), 5, "leader_commit came along");
}

// ===== proposals and delivery ==================================================================

fn proposal_ok(replies: &[ClientReply], accepted: ProposalAccepted) -> bool {
    replies.contains(&ClientReply::Proposal {
        ticket: accepted.ticket,
        result: Ok(ProposalCommitted {
            ticket: accepted.ticket,
            first_index: accepted.first_index,
            last_index: accepted.last_index,
        }),
    })
}

fn resolution(ticket: Ticket, requested: TicketOutcome, result: Result<TicketOutcome, ProposeError>) -> ClientReply {
    ClientReply::Resolution { ticket, requested, result }
}

/// Two-phase proposals (built on §5.3's commit rule; markers are new entries, so nothing at or below
/// the commit index is ever rewritten): held entries are delivered only when a committed
/// CommitMarker releases them; a RollbackMarker drops them; the first outcome wins.
#[test]
fn two_phase_proposals_are_held_until_resolved_by_a_marker() {
    let mut net = three_with_leader();
    net.take_output(1);
    let a = net.sm_mut(1).propose(two_phase(&[b"a1", b"a2"]), 1).unwrap();
    net.settle();
    assert_eq!(net.sm(1).commit_index(), a.last_index);
    let out = net.take_output(1);
    assert!(out.deliveries.is_empty(), "Raft-committed but held: {:?}", out.deliveries);
    assert!(proposal_ok(&out.replies, a), "the proposal itself succeeds: {:?}", out.replies);
    assert_eq!(net.sm(1).held_tickets(), 1);

    // Commit: a marker entry is appended and, once applied, releases the held entries.
    net.sm_mut(1).commit(a.ticket).unwrap();
    let marker_index = net.sm(1).last_index();
    assert_eq!(marker_index, a.last_index + 1);
    let marker = net.sm(1).entry(marker_index).cloned().unwrap();
    assert_eq!((marker.kind, marker.ticket, marker.term), (EntryKind::CommitMarker, a.ticket, 1));
    net.settle();
    let out = net.take_output(1);
    let released: Vec<(LogIndex, LogIndex, bool)> =
        out.deliveries.iter().map(|d| (d.entry.index, d.released_at, d.restored)).collect();
    assert_eq!(released, vec![(a.first_index, marker_index, false), (a.last_index, marker_index, false)]);
    assert_eq!(out.replies, vec![resolution(a.ticket, TicketOutcome::Committed, Ok(TicketOutcome::Committed))]);
    assert_eq!(net.sm(1).held_tickets(), 0);
    for i in a.first_index..=a.last_index {
        assert_eq!(net.sm(1).entry(i).map(|e| e.kind), Some(EntryKind::Application { auto_commit: false }));
    }

    // Commit again: idempotent, answered at once. Rolling back now: too late.
    let last = net.sm(1).last_index();
    net.sm_mut(1).commit(a.ticket).unwrap();
    net.sm_mut(1).rollback(a.ticket).unwrap();
    net.settle();
    assert_eq!(net.sm(1).last_index(), last, "no new marker for a resolved ticket");
    let out = net.take_output(1);
    assert_eq!(
        out.replies,
        vec![
            resolution(a.ticket, TicketOutcome::Committed, Ok(TicketOutcome::Committed)),
            resolution(
                a.ticket,
                TicketOutcome::RolledBack,
                Err(ProposeError::AlreadyResolved { ticket: a.ticket, outcome: TicketOutcome::Committed })
            ),
        ]
    );

    // Rollback: never delivered; a later commit is refused.
    let b = net.sm_mut(1).propose(two_phase(&[b"b"]), 1).unwrap();
    net.settle();
    net.sm_mut(1).rollback(b.ticket).unwrap();
    let rollback_index = net.sm(1).last_index();
    assert_eq!(net.sm(1).entry(rollback_index).map(|e| e.kind), Some(EntryKind::RollbackMarker));
    net.settle();
    net.sm_mut(1).commit(b.ticket).unwrap();
    net.settle();
    let out = net.take_output(1);
    assert!(out.deliveries.is_empty(), "{:?}", out.deliveries);
    assert_eq!(
        out.replies[1..],
        [
            resolution(b.ticket, TicketOutcome::RolledBack, Ok(TicketOutcome::RolledBack)),
            resolution(
                b.ticket,
                TicketOutcome::Committed,
                Err(ProposeError::AlreadyResolved { ticket: b.ticket, outcome: TicketOutcome::RolledBack })
            ),
        ]
    );
    assert_eq!(net.sm(1).entry(b.first_index).map(|e| e.kind), Some(EntryKind::Application { auto_commit: false }));

    // Both requested before either marker commits: the first marker wins, only one is appended.
    let c = net.sm_mut(1).propose(two_phase(&[b"c"]), 1).unwrap();
    net.sm_mut(1).rollback(c.ticket).unwrap();
    net.sm_mut(1).commit(c.ticket).unwrap();
    assert_eq!(net.sm(1).last_index(), c.last_index + 1, "one marker");
    net.settle();
    let out = net.take_output(1);
    assert!(out.deliveries.is_empty());
    assert!(out.replies.contains(&resolution(
        c.ticket,
        TicketOutcome::Committed,
        Err(ProposeError::AlreadyResolved { ticket: c.ticket, outcome: TicketOutcome::RolledBack })
    )));

    // Bad tickets. A ticket this leader does not hold may still be committed by a newer leader it
    // has not heard of yet: "unknown" is answered only once the log backs it (a marker applies and
    // resolves nothing). The zero ticket is never valid and is refused at once.
    net.sm_mut(1).commit(ticket(424_242)).unwrap();
    net.settle();
    let unknown =
        resolution(ticket(424_242), TicketOutcome::Committed, Err(ProposeError::UnknownTicket(ticket(424_242))));
    assert!(net.take_output(1).replies.contains(&unknown));
    assert_eq!(net.sm_mut(1).rollback(HlcTimestamp::ZERO), Err(ProposeError::UnknownTicket(HlcTimestamp::ZERO)));
    let d = net.sm_mut(1).propose(auto(b"d"), 1).unwrap();
    assert_eq!(net.sm_mut(1).commit(d.ticket), Err(ProposeError::NotTwoPhase(d.ticket)));
    assert_eq!(net.sm_mut(1).rollback(d.ticket), Err(ProposeError::NotTwoPhase(d.ticket)));

    // Followers deliver exactly what the leader delivered.
    net.settle();
    net.tick(1);
    net.settle();
    let leader: Vec<LogIndex> = net.outputs[&id(1)].delivered_indexes();
    assert_eq!(leader, vec![d.first_index]);
    for n in [2, 3] {
        let all: Vec<(LogIndex, LogIndex)> =
            net.take_output(n).deliveries.iter().map(|d| (d.entry.index, d.released_at)).collect();
        assert_eq!(
            all,
            vec![(a.first_index, marker_index), (a.last_index, marker_index), (d.first_index, d.first_index)],
            "node {n}"
        );
    }
}

/// Figure 2 ("if commitIndex > lastApplied: increment lastApplied, apply log[lastApplied]"):
/// application entries are delivered in log order, exactly once, on every replica; barriers and
/// markers are never delivered; a two-phase entry is delivered at its marker's position.
#[test]
fn deliveries_are_in_order_exactly_once_and_skip_protocol_entries() {
    let mut net = three_with_leader();
    let mut auto_indexes = Vec::new();
    let a = net.sm_mut(1).propose(auto(b"a"), 1).unwrap();
    auto_indexes.push(a.first_index);
    net.settle();
    let hp = net.sm_mut(1).propose(two_phase(&[b"h"]), 2).unwrap();
    let b = net.sm_mut(1).propose(
        Proposal {
            log_type: "t".into(),
            payloads: vec![b"b1".to_vec().into(), b"b2".to_vec().into(), b"b3".to_vec().into()],
            auto_commit: true,
        },
        3,
    );
    let b = b.unwrap();
    auto_indexes.extend(b.first_index..=b.last_index);
    net.tick(1);
    net.settle();
    net.sm_mut(1).commit(hp.ticket).unwrap();
    let marker = net.sm(1).last_index();
    let c = net.sm_mut(1).propose(auto(b"c"), 4).unwrap();
    auto_indexes.push(c.first_index);
    net.settle();
    for _ in 0..3 {
        net.tick_all();
        net.settle();
    }

    let expected: Vec<(LogIndex, LogIndex)> = vec![
        (a.first_index, a.first_index),
        (b.first_index, b.first_index),
        (b.first_index + 1, b.first_index + 1),
        (b.last_index, b.last_index),
        (hp.first_index, marker),
        (c.first_index, c.first_index),
    ];
    for n in [1, 2, 3] {
        let out = net.take_output(n);
        assert!(out.deliveries.iter().all(|d| d.entry.is_application() && !d.restored), "node {n}");
        let got: Vec<(LogIndex, LogIndex)> = out.deliveries.iter().map(|d| (d.entry.index, d.released_at)).collect();
        assert_eq!(got, expected, "node {n}");
        let mut indexes: Vec<LogIndex> = got.iter().map(|&(i, _)| i).collect();
        assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "released_at strictly increasing on node {n}");
        indexes.sort_unstable();
        indexes.dedup();
        assert_eq!(indexes.len(), expected.len(), "exactly once on node {n}");
        assert_eq!(net.sm(n).applied_index(), c.last_index);
    }
    assert_eq!(net.sm(1).entry(1).map(|e| e.kind), Some(EntryKind::Barrier));
    assert_eq!(net.sm(1).entry(marker).map(|e| e.kind), Some(EntryKind::CommitMarker));
}

/// `NotTwoPhase` refuses commit/rollback of an auto-commit ticket while its entry is unapplied
/// (nothing is appended); once applied, auto-commit tickets are not remembered (memory stays
/// bounded) and the answer is `UnknownTicket`, given when the marker that asked applies (the log,
/// not the leader's possibly stale view, backs it) and delivering nothing.
#[test]
fn commit_of_an_auto_commit_ticket_is_refused_before_and_after_apply() {
    let mut net = three_with_leader();
    let a = net.sm_mut(1).propose(auto(b"a"), 1).unwrap();
    let last = net.sm(1).last_index();
    assert_eq!(net.sm_mut(1).commit(a.ticket), Err(ProposeError::NotTwoPhase(a.ticket)), "before apply");
    assert_eq!(net.sm(1).last_index(), last, "no marker appended");
    net.settle();
    assert_eq!(net.sm(1).applied_index(), a.last_index);
    net.take_output(1);
    net.sm_mut(1).commit(a.ticket).unwrap();
    net.sm_mut(1).rollback(a.ticket).unwrap();
    net.settle();
    let out = net.take_output(1);
    for requested in [TicketOutcome::Committed, TicketOutcome::RolledBack] {
        let unknown = resolution(a.ticket, requested, Err(ProposeError::UnknownTicket(a.ticket)));
        assert!(out.replies.contains(&unknown), "{requested:?}: {:?}", out.replies);
    }
    assert!(out.deliveries.is_empty(), "an unknown ticket resolves nothing");
}

// ===== restore and input validation ============================================================

/// Figure 2 (persistent state) / §5.3: a replica restarted from its WAL re-delivers the committed
/// application entries as `restored`, in order - not the uncommitted ones, not rolled-back or
/// unresolved two-phase ones - and rejects inconsistent WAL contents.
#[test]
fn restore_redelivers_committed_entries_and_rejects_corrupt_logs() {
    let (t1, t2, t3) = (ticket(1), ticket(2), ticket(3));
    let entries = vec![
        protocol(1, 1, EntryKind::Barrier, HlcTimestamp::ZERO),
        app(2, 1),
        held(3, 1, t1),
        held(4, 1, t2),
        protocol(5, 1, EntryKind::CommitMarker, t1),
        protocol(6, 2, EntryKind::RollbackMarker, t2),
        held(7, 2, t3),
        app(8, 2),
        app(9, 2),                                    // above commit
        protocol(10, 2, EntryKind::CommitMarker, t3), // above commit: t3 stays unresolved
    ];
    let mut sm = restored(config(1, &[1, 2, 3]), hs(2, Some(1), 8), entries);
    let ready = sm.ready();
    let got: Vec<(LogIndex, LogIndex, bool)> =
        ready.deliveries.iter().map(|d| (d.entry.index, d.released_at, d.restored)).collect();
    assert_eq!(got, vec![(2, 2, true), (3, 5, true), (8, 8, true)]);
    assert!(ready.write.is_none() && ready.messages.is_empty());
    assert_eq!((sm.term(), sm.voted_for(), sm.commit_index(), sm.applied_index()), (2, Some(id(1)), 8, 8));
    assert_eq!((sm.last_index(), sm.role()), (10, Role::Follower));
    assert_eq!(sm.held_tickets(), 1, "t3's entry awaits its (uncommitted) marker");

    // Once the rest commits (learned from a leader), 9 and then t3's entry at its marker follow.
    sm.step(env(2, 1, append_req(2, 10, 2, vec![], 10))).unwrap();
    let turn = drain(&mut sm);
    let got: Vec<(LogIndex, LogIndex, bool)> =
        turn.deliveries.iter().map(|d| (d.entry.index, d.released_at, d.restored)).collect();
    assert_eq!(got, vec![(9, 9, false), (7, 10, false)]);

    let corrupt: Vec<(&str, HardState, Vec<LogEntry>)> = vec![
        ("gap", hs(1, None, 0), vec![app(1, 1), app(3, 1)]),
        ("not from 1", hs(1, None, 0), vec![app(2, 1)]),
        ("decreasing terms", hs(2, None, 0), vec![app(1, 2), app(2, 1)]),
        ("term above hard state", hs(1, None, 0), vec![app(1, 2)]),
    ];
    for (name, hard_state, entries) in corrupt {
        let result = PartitionStateMachine::restore(
            config(1, &[1, 2, 3]),
            RestoreState { hard_state: Some(hard_state), entries, ..Default::default() },
        );
        assert!(matches!(result, Err(RestoreError::Fatal(FatalError::CorruptRestore(_)))), "{name}: {result:?}");
    }
    let mut bad = config(1, &[1, 2, 3]);
    bad.heartbeat_ticks = 0;
    assert!(matches!(
        PartitionStateMachine::restore(bad, RestoreState::default()),
        Err(RestoreError::Config(ConfigError::Timing(_)))
    ));
}

/// §5.1 robustness (the state of Figure 2 only changes on valid RPCs): a message for another
/// partition, from a non-member, or an append that is not consecutive or carries entries of a term
/// above the leader's is refused with a typed error and changes nothing - not even the term.
#[test]
fn malformed_or_misaddressed_input_is_rejected_and_changes_nothing() {
    let mut sm = restored(config(1, &[1, 2, 3]), hs(2, Some(2), 1), log_of(&[1, 2]));
    drain(&mut sm);
    let before = snapshot(&sm);

    let wrong_partition = Envelope { partition: PartitionId(9), ..env(2, 1, append_req(9, 2, 2, vec![app(3, 9)], 3)) };
    assert_eq!(sm.step(wrong_partition), Err(StepError::WrongPartition { expected: P, got: PartitionId(9) }));
    assert_eq!(sm.step(env(7, 1, vote_resp(9, true, false))), Err(StepError::UnknownSender(id(7))));
    assert_eq!(sm.step(env(1, 1, vote_req(9, 5, 5))), Err(StepError::UnknownSender(id(1))), "not from itself");

    let malformed = vec![
        ("gap after prev", append_req(5, 2, 2, vec![app(4, 5)], 2)),
        ("non-consecutive", append_req(5, 2, 2, vec![app(3, 5), app(5, 5)], 2)),
        ("entry term above message term", append_req(5, 2, 2, vec![app(3, 6)], 2)),
        ("decreasing entry terms", append_req(5, 2, 2, vec![app(3, 4), app(4, 3)], 2)),
    ];
    for (name, message) in malformed {
        assert!(matches!(sm.step(env(2, 1, message)), Err(StepError::MalformedAppend(_))), "{name}");
        assert_eq!(snapshot(&sm), before, "{name}");
    }
    assert_eq!(snapshot(&sm), before);
    assert!(sm.ready().is_empty(), "no output for refused input");
}

/// §5.1 (Figure 2, AppendEntries receiver step 1): an append of a stale term is refused with the
/// receiver's term, and the stale leader steps down when it sees that term.
#[test]
fn stale_term_append_is_refused_and_the_stale_leader_steps_down() {
    let mut net = three_with_leader();
    // Node 2 moves on to term 3 (a higher-term answer from node 3).
    net.sm_mut(2).step(env(3, 2, vote_resp(3, false, false))).unwrap();
    net.flush(2);
    assert_eq!(net.sm(2).term(), 3);
    net.cut(1, 3);
    let since = net.delivered.len();
    net.tick(1);
    net.settle();
    let answers = net.delivered_since(since, |e| e.from == id(2));
    assert_eq!(
        answers.iter().map(|e| &e.message).collect::<Vec<_>>(),
        vec![&RaftMessage::AppendResponse { term: 3, prev_log_index: 1, result: AppendResult::StaleTerm }]
    );
    assert_eq!(net.sm(2).last_index(), 1, "stale append not applied");
    assert_eq!((net.sm(1).role(), net.sm(1).term(), net.sm(1).voted_for()), (Role::Follower, 3, None));

    // Unit level: the refusal is immediate (no write needed) and carries the receiver's term.
    let mut n2 = restored(config(2, &[1, 2, 3]), hs(3, None, 0), vec![]);
    n2.step(env(1, 2, append_req(2, 0, 0, vec![app(1, 2)], 0))).unwrap();
    let ready = n2.ready();
    assert_eq!(
        to_node(&ready.messages, 1),
        vec![&RaftMessage::AppendResponse { term: 3, prev_log_index: 0, result: AppendResult::StaleTerm }]
    );
    assert!(ready.write.is_none());
    assert_eq!((n2.term(), n2.last_index(), n2.leader()), (3, 0, None));
}

/// Figure 2 (AppendEntries receiver step 5): a follower sets its commit index to
/// min(leaderCommit, index of last new entry) - never beyond what it verified matches the leader.
#[test]
fn follower_commit_is_capped_by_the_verified_prefix() {
    let mut n2 = restored(config(2, &[1, 2, 3]), hs(1, None, 0), log_of(&[1, 1, 1]));
    drain(&mut n2);
    n2.step(env(1, 2, append_req(1, 1, 1, vec![], 10))).unwrap();
    let turn = drain(&mut n2);
    assert_eq!(n2.commit_index(), 1, "only index 1 was verified by this append");
    assert_eq!(turn.delivered_indexes(), vec![1]);
    n2.step(env(1, 2, append_req(1, 1, 1, vec![app(2, 1)], 10))).unwrap();
    assert_eq!(drain(&mut n2).delivered_indexes(), vec![2]);
    assert_eq!(n2.commit_index(), 2);
}

/// Thesis §6.2 (check-quorum): a leader that does not hear from a quorum within an election timeout
/// steps down, so an isolated leader does not keep serving; a connected leader stays.
#[test]
fn isolated_leader_steps_down_after_an_election_timeout_without_a_quorum() {
    let min = config(1, &[1, 2, 3]).election_timeout_min_ticks;
    let mut net = three_with_leader();
    for _ in 0..5 * min {
        net.tick_all();
        net.settle();
    }
    assert!(net.sm(1).is_leader(), "a connected leader keeps its leadership");
    net.take_output(1);

    net.isolate(1);
    let mut stepped_down_at = None;
    for t in 1..=2 * min {
        net.tick(1);
        net.settle();
        if net.sm(1).role() != Role::Leader {
            stepped_down_at = Some(t);
            break;
        }
    }
    // Check-quorum runs once per election_timeout_min_ticks and looks at activity since the previous
    // round, so the step-down lands within two rounds of the last contact.
    let t = stepped_down_at.expect("the isolated leader stepped down");
    assert!(t >= min, "not before a full election timeout ({t} ticks)");
    assert_eq!((net.sm(1).role(), net.sm(1).term(), net.sm(1).leader()), (Role::Follower, 1, None));
    assert!(!net.sm(1).is_leader());
    assert_eq!(net.take_output(1).leader_changes, vec![LeaderChange { term: 1, leader: None }]);
    assert_eq!(net.sm_mut(1).propose(auto(b"x"), 1), Err(ProposeError::NotLeader { leader: None }));
}

/// Flow control (thesis §10.2) and §8 client interaction ("the follower rejects and supplies
/// information about the most recent leader"): a leader refuses proposals past
/// max_uncommitted_entries; a follower refuses with a leader hint.
#[test]
fn backpressure_and_not_leader_hints() {
    let voters = [1, 2, 3];
    let mut net = Net::fresh_with(&voters, |c| c.max_uncommitted_entries = 3);
    elect(&mut net, 1);
    for i in 0..3u8 {
        net.sm_mut(1).propose(auto(&[i]), 1).unwrap();
    }
    assert_eq!(net.sm_mut(1).propose(auto(b"x"), 1), Err(ProposeError::Backpressure { in_flight: 3 }));
    net.settle();
    assert_eq!(net.sm(1).commit_index(), net.sm(1).last_index());
    net.sm_mut(1).propose(auto(b"y"), 1).unwrap();
    net.sm_mut(1).propose(auto(b"z"), 1).unwrap();
    let two = Proposal {
        log_type: "t".into(),
        payloads: vec![b"1".to_vec().into(), b"2".to_vec().into()],
        auto_commit: true,
    };
    assert_eq!(net.sm_mut(1).propose(two, 1), Err(ProposeError::Backpressure { in_flight: 2 }), "counts every payload");
    let empty = Proposal { log_type: "t".into(), payloads: vec![], auto_commit: true };
    assert_eq!(net.sm_mut(1).propose(empty, 1), Err(ProposeError::EmptyProposal));

    assert_eq!(net.sm_mut(2).propose(auto(b"x"), 1), Err(ProposeError::NotLeader { leader: Some(id(1)) }));
    let t = net.sm(1).last_index();
    assert!(matches!(net.sm_mut(3).commit(ticket(t)), Err(ProposeError::NotLeader { leader: Some(_) })));
    assert_eq!(machine(4, &[4, 5, 6]).propose(auto(b"x"), 1), Err(ProposeError::NotLeader { leader: None }));
}

/// A single-voter partition is its own quorum (§5.2): it elects itself without a pre-vote and
/// commits once its own write is durable.
#[test]
fn single_voter_elects_itself_and_commits_on_its_own_write() {
    let mut sm = machine(1, &[1]);
    tick_until_timeout(&mut sm);
    // Its own vote must be durable before it leads: otherwise a crash could let it lead term 1
    // a second time with a different log.
    assert_eq!((sm.role(), sm.term(), sm.voted_for()), (Role::Candidate, 1, Some(id(1))));
    let turn = drain(&mut sm);
    assert_eq!(sm.role(), Role::Leader);
    assert!(turn.messages.is_empty());
    assert!(sm.is_leader());
    assert_eq!(turn.leader_changes, vec![LeaderChange { term: 1, leader: Some(id(1)) }]);
    let a = sm.propose(auto(b"x"), 1).unwrap();
    assert_eq!(sm.commit_index(), 1, "not before the write");
    let turn = drain(&mut sm);
    assert_eq!(sm.commit_index(), a.last_index);
    assert_eq!(turn.delivered_indexes(), vec![a.last_index]);
}

/// Thesis §9.6: a pre-vote is granted only for a term above the receiver's own (the term a real
/// election would run in), and only once no leader was heard for a full minimum election timeout
/// (a learner is used: its timer runs but it never campaigns, so the boundary is exact).
#[test]
fn pre_votes_need_a_higher_term_and_a_full_election_timeout_of_silence() {
    let mut sm = restored(config(2, &[1, 2, 3]), hs(3, None, 0), vec![]);
    sm.step(env(3, 2, pre_vote_req(3, 0, 0))).unwrap();
    sm.step(env(3, 2, pre_vote_req(4, 0, 0))).unwrap();
    let answers: Vec<RaftMessage> = drain(&mut sm).messages.into_iter().map(|e| e.message).collect();
    assert_eq!(answers, vec![vote_resp(3, false, true), vote_resp(4, true, true)]);

    let mut cfg = config(4, &[1, 2, 3]);
    cfg.learners = vec![id(4)];
    let mut learner = PartitionStateMachine::new(cfg).expect("config");
    learner.step(env(1, 4, append_req(1, 0, 0, vec![], 0))).unwrap();
    for _ in 1..silent_ticks() {
        learner.tick();
    }
    learner.step(env(2, 4, pre_vote_req(2, 0, 0))).unwrap();
    learner.tick(); // now silent for exactly the minimum election timeout
    learner.step(env(2, 4, pre_vote_req(2, 0, 0))).unwrap();
    let answers: Vec<RaftMessage> = drain(&mut learner)
        .messages
        .into_iter()
        .map(|e| e.message)
        .filter(|m| matches!(m, RaftMessage::VoteResponse { .. }))
        .collect();
    assert_eq!(answers, vec![vote_resp(1, false, true), vote_resp(2, true, true)]);
}

/// Vote stickiness ignores only *higher-term* requests: a same-term vote request reaching a
/// follower that hears its leader is still answered (a doomed candidate learns it lost).
#[test]
fn a_same_term_vote_request_is_answered_while_a_leader_is_heard() {
    let mut sm = machine(2, &[1, 2, 3]);
    sm.step(env(1, 2, append_req(1, 0, 0, vec![], 0))).unwrap();
    sm.step(env(3, 2, vote_req(1, 0, 0))).unwrap();
    let answers = drain(&mut sm).messages;
    assert_eq!(to_node(&answers, 3).len(), 1, "{answers:?}");
}

/// Vote answers count only in the round they answer: late pre-vote grants reaching a replica that
/// already returned to follower, and rejections of an older term reaching a candidate, are ignored.
#[test]
fn late_or_stale_vote_answers_are_ignored() {
    let mut sm = machine(1, &[1, 2, 3, 4, 5]);
    tick_until_timeout(&mut sm);
    assert_eq!(sm.role(), Role::PreCandidate);
    sm.step(env(2, 1, append_req(1, 0, 0, vec![], 0))).unwrap();
    assert_eq!(sm.role(), Role::Follower);
    for peer in [3, 4, 5] {
        sm.step(env(peer, 1, vote_resp(2, true, true))).unwrap();
    }
    assert_eq!((sm.role(), sm.term()), (Role::Follower, 1), "late pre-vote grants start nothing");

    let mut sm = restored(config(1, &[1, 2, 3, 4, 5]), hs(4, None, 0), vec![]);
    tick_until_timeout(&mut sm);
    for peer in [2, 3] {
        sm.step(env(peer, 1, vote_resp(5, true, true))).unwrap();
    }
    drain(&mut sm);
    assert_eq!((sm.role(), sm.term()), (Role::Candidate, 5));
    for peer in [2, 3, 4] {
        sm.step(env(peer, 1, vote_resp(4, false, false))).unwrap();
    }
    assert_eq!(sm.role(), Role::Candidate, "rejections of term 4 do not count in term 5");
}

/// §5.2: a candidate gives up only when a majority of the voters rejected it; grants and a minority
/// of rejections keep it campaigning (5 voters: quorum 3).
#[test]
fn a_candidate_gives_up_only_after_a_majority_of_rejections() {
    let mut sm = machine(1, &[1, 2, 3, 4, 5]);
    tick_until_timeout(&mut sm);
    let term = sm.term() + 1;
    for peer in [2, 3] {
        sm.step(env(peer, 1, vote_resp(term, true, true))).unwrap();
    }
    assert_eq!(sm.role(), Role::Candidate);
    drain(&mut sm);
    sm.step(env(2, 1, vote_resp(term, true, false))).unwrap();
    sm.step(env(3, 1, vote_resp(term, false, false))).unwrap();
    sm.step(env(4, 1, vote_resp(term, false, false))).unwrap();
    assert_eq!(sm.role(), Role::Candidate, "2 grants (with its own) and 2 rejections: undecided");
    sm.step(env(5, 1, vote_resp(term, false, false))).unwrap();
    assert_eq!((sm.role(), sm.term()), (Role::Follower, term), "3 of 5 rejected");
}

/// A lone voter whose vote write is slower than an election timeout campaigns again; completing
/// the write of the *earlier* vote must not make it lead the later term: only the write holding
/// its current vote counts.
#[test]
fn a_lone_voter_leads_only_once_the_write_of_its_current_vote_completes() {
    let mut sm = machine(1, &[1]);
    tick_until_timeout(&mut sm);
    let first = sm.ready().write.expect("the term-1 vote is written");
    tick_until_timeout_again(&mut sm);
    assert_eq!((sm.role(), sm.term()), (Role::Candidate, 2));
    let second = sm.ready().write.expect("the term-2 vote is written");
    sm.on_write_complete(first.id);
    assert_eq!(sm.role(), Role::Candidate, "the term-2 vote is not durable yet");
    sm.on_write_complete(second.id);
    assert_eq!((sm.role(), sm.term()), (Role::Leader, 2));
}

/// Tick until the candidate starts a new election (its term grows).
fn tick_until_timeout_again(sm: &mut PartitionStateMachine) {
    let term = sm.term();
    for _ in 0..100 {
        sm.tick();
        if sm.term() > term {
            return;
        }
    }
    panic!("election timer never fired again");
}

/// Tickets (HLC timestamps) issued after a restart order after every ticket in the restored log,
/// even when the last entry is a barrier or a marker carrying an older ticket, and even if the
/// caller's physical clock went backwards.
#[test]
fn tickets_after_restore_follow_every_restored_ticket() {
    let newest = Ticket { physical_ms: 9_000, logical: 3, node: 1 };
    let entries = vec![
        held(1, 1, newest),
        protocol(2, 1, EntryKind::CommitMarker, newest),
        protocol(3, 2, EntryKind::Barrier, HlcTimestamp::ZERO),
    ];
    let mut sm = restored(config(1, &[1]), hs(2, Some(1), 3), entries);
    tick_until_timeout(&mut sm);
    drain(&mut sm);
    assert!(sm.is_leader());
    let accepted = sm.propose(auto(b"after restart"), 5).unwrap();
    assert!(accepted.ticket > newest, "{} must follow {}", accepted.ticket, newest);
}

/// Figure 2 ("respond after persisting") across batched inputs: an acknowledgement held for
/// entries of term 2 must not be released after a term-3 leader truncated those entries before
/// they were ever written — it would count this follower toward a quorum it is not part of.
#[test]
fn held_acknowledgement_of_a_superseded_term_is_never_sent() {
    let mut n3 = machine(3, &[1, 2, 3, 4, 5]);
    // Two inputs before one ready(): term-2 entries from n1, then a conflicting term-3 entry from n2.
    n3.step(env(1, 3, append_req(2, 0, 0, vec![app(1, 2), app(2, 2), app(3, 2)], 0))).unwrap();
    n3.step(env(2, 3, append_req(3, 0, 0, vec![app(1, 3)], 0))).unwrap();
    let turn = drain(&mut n3);
    let stale_acks: Vec<_> = turn
        .messages
        .iter()
        .filter(|e| e.to == id(1) && matches!(e.message, RaftMessage::AppendResponse { .. }))
        .collect();
    assert!(stale_acks.is_empty(), "acknowledged entries that were never written: {stale_acks:?}");
    assert_eq!((n3.last_index(), n3.last_term()), (1, 3));
    assert!(turn
        .to(2)
        .iter()
        .any(|m| matches!(m, RaftMessage::AppendResponse { result: AppendResult::Success { match_index: 1 }, .. })));
}

/// Configuration errors surface from the constructor, each with its category.
#[test]
fn invalid_configuration_is_rejected_by_new() {
    type Tweak = fn(&mut PartitionConfig);
    type Expect = fn(&ConfigError) -> bool;
    let cases: Vec<(&str, Tweak, Expect)> = vec![
        ("heartbeat 0", |c| c.heartbeat_ticks = 0, |e| matches!(e, ConfigError::Timing(_))),
        ("min <= heartbeat", |c| c.election_timeout_min_ticks = 1, |e| matches!(e, ConfigError::Timing(_))),
        ("max <= min", |c| c.election_timeout_max_ticks = 10, |e| matches!(e, ConfigError::Timing(_))),
        ("no voters", |c| c.voters.clear(), |e| matches!(e, ConfigError::Membership(_))),
        ("self not a voter", |c| c.voters = vec![id(2), id(3)], |e| matches!(e, ConfigError::Membership(_))),
        ("duplicate voter", |c| c.voters.push(id(2)), |e| matches!(e, ConfigError::Membership(_))),
        ("window 0", |c| c.max_inflight_appends = 0, |e| matches!(e, ConfigError::Limit(_))),
        ("batch 0", |c| c.max_entries_per_append = 0, |e| matches!(e, ConfigError::Limit(_))),
        ("uncommitted 0", |c| c.max_uncommitted_entries = 0, |e| matches!(e, ConfigError::Limit(_))),
    ];
    for (name, tweak, expected) in cases {
        let mut c = config(1, &[1, 2, 3]);
        tweak(&mut c);
        match PartitionStateMachine::new(c) {
            Err(e) => assert!(expected(&e), "{name}: {e}"),
            Ok(_) => panic!("{name}: accepted"),
        }
    }
    assert!(PartitionStateMachine::new(config(1, &[1, 2, 3])).is_ok());
}

/// `Ready::is_empty` is true only when every output is empty.
#[test]
fn ready_is_empty_only_without_any_output() {
    assert!(Ready::default().is_empty());
    let envelope = env(1, 2, vote_resp(1, true, false));
    let outputs: Vec<Ready> = vec![
        Ready { messages: vec![envelope], ..Ready::default() },
        Ready { write: Some(WriteRequest { id: 1, write: PartitionWrite::default() }), ..Ready::default() },
        Ready { reads: vec![ReadRequest { id: 1, partition: P, from: 1, to: 1 }], ..Ready::default() },
        Ready { deliveries: vec![Delivery { entry: app(1, 1), released_at: 1, restored: false }], ..Ready::default() },
        Ready {
            replies: vec![resolution(ticket(1), TicketOutcome::Committed, Ok(TicketOutcome::Committed))],
            ..Ready::default()
        },
        Ready { leader_change: Some(LeaderChange { term: 1, leader: None }), ..Ready::default() },
        Ready { fatal: Some(FatalError::CorruptRestore("x".into())), ..Ready::default() },
    ];
    for ready in outputs {
        assert!(!ready.is_empty(), "{ready:?}");
    }
}

/// A follower reports the leader of its term only once an entry of that term is committed here:
/// before, the leader may still answer `LeadershipPending`.
#[test]
fn a_follower_reports_the_leader_once_its_term_has_a_committed_entry() {
    let mut follower = machine(2, &[1, 2, 3]);
    let barrier = protocol(1, 1, EntryKind::Barrier, HlcTimestamp::ZERO);
    follower.step(env(1, 2, append_req(1, 0, 0, vec![barrier], 0))).unwrap();
    assert_eq!(follower.leader(), Some(id(1)), "the leader is known");
    assert_eq!(follower.established_leader(), None, "but its barrier is not committed yet");
    follower.step(env(1, 2, append_req(1, 1, 1, vec![], 1))).unwrap();
    assert_eq!(follower.established_leader(), Some(id(1)));
    // A new term without a committed entry of its own: not established again.
    follower.step(env(3, 2, append_req(2, 1, 1, vec![], 1))).unwrap();
    assert_eq!((follower.leader(), follower.established_leader()), (Some(id(3)), None));
}

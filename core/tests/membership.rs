//! Membership changes of one partition (thesis §4): learners replicate but never vote or
//! campaign, changes go one node at a time through config entries that take effect when appended,
//! a new change waits for the previous one to commit, a leader removed from the voters steps down
//! once the change commits, and a truncated config entry reverts to the previous configuration.

use kommander_core::raft::{Membership, Proposal, RestoreState};
use kommander_core::{
    EntryKind, Envelope, HardState, LogEntry, NodeId, PartitionConfig, PartitionId, PartitionStateMachine,
    ProposeError, RaftMessage, Role, StepError,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

const P: PartitionId = PartitionId(1);

fn ids(nodes: &[u64]) -> Vec<NodeId> {
    nodes.iter().map(|&n| NodeId(n)).collect()
}

fn membership(voters: &[u64], learners: &[u64]) -> Membership {
    Membership { voters: ids(voters).into_iter().collect(), learners: ids(learners).into_iter().collect() }
}

fn machine(node: u64, voters: &[u64], learners: &[u64]) -> PartitionStateMachine {
    let mut config = PartitionConfig::new(NodeId(node), P, ids(voters));
    config.learners = ids(learners);
    config.seed = 7;
    PartitionStateMachine::new(config).expect("config")
}

/// Nodes exchanging messages instantly; every write completes at once; `isolated` nodes neither
/// send nor receive.
struct Net {
    sms: BTreeMap<u64, PartitionStateMachine>,
    isolated: BTreeSet<u64>,
    now: u64,
}

impl Net {
    fn new(voters: &[u64]) -> Net {
        let sms = voters.iter().map(|&n| (n, machine(n, voters, &[]))).collect();
        Net { sms, isolated: BTreeSet::new(), now: 1_000 }
    }

    fn settle(&mut self) {
        for _ in 0..200 {
            let mut queue: VecDeque<Envelope> = VecDeque::new();
            for (node, sm) in self.sms.iter_mut() {
                for _ in 0..4 {
                    let ready = sm.ready();
                    if let Some(write) = &ready.write {
                        sm.on_write_complete(write.id);
                    }
                    if !self.isolated.contains(node) {
                        queue.extend(ready.messages);
                    }
                }
            }
            if queue.is_empty() {
                return;
            }
            while let Some(envelope) = queue.pop_front() {
                let to = envelope.to.0;
                if self.isolated.contains(&to) {
                    continue;
                }
                if let Some(sm) = self.sms.get_mut(&to) {
                    let _ = sm.step(envelope);
                }
            }
        }
    }

    fn tick(&mut self, times: usize) {
        for _ in 0..times {
            for sm in self.sms.values_mut() {
                sm.tick();
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<u64> {
        let leaders: Vec<u64> = self.sms.iter().filter(|(_, sm)| sm.is_leader()).map(|(n, _)| *n).collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    fn elect(&mut self) -> u64 {
        for _ in 0..200 {
            self.tick(1);
            if let Some(leader) = self.leader() {
                return leader;
            }
        }
        panic!("no leader elected");
    }

    fn sm(&mut self, node: u64) -> &mut PartitionStateMachine {
        self.sms.get_mut(&node).expect("node")
    }

    fn write(&mut self, leader: u64, payload: &[u8]) -> u64 {
        self.now += 1;
        let now = self.now;
        let proposal = Proposal { log_type: "t".into(), payloads: vec![payload.to_vec().into()], auto_commit: true };
        let accepted = self.sm(leader).propose(proposal, now).expect("propose");
        self.settle();
        accepted.last_index
    }

    fn change(&mut self, leader: u64, next: Membership) -> Result<u64, ProposeError> {
        self.now += 1;
        let now = self.now;
        let accepted = self.sm(leader).propose_membership(next, now)?;
        self.settle();
        Ok(accepted.last_index)
    }
}

#[test]
fn a_learner_never_campaigns_and_its_vote_never_counts() {
    let mut learner = machine(4, &[], &[4]);
    for _ in 0..500 {
        learner.tick();
        let ready = learner.ready();
        assert!(ready.messages.iter().all(|m| !matches!(m.message, RaftMessage::VoteRequest { .. })));
        assert_eq!(learner.role(), Role::Follower);
    }
    // A candidate of voters {1, 2, 3} does not count a vote granted by learner 4.
    let mut candidate = machine(1, &[1, 2, 3], &[4]);
    while candidate.role() != Role::PreCandidate {
        candidate.tick();
    }
    let _ = candidate.ready();
    let term = candidate.term() + 1;
    let grant = RaftMessage::VoteResponse { term, granted: true, pre_vote: true };
    let envelope = Envelope { partition: P, from: NodeId(4), to: NodeId(1), message: grant };
    assert_eq!(candidate.step(envelope), Err(StepError::UnknownSender(NodeId(4))));
    assert_eq!(candidate.role(), Role::PreCandidate, "a learner's grant is not a vote");
}

#[test]
fn a_joining_learner_catches_up_is_promoted_and_then_counts_toward_quorum() {
    let mut net = Net::new(&[1, 2, 3]);
    let leader = net.elect();
    for i in 0..20 {
        net.write(leader, format!("before-{i}").as_bytes());
    }
    // Node 4 starts knowing nothing but itself, as a learner.
    net.sms.insert(4, machine(4, &[], &[4]));
    net.change(leader, membership(&[1, 2, 3], &[4])).expect("add learner");
    net.tick(5);
    let last = net.sm(leader).last_index();
    assert_eq!(net.sm(4).commit_index(), last, "the learner caught up");
    assert_eq!(net.sm(4).membership(), &membership(&[1, 2, 3], &[4]), "and learned the membership from the log");

    // A learner is not counted: with two voters cut off, nothing commits even though 4 is alive.
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&n| n != leader).collect();
    net.isolated.extend(others.iter().copied());
    let stuck = net.write(leader, b"needs-a-voter");
    assert!(net.sm(leader).commit_index() < stuck, "learners never make a quorum");
    net.isolated.clear();
    net.tick(3);
    assert!(net.sm(leader).commit_index() >= stuck);

    // One change at a time, one node at a time.
    net.now += 1;
    let now = net.now;
    let promote = net.sm(leader).propose_membership(membership(&[1, 2, 3, 4], &[]), now).expect("promote");
    assert_eq!(net.sm(leader).membership_index(), promote.last_index, "the config entry's index");
    assert_eq!(
        net.sm(leader).propose_membership(membership(&[1, 2, 3], &[4]), now + 1),
        Err(ProposeError::MembershipChangePending)
    );
    net.settle();
    net.tick(2);
    assert_eq!(
        net.sm(leader).propose_membership(membership(&[1, 2, 3, 4, 5, 6], &[]), now + 2),
        Err(ProposeError::InvalidMembership)
    );
    assert_eq!(net.sm(leader).voters(), ids(&[1, 2, 3, 4]));

    // Now 4 votes: with 4 voters the quorum is 3, so the leader and 4 alone cannot commit.
    net.isolated.extend(others.iter().copied());
    let blocked = net.write(leader, b"two-of-four");
    assert!(net.sm(leader).commit_index() < blocked);
    net.isolated.remove(&others[0]);
    net.tick(3);
    assert!(net.sm(leader).commit_index() >= blocked, "leader + 4 + one more voter commit");
}

#[test]
fn a_leader_removed_from_the_voters_steps_down_once_the_change_commits() {
    let mut net = Net::new(&[1, 2, 3]);
    let leader = net.elect();
    net.write(leader, b"x");
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|&n| n != leader).collect();
    let index = net.change(leader, membership(&rest, &[])).expect("remove the leader");
    assert!(net.sm(leader).commit_index() >= index);
    assert_ne!(net.sm(leader).role(), Role::Leader, "the removed leader stepped down");
    net.tick(60);
    let next = net.leader().expect("the remaining voters elect a leader");
    assert!(rest.contains(&next));
    assert_ne!(net.sm(leader).role(), Role::Candidate, "a removed node never campaigns");
    let committed = net.write(next, b"after");
    net.tick(2);
    assert!(net.sm(next).commit_index() >= committed, "two voters commit without the removed node");
}

#[test]
fn a_truncated_config_entry_reverts_to_the_previous_membership() {
    let mut net = Net::new(&[1, 2, 3]);
    let leader = net.elect();
    net.write(leader, b"x");
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|&n| n != leader).collect();
    // The leader appends a config change but is cut off before anyone receives it.
    net.isolated.insert(leader);
    net.now += 1;
    let now = net.now;
    net.sm(leader).propose_membership(membership(&[1, 2, 3], &[9]), now).expect("propose");
    assert_eq!(net.sm(leader).membership(), &membership(&[1, 2, 3], &[9]), "in effect once appended");
    let last = net.sm(leader).last_index();
    let probe = net.sm(leader).progress(NodeId(9)).map(|p| (p.match_index, p.next_index));
    assert_eq!(probe, Some((0, last + 1)), "a new member is probed from the end of the leader's log");
    net.settle();
    // The others elect a new leader, which overwrites the uncommitted suffix.
    let new_leader = loop {
        net.tick(1);
        if let Some(l) = rest.iter().copied().find(|&n| net.sms[&n].is_leader()) {
            break l;
        }
    };
    net.write(new_leader, b"y");
    net.isolated.clear();
    net.tick(20);
    assert_eq!(net.sm(leader).membership(), &membership(&[1, 2, 3], &[]), "the truncated change is gone");
    assert!(!net.sm(leader).membership_change_pending());
}

/// Thesis §4.2.2: a voter that a change not yet committed removes may still campaign (it may be the
/// only one able to finish the change); whether it is being removed is judged against the
/// configuration before the last one, not the base.
#[test]
fn a_voter_removed_by_a_pending_change_may_still_campaign() {
    let config_entry = |index: u64, voters: &[u64], learners: &[u64]| LogEntry {
        kind: EntryKind::Config,
        payload: membership(voters, learners).encode().into(),
        ..kommander_core::conformance::wal::entry(index, 1)
    };
    let barrier = LogEntry { kind: EntryKind::Barrier, ..kommander_core::conformance::wal::entry(1, 1) };
    let log = vec![barrier, config_entry(2, &[1, 2, 3], &[4]), config_entry(3, &[1, 3], &[4])];
    let config = PartitionConfig::new(NodeId(2), PartitionId(1), ids(&[1, 2, 3]));
    let hard_state = HardState { term: 1, voted_for: None, commit: 2 };
    let mut n2 = PartitionStateMachine::restore(
        config,
        RestoreState { hard_state: Some(hard_state), entries: log, ..Default::default() },
    )
    .expect("restore");
    assert!(n2.membership_change_pending());
    for _ in 0..100 {
        n2.tick();
    }
    assert_ne!(n2.role(), Role::Follower, "the voter being removed campaigns");
}

/// The leader's step toward a desired membership, decided in core: a learner is promoted only
/// once within `max_lag`, a departing member is dropped only once caught up *and* settled (or
/// silent), nothing happens while a change is pending or on a follower.
#[test]
fn the_leader_steps_toward_the_desired_membership_one_safe_change_at_a_time() {
    let mut net = Net::new(&[1, 2, 3]);
    let leader = net.elect();
    let follower = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap();
    for i in 0..10 {
        net.write(leader, format!("w{i}").as_bytes());
    }
    let never = |_| false;
    let with_4 = membership(&[1, 2, 3, 4], &[]);
    assert_eq!(net.sm(follower).membership_step(&with_4, 0, never), None, "followers never decide");
    // Missing node 4 is added as a learner first.
    assert_eq!(net.sm(leader).membership_step(&with_4, 0, never), Some(membership(&[1, 2, 3], &[4])));
    net.sms.insert(4, machine(4, &[], &[4]));
    net.isolated.insert(4);
    net.change(leader, membership(&[1, 2, 3], &[4])).unwrap();
    // Not promoted while it lags beyond max_lag (cut off, it holds nothing yet).
    assert_eq!(net.sm(leader).membership_step(&with_4, 0, never), None);
    assert_eq!(net.sm(leader).membership_step(&with_4, 5, never), None, "12 entries behind is beyond 5");
    net.isolated.clear();
    net.tick(5);
    assert_eq!(net.sm(leader).membership_step(&with_4, 0, never), Some(with_4.clone()), "caught up: promoted");
    net.change(leader, with_4.clone()).unwrap();
    net.tick(2);

    // Removing a caught-up, answering voter waits for `settled`.
    let gone = [1, 2, 3, 4].into_iter().find(|&n| n != leader).unwrap();
    let rest: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&n| n != gone).collect();
    let without = membership(&rest, &[]);
    assert_eq!(net.sm(leader).departing_caught_up(&without), vec![NodeId(gone)]);
    assert_eq!(net.sm(leader).membership_step(&without, 0, never), None, "not settled yet");
    let settled = |n: NodeId| n == NodeId(gone);
    let step = net.sm(leader).membership_step(&without, 0, settled).expect("a step");
    assert!(!step.voters.contains(&NodeId(gone)), "{step:?}");
    net.now += 1;
    let now = net.now;
    net.sm(leader).propose_membership(step, now).unwrap();
    assert_eq!(net.sm(leader).membership_step(&without, 0, settled), None, "one change at a time");
}

// Shared by the rule-by-rule tests (`raft_rules.rs`, `reads_and_transfer.rs`) with `include!`, so
// each test file keeps its helpers private. Builders, `drain` and a tiny in-test `Net`.

use kommander_core::config::CanaryBugs;
use kommander_core::raft::{
    ClientReply, Delivery, LeaderChange, ProgressState, Proposal, ProposalAccepted, ProposalCommitted, ReadRequest, ReadState,
    RestoreError, RestoreState, WriteRequest,
};
use kommander_core::{
    AppendResult, ConfigError, EntryKind, Envelope, FatalError, HardState, HlcTimestamp, LogEntry, LogIndex, MemoryWal,
    NodeId, PartitionConfig, PartitionId, PartitionStateMachine, PartitionWrite, ProposeError, RaftMessage, Ready,
    Role, StepError, Term, Ticket, TicketOutcome, Wal, WalBatch,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

// ----- builders -------------------------------------------------------------------------------

const P: PartitionId = PartitionId(1);
const SEED: u64 = 0x5eed_1234;

fn id(n: u64) -> NodeId {
    NodeId(n)
}

/// Default settings for `node` in a cluster of `voters`, with a fixed seed.
fn config(node: u64, voters: &[u64]) -> PartitionConfig {
    let mut c = PartitionConfig::new(id(node), P, voters.iter().copied().map(NodeId).collect());
    c.seed = SEED;
    c
}

fn machine(node: u64, voters: &[u64]) -> PartitionStateMachine {
    PartitionStateMachine::new(config(node, voters)).expect("valid config")
}

fn restored(cfg: PartitionConfig, hard_state: HardState, entries: Vec<LogEntry>) -> PartitionStateMachine {
    PartitionStateMachine::restore(cfg, RestoreState { hard_state: Some(hard_state), entries, ..Default::default() })
        .expect("valid restore")
}

fn hs(term: Term, voted_for: Option<u64>, commit: LogIndex) -> HardState {
    HardState { term, voted_for: voted_for.map(NodeId), commit }
}

fn ticket(n: u64) -> Ticket {
    HlcTimestamp { physical_ms: n, logical: 0, node: 9 }
}

/// An auto-commit application entry (its ticket is unique per index).
fn app(index: LogIndex, term: Term) -> LogEntry {
    LogEntry { ticket: ticket(1000 + index), ..kommander_core::conformance::wal::entry(index, term) }
}

/// A two-phase (held) application entry of `ticket`.
fn held(index: LogIndex, term: Term, t: Ticket) -> LogEntry {
    LogEntry { kind: EntryKind::Application { auto_commit: false }, ticket: t, ..app(index, term) }
}

fn protocol(index: LogIndex, term: Term, kind: EntryKind, t: Ticket) -> LogEntry {
    LogEntry { index, term, kind, log_type: kommander_core::LogType::EMPTY, payload: bytes::Bytes::new(), ticket: t }
}

/// Auto-commit application entries `1..=terms.len()`, entry `i` in `terms[i - 1]`.
fn log_of(terms: &[Term]) -> Vec<LogEntry> {
    terms.iter().enumerate().map(|(i, &t)| app(i as LogIndex + 1, t)).collect()
}

fn auto(payload: &[u8]) -> Proposal {
    Proposal { log_type: "t".into(), payloads: vec![payload.to_vec().into()], auto_commit: true }
}

fn two_phase(payloads: &[&[u8]]) -> Proposal {
    Proposal {
        log_type: "t".into(),
        payloads: payloads.iter().map(|p| bytes::Bytes::copy_from_slice(p)).collect(),
        auto_commit: false,
    }
}

fn env(from: u64, to: u64, message: RaftMessage) -> Envelope {
    Envelope { partition: P, from: id(from), to: id(to), message }
}

fn vote_req(term: Term, last_log_index: LogIndex, last_log_term: Term) -> RaftMessage {
    RaftMessage::VoteRequest { term, last_log_index, last_log_term, pre_vote: false, transfer: false }
}

fn pre_vote_req(term: Term, last_log_index: LogIndex, last_log_term: Term) -> RaftMessage {
    RaftMessage::VoteRequest { term, last_log_index, last_log_term, pre_vote: true, transfer: false }
}

fn vote_resp(term: Term, granted: bool, pre_vote: bool) -> RaftMessage {
    RaftMessage::VoteResponse { term, granted, pre_vote }
}

fn append_req(
    term: Term,
    prev_log_index: LogIndex,
    prev_log_term: Term,
    entries: Vec<LogEntry>,
    leader_commit: LogIndex,
) -> RaftMessage {
    RaftMessage::AppendRequest { term, prev_log_index, prev_log_term, entries, leader_commit }
}

fn conflict(term: Term, prev_log_index: LogIndex, hint_index: LogIndex, hint_term: Option<Term>) -> RaftMessage {
    RaftMessage::AppendResponse { term, prev_log_index, result: AppendResult::Conflict { hint_index, hint_term } }
}

fn success(term: Term, prev_log_index: LogIndex, match_index: LogIndex) -> RaftMessage {
    RaftMessage::AppendResponse { term, prev_log_index, result: AppendResult::Success { match_index } }
}

// ----- driving one machine --------------------------------------------------------------------

/// Everything one or more `ready()` calls produced, with every write kept.
#[derive(Debug, Default)]
struct Turn {
    messages: Vec<Envelope>,
    writes: Vec<WriteRequest>,
    reads: Vec<ReadRequest>,
    deliveries: Vec<Delivery>,
    replies: Vec<ClientReply>,
    read_states: Vec<ReadState>,
    leader_changes: Vec<LeaderChange>,
    fatal: Option<FatalError>,
}

impl Turn {
    fn absorb(&mut self, ready: Ready) {
        self.messages.extend(ready.messages);
        self.writes.extend(ready.write);
        self.reads.extend(ready.reads);
        self.deliveries.extend(ready.deliveries);
        self.replies.extend(ready.replies);
        self.read_states.extend(ready.read_states);
        self.leader_changes.extend(ready.leader_change);
        if ready.fatal.is_some() {
            self.fatal = ready.fatal;
        }
    }

    fn extend(&mut self, other: &Turn) {
        self.messages.extend(other.messages.iter().cloned());
        self.writes.extend(other.writes.iter().cloned());
        self.reads.extend(other.reads.iter().cloned());
        self.deliveries.extend(other.deliveries.iter().cloned());
        self.replies.extend(other.replies.iter().cloned());
        self.read_states.extend(other.read_states.iter().cloned());
        self.leader_changes.extend(other.leader_changes.iter().copied());
        if other.fatal.is_some() {
            self.fatal.clone_from(&other.fatal);
        }
    }

    fn to(&self, to: u64) -> Vec<&RaftMessage> {
        to_node(&self.messages, to)
    }

    fn delivered_indexes(&self) -> Vec<LogIndex> {
        self.deliveries.iter().map(|d| d.entry.index).collect()
    }
}

fn to_node(messages: &[Envelope], to: u64) -> Vec<&RaftMessage> {
    messages.iter().filter(|e| e.to == id(to)).map(|e| &e.message).collect()
}

/// A decoded append request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Append {
    term: Term,
    prev_log_index: LogIndex,
    prev_log_term: Term,
    entries: Vec<LogEntry>,
    leader_commit: LogIndex,
}

fn appends<'a>(messages: impl IntoIterator<Item = &'a RaftMessage>) -> Vec<Append> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            RaftMessage::AppendRequest { term, prev_log_index, prev_log_term, entries, leader_commit } => {
                Some(Append {
                    term: *term,
                    prev_log_index: *prev_log_index,
                    prev_log_term: *prev_log_term,
                    entries: entries.clone(),
                    leader_commit: *leader_commit,
                })
            }
            _ => None,
        })
        .collect()
}

/// Call `ready()`, hand each write to `persist`, report it complete at once, and repeat until no
/// write is left, so messages held behind the write are released.
fn drain_with(sm: &mut PartitionStateMachine, mut persist: impl FnMut(&WriteRequest)) -> Turn {
    let mut turn = Turn::default();
    for _ in 0..100 {
        let ready = sm.ready();
        let write = ready.write.clone();
        turn.absorb(ready);
        match write {
            Some(w) => {
                persist(&w);
                sm.on_write_complete(w.id);
            }
            None => return turn,
        }
    }
    panic!("ready() kept producing writes");
}

/// [`drain_with`] without storage.
fn drain(sm: &mut PartitionStateMachine) -> Turn {
    drain_with(sm, |_| {})
}

/// Tick until the machine leaves the follower role (its election timer fired); returns the ticks.
fn tick_until_timeout(sm: &mut PartitionStateMachine) -> u32 {
    for t in 1..=100 {
        sm.tick();
        if sm.role() != Role::Follower {
            return t;
        }
    }
    panic!("election timer never fired");
}

/// Make a lone machine of a 3-voter cluster (1, 2, 3) leader of `term`, answering its pre-vote and
/// vote requests by hand as node 2. Returns the outputs of the turns (barrier not yet committed).
fn make_leader_by_hand(sm: &mut PartitionStateMachine) -> Turn {
    let mut turn = Turn::default();
    tick_until_timeout(sm);
    turn.extend(&drain(sm));
    let term = sm.term() + 1;
    sm.step(env(2, sm.node().0, vote_resp(term, true, true))).expect("pre-vote grant");
    assert_eq!(sm.role(), Role::Candidate);
    turn.extend(&drain(sm));
    sm.step(env(2, sm.node().0, vote_resp(term, true, false))).expect("vote grant");
    assert_eq!(sm.role(), Role::Leader);
    assert_eq!(sm.term(), term);
    turn
}

fn snapshot(sm: &PartitionStateMachine) -> (Role, HardState, LogIndex, Term, LogIndex, Option<NodeId>) {
    (sm.role(), sm.hard_state(), sm.last_index(), sm.last_term(), sm.applied_index(), sm.leader())
}

// ----- a tiny network -------------------------------------------------------------------------

/// A few machines, a `MemoryWal` per node, and directed links that can be cut.
struct Net {
    nodes: BTreeMap<NodeId, PartitionStateMachine>,
    wals: BTreeMap<NodeId, MemoryWal>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    delivered: Vec<Envelope>,
    dropped: Vec<Envelope>,
    /// Everything each node produced (messages are what it sent, delivered or not).
    outputs: BTreeMap<NodeId, Turn>,
}

impl Net {
    fn new(machines: Vec<PartitionStateMachine>) -> Net {
        let mut net = Net {
            nodes: BTreeMap::new(),
            wals: BTreeMap::new(),
            blocked: BTreeSet::new(),
            delivered: Vec::new(),
            dropped: Vec::new(),
            outputs: BTreeMap::new(),
        };
        for sm in machines {
            let node = sm.node();
            net.wals.insert(node, MemoryWal::new());
            net.outputs.insert(node, Turn::default());
            net.nodes.insert(node, sm);
        }
        net
    }

    /// Fresh machines with default settings.
    fn fresh(ids: &[u64]) -> Net {
        Net::fresh_with(ids, |_| {})
    }

    /// Fresh machines whose configs are adjusted by `tweak`.
    fn fresh_with(ids: &[u64], tweak: impl Fn(&mut PartitionConfig)) -> Net {
        let machines = ids
            .iter()
            .map(|&n| {
                let mut c = config(n, ids);
                tweak(&mut c);
                PartitionStateMachine::new(c).unwrap()
            })
            .collect();
        Net::new(machines)
    }

    /// Machines restored from the given WAL contents, with each node's `MemoryWal` holding them.
    fn restored(specs: Vec<(PartitionConfig, HardState, Vec<LogEntry>)>) -> Net {
        let mut net = Net::new(Vec::new());
        for (cfg, hard_state, entries) in specs {
            let node = cfg.node;
            let sm = restored(cfg, hard_state, entries.clone());
            net.wals.insert(node, MemoryWal::new());
            net.outputs.insert(node, Turn::default());
            net.nodes.insert(node, sm);
            net.seed_wal(node.0, hard_state, entries);
        }
        net
    }

    /// Store what a restored machine's WAL would hold.
    fn seed_wal(&mut self, node: u64, hard_state: HardState, entries: Vec<LogEntry>) {
        let write = PartitionWrite {
            partition: P,
            truncate_from: None,
            entries,
            hard_state: Some(hard_state),
            ..Default::default()
        };
        self.wals[&id(node)].write(&WalBatch { writes: vec![write] }).expect("seed wal");
    }

    fn sm(&self, node: u64) -> &PartitionStateMachine {
        &self.nodes[&id(node)]
    }

    fn sm_mut(&mut self, node: u64) -> &mut PartitionStateMachine {
        self.nodes.get_mut(&id(node)).expect("known node")
    }

    fn cut(&mut self, a: u64, b: u64) {
        self.blocked.insert((id(a), id(b)));
        self.blocked.insert((id(b), id(a)));
    }

    fn isolate(&mut self, a: u64) {
        let others: Vec<u64> = self.nodes.keys().map(|n| n.0).filter(|&n| n != a).collect();
        for b in others {
            self.cut(a, b);
        }
    }

    fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Drain one node: writes go to its WAL and are completed at once. Returns its outputs.
    fn flush(&mut self, node: u64) -> Turn {
        let wal = &self.wals[&id(node)];
        let sm = self.nodes.get_mut(&id(node)).expect("known node");
        let turn = drain_with(sm, |w| wal.write(&WalBatch { writes: vec![w.write.clone()] }).expect("wal write"));
        self.outputs.get_mut(&id(node)).expect("known node").extend(&turn);
        turn
    }

    /// Deliver one message unless its link is cut. Step errors fail the test.
    fn deliver(&mut self, envelope: Envelope) {
        if self.blocked.contains(&(envelope.from, envelope.to)) {
            self.dropped.push(envelope);
            return;
        }
        self.delivered.push(envelope.clone());
        let to = envelope.to;
        if let Err(e) = self.nodes.get_mut(&to).expect("known node").step(envelope.clone()) {
            panic!("step of {envelope:?} failed: {e}");
        }
    }

    /// Flush every node and deliver what they sent, until nobody has anything to send.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let ids: Vec<u64> = self.nodes.keys().map(|n| n.0).collect();
            let mut messages = Vec::new();
            for n in ids {
                messages.extend(self.flush(n).messages);
            }
            if messages.is_empty() {
                return;
            }
            for m in messages {
                self.deliver(m);
            }
        }
        panic!("the network never settled");
    }

    fn tick(&mut self, node: u64) {
        self.sm_mut(node).tick();
    }

    fn tick_all(&mut self) {
        for sm in self.nodes.values_mut() {
            sm.tick();
        }
    }

    /// Take (and reset) what `node` produced so far.
    fn take_output(&mut self, node: u64) -> Turn {
        std::mem::take(self.outputs.get_mut(&id(node)).expect("known node"))
    }

    /// Delivered messages matching `pred`, from index `since` of the delivery log.
    fn delivered_since(&self, since: usize, pred: impl Fn(&Envelope) -> bool) -> Vec<Envelope> {
        self.delivered[since..].iter().filter(|e| pred(e)).cloned().collect()
    }
}

/// Make `leader` the leader by firing its election timer (only) and letting the network settle;
/// its barrier is committed and its leadership published afterwards.
fn elect(net: &mut Net, leader: u64) {
    tick_until_timeout(net.sm_mut(leader));
    assert_eq!(net.sm(leader).role(), Role::PreCandidate, "a timeout starts a pre-vote");
    net.settle();
    assert_eq!(net.sm(leader).role(), Role::Leader, "node {leader} should have won");
    assert!(net.sm(leader).is_leader(), "the barrier should be committed and applied");
}

/// A fresh 3-node cluster (1, 2, 3) with node 1 as published leader of term 1.
fn three_with_leader() -> Net {
    let mut net = Net::fresh(&[1, 2, 3]);
    elect(&mut net, 1);
    assert_eq!(net.sm(1).term(), 1);
    net
}


//! The Raft protocol of one partition as a pure state machine ([`PartitionStateMachine`]).
//!
//! Inputs are method calls: [`PartitionStateMachine::tick`], [`PartitionStateMachine::step`] (an
//! incoming message), [`PartitionStateMachine::propose`], [`PartitionStateMachine::commit`] /
//! [`PartitionStateMachine::rollback`] (two-phase proposals),
//! [`PartitionStateMachine::on_write_complete`] and [`PartitionStateMachine::on_read_complete`].
//! Outputs accumulate until the driver takes them with [`PartitionStateMachine::ready`]; see
//! [`ready`] for the ordering contract. Nothing here reads a clock, performs I/O or spawns work, so
//! the same inputs always produce the same outputs.
//!
//! The protocol follows the Raft paper (Ongaro & Ousterhout, 2014) and the thesis's pre-vote
//! (§9.6) and check-quorum (§6.2). Section references are in the tests.

mod apply;
mod election;
mod log;
mod membership;
mod progress;
mod proposals;
mod quiescence;
mod reads;
pub mod ready;
mod replication;
mod snapshot;
mod stall;
mod transfer;

pub use membership::Membership;
pub use progress::{Progress, ProgressState};
pub use proposals::{Proposal, ProposalAccepted};
pub use reads::ReadConsistency;
pub use ready::{ClientReply, Delivery, LeaderChange, ProposalCommitted, ReadRequest, ReadState, Ready, WriteRequest};

use crate::config::PartitionConfig;
use crate::entry::LogEntry;
use crate::error::{ConfigError, FatalError, StepError};
use crate::hlc::HybridLogicalClock;
use crate::ids::{LogIndex, NodeId, PartitionId, Term};
use crate::message::{Envelope, RaftMessage};
use crate::rng::SplitMix64;
use crate::snapshot::SnapshotMeta;
use crate::wal::{HardState, PartitionWrite};
use apply::Applier;
use log::RaftLog;
use std::collections::{BTreeMap, HashMap};

/// Role of a replica in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Runs a pre-vote round; has not changed its term.
    PreCandidate,
    /// Runs an election in its current term.
    Candidate,
    /// Leads the current term.
    Leader,
}

/// What a partition's WAL held at startup.
#[derive(Clone, Debug, Default)]
pub struct RestoreState {
    /// Last stored hard state.
    pub hard_state: Option<HardState>,
    /// The latest stored snapshot meta; the application's state is restored from its bytes
    /// before the entries after it are replayed.
    pub snapshot: Option<SnapshotMeta>,
    /// The WAL's compaction floor (never above the snapshot's index).
    pub compacted_through: LogIndex,
    /// The snapshot's bytes are missing or corrupt: the replica keeps its log and hard state but
    /// delivers nothing and never campaigns until it installs a snapshot at or above
    /// `snapshot.index` from the leader, which it asks for (`RaftMessage::SnapshotNeeded`).
    pub snapshot_missing: bool,
    /// The stored entries after the snapshot (or from index 1 without one), consecutive.
    pub entries: Vec<LogEntry>,
}

/// A WAL read for a follower's catch-up: for whom, in which term, anchored where.
#[derive(Clone, Debug)]
struct CatchUpRead {
    peer: NodeId,
    term: Term,
    request: ReadRequest,
    /// The follower's `next_index - 1` when the read was issued.
    prev: LogIndex,
    /// Term at `prev` when known without the read (the read then starts at `prev + 1`).
    anchor: Option<Term>,
}

/// A message waiting for the write it depends on to become durable.
#[derive(Clone, Debug)]
struct HeldMessage {
    after_write: u64,
    envelope: Envelope,
}

/// One replica of one partition. See the module docs.
#[derive(Debug)]
pub struct PartitionStateMachine {
    config: PartitionConfig,
    role: Role,
    term: Term,
    voted_for: Option<NodeId>,
    /// Leader known for `term` (for this node: set when elected, published after the barrier).
    leader: Option<NodeId>,
    /// Leadership published to the application (barrier committed and applied).
    published: bool,
    /// Index of this leader's barrier entry.
    barrier_index: LogIndex,
    log: RaftLog,
    applier: Applier,
    progress: BTreeMap<NodeId, Progress>,
    votes: HashMap<NodeId, bool>,
    election_elapsed: u32,
    /// Ticks since this replica started (saturating; the lease guard of `leader_recently_heard`).
    ticks_since_start: u32,
    /// Restored with a term above 0: before it stopped it may have confirmed a leader's lease.
    restarted: bool,
    heartbeat_elapsed: u32,
    check_quorum_elapsed: u32,
    randomized_election_timeout: u32,
    rng: SplitMix64,
    clock: HybridLogicalClock,
    /// Term or vote changed: must be written before dependent messages go out.
    hard_state_dirty: bool,
    /// Only the commit index changed: rides along with the next write, never forces one (a
    /// lagging persisted commit index only means fewer entries are replayed as "restored").
    commit_dirty: bool,
    next_write_id: u64,
    completed_write_id: u64,
    /// The write that makes this candidate's own vote durable (it counts only once completed).
    vote_write_id: u64,
    /// Ticks since a write last completed while one is outstanding (see `stall`).
    write_stall_ticks: u32,
    held_messages: Vec<HeldMessage>,
    next_read_id: u64,
    pending_reads: HashMap<u64, CatchUpRead>,
    needs_broadcast: bool,
    out: Ready,
    /// Leader last reported through `Ready::leader_change`.
    reported_leader: Option<NodeId>,
    halted: Option<FatalError>,
    snapshots: snapshot::Snapshots,
    quiescence: quiescence::Quiescence,
    reads: reads::Reads,
    transfer: Option<transfer::Transfer>,
}

impl PartitionStateMachine {
    /// A fresh replica with an empty log.
    pub fn new(config: PartitionConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let seed = config.seed
            ^ config.node.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ u64::from(config.partition.0).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        let clock = HybridLogicalClock::new(config.node);
        let mut sm = PartitionStateMachine {
            role: Role::Follower,
            term: 0,
            voted_for: None,
            leader: None,
            published: false,
            barrier_index: 0,
            log: RaftLog::default(),
            applier: Applier::default(),
            progress: BTreeMap::new(),
            votes: HashMap::new(),
            election_elapsed: 0,
            ticks_since_start: 0,
            restarted: false,
            heartbeat_elapsed: 0,
            check_quorum_elapsed: 0,
            randomized_election_timeout: config.election_timeout_min_ticks,
            rng: SplitMix64::new(seed),
            clock,
            hard_state_dirty: false,
            commit_dirty: false,
            next_write_id: 1,
            completed_write_id: 0,
            vote_write_id: 0,
            write_stall_ticks: 0,
            held_messages: Vec::new(),
            next_read_id: 1,
            pending_reads: HashMap::new(),
            needs_broadcast: false,
            out: Ready::default(),
            reported_leader: None,
            halted: None,
            snapshots: snapshot::Snapshots::default(),
            quiescence: quiescence::Quiescence::default(),
            reads: reads::Reads::default(),
            transfer: None,
            config,
        };
        sm.log.membership.set_base(sm.base_membership());
        sm.reset_election_timer();
        let spread = sm.config.initial_election_spread_ticks;
        if spread > 0 {
            let (min, max) = (sm.config.election_timeout_min_ticks, sm.config.election_timeout_max_ticks);
            sm.randomized_election_timeout = sm.rng.in_range(min, max.saturating_add(spread));
        }
        Ok(sm)
    }

    fn base_membership(&self) -> Membership {
        Membership {
            voters: self.config.voters.iter().copied().collect(),
            learners: self.config.learners.iter().copied().collect(),
        }
    }

    /// A replica restored from its WAL. Committed application entries are queued as `restored`
    /// deliveries in the first [`Ready`]; proposed-only and rolled-back entries are not delivered.
    pub fn restore(config: PartitionConfig, state: RestoreState) -> Result<Self, RestoreError> {
        let mut sm = Self::new(config).map_err(RestoreError::Config)?;
        let hard_state = state.hard_state.unwrap_or_default();
        let corrupt = |detail: String| RestoreError::Fatal(FatalError::CorruptRestore(detail));
        let (base, base_term) = state.snapshot.as_ref().map_or((0, 0), |m| (m.index, m.term));
        if state.compacted_through > base {
            return Err(corrupt(format!(
                "the log is compacted through {} but the snapshot covers only {base}",
                state.compacted_through
            )));
        }
        if let Some(meta) = &state.snapshot {
            if meta.partition != sm.config.partition || meta.term > hard_state.term {
                return Err(corrupt(format!(
                    "snapshot meta of {} at term {} does not fit (hard state term {})",
                    meta.partition, meta.term, hard_state.term
                )));
            }
        }
        let mut prev_term = base_term;
        for (expected, entry) in (base + 1..).zip(state.entries.iter()) {
            if entry.index != expected {
                return Err(RestoreError::Fatal(FatalError::CorruptRestore(format!(
                    "entry index {} where {expected} was expected",
                    entry.index
                ))));
            }
            if entry.term < prev_term || entry.term > hard_state.term {
                return Err(RestoreError::Fatal(FatalError::CorruptRestore(format!(
                    "entry {} has term {} (previous {prev_term}, hard state term {})",
                    entry.index, entry.term, hard_state.term
                ))));
            }
            prev_term = entry.term;
        }
        sm.term = hard_state.term;
        sm.restarted = hard_state.term > 0;
        sm.voted_for = hard_state.voted_for;
        // Tickets issued after a restart must order after every ticket already in the log (the
        // last entry may be a barrier or a marker carrying an older ticket).
        if let Some(newest) = state.entries.iter().filter(|e| e.issues_ticket()).map(|e| e.ticket).max() {
            sm.clock.observe(newest, 0);
        }
        sm.log = RaftLog::restored_after(base, base_term, state.entries, hard_state.commit);
        match state.snapshot {
            Some(meta) => {
                sm.clock.observe(meta.last_ticket, 0);
                sm.log.membership.set_base(meta.membership.clone());
                sm.applier.install(&meta, &mut Vec::new());
                if state.snapshot_missing {
                    tracing::warn!(partition = %meta.partition, index = meta.index, "the snapshot's bytes are lost; repairing from the leader");
                    sm.snapshots.repair_from = Some(meta.index);
                }
                sm.snapshots.latest = Some(meta);
            }
            None => sm.log.membership.set_base(sm.base_membership()),
        }
        sm.snapshots.compacted_through = state.compacted_through;
        sm.apply_committed(true);
        Ok(sm)
    }

    // ----- accessors -------------------------------------------------------------------------

    /// This node.
    pub fn node(&self) -> NodeId {
        self.config.node
    }
    /// This partition.
    pub fn partition(&self) -> PartitionId {
        self.config.partition
    }
    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// Vote cast in the current term.
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }
    /// Leader known for the current term (this node once elected, even before publication).
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// The leader of the current term once its leadership is established as far as this replica
    /// can tell: on the leader, once its barrier is applied ([`Self::is_leader`]); on another
    /// replica, once an entry of the current term is committed here (the barrier, at the latest).
    /// Proposals sent to it then no longer meet `LeadershipPending`.
    pub fn established_leader(&self) -> Option<NodeId> {
        match self.role {
            Role::Leader => self.published.then_some(self.config.node),
            _ => self.leader.filter(|_| self.log.term_at(self.log.commit) == Some(self.term)),
        }
    }
    /// True when this replica leads and its leadership has been published (barrier applied).
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader && self.published
    }
    /// Highest index known committed.
    pub fn commit_index(&self) -> LogIndex {
        self.log.commit
    }
    /// Highest index applied (delivered or skipped) by the cursor.
    pub fn applied_index(&self) -> LogIndex {
        self.log.applied
    }
    /// Highest durable index matching the in-memory log.
    pub fn stable_index(&self) -> LogIndex {
        self.log.stable
    }
    /// Last log index.
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }
    /// Term of the last log entry.
    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }
    /// Term of the entry at `index`, if still in memory.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }
    /// Entry at `index`, if still in memory.
    pub fn entry(&self, index: LogIndex) -> Option<&LogEntry> {
        self.log.get(index)
    }
    /// The leader's view of `peer` (leaders only).
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.progress.get(&peer)
    }
    /// On a leader, how many entries its furthest-behind peer (voter or learner) lacks: its last
    /// index minus that peer's match index; 0 on other replicas and with no peer.
    pub fn replication_lag(&self) -> LogIndex {
        if self.role != Role::Leader {
            return 0;
        }
        let last = self.log.last_index();
        self.progress.values().map(|p| last.saturating_sub(p.match_index)).max().unwrap_or(0)
    }
    /// The hard state as it is now (possibly not yet durable).
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, voted_for: self.voted_for, commit: self.log.commit }
    }
    /// The fatal condition that halted this replica, if any.
    pub fn halted(&self) -> Option<&FatalError> {
        self.halted.as_ref()
    }
    /// Voting members (of the configuration in effect).
    pub fn voters(&self) -> Vec<NodeId> {
        self.membership().voters.iter().copied().collect()
    }
    /// The configuration in effect: the last config entry in the log (committed or not), or the
    /// configured base before any.
    pub fn membership(&self) -> &Membership {
        self.log.membership.current()
    }
    /// True while the last membership change is not committed (no new change may start).
    pub fn membership_change_pending(&self) -> bool {
        self.log.membership.latest_index() > self.log.commit
    }
    /// Index of the last config entry in the log (0 if none).
    pub fn membership_index(&self) -> LogIndex {
        self.log.membership.latest_index()
    }
    /// Number of two-phase tickets held (Raft-committed, awaiting commit/rollback).
    pub fn held_tickets(&self) -> usize {
        self.applier.held.len()
    }
    /// Resolved two-phase tickets still remembered (dropped once a snapshot covers them).
    pub fn remembered_resolutions(&self) -> usize {
        self.applier.resolved.len()
    }
    /// The latest snapshot this replica has (stored, or stored by the write being made).
    pub fn snapshot(&self) -> Option<&SnapshotMeta> {
        self.snapshots.latest.as_ref()
    }
    /// The WAL's compaction floor as of the writes issued so far.
    pub fn compacted_through(&self) -> LogIndex {
        self.snapshots.compacted_through
    }
    /// True while the replica waits for the leader's snapshot to replace a lost one.
    pub fn is_repairing(&self) -> bool {
        self.snapshots.repair_from.is_some()
    }

    // ----- inputs ----------------------------------------------------------------------------

    /// Advance logical time by one tick.
    pub fn tick(&mut self) {
        if self.halted.is_some() || self.quiescence.quiet {
            return;
        }
        self.ticks_since_start = self.ticks_since_start.saturating_add(1);
        if self.tick_write_stall() {
            return;
        }
        if self.snapshots.repair_from.is_some() {
            self.hand_over("repairing its lost snapshot");
        }
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// Process a message from another replica. Errors leave the state unchanged.
    pub fn step(&mut self, envelope: Envelope) -> Result<(), StepError> {
        if let Some(fatal) = &self.halted {
            return Err(StepError::Halted(fatal.clone()));
        }
        if envelope.partition != self.config.partition {
            return Err(StepError::WrongPartition { expected: self.config.partition, got: envelope.partition });
        }
        let from = envelope.from;
        // Only voters' votes count. Requests are answered whoever sends them (thesis §4.1: a
        // replica's configuration may be stale, so it must not refuse a candidate or a leader it
        // does not know yet — a joining learner learns the membership from the log it receives);
        // pre-vote and leader stickiness keep removed nodes from disrupting a live leader.
        let is_vote_answer = matches!(envelope.message, RaftMessage::VoteResponse { .. });
        if from == self.config.node || (is_vote_answer && !self.membership().voters.contains(&from)) {
            return Err(StepError::UnknownSender(from));
        }
        if let RaftMessage::AppendRequest { term, prev_log_index, entries, .. } = &envelope.message {
            validate_append(*term, *prev_log_index, entries)?;
        }
        if let RaftMessage::InstallSnapshot { term, meta, offset, data, done, chunk_checksum } = &envelope.message {
            if meta.partition != self.config.partition {
                return Err(StepError::WrongPartition { expected: self.config.partition, got: meta.partition });
            }
            crate::snapshot::validate_chunk(*term, meta, *offset, data, *done, *chunk_checksum)?;
        }
        let message = envelope.message;
        self.wake_before_step(&message);
        let before = self.quiet_view();
        // A vote request of a newer term from the node this replica follows: that node no longer
        // leads (a leader never campaigns), so stop treating it as a live leader.
        if matches!(message, RaftMessage::VoteRequest { term, .. } if term > self.term)
            && self.role != Role::Leader
            && self.leader == Some(from)
        {
            self.leader = None;
            self.publish_leader();
        }
        // §5.1: any higher term seen makes this replica adopt it and step down. A granted
        // pre-vote answer carries the prospective term and must not.
        let granted_pre_vote = matches!(message, RaftMessage::VoteResponse { pre_vote: true, granted: true, .. });
        let pre_vote_request = matches!(message, RaftMessage::VoteRequest { pre_vote: true, .. });
        let ignored_vote_request = match message {
            RaftMessage::VoteRequest { pre_vote: false, transfer, term, last_log_index, last_log_term } => {
                (!transfer && self.ignores_vote_request(term))
                    || self.never_granted_to_outsider(from, last_log_index, last_log_term)
            }
            _ => false,
        };
        if ignored_vote_request {
            return Ok(());
        }
        if message.term() > self.term && !granted_pre_vote && !pre_vote_request {
            let from_leader = matches!(
                message,
                RaftMessage::AppendRequest { .. }
                    | RaftMessage::InstallSnapshot { .. }
                    | RaftMessage::Quiesce { ack: false, .. }
                    | RaftMessage::ReadRound { ack: false, .. }
                    | RaftMessage::TimeoutNow { .. }
            );
            let leader = from_leader.then_some(from);
            self.become_follower(message.term(), leader);
        }
        let leader_traffic = match &message {
            RaftMessage::AppendRequest { entries, .. } => !entries.is_empty(),
            RaftMessage::InstallSnapshot { .. } => true,
            _ => false,
        };
        match message {
            RaftMessage::VoteRequest { term, last_log_index, last_log_term, pre_vote, .. } => {
                self.handle_vote_request(from, term, last_log_index, last_log_term, pre_vote)
            }
            RaftMessage::VoteResponse { term, granted, pre_vote } => {
                self.handle_vote_response(from, term, granted, pre_vote)
            }
            RaftMessage::AppendRequest { term, prev_log_index, prev_log_term, entries, leader_commit } => {
                self.handle_append_request(from, term, prev_log_index, prev_log_term, entries, leader_commit)
            }
            RaftMessage::AppendResponse { term, prev_log_index, result } => {
                self.handle_append_response(from, term, prev_log_index, result)
            }
            RaftMessage::InstallSnapshot { term, meta, offset, data, done, .. } => {
                self.handle_install_snapshot(from, term, meta, offset, data, done)
            }
            RaftMessage::SnapshotResponse { term, index, snapshot_term, next_offset, installed } => {
                self.handle_snapshot_response(from, term, index, snapshot_term, next_offset, installed)
            }
            RaftMessage::SnapshotNeeded { term, index } => self.handle_snapshot_needed(from, term, index),
            RaftMessage::Quiesce { term, index, index_term, ack } => {
                self.handle_quiesce(from, term, index, index_term, ack)
            }
            RaftMessage::ReadRound { term, round, ack } => self.handle_read_round(from, term, round, ack),
            RaftMessage::ReadIndexRequest { term, request } => self.handle_read_index_request(from, term, request),
            RaftMessage::ReadIndexResponse { term, request, index } => {
                self.handle_read_index_response(from, term, request, index)
            }
            RaftMessage::TimeoutNow { term } => self.handle_timeout_now(from, term),
            // Handled by the runtime's system coordinator, never by a partition.
            RaftMessage::MembershipRequest { .. } => {}
        }
        self.wake_after_step(leader_traffic, before);
        Ok(())
    }

    /// The WAL made write `id` (and every earlier one) durable.
    pub fn on_write_complete(&mut self, id: u64) {
        if id <= self.completed_write_id || self.halted.is_some() {
            return;
        }
        self.completed_write_id = id;
        self.write_progressed();
        self.log.write_completed(id);
        let (ready, held): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.held_messages).into_iter().partition(|m| m.after_write <= id);
        self.held_messages = held;
        self.out.messages.extend(ready.into_iter().map(|m| m.envelope));
        match self.role {
            Role::Leader => self.maybe_commit(),
            Role::Candidate => self.win_if_elected(),
            _ => {}
        }
        self.apply_committed(false);
    }

    /// Is there something for [`ready`](Self::ready) to hand out (messages, a write,
    /// deliveries, replies, …)?
    pub fn has_ready(&self) -> bool {
        !self.out.is_empty()
            || self.hard_state_dirty
            || self.commit_dirty
            || self.log.has_unpersisted()
            || (self.needs_broadcast && self.role == Role::Leader)
            || self.snapshots.pending_write.is_some()
    }

    /// Take everything produced since the last call. Call after each batch of inputs.
    pub fn ready(&mut self) -> Ready {
        if self.halted.is_none() {
            self.settle_forwarded_reads();
            if self.needs_broadcast && self.role == Role::Leader {
                self.needs_broadcast = false;
                self.broadcast_append();
            }
            self.maybe_request_snapshot();
            let forced = self.held_messages.iter().any(|m| m.after_write >= self.next_write_id)
                || self.snapshots.pending_write.is_some();
            if self.hard_state_dirty || self.log.has_unpersisted() || forced {
                let id = self.next_write_id;
                self.next_write_id += 1;
                let mut write = PartitionWrite { partition: self.config.partition, ..Default::default() };
                self.log.take_unpersisted(id, &mut write);
                if let Some((meta, through)) = self.snapshots.pending_write.take() {
                    write.compact_through = Some(through);
                    write.snapshot = Some(meta);
                }
                let commit_dirty = std::mem::take(&mut self.commit_dirty);
                if std::mem::take(&mut self.hard_state_dirty) || commit_dirty {
                    write.hard_state = Some(self.hard_state());
                }
                self.out.write = Some(crate::raft::WriteRequest { id, write });
            }
            self.log.evict(self.config.log_cache_entries);
        }
        std::mem::take(&mut self.out)
    }

    // ----- shared internals ------------------------------------------------------------------

    fn quorum(&self) -> usize {
        self.membership().quorum()
    }

    fn is_voter(&self) -> bool {
        self.membership().voters.contains(&self.config.node)
    }

    /// Voters campaign; so does a voter being removed by a change that is not known committed yet
    /// (thesis §4.2.2: it may be the only one able to finish committing that change — its votes
    /// are counted in the new configuration, without itself). Learners never campaign, nor does
    /// a replica whose disk is stalled (`stall`).
    fn can_campaign(&self) -> bool {
        let me = self.config.node;
        // A replica repairing its snapshot has no application state to serve with, but it may hold
        // the only up-to-date log: it campaigns, and as leader hands over at once (`tick`).
        !self.is_write_stalled()
            && (self.is_voter()
                || (self.membership_change_pending() && self.log.membership.previous().voters.contains(&me)))
    }

    /// Every other member (voters and learners): who a leader replicates to.
    fn peers(&self) -> Vec<NodeId> {
        let me = self.config.node;
        self.membership().members().filter(|&n| n != me).collect()
    }

    /// Every other voter: who a candidate asks for votes.
    fn voter_peers(&self) -> Vec<NodeId> {
        let me = self.config.node;
        self.membership().voters.iter().copied().filter(|&n| n != me).collect()
    }

    /// The leader's own proposal changed the membership: track new members, forget removed ones.
    fn membership_changed(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let peers = self.peers();
        let next = self.log.last_index() + 1;
        self.progress.retain(|node, _| peers.contains(node));
        for peer in peers {
            self.progress.entry(peer).or_insert_with(|| Progress::new(next));
        }
        self.needs_broadcast = true;
    }

    /// §4.2.2 of the thesis: a leader that is not a voter of the committed configuration steps down.
    fn step_down_if_removed(&mut self) {
        if self.canary(|c| c.keep_leading_when_removed) {
            return;
        }
        if self.role == Role::Leader && !self.is_voter() && self.log.commit >= self.log.membership.latest_index() {
            tracing::info!(partition = %self.config.partition, node = %self.config.node, "removed from the voters; stepping down");
            self.become_follower(self.term, None);
        }
    }

    fn envelope(&self, to: NodeId, message: RaftMessage) -> Envelope {
        Envelope { partition: self.config.partition, from: self.config.node, to, message }
    }

    fn send(&mut self, to: NodeId, message: RaftMessage) {
        let envelope = self.envelope(to, message);
        self.out.messages.push(envelope);
    }

    /// Send once everything this replica has decided so far is durable.
    fn send_after_persist(&mut self, to: NodeId, message: RaftMessage) {
        let envelope = self.envelope(to, message);
        let after_write =
            if self.hard_state_dirty || self.log.has_unpersisted() || self.snapshots.pending_write.is_some() {
                self.next_write_id
            } else {
                self.next_write_id - 1
            };
        if after_write <= self.completed_write_id {
            self.out.messages.push(envelope);
        } else {
            self.held_messages.push(HeldMessage { after_write, envelope });
        }
    }

    fn set_term(&mut self, term: Term) {
        if term != self.term {
            self.term = term;
            self.voted_for = None;
            self.hard_state_dirty = true;
            // Held answers of earlier terms may describe entries a newer leader has since
            // truncated: never release them (dropping a Raft message is always safe).
            self.held_messages.retain(|m| m.envelope.message.term() >= term);
        }
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.randomized_election_timeout =
            self.rng.in_range(self.config.election_timeout_min_ticks, self.config.election_timeout_max_ticks);
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if self.role == Role::Leader {
            self.leader_reads_lost();
        }
        self.transfer = None;
        self.set_term(term);
        self.role = Role::Follower;
        self.leader = leader;
        self.published = false;
        self.progress.clear();
        self.votes.clear();
        self.pending_reads.clear();
        self.reset_election_timer();
        self.publish_leader();
    }

    /// A message from the leader of this term (an append, a snapshot chunk, a read round): a
    /// candidate learns it lost, the sender becomes the known leader, the election timer restarts.
    fn heard_from_leader(&mut self, from: NodeId, term: Term) {
        if self.role != Role::Follower && term == self.term {
            self.become_follower(term, Some(from));
        }
        if self.leader != Some(from) {
            self.leader = Some(from);
            self.publish_leader();
        }
        self.election_elapsed = 0;
    }

    /// Emit a leader change when the (term, leader) pair visible to the application changed.
    fn publish_leader(&mut self) {
        let visible = if self.role == Role::Leader && !self.published { None } else { self.leader };
        if visible != self.reported_leader {
            self.out.leader_change = Some(LeaderChange { term: self.term, leader: visible });
            self.reported_leader = visible;
        }
    }

    /// Is the planted bug selected by `bug` switched on? Always false without `canary-bugs`.
    #[cfg(feature = "canary-bugs")]
    fn canary(&self, bug: fn(&crate::config::CanaryBugs) -> bool) -> bool {
        bug(&self.config.canary)
    }

    #[cfg(not(feature = "canary-bugs"))]
    fn canary(&self, _bug: fn(&crate::config::CanaryBugs) -> bool) -> bool {
        false
    }

    fn halt(&mut self, fatal: FatalError) {
        tracing::error!(partition = %self.config.partition, node = %self.config.node, %fatal, "partition halted");
        self.out.fatal = Some(fatal.clone());
        self.halted = Some(fatal);
    }

    /// Deliver committed entries up to min(commit, stable), in order.
    fn apply_committed(&mut self, restored: bool) {
        if self.snapshots.repair_from.is_some() && !self.canary(|c| c.deliver_while_repairing) {
            // Nothing to apply to until the leader's snapshot replaces the lost one.
            return;
        }
        let target = self.log.commit.min(self.log.stable);
        while self.log.applied < target {
            let index = self.log.applied + 1;
            let Some(entry) = self.log.get(index) else { break };
            self.snapshots.applied_bytes += entry.payload.len() as u64;
            self.applier.apply(entry, restored, &mut self.out.deliveries, &mut self.out.replies);
            self.log.applied = index;
            if self.role == Role::Leader && !self.published && index >= self.barrier_index {
                self.published = true;
                self.publish_leader();
                self.start_read_round();
            }
        }
    }
}

/// Why a restore failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(ConfigError),
    /// Inconsistent WAL contents.
    #[error(transparent)]
    Fatal(FatalError),
}

fn validate_append(term: Term, prev_log_index: LogIndex, entries: &[LogEntry]) -> Result<(), StepError> {
    let mut expected = prev_log_index.checked_add(1).ok_or(StepError::MalformedAppend("prev_log_index overflows"))?;
    let mut prev_term = 0;
    for entry in entries {
        if entry.index != expected {
            return Err(StepError::MalformedAppend("entries are not consecutive from prev_log_index + 1"));
        }
        if entry.term > term {
            return Err(StepError::MalformedAppend("entry term above the leader's term"));
        }
        if entry.term < prev_term {
            return Err(StepError::MalformedAppend("entry terms decrease"));
        }
        prev_term = entry.term;
        expected = expected.checked_add(1).ok_or(StepError::MalformedAppend("index overflows"))?;
    }
    Ok(())
}

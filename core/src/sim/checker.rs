//! Safety invariants the simulator checks after every step (Raft paper Figure 3):
//! election safety (one leader per term, even across restarts of the same node), log matching,
//! leader completeness, state-machine safety, commit indexes that never decrease (in memory per
//! incarnation, and durably), leaders inside their configuration, and that no acknowledged
//! proposal is lost, no rolled-back one delivered, and no acknowledged ticket answered "unknown".
//!
//! Logs are compared through *chain hashes*: the hash at index `i` covers every entry up to `i`, so
//! two logs with the same (index, term) must have the same chain hash (log matching), and one
//! comparison at the highest committed index checks a whole committed prefix.

use crate::entry::{Fnv64, LogEntry};
use crate::hlc::Ticket;
use crate::ids::{LogIndex, NodeId, PartitionId, Term};
use crate::raft::Delivery;
use crate::sim::app::{chain, AppState};
use crate::snapshot::SnapshotMeta;
use crate::wal::PartitionWrite;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// Which invariant broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// Two leaders in one term of one partition (§5.2).
    ElectionSafety,
    /// Two logs hold the same (index, term) with different prefixes (§5.3).
    LogMatching,
    /// A leader lacks an entry committed before its term (§5.4).
    LeaderCompleteness,
    /// Two replicas committed or delivered different entries at one position (§5.4.3).
    StateMachineSafety,
    /// An acknowledged proposal is missing from the committed log or the deliveries.
    LostAcknowledgedWrite,
    /// An entry whose rollback was acknowledged was delivered (or the reverse).
    TwoPhaseOutcome,
    /// The cluster did not converge after faults healed.
    Liveness,
    /// A state machine halted with a fatal error.
    Fatal,
    /// A replica's commit index (in memory, or in its durable hard state) went down, or its
    /// durable term did.
    CommitRegressed,
    /// A replica leads a partition whose committed configuration does not count it as a voter.
    LeaderOutsideConfiguration,
    /// A ticket acknowledged as Raft-committed was answered `UnknownTicket`.
    UnknownAcknowledgedTicket,
    /// Leadership changed while the network was stable (more elections than the bound).
    Disruption,
    /// A linearizable or lease read showed a state older than a write acknowledged before it
    /// was issued.
    StaleRead,
    /// A tick before the replica's announced deadline
    /// ([`ticks_until_due`](crate::PartitionStateMachine::ticks_until_due)) acted: a driver that
    /// ticks lazily, as the runtime's node clock does, would have delayed what it did.
    TimerDeadline,
}

/// A broken invariant, with enough detail to debug the seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub kind: ViolationKind,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

fn violation(kind: ViolationKind, detail: String) -> Violation {
    Violation { kind, detail }
}

/// One entry of a shadow log: its term, its chain hash, its ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ShadowEntry {
    term: Term,
    chain: u64,
    ticket: Ticket,
}

/// What the checker remembers of one replica.
#[derive(Clone, Debug, Default)]
struct ReplicaView {
    /// Index the replica's log starts after (its snapshot's, once it restored or installed one).
    base: LogIndex,
    /// The committed entry at `base` (checked when the base moved).
    base_entry: Option<ShadowEntry>,
    /// Mirror of the replica's log after `base`, maintained from its write requests.
    log: Vec<ShadowEntry>,
    /// Deliveries seen since the replica's last (re)start.
    delivered: usize,
    /// Highest commit index already checked.
    checked_commit: LogIndex,
    /// Terms in which this replica was already seen as leader and checked.
    led: HashSet<Term>,
    /// Hard state last made durable (survives restarts): term and commit never decrease.
    durable_term: Term,
    durable_commit: LogIndex,
}

impl ReplicaView {
    fn chain_at(&self, index: LogIndex) -> Option<ShadowEntry> {
        if index == 0 || index < self.base {
            return None;
        }
        if index == self.base {
            return self.base_entry;
        }
        self.log.get((index - self.base - 1) as usize).copied()
    }

    /// Does this replica hold the committed entry `known` at `index`? Entries at or below its
    /// base are covered by the snapshot, whose boundary was checked against the committed log.
    fn holds(&self, index: LogIndex, known: ShadowEntry) -> bool {
        index <= self.base || self.chain_at(index).map(|e| e.chain) == Some(known.chain)
    }

    fn last_chain(&self) -> u64 {
        self.log.last().or(self.base_entry.as_ref()).map_or(0, |e| e.chain)
    }
}

/// Invariant state of the whole simulated cluster.
#[derive(Debug, Default)]
pub struct Checker {
    replicas: HashMap<(NodeId, PartitionId), ReplicaView>,
    /// Chain hash of every (partition, index, term) ever written anywhere.
    chains: HashMap<(PartitionId, LogIndex, Term), u64>,
    /// Committed entries per partition: index → (shadow entry, term in which it was first known
    /// committed — the committing leader's term).
    committed: HashMap<PartitionId, BTreeMap<LogIndex, (ShadowEntry, Term)>>,
    /// Leader of each (partition, term), with the replica incarnation that led it.
    leaders: HashMap<(PartitionId, Term), (NodeId, u64)>,
    /// The delivery sequence every replica must follow: (index, fingerprint, ticket).
    deliveries: HashMap<PartitionId, Vec<(LogIndex, u64, Ticket)>>,
    /// Acknowledged auto-commit proposals: (partition, ticket) → last index. Tickets are scoped to
    /// their partition.
    acked: HashMap<(PartitionId, Ticket), LogIndex>,
    /// The highest last index of an acknowledged auto-commit proposal, per partition.
    acked_through: HashMap<PartitionId, LogIndex>,
    /// Two-phase tickets acknowledged as committed / rolled back.
    acked_commits: HashSet<(PartitionId, Ticket)>,
    acked_rollbacks: HashSet<(PartitionId, Ticket)>,
    /// Tickets that were delivered at least once.
    delivered_tickets: HashSet<(PartitionId, Ticket)>,
    /// Two-phase tickets acknowledged as Raft-committed (every later leader must know them).
    acked_two_phase: HashSet<(PartitionId, Ticket)>,
    /// Digest of the delivery sequence after each of its positions (`digests[p][k]` covers the
    /// first `k + 1` deliveries).
    digests: HashMap<PartitionId, Vec<u64>>,
    /// The application state every replica had at an applied index (from snapshots).
    states: HashMap<(PartitionId, LogIndex), AppState>,
    /// Snapshots checked.
    snapshots: usize,
}

impl Checker {
    /// A replica (re)started from its snapshot (with the application state restored from it)
    /// and the `durable` entries after it: its view restarts from them.
    pub fn restarted(
        &mut self,
        node: NodeId,
        partition: PartitionId,
        snapshot: Option<(&SnapshotMeta, Option<AppState>)>,
        durable: &[LogEntry],
    ) -> Result<(), Violation> {
        let view = self.replicas.entry((node, partition)).or_default();
        view.log.clear();
        view.base = 0;
        view.base_entry = None;
        view.delivered = 0;
        view.checked_commit = 0;
        view.led.clear();
        if let Some((meta, app)) = snapshot {
            self.rebase(node, meta)?;
            // Without the snapshot's bytes (being repaired) the state is empty until an install.
            if let Some(app) = app {
                self.check_snapshot_state(node, meta, app)?;
                self.replicas.entry((node, partition)).or_default().delivered = app.count as usize;
            }
        }
        let write = PartitionWrite { partition, entries: durable.to_vec(), ..Default::default() };
        self.written(node, &write)
    }

    /// The replica's application wrote a snapshot of `app` at `meta.index`: it must be exactly
    /// what the replica delivered, the global sequence's prefix, and equal to every other
    /// replica's state at that index.
    pub fn snapshot_taken(&mut self, node: NodeId, meta: &SnapshotMeta, app: AppState) -> Result<(), Violation> {
        let delivered = self.replicas.get(&(node, meta.partition)).map_or(0, |v| v.delivered);
        if app.count as usize != delivered {
            return Err(violation(
                ViolationKind::StateMachineSafety,
                format!(
                    "{node} {}: snapshot at {} holds {} entries but {delivered} were delivered",
                    meta.partition, meta.index, app.count
                ),
            ));
        }
        self.check_snapshot_state(node, meta, app)
    }

    /// The replica installed the leader's snapshot: its application state is replaced by `app`.
    pub fn installed(&mut self, node: NodeId, meta: &SnapshotMeta, app: AppState) -> Result<(), Violation> {
        self.check_snapshot_state(node, meta, app)?;
        let view = self.replicas.entry((node, meta.partition)).or_default();
        if (app.count as usize) < view.delivered {
            return Err(violation(
                ViolationKind::StateMachineSafety,
                format!(
                    "{node} {}: installing the snapshot at {} takes its state back from {} to {} entries",
                    meta.partition, meta.index, view.delivered, app.count
                ),
            ));
        }
        view.delivered = app.count as usize;
        Ok(())
    }

    /// `node` lost its data directory (its term and vote kept): its durable commit index starts
    /// over.
    pub fn wiped(&mut self, node: NodeId) {
        for ((n, _), view) in self.replicas.iter_mut() {
            if *n == node {
                view.durable_commit = 0;
            }
        }
    }

    /// Snapshots checked so far.
    pub fn snapshot_count(&self) -> usize {
        self.snapshots
    }

    fn check_snapshot_state(&mut self, node: NodeId, meta: &SnapshotMeta, app: AppState) -> Result<(), Violation> {
        let partition = meta.partition;
        self.snapshots += 1;
        let expected = match app.count {
            0 => Some(0),
            n => self.digests.get(&partition).and_then(|d| d.get(n as usize - 1)).copied(),
        };
        if expected != Some(app.digest) {
            return Err(violation(
                ViolationKind::StateMachineSafety,
                format!("{node} {partition}: snapshot at {} is not a prefix of the delivered sequence", meta.index),
            ));
        }
        match self.states.insert((partition, meta.index), app) {
            Some(other) if other != app => Err(violation(
                ViolationKind::StateMachineSafety,
                format!(
                    "{node} {partition}: state at applied index {} differs between replicas ({other:?} vs {app:?})",
                    meta.index
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The replica's log now starts after the snapshot `meta` (unless it already holds the
    /// committed entry there): its boundary must be a committed entry.
    fn rebase(&mut self, node: NodeId, meta: &SnapshotMeta) -> Result<(), Violation> {
        let partition = meta.partition;
        let known = self.committed.get(&partition).and_then(|c| c.get(&meta.index)).map(|(e, _)| *e);
        let Some(known) = known.filter(|k| k.term == meta.term) else {
            return Err(violation(
                ViolationKind::StateMachineSafety,
                format!(
                    "{node} {partition}: snapshot at {} (term {}) does not end on a committed entry",
                    meta.index, meta.term
                ),
            ));
        };
        let view = self.replicas.entry((node, partition)).or_default();
        if view.chain_at(meta.index).map(|e| e.chain) != Some(known.chain) {
            view.log.clear();
            view.base = meta.index;
            view.base_entry = Some(known);
        }
        view.checked_commit = view.checked_commit.max(meta.index);
        Ok(())
    }

    /// The replica issued `write`; mirror it and check log matching for every new entry.
    pub fn written(&mut self, node: NodeId, write: &PartitionWrite) -> Result<(), Violation> {
        let partition = write.partition;
        let view = self.replicas.entry((node, partition)).or_default();
        if let Some(from) = write.truncate_from {
            if from <= view.checked_commit {
                return Err(violation(
                    ViolationKind::StateMachineSafety,
                    format!(
                        "{node} {partition}: truncates from {from}, at or below its commit index {}",
                        view.checked_commit
                    ),
                ));
            }
            view.log.truncate(from.saturating_sub(view.base + 1) as usize);
        }
        if let Some(meta) = &write.snapshot {
            self.rebase(node, meta)?;
        }
        let view = self.replicas.entry((node, partition)).or_default();
        if let Some(first) = write.entries.first() {
            if first.index <= view.checked_commit {
                return Err(violation(
                    ViolationKind::StateMachineSafety,
                    format!(
                        "{node} {partition}: rewrites entry {}, at or below its commit index {}",
                        first.index, view.checked_commit
                    ),
                ));
            }
        }
        for entry in &write.entries {
            let pos = (entry.index - view.base - 1) as usize;
            if pos > view.log.len() {
                return Err(violation(
                    ViolationKind::LogMatching,
                    format!("{node} {partition}: write leaves a gap at {}", entry.index),
                ));
            }
            view.log.truncate(pos);
            let prev_chain = view.last_chain();
            let mut h = Fnv64::new();
            h.write_u64(prev_chain);
            h.write_u64(entry.fingerprint());
            let shadow = ShadowEntry { term: entry.term, chain: h.finish(), ticket: entry.ticket };
            view.log.push(shadow);
            match self.chains.get(&(partition, entry.index, entry.term)) {
                Some(&known) if known != shadow.chain => {
                    return Err(violation(
                        ViolationKind::LogMatching,
                        format!(
                            "{node} {partition}: entry {} of term {} has a different prefix than on another replica",
                            entry.index, entry.term
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    self.chains.insert((partition, entry.index, entry.term), shadow.chain);
                }
            }
        }
        Ok(())
    }

    /// A write completed: the replica's durable term and commit index must never go down.
    pub fn durable(&mut self, node: NodeId, write: &PartitionWrite) -> Result<(), Violation> {
        let Some(hard_state) = write.hard_state else { return Ok(()) };
        let view = self.replicas.entry((node, write.partition)).or_default();
        if hard_state.term < view.durable_term || hard_state.commit < view.durable_commit {
            return Err(violation(
                ViolationKind::CommitRegressed,
                format!(
                    "{node} {}: durable hard state went from term {} commit {} to term {} commit {}",
                    write.partition, view.durable_term, view.durable_commit, hard_state.term, hard_state.commit
                ),
            ));
        }
        view.durable_term = hard_state.term;
        view.durable_commit = hard_state.commit;
        Ok(())
    }

    /// Record the replica's commit index; everything up to it is committed and must agree, and it
    /// never decreases within one incarnation.
    pub fn committed_to(
        &mut self,
        node: NodeId,
        partition: PartitionId,
        commit: LogIndex,
        term: Term,
    ) -> Result<(), Violation> {
        let view = self.replicas.entry((node, partition)).or_default();
        if commit < view.checked_commit {
            return Err(violation(
                ViolationKind::CommitRegressed,
                format!("{node} {partition}: commit index went down from {} to {commit}", view.checked_commit),
            ));
        }
        if commit == view.checked_commit {
            return Ok(());
        }
        let committed = self.committed.entry(partition).or_default();
        for index in view.checked_commit + 1..=commit {
            let Some(shadow) = view.chain_at(index) else {
                return Err(violation(
                    ViolationKind::StateMachineSafety,
                    format!(
                        "{node} {partition}: commit index {commit} beyond its log ({} entries after {}, checked to {})",
                        view.log.len(),
                        view.base,
                        view.checked_commit
                    ),
                ));
            };
            match committed.get(&index).map(|(known, _)| known) {
                Some(known) if known.chain != shadow.chain => {
                    return Err(violation(
                        ViolationKind::StateMachineSafety,
                        format!(
                            "{node} {partition}: committed a different entry at {index} (term {} vs {})",
                            shadow.term, known.term
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    committed.insert(index, (shadow, term));
                }
            }
        }
        view.checked_commit = commit;
        Ok(())
    }

    /// The replica (incarnation `incarnation` of `node`) is leader of `term`: at most one leader
    /// per term — a node that restarts may not lead the same term again — and it must hold every
    /// committed entry.
    pub fn leader_seen(
        &mut self,
        node: NodeId,
        partition: PartitionId,
        term: Term,
        incarnation: u64,
    ) -> Result<(), Violation> {
        match self.leaders.get(&(partition, term)) {
            Some(&(other, _)) if other != node => {
                return Err(violation(
                    ViolationKind::ElectionSafety,
                    format!("{partition}: both {other} and {node} lead term {term}"),
                ));
            }
            Some(&(_, earlier)) if earlier != incarnation => {
                return Err(violation(
                    ViolationKind::ElectionSafety,
                    format!("{partition}: {node} leads term {term} again after a restart"),
                ));
            }
            Some(_) => {}
            None => {
                self.leaders.insert((partition, term), (node, incarnation));
            }
        }
        let view = self.replicas.entry((node, partition)).or_default();
        if !view.led.insert(term) {
            return Ok(());
        }
        // Leader Completeness (§5.4): entries committed in earlier terms are in every later leader.
        // A leader of an older term (elected late, e.g. after a pause) need not hold what a newer
        // term committed; it can no longer commit anything.
        let committed_before = self
            .committed
            .get(&partition)
            .and_then(|c| c.iter().rev().find(|(_, (_, committed_in))| *committed_in < term))
            .map(|(&index, &(known, _))| (index, known));
        if let Some((index, known)) = committed_before {
            if !view.holds(index, known) {
                return Err(violation(
                    ViolationKind::LeaderCompleteness,
                    format!(
                        "{node} leads {partition} in term {term} without committed entry {index} (term {})",
                        known.term
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The replica delivered `delivery` to its application.
    pub fn delivered(&mut self, node: NodeId, partition: PartitionId, delivery: &Delivery) -> Result<(), Violation> {
        let item = (delivery.entry.index, delivery.entry.fingerprint(), delivery.entry.ticket);
        if self.acked_rollbacks.contains(&(partition, item.2)) {
            return Err(violation(
                ViolationKind::TwoPhaseOutcome,
                format!("{node} {partition}: delivered entry {} of rolled-back ticket {}", item.0, item.2),
            ));
        }
        let view = self.replicas.entry((node, partition)).or_default();
        let sequence = self.deliveries.entry(partition).or_default();
        let digests = self.digests.entry(partition).or_default();
        let position = view.delivered;
        view.delivered += 1;
        match sequence.get(position) {
            Some(known) if *known != item => Err(violation(
                ViolationKind::StateMachineSafety,
                format!(
                    "{node} {partition}: delivery #{position} is entry {} but other replicas delivered entry {}",
                    item.0, known.0
                ),
            )),
            Some(_) => Ok(()),
            None if position == sequence.len() => {
                // A proposal's entries share its ticket and are delivered together; any other
                // repeat means two proposals got one ticket (a clock that went back, say).
                let repeated = sequence.last().is_some_and(|last| last.2 != item.2)
                    && self.delivered_tickets.contains(&(partition, item.2));
                if repeated {
                    return Err(violation(
                        ViolationKind::StateMachineSafety,
                        format!("{node} {partition}: entry {} reuses ticket {} of an earlier proposal", item.0, item.2),
                    ));
                }
                let previous = digests.last().copied().unwrap_or(0);
                digests.push(chain(previous, item.1));
                sequence.push(item);
                self.delivered_tickets.insert((partition, item.2));
                Ok(())
            }
            None => Err(violation(
                ViolationKind::StateMachineSafety,
                format!("{node} {partition}: delivery #{position} skips past the sequence ({})", sequence.len()),
            )),
        }
    }

    /// A client got a success reply for a proposal ending at `last_index`. Auto-commit proposals
    /// must also end up delivered; two-phase ones only once a commit for them is acknowledged.
    pub fn proposal_acked(
        &mut self,
        partition: PartitionId,
        ticket: Ticket,
        last_index: LogIndex,
        two_phase: bool,
    ) -> Result<(), Violation> {
        let entry = self.committed.get(&partition).and_then(|c| c.get(&last_index)).map(|(e, _)| *e);
        if entry.map(|e| e.ticket) != Some(ticket) {
            return Err(violation(
                ViolationKind::LostAcknowledgedWrite,
                format!(
                "{partition}: ticket {ticket} acknowledged at {last_index} but the committed entry there is {entry:?}"),
            ));
        }
        if two_phase {
            self.acked_two_phase.insert((partition, ticket));
        } else {
            self.acked.insert((partition, ticket), last_index);
            let through = self.acked_through.entry(partition).or_default();
            *through = (*through).max(last_index);
        }
        Ok(())
    }

    /// `node` answered `UnknownTicket` for `ticket`: never allowed for a ticket acknowledged as
    /// Raft-committed (a final answer must be backed by the log, not by a stale leader's view).
    pub fn unknown_ticket_answered(
        &self,
        node: NodeId,
        partition: PartitionId,
        ticket: Ticket,
    ) -> Result<(), Violation> {
        if self.acked_two_phase.contains(&(partition, ticket)) {
            return Err(violation(
                ViolationKind::UnknownAcknowledgedTicket,
                format!("{node} {partition}: acknowledged two-phase ticket {ticket} answered as unknown"),
            ));
        }
        Ok(())
    }

    /// A client got a terminal answer for a two-phase ticket.
    pub fn resolution_acked(
        &mut self,
        partition: PartitionId,
        ticket: Ticket,
        committed: bool,
    ) -> Result<(), Violation> {
        let key = (partition, ticket);
        let (mine, other) = if committed {
            (&mut self.acked_commits, &self.acked_rollbacks)
        } else {
            (&mut self.acked_rollbacks, &self.acked_commits)
        };
        if other.contains(&key) {
            return Err(violation(
                ViolationKind::TwoPhaseOutcome,
                format!("ticket {ticket} acknowledged as both committed and rolled back"),
            ));
        }
        mine.insert(key);
        if !committed && self.delivered_tickets.contains(&key) {
            return Err(violation(
                ViolationKind::TwoPhaseOutcome,
                format!("ticket {ticket} acknowledged as rolled back after being delivered"),
            ));
        }
        Ok(())
    }

    /// Final check once the cluster converged: every replica delivered the whole sequence, every
    /// acknowledged proposal and commit is in it, and every acknowledged committed entry still is.
    pub fn check_final(&self, replicas: &[(NodeId, PartitionId)]) -> Result<(), Violation> {
        for &(node, partition) in replicas {
            let expected = self.deliveries.get(&partition).map_or(0, Vec::len);
            let got = self.replicas.get(&(node, partition)).map_or(0, |v| v.delivered);
            if got != expected {
                return Err(violation(
                    ViolationKind::Liveness,
                    format!("{node} {partition}: delivered {got} entries, others {expected}"),
                ));
            }
        }
        for ((partition, ticket), index) in &self.acked {
            let known = self.committed.get(partition).and_then(|c| c.get(index)).map(|(e, _)| e);
            if known.map(|e| e.ticket) != Some(*ticket) || !self.delivered_tickets.contains(&(*partition, *ticket)) {
                return Err(violation(
                    ViolationKind::LostAcknowledgedWrite,
                    format!("{partition}: acknowledged ticket {ticket} at {index} is not delivered"),
                ));
            }
        }
        for (partition, ticket) in &self.acked_commits {
            if !self.delivered_tickets.contains(&(*partition, *ticket)) {
                return Err(violation(
                    ViolationKind::LostAcknowledgedWrite,
                    format!("{partition}: two-phase ticket {ticket} acknowledged as committed but never delivered"),
                ));
            }
        }
        Ok(())
    }

    /// The highest index a write acknowledged so far on `partition` ends at (what every
    /// consistent read issued now must show).
    pub fn acked_through(&self, partition: PartitionId) -> LogIndex {
        self.acked_through.get(&partition).copied().unwrap_or(0)
    }

    /// Number of acknowledged proposals.
    pub fn acked_count(&self) -> usize {
        self.acked.len()
    }

    /// Number of entries delivered per the global sequence, summed over partitions.
    pub fn delivered_count(&self) -> usize {
        self.deliveries.values().map(Vec::len).sum()
    }
}

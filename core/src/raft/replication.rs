//! Log replication (Raft §5.3): anchored appends, conflict truncation of the uncommitted suffix,
//! fast back-off with a conflict hint, pipelining with a bounded window, catch-up from the WAL for
//! followers behind the in-memory window, and commitment by counting current-term replicas (§5.4.2).

use super::progress::ProgressState;
use super::{CatchUpRead, PartitionStateMachine, ReadRequest, Role};
use crate::entry::LogEntry;
use crate::error::FatalError;
use crate::ids::{LogIndex, NodeId, Term};
use crate::message::{AppendResult, RaftMessage};
use crate::wal::WalError;

impl PartitionStateMachine {
    /// Heartbeat round: refresh followers' commit index, resend lost appends.
    pub(super) fn heartbeat(&mut self) {
        let peers: Vec<NodeId> = self.peers();
        for peer in peers {
            let Some(pr) = self.progress.get_mut(&peer) else { continue };
            match pr.state {
                ProgressState::Probe => {
                    // The outstanding probe (if any) is presumed lost.
                    pr.probe_sent = false;
                    if pr.read_pending {
                        // Catch-up entries are being read from the WAL: keep the follower's
                        // election timer quiet meanwhile.
                        let anchor = pr.match_index;
                        self.send_heartbeat(peer, anchor);
                    } else {
                        self.send_append(peer, true);
                    }
                }
                ProgressState::Snapshot => {
                    self.snapshot_heartbeat(peer);
                    self.send_heartbeat(peer, 0);
                }
                ProgressState::Replicate => {
                    // Appends sent since the last round and none acknowledged were lost; so were
                    // some if nothing is in flight yet the follower is not known to hold them.
                    let lost = (!pr.inflight.is_empty() && !pr.acked_since_heartbeat)
                        || (pr.inflight.is_empty() && pr.next_index > pr.match_index + 1);
                    if lost {
                        // Pipelined appends were lost: fall back to probing from the match.
                        let next = pr.match_index + 1;
                        pr.probe_from(next);
                        self.send_append(peer, true);
                    } else {
                        let anchor = pr.match_index;
                        pr.acked_since_heartbeat = false;
                        self.send_heartbeat(peer, anchor);
                        self.send_append(peer, false);
                    }
                }
            }
        }
    }

    fn send_heartbeat(&mut self, peer: NodeId, anchor: LogIndex) {
        // Anchor on the follower's known match so an empty append never disturbs the pipeline.
        let (prev_log_index, prev_log_term) = match self.known_term(anchor) {
            Some(term) => (anchor, term),
            None => (0, 0),
        };
        let leader_commit = self.log.commit;
        self.send(
            peer,
            RaftMessage::AppendRequest {
                term: self.term,
                prev_log_index,
                prev_log_term,
                entries: Vec::new(),
                leader_commit,
            },
        );
    }

    /// Send new entries to every follower with room in its window.
    pub(super) fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self.peers();
        for peer in peers {
            self.send_append(peer, false);
        }
    }

    /// Send the next append(s) to `peer`. With `allow_empty`, send even when there is nothing new
    /// (a probe). Entries behind the in-memory window are fetched with a WAL read first.
    pub(super) fn send_append(&mut self, peer: NodeId, allow_empty: bool) {
        let window = self.config.max_inflight_appends;
        let max = self.config.max_entries_per_append;
        loop {
            let last = self.log.last_index();
            let Some(pr) = self.progress.get(&peer) else { return };
            if !pr.can_send(window) {
                return;
            }
            let next = pr.next_index;
            if next > last && !(allow_empty && pr.state == ProgressState::Probe) {
                return;
            }
            let prev = next - 1;
            if prev < self.log.offset() {
                let floor = self.snapshots.compacted_through;
                if prev < floor || (prev == floor && prev > 0 && self.known_term(prev).is_none()) {
                    self.start_snapshot_send(peer);
                } else {
                    self.request_catch_up_read(peer, prev);
                }
                return;
            }
            let Some(prev_term) = self.log.term_at(prev) else { return };
            let entries = self.log.slice(next, last, max);
            let sent_to = self.send_entries(peer, prev, prev_term, entries);
            let probing = self.progress.get(&peer).is_none_or(|pr| pr.state == ProgressState::Probe);
            if probing || sent_to >= last {
                return;
            }
        }
    }

    /// Send `entries` anchored on (`prev`, `prev_term`) and record them as in flight. Returns the
    /// index of the last entry sent.
    fn send_entries(&mut self, peer: NodeId, prev: LogIndex, prev_term: Term, entries: Vec<LogEntry>) -> LogIndex {
        let sent_to = prev + entries.len() as LogIndex;
        let message = RaftMessage::AppendRequest {
            term: self.term,
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: self.log.commit,
        };
        self.send(peer, message);
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.sent(sent_to);
        }
        sent_to
    }

    /// Read the entries after `prev` from the WAL (with `prev` itself when its term is not
    /// known otherwise: index 0 and a snapshot's boundary are).
    fn request_catch_up_read(&mut self, peer: NodeId, prev: LogIndex) {
        let anchor = if prev == 0 { Some(0) } else { self.known_term(prev) };
        let from = if anchor.is_some() { prev + 1 } else { prev };
        let to = prev.saturating_add(self.config.max_entries_per_append as LogIndex).min(self.log.offset());
        let id = self.next_read_id;
        self.next_read_id += 1;
        let request = ReadRequest { id, partition: self.config.partition, from, to };
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.read_pending = true;
        }
        self.pending_reads.insert(id, CatchUpRead { peer, term: self.term, request: request.clone(), prev, anchor });
        self.out.reads.push(request);
    }

    /// A WAL read for catch-up finished. Stale or failed reads are dropped (the next heartbeat
    /// retries); a failed read is also reported through the returned error.
    pub fn on_read_complete(&mut self, id: u64, result: Result<Vec<LogEntry>, WalError>) -> Result<(), WalError> {
        let Some(CatchUpRead { peer, term, request, prev, anchor }) = self.pending_reads.remove(&id) else {
            return result.map(|_| ());
        };
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.read_pending = false;
        }
        let entries = result?;
        if self.role != Role::Leader || self.term != term || self.halted.is_some() {
            return Ok(());
        }
        let Some(pr) = self.progress.get(&peer) else { return Ok(()) };
        if !pr.can_send(self.config.max_inflight_appends) || pr.next_index - 1 != prev {
            return Ok(());
        }
        // Entries compacted after the read was issued come back missing: the next heartbeat
        // retries (with a snapshot if needed).
        let consecutive = entries.iter().enumerate().all(|(i, e)| e.index == request.from + i as LogIndex);
        if !consecutive || entries.is_empty() {
            return Ok(());
        }
        let (prev_term, new_entries) = match anchor {
            Some(term) => (term, entries),
            None => {
                let mut entries = entries;
                let prev_term = entries.remove(0).term;
                (prev_term, entries)
            }
        };
        self.send_entries(peer, prev, prev_term, new_entries);
        Ok(())
    }

    pub(super) fn handle_append_request(
        &mut self,
        from: NodeId,
        term: Term,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<LogEntry>,
        leader_commit: LogIndex,
    ) {
        if term < self.term && !self.canary(|c| c.accept_stale_term_append) {
            self.send(
                from,
                RaftMessage::AppendResponse { term: self.term, prev_log_index, result: AppendResult::StaleTerm },
            );
            return;
        }
        // term == self.term here (`step` adopted a higher one).
        self.heard_from_leader(from, term);
        if entries.is_empty() {
            self.ask_for_repair(from);
            self.resend_forwarded_reads(from);
        }

        // Everything up to our commit index must already match the leader (Leader Completeness):
        // verify what is still in memory, halt on any difference (a safety violation elsewhere),
        // then re-anchor at the commit index so committed entries are never touched.
        let (mut prev, mut prev_term, mut entries) = (prev_log_index, prev_log_term, entries);
        if prev < self.log.commit {
            if let Err(fatal) = self.verify_committed_prefix(prev, prev_term, &entries) {
                self.halt(fatal);
                return;
            }
            let skip = (self.log.commit - prev).min(entries.len() as LogIndex) as usize;
            entries.drain(..skip);
            prev += skip as LogIndex;
            prev_term = match self.log.term_at(prev) {
                Some(t) => t,
                None => {
                    // Anchor at or below our own commit but evicted: it matches by definition.
                    self.reply_success(from, prev_log_index, prev, leader_commit);
                    return;
                }
            };
        }
        if self.log.term_at(prev) != Some(prev_term) {
            let last = self.log.last_index();
            let (hint_index, hint_term) = if prev > last {
                (last + 1, None)
            } else {
                let conflict_term = self.log.term_at(prev);
                let first = self.log.first_index_of_term_run(prev, self.log.commit + 1);
                (first, conflict_term)
            };
            self.send_after_persist(
                from,
                RaftMessage::AppendResponse {
                    term: self.term,
                    prev_log_index,
                    result: AppendResult::Conflict { hint_index, hint_term },
                },
            );
            return;
        }
        let match_index = prev + entries.len() as LogIndex;
        self.append_entries(entries);
        self.reply_success(from, prev_log_index, match_index, leader_commit);
    }

    /// The leader's anchor and entries at or below our commit index must equal ours (where we
    /// still hold them in memory).
    fn verify_committed_prefix(&self, prev: LogIndex, prev_term: Term, entries: &[LogEntry]) -> Result<(), FatalError> {
        let anchor = (prev > 0).then_some((prev, prev_term));
        let incoming = entries.iter().map(|e| (e.index, e.term)).take_while(|&(i, _)| i <= self.log.commit);
        for (index, incoming_term) in anchor.into_iter().chain(incoming) {
            match self.log.term_at(index) {
                Some(local_term) if local_term != incoming_term => {
                    return Err(FatalError::CommittedEntryConflict {
                        index,
                        commit: self.log.commit,
                        local_term,
                        incoming_term,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn reply_success(&mut self, to: NodeId, prev_log_index: LogIndex, match_index: LogIndex, leader_commit: LogIndex) {
        let new_commit = leader_commit.min(match_index);
        if new_commit > self.log.commit || self.canary_commit_regresses(new_commit) {
            self.log.commit = new_commit;
            self.commit_dirty = true;
            self.apply_committed(false);
        }
        self.send_after_persist(
            to,
            RaftMessage::AppendResponse {
                term: self.term,
                prev_log_index,
                result: AppendResult::Success { match_index },
            },
        );
    }

    /// Planted bug: take the leader's commit index even when it is lower than ours.
    fn canary_commit_regresses(&self, new_commit: LogIndex) -> bool {
        self.canary(|c| c.commit_index_regresses) && new_commit != self.log.commit
    }

    /// Append entries that follow a matching anchor: skip ones we already have, truncate at the
    /// first conflict, append the rest. Every entry here lies above the commit index: the caller
    /// re-anchored at the commit index after `verify_committed_prefix` compared (and halted on)
    /// anything at or below it, so no committed entry can be truncated here. (An earlier guard
    /// for that case was unreachable; the check lives where it can fire.)
    fn append_entries(&mut self, entries: Vec<LogEntry>) {
        let mut iter = entries.into_iter().peekable();
        while let Some(entry) = iter.peek() {
            match self.log.term_at(entry.index) {
                Some(t) if t == entry.term => {
                    iter.next();
                }
                Some(_) => {
                    debug_assert!(
                        entry.index > self.log.commit || self.canary(|c| c.commit_index_regresses),
                        "truncation at or below the commit index"
                    );
                    #[cfg(feature = "canary-bugs")]
                    if self.config.canary.skip_conflict_truncation {
                        // Planted bug: overwrite in place and keep the stale suffix.
                        for entry in iter.by_ref() {
                            if entry.index <= self.log.last_index() {
                                self.log.overwrite_in_place(entry);
                            } else {
                                self.log.push(entry);
                            }
                        }
                        return;
                    }
                    let from = entry.index;
                    self.log.truncate_from(from);
                    let mut replies = Vec::new();
                    self.applier.truncated(from, &mut replies);
                    self.out.replies.extend(replies);
                    break;
                }
                None => break,
            }
        }
        for entry in iter {
            // Later local tickets must order after every ticket this replica has stored.
            if entry.issues_ticket() {
                self.clock.observe(entry.ticket, 0);
            }
            self.log.push(entry);
        }
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        term: Term,
        prev_log_index: LogIndex,
        result: AppendResult,
    ) {
        if self.role != Role::Leader || term != self.term {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        match result {
            AppendResult::Success { match_index } => {
                if match_index > self.log.last_index() {
                    return; // impossible from a correct follower; ignore
                }
                if pr.acknowledged(match_index) {
                    self.maybe_commit();
                }
                self.send_append(from, false);
                if self.transfer.is_some_and(|t| t.to == from) {
                    self.advance_transfer();
                }
            }
            AppendResult::Conflict { hint_index, hint_term } => {
                // Every index here comes from the peer: no arithmetic on it may overflow.
                // An empty follower log where the leader knows a match: the follower's data
                // directory was lost (a correct follower never drops acknowledged entries).
                let empty_log = hint_index == 1 && hint_term.is_none() && pr.match_index > 0;
                let stale = match pr.state {
                    // A conflict at the match (the heartbeat's anchor) from an emptied log is
                    // handled: the follower is caught up again.
                    ProgressState::Replicate => {
                        prev_log_index < pr.match_index || (prev_log_index == pr.match_index && !empty_log)
                    }
                    ProgressState::Probe => prev_log_index.checked_add(1) != Some(pr.next_index),
                    // Heartbeats during a transfer are answered with conflicts: only the
                    // install ends it.
                    ProgressState::Snapshot => true,
                };
                if stale {
                    return;
                }
                let mut next = hint_index;
                if let Some(t) = hint_term {
                    if let Some(i) = self.log.last_index_of_term(t, prev_log_index) {
                        next = i.saturating_add(1);
                    }
                }
                // A correct follower only answers anchors this leader sent (at most its last
                // index), so clamping to `last_index + 1` changes nothing for it.
                let next = next.min(prev_log_index).min(self.log.last_index().saturating_add(1)).max(1);
                let Some(pr) = self.progress.get_mut(&from) else { return };
                if empty_log {
                    // Catch it up from its empty log. Lowering a match index only ever delays
                    // commits, never makes a wrong one.
                    tracing::warn!(partition = %self.config.partition, peer = %from, matched = pr.match_index, from_index = next, "a follower lacks entries it acknowledged; catching it up again");
                    pr.match_index = next - 1;
                }
                pr.probe_from(next);
                self.send_append(from, true);
            }
            AppendResult::StaleTerm => {}
        }
    }

    /// §5.3/§5.4.2: commit the highest index stored on a quorum, but only by counting replicas of
    /// an entry of the current term (Figure 8).
    pub(super) fn maybe_commit(&mut self) {
        // Only voters of the configuration in effect count, this leader included only if it is one.
        let voters = &self.log.membership.current().voters;
        let mut matches: Vec<LogIndex> =
            self.progress.iter().filter(|(node, _)| voters.contains(node)).map(|(_, p)| p.match_index).collect();
        if voters.contains(&self.config.node) {
            let own = if self.canary(|c| c.count_unstable_self) { self.log.last_index() } else { self.log.stable };
            matches.push(own);
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&candidate) = matches.get(self.quorum() - 1) else { return };
        if candidate <= self.log.commit {
            return;
        }
        let current_term = self.log.term_at(candidate) == Some(self.term);
        if current_term || self.canary(|c| c.commit_previous_term_by_count) {
            self.log.commit = candidate;
            self.commit_dirty = true;
            self.needs_broadcast = true;
            self.apply_committed(false);
            self.step_down_if_removed();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::message::{AppendResult, Envelope, RaftMessage};
    use crate::raft::{ProgressState, Role};
    use crate::{NodeId, PartitionConfig, PartitionId, PartitionStateMachine};

    const P: PartitionId = PartitionId(1);

    fn step(sm: &mut PartitionStateMachine, from: u64, message: RaftMessage) {
        sm.step(Envelope { partition: P, from: NodeId(from), to: NodeId(1), message }).expect("step");
    }

    /// Node 1 of three, elected leader of term 1 (its peers are probed from index 1).
    fn leader() -> PartitionStateMachine {
        let config = PartitionConfig::new(NodeId(1), P, vec![NodeId(1), NodeId(2), NodeId(3)]);
        let mut sm = PartitionStateMachine::new(config).expect("config");
        while sm.role() != Role::PreCandidate {
            sm.tick();
        }
        step(&mut sm, 2, RaftMessage::VoteResponse { term: 1, granted: true, pre_vote: true });
        step(&mut sm, 2, RaftMessage::VoteResponse { term: 1, granted: true, pre_vote: false });
        assert_eq!(sm.role(), Role::Leader);
        sm.ready();
        sm
    }

    #[test]
    fn absurd_indexes_in_conflict_answers_do_not_overflow() {
        for (prev_log_index, hint_index, hint_term) in
            [(u64::MAX, 5, None), (u64::MAX, u64::MAX, Some(1)), (u64::MAX - 1, u64::MAX - 1, None)]
        {
            let mut sm = leader();
            assert_eq!(sm.progress(NodeId(2)).map(|p| p.state), Some(ProgressState::Probe));
            let result = AppendResult::Conflict { hint_index, hint_term };
            step(&mut sm, 2, RaftMessage::AppendResponse { term: 1, prev_log_index, result });
            assert_eq!(sm.role(), Role::Leader);
            let progress = sm.progress(NodeId(2)).expect("progress");
            assert!(progress.next_index <= 2, "{prev_log_index}: next {}", progress.next_index);
        }
    }

    #[test]
    fn absurd_conflicts_in_replicate_state_keep_next_within_the_log() {
        let mut sm = leader();
        let success = AppendResult::Success { match_index: 1 };
        step(&mut sm, 2, RaftMessage::AppendResponse { term: 1, prev_log_index: 0, result: success });
        assert_eq!(sm.progress(NodeId(2)).map(|p| p.state), Some(ProgressState::Replicate));
        let result = AppendResult::Conflict { hint_index: u64::MAX - 1, hint_term: Some(u64::MAX) };
        step(&mut sm, 2, RaftMessage::AppendResponse { term: 1, prev_log_index: u64::MAX - 1, result });
        let progress = sm.progress(NodeId(2)).expect("progress");
        assert_eq!((progress.state, progress.next_index), (ProgressState::Probe, 2));
        for _ in 0..3 {
            sm.tick();
            sm.ready();
        }
        assert_eq!(sm.role(), Role::Leader);
    }
}

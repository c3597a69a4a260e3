//! Snapshots in the protocol (Raft §7): when a replica asks its application for one, what the
//! WAL may drop once it is taken, how a leader streams it to a follower whose next entry was
//! compacted, and how a follower stages and installs it.
//!
//! Rules kept here:
//! * A snapshot covers exactly the applied prefix at its index; the WAL is compacted only through
//!   `index - snapshot_tail_entries`, never past the snapshot, and only in the write that stores
//!   the snapshot's meta (so a crash leaves either the old meta and log or the new ones).
//! * A follower never installs a snapshot at or below its commit index (its state would go back);
//!   it answers "installed" instead, since its log already holds that committed prefix.
//! * Chunks are accepted only in order (`offset == next_offset`); a chunk of another snapshot
//!   restarts the transfer only from offset 0; the answer to a chunk is sent once it is staged,
//!   the answer to the last one once the install is durable.

use super::progress::ProgressState;
use super::{PartitionStateMachine, Role};
use crate::codec::crc32c;
use crate::ids::{LogIndex, NodeId, Term};
use crate::message::RaftMessage;
use crate::snapshot::{SnapshotChunkRead, SnapshotChunkWrite, SnapshotMeta, SnapshotRequest};
use bytes::Bytes;

/// A snapshot being received from the leader.
#[derive(Clone, Debug)]
pub(super) struct Receiving {
    meta: SnapshotMeta,
    /// Bytes staged so far.
    next_offset: u64,
    /// End offset of the chunk being staged, if any.
    writing: Option<u64>,
}

/// A chunk read in progress for a follower.
#[derive(Clone, Copy, Debug)]
pub(super) struct ChunkRead {
    peer: NodeId,
    term: Term,
    index: LogIndex,
    snapshot_term: Term,
    offset: u64,
}

/// Snapshot bookkeeping of one replica.
#[derive(Clone, Debug, Default)]
pub(super) struct Snapshots {
    /// The latest snapshot this replica has (stored, or being stored by the next write).
    pub(super) latest: Option<SnapshotMeta>,
    /// The WAL's compaction floor as of the writes issued so far.
    pub(super) compacted_through: LogIndex,
    /// A snapshot asked of the application at this index, not yet reported.
    pub(super) requested: Option<LogIndex>,
    /// A snapshot was asked for on demand.
    pub(super) wanted: bool,
    /// Payload bytes applied since the last snapshot was asked for (the byte trigger).
    pub(super) applied_bytes: u64,
    /// The snapshot's bytes were lost: repair with a snapshot at or above this index.
    pub(super) repair_from: Option<LogIndex>,
    /// The last attempt failed at this applied index: wait for more before retrying.
    pub(super) failed_at: Option<LogIndex>,
    /// Meta and compaction the next WAL write must carry.
    pub(super) pending_write: Option<(SnapshotMeta, LogIndex)>,
    pub(super) receiving: Option<Receiving>,
    next_read_id: u64,
    pub(super) reads: std::collections::HashMap<u64, ChunkRead>,
}

impl PartitionStateMachine {
    // ----- public inputs ---------------------------------------------------------------------

    /// Ask for a snapshot at the applied index now (the `snapshot_request` of a coming
    /// [`super::Ready`]), whatever the interval says. Returns false when there is nothing new to
    /// cover or a snapshot is already being taken.
    pub fn request_snapshot(&mut self) -> bool {
        let covered = self.snapshots.latest.as_ref().map_or(0, |m| m.index);
        if self.halted.is_some() || self.snapshots.requested.is_some() || self.log.applied <= covered {
            return false;
        }
        self.snapshots.wanted = true;
        true
    }

    /// The application wrote (and synced) the snapshot asked for by a `snapshot_request`;
    /// `meta` is the request's meta with `size` and `checksum` filled in. The next WAL write
    /// stores it and compacts the log. Reports of requests no longer current are ignored.
    pub fn on_snapshot_taken(&mut self, meta: SnapshotMeta) {
        if self.snapshots.requested != Some(meta.index) || self.halted.is_some() {
            return;
        }
        self.snapshots.requested = None;
        self.snapshots.failed_at = None;
        if self.snapshots.latest.as_ref().is_some_and(|m| m.index >= meta.index) {
            return;
        }
        let through =
            meta.index.saturating_sub(self.config.snapshot_tail_entries).max(self.snapshots.compacted_through);
        self.applier.compacted(meta.index, meta.last_ticket);
        self.log.membership.rebase(meta.membership.clone(), meta.index);
        tracing::debug!(partition = %self.config.partition, index = meta.index, through, "snapshot taken; compacting");
        self.snapshots.compacted_through = through;
        // Memory follows the WAL: what is compacted is served by the snapshot from now on.
        self.log.evict_through(through);
        self.snapshots.latest = Some(meta.clone());
        self.snapshots.pending_write = Some((meta, through));
    }

    /// Taking the snapshot at `index` failed; a later one is asked for once more entries apply.
    pub fn on_snapshot_failed(&mut self, index: LogIndex) {
        if self.snapshots.requested == Some(index) {
            self.snapshots.requested = None;
            self.snapshots.failed_at = Some(index);
        }
    }

    /// The chunk read `id` finished (a leader sending its snapshot to a follower). A failed read
    /// (the snapshot was replaced, or storage failed) restarts that transfer later.
    pub fn on_snapshot_chunk_read(&mut self, id: u64, result: Result<Bytes, String>) {
        let Some(read) = self.snapshots.reads.remove(&id) else { return };
        let Some(pr) = self.progress.get_mut(&read.peer) else { return };
        pr.read_pending = false;
        if self.role != Role::Leader || self.term != read.term || self.halted.is_some() {
            return;
        }
        let current = pr.snapshot.filter(|s| s.index == read.index && s.term == read.snapshot_term);
        let Some(send) = current.filter(|s| s.offset == read.offset && pr.state == ProgressState::Snapshot) else {
            return;
        };
        let meta = self.snapshots.latest.clone().filter(|m| m.is(send.index, send.term));
        let data = match (result, meta) {
            (Ok(data), Some(meta)) if read.offset + data.len() as u64 <= meta.size => (data, meta),
            (result, _) => {
                tracing::debug!(partition = %self.config.partition, peer = %read.peer, ok = result.is_ok(), "snapshot chunk unusable; restarting the transfer");
                let next = pr.match_index + 1;
                pr.probe_from(next);
                return;
            }
        };
        let (data, meta) = data;
        let done = read.offset + data.len() as u64 == meta.size;
        if data.is_empty() && !done {
            let next = pr.match_index + 1;
            pr.probe_from(next);
            return;
        }
        if let Some(send) = pr.snapshot.as_mut() {
            send.chunk_out = true;
        }
        let chunk_checksum = crc32c(&data);
        let message =
            RaftMessage::InstallSnapshot { term: self.term, meta, offset: read.offset, data, done, chunk_checksum };
        self.send(read.peer, message);
    }

    /// The chunk at `offset` of snapshot (`index`, `term`) is staged (for the last chunk: the
    /// whole snapshot verified against its size and checksum and made visible atomically), or
    /// staging failed (the partial snapshot is dropped; the leader's next chunk restarts it).
    pub fn on_snapshot_chunk_written(&mut self, index: LogIndex, term: Term, offset: u64, result: Result<(), String>) {
        if self.halted.is_some() {
            return;
        }
        let Some(receiving) = self.snapshots.receiving.as_mut().filter(|r| r.meta.is(index, term)) else { return };
        let Some(end) = receiving.writing.filter(|_| receiving.next_offset == offset) else { return };
        receiving.writing = None;
        if let Err(error) = result {
            tracing::warn!(partition = %self.config.partition, index, offset, %error, "staging a snapshot chunk failed; the transfer restarts");
            self.snapshots.receiving = None;
            return;
        }
        receiving.next_offset = end;
        if end < receiving.meta.size {
            let meta = receiving.meta.clone();
            self.answer_leader(&meta, end, false);
            return;
        }
        let Some(Receiving { meta, .. }) = self.snapshots.receiving.take() else { return };
        self.install_snapshot(meta);
    }

    // ----- leader side -----------------------------------------------------------------------

    /// The follower needs entries at or below the compaction floor: stream the latest snapshot.
    pub(super) fn start_snapshot_send(&mut self, peer: NodeId) {
        let Some(meta) = self.snapshots.latest.as_ref() else { return };
        let (index, term) = (meta.index, meta.term);
        let Some(pr) = self.progress.get_mut(&peer) else { return };
        if pr.state == ProgressState::Snapshot {
            return;
        }
        tracing::debug!(partition = %self.config.partition, %peer, index, "follower behind the compaction floor; sending the snapshot");
        pr.send_snapshot(index, term);
        self.request_snapshot_chunk(peer);
    }

    /// Ask the driver for the next chunk to send to `peer`.
    fn request_snapshot_chunk(&mut self, peer: NodeId) {
        let Some(pr) = self.progress.get_mut(&peer) else { return };
        let Some(send) = pr.snapshot.filter(|_| !pr.read_pending) else { return };
        pr.read_pending = true;
        let id = self.snapshots.next_read_id;
        self.snapshots.next_read_id += 1;
        let read =
            ChunkRead { peer, term: self.term, index: send.index, snapshot_term: send.term, offset: send.offset };
        self.snapshots.reads.insert(id, read);
        self.out.snapshot_reads.push(SnapshotChunkRead {
            id,
            partition: self.config.partition,
            index: send.index,
            term: send.term,
            offset: send.offset,
            len: self.config.snapshot_chunk_bytes,
        });
    }

    /// Heartbeat round for a follower receiving the snapshot: a chunk unanswered since the last
    /// round is presumed lost and sent again from the acknowledged offset; an idle transfer (a
    /// read that came back for an offset no longer wanted) is resumed; a transfer of a snapshot
    /// that is no longer the latest restarts with the latest.
    pub(super) fn snapshot_heartbeat(&mut self, peer: NodeId) {
        let latest = self.snapshots.latest.as_ref().map(|m| (m.index, m.term));
        let Some(pr) = self.progress.get_mut(&peer) else { return };
        let Some(send) = pr.snapshot.as_mut() else { return };
        if latest != Some((send.index, send.term)) {
            let next = pr.match_index + 1;
            pr.probe_from(next);
            self.send_append(peer, true);
            return;
        }
        if pr.read_pending {
            return;
        }
        if send.chunk_out && send.answered {
            send.answered = false;
        } else {
            send.chunk_out = false;
            self.request_snapshot_chunk(peer);
        }
    }

    pub(super) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        term: Term,
        index: LogIndex,
        snapshot_term: Term,
        next_offset: u64,
        installed: bool,
    ) {
        if self.role != Role::Leader || term != self.term {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        if installed {
            // Whatever transfer this answers, the follower's log now matches through `index`
            // (an install, or a prefix it had already committed).
            if index > self.log.last_index() {
                return; // impossible from a correct follower
            }
            if pr.snapshot_installed(index) {
                self.maybe_commit();
            }
            self.send_append(from, true);
            return;
        }
        let size = self.snapshots.latest.as_ref().filter(|m| m.is(index, snapshot_term)).map(|m| m.size);
        let Some(send) = pr.snapshot.as_mut().filter(|s| s.index == index && s.term == snapshot_term) else { return };
        let Some(size) = size else {
            // A newer snapshot replaced the one being sent: start over with it.
            let next = pr.match_index + 1;
            pr.probe_from(next);
            self.send_append(from, true);
            return;
        };
        if next_offset > size {
            return;
        }
        send.answered = true;
        send.chunk_out = false;
        send.offset = next_offset;
        if next_offset < size || size == 0 {
            self.request_snapshot_chunk(from);
        }
    }

    // ----- follower side ---------------------------------------------------------------------

    pub(super) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
    ) {
        if term < self.term {
            let reply = RaftMessage::SnapshotResponse {
                term: self.term,
                index: meta.index,
                snapshot_term: meta.term,
                next_offset: 0,
                installed: false,
            };
            self.send(from, reply);
            return;
        }
        self.heard_from_leader(from, term);
        let repairs = self.repairs_with(&meta);
        if self.snapshots.repair_from.is_some() && !repairs {
            return; // older than the lost snapshot: it cannot repair this replica
        }
        if meta.index <= self.log.commit && !repairs && !self.canary(|c| c.install_stale_snapshot) {
            // Already committed here: nothing to install; the leader may replicate from `index`.
            if self.snapshots.receiving.as_ref().is_some_and(|r| r.meta.index <= self.log.commit) {
                self.snapshots.receiving = None;
            }
            self.answer_leader(&meta, meta.size, true);
            return;
        }
        match self.snapshots.receiving.as_mut() {
            Some(r) if r.meta.is(meta.index, meta.term) => {
                if r.writing.is_some() {
                    return; // the chunk being staged answers when it is done
                }
                if offset != r.next_offset {
                    let (meta, next) = (r.meta.clone(), r.next_offset);
                    self.answer_leader(&meta, next, false);
                    return;
                }
            }
            _ if offset != 0 => {
                self.answer_leader(&meta, 0, false);
                return;
            }
            _ => {
                self.snapshots.receiving = Some(Receiving { meta: meta.clone(), next_offset: 0, writing: None });
            }
        }
        let end = offset + data.len() as u64;
        if let Some(r) = self.snapshots.receiving.as_mut() {
            r.writing = Some(end);
        }
        self.out.snapshot_writes.push(SnapshotChunkWrite { meta, offset, data, done });
    }

    /// Tell the current leader where the transfer of `meta` stands.
    fn answer_leader(&mut self, meta: &SnapshotMeta, next_offset: u64, installed: bool) {
        let Some(leader) = self.leader.filter(|_| self.role == Role::Follower) else { return };
        let reply = RaftMessage::SnapshotResponse {
            term: self.term,
            index: meta.index,
            snapshot_term: meta.term,
            next_offset,
            installed,
        };
        if installed {
            self.send_after_persist(leader, reply);
        } else {
            self.send(leader, reply);
        }
    }

    /// Replace everything through `meta.index` with the staged snapshot.
    fn install_snapshot(&mut self, meta: SnapshotMeta) {
        let repairs = self.repairs_with(&meta);
        if meta.index <= self.log.commit && !repairs && !self.canary(|c| c.install_stale_snapshot) {
            self.answer_leader(&meta, meta.size, true);
            return;
        }
        tracing::info!(partition = %self.config.partition, node = %self.config.node, index = meta.index, term = meta.term, "installing a snapshot from the leader");
        self.log.install(meta.index, meta.term);
        self.log.membership.rebase(meta.membership.clone(), meta.index);
        let mut replies = Vec::new();
        self.applier.install(&meta, &mut replies);
        self.out.replies.extend(replies);
        self.clock.observe(meta.last_ticket, 0);
        self.commit_dirty = true;
        // Deliveries not yet handed over are covered by the snapshot.
        self.out.deliveries.clear();
        self.snapshots.requested = None;
        if repairs {
            tracing::info!(partition = %self.config.partition, index = meta.index, "the lost snapshot is replaced; replaying the log after it");
            self.snapshots.repair_from = None;
        }
        self.snapshots.compacted_through = self.snapshots.compacted_through.max(meta.index);
        self.snapshots.latest = Some(meta.clone());
        self.snapshots.pending_write = Some((meta.clone(), meta.index));
        self.out.install = Some(meta.clone());
        self.answer_leader(&meta, meta.size, true);
    }

    /// A follower lost its snapshot's bytes: send it the latest snapshot if it is recent enough,
    /// otherwise take one now (the follower asks again on the next heartbeat).
    pub(super) fn handle_snapshot_needed(&mut self, from: NodeId, term: Term, index: LogIndex) {
        if self.role != Role::Leader || term != self.term || !self.progress.contains_key(&from) {
            return;
        }
        let latest = self.snapshots.latest.as_ref().map_or(0, |m| m.index);
        if latest >= index && latest > 0 {
            self.start_snapshot_send(from);
        } else {
            self.request_snapshot();
        }
    }

    /// Does `meta`'s snapshot repair this replica (it covers at least the lost one)?
    fn repairs_with(&self, meta: &SnapshotMeta) -> bool {
        self.snapshots.repair_from.is_some_and(|base| meta.index >= base)
    }

    /// While repairing, ask the current leader for a snapshot (once per heartbeat it sends).
    pub(super) fn ask_for_repair(&mut self, leader: NodeId) {
        if let Some(index) = self.snapshots.repair_from {
            self.send(leader, RaftMessage::SnapshotNeeded { term: self.term, index });
        }
    }

    // ----- shared ----------------------------------------------------------------------------

    /// The snapshot to ask for now, if the interval (or an on-demand request) says so.
    pub(super) fn maybe_request_snapshot(&mut self) {
        let covered = self.snapshots.latest.as_ref().map_or(0, |m| m.index);
        let applied = self.log.applied;
        let interval = self.config.snapshot_interval_entries;
        let bytes = self.config.snapshot_interval_bytes;
        let due = self.snapshots.wanted
            || (interval > 0 && applied >= covered + interval)
            || (bytes > 0 && self.snapshots.applied_bytes >= bytes);
        let retry_ok = self.snapshots.failed_at.is_none_or(|at| applied >= at + interval.max(1));
        if !due || !retry_ok || self.snapshots.requested.is_some() || applied <= covered {
            return;
        }
        self.snapshots.wanted = false;
        self.snapshots.applied_bytes = 0;
        self.snapshots.requested = Some(applied);
        let held =
            if self.canary(|c| c.snapshot_drops_held_tickets) { Vec::new() } else { self.applier.held_entries() };
        let meta = SnapshotMeta {
            partition: self.config.partition,
            index: applied,
            term: self.log.term_at(applied).unwrap_or(0),
            membership: self.log.membership.at(applied).clone(),
            generation: self.applier.generation,
            held,
            last_ticket: self.applier.last_ticket,
            size: 0,
            checksum: 0,
        };
        self.out.snapshot_request = Some(SnapshotRequest { meta });
    }

    /// Term at `index` as far as this replica knows it, the snapshot's boundary included.
    pub(super) fn known_term(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index).or_else(|| self.snapshots.latest.as_ref().filter(|m| m.index == index).map(|m| m.term))
    }
}

//! What a leader knows about each follower's log: match and next index, probe/replicate state,
//! and the bounded window of appends in flight (pipelining).

use crate::ids::{LogIndex, Term};
use std::collections::VecDeque;

/// Replication state of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The leader is searching for the last matching index: one append at a time.
    Probe,
    /// The follower matches; appends are pipelined up to the in-flight window.
    Replicate,
    /// The follower needs entries that were compacted: the leader streams its snapshot, one chunk
    /// at a time, and sends no appends until the follower reports it installed.
    Snapshot,
}

/// A snapshot transfer to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotSend {
    /// Index of the snapshot sent.
    pub(crate) index: LogIndex,
    /// Its term.
    pub(crate) term: Term,
    /// Next byte offset to send (what the follower acknowledged so far).
    pub(crate) offset: u64,
    /// A chunk is in flight (sent, not answered).
    pub(crate) chunk_out: bool,
    /// The follower answered since the last heartbeat (a chunk unanswered for a whole heartbeat
    /// interval is presumed lost and sent again).
    pub(crate) answered: bool,
}

/// A leader's view of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to match the leader's log.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// Probe or replicate.
    pub state: ProgressState,
    /// Last indexes of the appends in flight (replicate state).
    pub(crate) inflight: VecDeque<LogIndex>,
    /// In probe state: an append is outstanding, wait for its answer or the next heartbeat.
    pub(crate) probe_sent: bool,
    /// Any message from the follower since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// `match_index` advanced since the last heartbeat (detects lost pipelined appends).
    pub(crate) acked_since_heartbeat: bool,
    /// A WAL read for catch-up (or a snapshot chunk read) is outstanding.
    pub(crate) read_pending: bool,
    /// The snapshot transfer, in [`ProgressState::Snapshot`].
    pub(crate) snapshot: Option<SnapshotSend>,
    /// The follower acknowledged this leader's quiesce request for the current log end.
    pub(crate) quiesced: bool,
}

impl Progress {
    /// Did the follower answer since the last check-quorum round?
    pub fn is_recently_active(&self) -> bool {
        self.recent_active
    }

    pub(crate) fn new(next_index: LogIndex) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            inflight: VecDeque::new(),
            probe_sent: false,
            recent_active: true,
            acked_since_heartbeat: false,
            read_pending: false,
            snapshot: None,
            quiesced: false,
        }
    }

    /// A description of the snapshot transfer in progress, if any (for diagnostics).
    pub fn snapshot_transfer(&self) -> Option<String> {
        self.snapshot.map(|s| {
            format!(
                "snapshot {}@{} offset {} chunk out {} answered {} read pending {}",
                s.index, s.term, s.offset, s.chunk_out, s.answered, self.read_pending
            )
        })
    }

    /// Start streaming snapshot `(index, term)` from its first byte.
    pub(crate) fn send_snapshot(&mut self, index: LogIndex, term: Term) {
        self.state = ProgressState::Snapshot;
        self.inflight.clear();
        self.probe_sent = false;
        self.snapshot = Some(SnapshotSend { index, term, offset: 0, chunk_out: false, answered: true });
    }

    /// The follower's log now starts after `index`: replicate from there.
    pub(crate) fn snapshot_installed(&mut self, index: LogIndex) -> bool {
        let advanced = index > self.match_index;
        self.match_index = self.match_index.max(index);
        self.snapshot = None;
        self.probe_from(index + 1);
        advanced
    }

    /// Can another append be sent now?
    pub(crate) fn can_send(&self, window: usize) -> bool {
        if self.read_pending {
            return false;
        }
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => self.inflight.len() < window,
            ProgressState::Snapshot => false,
        }
    }

    /// Record an append whose last entry is `last` (in replicate state, optimistically advance).
    pub(crate) fn sent(&mut self, last: LogIndex) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                self.inflight.push_back(last);
                self.next_index = last + 1;
            }
            ProgressState::Snapshot => {}
        }
    }

    /// A success acknowledgement up to `index`. Returns true when `match_index` advanced.
    pub(crate) fn acknowledged(&mut self, index: LogIndex) -> bool {
        self.recent_active = true;
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
            // Only progress counts: a heartbeat answer must not hide lost pipelined appends.
            self.acked_since_heartbeat = true;
        }
        self.next_index = self.next_index.max(index + 1);
        if self.state == ProgressState::Snapshot {
            // Heartbeat answers during a transfer: only the install ends it.
            return advanced;
        }
        if self.state == ProgressState::Probe {
            self.state = ProgressState::Replicate;
            self.probe_sent = false;
            self.inflight.clear();
        }
        advanced
    }

    /// Fall back to probing from `next_index`.
    pub(crate) fn probe_from(&mut self, next_index: LogIndex) {
        self.state = ProgressState::Probe;
        self.snapshot = None;
        self.next_index = next_index.max(self.match_index + 1);
        self.inflight.clear();
        self.probe_sent = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probing_never_goes_back_to_a_matched_index() {
        let mut progress = Progress::new(1);
        assert!(progress.is_recently_active(), "a new follower gets a full check-quorum round");
        assert!(progress.acknowledged(5));
        progress.probe_from(3);
        assert_eq!((progress.state, progress.next_index), (ProgressState::Probe, 6));
        progress.probe_from(9);
        assert_eq!(progress.next_index, 9);
        progress.recent_active = false;
        assert!(!progress.is_recently_active());
    }
}

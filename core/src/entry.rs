//! Log entries: what every partition's log is made of, and what applications get delivered.

use crate::hlc::Ticket;
use crate::ids::{LogIndex, Term};
use crate::log_type::LogType;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What an entry means to the protocol.
///
/// Entries are written once and never rewritten in place: a two-phase proposal is resolved by a
/// *later* marker entry carrying the same ticket, not by flipping the type of the proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// Application data. With `auto_commit` it is delivered as soon as it is Raft-committed;
    /// without, it is held until a [`EntryKind::CommitMarker`] for its ticket commits (or dropped when
    /// a [`EntryKind::RollbackMarker`] commits first).
    Application {
        /// Deliver on Raft commit (true) or wait for an explicit commit marker (false).
        auto_commit: bool,
    },
    /// The no-op a new leader appends in its term; never delivered.
    Barrier,
    /// Resolves the held proposal with this entry's ticket as committed.
    CommitMarker,
    /// Resolves the held proposal with this entry's ticket as rolled back.
    RollbackMarker,
    /// Raises the partition's generation to `generation` (written when the partition map changes
    /// the partition's key range). Never delivered. [`EntryKind::Guarded`] entries applied after
    /// it that expect an older generation are rejected.
    Fence {
        /// The partition's new generation.
        generation: u64,
    },
    /// A membership change of the partition; the payload is the new
    /// [`crate::raft::Membership`] (encoded). Takes effect when appended; never delivered.
    Config,
    /// Application data (delivered on Raft commit, like an auto-commit entry) written by a client
    /// that routed it with partition-map generation `generation`. Delivered only if no fence of a
    /// newer generation applied before it; otherwise the client gets `PartitionMoved`.
    Guarded {
        /// The partition generation the writer routed with.
        generation: u64,
    },
}

/// One entry of a partition's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the log (1-based).
    pub index: LogIndex,
    /// Term of the leader that created the entry.
    pub term: Term,
    /// Protocol meaning of the entry.
    pub kind: EntryKind,
    /// Application-defined type tag (empty for protocol entries).
    pub log_type: LogType,
    /// Application payload (empty for protocol entries): one shared buffer from the proposal
    /// through the log, the WAL batch, the transport and the delivery (clones are cheap).
    pub payload: Bytes,
    /// Proposal ticket: the proposal's own ticket, or for markers the ticket they resolve.
    pub ticket: Ticket,
}

impl LogEntry {
    /// True for entries the application may ever see.
    pub fn is_application(&self) -> bool {
        matches!(self.kind, EntryKind::Application { .. } | EntryKind::Guarded { .. })
    }

    /// True when the entry's ticket was issued by its leader's clock for this entry. A commit or
    /// rollback marker only names the ticket of an earlier proposal (possibly one a client made
    /// up), so clocks never observe it.
    pub fn issues_ticket(&self) -> bool {
        !matches!(self.kind, EntryKind::CommitMarker | EntryKind::RollbackMarker)
    }

    /// A small stable fingerprint of the entry's content (not cryptographic), used by tests and the
    /// simulator to compare logs cheaply.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Fnv64::new();
        h.write_u64(self.index);
        h.write_u64(self.term);
        h.write_u64(match self.kind {
            EntryKind::Application { auto_commit: true } => 1,
            EntryKind::Application { auto_commit: false } => 2,
            EntryKind::Barrier => 3,
            EntryKind::CommitMarker => 4,
            EntryKind::RollbackMarker => 5,
            EntryKind::Fence { generation } => 6 ^ generation.rotate_left(8),
            EntryKind::Guarded { generation } => 7 ^ generation.rotate_left(8),
            EntryKind::Config => 8,
        });
        h.write(self.log_type.as_bytes());
        h.write(&self.payload);
        h.write_u64(self.ticket.physical_ms);
        h.write_u64(u64::from(self.ticket.logical));
        h.write_u64(self.ticket.node);
        h.finish()
    }
}

/// FNV-1a, 64 bit: deterministic across runs and platforms (unlike `DefaultHasher`'s contract).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv64(u64);

impl Fnv64 {
    pub(crate) fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // Length-delimit so ("ab","c") and ("a","bc") differ.
        self.write_len(bytes.len());
    }
    fn write_len(&mut self, len: usize) {
        for b in (len as u64).to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    pub(crate) fn write_u64(&mut self, v: u64) {
        for b in v.to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}

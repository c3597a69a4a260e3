//! The outputs of a partition state machine, collected into a [`Ready`] that the driver (actor
//! runtime or simulator) takes after each turn.
//!
//! # Ordering contract for drivers
//!
//! 1. Send every message in [`Ready::messages`] (it may be sent at once: messages whose meaning
//!    depends on durable state — vote grants, vote requests, follower acknowledgements — are held
//!    back inside the state machine until the write they depend on is reported complete).
//! 2. Hand [`Ready::write`] to the WAL. Writes of one partition must complete in the order they
//!    were issued; report each with `on_write_complete(id)` only once it is durable.
//! 3. Perform [`Ready::reads`] (WAL range reads for follower catch-up) and report each with
//!    `on_read_complete`.
//! 4. Install [`Ready::install`] into the application (if set), then deliver
//!    [`Ready::deliveries`] in order, then ask for [`Ready::snapshot_request`] (the application
//!    has then applied exactly its index), then answer [`Ready::replies`], then report
//!    [`Ready::leader_change`]. Serve each of [`Ready::read_states`] once the application
//!    applied its index (at once if it already has).
//! 5. Perform [`Ready::snapshot_reads`] and [`Ready::snapshot_writes`] and report each
//!    (`on_snapshot_chunk_read`, `on_snapshot_chunk_written`).
//!
//! If a write or read fails, stop the partition and restart it from the WAL.

use crate::entry::LogEntry;
use crate::error::{FatalError, ProposeError, ReadError, TicketOutcome};
use crate::hlc::Ticket;
use crate::ids::{LogIndex, NodeId, PartitionId, Term};
use crate::message::Envelope;
use crate::snapshot::{SnapshotChunkRead, SnapshotChunkWrite, SnapshotMeta, SnapshotRequest};
use crate::wal::PartitionWrite;

/// A WAL write to perform for this partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRequest {
    /// Identifier to report back with `on_write_complete` (increasing per partition).
    pub id: u64,
    /// What to write.
    pub write: PartitionWrite,
}

/// A WAL range read needed to catch a follower up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// Identifier to report back with `on_read_complete`.
    pub id: u64,
    /// Partition to read.
    pub partition: PartitionId,
    /// First index (inclusive).
    pub from: LogIndex,
    /// Last index (inclusive).
    pub to: LogIndex,
}

/// An entry handed to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The committed application entry.
    pub entry: LogEntry,
    /// Index whose application released it: the entry's own index for auto-commit entries, the
    /// commit marker's index for two-phase ones.
    pub released_at: LogIndex,
    /// Replayed from the WAL during restore rather than newly replicated.
    pub restored: bool,
}

/// A successful proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProposalCommitted {
    /// The proposal's ticket.
    pub ticket: Ticket,
    /// Index of its first entry.
    pub first_index: LogIndex,
    /// Index of its last entry.
    pub last_index: LogIndex,
}

/// The answer to a client waiting on this replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientReply {
    /// A proposal was committed (auto-commit: delivered; two-phase: Raft-committed and held) or
    /// failed.
    Proposal {
        /// The proposal's ticket.
        ticket: Ticket,
        /// Outcome.
        result: Result<ProposalCommitted, ProposeError>,
    },
    /// A commit or rollback request reached a terminal outcome.
    Resolution {
        /// The ticket resolved.
        ticket: Ticket,
        /// What the client asked for.
        requested: TicketOutcome,
        /// `Ok(requested)` when it won; `AlreadyResolved` when the other outcome won first.
        result: Result<TicketOutcome, ProposeError>,
    },
}

/// The outcome of a consistent read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The driver's identifier of the read.
    pub id: u64,
    /// The read index: the read may be served once the local application applied it.
    pub result: Result<LogIndex, ReadError>,
}

/// The known leader changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    /// Term of the observation.
    pub term: Term,
    /// The leader, if known. This replica reports itself only once its barrier committed.
    pub leader: Option<NodeId>,
}

/// Everything a turn produced. Take it with `PartitionStateMachine::ready`.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    /// A snapshot received from the leader, staged and verified: the application must install it
    /// (replacing its state) before any delivery of this `Ready`.
    pub install: Option<SnapshotMeta>,
    /// Ask the application for a snapshot at its applied index, after this `Ready`'s deliveries.
    pub snapshot_request: Option<SnapshotRequest>,
    /// Chunks of stored snapshots to read for followers.
    pub snapshot_reads: Vec<SnapshotChunkRead>,
    /// Chunks received from the leader to stage.
    pub snapshot_writes: Vec<SnapshotChunkWrite>,
    /// Messages to send now.
    pub messages: Vec<Envelope>,
    /// A WAL write to perform.
    pub write: Option<WriteRequest>,
    /// WAL reads to perform.
    pub reads: Vec<ReadRequest>,
    /// Committed application entries to deliver, in order.
    pub deliveries: Vec<Delivery>,
    /// Replies to waiting clients.
    pub replies: Vec<ClientReply>,
    /// Outcomes of consistent reads ([`crate::PartitionStateMachine::read`]): serve each read
    /// once the application applied its index.
    pub read_states: Vec<ReadState>,
    /// A change of the known leader.
    pub leader_change: Option<LeaderChange>,
    /// Set once when the state machine halts; the partition must be restarted from its WAL.
    pub fatal: Option<FatalError>,
}

impl Ready {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.install.is_none()
            && self.snapshot_request.is_none()
            && self.snapshot_reads.is_empty()
            && self.snapshot_writes.is_empty()
            && self.write.is_none()
            && self.reads.is_empty()
            && self.deliveries.is_empty()
            && self.replies.is_empty()
            && self.read_states.is_empty()
            && self.leader_change.is_none()
            && self.fatal.is_none()
    }
}

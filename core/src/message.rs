//! Wire messages exchanged between the replicas of one partition, and the envelope and batch that
//! carry them between nodes. Every transport moves [`MessageBatch`]es: one batch per destination
//! node carries the messages of all partitions, never one request per message.

use crate::entry::LogEntry;
use crate::ids::{LogIndex, NodeId, PartitionId, Term};
use crate::snapshot::SnapshotMeta;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A message of the Raft protocol for one partition (Raft paper §5, thesis §9.6 for pre-vote).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftMessage {
    /// Ask for a vote. With `pre_vote`, `term` is the term the candidate *would* use; receivers
    /// answer without changing any state.
    VoteRequest {
        /// Candidate's term (or prospective term for a pre-vote).
        term: Term,
        /// Index of the candidate's last log entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
        /// Pre-vote round (§9.6) rather than a real election.
        pre_vote: bool,
        /// The candidate campaigns because the leader handed it the leadership (thesis §3.10,
        /// [`RaftMessage::TimeoutNow`]): voters grant it even while they hear that leader.
        #[serde(default)]
        transfer: bool,
    },
    /// Answer to a [`RaftMessage::VoteRequest`].
    VoteResponse {
        /// Responder's term; for a granted pre-vote, the term that was asked for.
        term: Term,
        /// Whether the vote (or pre-vote) is granted.
        granted: bool,
        /// Answers a pre-vote request.
        pre_vote: bool,
    },
    /// Replicate entries (or a heartbeat when `entries` is empty), anchored on
    /// (`prev_log_index`, `prev_log_term`).
    AppendRequest {
        /// Leader's term.
        term: Term,
        /// Index of the entry just before `entries`.
        prev_log_index: LogIndex,
        /// Term of that entry (0 when `prev_log_index` is 0).
        prev_log_term: Term,
        /// Entries to append, consecutive from `prev_log_index + 1`.
        entries: Vec<LogEntry>,
        /// Leader's commit index.
        leader_commit: LogIndex,
    },
    /// Answer to an [`RaftMessage::AppendRequest`]. A success is sent only once the appended
    /// entries are durable on the follower.
    AppendResponse {
        /// Responder's term.
        term: Term,
        /// Echo of the request's `prev_log_index` (lets the leader drop stale answers).
        prev_log_index: LogIndex,
        /// Outcome.
        result: AppendResult,
    },
    /// One chunk of the leader's snapshot for a follower whose next entry was compacted away
    /// (Raft §7). Chunks go one at a time, in order; `meta` names the snapshot in every chunk so
    /// a follower can resume a partial transfer or abandon it for a newer snapshot.
    InstallSnapshot {
        /// Leader's term.
        term: Term,
        /// The snapshot (index, term, membership, size, checksum, ...).
        meta: SnapshotMeta,
        /// Byte offset of `data` in the snapshot.
        offset: u64,
        /// The chunk.
        data: Bytes,
        /// Last chunk.
        done: bool,
        /// CRC32C of `data`.
        chunk_checksum: u32,
    },
    /// Answer to an [`RaftMessage::InstallSnapshot`], sent once the chunk is durable (the install,
    /// once the snapshot and the compaction are).
    SnapshotResponse {
        /// Responder's term.
        term: Term,
        /// Index of the snapshot answered about.
        index: LogIndex,
        /// Term of that snapshot.
        snapshot_term: Term,
        /// The offset the follower expects next (resume point; 0 restarts the transfer).
        next_offset: u64,
        /// The follower's log now starts after `index` (installed, or already committed there).
        installed: bool,
    },
    /// A follower whose snapshot's bytes were lost asks the leader for a snapshot at or above
    /// `index` (the leader takes one on demand when its latest is older).
    SnapshotNeeded {
        /// Follower's term.
        term: Term,
        /// The lowest snapshot index that repairs it.
        index: LogIndex,
    },
    /// Quiescence (ARCHITECTURE.md, "Quiescence"): an idle leader asks a follower whose log ends
    /// at `index` (of term `index_term`, committed) to stop expecting heartbeats (`ack: false`);
    /// the follower answers with `ack: true` once it went quiet. Not part of the Raft paper.
    Quiesce {
        /// Leader's term.
        term: Term,
        /// The leader's last (and committed) index.
        index: LogIndex,
        /// The term of the entry at `index`.
        index_term: Term,
        /// An answer from the follower.
        ack: bool,
    },
    /// Read-index (thesis §6.4): the leader asks the voters to confirm it still leads
    /// (`ack: false`); a follower of that leader in that term answers with `ack: true`. Reads
    /// waiting when round `round` started are served once a quorum confirmed it.
    ReadRound {
        /// Leader's term (the responder's term in an answer).
        term: Term,
        /// The leader's round number, echoed in the answer.
        round: u64,
        /// An answer.
        ack: bool,
    },
    /// A follower asks the leader for a read index for its read `request` (follower reads).
    ReadIndexRequest {
        /// Follower's term.
        term: Term,
        /// The follower's identifier of the read, echoed in the answer.
        request: u64,
    },
    /// The leader's answer to a [`RaftMessage::ReadIndexRequest`]: the index the follower must
    /// apply before it serves the read, or `None` when this node cannot confirm one (it does not
    /// lead, or lost its leadership during the round).
    ReadIndexResponse {
        /// Leader's term.
        term: Term,
        /// The follower's read.
        request: u64,
        /// The read index.
        index: Option<LogIndex>,
    },
    /// Leadership transfer (thesis §3.10): the leader tells a caught-up follower to campaign now.
    TimeoutNow {
        /// Leader's term.
        term: Term,
    },
    /// Not part of Raft: a node asks the cluster (on partition 0, sent to any member, acted on by
    /// the partition-0 leader) to add it as a learner (`join`) or to remove it.
    MembershipRequest {
        /// Join (true) or leave (false).
        join: bool,
        /// Where peers reach the sender.
        address: String,
        /// Where the sender's application serves clients (recorded in the roster), if it says.
        application_address: Option<String>,
    },
}

/// Outcome of an append on a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to and including `match_index`, durably.
    Success {
        /// Highest index known to match the leader's log.
        match_index: LogIndex,
    },
    /// The anchor did not match. The hint lets the leader skip a whole term at a time.
    Conflict {
        /// First index the leader should consider sending from.
        hint_index: LogIndex,
        /// Term of the follower's entry at `prev_log_index`, when it has one.
        hint_term: Option<Term>,
    },
    /// The request came from a stale leader (its term is below the follower's).
    StaleTerm,
}

impl RaftMessage {
    /// The term the message carries.
    pub fn term(&self) -> Term {
        match self {
            RaftMessage::VoteRequest { term, .. }
            | RaftMessage::VoteResponse { term, .. }
            | RaftMessage::AppendRequest { term, .. }
            | RaftMessage::AppendResponse { term, .. }
            | RaftMessage::InstallSnapshot { term, .. }
            | RaftMessage::SnapshotResponse { term, .. }
            | RaftMessage::SnapshotNeeded { term, .. }
            | RaftMessage::Quiesce { term, .. }
            | RaftMessage::ReadRound { term, .. }
            | RaftMessage::ReadIndexRequest { term, .. }
            | RaftMessage::ReadIndexResponse { term, .. }
            | RaftMessage::TimeoutNow { term } => *term,
            RaftMessage::MembershipRequest { .. } => 0,
        }
    }

    /// A short name for logs and metrics.
    pub fn kind_name(&self) -> &'static str {
        match self {
            RaftMessage::VoteRequest { pre_vote: true, .. } => "pre_vote_request",
            RaftMessage::VoteRequest { transfer: true, .. } => "transfer_vote_request",
            RaftMessage::VoteRequest { .. } => "vote_request",
            RaftMessage::VoteResponse { pre_vote: true, .. } => "pre_vote_response",
            RaftMessage::VoteResponse { .. } => "vote_response",
            RaftMessage::AppendRequest { .. } => "append_request",
            RaftMessage::AppendResponse { .. } => "append_response",
            RaftMessage::InstallSnapshot { .. } => "install_snapshot",
            RaftMessage::SnapshotResponse { .. } => "snapshot_response",
            RaftMessage::SnapshotNeeded { .. } => "snapshot_needed",
            RaftMessage::Quiesce { ack: false, .. } => "quiesce",
            RaftMessage::Quiesce { ack: true, .. } => "quiesce_ack",
            RaftMessage::ReadRound { ack: false, .. } => "read_round",
            RaftMessage::ReadRound { ack: true, .. } => "read_round_ack",
            RaftMessage::ReadIndexRequest { .. } => "read_index_request",
            RaftMessage::ReadIndexResponse { .. } => "read_index_response",
            RaftMessage::TimeoutNow { .. } => "timeout_now",
            RaftMessage::MembershipRequest { .. } => "membership_request",
        }
    }
}

/// A message addressed from one replica of a partition to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Partition the message belongs to.
    pub partition: PartitionId,
    /// Sending node.
    pub from: NodeId,
    /// Destination node.
    pub to: NodeId,
    /// The protocol message.
    pub message: RaftMessage,
}

/// What a transport sends to one node in one go: messages of any number of partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageBatch {
    /// Cluster the sender belongs to; receivers drop batches of other clusters.
    pub cluster_id: String,
    /// Sending node.
    pub from: NodeId,
    /// Destination node.
    pub to: NodeId,
    /// The messages, in send order (per-peer FIFO is preserved by transports).
    pub messages: Vec<Envelope>,
}

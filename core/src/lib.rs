//! `kommander-core`: the Raft protocol of one partition as a pure, deterministic state machine
//! ([`raft::PartitionStateMachine`]), the types every layer shares, the contracts of the pluggable
//! layers ([`wal::Wal`], [`transport::Transport`], [`discovery::Discovery`]), an in-memory WAL, and
//! conformance suites that every adapter must pass.
//!
//! This crate performs no I/O, reads no clock and depends on no async runtime: the actix runtime in
//! `kommander-actors` drives it, and the deterministic simulator (feature `sim`) drives it in tests.

#![warn(missing_docs)]

pub mod codec;
pub mod config;
pub mod conformance;
pub mod discovery;
pub mod entry;
pub mod error;
pub mod hlc;
pub mod ids;
pub mod liveness;
pub mod log_type;
pub mod memory_wal;
pub mod message;
pub mod payload;
pub mod raft;
pub mod rng;
#[cfg(feature = "sim")]
pub mod sim;
pub mod snapshot;
pub mod system;
pub mod transport;
pub mod validate;
pub mod wal;

/// The shared byte buffer payloads travel in (re-exported from the `bytes` crate).
pub use bytes::Bytes;
pub use config::PartitionConfig;
pub use discovery::{Discovery, DiscoveryError, DynamicDiscovery, NodeContact, StaticDiscovery};
pub use entry::{EntryKind, LogEntry};
pub use error::{ConfigError, FatalError, ProposeError, ReadError, StepError, TicketOutcome, TransferError};
pub use hlc::{HlcTimestamp, HybridLogicalClock, Ticket};
pub use ids::{LogIndex, NodeId, PartitionId, Term};
pub use liveness::{LivenessChange, LivenessConfig, NodeLiveness};
pub use log_type::LogType;
pub use memory_wal::MemoryWal;
pub use message::{AppendResult, Envelope, MessageBatch, RaftMessage};
pub use raft::{PartitionStateMachine, ReadConsistency, ReadState, Ready, Role};
pub use snapshot::SnapshotMeta;
pub use transport::{InboundRejection, InboundSink, Transport, TransportError};
pub use validate::{validate_batch, InvalidBatch, MessageLimits};
pub use wal::{HardState, PartitionWrite, Wal, WalBatch, WalError};

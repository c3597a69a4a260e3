//! `kommander`: an embedded, partitioned (multi-Raft) consensus runtime for actix services.
//!
//! This facade is the one dependency applications add. It re-exports the Raft core ([`core`]) and
//! the actix runtime ([`actors`]), the durable WALs ([`WalBackend`]: SQLite by default, RocksDB
//! opt-in) and the network transports ([`transport`]: REST and gRPC), selected by cargo features.

pub use kommander_actors as actors;

/// The README's Rust examples, compiled (and run, unless marked `no_run`) by `cargo test`.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
pub use wal_backend::{open_wal, WalBackend, WalBackendExt};

mod wal_backend;

pub mod observe;

/// Network transports (features `rest` and `grpc`).
#[cfg(any(feature = "rest", feature = "grpc"))]
pub mod transport {
    /// gRPC transport on tonic (feature `grpc`).
    #[cfg(feature = "grpc")]
    pub use kommander_transport_grpc as grpc;
    /// REST transport: actix-web routes + reqwest client (feature `rest`).
    #[cfg(feature = "rest")]
    pub use kommander_transport_rest as rest;
}

#[cfg(all(feature = "rest", feature = "grpc"))]
#[doc(hidden)]
pub mod fuzzing;

/// Shared machinery of the network transports: auth, inbound gate, outboxes, counters.
#[cfg(any(feature = "rest", feature = "grpc"))]
pub use kommander_net as net;

/// `mockall` mocks (feature `mocks`): `MockRaftClient` (what an application actor calls, for
/// testing it without a cluster) and the pluggable layers `MockWal`, `MockTransport`,
/// `MockDiscovery`.
#[cfg(feature = "mocks")]
pub mod mocks {
    pub use kommander_actors::MockRaftClient;
    pub use kommander_core::discovery::MockDiscovery;
    pub use kommander_core::transport::MockTransport;
    pub use kommander_core::wal::MockWal;
}
pub use kommander_core as core;

/// An in-memory N-node cluster running your [`prelude::StateMachine`], for your own integration
/// tests (see [`testing::TestCluster`]).
pub use kommander_actors::testing;

/// The types most applications need.
pub mod prelude {
    pub use crate::{open_wal, WalBackend, WalBackendExt};
    pub use kommander_actors::{
        AdminError, Consistency, ExportState, InMemoryNetwork, ManagerError, PartitionStatus, RaftClient, RaftEvent,
        RaftManager, Read, ReadBarrier, ReplicateError, RuntimeConfig, SnapshotStore, StateMachine, StateMachineActor,
    };
    pub use kommander_core::raft::ProposalCommitted;
    pub use kommander_core::system::{HashRange, PartitionMap};
    pub use kommander_core::{
        Bytes, Discovery, HlcTimestamp, LogEntry, LogIndex, MemoryWal, NodeContact, NodeId, PartitionId,
        StaticDiscovery, Term, Ticket, TicketOutcome, Transport, Wal, WalError,
    };
}

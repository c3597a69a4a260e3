//! `kommander`: an embedded, partitioned (multi-Raft) consensus runtime for actix services.
//!
//! This facade is the one dependency applications add. It re-exports the Raft core ([`core`]) and
//! the actix runtime ([`actors`]); the durable WALs and network transports join it behind cargo
//! features as they land.

pub use kommander_actors as actors;
pub use wal_backend::{open_wal, WalBackend, WalBackendExt};

mod wal_backend;

/// `mockall` mocks of the pluggable layers (feature `mocks`): `MockWal`, `MockTransport`,
/// `MockDiscovery`.
#[cfg(feature = "mocks")]
pub mod mocks {
    pub use kommander_core::discovery::MockDiscovery;
    pub use kommander_core::transport::MockTransport;
    pub use kommander_core::wal::MockWal;
}
pub use kommander_core as core;

/// The types most applications need.
pub mod prelude {
    pub use crate::{open_wal, WalBackend, WalBackendExt};
    pub use kommander_actors::{
        InMemoryNetwork, PartitionStatus, RaftEvent, RaftManager, ReplicateError, RuntimeConfig,
    };
    pub use kommander_core::raft::ProposalCommitted;
    pub use kommander_core::{
        Discovery, EntryKind, HardState, HlcTimestamp, LogEntry, LogIndex, MemoryWal, NodeContact, NodeId,
        PartitionConfig, PartitionId, ProposeError, StaticDiscovery, Term, Ticket, TicketOutcome, Transport, Wal,
        WalBatch, WalError,
    };
}

//! `kommander`: an embedded, partitioned (multi-Raft) consensus runtime for actix services.
//!
//! This facade is the one dependency applications add. Today it re-exports the Raft core
//! ([`core`]); the actix runtime, the durable WALs and the network transports join it behind cargo
//! features as they land.

pub use kommander_core as core;

/// The types most applications need.
pub mod prelude {
    pub use kommander_core::{
        EntryKind, HardState, HlcTimestamp, LogEntry, LogIndex, NodeId, PartitionConfig, PartitionId, ProposeError,
        Term, Ticket, TicketOutcome, Wal, WalBatch, WalError,
    };
}

//! `kommander-actors`: the actix runtime of kommander.
//!
//! - [`RaftManager`]: the node handle (`join_cluster`, `replicate_logs`, `commit_logs`, …).
//! - [`PartitionExecutor`]: one supervised actor per partition, serial owner of its Raft state
//!   machine; batches outputs per turn.
//! - [`WalScheduler`]: group commit across partitions (one WAL write + sync per batch).
//! - [`ReadScheduler`]: fair, blocking-thread WAL reads for follower catch-up.
//! - [`SystemCoordinator`]: partition 0's view (the partition map).
//! - [`InMemoryNetwork`]: an in-process transport with fault injection.
//! - [`RaftEvent`]: what the application receives, through an actix `Recipient`.

#![warn(missing_docs)]

pub mod config;
pub mod coordinator;
pub mod error;
pub mod events;
pub mod executor;
pub mod manager;
pub mod memory_transport;
pub mod read_scheduler;
pub mod registry;
pub mod router;
pub mod status;
mod system_api;
pub mod transfer;
pub mod wal_scheduler;

pub use config::RuntimeConfig;
pub use coordinator::SystemCoordinator;
pub use error::{ManagerError, ReplicateError};
pub use events::RaftEvent;
pub use executor::{GetStatus, PartitionExecutor, ProposeFence, Replicate, Resolve, Retire};
pub use manager::{RaftManager, RaftManagerBuilder};
pub use memory_transport::{InMemoryNetwork, InMemoryTransport};
pub use read_scheduler::ReadScheduler;
pub use status::PartitionStatus;
pub use transfer::ExportState;
pub use wal_scheduler::{WalScheduler, WalStats};

//! `kommander-actors`: the actix runtime of kommander.
//!
//! The public surface is small on purpose:
//! - [`RaftManager`]: the node handle (`join_cluster`, `replicate`, `commit`, the
//!   partition map and membership API, …), built with [`RaftManager::builder`].
//! - [`PartitionExecutor`]: the actor owning one partition replica. Applications may address a user
//!   partition directly ([`RaftManager::partition`]) with [`Replicate`], [`Resolve`],
//!   [`ReadBarrier`] and [`GetStatus`]; the executor itself refuses partition 0 and reserved log types, and every
//!   other message it handles is internal to this crate.
//! - [`RaftEvent`]: what the application receives, through an actix `Recipient`;
//!   [`ExportState`]: what it answers during splits and merges.
//! - [`InMemoryNetwork`]: an in-process transport with fault injection.
//!
//! Internal (crate-private): the WAL scheduler (group commit), the read scheduler, the system
//! coordinator (partition 0's state, splits and merges, roster), the partition registry.
//!
//! The runtime's own messages cannot be named outside the crate:
//! ```compile_fail
//! use kommander_actors::executor::Retire; // private module, crate-private message
//! ```
//! ```compile_fail
//! // Runtime entries (exempt from the reserved-type check) cannot be built outside the crate.
//! let write = kommander_actors::Replicate::runtime("kommander.system", vec![]);
//! ```
//! ```compile_fail
//! // Nor can a `Replicate` be built field by field.
//! let write = kommander_actors::Replicate {
//!     log_type: "kommander.system".into(), payloads: vec![], auto_commit: true, guard: None, runtime: true,
//! };
//! ```

#![warn(missing_docs)]

mod application;
mod changes;
mod client;
mod config;
mod coordinator;
mod error;
mod events;
mod executor;
mod manager;
mod memory_transport;
pub mod metrics;
mod node_clock;
mod read_scheduler;
mod registry;
mod request;
mod router;
mod snapshot_store;
mod status;
mod system_api;
pub mod testing;
mod transfer;
mod wal_scheduler;

pub use application::{Read, StateMachine, StateMachineActor, TakeSnapshot};
#[cfg(feature = "mocks")]
pub use client::MockRaftClient;
pub use client::{RaftClient, Reply};
pub use config::RuntimeConfig;
pub use error::{AdminError, BackpressureCause, ManagerError, ReplicateError, Result};
pub use events::RaftEvent;
pub use executor::{Consistency, GetStatus, PartitionExecutor, ReadBarrier, Replicate, Resolve};
pub use manager::{RaftManager, RaftManagerBuilder, DEFAULT_CLUSTER_ID};
pub use memory_transport::{InMemoryNetwork, InMemoryTransport};
pub use router::InboundRouter;
pub use snapshot_store::{SnapshotError, SnapshotSink, SnapshotSource, SnapshotStore};
pub use status::PartitionStatus;
pub use transfer::{ExportState, RESERVED_PREFIX};
pub use wal_scheduler::WalStats;

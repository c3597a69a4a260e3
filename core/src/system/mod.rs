//! The system partition's state (partition 0): the replicated partition map, the cluster roster
//! and the one multi-step operation (split or merge) in progress. It is a deterministic state
//! machine: every node applies the same committed [`SystemCommand`]s from partition 0's log in the
//! same order to the same genesis state and so holds the same map and roster. A command that is
//! not valid in the current state is applied as a no-op everywhere and reports its
//! [`SystemError`].

pub mod balance;
pub mod command;
pub mod hash;
pub mod map;
pub mod roster;
pub mod state;

pub use command::{SystemCommand, SystemError, SystemEvent};
pub use hash::key_hash;
pub use map::{HashRange, PartitionInfo, PartitionMap, PartitionState};
pub use roster::{Member, MemberRole, Roster};
pub use state::{Operation, SystemState};

//! `SystemCoordinator`: owns the system view of partition 0. For now it holds the initial
//! partition map from the configuration (user partitions 1..=N) and answers where a partition
//! lives; membership, split and merge arrive with the system-partition issue.

use actix::prelude::*;
use kommander_core::PartitionId;

/// One user partition in the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition.
    pub id: PartitionId,
    /// Generation, bumped on every change (0 at bootstrap).
    pub generation: u64,
}

/// Look up a partition.
#[derive(Message)]
#[rtype(result = "Option<PartitionInfo>")]
pub struct LocatePartition(pub PartitionId);

/// List every user partition.
#[derive(Message)]
#[rtype(result = "Vec<PartitionInfo>")]
pub struct ListPartitions;

/// The coordinator actor.
#[derive(Debug)]
pub struct SystemCoordinator {
    map: Vec<PartitionInfo>,
}

impl SystemCoordinator {
    /// The initial map: user partitions `1..=count`.
    pub fn with_initial_partitions(count: u32) -> Self {
        SystemCoordinator { map: (1..=count).map(|p| PartitionInfo { id: PartitionId(p), generation: 0 }).collect() }
    }
}

impl Actor for SystemCoordinator {
    type Context = Context<Self>;
}

impl Handler<LocatePartition> for SystemCoordinator {
    type Result = Option<PartitionInfo>;
    fn handle(&mut self, msg: LocatePartition, _: &mut Context<Self>) -> Self::Result {
        self.map.iter().find(|p| p.id == msg.0).cloned()
    }
}

impl Handler<ListPartitions> for SystemCoordinator {
    type Result = MessageResult<ListPartitions>;
    fn handle(&mut self, _: ListPartitions, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.map.clone())
    }
}

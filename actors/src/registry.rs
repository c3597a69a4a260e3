//! The partitions running on a node: starts an executor (under a supervisor, on the node's
//! arbiter, registered with the inbound router) for each partition the map says exists, and
//! retires those the map removed. Owned by the manager, driven by the system coordinator.

use crate::changes::Changes;
use crate::config::RuntimeConfig;
use crate::executor::{ExecutorShared, PartitionExecutor, Retire};
use crate::router::InboundRouter;
use crate::status::{PartitionStatus, StatusCell};
use actix::prelude::*;
use kommander_core::{NodeId, PartitionId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

type Running = (Addr<PartitionExecutor>, Arc<StatusCell>);

/// The executors of one node.
pub struct PartitionRegistry {
    node: NodeId,
    config: RuntimeConfig,
    handle: ArbiterHandle,
    shared: Mutex<ExecutorShared>,
    router: Arc<InboundRouter>,
    base: (Vec<NodeId>, Vec<NodeId>),
    running: Mutex<BTreeMap<PartitionId, Running>>,
    retired: Mutex<BTreeSet<PartitionId>>,
    changes: Arc<Changes>,
}

impl PartitionRegistry {
    /// A registry starting executors on `handle` with `shared`; `base` is every partition's
    /// membership before any config entry (voters, learners).
    pub(crate) fn new(
        node: NodeId,
        config: RuntimeConfig,
        handle: ArbiterHandle,
        shared: ExecutorShared,
        router: Arc<InboundRouter>,
        base: (Vec<NodeId>, Vec<NodeId>),
        changes: Arc<Changes>,
    ) -> Self {
        PartitionRegistry {
            node,
            config,
            handle,
            shared: Mutex::new(shared),
            router,
            base,
            running: Mutex::new(BTreeMap::new()),
            retired: Mutex::new(BTreeSet::new()),
            changes,
        }
    }

    /// The node's change signal (partitions started and stopped, statuses, system state).
    pub(crate) fn changes(&self) -> &Arc<Changes> {
        &self.changes
    }

    /// Send partition 0's events to `recipient` (set before partition 0 starts).
    pub(crate) fn set_system_events(
        &self,
        events: Recipient<crate::events::RaftEvent>,
        snapshots: Option<Recipient<crate::application::TakeSnapshot>>,
    ) {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.system_events = Some(events);
        shared.system_snapshot_requests = snapshots;
    }

    /// Start `partition` unless it runs already or was retired. Returns true if it was started.
    pub fn ensure_running(&self, partition: PartitionId) -> bool {
        if self.retired.lock().unwrap_or_else(|p| p.into_inner()).contains(&partition) {
            return false;
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.contains_key(&partition) {
            return false;
        }
        let (voters, learners) = self.base.clone();
        let mut config = self.config.partition_config(self.node, partition, voters);
        config.learners = learners;
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let status = Arc::new(StatusCell::new(self.changes.clone()));
        let cell = status.clone();
        let addr = Supervisor::start_in_arbiter(&self.handle, move |_| PartitionExecutor::new(config, shared, cell));
        self.router.register(partition, addr.clone());
        running.insert(partition, (addr, status));
        drop(running);
        self.changes.bump();
        tracing::debug!(node = %self.node, %partition, "partition started");
        true
    }

    /// Stop `partition` for good. Returns true if it was running.
    pub fn retire(&self, partition: PartitionId) -> bool {
        self.retired.lock().unwrap_or_else(|p| p.into_inner()).insert(partition);
        self.router.unregister(partition);
        let removed = self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&partition);
        self.changes.bump();
        match removed {
            Some((addr, _)) => {
                addr.do_send(Retire);
                true
            }
            None => false,
        }
    }

    /// The executor and status of a running partition.
    pub fn get(&self, partition: PartitionId) -> Option<(Addr<PartitionExecutor>, Arc<StatusCell>)> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).get(&partition).cloned()
    }

    /// Status of a running partition.
    pub fn status(&self, partition: PartitionId) -> Option<PartitionStatus> {
        self.get(partition).map(|(_, status)| status.get())
    }

    /// Does this node lead `partition` (established leadership)?
    pub fn leads(&self, partition: PartitionId) -> bool {
        self.status(partition).is_some_and(|s| s.is_leader)
    }

    /// Running partitions.
    pub fn running(&self) -> Vec<PartitionId> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect()
    }

    /// Stop routing to every partition (the node is leaving).
    pub(crate) fn clear(&self) {
        self.router.clear();
        self.running.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.changes.bump();
    }
}

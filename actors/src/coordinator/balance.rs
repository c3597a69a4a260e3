//! Leader balance (`RuntimeConfig::balance_leaders`): elections pick leaders by timing, so after
//! a start or a failover one node may lead most partitions — its crash then costs most of them a
//! failover, and its arbiter does most of the leaders' work. Every [`BALANCE_EVERY`], once every
//! user partition has a leader and some status changed since the last look, this node hands the
//! partitions it leads beyond its share to the least-loaded live voters
//! ([`leadership_handoffs`], at most [`MAX_HANDOFFS`] per round) with leadership transfers. At
//! rest (balanced, nothing changing) a round reads one counter.

use super::SystemCoordinator;
use crate::executor::TransferLeadership;
use kommander_core::system::balance::leadership_handoffs;
use kommander_core::{NodeId, PartitionId};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often the balance is checked.
const BALANCE_EVERY: Duration = Duration::from_secs(2);
/// Hand-overs started per round.
const MAX_HANDOFFS: usize = 256;

/// When the balance was last checked, and the node's change counter then.
#[derive(Debug, Default)]
pub(super) struct Balancer {
    last: Option<Instant>,
    seen_changes: u64,
}

impl SystemCoordinator {
    pub(super) fn balance_leaders(&mut self) {
        let settings = &self.members.settings;
        if !settings.balance_leaders || settings.leaving.load(Ordering::SeqCst) || !self.restored {
            return;
        }
        if self.balancer.last.is_some_and(|t| t.elapsed() < BALANCE_EVERY) {
            return;
        }
        self.balancer.last = Some(Instant::now());
        let registry = self.registry().clone();
        let version = registry.changes().version();
        if version == self.balancer.seen_changes {
            return;
        }
        let mut leaders: BTreeMap<PartitionId, NodeId> = BTreeMap::new();
        for partition in registry.running().into_iter().filter(|p| !p.is_system()) {
            match registry.status(partition).and_then(|s| s.leader) {
                Some(leader) => {
                    leaders.insert(partition, leader);
                }
                // Not settled: look again next round.
                None => return,
            }
        }
        self.balancer.seen_changes = version;
        let me = self.members.settings.node;
        let down = self.members.settings.down_peers.read().unwrap_or_else(|p| p.into_inner()).clone();
        let candidates: Vec<NodeId> = self.roster().voters().into_iter().filter(|n| !down.contains(n)).collect();
        let memberships = &self.members.memberships;
        let can_lead = |p: PartitionId, n: NodeId| memberships.get(&p).is_none_or(|members| members.contains(&n));
        let plan = leadership_handoffs(&leaders, me, &candidates, can_lead, MAX_HANDOFFS);
        if plan.is_empty() {
            return;
        }
        let led = leaders.values().filter(|&&l| l == me).count();
        tracing::info!(node = %me, led, of = leaders.len(), handing_over = plan.len(), "balancing leaders");
        for (partition, to) in plan {
            if let Some((executor, _)) = registry.get(partition) {
                executor.do_send(TransferLeadership { to: Some(to) });
            }
        }
    }
}

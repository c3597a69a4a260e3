//! Leader balance: which partitions a node should hand to whom so that every node leads about
//! its share. Elections pick leaders by timing, so after a start or a failover one node can lead
//! most partitions — and then a crash of that node costs most of the cluster a failover, and its
//! arbiter does most of the leaders' work. Each node plans only for the partitions it leads (no
//! coordination: nodes over their share give, nodes under it receive), a bounded number per round,
//! and the runtime carries the plan out with leadership transfers.

use crate::ids::{NodeId, PartitionId};
use std::collections::BTreeMap;

/// The hand-overs `me` should start now: `(partition, to)` pairs, at most `max`.
///
/// * `leaders`: the known leader of every user partition (partitions without one are left out).
/// * `candidates`: the live nodes that may lead, `me` included (voters whose node is up).
/// * `can_lead(partition, node)`: `node` is a voter of `partition`.
///
/// A node gives partitions away only while it leads more than its share `ceil(total / nodes)`
/// plus a slack of 5 % (at least one), and only to nodes under their share, the least loaded
/// first; partitions go in id order. The result is deterministic.
pub fn leadership_handoffs(
    leaders: &BTreeMap<PartitionId, NodeId>,
    me: NodeId,
    candidates: &[NodeId],
    can_lead: impl Fn(PartitionId, NodeId) -> bool,
    max: usize,
) -> Vec<(PartitionId, NodeId)> {
    if candidates.len() < 2 || !candidates.contains(&me) || leaders.is_empty() {
        return Vec::new();
    }
    let mut load: BTreeMap<NodeId, usize> = candidates.iter().map(|&n| (n, 0)).collect();
    for leader in leaders.values() {
        if let Some(count) = load.get_mut(leader) {
            *count += 1;
        }
    }
    let share = leaders.len().div_ceil(candidates.len());
    let slack = (share / 20).max(1);
    if load[&me] <= share + slack {
        return Vec::new();
    }
    let mut plan = Vec::new();
    for (&partition, _) in leaders.iter().filter(|(_, &l)| l == me) {
        if plan.len() >= max || load[&me] <= share {
            break;
        }
        let target = load
            .iter()
            .filter(|&(&n, &count)| n != me && count < share && can_lead(partition, n))
            .min_by_key(|&(&n, &count)| (count, n))
            .map(|(&n, _)| n);
        if let Some(to) = target {
            plan.push((partition, to));
            *load.get_mut(&to).expect("a candidate") += 1;
            *load.get_mut(&me).expect("a candidate") -= 1;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led(counts: &[(u64, u32)]) -> BTreeMap<PartitionId, NodeId> {
        let mut leaders = BTreeMap::new();
        let mut next = 1;
        for &(node, n) in counts {
            for _ in 0..n {
                leaders.insert(PartitionId(next), NodeId(node));
                next += 1;
            }
        }
        leaders
    }

    const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

    #[test]
    fn an_overloaded_node_gives_its_excess_to_the_least_loaded() {
        let leaders = led(&[(1, 60), (2, 30), (3, 10)]);
        let plan = leadership_handoffs(&leaders, NodeId(1), &NODES, |_, _| true, 1_000);
        // Share 34: node 1 gives 26, the first 20 to node 3 (up to node 2's 30), then the least
        // loaded in turn (node 2 first on a tie).
        assert_eq!(plan.len(), 26);
        let to3 = plan.iter().filter(|(_, to)| *to == NodeId(3)).count();
        let to2 = plan.iter().filter(|(_, to)| *to == NodeId(2)).count();
        assert_eq!((to2, to3), (3, 23));
        assert!(plan.iter().all(|(p, _)| leaders[p] == NodeId(1)), "only its own partitions");
    }

    #[test]
    fn a_balanced_or_underloaded_node_gives_nothing() {
        let leaders = led(&[(1, 34), (2, 33), (3, 33)]);
        assert!(leadership_handoffs(&leaders, NodeId(1), &NODES, |_, _| true, 100).is_empty());
        let leaders = led(&[(1, 10), (2, 80), (3, 10)]);
        assert!(leadership_handoffs(&leaders, NodeId(1), &NODES, |_, _| true, 100).is_empty());
        // Within the slack: 36 of a share of 34 (slack 1 → 35) gives; 35 does not.
        assert!(leadership_handoffs(&led(&[(1, 35), (2, 33), (3, 32)]), NodeId(1), &NODES, |_, _| true, 9).is_empty());
        assert_eq!(leadership_handoffs(&led(&[(1, 36), (2, 33), (3, 31)]), NodeId(1), &NODES, |_, _| true, 9).len(), 2);
    }

    #[test]
    fn plans_are_bounded_respect_voters_and_skip_dead_nodes() {
        let leaders = led(&[(1, 90), (2, 5), (3, 5)]);
        assert_eq!(leadership_handoffs(&leaders, NodeId(1), &NODES, |_, _| true, 7).len(), 7);
        // Node 3 is not a voter of the even partitions.
        let plan = leadership_handoffs(&leaders, NodeId(1), &NODES, |p, n| n != NodeId(3) || p.0 % 2 == 1, 1_000);
        assert!(plan.iter().all(|(p, to)| *to != NodeId(3) || p.0 % 2 == 1));
        // Node 3 is down: only node 2 receives, up to the share of two nodes.
        let live = [NodeId(1), NodeId(2)];
        let plan = leadership_handoffs(&leaders, NodeId(1), &live, |_, _| true, 1_000);
        assert!(plan.iter().all(|(_, to)| *to == NodeId(2)));
        assert_eq!(plan.len(), 40, "a share of 50 each: node 1 keeps 50");
        assert!(leadership_handoffs(&leaders, NodeId(1), &[NodeId(1)], |_, _| true, 10).is_empty());
    }
}

//! The system partition's operations under faults, at the runtime level: while clients keep
//! writing guarded key-value puts over a lossy, delayed in-memory network — with the partition-0
//! leader isolated for a while in the middle — a node joins, a partition splits, another node
//! joins, the split is merged back, and a founder leaves. Afterwards every acknowledged key is
//! readable, with its value, from the partition that owns it on every remaining node, and no
//! partition ever had two leaders in one term (as announced to the applications of all nodes).

mod support;

use kommander_core::system::MemberRole;
use kommander_core::{NodeId, PartitionId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{midpoint, writer, Cluster, P0};

async fn wait_for_voter(cluster: &Cluster, node: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let roster = cluster.running()[0].roster().unwrap();
        if roster.members.get(&NodeId(node)).is_some_and(|m| m.role == MemberRole::Voter) {
            return;
        }
        assert!(Instant::now() < deadline, "node {node} never became a voter: {roster:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn joins_splits_merges_and_leaves_under_a_lossy_network_lose_nothing() {
    let cluster = Cluster::start().await;
    cluster.leader(P0).await;
    cluster.leader(PartitionId(1)).await;
    cluster.network.set_drop_per_mille(30);
    cluster.network.set_delay(Some(Duration::from_millis(2)));

    // Nodes join first (the writers hold an `Arc` of the cluster afterwards).
    cluster.start_node(3, true).await;
    wait_for_voter(&cluster, 4).await;
    cluster.start_node(4, true).await;
    wait_for_voter(&cluster, 5).await;
    let cluster = Arc::new(cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4).map(|w| writer(cluster.clone(), format!("c{w}"), stop.clone())).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Split partition 1, with the partition-0 leader isolated for a while right after it began.
    let p1 = PartitionId(1);
    let range = cluster.settled_map().await.get(p1).unwrap().range.unwrap();
    let p0_leader = cluster.leader(P0).await;
    let split = {
        let leader = p0_leader.clone();
        actix_rt::spawn(async move { leader.split_partition(p1, midpoint(range)).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    cluster.network.isolate(p0_leader.node());
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.network.heal();
    cluster.network.set_drop_per_mille(30);
    cluster.network.set_delay(Some(Duration::from_millis(2)));
    let started = Instant::now();
    let outcome = split.await.unwrap();
    println!("split returned {:?} after the heal", started.elapsed());
    println!("split with the partition-0 leader isolated: {outcome:?}");

    // Whatever happened to that split, the map settles; split again if it was aborted, then merge.
    let deadline = Instant::now() + Duration::from_secs(40);
    let target = loop {
        let map = cluster.settled_map().await;
        let splitting = map.live().any(|p| p.state != kommander_core::system::PartitionState::Active);
        let piece = map.live().find(|p| p.id != p1 && p.range.is_some_and(|r| r.start == midpoint(range)));
        match (splitting, piece) {
            (false, Some(piece)) => break piece.id,
            (false, None) => {
                let leader = cluster.leader(P0).await;
                let _ = leader.split_partition(p1, midpoint(range)).await;
            }
            (true, _) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        assert!(Instant::now() < deadline, "the split never settled");
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leader = cluster.leader(P0).await;
    leader.merge_partitions(p1, target).await.expect("merge under faults");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A founder leaves through a committed change.
    let leaving = cluster.running().into_iter().find(|m| m.node() == NodeId(1)).unwrap();
    let started = Instant::now();
    leaving.leave_cluster().await;
    cluster.forget(NodeId(1));
    println!("node 1 left in {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster
        .running()
        .iter()
        .filter(|m| m.node() != NodeId(1))
        .any(|m| m.roster().map(|r| r.members.contains_key(&NodeId(1))).unwrap_or(true))
    {
        assert!(Instant::now() < deadline, "node 1 is still in the roster");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = HashMap::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    cluster.network.heal();

    // Node 1 left: the other four hold every acknowledged key.
    assert_eq!(cluster.running().len(), 4);
    cluster.check_readable(&acked).await;
    let leaderships = cluster.assert_one_leader_per_term().await;
    println!(
        "{} acknowledged keys readable from their owners on 4 nodes after join, join, split, merge and leave \
         under 3% loss; {leaderships} leaderships, one per term",
        acked.len(),
    );
}

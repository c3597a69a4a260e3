//! Dynamic membership in a running cluster (in-process, in-memory network, the shared harness of
//! `support/`): a three-node cluster grows to five by joins — each joiner starts as a learner of
//! every partition, asks to join, is committed to the roster, catches up and is promoted — and
//! shrinks back to three by leaves (leaders first), while writers keep writing. Afterwards every
//! acknowledged key is readable from its owner on every remaining node, the remaining nodes hold
//! identical state, and no partition ever had two leaders in one term.

mod support;

use kommander_core::system::MemberRole;
use kommander_core::{NodeId, PartitionId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{application_address, dump, index_of, writer, Cluster};

#[actix_rt::test]
async fn a_cluster_grows_to_five_by_joins_and_shrinks_back_by_leaves_under_writes() {
    let cluster = Arc::new(Cluster::start().await);
    cluster.converge_to(&[1, 2, 3]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4).map(|w| writer(cluster.clone(), format!("w{w}"), stop.clone())).collect();

    // Grow: 4 joins, is a learner first, then a voter everywhere; then 5.
    cluster.start_node(3, true).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen_as_learner = false;
    loop {
        let roster = cluster.running()[0].roster().unwrap();
        match roster.members.get(&NodeId(4)).map(|m| m.role) {
            Some(MemberRole::Learner) => seen_as_learner = true,
            Some(MemberRole::Voter) => break,
            None => {}
        }
        assert!(Instant::now() < deadline, "node 4 was never promoted: {roster:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.converge_to(&[1, 2, 3, 4]).await;
    cluster.start_node(4, true).await;
    cluster.converge_to(&[1, 2, 3, 4, 5]).await;
    println!("grew to 5 voters (node 4 observed as a learner first: {seen_as_learner})");

    // Every member's application address reaches the roster — founders' (not in the bootstrap)
    // and joiners' alike — so any node can send a client to a partition's leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let node = &cluster.running()[0];
        let recorded = (1..=5).all(|n| node.application_address(NodeId(n)) == Some(application_address(NodeId(n))));
        let leader = node.leader(PartitionId(1));
        if recorded && leader.is_some() {
            let expected = leader.map(application_address);
            assert_eq!(node.leader_application_address(PartitionId(1)), expected);
            break;
        }
        assert!(Instant::now() < deadline, "application addresses not recorded: {:?}", node.roster());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Shrink: the leader of partition 1 leaves, then the leader of partition 0 (or another node):
    // leaders remove themselves and step down once the change commits.
    for partition in [PartitionId(1), PartitionId::SYSTEM] {
        let running = cluster.running();
        let manager = running.iter().find(|m| m.is_leader(partition)).unwrap_or(&running[0]).clone();
        let node = manager.node();
        println!("node {node} (leader of {partition}: {}) leaves", manager.is_leader(partition));
        manager.leave_cluster().await;
        cluster.forget(node);
        let remaining: Vec<u64> = cluster.running().iter().map(|m| m.node().0).collect();
        cluster.converge_to(&remaining).await;
    }
    println!("shrank back to 3 voters");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = HashMap::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }

    assert!(acked.len() > 100, "writers made progress: {}", acked.len());
    cluster.check_readable(&acked).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stores = Vec::new();
        for manager in cluster.running() {
            stores.push(cluster.apps[index_of(manager.node())].send(dump()).await.expect("dump"));
        }
        if stores.iter().all(|s| *s == stores[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "the remaining replicas hold different state");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leaderships = cluster.assert_one_leader_per_term().await;
    println!("{} acknowledged writes on identical replicas; {leaderships} leaderships, one leader each", acked.len());
    for manager in cluster.running() {
        manager.shutdown().await;
    }
}

//! Consistent reads and leadership in a running in-memory cluster: linearizable and
//! lease reads on every node (followers included) see every acknowledged write; a leader cut off
//! from the others never serves a stale consistent read; leadership moves to the voter asked
//! for; a node that shuts down hands its partitions over before it stops; and leaders a node
//! gathered beyond its share spread out to the others.

mod support;

use kommander_actors::{Consistency, ReplicateError, RuntimeConfig};
use kommander_core::{NodeId, PartitionId};
use std::time::{Duration, Instant};
use support::*;

/// The value of `key` on node `i`, read at `consistency` through the manager.
async fn read(
    cluster: &Cluster,
    i: usize,
    key: &str,
    consistency: Consistency,
) -> Result<Option<String>, ReplicateError> {
    let manager = cluster.manager(i).expect("running");
    let partition = manager.partition_for_key(key.as_bytes())?.id;
    let key = key.to_string();
    manager
        .read(&cluster.apps[i], partition, consistency, move |app: &KvApp| {
            app.store.get(&partition).and_then(|m| m.get(&key).cloned())
        })
        .await
}

#[actix::test]
async fn consistent_reads_on_every_node_see_every_acknowledged_write() {
    let cluster = Cluster::start().await;
    for round in 0..20 {
        let value = format!("v{round}");
        assert!(cluster.put("key", &value).await, "write {round} acknowledged");
        for i in cluster.running_indexes() {
            for consistency in [Consistency::Linearizable, Consistency::Lease] {
                let seen = read(&cluster, i, "key", consistency).await;
                assert_eq!(seen, Ok(Some(value.clone())), "node {} at {consistency:?} after write {round}", NODES[i]);
            }
            // A local read answers at once, with whatever this replica applied.
            assert!(read(&cluster, i, "key", Consistency::Local).await.is_ok());
        }
    }
}

#[actix::test]
async fn a_leader_cut_off_never_serves_a_stale_consistent_read() {
    let cluster = Cluster::start().await;
    assert!(cluster.put("key", "old").await);
    let partition = cluster.manager(0).unwrap().partition_for_key(b"key").unwrap().id;
    let old = cluster.leader(partition).await;
    let old_index = index_of(old.node());
    cluster.network.isolate(old.node());
    // The others elect a new leader and acknowledge a newer value.
    assert!(cluster.put("key", "new").await, "the majority side accepts writes");
    for consistency in [Consistency::Linearizable, Consistency::Lease] {
        let seen = read(&cluster, old_index, "key", consistency).await;
        assert!(
            matches!(
                seen,
                Err(ReplicateError::Timeout(_) | ReplicateError::LeadershipLost(_) | ReplicateError::NotLeader { .. })
            ),
            "the cut-off leader answered {seen:?} at {consistency:?}"
        );
    }
    cluster.network.heal();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = read(&cluster, old_index, "key", Consistency::Linearizable).await;
        if seen == Ok(Some("new".into())) {
            break;
        }
        assert!(Instant::now() < deadline, "the healed node never read the new value: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix::test]
async fn leadership_moves_to_the_voter_asked_for() {
    let cluster = Cluster::start().await;
    let partition = PartitionId(1);
    for _ in 0..3 {
        let leader = cluster.leader(partition).await;
        let to = cluster.running().into_iter().map(|m| m.node()).find(|&n| n != leader.node()).unwrap();
        leader.transfer_leadership(partition, to).await.expect("transfer");
        assert_eq!(cluster.leader(partition).await.node(), to);
    }
    // Only a voter can take over.
    let leader = cluster.leader(partition).await;
    let refused = leader.transfer_leadership(partition, NodeId(9)).await;
    assert!(matches!(refused, Err(ReplicateError::Transfer { .. })), "{refused:?}");
    assert!(cluster.put("key", "after transfers").await);
}

#[actix::test]
async fn a_node_shutting_down_hands_its_partitions_over() {
    // Election timeouts and failure detection far longer than the wait below: only a handover
    // can give the partitions a new leader in time.
    let slow = RuntimeConfig {
        election_timeout: (Duration::from_secs(3), Duration::from_secs(4)),
        liveness_timeout: Duration::from_secs(10),
        ..config()
    };
    let cluster = Cluster::start_kv(slow).await;
    let partitions: Vec<PartitionId> = (0..=2).map(PartitionId).collect();
    for &p in &partitions {
        cluster.leader(p).await;
    }
    // Stop the node leading partition 1 (it may lead others too).
    let leader = cluster.leader(PartitionId(1)).await;
    let led: Vec<PartitionId> = partitions.iter().copied().filter(|&p| leader.is_leader(p)).collect();
    let stopped = cluster.stop_node(index_of(leader.node())).await;
    let deadline = Instant::now() + Duration::from_secs(1);
    for p in led {
        loop {
            let others = cluster.running();
            if others.iter().any(|m| m.is_leader(p)) {
                break;
            }
            assert!(Instant::now() < deadline, "{p} had no new leader 1 s after {} stopped", stopped.node());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(cluster.put("key", "after the handover").await);
}

#[actix::test]
async fn leaders_spread_out_after_one_node_took_them_all() {
    let cluster = Cluster::start_kv(RuntimeConfig { initial_partitions: 6, ..config() }).await;
    let users: Vec<PartitionId> = (1..=6).map(PartitionId).collect();
    // Hand every user partition to node 1.
    for &p in &users {
        let leader = cluster.leader(p).await;
        if leader.node() != NodeId(1) {
            leader.transfer_leadership(p, NodeId(1)).await.expect("transfer to node 1");
        }
    }
    // Each node's share is 2 (slack 1): node 1 keeps at most 3 once the balancer ran.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut counts = [0usize; 3];
        for &p in &users {
            if let Some(i) = cluster.running().iter().position(|m| m.is_leader(p)) {
                counts[index_of(cluster.running()[i].node())] += 1;
            }
        }
        if counts.iter().sum::<usize>() == users.len() && counts.iter().all(|&c| (1..=3).contains(&c)) {
            break;
        }
        assert!(Instant::now() < deadline, "leaders did not spread out: {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cluster.put("key", "balanced").await);
}

/// Reads racing leadership transfers all succeed and see the acknowledged value: a read whose
/// round met the change waits for the next leader and runs again (a read has no effect), on the
/// leader and on followers alike.
#[actix::test]
async fn reads_racing_leadership_transfers_succeed_on_every_node() {
    let cluster = Cluster::start().await;
    assert!(cluster.put("key", "value").await);
    let partition = cluster.manager(0).unwrap().partition_for_key(b"key").unwrap().id;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = cluster
        .running_indexes()
        .into_iter()
        .map(|i| {
            let (manager, app, stop) = (cluster.manager(i).unwrap(), cluster.apps[i].clone(), stop.clone());
            actix::spawn(async move {
                let (mut reads, mut failed) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    for consistency in [Consistency::Linearizable, Consistency::Lease] {
                        let read = move |app: &KvApp| app.store.get(&partition).and_then(|m| m.get("key").cloned());
                        match manager.read(&app, partition, consistency, read).await {
                            Ok(Some(value)) if value == "value" => reads += 1,
                            other => failed.push(format!("{} at {consistency:?}: {other:?}", manager.node())),
                        }
                    }
                }
                (reads, failed)
            })
        })
        .collect();
    for _ in 0..6 {
        let leader = cluster.leader(partition).await;
        let to = cluster.running().into_iter().map(|m| m.node()).find(|&n| n != leader.node()).unwrap();
        leader.transfer_leadership(partition, to).await.expect("transfer");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for reader in readers {
        let (reads, failed) = reader.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} reads failed across the transfers, e.g. {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        total += reads;
    }
    assert!(total > 100, "only {total} reads ran");
    println!("{total} reads across 6 leadership transfers, none failed");
}

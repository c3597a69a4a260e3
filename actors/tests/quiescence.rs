//! Quiescence in a running in-memory cluster: idle partitions go quiet on every replica, a write
//! wakes its partition and commits, and when the node leading quiet partitions stops, the node
//! clock's failure detector wakes their followers, which elect new leaders.

mod support;

use kommander_actors::RuntimeConfig;
use kommander_core::PartitionId;
use std::time::{Duration, Instant};
use support::*;

const PARTITIONS: u32 = 4;

fn quiet_config() -> RuntimeConfig {
    RuntimeConfig { initial_partitions: PARTITIONS, quiesce_after: Duration::from_millis(200), ..config() }
}

fn all_partitions() -> impl Iterator<Item = PartitionId> {
    (0..=PARTITIONS).map(PartitionId)
}

/// Wait until every running node reports every partition quiet.
async fn wait_all_quiet(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let loud: Vec<String> = cluster
            .running()
            .iter()
            .flat_map(|m| {
                all_partitions()
                    .filter(|&p| !m.status(p).is_ok_and(|s| s.quiesced))
                    .map(|p| format!("{p} on {}", m.node()))
                    .collect::<Vec<_>>()
            })
            .collect();
        if loud.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still awake: {loud:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix::test]
async fn idle_partitions_go_quiet_everywhere_and_a_write_wakes_its_partition() {
    let cluster = Cluster::start_kv(quiet_config()).await;
    cluster.converge_to(&[1, 2, 3]).await;
    wait_all_quiet(&cluster).await;
    let before: Vec<u64> = cluster.running().iter().map(|m| m.status(PartitionId(1)).unwrap().term).collect();
    for i in 0..20 {
        assert!(cluster.put(&format!("k{i}"), "v").await, "write {i} after quiescence");
    }
    let mut acked = std::collections::HashMap::new();
    acked.extend((0..20).map(|i| (format!("k{i}"), "v".to_string())));
    cluster.check_readable(&acked).await;
    // Quiet again, with no election in between: waking is not a leadership change.
    wait_all_quiet(&cluster).await;
    let after: Vec<u64> = cluster.running().iter().map(|m| m.status(PartitionId(1)).unwrap().term).collect();
    assert_eq!(before, after, "terms of partition 1 on each node");
}

#[actix::test]
async fn when_the_leader_of_quiet_partitions_stops_the_others_elect_new_leaders() {
    let cluster = Cluster::start_kv(quiet_config()).await;
    cluster.converge_to(&[1, 2, 3]).await;
    wait_all_quiet(&cluster).await;
    // The node leading the most partitions.
    let managers = cluster.running();
    let (victim, led) = managers
        .iter()
        .map(|m| (m.node(), all_partitions().filter(|&p| m.is_leader(p)).collect::<Vec<_>>()))
        .max_by_key(|(_, led)| led.len())
        .expect("nodes");
    assert!(!led.is_empty());
    let stopped = Instant::now();
    cluster.stop_node(index_of(victim)).await;
    // Without the failure detector the quiet followers would wait forever.
    let deadline = stopped + Duration::from_secs(10);
    loop {
        let running = cluster.running();
        let orphaned: Vec<PartitionId> =
            led.iter().copied().filter(|&p| !running.iter().any(|m| m.is_leader(p))).collect();
        if orphaned.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader for {orphaned:?} 10 s after {victim} stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("{} partitions of the stopped node re-elected in {:?}", led.len(), stopped.elapsed());
    assert!(cluster.put("after-failover", "v").await);
}

//! Snapshots and compaction in a running in-memory cluster: logs stay bounded, a node cut off
//! while the others compacted catches up by snapshot install, a restarted node restores from its
//! snapshot, and `RaftManager::snapshot` takes one on demand.

mod support;

use actix::Actor;
use kommander_actors::RuntimeConfig;
use kommander_core::system::HashRange;
use kommander_core::PartitionId;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::*;

const P: PartitionId = PartitionId(1);

fn snapshot_config() -> RuntimeConfig {
    RuntimeConfig {
        initial_partitions: 1,
        snapshot_interval_entries: 40,
        snapshot_tail_entries: 5,
        snapshot_chunk_bytes: 256,
        ..config()
    }
}

async fn put_many(cluster: &Cluster, from: usize, to: usize, acked: &mut HashMap<String, String>) {
    for i in from..to {
        let (key, value) = (format!("key-{i}"), format!("value-{i}"));
        assert!(cluster.put(&key, &value).await, "write {key}");
        acked.insert(key, value);
    }
}

/// Wait until `check` holds on the status of `P` on node `i`.
async fn wait_status(
    cluster: &Cluster,
    i: usize,
    what: &str,
    check: impl Fn(&kommander_actors::PartitionStatus) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = cluster.manager(i).expect("running").status(P).expect("status");
        if check(&status) {
            return;
        }
        assert!(Instant::now() < deadline, "node {}: {what}; status {status:?}", i + 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix::test]
async fn a_node_cut_off_while_the_others_compacted_catches_up_by_snapshot() {
    let cluster = Cluster::start_kv(snapshot_config()).await;
    let mut acked = HashMap::new();
    put_many(&cluster, 0, 100, &mut acked).await;
    for i in 0..3 {
        wait_status(&cluster, i, "compacted", |s| s.snapshot_index >= 40 && s.compacted_through > 0).await;
    }
    // Node 3 misses 200 writes: the others' logs are compacted far past its last entry.
    let lagging = cluster.manager(2).unwrap();
    cluster.network.isolate(lagging.node());
    put_many(&cluster, 100, 300, &mut acked).await;
    let leader =
        cluster.running().into_iter().find(|m| m.node() != lagging.node() && m.is_leader(P)).expect("a leader");
    let floor = leader.status(P).unwrap().compacted_through;
    let behind = lagging.status(P).unwrap().last_index;
    assert!(floor > behind, "the leader's floor {floor} must be past the lagging node's log ({behind})");
    cluster.network.heal();
    let target = leader.status(P).unwrap().commit_index;
    wait_status(&cluster, 2, "caught up", |s| s.applied_index >= target).await;
    let status = lagging.status(P).unwrap();
    assert!(status.snapshot_index > behind, "installed a snapshot past its old log: {status:?}");
    cluster.check_readable(&acked).await;
    // The log stays bounded everywhere: about one interval plus the tail above the floor.
    for manager in cluster.running() {
        let status = manager.status(P).unwrap();
        assert!(status.last_index - status.compacted_through <= 40 + 5 + 40, "{}: {status:?}", manager.node());
    }
}

#[actix::test]
async fn a_restarted_node_restores_from_its_snapshot_and_an_on_demand_snapshot_covers_the_applied_index() {
    let cluster = Cluster::start_kv(RuntimeConfig { snapshot_interval_entries: 0, ..snapshot_config() }).await;
    let mut acked = HashMap::new();
    put_many(&cluster, 0, 30, &mut acked).await;
    let node = cluster.manager(1).unwrap();
    wait_status(&cluster, 1, "applied", |s| s.applied_index >= 30).await;
    assert_eq!(node.status(P).unwrap().snapshot_index, 0, "no automatic snapshot with interval 0");
    let applied = node.status(P).unwrap().applied_index;
    let index = node.snapshot(P).await.expect("snapshot on demand");
    assert!(index >= applied, "snapshot at {index}, applied {applied}");
    assert_eq!(node.snapshot(P).await.expect("again"), index, "nothing new applied: the same snapshot");
    put_many(&cluster, 30, 40, &mut acked).await;
    cluster.stop_node(1).await;
    put_many(&cluster, 40, 50, &mut acked).await;
    cluster.start_node(1, false).await;
    let restarted = cluster.manager(1).unwrap();
    assert_eq!(restarted.status(P).unwrap().snapshot_index, index, "restored from the snapshot");
    cluster.check_readable(&acked).await;
}

#[actix::test]
async fn without_snapshot_storage_a_node_neither_snapshots_nor_compacts() {
    use kommander_actors::{InMemoryNetwork, RaftManager, ReplicateError, StateMachineActor};
    use kommander_core::{MemoryWal, NodeId, StaticDiscovery};
    use std::sync::Arc;
    let kv = KvApp { store: Store::new(), map: None, export_blocked: Default::default(), leaders: Vec::new() };
    let app = StateMachineActor::new(kv).start();
    let network = InMemoryNetwork::new();
    let manager = RaftManager::builder(NodeId(1))
        .config(RuntimeConfig { snapshot_interval_entries: 2, ..snapshot_config() })
        .wal(Arc::new(MemoryWal::new()))
        .transport(network.transport(NodeId(1)))
        .discovery(Arc::new(StaticDiscovery::new(Vec::new())))
        .state_machine(&app)
        .build()
        .expect("manager");
    manager.join_cluster().await.expect("join");
    manager.wait_for_leader(P, Duration::from_secs(10)).await.expect("leader");
    for i in 0..10 {
        manager.replicate(P, "kv", vec![format!("k{i}=v").into_bytes()], true).await.expect("write");
    }
    assert_eq!(manager.snapshot(P).await, Err(ReplicateError::SnapshotUnavailable(P)));
    let status = manager.status(P).unwrap();
    assert_eq!((status.snapshot_index, status.compacted_through), (0, 0), "{status:?}");
    manager.shutdown().await;
}

#[actix::test]
async fn a_node_whose_snapshot_files_were_lost_repairs_them_from_the_leader() {
    let cluster = Cluster::start_kv(snapshot_config()).await;
    let mut acked = HashMap::new();
    put_many(&cluster, 0, 100, &mut acked).await;
    wait_status(&cluster, 1, "compacted", |s| s.snapshot_index >= 40).await;
    cluster.stop_node(1).await;
    // The node's snapshot directory is lost; its WAL (log, hard state, snapshot meta) is intact.
    cluster.snapshot_stores[1].remove_partition(P).unwrap();
    cluster.start_node(1, false).await;
    let restarted = cluster.manager(1).unwrap().status(P).unwrap();
    assert!(restarted.repairing, "restored without its snapshot's bytes: {restarted:?}");
    let lost = restarted.snapshot_index;
    put_many(&cluster, 100, 110, &mut acked).await;
    wait_status(&cluster, 1, "repaired", |s| !s.repairing && s.snapshot_index >= lost).await;
    cluster.check_readable(&acked).await;
}

#[actix::test]
async fn a_split_moves_its_range_in_chunks_while_snapshots_are_taken() {
    // 64-byte chunks: the moving range (a few KiB of JSON) travels as dozens of import entries.
    let config = RuntimeConfig { snapshot_chunk_bytes: 64, snapshot_interval_entries: 30, ..snapshot_config() };
    let cluster = Cluster::start_kv(config).await;
    let mut acked = HashMap::new();
    put_many(&cluster, 0, 120, &mut acked).await;
    let map = cluster.settled_map().await;
    let range = map.get(P).unwrap().range.unwrap();
    let leader = cluster.leader(kommander_core::PartitionId::SYSTEM).await;
    let target = leader.split_partition(P, midpoint(range)).await.expect("split completes");
    put_many(&cluster, 120, 140, &mut acked).await;
    let moved =
        acked.keys().filter(|k| !in_range(k, &HashRange { start: range.start, end: midpoint(range) - 1 })).count();
    assert!(moved > 20, "keys moved to {target}: {moved}");
    cluster.check_readable(&acked).await;
}

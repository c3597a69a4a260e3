//! Disk faults under a running three-node cluster (the shared `support/` harness, each node's
//! `MemoryWal` behind a `DiskFaults` switch): a leader whose WAL writes hang hands its partitions
//! over within the stall bound and writes go on elsewhere; a failed fsync restarts the partitions
//! in it and loses no acknowledged write; a node whose writes keep failing (a full disk) falls
//! behind while the others keep writing, and catches up once its disk works again.

mod support;

use kommander_actors::RuntimeConfig;
use kommander_core::conformance::{DiskFault, DiskFaults};
use kommander_core::{MemoryWal, NodeId, PartitionId, Wal};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{index_of, Cluster, FOUNDERS, NODES, P0};

const STALL_BOUND: Duration = Duration::from_millis(300);

fn config() -> RuntimeConfig {
    RuntimeConfig { stalled_write_timeout: STALL_BOUND, ..support::config() }
}

/// Three founders over `MemoryWal`s behind fault switches (one per node slot).
async fn start() -> (Cluster, Vec<DiskFaults>) {
    let faults: Vec<DiskFaults> = NODES.iter().map(|_| DiskFaults::new()).collect();
    let wals = faults.iter().map(|f| Arc::new(f.wrap(MemoryWal::new())) as Arc<dyn Wal>).collect();
    let cluster = Cluster::start_kv_over(config(), wals).await;
    for p in [P0, PartitionId(1), PartitionId(2)] {
        cluster.leader(p).await;
    }
    (cluster, faults)
}

/// Write `count` keys `{prefix}-{i}` (through any node but `avoid`), all acknowledged.
async fn put_keys(
    cluster: &Cluster,
    prefix: &str,
    count: usize,
    avoid: &[NodeId],
    acked: &mut HashMap<String, String>,
) {
    for i in 0..count {
        let (key, value) = (format!("{prefix}-{i}"), format!("v-{prefix}-{i}"));
        if !cluster.put_avoiding(&key, &value, avoid).await {
            let views: Vec<String> = cluster
                .running()
                .iter()
                .map(|m| {
                    let p = m.partition_for_key(key.as_bytes()).map(|i| i.id);
                    format!("{}: {:?}", m.node(), p.map(|p| (p, m.status(p))))
                })
                .collect();
            panic!("{key} was not acknowledged: {views:#?}");
        }
        acked.insert(key, value);
    }
}

#[actix_rt::test]
async fn a_leader_on_a_stalled_disk_hands_its_partitions_over_and_writes_go_on_elsewhere() {
    let (cluster, faults) = start().await;
    let mut acked = HashMap::new();
    put_keys(&cluster, "before", 10, &[], &mut acked).await;

    let victim = cluster.leader(PartitionId(1)).await.node();
    let victim_manager = cluster.manager(index_of(victim)).unwrap();
    // The user partitions it leads: the clients' writes reach them all (an idle partition, like
    // partition 0 here, has nothing outstanding on the disk and keeps its leader until it writes).
    let led: Vec<PartitionId> =
        [PartitionId(1), PartitionId(2)].into_iter().filter(|&p| victim_manager.is_leader(p)).collect();
    faults[index_of(victim)].set(DiskFault::Hang);
    let hung_at = Instant::now();
    // A client's write to the victim makes the stall matter (its WAL write never completes).
    let stuck = {
        let m = victim_manager.clone();
        actix_rt::spawn(async move { m.replicate(PartitionId(1), "kv", vec![b"stuck=1".to_vec()], true).await })
    };

    // Writes through the other nodes succeed once the victim handed over.
    let mut first_write = None;
    for i in 0..20 {
        let (key, value) = (format!("during-{i}"), format!("v-during-{i}"));
        assert!(cluster.put_avoiding(&key, &value, &[victim]).await, "{key} was not acknowledged");
        first_write.get_or_insert_with(|| hung_at.elapsed());
        acked.insert(key, value);
    }
    let first_write = first_write.unwrap();
    let others: Vec<_> = cluster.running().into_iter().filter(|m| m.node() != victim).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while led.iter().any(|&p| !others.iter().any(|m| m.is_leader(p))) {
        assert!(Instant::now() < deadline, "partitions {led:?} of the stalled {victim} got no other leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let handed_over = hung_at.elapsed();
    for &p in &led {
        assert!(!victim_manager.is_leader(p), "{victim} still leads {p} on a hung disk");
    }
    eprintln!(
        "stalled disk on {victim} (leading {led:?}, bound {STALL_BOUND:?}): first write elsewhere after \
         {first_write:?}, every partition led elsewhere after {handed_over:?}"
    );
    assert!(first_write < STALL_BOUND + Duration::from_secs(2), "writes resumed only after {first_write:?}");
    assert!(faults[index_of(victim)].hanging() > 0, "the victim's WAL write must still hang");

    // The disk comes back: the hung write lands, the victim catches up and holds every key.
    faults[index_of(victim)].heal();
    let _ = stuck.await;
    put_keys(&cluster, "after", 5, &[], &mut acked).await;
    cluster.check_readable(&acked).await;
    cluster.assert_one_leader_per_term().await;
}

#[actix_rt::test]
async fn a_failed_fsync_restarts_the_partitions_in_it_and_loses_no_acknowledged_write() {
    let (cluster, faults) = start().await;
    let mut acked = HashMap::new();
    put_keys(&cluster, "before", 10, &[], &mut acked).await;
    let leader = cluster.leader(PartitionId(1)).await.node();
    // The next write of partition 1 on its leader reaches the storage, then its fsync fails.
    faults[index_of(leader)].set_once_for(PartitionId(1), DiskFault::FailSyncs);
    put_keys(&cluster, "across", 30, &[], &mut acked).await;
    assert_eq!(faults[index_of(leader)].injected(), 1, "the fsync failure was not hit");
    cluster.check_readable(&acked).await;
    cluster.assert_one_leader_per_term().await;
}

#[actix_rt::test]
async fn a_node_whose_writes_keep_failing_falls_behind_and_catches_up_once_its_disk_works() {
    let (cluster, faults) = start().await;
    let mut acked = HashMap::new();
    put_keys(&cluster, "before", 10, &[], &mut acked).await;
    // A follower of partition 1 whose disk refuses every write (full, or failing).
    let leader = cluster.leader(PartitionId(1)).await.node();
    let sick = NODES[..FOUNDERS].iter().map(|&n| NodeId(n)).find(|&n| n != leader).unwrap();
    faults[index_of(sick)].set(DiskFault::FailWrites);
    put_keys(&cluster, "while-failing", 20, &[sick], &mut acked).await;
    assert!(faults[index_of(sick)].injected() > 0, "the failing disk was never written to");
    faults[index_of(sick)].heal();
    put_keys(&cluster, "after", 5, &[], &mut acked).await;
    cluster.check_readable(&acked).await;
    cluster.assert_one_leader_per_term().await;
}

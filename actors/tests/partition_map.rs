//! The replicated partition map on partition 0, in a three-node in-process cluster: creating and
//! removing partitions, a split under write load followed by a merge with every acknowledged key
//! readable from the partition that owns it on every node, a stale-generation write rejected, and
//! a crash of the partition-0 leader in the middle of a split resolved after its restart.
//!
//! The application is a key-value store per partition (payload `key=value`). It exports the keys of
//! a hash range on request, replaces a range's keys on `Imported`, and drops keys its partition no
//! longer owns when the map changes.

mod support;

use kommander_actors::{AdminError, Consistency, Replicate, ReplicateError};
use kommander_core::system::{key_hash, HashRange, PartitionState, SystemError};
use kommander_core::{NodeId, PartitionId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{in_range, midpoint, writer, Cluster, FOUNDERS, P0};

#[actix_rt::test]
async fn split_under_load_then_merge_keeps_every_key_readable_from_its_owner() {
    let cluster = Arc::new(Cluster::start().await);
    let p1 = PartitionId(1);
    cluster.leader(P0).await;
    cluster.leader(p1).await;
    cluster.leader(PartitionId(2)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4).map(|w| writer(cluster.clone(), format!("w{w}"), stop.clone())).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = cluster.settled_map().await;
    let range = before.get(p1).unwrap().range.unwrap();
    let boundary = midpoint(range);
    let p0_leader = cluster.leader(P0).await;
    let target = p0_leader.split_partition(p1, boundary).await.expect("split completes");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let after_split = cluster.settled_map().await;
    assert_eq!(after_split.get(p1).unwrap().range, Some(HashRange { start: range.start, end: boundary - 1 }));
    assert_eq!(after_split.get(target).unwrap().range, Some(HashRange { start: boundary, end: range.end }));
    assert!(after_split.get(p1).unwrap().generation > before.get(p1).unwrap().generation);

    let p0_leader = cluster.leader(P0).await;
    p0_leader.merge_partitions(p1, target).await.expect("merge completes");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = HashMap::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    let after_merge = cluster.settled_map().await;
    assert_eq!(after_merge.get(p1).unwrap().range, Some(range));
    assert_eq!(after_merge.get(target).unwrap().state, PartitionState::Removed);
    assert!(acked.len() > 50, "the writers made progress ({} keys)", acked.len());
    let moved = acked.keys().filter(|k| key_hash(k.as_bytes()) >= boundary && in_range(k, &range)).count();
    assert!(moved > 0, "some keys lived in the split-off partition");
    cluster.check_readable(&acked).await;
    println!("{} acknowledged keys readable after split + merge ({moved} passed through {target})", acked.len());
}

#[actix_rt::test]
async fn a_write_with_a_stale_generation_is_rejected() {
    let cluster = Cluster::start().await;
    let p1 = PartitionId(1);
    let leader = cluster.leader(p1).await;
    let key =
        (0..).map(|i| format!("key{i}")).find(|k| leader.partition_for_key(k.as_bytes()).unwrap().id == p1).unwrap();
    let info = leader.partition_for_key(key.as_bytes()).unwrap();
    leader
        .replicate_guarded(p1, info.generation, "kv", vec![format!("{key}=1").into_bytes()])
        .await
        .expect("fresh write");

    let range = info.range.unwrap();
    cluster.leader(P0).await.split_partition(p1, midpoint(range)).await.expect("split");
    let leader = cluster.leader(p1).await;
    let stale = leader.replicate_guarded(p1, info.generation, "kv", vec![format!("{key}=2").into_bytes()]).await;
    assert!(matches!(stale, Err(ReplicateError::PartitionMoved { .. })), "{stale:?}");

    // Bypassing the manager's map check, the partition's log itself rejects the stale guard.
    let executor = leader.partition(p1).unwrap();
    let direct = Replicate::guarded("kv", vec![b"x=1".to_vec()], info.generation);
    let result = executor.send(direct).await.unwrap();
    assert!(
        matches!(result, Err(ReplicateError::PartitionMoved { expected, current, .. }) if expected < current),
        "{result:?}"
    );

    let fresh = leader.partition_for_key(key.as_bytes()).unwrap();
    assert!(fresh.generation > info.generation);
    let owner = cluster.leader(fresh.id).await;
    owner
        .replicate_guarded(fresh.id, fresh.generation, "kv", vec![format!("{key}=3").into_bytes()])
        .await
        .expect("re-routed write");
    assert!(matches!(
        leader.replicate(p1, "kommander.import", vec![vec![]], true).await,
        Err(ReplicateError::ReservedLogType(_))
    ));
}

/// Every way an application can write reaches partition 0 or a reserved log type only to be
/// refused with the typed error, and partition 0's log does not change. (The executor-level check
/// behind these is unit-tested in `executor/tests.rs`.)
#[actix_rt::test]
async fn every_path_into_partition_0_or_a_reserved_log_type_is_refused() {
    use kommander_core::hlc::HlcTimestamp;
    let cluster = Cluster::start().await;
    let p1 = PartitionId(1);
    let node = cluster.leader(P0).await;
    cluster.leader(p1).await;
    let p0_log = || node.status(P0).unwrap().last_index;
    let before = p0_log();
    fn reserved<T>(result: Result<T, ReplicateError>) -> bool {
        matches!(result, Err(ReplicateError::SystemPartitionReserved))
    }
    let ticket = HlcTimestamp { physical_ms: 1, logical: 0, node: 1 };

    assert!(reserved(node.replicate(P0, "kv", vec![b"a=1".to_vec()], true).await));
    assert!(reserved(node.replicate(P0, "kv", vec![b"a=1".to_vec()], false).await));
    assert!(reserved(node.replicate_guarded(P0, 1, "kv", vec![b"a=1".to_vec()]).await));
    assert!(reserved(node.commit(P0, ticket).await));
    assert!(reserved(node.rollback(P0, ticket).await));
    assert!(matches!(node.partition(P0), Err(ReplicateError::SystemPartitionReserved)));

    let owner = cluster.leader(p1).await;
    let generation = owner.partition_map().unwrap().get(p1).unwrap().generation;
    let handle = owner.partition(p1).unwrap();
    for log_type in ["kommander.system", "kommander.import"] {
        let refused = |r: Result<kommander_core::raft::ProposalCommitted, ReplicateError>| matches!(r, Err(ReplicateError::ReservedLogType(ref t)) if t == log_type);
        assert!(refused(owner.replicate(p1, log_type, vec![vec![]], true).await));
        assert!(refused(owner.replicate(p1, log_type, vec![vec![]], false).await));
        assert!(refused(owner.replicate_guarded(p1, generation, log_type, vec![vec![]]).await));
        assert!(refused(handle.send(Replicate::new(log_type, vec![vec![]])).await.unwrap()));
        assert!(refused(handle.send(Replicate::two_phase(log_type, vec![vec![]])).await.unwrap()));
        assert!(refused(handle.send(Replicate::guarded(log_type, vec![vec![]], generation)).await.unwrap()));
    }
    assert_eq!(p0_log(), before, "partition 0's log must not change");
    // The same handle still writes ordinary entries.
    handle.send(Replicate::new("kv", vec![b"a=1".to_vec()])).await.unwrap().expect("ordinary write");
}

#[actix_rt::test]
async fn created_partitions_replicate_and_removed_ones_are_reclaimed() {
    let cluster = Cluster::start().await;
    let p0_leader = cluster.leader(P0).await;
    let created = p0_leader.create_partition().await.expect("create");
    assert_eq!(created, PartitionId(3));
    let leader = cluster.leader(created).await;
    for i in 0..5 {
        leader.replicate(created, "kv", vec![format!("k{i}=v").into_bytes()], true).await.expect("write");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.wals[..FOUNDERS].iter().any(|w| w.last_index(created).unwrap() < 6) {
        assert!(Instant::now() < deadline, "not every node stored the new partition's log");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let follower = cluster.running().into_iter().find(|m| !m.is_leader(P0)).unwrap();
    assert!(matches!(follower.create_partition().await, Err(AdminError::NotLeader { .. })));
    assert!(matches!(
        p0_leader.remove_partition(PartitionId(1)).await,
        Err(AdminError::Refused(SystemError::RangeMismatch(_)))
    ));
    p0_leader.remove_partition(created).await.expect("remove");
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.wals[..FOUNDERS].iter().any(|w| w.last_index(created).unwrap() != 0) {
        assert!(Instant::now() < deadline, "the removed partition's WAL was not reclaimed everywhere");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for manager in cluster.running() {
        let result = manager.replicate(created, "kv", vec![b"k=v".to_vec()], true).await;
        assert!(matches!(result, Err(ReplicateError::UnknownPartition(_))), "{result:?}");
        assert_eq!(manager.partition_map().unwrap().get(created).unwrap().state, PartitionState::Removed);
    }
    assert_eq!(p0_leader.create_partition().await.expect("create"), PartitionId(4), "ids are never reused");
}

#[actix_rt::test]
async fn a_crash_of_the_partition_0_leader_mid_split_is_resolved_after_restart() {
    let cluster = Cluster::start().await;
    let p1 = PartitionId(1);
    cluster.leader(p1).await;
    let mut acked = HashMap::new();
    for i in 0..40 {
        let (k, v) = (format!("pre-{i}"), format!("v{i}"));
        assert!(cluster.put(&k, &v).await);
        acked.insert(k, v);
    }
    // Hold the split after it began: exports fail until released.
    cluster.export_blocked.store(true, Ordering::SeqCst);
    let p0_leader = cluster.leader(P0).await;
    let range = p0_leader.partition_map().unwrap().get(p1).unwrap().range.unwrap();
    let split = {
        let leader = p0_leader.clone();
        actix_rt::spawn(async move { leader.split_partition(p1, midpoint(range)).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while p0_leader.partition_map().unwrap().get(p1).unwrap().state == PartitionState::Active {
        assert!(Instant::now() < deadline, "the split never began");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Crash (stop) the partition-0 leader mid-split, then restart it from its WAL.
    let crashed = support::index_of(p0_leader.node());
    cluster.stop_node(crashed).await;
    drop(split);
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.start_node(crashed, false).await;
    cluster.export_blocked.store(false, Ordering::SeqCst);

    let deadline = Instant::now() + Duration::from_secs(20);
    let map = loop {
        let map = cluster.settled_map().await;
        let pending = cluster
            .running()
            .iter()
            .any(|m| m.partition_map().unwrap().live().any(|p| !matches!(p.state, PartitionState::Active)));
        if !pending {
            break map;
        }
        assert!(Instant::now() < deadline, "the interrupted split was never resolved: {map:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let target = map.partitions.keys().copied().max().unwrap();
    let resolved = match map.get(target).unwrap().state {
        PartitionState::Active => "completed",
        PartitionState::Removed => "aborted",
        other => panic!("unexpected state {other:?}"),
    };
    for i in 0..20 {
        let (k, v) = (format!("post-{i}"), format!("v{i}"));
        assert!(cluster.put(&k, &v).await);
        acked.insert(k, v);
    }
    cluster.check_readable(&acked).await;
    println!("split interrupted by a partition-0 leader crash was {resolved} after the restart");
}

/// `key`'s value in `partition` of a node's key-value store.
fn value_of(key: &str) -> impl Fn(&support::KvApp, PartitionId) -> Option<String> + Clone + Send + 'static {
    let key = key.to_string();
    move |app, partition| app.store.get(&partition).and_then(|keys| keys.get(&key)).cloned()
}

/// A key in the half of `p1`'s range that a split at its midpoint moves, with the boundary.
fn moving_key(manager: &kommander_actors::RaftManager, p1: PartitionId) -> (String, u64) {
    let range = manager.partition_map().unwrap().get(p1).unwrap().range.unwrap();
    let boundary = midpoint(range);
    let moving = HashRange { start: boundary, end: range.end };
    ((0..).map(|i| format!("moving-{i}")).find(|k| in_range(k, &moving)).unwrap(), boundary)
}

/// Wait until `app`'s store holds `key` = `value` in `partition`.
async fn wait_for_value(app: &support::App, partition: PartitionId, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let store = app.send(support::dump()).await.unwrap();
        if store.get(&partition).and_then(|keys| keys.get(key)).map(String::as_str) == Some(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{key} never reached {value} in {partition}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A linearizable read of `key` through `node`, retried while the node catches up after a heal
/// (elections, partitions it starts late); any value it returns is final.
async fn read_once_healed(
    node: &kommander_actors::RaftManager,
    app: &support::App,
    key: &str,
) -> (PartitionId, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match node.read_for_key(app, key.as_bytes(), Consistency::Linearizable, value_of(key)).await {
            Ok(read) => return read,
            Err(error) => assert!(Instant::now() < deadline, "no read once healed: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The set-up of the stale-map tests: a cluster whose partition 1 holds `key` = `old` (in the half
/// a split at `boundary` moves), seen by `stale` (not partition 0's leader) and its `app`.
struct StaleReader {
    cluster: Cluster,
    p0_leader: kommander_actors::RaftManager,
    stale: kommander_actors::RaftManager,
    app: support::App,
    key: String,
    boundary: u64,
}

impl StaleReader {
    async fn start() -> StaleReader {
        let cluster = Cluster::start().await;
        let p1 = PartitionId(1);
        cluster.leader(p1).await;
        let p0_leader = cluster.leader(P0).await;
        let (key, boundary) = moving_key(&p0_leader, p1);
        assert!(cluster.put(&key, "old").await);
        let stale = cluster.running().into_iter().find(|m| m.node() != p0_leader.node()).unwrap();
        let app = cluster.apps[support::index_of(stale.node())].clone();
        wait_for_value(&app, p1, &key, "old").await;
        StaleReader { cluster, p0_leader, stale, app, key, boundary }
    }
}

/// Write `key` = `value` through the other nodes: the stale node's map cannot route it, so if it
/// was elected leader of the key's new partition, that leadership moves to another node first.
async fn put_elsewhere(
    cluster: &Cluster,
    p0_leader: &kommander_actors::RaftManager,
    stale: NodeId,
    key: &str,
    value: &str,
) {
    let owner = p0_leader.partition_for_key(key.as_bytes()).unwrap().id;
    if let Some(leader) = cluster.running().into_iter().find(|m| m.node() == stale && m.is_leader(owner)) {
        leader.transfer_leadership(owner, p0_leader.node()).await.expect("transfer off the stale node");
    }
    assert!(cluster.put_avoiding(key, value, &[stale]).await, "the write of {key} through the other nodes");
}

/// Cut `stale`'s partition-0 links, so its map stops where it is.
fn freeze_map(cluster: &Cluster, stale: NodeId) {
    for other in cluster.running().iter().map(|m| m.node()).filter(|&n| n != stale) {
        cluster.network.cut_partition(stale, other, P0);
    }
}

/// A node whose map missed a completed split still routes the moved key to its old partition,
/// whose replica holds a frozen copy. The old partition's log has the split's fence, newer than
/// the route: the read answers `PartitionMoved`, waits for the map, and (the map frozen) fails
/// instead of returning the old value; once the map catches up it reads the new owner.
#[actix_rt::test]
async fn a_read_routed_by_a_map_that_missed_a_split_never_returns_the_old_partitions_copy() {
    let StaleReader { cluster, p0_leader, stale, app, key, boundary } = StaleReader::start().await;
    let p1 = PartitionId(1);

    freeze_map(&cluster, stale.node());
    let target = p0_leader.split_partition(p1, boundary).await.expect("split");
    put_elsewhere(&cluster, &p0_leader, stale.node(), &key, "new").await;
    let route = stale.partition_for_key(key.as_bytes()).unwrap();
    assert_eq!((route.id, route.state), (p1, PartitionState::Active), "the stale node's map missed the split");
    // Its replica of p1 still holds the key's old value (a source keeps its range until its own
    // map says the split completed).
    let frozen = app.send(support::dump()).await.unwrap();
    assert_eq!(frozen.get(&p1).and_then(|keys| keys.get(&key)).map(String::as_str), Some("old"));

    for consistency in [Consistency::Linearizable, Consistency::Lease] {
        let read = stale.read_for_key(&app, key.as_bytes(), consistency, value_of(&key)).await;
        assert!(matches!(read, Err(ReplicateError::Timeout(P0))), "{consistency:?}: {read:?}");
    }

    cluster.network.heal();
    assert_eq!(read_once_healed(&stale, &app, &key).await, (target, Some("new".to_string())));
}

/// A node whose map stopped in the middle of a split (the key's partition is `Splitting`: its
/// fence is at the route's generation) cannot tell from the partition whether the key moved: the
/// read first takes a barrier on partition 0, which the frozen node cannot get, so it fails
/// instead of returning the old value; once healed it reads the new owner.
#[actix_rt::test]
async fn a_read_routed_by_a_map_stopped_mid_split_asks_partition_0_first() {
    let StaleReader { cluster, p0_leader, stale, app, key, boundary } = StaleReader::start().await;
    let p1 = PartitionId(1);

    // Hold the split after it began, freeze the stale node's map there, then let it complete.
    cluster.export_blocked.store(true, Ordering::SeqCst);
    let split = {
        let leader = p0_leader.clone();
        actix_rt::spawn(async move { leader.split_partition(p1, boundary).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while stale.partition_map().unwrap().get(p1).unwrap().state == PartitionState::Active {
        assert!(Instant::now() < deadline, "the split never began on the stale node");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    freeze_map(&cluster, stale.node());
    cluster.export_blocked.store(false, Ordering::SeqCst);
    let target = split.await.unwrap().expect("split");
    put_elsewhere(&cluster, &p0_leader, stale.node(), &key, "new").await;
    let route = stale.partition_for_key(key.as_bytes()).unwrap();
    assert!(matches!(route.state, PartitionState::Splitting { .. }), "{route:?}");

    for consistency in [Consistency::Linearizable, Consistency::Lease] {
        let read = stale.read_for_key(&app, key.as_bytes(), consistency, value_of(&key)).await;
        assert!(read.is_err(), "{consistency:?}: a frozen map mid-split read {read:?}");
    }

    cluster.network.heal();
    assert_eq!(read_once_healed(&stale, &app, &key).await, (target, Some("new".to_string())));
}

/// Reads by key racing a split never miss a key: the application drops the range its partition
/// handed over as soon as it learns the split completed, so a read that the application served
/// after the key's route changed is routed and run again.
#[actix_rt::test]
async fn reads_by_key_racing_splits_always_find_the_key() {
    let cluster = Arc::new(Cluster::start().await);
    let p1 = PartitionId(1);
    cluster.leader(p1).await;
    let p0_leader = cluster.leader(P0).await;
    let range = p0_leader.partition_map().unwrap().get(p1).unwrap().range.unwrap();
    let keys: Vec<String> = (0..).map(|i| format!("r{i}")).filter(|k| in_range(k, &range)).take(48).collect();
    for key in &keys {
        assert!(cluster.put(key, "v").await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = cluster
        .running()
        .into_iter()
        .map(|node| {
            let (app, keys, stop) = (cluster.apps[support::index_of(node.node())].clone(), keys.clone(), stop.clone());
            actix_rt::spawn(async move {
                let (mut reads, mut missing) = (0, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    for (i, key) in keys.iter().enumerate() {
                        let consistency = if i % 2 == 0 { Consistency::Linearizable } else { Consistency::Lease };
                        if let Ok((partition, value)) =
                            node.read_for_key(&app, key.as_bytes(), consistency, value_of(key)).await
                        {
                            reads += 1;
                            if value.is_none() {
                                missing.push(format!("{key} absent from {partition} on {}", node.node()));
                            }
                        }
                    }
                }
                (reads, missing)
            })
        })
        .collect();
    // Split p1 six times (each new half again), with the readers running.
    let mut splits = vec![p1];
    for _ in 0..6 {
        let source = *splits.last().unwrap();
        let range = p0_leader.partition_map().unwrap().get(source).unwrap().range.unwrap();
        splits.push(p0_leader.split_partition(source, midpoint(range)).await.expect("split"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for reader in readers {
        let (reads, missing) = reader.await.unwrap();
        assert!(missing.is_empty(), "reads missed keys: {missing:?}");
        total += reads;
    }
    assert!(total > 100, "only {total} reads ran");
    println!("{total} reads by key across 6 splits, none missed a key");
}

//! Shared by the in-process benchmarks (`bench`, `bench_reads`): a fresh 3-node cluster in one
//! process (in-memory transport, one arbiter per node) on any WAL backend, the wait for its
//! leaders, the client phases and the latency percentiles.

#![allow(dead_code)]

use actix::Actor;
use kommander::prelude::*;
use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const NODES: [u64; 3] = [1, 2, 3];
pub const WARMUP: Duration = Duration::from_millis(500);
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub fn parse_list<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<Vec<T>, String> {
    let value = value.ok_or(format!("{flag} needs a value"))?;
    let list: Result<Vec<T>, _> = value.split(',').map(|v| v.trim().parse()).collect();
    match list {
        Ok(list) if !list.is_empty() => Ok(list),
        _ => Err(format!("{flag}: expected a comma-separated list of numbers, got {value:?}")),
    }
}

pub fn config(partitions: u32) -> RuntimeConfig {
    RuntimeConfig {
        cluster_id: Some("bench".into()),
        initial_partitions: partitions,
        tick: Duration::from_millis(10),
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
        proposal_timeout: Duration::from_secs(10),
        // A fresh cluster's leaders are measured where they were elected: the balancer would
        // move some of them during the window (transfers fail the proposals caught in them).
        balance_leaders: false,
        ..RuntimeConfig::default()
    }
}

/// The benches' state machine (openraft's benchmark has one too): counts the entries applied per
/// partition; its snapshot is that count.
#[derive(Default)]
pub struct Counter {
    applied: HashMap<PartitionId, u64>,
}

impl StateMachine for Counter {
    fn apply(&mut self, partition: PartitionId, entries: &[LogEntry]) {
        *self.applied.entry(partition).or_default() += entries.len() as u64;
    }

    fn reset(&mut self, partition: PartitionId) {
        self.applied.remove(&partition);
    }

    fn snapshot(&self, partition: PartitionId, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.applied.get(&partition).copied().unwrap_or(0).to_le_bytes())
    }

    fn restore_snapshot(&mut self, partition: PartitionId, input: &mut dyn std::io::Read) -> std::io::Result<()> {
        let mut count = [0; 8];
        input.read_exact(&mut count)?;
        self.applied.insert(partition, u64::from_le_bytes(count));
        Ok(())
    }
}

/// A fresh 3-node cluster: new network, new WALs, one arbiter per node (`RaftManager` does that).
pub async fn start_cluster(
    partitions: u32,
    wal: &str,
    dir: &std::path::Path,
) -> Result<Vec<RaftManager>, Box<dyn Error>> {
    let network = InMemoryNetwork::new();
    let mut managers = Vec::new();
    for &node in &NODES {
        let contacts = NODES
            .iter()
            .filter(|&&n| n != node)
            .map(|&n| NodeContact { node: NodeId(n), address: format!("memory://node-{n}") })
            .collect();
        // Snapshots and log compaction on, as in a real deployment (and as in openraft's own
        // benchmark, whose default policy snapshots every 5,000 entries): without them the log
        // grows for the whole run and the page faults of its growth dominate the profile.
        let snapshots = if wal == "memory" {
            SnapshotStore::memory()
        } else {
            SnapshotStore::dir(dir.join(format!("node-{node}-snapshots")))?
        };
        let state = StateMachineActor::new(Counter::default()).start();
        let manager = RaftManager::builder(NodeId(node))
            .config(config(partitions))
            .state_machine(&state)
            .snapshot_store(snapshots)
            .wal(open_wal(&WalBackend::from_name(wal, dir, &format!("node-{node}"))?)?)
            .transport(network.transport(NodeId(node)))
            .discovery(Arc::new(StaticDiscovery::new(contacts)))
            .build()?;
        manager.join_cluster().await?;
        managers.push(manager);
    }
    Ok(managers)
}

/// Index of the manager with established leadership of `partition`, if any.
pub fn find_leader(managers: &[RaftManager], partition: PartitionId) -> Option<usize> {
    managers.iter().position(|m| m.is_leader(partition))
}

/// Wait until every partition has an established leader; returns the leading manager per partition.
pub async fn wait_for_leaders(managers: &[RaftManager], partitions: u32) -> Result<Vec<usize>, String> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let leaders: Vec<Option<usize>> = (1..=partitions).map(|p| find_leader(managers, PartitionId(p))).collect();
        if leaders.iter().all(Option::is_some) {
            return Ok(leaders.into_iter().flatten().collect());
        }
        if Instant::now() >= deadline {
            let missing: Vec<u32> = (1..=partitions).filter(|&p| leaders[p as usize - 1].is_none()).collect();
            return Err(format!("no established leader after {LEADER_TIMEOUT:?} for partitions {missing:?}"));
        }
        actix::clock::sleep(Duration::from_millis(5)).await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Warmup,
    Measure,
    Stop,
}

/// The `q` quantile of sorted microsecond latencies, in milliseconds.
pub fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

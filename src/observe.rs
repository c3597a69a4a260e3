//! Metrics of a node read at scrape time: the state of its partitions, its WAL counters and its
//! transport counters, set as gauges and counters on the [`metrics`] recorder the application
//! installed (the runtime's hot-path histograms and counters are in
//! [`kommander_actors::metrics`]). Call [`record_node_metrics`] (and [`record_transport_metrics`])
//! right before rendering, e.g. in a
//! `GET /metrics` handler of your actix-web `App` (what `kommander-server` does with
//! `metrics-exporter-prometheus`).
//!
//! Series per partition (label `partition`) are bounded: only the `partition_limit` partitions
//! with the largest replication lag get them (ties: lowest id first); the node-level gauges cover
//! all of them. Give the exporter an idle timeout for gauges so partitions that leave the top-N
//! drop out.

use kommander_actors::RaftManager;
use kommander_core::PartitionId;
use std::sync::atomic::Ordering;

/// Set the node's gauges and counters from `manager`: partitions, leaders, lag, WAL counters.
pub fn record_node_metrics(manager: &RaftManager, partition_limit: usize) {
    let mut statuses: Vec<_> = std::iter::once(PartitionId::SYSTEM)
        .chain(manager.partitions())
        .filter_map(|p| manager.status(p).ok().map(|s| (p, s)))
        .collect();
    let led = statuses.iter().filter(|(_, s)| s.is_leader).count();
    let leaderless = statuses.iter().filter(|(_, s)| s.leader.is_none()).count();
    let quiesced = statuses.iter().filter(|(_, s)| s.quiesced).count();
    let max_lag = statuses.iter().map(|(_, s)| s.replication_lag).max().unwrap_or(0);
    metrics::gauge!("kommander_partitions").set(statuses.len() as f64);
    metrics::gauge!("kommander_partitions_led").set(led as f64);
    metrics::gauge!("kommander_partitions_without_leader").set(leaderless as f64);
    metrics::gauge!("kommander_partitions_quiesced").set(quiesced as f64);
    metrics::gauge!("kommander_replication_lag_max_entries").set(max_lag as f64);

    statuses.sort_by(|(a, x), (b, y)| y.replication_lag.cmp(&x.replication_lag).then(a.cmp(b)));
    for (partition, status) in statuses.iter().take(partition_limit) {
        let label = [("partition", partition.0.to_string())];
        metrics::gauge!("kommander_partition_term", &label).set(status.term as f64);
        metrics::gauge!("kommander_partition_is_leader", &label).set(if status.is_leader { 1.0 } else { 0.0 });
        metrics::gauge!("kommander_partition_commit_index", &label).set(status.commit_index as f64);
        metrics::gauge!("kommander_partition_applied_index", &label).set(status.applied_index as f64);
        metrics::gauge!("kommander_partition_last_index", &label).set(status.last_index as f64);
        metrics::gauge!("kommander_partition_snapshot_index", &label).set(status.snapshot_index as f64);
        metrics::gauge!("kommander_partition_replication_lag_entries", &label).set(status.replication_lag as f64);
    }

    let wal = manager.wal_stats();
    metrics::counter!("kommander_wal_syncs_total").absolute(wal.syncs.load(Ordering::Relaxed));
    metrics::counter!("kommander_wal_entries_total").absolute(wal.entries.load(Ordering::Relaxed));
    metrics::gauge!("kommander_wal_backlog_entries").set(wal.backlog_entries.load(Ordering::Relaxed) as f64);
}

/// Set the transport's counters from `net` (`RestTransport::stats`, `GrpcTransport::stats`).
#[cfg(any(feature = "rest", feature = "grpc"))]
pub fn record_transport_metrics(net: &kommander_net::NetStats) {
    for (name, value) in net.counters() {
        metrics::counter!(format!("kommander_transport_{name}_total")).absolute(value);
    }
}

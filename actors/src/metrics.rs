//! What the runtime measures on its hot paths, through the [`metrics`] facade: the application
//! installs a recorder (for Prometheus, `metrics-exporter-prometheus`, as `kommander-server` does)
//! **before** building its [`crate::RaftManager`], and calls [`describe`] once; without a
//! recorder every handle here is a no-op. Handles are registered once (when a manager or WAL
//! scheduler is built) and reused, so a proposal costs one histogram sample and one counter add.
//!
//! The state of partitions (term, role, indexes, replication lag) and the WAL and transport
//! counters are not pushed from the hot path: an exporter reads them at scrape time from
//! [`crate::RaftManager::status`] and [`crate::RaftManager::wal_stats`] (what `kommander-server`'s
//! `GET /metrics` does). Metrics carry no labels: a process normally runs one node (in-process
//! test clusters sum their nodes).

use metrics::{describe_counter, describe_histogram, Counter, Histogram, Unit};

/// Latency of proposals through [`crate::RaftManager`], from the call to the commit answer.
pub const PROPOSAL_SECONDS: &str = "kommander_proposal_duration_seconds";
/// Proposals answered with a commit.
pub const PROPOSALS_COMMITTED: &str = "kommander_proposals_committed_total";
/// Proposals answered with an error (not leader, timeout, backpressure, ...).
pub const PROPOSALS_FAILED: &str = "kommander_proposals_failed_total";
/// Proposals refused because the WAL backlog was over its bound.
pub const BACKPRESSURE: &str = "kommander_backpressure_rejections_total";
/// Leadership changes seen by the partitions of this node (elections won or lost, transfers).
pub const LEADER_CHANGES: &str = "kommander_leader_changes_total";
/// Snapshots that became durable on this node.
pub const SNAPSHOTS: &str = "kommander_snapshots_total";
/// Duration of one WAL group commit (one `Wal::write`: one transaction and one sync).
pub const WAL_SYNC_SECONDS: &str = "kommander_wal_sync_duration_seconds";
/// Entries per WAL group commit.
pub const WAL_ENTRIES_PER_SYNC: &str = "kommander_wal_entries_per_sync";

/// Describe every metric of this module to the installed recorder (units and help texts).
pub fn describe() {
    describe_histogram!(PROPOSAL_SECONDS, Unit::Seconds, "Latency of proposals from the call to the commit answer");
    describe_counter!(PROPOSALS_COMMITTED, "Proposals answered with a commit");
    describe_counter!(PROPOSALS_FAILED, "Proposals answered with an error");
    describe_counter!(BACKPRESSURE, "Proposals refused because the WAL backlog was over its bound");
    describe_counter!(LEADER_CHANGES, "Leadership changes seen by this node's partitions");
    describe_counter!(SNAPSHOTS, "Snapshots that became durable on this node");
    describe_histogram!(WAL_SYNC_SECONDS, Unit::Seconds, "Duration of one WAL group commit (write and sync)");
    describe_histogram!(WAL_ENTRIES_PER_SYNC, Unit::Count, "Entries per WAL group commit");
}

/// The handles of a node's proposal path and partition executors.
#[derive(Clone)]
pub(crate) struct RuntimeMetrics {
    pub(crate) proposal_seconds: Histogram,
    pub(crate) committed: Counter,
    pub(crate) failed: Counter,
    pub(crate) backpressure: Counter,
    pub(crate) leader_changes: Counter,
    pub(crate) snapshots: Counter,
}

impl RuntimeMetrics {
    /// Handles from the recorder installed now (no-ops without one).
    pub(crate) fn register() -> Self {
        RuntimeMetrics {
            proposal_seconds: metrics::histogram!(PROPOSAL_SECONDS),
            committed: metrics::counter!(PROPOSALS_COMMITTED),
            failed: metrics::counter!(PROPOSALS_FAILED),
            backpressure: metrics::counter!(BACKPRESSURE),
            leader_changes: metrics::counter!(LEADER_CHANGES),
            snapshots: metrics::counter!(SNAPSHOTS),
        }
    }
}

impl std::fmt::Debug for RuntimeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RuntimeMetrics")
    }
}

/// The handles of a WAL scheduler.
pub(crate) struct WalMetrics {
    pub(crate) sync_seconds: Histogram,
    pub(crate) entries_per_sync: Histogram,
}

impl WalMetrics {
    /// Handles from the recorder installed now (no-ops without one).
    pub(crate) fn register() -> Self {
        WalMetrics {
            sync_seconds: metrics::histogram!(WAL_SYNC_SECONDS),
            entries_per_sync: metrics::histogram!(WAL_ENTRIES_PER_SYNC),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn handles_report_to_the_recorder_installed_when_they_were_registered() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let handles = metrics::with_local_recorder(&recorder, || {
            describe();
            RuntimeMetrics::register()
        });
        handles.committed.increment(2);
        handles.proposal_seconds.record(0.25);
        let values: Vec<(String, DebugValue)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
            .collect();
        assert!(values.contains(&(PROPOSALS_COMMITTED.to_owned(), DebugValue::Counter(2))), "{values:?}");
        assert!(
            values
                .iter()
                .any(|(name, value)| name == PROPOSAL_SECONDS
                    && matches!(value, DebugValue::Histogram(v) if v.len() == 1))
        );
        // Without a recorder the handles are no-ops.
        RuntimeMetrics::register().committed.increment(1);
    }
}

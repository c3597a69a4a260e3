//! Runtime configuration: timing (in real time) and limits, validated with clear errors.

use crate::error::ManagerError;
use kommander_core::{NodeId, PartitionConfig, PartitionId};
use std::time::Duration;

/// Settings of a node's runtime.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Cluster identity; messages from other clusters are dropped. Leave it `None` to take the
    /// transport's (a network transport is configured with one); set, it must equal the
    /// transport's (the build fails otherwise). Without either, the id is `"kommander"`.
    pub cluster_id: Option<String>,
    /// Number of user partitions created at bootstrap (ids 1..=N; partition 0 is the system one).
    pub initial_partitions: u32,
    /// Length of one timer tick of every partition.
    pub tick: Duration,
    /// Heartbeat interval (a multiple of `tick`).
    pub heartbeat_interval: Duration,
    /// Election timeout range `[min, max)` (multiples of `tick`; randomized per election).
    pub election_timeout: (Duration, Duration),
    /// How long `replicate` and friends wait for the outcome.
    pub proposal_timeout: Duration,
    /// Entries queued for the WAL (all partitions) above which proposals fail with backpressure.
    pub max_wal_backlog_entries: usize,
    /// Uncommitted entries per partition above which proposals fail with backpressure.
    pub max_uncommitted_entries: usize,
    /// Entries per append message and per catch-up read.
    pub max_entries_per_append: usize,
    /// Appends in flight per follower.
    pub max_inflight_appends: usize,
    /// Applied entries kept in memory per partition for catching followers up.
    pub log_cache_entries: usize,
    /// WAL reads running at once (catch-up and restore).
    pub read_concurrency: usize,
    /// Seed of election-timeout randomness.
    pub seed: u64,
    /// A split or merge still unfinished after this long is aborted by the partition-0 leader.
    pub operation_timeout: Duration,
    /// How often the system coordinator checks whether it can take a split/merge or membership step.
    pub system_check_interval: Duration,
    /// Join a running cluster instead of founding one: the node starts as a learner of every
    /// partition, asks the contacts from discovery to add it, and is promoted to voter once it
    /// caught up. A founding node (false) bootstraps with discovery's contacts as fellow voters.
    pub join_existing: bool,
    /// Where other nodes reach this one (sent with join requests).
    pub advertise_address: String,
    /// Where this node's application serves its clients (e.g. its HTTP API). Recorded in the
    /// roster, so any node can tell a client where a partition's leader serves
    /// ([`crate::RaftManager::leader_application_address`]).
    pub application_address: Option<String>,
    /// A learner within this many entries of the leader counts as caught up.
    pub promotion_lag: u64,
    /// How long a learner must stay caught up (on partition 0) before the roster promotes it.
    pub promotion_window: Duration,
    /// Take a snapshot of a partition every this many applied entries and compact its log
    /// behind it (0: only on demand, [`crate::RaftManager::snapshot`]). Default 10,000.
    pub snapshot_interval_entries: u64,
    /// Also snapshot once this many payload bytes were applied since the last snapshot (0: no byte
    /// trigger). Default 64 MiB.
    pub snapshot_interval_bytes: u64,
    /// Entries kept in the WAL below a snapshot for followers briefly behind. Default 1,024.
    pub snapshot_tail_entries: u64,
    /// Bytes per InstallSnapshot chunk. Default 1 MiB.
    pub snapshot_chunk_bytes: u64,
    /// Where snapshot files live (by convention a directory next to the WAL files; the server
    /// uses `<dir>/node-N-snapshots`). `None` (and no [`crate::RaftManagerBuilder::snapshot_store`])
    /// turns snapshots and log compaction off on the node: the snapshot bytes must live as long as
    /// the WAL that refers to them.
    pub snapshot_dir: Option<std::path::PathBuf>,
    /// A partition whose leader had nothing to replicate for this long goes quiet on every
    /// replica: no ticks, no heartbeats, until a proposal, a message or a peer's liveness change
    /// wakes it (ARCHITECTURE.md, "Quiescence"). `Duration::ZERO` keeps every partition awake.
    /// Default 1.5 s, like Kommander .NET.
    pub quiesce_after: Duration,
    /// The node-level failure detector sends a keep-alive to a peer it sent nothing to for this
    /// long. Default 100 ms.
    pub liveness_probe_interval: Duration,
    /// A peer silent for this long is reported down to every partition (quiet followers of a
    /// leader on it wake and elect). Default 500 ms, the minimum election timeout.
    pub liveness_timeout: Duration,
    /// Lease reads ([`crate::Consistency::Lease`]) answered by a leader without a quorum round
    /// while its lease holds. The lease lasts [`RuntimeConfig::read_lease`]; `false` makes lease
    /// reads take a round like linearizable ones. Default on.
    pub lease_reads: bool,
    /// The largest relative rate at which two nodes' monotonic clocks may drift apart (0.1:
    /// 10 %), which leases must allow for. Lease reads are linearizable only while clocks keep
    /// within it (ARCHITECTURE.md, "Reads"). Default 0.1.
    pub max_clock_drift: f64,
    /// [`crate::RaftManager::shutdown`] first hands every partition the node leads to another
    /// voter (leadership transfer), so a rolling restart costs no election timeout. Default on.
    pub hand_over_on_shutdown: bool,
    /// Every 2 s, a node leading more than its share of the user partitions (plus 5 %) hands the
    /// excess to the least-loaded live voters with leadership transfers, so a crash costs no
    /// node's share more than it must and the leaders' work is spread. Default on.
    pub balance_leaders: bool,
    /// A leader whose WAL completed no write for this long while one is outstanding (a hung or
    /// stalled disk) hands its leadership to an up-to-date voter and steps down, so its
    /// partitions accept writes on the other nodes; it does not campaign until its disk makes
    /// progress again. `Duration::ZERO` turns this off. Default 1 s, the maximum election timeout.
    pub stalled_write_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cluster_id: None,
            initial_partitions: 1,
            tick: Duration::from_millis(50),
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
            proposal_timeout: Duration::from_secs(10),
            max_wal_backlog_entries: 64 * 1024,
            max_uncommitted_entries: 16 * 1024,
            max_entries_per_append: 256,
            max_inflight_appends: 8,
            log_cache_entries: 1024,
            read_concurrency: 2,
            seed: 0x6b6f_6d6d_616e_6465,
            operation_timeout: Duration::from_secs(30),
            system_check_interval: Duration::from_millis(50),
            join_existing: false,
            advertise_address: String::new(),
            application_address: None,
            promotion_lag: 64,
            promotion_window: Duration::from_millis(500),
            snapshot_interval_entries: 10_000,
            snapshot_interval_bytes: 64 << 20,
            snapshot_tail_entries: 1_024,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_dir: None,
            quiesce_after: Duration::from_millis(1_500),
            liveness_probe_interval: Duration::from_millis(100),
            liveness_timeout: Duration::from_millis(500),
            lease_reads: true,
            max_clock_drift: 0.1,
            hand_over_on_shutdown: true,
            balance_leaders: true,
            stalled_write_timeout: Duration::from_millis(1_000),
        }
    }
}

impl RuntimeConfig {
    /// Check the settings; each error says what is wrong.
    pub fn validate(&self) -> Result<(), ManagerError> {
        let bad = |m: &str| Err(ManagerError::Config(m.to_string()));
        if self.tick.is_zero() {
            return bad("tick must be positive");
        }
        if self.heartbeat_interval < self.tick {
            return bad("heartbeat_interval must be at least one tick");
        }
        let (min, max) = self.election_timeout;
        if min <= self.heartbeat_interval {
            return bad("election timeout minimum must exceed the heartbeat interval");
        }
        if max <= min {
            return bad("election timeout maximum must exceed its minimum");
        }
        if self.proposal_timeout.is_zero() {
            return bad("proposal_timeout must be positive");
        }
        if self.max_wal_backlog_entries == 0 || self.max_uncommitted_entries == 0 {
            return bad("backpressure limits must be positive");
        }
        if self.read_concurrency == 0 {
            return bad("read_concurrency must be at least 1");
        }
        if !(0.0..0.5).contains(&self.max_clock_drift) {
            return bad("max_clock_drift must be in [0, 0.5)");
        }
        if self.cluster_id.as_ref().is_some_and(|id| id.is_empty()) {
            return bad("cluster_id must not be empty");
        }
        self.partition_config(NodeId(1), PartitionId(1), vec![NodeId(1)])
            .validate()
            .map_err(|e| ManagerError::Config(e.to_string()))
    }

    fn ticks(&self, d: Duration) -> u32 {
        (d.as_nanos() / self.tick.as_nanos().max(1)).clamp(1, u128::from(u32::MAX)) as u32
    }

    /// The core configuration of one partition replica.
    pub fn partition_config(&self, node: NodeId, partition: PartitionId, voters: Vec<NodeId>) -> PartitionConfig {
        let mut c = PartitionConfig::new(node, partition, voters);
        c.heartbeat_ticks = self.ticks(self.heartbeat_interval);
        c.election_timeout_min_ticks = self.ticks(self.election_timeout.0);
        c.election_timeout_max_ticks = self.ticks(self.election_timeout.1);
        c.seed = self.seed;
        c.max_uncommitted_entries = self.max_uncommitted_entries;
        c.max_entries_per_append = self.max_entries_per_append;
        c.max_inflight_appends = self.max_inflight_appends;
        c.log_cache_entries = self.log_cache_entries;
        c.snapshot_interval_entries = self.snapshot_interval_entries;
        c.snapshot_interval_bytes = self.snapshot_interval_bytes;
        c.snapshot_tail_entries = self.snapshot_tail_entries;
        c.snapshot_chunk_bytes = self.snapshot_chunk_bytes;
        c.quiesce_after_ticks = if self.quiesce_after.is_zero() { 0 } else { self.ticks(self.quiesce_after) };
        // Thousands of partitions starting together elect over a window that grows with their
        // number (one tick per 100 partitions: 5 s for 10,000 at 50 ms) instead of all at once.
        c.initial_election_spread_ticks = self.initial_partitions / 100;
        c.read_lease = self.read_lease().as_millis() as u64;
        c.transfer_timeout_ticks = c.election_timeout_min_ticks;
        c.stalled_write_ticks =
            if self.stalled_write_timeout.is_zero() { 0 } else { self.ticks(self.stalled_write_timeout) };
        c
    }

    /// How long a confirmed read round lets a leader answer lease reads (zero: leases off). A
    /// follower that confirmed the round honours the leader until its own election timeout or
    /// failure detector runs out — at least `min(election minimum, liveness_timeout)` of ticks
    /// that never run faster than `tick`. The lease takes one tick off at each end (timer
    /// granularity) and the drift bound off the rest.
    pub fn read_lease(&self) -> Duration {
        if !self.lease_reads {
            return Duration::ZERO;
        }
        let honoured = self.ticks(self.election_timeout.0).min(self.ticks(self.liveness_timeout)).saturating_sub(2);
        (self.tick * honoured).mul_f64(1.0 - self.max_clock_drift)
    }

    /// The failure detector's timing, in ticks.
    pub(crate) fn liveness(&self) -> kommander_core::LivenessConfig {
        kommander_core::LivenessConfig {
            probe_interval_ticks: self.ticks(self.liveness_probe_interval),
            down_after_ticks: self.ticks(self.liveness_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_timing_is_named() {
        assert_eq!(RuntimeConfig::default().validate(), Ok(()));
        let c = RuntimeConfig {
            election_timeout: (Duration::from_millis(40), Duration::from_secs(1)),
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(ManagerError::Config(m)) if m.contains("minimum")));
        let c = RuntimeConfig { tick: Duration::ZERO, ..Default::default() };
        assert!(c.validate().is_err());
        let c = RuntimeConfig {
            election_timeout: (Duration::from_millis(500), Duration::from_millis(500)),
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(ManagerError::Config(m)) if m.contains("maximum")));
    }

    #[test]
    fn durations_become_ticks() {
        let c = RuntimeConfig::default();
        let p = c.partition_config(NodeId(1), PartitionId(1), vec![NodeId(1)]);
        assert_eq!((p.heartbeat_ticks, p.election_timeout_min_ticks, p.election_timeout_max_ticks), (1, 10, 20));
        // 8 ticks of 50 ms that followers surely honour, less 10 % of drift.
        assert_eq!(p.read_lease, 360);
        let off = RuntimeConfig { lease_reads: false, ..Default::default() };
        assert_eq!(off.partition_config(NodeId(1), PartitionId(1), vec![NodeId(1)]).read_lease, 0);
    }
}

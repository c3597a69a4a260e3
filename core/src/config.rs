//! Configuration of one partition's state machine. Time is counted in ticks: the runtime decides
//! how long a tick is (for example 50 ms), the simulator uses virtual ticks.

use crate::error::ConfigError;
use crate::ids::{NodeId, PartitionId};

/// Settings of one partition replica.
#[derive(Clone, Debug)]
pub struct PartitionConfig {
    /// This node.
    pub node: NodeId,
    /// The partition this state machine runs.
    pub partition: PartitionId,
    /// Voting members of the partition before any config entry in its log.
    pub voters: Vec<NodeId>,
    /// Non-voting members before any config entry in its log (a joining node lists itself here
    /// with no voters: it never campaigns and learns the membership from the log).
    pub learners: Vec<NodeId>,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: u32,
    /// Lower bound (inclusive) of the randomized election timeout, in ticks.
    pub election_timeout_min_ticks: u32,
    /// Upper bound (exclusive) of the randomized election timeout, in ticks.
    pub election_timeout_max_ticks: u32,
    /// Seed of the election-timeout randomness (mix in the node and partition ids for variety).
    pub seed: u64,
    /// Appends in flight per follower before the leader waits for acknowledgements.
    pub max_inflight_appends: usize,
    /// Entries per append message (and per catch-up read from the WAL).
    pub max_entries_per_append: usize,
    /// Uncommitted entries a leader accepts before proposals fail with backpressure.
    pub max_uncommitted_entries: usize,
    /// Applied entries kept in memory to serve lagging followers without a WAL read.
    pub log_cache_entries: usize,
    /// Run a pre-vote round before a real election (thesis §9.6), so a partitioned or rejoining
    /// replica cannot raise everyone's term. On by default.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within the minimum election timeout steps down,
    /// and a replica that heard from a live leader within that timeout ignores real vote requests
    /// (thesis §6.2, §4.2.3). On by default.
    pub check_quorum: bool,
    /// Take a snapshot once this many entries were applied since the last one (0: only on
    /// demand). Default 10,000, like Kommander's checkpoints.
    pub snapshot_interval_entries: u64,
    /// Also take a snapshot once this many payload bytes were applied since the last one (0: no
    /// byte trigger). Default 64 MiB.
    pub snapshot_interval_bytes: u64,
    /// Entries kept in the WAL below a snapshot, so followers briefly behind catch up from the log
    /// rather than by a snapshot install.
    pub snapshot_tail_entries: u64,
    /// Bytes per InstallSnapshot chunk (one chunk in flight per follower).
    pub snapshot_chunk_bytes: u64,
    /// Quiescence: a leader idle for this many ticks, whose live followers hold and have
    /// committed its whole log, asks them to go quiet, and all of them stop ticking until a
    /// proposal, a message or a liveness change wakes them (0: never; the default, because a
    /// quiesced follower relies on the driver's node-level failure detector,
    /// [`crate::PartitionStateMachine::set_peer_alive`], to notice a dead leader).
    pub quiesce_after_ticks: u32,
    /// The first election timeout after a replica starts is drawn from `[min, max + spread)`
    /// instead of `[min, max)`: a node starting thousands of partitions at once spreads their
    /// first elections over time instead of running them all in the same second. Default 0.
    pub initial_election_spread_ticks: u32,
    /// Lease reads (thesis §6.4.1): how long after the start of a confirmed read round the
    /// leader may answer [`crate::raft::ReadConsistency::Lease`] reads without a new round, in
    /// the unit of the `now` the driver passes to reads (the runtime: milliseconds of a
    /// monotonic wall clock, never ticks). It must stay below the shortest time in which a
    /// follower can stop honouring this leader — the minimum election timeout and the failure
    /// detector's down time, each at the fastest rate a clock may run — by the clock-drift bound
    /// the operator assumes. 0 (the default) turns leases off: lease reads take a round.
    pub read_lease: u64,
    /// A leadership transfer that has not ended (the target did not win) after this many ticks
    /// is abandoned and the leader accepts proposals again. Default: the minimum election
    /// timeout.
    pub transfer_timeout_ticks: u32,
    /// A leader whose WAL completed no write for this many ticks while one is outstanding (a
    /// hung or stalled disk) hands its leadership to an up-to-date voter and steps down, and the
    /// replica does not campaign until its disk makes progress again (0: never). Default: the
    /// maximum election timeout, the time after which followers would give up on a silent leader.
    pub stalled_write_ticks: u32,
    /// Planted bugs for proving the simulator's checkers can fail. Test-only.
    #[cfg(feature = "canary-bugs")]
    pub canary: CanaryBugs,
}

/// Known Raft bugs that can be switched on to prove the simulator catches them (feature
/// `canary-bugs`, never for production). The type always exists so the state machine can name
/// its switches; only that feature lets a configuration turn one on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CanaryBugs {
    /// Commit an entry of a previous term by counting its replicas (violates §5.4.2, Figure 8).
    pub commit_previous_term_by_count: bool,
    /// Grant a vote even when already voted for another candidate in the term (violates §5.2).
    pub grant_two_votes_per_term: bool,
    /// On a conflicting append, overwrite in place and keep the stale suffix (violates §5.3).
    pub skip_conflict_truncation: bool,
    /// Accept appends from a leader of a lower term as if it were current (violates §5.1).
    pub accept_stale_term_append: bool,
    /// Grant pre-votes even while a live leader is heard (defeats §9.6 / §4.2.3).
    pub grant_pre_vote_despite_leader: bool,
    /// A single voter leads before its own vote is durable: after a crash it can lead the same
    /// term again with a different log (violates §5.2 across restarts).
    pub lead_before_vote_is_durable: bool,
    /// A follower takes the leader's commit index as is, even when it is lower than its own
    /// (a commit index must never decrease).
    pub commit_index_regresses: bool,
    /// The leader counts its own entries as replicated before they are durable (acknowledges
    /// writes a crash can lose).
    pub count_unstable_self: bool,
    /// A leader removed from the voters keeps leading after the removal commits (violates §4.2.2).
    pub keep_leading_when_removed: bool,
    /// A leader answers `UnknownTicket` from its own view, without the log confirming it is
    /// still the leader (a deposed leader then denies a ticket a newer leader committed).
    pub unknown_ticket_without_quorum: bool,
    /// A new leader may change the membership before its barrier commits (the single-server
    /// change bug, Ongaro 2015).
    pub membership_change_before_barrier: bool,
    /// The leader heartbeats only every four fifths of the minimum election timeout: safe
    /// while all clocks run at one rate, disruptive once a follower's clock runs fast.
    pub heartbeat_near_election_timeout: bool,
    /// A snapshot leaves out the two-phase entries still held at its index (a restart or an
    /// install from it forgets tickets acknowledged as Raft-committed).
    pub snapshot_drops_held_tickets: bool,
    /// A follower installs a snapshot older than its commit index (its applied state goes back).
    pub install_stale_snapshot: bool,
    /// A replica whose snapshot's bytes were lost delivers the entries after it anyway (on top
    /// of an empty state) instead of waiting for the leader's snapshot.
    pub deliver_while_repairing: bool,
    /// A quiet follower keeps believing in a leader whose node was reported down, so it never
    /// wakes to elect a new one.
    pub quiet_follower_ignores_dead_leader: bool,
    /// A follower announces its whole election timeout as the ticks until its next due tick,
    /// forgetting those already elapsed (a lazily ticking driver then starts elections late).
    pub due_ignores_elapsed_ticks: bool,
    /// A leader answers linearizable reads with its commit index at once, without the quorum
    /// round that confirms it still leads (a deposed leader serves stale reads).
    pub read_without_quorum_round: bool,
    /// A leader's read lease survives a step-down and a leadership transfer, and lease reads
    /// check only the lease's time, not the role (a former leader serves stale reads).
    pub lease_after_step_down: bool,
    /// A leader whose WAL writes hang keeps leading (the partition stops accepting writes for as
    /// long as its disk is stalled).
    pub keep_leading_on_stalled_disk: bool,
    /// Tickets are the wall clock's reading as is, not the hybrid logical clock's: a clock that
    /// stepped back issues a ticket it issued before.
    pub tickets_read_the_wall_clock: bool,
}

impl PartitionConfig {
    /// Defaults for `partition` on `node` with the given voters: heartbeat every tick, election
    /// timeout 10–20 ticks (with a 50 ms tick: 50 ms heartbeats, 500–1000 ms elections).
    pub fn new(node: NodeId, partition: PartitionId, voters: Vec<NodeId>) -> Self {
        Self {
            node,
            partition,
            voters,
            learners: Vec::new(),
            heartbeat_ticks: 1,
            election_timeout_min_ticks: 10,
            election_timeout_max_ticks: 20,
            seed: 0x6b6f_6d6d_616e_6465,
            max_inflight_appends: 8,
            max_entries_per_append: 256,
            max_uncommitted_entries: 16 * 1024,
            log_cache_entries: 1024,
            pre_vote: true,
            check_quorum: true,
            snapshot_interval_entries: 10_000,
            snapshot_interval_bytes: 64 << 20,
            snapshot_tail_entries: 1_024,
            snapshot_chunk_bytes: 1 << 20,
            quiesce_after_ticks: 0,
            initial_election_spread_ticks: 0,
            read_lease: 0,
            transfer_timeout_ticks: 10,
            stalled_write_ticks: 20,
            #[cfg(feature = "canary-bugs")]
            canary: CanaryBugs::default(),
        }
    }

    /// Check the settings; every error names what is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_ticks == 0 {
            return Err(ConfigError::Timing("heartbeat_ticks must be at least 1"));
        }
        if self.election_timeout_min_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::Timing("election_timeout_min_ticks must exceed heartbeat_ticks"));
        }
        if self.election_timeout_max_ticks <= self.election_timeout_min_ticks {
            return Err(ConfigError::Timing("election_timeout_max_ticks must exceed election_timeout_min_ticks"));
        }
        let is_learner = self.learners.contains(&self.node);
        if self.voters.is_empty() && !is_learner {
            return Err(ConfigError::Membership("voters must not be empty"));
        }
        if !self.voters.contains(&self.node) && !is_learner {
            return Err(ConfigError::Membership("this node must be a voter or a learner"));
        }
        let mut sorted: Vec<NodeId> = self.voters.iter().chain(&self.learners).copied().collect();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.voters.len() + self.learners.len() {
            return Err(ConfigError::Membership("voters and learners must not repeat a node"));
        }
        if self.max_inflight_appends == 0 {
            return Err(ConfigError::Limit("max_inflight_appends must be at least 1"));
        }
        if self.max_entries_per_append == 0 {
            return Err(ConfigError::Limit("max_entries_per_append must be at least 1"));
        }
        if self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError::Limit("snapshot_chunk_bytes must be at least 1"));
        }
        if self.read_lease > 0 && !self.check_quorum {
            return Err(ConfigError::Timing("read leases need check_quorum (followers loyal to a live leader)"));
        }
        if self.transfer_timeout_ticks == 0 {
            return Err(ConfigError::Timing("transfer_timeout_ticks must be at least 1"));
        }
        if self.max_uncommitted_entries == 0 {
            return Err(ConfigError::Limit("max_uncommitted_entries must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PartitionConfig {
        PartitionConfig::new(NodeId(1), PartitionId(1), vec![NodeId(1), NodeId(2), NodeId(3)])
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(base().validate(), Ok(()));
    }

    #[test]
    fn bad_settings_are_rejected_with_a_reason() {
        let mut c = base();
        c.election_timeout_max_ticks = c.election_timeout_min_ticks;
        assert!(matches!(c.validate(), Err(ConfigError::Timing(_))));
        let mut c = base();
        c.heartbeat_ticks = 0;
        assert!(matches!(c.validate(), Err(ConfigError::Timing(_))));
        let mut c = base();
        c.voters = vec![NodeId(2)];
        assert!(matches!(c.validate(), Err(ConfigError::Membership(_))));
        let mut c = base();
        c.voters.push(NodeId(2));
        assert!(matches!(c.validate(), Err(ConfigError::Membership(_))));
        let mut c = base();
        c.max_inflight_appends = 0;
        assert!(matches!(c.validate(), Err(ConfigError::Limit(_))));
    }
}

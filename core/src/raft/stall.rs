//! Stalled-disk step-down. A leader whose WAL has made no progress for
//! `stalled_write_ticks` ticks while a write is outstanding cannot apply, acknowledge or even
//! persist anything, yet followers still hear its heartbeats and never elect a replacement: the
//! partition is unavailable for as long as the disk hangs (hashicorp/consul#22064). Such a leader
//! starts a leadership transfer to the voter holding most of its log (its unsynced entries are
//! replicated from memory; proposals are refused meanwhile, so the target catches up), which
//! wins at once with `TimeoutNow`. If the hand-over has not finished after
//! `transfer_timeout_ticks` more ticks the leader steps down and the followers elect after their
//! election timeout. While its disk stays stalled the replica does not campaign (it could never
//! make its vote durable and would only raise terms).
//!
//! Progress is "some write completed": the count restarts at every completion, so a slow but
//! moving disk (group commit under load) never trips it, and a node whose disk recovers counts
//! again from zero.

use super::{PartitionStateMachine, Role};

impl PartitionStateMachine {
    /// True while a write is outstanding and none completed for `stalled_write_ticks` ticks (never
    /// with the bound at 0).
    pub fn is_write_stalled(&self) -> bool {
        let bound = self.config.stalled_write_ticks;
        bound > 0 && self.write_stall_ticks >= bound
    }

    /// Any write issued and not reported durable yet?
    fn write_outstanding(&self) -> bool {
        self.completed_write_id + 1 < self.next_write_id
    }

    /// Every tick: count the ticks without write progress; a leader past the bound steps down.
    /// Returns true when it did.
    pub(super) fn tick_write_stall(&mut self) -> bool {
        if !self.write_outstanding() {
            self.write_stall_ticks = 0;
            return false;
        }
        self.write_stall_ticks = self.write_stall_ticks.saturating_add(1);
        if self.role != Role::Leader || !self.is_write_stalled() || self.canary(|c| c.keep_leading_on_stalled_disk) {
            return false;
        }
        let given_up = self.write_stall_ticks >= self.config.stalled_write_ticks + self.config.transfer_timeout_ticks;
        if given_up && self.has_other_voter() {
            tracing::warn!(partition = %self.config.partition, node = %self.config.node, term = self.term,
                stalled_ticks = self.write_stall_ticks, "WAL writes stalled and the hand-over did not finish; stepping down");
            self.become_follower(self.term, None);
            return true;
        }
        self.hand_over("WAL writes stalled");
        false
    }

    /// A write completed: the disk is making progress.
    pub(super) fn write_progressed(&mut self) {
        self.write_stall_ticks = 0;
    }
}

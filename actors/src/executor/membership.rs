//! Membership policy on a partition leader: move the partition's membership one step toward the
//! roster's, promoting a learner only once it caught up and dropping a departing member only once
//! it holds everything committed (and was told so over a few heartbeats) or stopped answering.

use super::messages::ReconcileMembership;
use super::{now_ms, PartitionExecutor};
use actix::prelude::*;
use kommander_core::raft::Membership;
use kommander_core::NodeId;

impl Handler<ReconcileMembership> for PartitionExecutor {
    type Result = Option<Membership>;

    fn handle(&mut self, msg: ReconcileMembership, ctx: &mut Context<Self>) -> Self::Result {
        let sm = self.sm.as_mut()?;
        if sm.is_leader() && !sm.membership_change_pending() {
            let last = sm.last_index();
            let commit = sm.commit_index();
            let caught_up = |node| sm.progress(node).is_some_and(|p| p.match_index + msg.max_lag >= last);
            // A departing node first gets everything committed and, over a few heartbeats, the
            // commit index (so it sees its own removal in the roster) — unless it stopped answering.
            let departing: Vec<NodeId> = sm.membership().members().filter(|n| !msg.desired.contains(*n)).collect();
            self.departing_caught_up.retain(|n, _| departing.contains(n));
            for &node in &departing {
                if sm.progress(node).is_some_and(|p| p.match_index >= commit) {
                    self.departing_caught_up.entry(node).or_insert_with(std::time::Instant::now);
                } else {
                    self.departing_caught_up.remove(&node);
                }
            }
            let settle = self.shared.tick * 4;
            let departing_caught_up = &self.departing_caught_up;
            let can_drop = |node| {
                sm.progress(node).is_none_or(|p| !p.is_recently_active())
                    || departing_caught_up.get(&node).is_some_and(|since| since.elapsed() >= settle)
            };
            if let Some(next) = sm.membership().next_step_toward(&msg.desired, caught_up, can_drop) {
                let partition = self.config.partition;
                match sm.propose_membership(next.clone(), now_ms()) {
                    Ok(_) => {
                        tracing::info!(%partition, voters = ?next.voters, learners = ?next.learners, "membership change proposed");
                        self.schedule_flush(ctx);
                    }
                    Err(error) => tracing::debug!(%partition, %error, "membership change not proposed"),
                }
            }
        }
        self.sm.as_ref().map(|sm| sm.membership().clone())
    }
}

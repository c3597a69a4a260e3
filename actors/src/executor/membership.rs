//! Membership on a partition leader: one step toward the roster's membership per request. The
//! decision is the core's (`PartitionStateMachine::membership_step`); this driver keeps the only
//! clock it needs — since when each departing member has held the commit index.

use super::messages::ReconcileMembership;
use super::{now_ms, PartitionExecutor};
use actix::prelude::*;
use kommander_core::raft::Membership;

impl Handler<ReconcileMembership> for PartitionExecutor {
    type Result = ();

    fn handle(&mut self, msg: ReconcileMembership, ctx: &mut Context<Self>) {
        let ReconcileMembership { max_lag, report } = msg;
        self.reconcile(report.desired(), max_lag, ctx);
        report.send(self.sm.as_ref().map(|sm| (sm.membership().clone(), sm.term())));
    }
}

impl PartitionExecutor {
    fn reconcile(&mut self, desired: &Membership, max_lag: u64, ctx: &mut Context<Self>) {
        let Some(sm) = self.sm.as_mut() else { return };
        // The core decides; this driver only keeps the clock of how long each departing member
        // has held the commit index (dropped after a few heartbeats told it the commit index).
        let caught_up = sm.departing_caught_up(desired);
        self.departing_caught_up.retain(|n, _| caught_up.contains(n));
        for node in caught_up {
            self.departing_caught_up.entry(node).or_insert_with(std::time::Instant::now);
        }
        let settle = self.shared.tick * 4;
        let since = &self.departing_caught_up;
        let settled = |node| since.get(&node).is_some_and(|t| t.elapsed() >= settle);
        if let Some(next) = sm.membership_step(desired, max_lag, settled) {
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
}

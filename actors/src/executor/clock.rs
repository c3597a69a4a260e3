//! The executor's side of the node clock: ticks while awake, failure-detector verdicts, and
//! telling the clock when the partition goes quiet or wakes.

use super::PartitionExecutor;
use crate::node_clock::{Asleep, Awake, PeerLiveness, Tick};
use actix::prelude::*;
use std::sync::atomic::Ordering;

impl PartitionExecutor {
    /// Register with the node clock while the partition is awake, unregister while it is quiet.
    pub(super) fn sync_clock(&mut self, ctx: &mut Context<Self>) {
        let awake = self.sm.as_ref().is_some_and(|sm| !sm.is_quiesced());
        if awake == self.ticked {
            return;
        }
        self.ticked = awake;
        let partition = self.partition();
        if awake {
            let pending = self.tick_pending.clone();
            pending.store(false, Ordering::Release);
            self.shared.clock.do_send(Awake { partition, executor: ctx.address(), pending });
        } else {
            self.shared.clock.do_send(Asleep { partition });
        }
    }
}

impl Handler<Tick> for PartitionExecutor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.tick_pending.store(false, Ordering::Release);
        if let Some(sm) = self.sm.as_mut() {
            sm.tick();
            self.schedule_flush(ctx);
        }
    }
}

impl Handler<PeerLiveness> for PartitionExecutor {
    type Result = ();

    fn handle(&mut self, msg: PeerLiveness, ctx: &mut Context<Self>) {
        if let Some(sm) = self.sm.as_mut() {
            sm.set_peer_alive(msg.node, msg.alive);
            self.schedule_flush(ctx);
        }
    }
}

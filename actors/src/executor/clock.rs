//! The executor's side of the node clock: the state machine ticked lazily ([`Replica`]), ticks
//! while awake, failure-detector verdicts, and telling the clock when the partition goes quiet or
//! wakes and when its next tick is due.

use super::PartitionExecutor;
use crate::node_clock::{Asleep, Awake, PeerLiveness, Tick, TickCount, Timer};
use actix::prelude::*;
use kommander_core::PartitionStateMachine;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The longest the clock leaves an awake replica unticked, in ticks, even when no tick is due (a
/// learner never campaigns): it bounds the ticks one catch-up applies.
const MAX_TICK_GAP: u64 = 1_024;

/// A partition's state machine, ticked lazily. The node clock sends a [`Tick`] only when the
/// replica's next tick is due ([`PartitionStateMachine::ticks_until_due`]); every **mutable**
/// access first applies the clock ticks not applied yet, in order, so whatever input follows sees
/// exactly the state it would have seen had every tick been delivered — the contract
/// `ticks_until_due` makes and the simulator checks on every tick. Shared access reads the state
/// as of the last mutable one.
pub(super) struct Replica {
    sm: PartitionStateMachine,
    /// The clock tick count the state machine has been ticked through.
    ticked_through: u64,
    ticks: TickCount,
    timer: Arc<Timer>,
}

impl Replica {
    /// `sm`, ticked from the clock's current count on.
    pub(super) fn new(sm: PartitionStateMachine, ticks: TickCount, timer: Arc<Timer>) -> Self {
        let ticked_through = ticks.load(Ordering::Acquire);
        Replica { sm, ticked_through, ticks, timer }
    }

    /// Apply the clock ticks not applied yet. A quiet replica ignores ticks, so the ones it slept
    /// through are skipped at once.
    fn catch_up(&mut self) {
        let now = self.ticks.load(Ordering::Acquire);
        while self.ticked_through < now {
            if self.sm.is_quiesced() {
                self.ticked_through = now;
                break;
            }
            self.ticked_through += 1;
            self.sm.tick();
        }
    }

    /// Tell the clock when the next tick is due, from the state after this turn.
    fn arm(&self) {
        let gap = u64::from(self.sm.ticks_until_due()).min(MAX_TICK_GAP);
        self.timer.due.store(self.ticked_through + gap, Ordering::Release);
    }
}

impl Deref for Replica {
    type Target = PartitionStateMachine;
    fn deref(&self) -> &PartitionStateMachine {
        &self.sm
    }
}

impl DerefMut for Replica {
    /// Catches up with the clock first, and asks for the next tick until the turn's flush sets
    /// the real deadline (an input may make a tick due sooner: a replica that just won its
    /// election heartbeats every tick).
    fn deref_mut(&mut self) -> &mut PartitionStateMachine {
        self.catch_up();
        self.timer.due.store(self.ticked_through + 1, Ordering::Release);
        &mut self.sm
    }
}

impl PartitionExecutor {
    /// After a turn: register with the node clock while the partition is awake (unregister while
    /// it is quiet) and set when its next tick is due.
    pub(super) fn sync_clock(&mut self, ctx: &mut Context<Self>) {
        let Some(replica) = self.sm.as_ref() else { return };
        replica.arm();
        let awake = !replica.is_quiesced();
        if awake == self.ticked {
            return;
        }
        self.ticked = awake;
        let partition = self.partition();
        if awake {
            self.timer.pending.store(false, Ordering::Release);
            self.shared.clock.do_send(Awake { partition, executor: ctx.address(), timer: self.timer.clone() });
        } else {
            self.shared.clock.do_send(Asleep { partition });
        }
    }
}

impl Handler<Tick> for PartitionExecutor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.timer.pending.store(false, Ordering::Release);
        if let Some(replica) = self.sm.as_mut() {
            // Applies the ticks up to the clock's count, the due one included.
            replica.catch_up();
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

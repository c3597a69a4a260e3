//! `NodeClock`: the node's one timer. Every tick it
//! * counts the node's ticks ([`TickCount`]) and ticks only the awake partitions whose next tick
//!   is due ([`Timer`], set from the state machine's `ticks_until_due`): a follower hearing its
//!   leader is ticked about once per election timeout, not every tick, and a quiet partition
//!   costs no timer and no message. The executor applies the ticks it was not sent before its
//!   next input (see `executor::clock`), so lazy ticking changes no outcome;
//! * runs the node-level failure detector ([`NodeLiveness`]): any accepted frame from a peer
//!   counts as hearing it, a peer gets an empty keep-alive batch every probe interval, and a
//!   verdict change (down, or up again) goes to every hosted partition
//!   ([`kommander_core::PartitionStateMachine::set_peer_alive`]).
//!
//! Executors tell it when they go quiet ([`Asleep`]) and wake ([`Awake`]); the system coordinator
//! tells it the peers to watch (the roster and every local partition's members, [`WatchPeers`]).

use crate::executor::PartitionExecutor;
use crate::router::InboundRouter;
use actix::prelude::*;
use kommander_core::{LivenessChange, LivenessConfig, MessageBatch, NodeId, NodeLiveness, PartitionId, Transport};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Tick a partition's state machine (sent to awake executors only).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Tick;

/// The failure detector's verdict on a peer, for every hosted partition.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct PeerLiveness {
    pub(crate) node: NodeId,
    pub(crate) alive: bool,
}

/// The node clock's tick count, shared with the executors (they catch up to it).
pub(crate) type TickCount = Arc<AtomicU64>;

/// One executor's timer, shared with the clock: the tick count at which its next tick is due, and
/// whether a [`Tick`] is on its way (set by the clock, cleared by the executor when it handles
/// it: an executor that falls behind is sent one tick, not a pile of them).
#[derive(Debug, Default)]
pub(crate) struct Timer {
    pub(crate) due: AtomicU64,
    pub(crate) pending: AtomicBool,
}

/// An executor's partition is awake: tick it when its timer is due.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Awake {
    pub(crate) partition: PartitionId,
    pub(crate) executor: Addr<PartitionExecutor>,
    pub(crate) timer: Arc<Timer>,
}

/// An executor's partition went quiet (or stopped): stop ticking it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Asleep {
    pub(crate) partition: PartitionId,
}

/// The peers the failure detector watches (replaces the previous set).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WatchPeers(pub(crate) BTreeSet<NodeId>);

/// The peers the failure detector reports down, for partitions that (re)start.
pub(crate) type DownPeers = Arc<RwLock<BTreeSet<NodeId>>>;

/// What a node clock is configured with.
pub(crate) struct ClockSettings {
    /// This node.
    pub(crate) node: NodeId,
    /// Stamped on keep-alives.
    pub(crate) cluster_id: String,
    /// The tick.
    pub(crate) tick: Duration,
    /// Failure-detector timing, in ticks.
    pub(crate) liveness: LivenessConfig,
    /// The tick count it advances.
    pub(crate) ticks: TickCount,
}

/// The node's timer and failure detector (see the module docs).
pub(crate) struct NodeClock {
    node: NodeId,
    cluster_id: String,
    tick: Duration,
    transport: Arc<dyn Transport>,
    router: Arc<InboundRouter>,
    liveness: NodeLiveness,
    down: DownPeers,
    ticks: TickCount,
    awake: HashMap<PartitionId, (Addr<PartitionExecutor>, Arc<Timer>)>,
}

impl NodeClock {
    /// A clock ticking every `tick`, watching `peers` with `liveness` timing; it keeps `down`
    /// current.
    pub(crate) fn new(
        settings: ClockSettings,
        transport: Arc<dyn Transport>,
        router: Arc<InboundRouter>,
        down: DownPeers,
        peers: impl IntoIterator<Item = NodeId>,
    ) -> Self {
        let ClockSettings { node, cluster_id, tick, liveness, ticks } = settings;
        let mut detector = NodeLiveness::new(liveness);
        detector.set_peers(peers.into_iter().filter(|&p| p != node));
        NodeClock { node, cluster_id, tick, transport, router, liveness: detector, down, ticks, awake: HashMap::new() }
    }

    /// Tick at `deadline`, then every `tick` after it. A tick that runs late (the arbiter was busy
    /// with other actors) moves the following ones back instead of firing the missed ones in a
    /// burst: an overloaded node's logical time slows down with it, so its election timeouts
    /// and failure-detector verdicts stretch to the latency its messages actually see, rather
    /// than firing elections that cannot finish in time (which adds load: a livelock at ten
    /// thousand partitions starting at once).
    fn schedule_tick(&mut self, ctx: &mut Context<Self>, deadline: Instant) {
        ctx.run_later(deadline.saturating_duration_since(Instant::now()), move |act, ctx| {
            act.on_tick();
            let now = Instant::now();
            let next = if deadline + act.tick > now { deadline + act.tick } else { now + act.tick };
            act.schedule_tick(ctx, next);
        });
    }

    fn on_tick(&mut self) {
        let now = self.ticks.fetch_add(1, Ordering::AcqRel) + 1;
        let mut changes: Vec<LivenessChange> =
            self.router.take_heard().into_iter().filter_map(|node| self.liveness.heard(node)).collect();
        let tick = self.liveness.tick();
        changes.extend(tick.changes);
        for to in tick.probes {
            let keep_alive =
                MessageBatch { cluster_id: self.cluster_id.clone(), from: self.node, to, messages: Vec::new() };
            if let Err(error) = self.transport.send(keep_alive) {
                tracing::trace!(%to, %error, "keep-alive not sent");
            }
        }
        if !changes.is_empty() {
            let mut down = self.down.write().unwrap_or_else(|p| p.into_inner());
            for change in &changes {
                match *change {
                    LivenessChange::Down(node) => down.insert(node),
                    LivenessChange::Up(node) => down.remove(&node),
                };
            }
            drop(down);
            let executors = self.router.executors();
            for change in changes {
                let verdict = match change {
                    LivenessChange::Down(node) => PeerLiveness { node, alive: false },
                    LivenessChange::Up(node) => PeerLiveness { node, alive: true },
                };
                tracing::info!(node = %verdict.node, alive = verdict.alive, "node-level liveness changed");
                for executor in &executors {
                    executor.do_send(verdict);
                }
            }
        }
        for (executor, timer) in self.awake.values() {
            if timer.due.load(Ordering::Acquire) <= now && !timer.pending.swap(true, Ordering::AcqRel) {
                executor.do_send(Tick);
            }
        }
    }
}

impl Actor for NodeClock {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let first = Instant::now() + self.tick;
        self.schedule_tick(ctx, first);
    }
}

impl Handler<Awake> for NodeClock {
    type Result = ();
    fn handle(&mut self, msg: Awake, _: &mut Context<Self>) {
        self.awake.insert(msg.partition, (msg.executor, msg.timer));
    }
}

impl Handler<Asleep> for NodeClock {
    type Result = ();
    fn handle(&mut self, msg: Asleep, _: &mut Context<Self>) {
        self.awake.remove(&msg.partition);
    }
}

impl Handler<WatchPeers> for NodeClock {
    type Result = ();
    fn handle(&mut self, msg: WatchPeers, _: &mut Context<Self>) {
        let node = self.node;
        self.liveness.set_peers(msg.0.into_iter().filter(|&p| p != node));
    }
}

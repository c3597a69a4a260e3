//! Unit tests: one `PartitionExecutor` in isolation: node 1 of a three-voter partition, started under an actix
//! `Supervisor`, over a `MockWal` (reads and writes delegated to a `MemoryWal` so restarts see what
//! was persisted) and a `MockTransport` that records every batch. Nodes 2 and 3 do not run: the
//! tests play them by sending the executor `Inbound` envelopes crafted from what it sent.

use super::{ExecutorShared, GetStatus, Inbound, PartitionExecutor, Replicate};
use crate::changes::Changes;
use crate::read_scheduler::ReadScheduler;
use crate::status::{PartitionStatus, StatusCell};
use crate::wal_scheduler::{WalScheduler, WalStats};
use crate::{RaftEvent, ReplicateError};
use actix::prelude::*;
use kommander_core::hlc::HlcTimestamp;
use kommander_core::raft::ProposalCommitted;
use kommander_core::transport::MockTransport;
use kommander_core::wal::MockWal;
use kommander_core::{
    AppendResult, EntryKind, Envelope, HardState, LogEntry, LogIndex, MemoryWal, MessageBatch, NodeId, PartitionConfig,
    PartitionId, RaftMessage, Role, Term, Transport, Wal, WalBatch, WalError,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const P: PartitionId = PartitionId(1);
const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);
const CLUSTER: &str = "executor-test";
const TICK: Duration = Duration::from_millis(10);
/// Election timeout (ticks) that never fires during a test: node 1 stays a passive follower.
const QUIET: (u32, u32) = (1_000, 2_000);
/// Election timeout (ticks) of a node that campaigns soon (300–400 ms) and, once leader, tolerates
/// 300 ms of silence from its followers before check-quorum steps it down.
const EAGER: (u32, u32) = (30, 40);
/// How long any awaited condition may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(5);

// ----- recording ------------------------------------------------------------------------------

/// What the executor did through its WAL and transport, in one global order.
#[derive(Clone, Debug)]
enum Trace {
    /// `Wal::write` was entered with this batch.
    WriteCalled(WalBatch),
    /// `Wal::write` is returning this.
    WriteReturned(Result<(), WalError>),
    /// `Transport::send` was called with this batch.
    Sent(MessageBatch),
    /// `Wal::reopen` was called.
    Reopened,
}

#[derive(Default)]
struct Tape(Mutex<Vec<Trace>>);

impl Tape {
    fn push(&self, t: Trace) {
        self.0.lock().unwrap().push(t);
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn snapshot(&self) -> Vec<Trace> {
        self.0.lock().unwrap().clone()
    }
    /// Every envelope sent to `to` at or after trace position `from`, with its trace position.
    fn sent_to(&self, to: NodeId, from: usize) -> Vec<(usize, Envelope)> {
        let trace = self.0.lock().unwrap();
        let mut out = Vec::new();
        for (pos, t) in trace.iter().enumerate().skip(from) {
            if let Trace::Sent(batch) = t {
                if batch.to == to {
                    out.extend(batch.messages.iter().map(|e| (pos, e.clone())));
                }
            }
        }
        out
    }
    /// Batches sent to `to` at or after trace position `from`.
    fn batches_to(&self, to: NodeId, from: usize) -> Vec<MessageBatch> {
        self.snapshot()
            .into_iter()
            .skip(from)
            .filter_map(|t| match t {
                Trace::Sent(b) if b.to == to => Some(b),
                _ => None,
            })
            .collect()
    }
    /// Batches `Wal::write` was called with at or after trace position `from`.
    fn writes(&self, from: usize) -> Vec<WalBatch> {
        self.snapshot()
            .into_iter()
            .skip(from)
            .filter_map(|t| match t {
                Trace::WriteCalled(b) => Some(b),
                _ => None,
            })
            .collect()
    }
    /// Position of the first trace item matching `f`.
    fn position(&self, f: impl Fn(&Trace) -> bool) -> Option<usize> {
        self.0.lock().unwrap().iter().position(f)
    }
}

/// A `MockWal` whose reads and writes go to `store`; every write is recorded on `tape` and first
/// passes through `before_write` (which may block, or fail the write).
fn recording_wal(
    store: MemoryWal,
    tape: Arc<Tape>,
    mut before_write: impl FnMut(&WalBatch) -> Result<(), WalError> + Send + 'static,
) -> MockWal {
    let mut wal = MockWal::new();
    wal.expect_blocks().return_const(true);
    let s = store.clone();
    wal.expect_load_hard_state().returning(move |p| s.load_hard_state(p));
    let s = store.clone();
    wal.expect_last_index().returning(move |p| s.last_index(p));
    let s = store.clone();
    wal.expect_load_snapshot().returning(move |p| s.load_snapshot(p));
    let s = store.clone();
    wal.expect_compacted_through().returning(move |p| s.compacted_through(p));
    let s = store.clone();
    wal.expect_read_range().returning(move |p, from, to| s.read_range(p, from, to));
    let t = tape.clone();
    wal.expect_reopen().returning(move || {
        t.push(Trace::Reopened);
        Ok(())
    });
    wal.expect_write().returning(move |batch| {
        tape.push(Trace::WriteCalled(batch.clone()));
        let result = before_write(batch).and_then(|()| store.write(batch));
        tape.push(Trace::WriteReturned(result.clone()));
        result
    });
    wal
}

/// Collects the events the executor emits.
struct Recorder(Arc<Mutex<Vec<RaftEvent>>>);

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<RaftEvent> for Recorder {
    type Result = ();
    fn handle(&mut self, event: RaftEvent, _: &mut Context<Self>) {
        self.0.lock().unwrap().push(event);
    }
}

// ----- harness --------------------------------------------------------------------------------

fn config(election_ticks: (u32, u32)) -> PartitionConfig {
    let mut c = PartitionConfig::new(N1, P, vec![N1, N2, N3]);
    c.heartbeat_ticks = 1;
    c.election_timeout_min_ticks = election_ticks.0;
    c.election_timeout_max_ticks = election_ticks.1;
    c
}

struct Harness {
    addr: Addr<PartitionExecutor>,
    tape: Arc<Tape>,
    events: Arc<Mutex<Vec<RaftEvent>>>,
    status: Arc<StatusCell>,
}

impl Harness {
    /// Start node 1's executor under a supervisor, with real schedulers over `wal`.
    fn start(config: PartitionConfig, wal: MockWal, tape: Arc<Tape>) -> Self {
        Self::start_with_store(config, wal, tape, crate::snapshot_store::SnapshotStore::memory())
    }

    /// [`Harness::start`] with the node's snapshot storage.
    fn start_with_store(
        config: PartitionConfig,
        wal: MockWal,
        tape: Arc<Tape>,
        snapshots: crate::snapshot_store::SnapshotStore,
    ) -> Self {
        let wal: Arc<dyn Wal> = Arc::new(wal);
        let mut transport = MockTransport::new();
        let t = tape.clone();
        transport.expect_send().returning(move |batch| {
            t.push(Trace::Sent(batch));
            Ok(())
        });
        let transport: Arc<dyn Transport> = Arc::new(transport);
        let wal_stats = Arc::new(WalStats::default());
        let events = Arc::new(Mutex::new(Vec::new()));
        // The node's clock, watching no peers (no keep-alives on the tape).
        let router = Arc::new(crate::router::InboundRouter::new(config.node, CLUSTER.to_string()));
        let down_peers = crate::node_clock::DownPeers::default();
        let ticks = crate::node_clock::TickCount::default();
        let settings = crate::node_clock::ClockSettings {
            node: config.node,
            cluster_id: CLUSTER.to_string(),
            tick: TICK,
            liveness: kommander_core::LivenessConfig::default(),
            ticks: ticks.clone(),
        };
        let clock =
            crate::node_clock::NodeClock::new(settings, transport.clone(), router, down_peers.clone(), []).start();
        let shared = ExecutorShared {
            clock,
            ticks,
            down_peers,
            cluster_id: CLUSTER.to_string(),
            wal: wal.clone(),
            transport,
            wal_scheduler: WalScheduler::new(wal.clone(), wal_stats.clone()).start(),
            read_scheduler: ReadScheduler::new(wal, 1).start(),
            wal_stats,
            max_wal_backlog_entries: 1 << 20,
            metrics: crate::metrics::RuntimeMetrics::register(),
            tick: TICK,
            events: Some(Recorder(events.clone()).start().recipient()),
            system_events: None,
            snapshots,
            snapshot_requests: None,
            system_snapshot_requests: None,
        };
        let status = Arc::new(StatusCell::new(Arc::new(Changes::default())));
        let cell = status.clone();
        let addr = Supervisor::start(move |_| PartitionExecutor::new(config, shared, cell));
        Harness { addr, tape, events, status }
    }

    fn events(&self) -> Vec<RaftEvent> {
        self.events.lock().unwrap().clone()
    }

    /// The status as published by the executor (no actor round trip).
    fn status(&self) -> PartitionStatus {
        self.status.get()
    }

    /// Wait until the executor restored from its WAL and runs Raft.
    async fn serving(&self) -> PartitionStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answered = tokio::time::timeout(Duration::from_millis(500), self.addr.send(GetStatus)).await;
            if let Ok(Ok(status)) = answered {
                if !status.restoring {
                    return status;
                }
            }
            assert!(Instant::now() < deadline, "executor never finished restoring (last answer: {answered:?})");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Deliver envelopes from the other replicas and wait until the executor handled them.
    async fn inbound(&self, envelopes: Vec<Envelope>) {
        self.addr.send(Inbound(envelopes)).await.expect("executor mailbox closed");
    }

    fn replicate(&self, payload: &str) -> Replicate {
        Replicate::new("test", vec![payload.as_bytes().to_vec()])
    }
}

/// Poll `probe` until it yields a value (fails the test after [`PATIENCE`]).
async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// An envelope from `from` to node 1.
fn to_n1(from: NodeId, message: RaftMessage) -> Envelope {
    Envelope { partition: P, from, to: N1, message }
}

fn app_entry(index: LogIndex, term: Term, payload: &str) -> LogEntry {
    LogEntry {
        index,
        term,
        kind: EntryKind::Application { auto_commit: true },
        log_type: "test".into(),
        payload: payload.as_bytes().to_vec().into(),
        ticket: HlcTimestamp { physical_ms: 1_000 + index, logical: 0, node: 2 },
    }
}

fn barrier(index: LogIndex, term: Term) -> LogEntry {
    LogEntry {
        index,
        term,
        kind: EntryKind::Barrier,
        log_type: kommander_core::LogType::EMPTY,
        payload: kommander_core::Bytes::new(),
        ticket: HlcTimestamp::ZERO,
    }
}

/// What a cooperative, up-to-date node 2 answers: grant every (pre-)vote, acknowledge every append.
fn cooperative_reply(request: &Envelope) -> Option<Envelope> {
    let message = match &request.message {
        RaftMessage::VoteRequest { term, pre_vote, .. } => {
            RaftMessage::VoteResponse { term: *term, granted: true, pre_vote: *pre_vote }
        }
        RaftMessage::AppendRequest { term, prev_log_index, entries, .. } => RaftMessage::AppendResponse {
            term: *term,
            prev_log_index: *prev_log_index,
            result: AppendResult::Success { match_index: prev_log_index + entries.len() as LogIndex },
        },
        _ => return None,
    };
    Some(Envelope { partition: request.partition, from: request.to, to: request.from, message })
}

/// Play node 2 in the background: answer everything the executor sends it, cooperatively.
fn spawn_node2(h: &Harness) -> tokio::task::JoinHandle<()> {
    let (addr, tape) = (h.addr.clone(), h.tape.clone());
    actix::spawn(async move {
        let mut cursor = 0;
        loop {
            let len = tape.len();
            let replies: Vec<Envelope> =
                tape.sent_to(N2, cursor).iter().filter_map(|(_, envelope)| cooperative_reply(envelope)).collect();
            cursor = len;
            if !replies.is_empty() {
                addr.do_send(Inbound(replies));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

/// Wait until node 1 leads with established leadership (node 2 must be answering).
async fn leader(h: &Harness) -> PartitionStatus {
    eventually("node 1 to become an established leader", || Some(h.status()).filter(|s| s.is_leader)).await
}

fn is_append_with_entries(e: &Envelope) -> bool {
    matches!(&e.message, RaftMessage::AppendRequest { entries, .. } if !entries.is_empty())
}

fn application_entries(batch: &WalBatch) -> usize {
    batch.writes.iter().flat_map(|w| &w.entries).filter(|e| e.is_application()).count()
}

// ----- tests ----------------------------------------------------------------------------------

#[actix::test]
async fn restores_committed_entries_from_the_wal_at_start() {
    let log = vec![
        barrier(1, 1),
        app_entry(2, 1, "a"),
        app_entry(3, 1, "b"),
        barrier(4, 2),
        app_entry(5, 2, "uncommitted"), // past the persisted commit index: must not be delivered
    ];
    let hard_state = HardState { term: 2, voted_for: Some(N2), commit: 4 };
    let mut wal = MockWal::new();
    wal.expect_blocks().return_const(true);
    wal.expect_load_hard_state().withf(|p| *p == P).returning(move |_| Ok(Some(hard_state)));
    wal.expect_last_index().withf(|p| *p == P).returning(|_| Ok(5));
    wal.expect_load_snapshot().returning(|_| Ok(None));
    wal.expect_compacted_through().returning(|_| Ok(0));
    let stored = log.clone();
    wal.expect_read_range()
        .withf(|p, from, to| (*p, *from, *to) == (P, 1, 5))
        .returning(move |_, _, _| Ok(stored.clone()));
    wal.expect_write().returning(|_| Ok(()));

    let h = Harness::start(config(QUIET), wal, Arc::new(Tape::default()));
    let status = h.serving().await;
    eventually("RestoreFinished", || h.events().contains(&RaftEvent::RestoreFinished { partition: P }).then_some(()))
        .await;
    // Anything else the executor would emit right after restoring has time to arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let events = h.events();
    assert_eq!(
        events[..3],
        [
            RaftEvent::RestoreStarted { partition: P },
            RaftEvent::Restored { partition: P, entries: vec![log[1].clone(), log[2].clone()] },
            RaftEvent::RestoreFinished { partition: P },
        ],
        "all events: {events:#?}"
    );
    let deliveries = events.iter().filter(|e| matches!(e, RaftEvent::Restored { .. } | RaftEvent::Replicated { .. }));
    assert_eq!(deliveries.count(), 1, "committed entries are delivered exactly once: {events:#?}");
    assert_eq!((status.term, status.commit_index, status.last_index), (2, 4, 5), "{status:?}");
    assert_eq!(status.role, Role::Follower);
}

/// A WAL holding a snapshot at 3 (whose bytes are in `store`, checksummed `checksum`) and the
/// entries 4..=5 after it, 5 committed.
fn wal_after_snapshot(store: &crate::snapshot_store::SnapshotStore, checksum_flip: u32) -> (MockWal, Vec<LogEntry>) {
    use std::io::Write;
    let mut sink = store.sink(P, 3, 1).unwrap();
    sink.write_all(b"state through 3").unwrap();
    let (size, checksum) = sink.finish().unwrap();
    let meta = kommander_core::SnapshotMeta {
        partition: P,
        index: 3,
        term: 1,
        membership: kommander_core::raft::Membership::with_voters([N1, N2, N3]),
        size,
        checksum: checksum ^ checksum_flip,
        ..Default::default()
    };
    let log = vec![barrier(4, 2), app_entry(5, 2, "after the snapshot")];
    let hard_state = HardState { term: 2, voted_for: Some(N2), commit: 5 };
    let mut wal = MockWal::new();
    wal.expect_blocks().return_const(true);
    wal.expect_load_hard_state().returning(move |_| Ok(Some(hard_state)));
    wal.expect_load_snapshot().returning(move |_| Ok(Some(meta.clone())));
    wal.expect_compacted_through().returning(|_| Ok(3));
    wal.expect_last_index().returning(|_| Ok(5));
    let stored = log.clone();
    wal.expect_read_range()
        .withf(|p, from, to| (*p, *from, *to) == (P, 4, 5))
        .returning(move |_, _, _| Ok(stored.clone()));
    wal.expect_write().returning(|_| Ok(()));
    (wal, log)
}

#[actix::test]
async fn restores_from_the_snapshot_then_replays_only_the_entries_after_it() {
    let store = crate::snapshot_store::SnapshotStore::memory();
    let (wal, log) = wal_after_snapshot(&store, 0);
    let h = Harness::start_with_store(config(QUIET), wal, Arc::new(Tape::default()), store.clone());
    let status = h.serving().await;
    eventually("RestoreFinished", || h.events().contains(&RaftEvent::RestoreFinished { partition: P }).then_some(()))
        .await;
    let events = h.events();
    assert_eq!(
        events[..4],
        [
            RaftEvent::RestoreStarted { partition: P },
            RaftEvent::SnapshotInstalled { partition: P, index: 3, snapshot: store.source(P, 3, 1) },
            RaftEvent::Restored { partition: P, entries: vec![log[1].clone()] },
            RaftEvent::RestoreFinished { partition: P },
        ],
        "all events: {events:#?}"
    );
    let RaftEvent::SnapshotInstalled { snapshot, .. } = &events[1] else { unreachable!() };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut snapshot.open().unwrap(), &mut bytes).unwrap();
    assert_eq!(bytes, b"state through 3", "the application reads the snapshot's bytes");
    assert_eq!((status.snapshot_index, status.compacted_through, status.applied_index), (3, 3, 5), "{status:?}");
}

#[actix::test]
async fn a_corrupt_snapshot_is_never_installed_and_the_partition_applies_nothing_until_repaired() {
    let store = crate::snapshot_store::SnapshotStore::memory();
    let (wal, _) = wal_after_snapshot(&store, 1);
    let h = Harness::start_with_store(config(QUIET), wal, Arc::new(Tape::default()), store);
    let status = h.serving().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let events = h.events();
    assert!(
        !events.iter().any(|e| matches!(e, RaftEvent::SnapshotInstalled { .. } | RaftEvent::Restored { .. })),
        "a snapshot failing its checksum is never installed, and nothing is applied without it: {events:#?}"
    );
    assert!(status.repairing, "the partition waits for the leader's snapshot: {status:?}");
    assert_eq!((status.applied_index, status.commit_index), (3, 5), "its log is kept: {status:?}");
}

#[actix::test]
async fn persists_appended_entries_before_acknowledging_them() {
    let tape = Arc::new(Tape::default());
    let (open_gate, gate) = mpsc::channel::<()>();
    let wal = recording_wal(MemoryWal::new(), tape.clone(), move |_| {
        // Hold the write until the test opens the gate (bounded, so a failing test cannot hang).
        let _ = gate.recv_timeout(Duration::from_secs(10));
        Ok(())
    });
    let h = Harness::start(config(QUIET), wal, tape.clone());
    h.serving().await;

    let entries = vec![app_entry(1, 1, "x"), app_entry(2, 1, "y"), app_entry(3, 1, "z")];
    let append = RaftMessage::AppendRequest {
        term: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: entries.clone(),
        leader_commit: 0,
    };
    h.inbound(vec![to_n1(N2, append)]).await;

    let batch = eventually("the WAL write", || tape.writes(0).into_iter().next()).await;
    assert_eq!(batch.writes.len(), 1, "{batch:?}");
    let write = &batch.writes[0];
    assert_eq!(write.partition, P);
    assert_eq!(write.entries, entries, "the write carries the appended entries");
    assert_eq!(write.hard_state.map(|hs| hs.term), Some(1), "the new term is persisted with them");

    // The write is blocked: whatever the executor does meanwhile (30 ticks), it must not answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tape.position(|t| matches!(t, Trace::WriteReturned(_))).is_none());
    let early = tape.sent_to(N2, 0);
    assert!(
        !early.iter().any(|(_, e)| matches!(e.message, RaftMessage::AppendResponse { .. })),
        "acknowledged before the entries were durable: {early:#?}"
    );

    open_gate.send(()).unwrap();
    let (sent_at, reply) = eventually("the append response", || {
        tape.sent_to(N2, 0).into_iter().find(|(_, e)| matches!(e.message, RaftMessage::AppendResponse { .. }))
    })
    .await;
    assert_eq!(
        reply.message,
        RaftMessage::AppendResponse { term: 1, prev_log_index: 0, result: AppendResult::Success { match_index: 3 } }
    );
    assert_eq!((reply.partition, reply.from, reply.to), (P, N1, N2));
    let durable_at = tape.position(|t| matches!(t, Trace::WriteReturned(Ok(())))).expect("write returned");
    assert!(sent_at > durable_at, "acknowledged (trace #{sent_at}) before the write returned (#{durable_at})");
    let batch = tape.batches_to(N2, 0).into_iter().find(|b| b.messages.contains(&reply)).unwrap();
    assert_eq!((batch.cluster_id.as_str(), batch.from, batch.to), (CLUSTER, N1, N2));
}

#[actix::test]
async fn replicate_on_a_follower_is_refused_with_the_leader_hint() {
    let tape = Arc::new(Tape::default());
    let h = Harness::start(config(QUIET), recording_wal(MemoryWal::new(), tape.clone(), |_| Ok(())), tape);
    h.serving().await;

    let before = h.addr.send(h.replicate("p")).await.unwrap();
    assert_eq!(before, Err(ReplicateError::NotLeader { partition: P, leader: None, endpoint: None }));

    let heartbeat =
        RaftMessage::AppendRequest { term: 1, prev_log_index: 0, prev_log_term: 0, entries: vec![], leader_commit: 0 };
    h.inbound(vec![to_n1(N2, heartbeat)]).await;

    let after = h.addr.send(h.replicate("p")).await.unwrap();
    assert_eq!(after, Err(ReplicateError::NotLeader { partition: P, leader: Some(N2), endpoint: None }));
    let change = RaftEvent::LeaderChanged { partition: P, term: 1, leader: Some(N2) };
    eventually("LeaderChanged to node 2", || h.events().contains(&change).then_some(())).await;
}

/// The executor itself refuses what no application may write, whoever sends it: partition 0
/// takes no application entries and no ticket decisions, and `kommander.*` log types are the
/// runtime's, on every partition. Nothing reaches the log (the refusal comes before the state
/// machine, which would otherwise answer `NotLeader` here).
#[actix::test]
async fn the_executor_refuses_partition_0_and_reserved_log_types_from_applications() {
    use crate::executor::Resolve;
    use kommander_core::TicketOutcome;
    let tape = Arc::new(Tape::default());
    let mut p0 = config(QUIET);
    p0.partition = PartitionId::SYSTEM;
    let system = Harness::start(p0, recording_wal(MemoryWal::new(), tape.clone(), |_| Ok(())), tape.clone());
    system.serving().await;
    let refused = Err(ReplicateError::SystemPartitionReserved);
    assert_eq!(system.addr.send(Replicate::new("app", vec![b"x".to_vec()])).await.unwrap(), refused);
    assert_eq!(system.addr.send(Replicate::two_phase("app", vec![b"x".to_vec()])).await.unwrap(), refused);
    assert_eq!(system.addr.send(Replicate::guarded("app", vec![b"x".to_vec()], 1)).await.unwrap(), refused);
    let ticket = HlcTimestamp { physical_ms: 1, logical: 0, node: 1 };
    for outcome in [TicketOutcome::Committed, TicketOutcome::RolledBack] {
        let resolved = system.addr.send(Resolve { ticket, outcome }).await.unwrap();
        assert_eq!(resolved, Err(ReplicateError::SystemPartitionReserved));
    }

    let user = Harness::start(config(QUIET), recording_wal(MemoryWal::new(), tape.clone(), |_| Ok(())), tape.clone());
    user.serving().await;
    for log_type in ["kommander.system", "kommander.import", "kommander.anything"] {
        let reserved = Err(ReplicateError::ReservedLogType(log_type.into()));
        assert_eq!(user.addr.send(Replicate::new(log_type, vec![vec![]])).await.unwrap(), reserved);
        assert_eq!(user.addr.send(Replicate::two_phase(log_type, vec![vec![]])).await.unwrap(), reserved);
    }
    // An ordinary write gets past the check (and is refused by Raft: nobody leads).
    let ordinary = user.addr.send(Replicate::new("kommanderish", vec![vec![]])).await.unwrap();
    assert!(matches!(ordinary, Err(ReplicateError::NotLeader { .. })), "{ordinary:?}");
    let writes =
        tape.snapshot().into_iter().filter(|t| matches!(t, Trace::WriteCalled(b) if application_entries(b) > 0));
    assert_eq!(writes.count(), 0, "a refused write must not reach the WAL");
}

#[actix::test]
async fn wins_an_election_and_answers_replicate_once_a_follower_acknowledges() {
    let tape = Arc::new(Tape::default());
    let h = Harness::start(config(EAGER), recording_wal(MemoryWal::new(), tape.clone(), |_| Ok(())), tape.clone());
    h.serving().await;

    // Pre-vote: asks without changing its term.
    let pre_vote_term = eventually("a pre-vote request to node 2", || {
        tape.sent_to(N2, 0).into_iter().find_map(|(_, e)| match e.message {
            RaftMessage::VoteRequest { term, pre_vote: true, .. } => Some(term),
            _ => None,
        })
    })
    .await;
    assert_eq!(pre_vote_term, 1);
    assert_eq!(h.status().term, 0, "a pre-vote does not change the term");
    h.inbound(vec![to_n1(N2, RaftMessage::VoteResponse { term: 1, granted: true, pre_vote: true })]).await;

    // Real vote, asked only once its own vote is durable.
    let (asked_at, vote_term) = eventually("a vote request to node 2", || {
        tape.sent_to(N2, 0).into_iter().find_map(|(pos, e)| match e.message {
            RaftMessage::VoteRequest { term, pre_vote: false, .. } => Some((pos, term)),
            _ => None,
        })
    })
    .await;
    assert_eq!(vote_term, 1);
    let own_vote = HardState { term: 1, voted_for: Some(N1), commit: 0 };
    let persisted_at = tape
        .position(|t| matches!(t, Trace::WriteCalled(b) if b.writes.iter().any(|w| w.hard_state == Some(own_vote))))
        .expect("the candidate persisted its own vote");
    assert!(persisted_at < asked_at, "vote requested before its own vote was written");
    h.inbound(vec![to_n1(N2, RaftMessage::VoteResponse { term: 1, granted: true, pre_vote: false })]).await;

    // Leader: its barrier goes to node 2; acknowledging it establishes the leadership.
    let barrier_append = eventually("the barrier append to node 2", || {
        tape.sent_to(N2, 0).into_iter().map(|(_, e)| e).find(is_append_with_entries)
    })
    .await;
    let RaftMessage::AppendRequest { term, prev_log_index, ref entries, .. } = barrier_append.message else {
        unreachable!()
    };
    assert_eq!((term, prev_log_index), (1, 0));
    assert!(matches!(entries[..], [LogEntry { index: 1, term: 1, kind: EntryKind::Barrier, .. }]), "{entries:?}");
    let ack = AppendResult::Success { match_index: 1 };
    h.inbound(vec![to_n1(N2, RaftMessage::AppendResponse { term: 1, prev_log_index: 0, result: ack })]).await;
    let status = leader(&h).await;
    assert_eq!((status.role, status.term, status.leader), (Role::Leader, 1, Some(N1)));
    let elected = RaftEvent::LeaderChanged { partition: P, term: 1, leader: Some(N1) };
    eventually("LeaderChanged to node 1", || h.events().contains(&elected).then_some(())).await;

    // A proposal: replicated to node 2, answered only once node 2 acknowledges it.
    let mark = tape.len();
    let pending = actix::spawn(h.addr.send(h.replicate("hello")));
    let (prev, sent_to) = eventually("the proposal's append to node 2", || {
        tape.sent_to(N2, mark).into_iter().find_map(|(_, e)| match e.message {
            RaftMessage::AppendRequest { prev_log_index, ref entries, .. }
                if entries.iter().any(|x| x.payload[..] == b"hello"[..]) =>
            {
                Some((prev_log_index, prev_log_index + entries.len() as LogIndex))
            }
            _ => None,
        })
    })
    .await;
    assert_eq!(sent_to, 2, "the proposal follows the barrier");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished(), "answered before any follower acknowledged the entry");
    assert_eq!(h.status().commit_index, 1);

    let ack = AppendResult::Success { match_index: sent_to };
    h.inbound(vec![to_n1(N2, RaftMessage::AppendResponse { term: 1, prev_log_index: prev, result: ack })]).await;
    let answer = tokio::time::timeout(PATIENCE, pending).await.expect("replicate hung").unwrap().unwrap();
    let committed = answer.expect("replicate failed");
    assert_eq!((committed.first_index, committed.last_index), (2, 2), "{committed:?}");
    let delivered = eventually("the Replicated event", || {
        h.events().into_iter().find_map(|e| match e {
            RaftEvent::Replicated { entries, .. } => Some(entries),
            _ => None,
        })
    })
    .await;
    assert_eq!(delivered.iter().map(|e| (e.index, &e.payload[..])).collect::<Vec<_>>(), [(2, &b"hello"[..])]);
}

#[actix::test]
async fn a_wal_failure_fails_callers_and_the_supervisor_restarts_the_partition() {
    let tape = Arc::new(Tape::default());
    let fail_next = Arc::new(AtomicBool::new(false));
    let fail = fail_next.clone();
    let wal = recording_wal(MemoryWal::new(), tape.clone(), move |_| {
        if fail.swap(false, Ordering::SeqCst) {
            Err(WalError::Io("disk on fire".into()))
        } else {
            Ok(())
        }
    });
    let h = Harness::start(config(EAGER), wal, tape.clone());
    h.serving().await;
    let _node2 = spawn_node2(&h);
    let first_term = leader(&h).await.term;

    fail_next.store(true, Ordering::SeqCst);
    let answer = tokio::time::timeout(PATIENCE, h.addr.send(h.replicate("lost"))).await;
    assert_eq!(
        answer.expect("replicate hung across the WAL failure").unwrap(),
        Err(ReplicateError::PartitionUnavailable(P))
    );
    let failed = tape.position(|t| matches!(t, Trace::WriteReturned(Err(_)))).expect("the failing write happened");

    // Restarted from the WAL...
    let restarted = |events: Vec<RaftEvent>| {
        let started: Vec<usize> =
            (0..events.len()).filter(|&i| events[i] == RaftEvent::RestoreStarted { partition: P }).collect();
        (started.len() == 2 && events[started[1]..].contains(&RaftEvent::RestoreFinished { partition: P }))
            .then_some(())
    };
    eventually("a second RestoreStarted, then RestoreFinished (supervisor restart)", || restarted(h.events())).await;
    let reopened = tape.position(|t| matches!(t, Trace::Reopened)).expect("the WAL was reopened");
    assert!(reopened > failed, "reopened after the failed write");
    let status = h.serving().await;
    assert!(!status.is_leader, "{status:?}");

    // ...and serving again: elected anew, it commits proposals.
    let status = leader(&h).await;
    assert!(status.term > first_term, "{status:?} after term {first_term}");
    let answer = tokio::time::timeout(PATIENCE, h.addr.send(h.replicate("after"))).await;
    let committed: ProposalCommitted = answer.expect("replicate hung after the restart").unwrap().unwrap();
    let delivered = eventually("the Replicated event after the restart", || {
        h.events().into_iter().find_map(|e| match e {
            RaftEvent::Replicated { entries, .. } => Some(entries),
            _ => None,
        })
    })
    .await;
    assert_eq!(delivered.len(), 1);
    assert_eq!((delivered[0].index, &delivered[0].payload[..]), (committed.first_index, &b"after"[..]));
    assert!(!h.events().iter().any(|e| matches!(e, RaftEvent::Replicated { entries, .. }
        if entries.iter().any(|x| x.payload[..] == b"lost"[..]))));
}

#[actix::test]
async fn many_concurrent_proposals_share_writes_and_appends() {
    let tape = Arc::new(Tape::default());
    let h = Harness::start(config(EAGER), recording_wal(MemoryWal::new(), tape.clone(), |_| Ok(())), tape.clone());
    h.serving().await;
    let _node2 = spawn_node2(&h);
    leader(&h).await;

    let mark = tape.len();
    // Enqueue all 20 before the executor runs again (one address clone each: a sender over the
    // mailbox capacity is parked, a fresh clone is not).
    let requests: Vec<_> = (0..20).map(|i| h.addr.clone().send(h.replicate(&format!("p{i}")))).collect();
    let mut indexes = Vec::new();
    for request in requests {
        let answer = tokio::time::timeout(PATIENCE, request).await.expect("replicate hung").unwrap();
        let committed = answer.expect("replicate failed");
        assert_eq!(committed.first_index, committed.last_index);
        indexes.push(committed.first_index);
    }
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), 20, "every proposal got its own index: {indexes:?}");
    assert_eq!(indexes[19] - indexes[0], 19, "consecutive indexes: {indexes:?}");

    let writes: Vec<WalBatch> = tape.writes(mark).into_iter().filter(|b| application_entries(b) > 0).collect();
    assert_eq!(writes.iter().map(application_entries).sum::<usize>(), 20);
    assert!(writes.len() <= 5, "{} WAL writes for 20 proposals", writes.len());

    let appends = tape.batches_to(N2, mark).into_iter().filter(|b| b.messages.iter().any(is_append_with_entries));
    let appends = appends.count();
    assert!(appends <= 5, "{appends} append batches to node 2 for 20 proposals");

    let replicated = |events: Vec<RaftEvent>| -> Vec<usize> {
        events
            .into_iter()
            .filter_map(|e| match e {
                RaftEvent::Replicated { entries, .. } => Some(entries.len()),
                _ => None,
            })
            .collect()
    };
    let delivered =
        eventually("20 delivered entries", || Some(replicated(h.events())).filter(|d| d.iter().sum::<usize>() >= 20))
            .await;
    assert_eq!(delivered.iter().sum::<usize>(), 20);
    assert!(delivered.len() <= 5, "{} Replicated events for 20 proposals: {delivered:?}", delivered.len());
}

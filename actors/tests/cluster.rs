//! Whole-cluster tests of the actix runtime: three `RaftManager`s in one process (the shared
//! `support/` harness), connected by an `InMemoryNetwork`, each over its own `MemoryWal`, each
//! reporting to its own application actor that records every raw `RaftEvent` per partition.
//!
//! Timing is short (20 ms ticks, 160–300 ms elections) so the suite is quick; every wait is a
//! bounded poll that fails with a message naming what it waited for, and every test runs under an
//! overall budget.

mod support;

use actix::prelude::*;
use kommander_actors::{
    ExportState, InMemoryNetwork, ManagerError, RaftEvent, RaftManager, ReplicateError, RuntimeConfig,
};
use kommander_core::conformance::WriteHookWal;
use kommander_core::raft::ProposalCommitted;
use kommander_core::{
    MemoryWal, NodeContact, NodeId, PartitionId, ProposeError, StaticDiscovery, Term, Ticket, TicketOutcome, Wal,
    WalBatch, WalError,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: [u64; 3] = [1, 2, 3];
const PARTITIONS: u32 = 4;
const P1: PartitionId = PartitionId(1);

/// Overall budget of one test.
const BUDGET: Duration = Duration::from_secs(90);
/// How long a partition may take to elect a leader everybody agrees on.
const ELECTION_WAIT: Duration = Duration::from_secs(10);
/// How long a write may keep retrying (leader changes included).
const WRITE_WAIT: Duration = Duration::from_secs(10);
/// How long the applications may take to converge.
const CONVERGE_WAIT: Duration = Duration::from_secs(15);

type Sequences = BTreeMap<PartitionId, Vec<Vec<u8>>>;

fn config(cluster_id: &str) -> RuntimeConfig {
    RuntimeConfig {
        cluster_id: Some(cluster_id.into()),
        initial_partitions: PARTITIONS,
        tick: Duration::from_millis(20),
        heartbeat_interval: Duration::from_millis(20),
        election_timeout: (Duration::from_millis(160), Duration::from_millis(300)),
        proposal_timeout: Duration::from_secs(3),
        ..RuntimeConfig::default()
    }
}

fn user_partitions() -> Vec<PartitionId> {
    (1..=PARTITIONS).map(PartitionId).collect()
}

fn address(node: NodeId) -> String {
    format!("memory://{}", node.0)
}

fn contacts_of(node: u64) -> Vec<NodeContact> {
    NODES
        .iter()
        .filter(|&&n| n != node)
        .map(|&n| NodeContact { node: NodeId(n), address: address(NodeId(n)) })
        .collect()
}

fn payload(tag: &str, partition: PartitionId, i: usize) -> Vec<u8> {
    format!("{tag}-{partition}-{i}").into_bytes()
}

fn show(payloads: &[Vec<u8>]) -> Vec<String> {
    payloads.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect()
}

/// Run a test body under the overall budget.
async fn within(body: impl Future<Output = ()>) {
    if tokio::time::timeout(BUDGET, body).await.is_err() {
        panic!("test exceeded its overall budget of {BUDGET:?}");
    }
}

/// Poll `probe` every 10 ms until it returns `Ok`; panic with `what` and the last reason once
/// `timeout` has passed.
async fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(why) if Instant::now() >= deadline => panic!("timed out after {timeout:?} waiting for {what}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

// ----- the application ------------------------------------------------------------------------

/// The application side of one node: rebuilds per-partition payload sequences from `RaftEvent`s
/// (a `RestoreStarted` resets the partition) and keeps every event it received.
#[derive(Default)]
struct App {
    applied: Sequences,
    history: BTreeMap<PartitionId, Vec<RaftEvent>>,
}

impl Actor for App {
    type Context = Context<Self>;
}

impl Handler<RaftEvent> for App {
    type Result = ();

    fn handle(&mut self, event: RaftEvent, _: &mut Context<Self>) {
        self.history.entry(event.partition()).or_default().push(event.clone());
        match event {
            RaftEvent::RestoreStarted { partition } => {
                self.applied.insert(partition, Vec::new());
            }
            RaftEvent::Restored { partition, entries } | RaftEvent::Replicated { partition, entries } => {
                self.applied.entry(partition).or_default().extend(entries.into_iter().map(|e| e.payload.to_vec()));
            }
            _ => {}
        }
    }
}

impl Handler<ExportState> for App {
    type Result = Result<Vec<u8>, String>;

    fn handle(&mut self, _: ExportState, _: &mut Context<Self>) -> Self::Result {
        Ok(Vec::new()) // these tests never split or merge
    }
}

/// The app's per-partition payload sequences.
#[derive(Message)]
#[rtype(result = "Sequences")]
struct Snapshot;

impl Handler<Snapshot> for App {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.applied.clone())
    }
}

/// Every event the app received for one partition, in order.
#[derive(Message)]
#[rtype(result = "Vec<RaftEvent>")]
struct History(PartitionId);

impl Handler<History> for App {
    type Result = MessageResult<History>;

    fn handle(&mut self, msg: History, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.history.get(&msg.0).cloned().unwrap_or_default())
    }
}

// ----- a WAL that fails on demand -------------------------------------------------------------

/// Arms a failure of the next `write` touching `target`'s entries, and counts the ones injected.
#[derive(Default)]
struct FailSwitch {
    fail_next: AtomicBool,
    injected: AtomicU64,
}

/// A `MemoryWal` whose next write touching `target`'s entries fails (storing nothing) once armed.
fn flaky_wal(inner: MemoryWal, target: PartitionId, switch: Arc<FailSwitch>) -> WriteHookWal<MemoryWal> {
    WriteHookWal::new(inner, move |batch: &WalBatch| {
        let touches_target = batch.writes.iter().any(|w| w.partition == target && !w.entries.is_empty());
        if touches_target && switch.fail_next.swap(false, Ordering::SeqCst) {
            switch.injected.fetch_add(1, Ordering::SeqCst);
            return Err(WalError::Io("injected write failure".into()));
        }
        Ok(())
    })
}

// ----- the cluster (the shared harness of `support/`, with this file's recorder app) ------------

type Cluster = support::Cluster<App>;

/// Start three nodes over `wals` (one per node), each reporting to a fresh recorder.
async fn start(config: RuntimeConfig, wals: Vec<Arc<dyn Wal>>) -> Cluster {
    let apps = wals.iter().map(|_| App::default().start()).collect();
    Cluster::start_with(config, NODES.len(), wals, apps).await
}

/// Start three nodes, each over a fresh `MemoryWal` (returned: clones share its storage).
async fn start_memory(config: RuntimeConfig) -> (Cluster, Vec<MemoryWal>) {
    let memory: Vec<MemoryWal> = NODES.iter().map(|_| MemoryWal::new()).collect();
    let wals = memory.iter().map(|w| Arc::new(w.clone()) as Arc<dyn Wal>).collect();
    (start(config, wals).await, memory)
}

impl support::Cluster<App> {
    /// Running node `i`'s manager (panics if it is not running).
    fn node(&self, i: usize) -> RaftManager {
        self.manager(i).unwrap_or_else(|| panic!("node {} is not running", NODES[i]))
    }

    /// Wait until every running node names the same leader of `partition` (in the same term) and
    /// exactly that node says `is_leader`.
    async fn agreed_leader(&self, partition: PartitionId) -> NodeId {
        self.agreed_leader_among(&self.running_indexes(), partition).await
    }

    /// [`Cluster::agreed_leader`] among the nodes `nodes` only.
    async fn agreed_leader_among(&self, nodes: &[usize], partition: PartitionId) -> NodeId {
        let running: Vec<RaftManager> = nodes.iter().map(|&i| self.node(i)).collect();
        wait_until(&format!("one agreed leader of {partition} among {nodes:?}"), ELECTION_WAIT, async || {
            let views: Vec<(NodeId, Option<NodeId>, Term)> = running
                .iter()
                .map(|m| {
                    let status = m.status(partition).map_err(|e| format!("{} status: {e}", m.node()))?;
                    Ok((m.node(), m.leader(partition), status.term))
                })
                .collect::<Result<_, String>>()?;
            let self_declared: Vec<NodeId> =
                running.iter().filter(|m| m.is_leader(partition)).map(|m| m.node()).collect();
            let (_, first_leader, first_term) = views[0];
            let agreed = views.iter().all(|&(_, leader, term)| leader == first_leader && term == first_term);
            match first_leader {
                Some(leader) if agreed && self_declared == [leader] => Ok(leader),
                _ => Err(format!("views (node, leader, term) = {views:?}, is_leader on {self_declared:?}")),
            }
        })
        .await
    }

    async fn snapshot(&self, i: usize) -> Sequences {
        self.apps[i].send(Snapshot).await.expect("the app actor is alive")
    }

    async fn history(&self, i: usize, partition: PartitionId) -> Vec<RaftEvent> {
        self.apps[i].send(History(partition)).await.expect("the app actor is alive")
    }

    /// Wait until the apps of `nodes` hold identical sequences in every user partition and
    /// `check` accepts them; returns the common sequences.
    async fn converged(&self, nodes: &[usize], check: impl Fn(&Sequences) -> Result<(), String>) -> Sequences {
        wait_until("the applications to converge", CONVERGE_WAIT, async || {
            let mut snapshots = Vec::new();
            for &i in nodes {
                let mut snapshot = self.snapshot(i).await;
                snapshot.retain(|p, _| !p.is_system());
                for p in user_partitions() {
                    snapshot.entry(p).or_default();
                }
                snapshots.push(snapshot);
            }
            for (k, snapshot) in snapshots.iter().enumerate().skip(1) {
                if *snapshot != snapshots[0] {
                    let lengths = |s: &Sequences| s.iter().map(|(p, v)| (*p, v.len())).collect::<Vec<_>>();
                    return Err(format!(
                        "node {} holds {:?} entries per partition, node {} holds {:?}",
                        NODES[nodes[0]],
                        lengths(&snapshots[0]),
                        NODES[nodes[k]],
                        lengths(snapshot)
                    ));
                }
            }
            check(&snapshots[0])?;
            Ok(snapshots.swap_remove(0))
        })
        .await
    }
}

/// Every acknowledged payload appears in the sequences of its partition.
fn contains_all(acked: &Sequences) -> impl Fn(&Sequences) -> Result<(), String> + '_ {
    move |applied| {
        for (p, payloads) in acked {
            let have = applied.get(p).map(Vec::as_slice).unwrap_or_default();
            if let Some(missing) = payloads.iter().find(|x| !have.contains(x)) {
                return Err(format!("{p} lacks acknowledged {:?}", String::from_utf8_lossy(missing)));
            }
        }
        Ok(())
    }
}

/// The proposal certainly did not commit (safe to retry without duplicating it).
fn not_appended(error: &ReplicateError) -> bool {
    matches!(
        error,
        ReplicateError::NotLeader { .. }
            | ReplicateError::Rejected {
                source: ProposeError::LeadershipPending
                    | ProposeError::Superseded { .. }
                    | ProposeError::LeadershipTransfer { .. },
                ..
            }
            | ReplicateError::Backpressure { .. }
    )
}

/// Write `payload` to `partition` through whichever of `managers` leads it, retrying while
/// leadership moves. With `strict`, an ambiguous failure (timeout, restart) is an error instead
/// of a retry, so an acknowledged write is never duplicated.
async fn write(
    managers: &[RaftManager],
    partition: PartitionId,
    payload: Vec<u8>,
    strict: bool,
) -> Result<ProposalCommitted, String> {
    let deadline = Instant::now() + WRITE_WAIT;
    let mut last_error = None;
    while Instant::now() < deadline {
        if let Some(leader) = managers.iter().find(|m| m.is_leader(partition)) {
            match leader.replicate(partition, "test.put", vec![payload.clone()], true).await {
                Ok(committed) => return Ok(committed),
                Err(e) if strict && !not_appended(&e) => {
                    return Err(format!("write to {partition} on {} failed ambiguously: {e}", leader.node()))
                }
                Err(e) => last_error = Some(e),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("no write to {partition} succeeded within {WRITE_WAIT:?} (last error: {last_error:?})"))
}

/// Write `count` payloads to every user partition, one sequential client per partition, all
/// partitions concurrently; returns the acknowledged payloads per partition in acknowledgement order.
async fn write_all(managers: &[RaftManager], tag: &str, count: usize, strict: bool) -> Sequences {
    let mut tasks = Vec::new();
    for p in user_partitions() {
        let (managers, tag) = (managers.to_vec(), tag.to_string());
        tasks.push(actix::spawn(async move {
            let mut acked = Vec::new();
            let mut last_index = 0;
            for i in 0..count {
                let payload = payload(&tag, p, i);
                let committed = write(&managers, p, payload.clone(), strict).await?;
                if committed.last_index <= last_index {
                    return Err(format!("{p}: ack at index {} after one at {last_index}", committed.last_index));
                }
                last_index = committed.last_index;
                acked.push(payload);
            }
            Ok::<_, String>((p, acked))
        }));
    }
    let mut acked = Sequences::new();
    for task in tasks {
        let (p, payloads) = task.await.expect("writer task panicked").unwrap_or_else(|e| panic!("{e}"));
        acked.insert(p, payloads);
    }
    acked
}

// ----- tests ----------------------------------------------------------------------------------

/// Every partition elects exactly one leader that all three nodes name, that alone says
/// `is_leader`, and that every app was told about through `LeaderChanged`.
#[actix::test]
async fn every_partition_elects_one_agreed_leader() {
    within(async {
        let (cluster, _) = start_memory(config("elections")).await;
        assert_eq!(cluster.node(0).partitions(), user_partitions());
        for p in user_partitions() {
            let leader = cluster.agreed_leader(p).await;
            let leaders: Vec<NodeId> = cluster.running().iter().filter(|m| m.is_leader(p)).map(|m| m.node()).collect();
            assert_eq!(leaders, vec![leader], "{p}: is_leader must hold on exactly the agreed leader");
            for (i, node) in NODES.iter().enumerate() {
                let last_announced = cluster.history(i, p).await.into_iter().rev().find_map(|e| match e {
                    RaftEvent::LeaderChanged { leader, .. } => Some(leader),
                    _ => None,
                });
                assert_eq!(last_announced, Some(Some(leader)), "{p}: node {node}'s app was not told the leader");
            }
        }
    })
    .await;
}

/// 200 writes over 4 partitions (one client each): all three apps hold exactly the acknowledged
/// payloads, in acknowledgement order, per partition.
#[actix::test]
async fn writes_are_delivered_in_order_and_identically_on_every_node() {
    within(async {
        let (cluster, _) = start_memory(config("ordering")).await;
        for p in user_partitions() {
            cluster.agreed_leader(p).await;
        }
        let started = Instant::now();
        let acked = write_all(&cluster.running(), "ordered", 200 / PARTITIONS as usize, true).await;
        assert_eq!(acked.values().map(Vec::len).sum::<usize>(), 200);
        eprintln!("200 acknowledged writes in {:?}", started.elapsed());
        cluster
            .converged(&[0, 1, 2], |applied| {
                for (p, expected) in &acked {
                    let got = &applied[p];
                    if got != expected {
                        let at =
                            got.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(got.len().min(expected.len()));
                        return Err(format!(
                            "{p}: {} delivered vs {} acknowledged, first difference at {at}: {:?} vs {:?}",
                            got.len(),
                            expected.len(),
                            show(&got[at.min(got.len())..(at + 1).min(got.len())]),
                            show(&expected[at.min(expected.len())..(at + 1).min(expected.len())]),
                        ));
                    }
                }
                Ok(())
            })
            .await;
    })
    .await;
}

/// Stopping the leader of partition 1: the two survivors elect another leader, agree on it, and
/// writes through it succeed within a bounded time and reach both survivors.
#[actix::test]
async fn leader_failover_keeps_writes_going() {
    within(async {
        let (cluster, _) = start_memory(config("failover")).await;
        let old_leader = cluster.agreed_leader(P1).await;
        let before = write_all(&cluster.running(), "before", 5, false).await;
        cluster.converged(&[0, 1, 2], contains_all(&before)).await;

        let victim = support::index_of(old_leader);
        let stopped = cluster.stop_node(victim).await;
        assert!(!stopped.is_leader(P1), "a stopped node must not claim leadership");
        assert_eq!(stopped.replicate(P1, "test.put", vec![b"x".to_vec()], true).await, Err(ReplicateError::NotJoined));
        let survivors = cluster.running();

        let started = Instant::now();
        let first = write(&survivors, P1, b"after-failover-0".to_vec(), false)
            .await
            .unwrap_or_else(|e| panic!("no write succeeded after the leader of {P1} stopped: {e}"));
        let failover = started.elapsed();
        eprintln!("first write after failover acknowledged in {failover:?} (index {})", first.last_index);

        let new_leader = cluster.agreed_leader(P1).await;
        assert_ne!(new_leader, old_leader, "the stopped node cannot still lead {P1}");
        for m in &survivors {
            assert_eq!(m.leader(P1), Some(new_leader), "survivor {} disagrees on the leader", m.node());
        }
        let mut acked = before.clone();
        acked.get_mut(&P1).unwrap().push(b"after-failover-0".to_vec());
        for i in 1..20 {
            let payload = format!("after-failover-{i}").into_bytes();
            write(&survivors, P1, payload.clone(), false).await.unwrap_or_else(|e| panic!("{e}"));
            acked.get_mut(&P1).unwrap().push(payload);
        }
        let alive: Vec<usize> = cluster.running_indexes();
        cluster.converged(&alive, contains_all(&acked)).await;
    })
    .await;
}

/// A stopped follower restarted with a new manager over its old WAL replays it (`RestoreStarted`,
/// `Restored` with the entries it had, `RestoreFinished`) and then catches up on what it missed.
#[actix::test]
async fn restarted_node_restores_from_its_wal_and_catches_up() {
    within(async {
        let (cluster, _) = start_memory(config("restart")).await;
        for p in user_partitions() {
            cluster.agreed_leader(p).await;
        }
        let mut acked = write_all(&cluster.running(), "early", 10, false).await;
        cluster.converged(&[0, 1, 2], contains_all(&acked)).await;

        let leader = cluster.agreed_leader(P1).await;
        let victim = (0..NODES.len()).find(|&i| NodeId(NODES[i]) != leader).unwrap();
        let before = cluster.snapshot(victim).await;
        // Marks after the stop: a stopping node first hands the partitions it leads over, which
        // its application sees as leader changes.
        cluster.stop_node(victim).await;
        let mut marks = BTreeMap::new();
        for p in user_partitions() {
            marks.insert(p, cluster.history(victim, p).await.len());
        }

        let later = write_all(&cluster.running(), "while-down", 100 / PARTITIONS as usize, false).await;
        for (p, payloads) in later {
            acked.get_mut(&p).unwrap().extend(payloads);
        }
        cluster.start_node(victim, false).await;
        let started = Instant::now();
        let common = cluster.converged(&[0, 1, 2], contains_all(&acked)).await;
        eprintln!("restarted node caught up in {:?}", started.elapsed());

        for p in user_partitions() {
            let mut events = cluster.history(victim, p).await.split_off(marks[&p]);
            // The stopped incarnation's last leader change (its hand-over) may reach the
            // application after the marks: only leader changes may come before the restore.
            let first_restore = events.iter().position(|e| matches!(e, RaftEvent::RestoreStarted { .. }));
            let late = events.drain(..first_restore.unwrap_or(0)).collect::<Vec<_>>();
            assert!(
                late.iter().all(|e| matches!(e, RaftEvent::LeaderChanged { .. })),
                "{p}: events of the stopped incarnation after the stop: {late:?}"
            );
            let kinds: Vec<&str> = events
                .iter()
                .map(|e| match e {
                    RaftEvent::RestoreStarted { .. } => "RestoreStarted",
                    RaftEvent::Restored { .. } => "Restored",
                    RaftEvent::RestoreFinished { .. } => "RestoreFinished",
                    RaftEvent::Replicated { .. } => "Replicated",
                    RaftEvent::LeaderChanged { .. } => "LeaderChanged",
                    _ => "other",
                })
                .collect();
            assert_eq!(kinds.first(), Some(&"RestoreStarted"), "{p}: events after the restart: {kinds:?}");
            let finished = kinds
                .iter()
                .position(|k| *k == "RestoreFinished")
                .unwrap_or_else(|| panic!("{p}: no RestoreFinished after the restart: {kinds:?}"));
            assert!(kinds[1..finished].iter().all(|k| *k == "Restored"), "{p}: replay interleaved: {kinds:?}");
            assert!(!kinds[finished..].contains(&"RestoreStarted"), "{p}: restored twice: {kinds:?}");
            let restored: Vec<Vec<u8>> = events[1..finished]
                .iter()
                .flat_map(|e| match e {
                    RaftEvent::Restored { entries, .. } => entries.iter().map(|e| e.payload.to_vec()).collect(),
                    _ => Vec::new(),
                })
                .collect();
            let had = &before[&p];
            assert!(!restored.is_empty(), "{p}: nothing replayed from the WAL (the node had {} entries)", had.len());
            assert!(
                had.starts_with(&restored),
                "{p}: replayed {:?} is not a prefix of what the node had: {:?}",
                show(&restored),
                show(had)
            );
            assert!(common[&p].starts_with(had), "{p}: the cluster's sequence does not extend the old one");
        }
    })
    .await;
}

/// Two-phase proposals through the API: held until `commit`, dropped by `rollback`,
/// idempotent resolution, conflicting and unknown tickets refused.
#[actix::test]
async fn two_phase_commit_and_rollback() {
    within(async {
        let (cluster, _) = start_memory(config("two-phase")).await;
        let leader = cluster.node(support::index_of(cluster.agreed_leader(P1).await)).clone();
        let all = [0, 1, 2];

        let held = vec![b"held-a".to_vec(), b"held-b".to_vec()];
        let a = leader.replicate(P1, "test.tx", held.clone(), false).await.expect("two-phase proposal");
        assert_eq!(a.last_index - a.first_index, 1, "two payloads make two entries");
        // Once every node applied past the proposal, it must still not have been delivered.
        wait_until("every node to apply past the held proposal", CONVERGE_WAIT, async || {
            let applied: Vec<_> = cluster.running().iter().map(|m| m.status(P1).map(|s| s.applied_index)).collect();
            match applied.iter().all(|index| index.as_ref().is_ok_and(|&index| index >= a.last_index)) {
                true => Ok(()),
                false => Err(format!("applied indexes {applied:?}, proposal ends at {}", a.last_index)),
            }
        })
        .await;
        for i in all {
            let snapshot = cluster.snapshot(i).await;
            assert!(snapshot.get(&P1).is_none_or(Vec::is_empty), "node {}: delivered before commit", NODES[i]);
        }

        assert_eq!(leader.commit(P1, a.ticket).await, Ok(TicketOutcome::Committed));
        cluster
            .converged(&all, |s| match s[&P1] == held {
                true => Ok(()),
                false => Err(format!("{P1} holds {:?}", show(&s[&P1]))),
            })
            .await;
        assert_eq!(leader.commit(P1, a.ticket).await, Ok(TicketOutcome::Committed), "commit is idempotent");

        let b = leader.replicate(P1, "test.tx", vec![b"doomed".to_vec()], false).await.expect("proposal");
        assert_eq!(leader.rollback(P1, b.ticket).await, Ok(TicketOutcome::RolledBack));
        assert_eq!(
            leader.commit(P1, b.ticket).await,
            Err(ReplicateError::Rejected {
                partition: P1,
                source: ProposeError::AlreadyResolved { ticket: b.ticket, outcome: TicketOutcome::RolledBack }
            })
        );
        assert_eq!(leader.rollback(P1, b.ticket).await, Ok(TicketOutcome::RolledBack));
        // Deliveries are in log order: once a later auto-commit entry arrived everywhere, the
        // rolled-back one can never be delivered.
        leader.replicate(P1, "test.put", vec![b"sentinel".to_vec()], true).await.expect("sentinel write");
        let mut expected = held.clone();
        expected.push(b"sentinel".to_vec());
        cluster
            .converged(&all, |s| match s[&P1] == expected {
                true => Ok(()),
                false => Err(format!("{P1} holds {:?}", show(&s[&P1]))),
            })
            .await;

        let unknown = Ticket { physical_ms: 1, logical: 7, node: 3 };
        assert_eq!(
            leader.commit(P1, unknown).await,
            Err(ReplicateError::Rejected { partition: P1, source: ProposeError::UnknownTicket(unknown) })
        );
        assert_eq!(
            leader.rollback(P1, unknown).await,
            Err(ReplicateError::Rejected { partition: P1, source: ProposeError::UnknownTicket(unknown) })
        );
    })
    .await;
}

/// API misuse is answered with typed errors: reserved and unknown partitions, a follower's
/// `NotLeader` naming the leader and its discovery address, calls before joining or after
/// leaving, and builder errors.
/// `join_cluster` returns once the node can serve: every partition of the map runs with its WAL
/// replayed, so a single node writes right away (after its own election) instead of failing with
/// `UnknownPartition` — the README's first-contact failure.
#[actix::test]
async fn join_cluster_returns_once_every_partition_serves() {
    within(async {
        let network = InMemoryNetwork::new();
        let node = RaftManager::builder(NodeId(1))
            .config(config("ready"))
            .wal(Arc::new(MemoryWal::new()))
            .transport(network.transport(NodeId(1)))
            .discovery(Arc::new(StaticDiscovery::new(Vec::new())))
            .build()
            .expect("builder");
        node.join_cluster().await.expect("join");
        assert_eq!(node.partitions(), user_partitions());
        for partition in user_partitions().into_iter().chain([PartitionId(0)]) {
            let status = node.status(partition).unwrap_or_else(|e| panic!("{partition} not running after join: {e}"));
            assert!(!status.restoring, "{partition} still restoring after join");
        }
        node.wait_for_leader(P1, Duration::from_secs(5)).await.expect("a lone voter elects itself");
        let committed = loop {
            match node.replicate(P1, "test.put", vec![b"x".to_vec()], true).await {
                Err(ReplicateError::Rejected { source: ProposeError::LeadershipPending, .. }) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                other => break other,
            }
        };
        committed.expect("the first write commits");
        node.shutdown().await;
    })
    .await;
}

#[actix::test]
async fn api_errors_are_typed() {
    within(async {
        let network = InMemoryNetwork::new();
        let discovery = || Arc::new(StaticDiscovery::new(contacts_of(1)));
        let missing_wal =
            RaftManager::builder(NodeId(1)).transport(network.transport(NodeId(1))).discovery(discovery()).build();
        assert_eq!(missing_wal.err(), Some(ManagerError::Missing("wal")));
        let bad_timing = RuntimeConfig {
            election_timeout: (Duration::from_millis(20), Duration::from_millis(300)),
            ..config("api")
        };
        let invalid = RaftManager::builder(NodeId(1))
            .config(bad_timing)
            .wal(Arc::new(MemoryWal::new()))
            .transport(network.transport(NodeId(1)))
            .discovery(discovery())
            .build();
        match invalid.err() {
            Some(ManagerError::Config(message)) => assert!(message.contains("election"), "message: {message}"),
            other => panic!("an election timeout not above the heartbeat must be a Config error, got {other:?}"),
        }

        let idle = RaftManager::builder(NodeId(1))
            .config(config("api"))
            .wal(Arc::new(MemoryWal::new()))
            .transport(network.transport(NodeId(1)))
            .discovery(discovery())
            .build()
            .expect("a complete builder");
        let ticket = Ticket { physical_ms: 1, logical: 0, node: 1 };
        assert_eq!(idle.replicate(P1, "test.put", vec![b"x".to_vec()], true).await, Err(ReplicateError::NotJoined));
        assert_eq!(idle.commit(P1, ticket).await, Err(ReplicateError::NotJoined));
        assert!(!idle.is_leader(P1));
        assert_eq!(idle.leader(P1), None);

        let (cluster, _) = start_memory(config("api")).await;
        let leader = cluster.agreed_leader(P1).await;
        let on_leader = cluster.node(support::index_of(leader)).clone();
        let follower = cluster.running().into_iter().find(|m| m.node() != leader).expect("a follower");
        let put =
            |m: RaftManager, p: PartitionId| async move { m.replicate(p, "test.put", vec![b"x".to_vec()], true).await };

        assert_eq!(put(on_leader.clone(), PartitionId(0)).await, Err(ReplicateError::SystemPartitionReserved));
        assert_eq!(on_leader.commit(PartitionId(0), ticket).await, Err(ReplicateError::SystemPartitionReserved));
        assert_eq!(
            put(on_leader.clone(), PartitionId(99)).await,
            Err(ReplicateError::UnknownPartition(PartitionId(99)))
        );
        assert_eq!(
            on_leader.replicate(P1, "test.put", Vec::<Vec<u8>>::new(), true).await,
            Err(ReplicateError::Rejected { partition: P1, source: ProposeError::EmptyProposal })
        );
        let not_leader =
            ReplicateError::NotLeader { partition: P1, leader: Some(leader), endpoint: Some(address(leader)) };
        assert_eq!(put(follower.clone(), P1).await, Err(not_leader.clone()));
        assert_eq!(follower.commit(P1, ticket).await, Err(not_leader));
        assert_eq!(on_leader.join_cluster().await, Err(ManagerError::AlreadyJoined));

        let stopped = cluster.stop_node(2).await;
        assert_eq!(put(stopped.clone(), P1).await, Err(ReplicateError::NotJoined));
        assert!(stopped.partitions().is_empty());
    })
    .await;
}

/// With at most 4 uncommitted entries and the leader cut off from both followers, a proposal
/// beyond the limit fails at once with `Backpressure` (not after the proposal timeout); the
/// stuck entries never commit, and writes resume once the network heals.
#[actix::test]
async fn backpressure_fails_fast_when_nothing_commits() {
    within(async {
        let config = RuntimeConfig {
            max_uncommitted_entries: 4,
            proposal_timeout: Duration::from_millis(1500),
            // Long enough that the isolated leader is still leading when the limit is hit.
            election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
            ..config("backpressure")
        };
        let (cluster, _) = start_memory(config.clone()).await;
        let all = [0, 1, 2];
        for p in user_partitions() {
            cluster.agreed_leader(p).await;
        }
        let mut acked = write_all(&cluster.running(), "normal", 5, false).await;
        cluster.converged(&all, contains_all(&acked)).await;

        let leader_id = cluster.agreed_leader(P1).await;
        let leader = cluster.node(support::index_of(leader_id)).clone();
        cluster.network.isolate(leader_id);
        let stuck: Vec<Vec<u8>> = (0..4).map(|i| format!("stuck-{i}").into_bytes()).collect();
        let pending = {
            let (leader, stuck) = (leader.clone(), stuck.clone());
            actix::spawn(async move { leader.replicate(P1, "test.put", stuck, true).await })
        };
        wait_until("the isolated leader to hold 4 uncommitted entries", Duration::from_secs(2), async || {
            let s = leader.status(P1).map_err(|e| e.to_string())?;
            match s.last_index >= s.commit_index + 4 {
                true => Ok(()),
                false => Err(format!("{s:?}")),
            }
        })
        .await;

        let started = Instant::now();
        let result = leader.replicate(P1, "test.put", vec![b"one-too-many".to_vec()], true).await;
        let elapsed = started.elapsed();
        assert!(
            matches!(&result, Err(ReplicateError::Backpressure { partition: P1, .. })),
            "expected Backpressure from the isolated leader, got {result:?} after {elapsed:?}"
        );
        assert!(elapsed < config.proposal_timeout / 3, "backpressure must fail fast, took {elapsed:?}");
        let stuck_result = pending.await.expect("proposal task");
        assert!(stuck_result.is_err(), "an isolated leader cannot commit, yet: {stuck_result:?}");

        // The other two elect a leader of their own before the network heals, so the isolated
        // leader's entries are overwritten rather than committed.
        let others: Vec<usize> = all.into_iter().filter(|&i| NodeId(NODES[i]) != leader_id).collect();
        let new_leader = cluster.agreed_leader_among(&others, P1).await;
        assert_ne!(new_leader, leader_id);
        cluster.network.heal();
        let healed = b"after-heal".to_vec();
        write(&cluster.running(), P1, healed.clone(), false)
            .await
            .unwrap_or_else(|e| panic!("writes must resume after the heal: {e}"));
        acked.get_mut(&P1).unwrap().push(healed);
        let common = cluster.converged(&all, contains_all(&acked)).await;
        for payload in &stuck {
            assert!(
                !common[&P1].contains(payload),
                "{:?} committed without a quorum",
                String::from_utf8_lossy(payload)
            );
        }
    })
    .await;
}

/// A WAL write failure on the leader of partition 1: the caller gets an error (not a hang), the
/// supervisor restarts the partition (the app sees `RestoreStarted` again), and afterwards writes
/// succeed and every node converges.
#[actix::test]
async fn wal_failure_restarts_the_partition_which_recovers() {
    within(async {
        let memory: Vec<MemoryWal> = NODES.iter().map(|_| MemoryWal::new()).collect();
        let flaky: Vec<Arc<FailSwitch>> = memory.iter().map(|_| Arc::new(FailSwitch::default())).collect();
        let wals = memory
            .iter()
            .zip(&flaky)
            .map(|(m, switch)| Arc::new(flaky_wal(m.clone(), P1, switch.clone())) as Arc<dyn Wal>)
            .collect();
        let cluster = start(config("flaky-wal"), wals).await;
        let all = [0, 1, 2];
        for p in user_partitions() {
            cluster.agreed_leader(p).await;
        }
        let mut acked = write_all(&cluster.running(), "before", 5, false).await;
        cluster.converged(&all, contains_all(&acked)).await;

        let leader_id = cluster.agreed_leader(P1).await;
        let li = support::index_of(leader_id);
        let restores =
            |events: Vec<RaftEvent>| events.iter().filter(|e| matches!(e, RaftEvent::RestoreStarted { .. })).count();
        assert_eq!(restores(cluster.history(li, P1).await), 1, "one restore at startup");

        flaky[li].fail_next.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let result = cluster.node(li).replicate(P1, "test.put", vec![b"maybe-lost".to_vec()], true).await;
        let elapsed = started.elapsed();
        assert!(
            matches!(result, Err(ReplicateError::PartitionUnavailable(P1)) | Err(ReplicateError::Timeout(P1))),
            "expected the write to fail with PartitionUnavailable or Timeout, got {result:?} after {elapsed:?}"
        );
        assert_eq!(flaky[li].injected.load(Ordering::SeqCst), 1, "the injected WAL failure was not hit");
        eprintln!("write on the failing WAL answered {result:?} after {elapsed:?}");

        wait_until(&format!("{P1} on node {leader_id} to restart"), Duration::from_secs(5), async || {
            let n = restores(cluster.history(li, P1).await);
            match n >= 2 {
                true => Ok(()),
                false => Err(format!("{n} RestoreStarted events")),
            }
        })
        .await;
        wait_until(&format!("{P1} on node {leader_id} to finish restoring"), Duration::from_secs(5), async || {
            match cluster.node(li).status(P1) {
                Ok(s) if !s.restoring => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;

        for i in 0..10 {
            let payload = payload("after", P1, i);
            write(&cluster.running(), P1, payload.clone(), false)
                .await
                .unwrap_or_else(|e| panic!("writes must succeed after the restart: {e}"));
            acked.get_mut(&P1).unwrap().push(payload);
        }
        cluster.converged(&all, contains_all(&acked)).await;
        assert_eq!(flaky[li].injected.load(Ordering::SeqCst), 1);
    })
    .await;
}

//! `WalScheduler`: group commit across partitions. Partitions hand it their write requests; it
//! writes everything queued with **one** `Wal::write` call (one transaction, one sync) on a
//! blocking thread, then tells each partition its write is durable. While a flush runs, new
//! requests queue up and go into the next flush together.
//!
//! A failed flush stops every partition incarnation in it: their queued writes are dropped at once
//! and their later writes refused (answered with the error) until they restart with a newer
//! incarnation. Otherwise a write queued behind the failed one could land on top of a log missing
//! the failed write (e.g. entries after a truncation that never happened).
//!
//! After a failed flush the WAL is reopened ([`Wal::reopen`]: a fenced SQLite WAL or a read-only
//! RocksDB writes again, and the storage shows what is really stored) before anything else touches
//! it: before the next flush, and before any restarting partition re-reads its log (its
//! [`FencePartition`] is answered once the reopen succeeded). A reopen that fails (the disk still
//! full) fails the fences waiting for it and the writes of the flush it preceded; the partitions
//! restart with their backoff and the next fence or write tries again. So a node recovers from a
//! full disk by itself once space returns.

use actix::prelude::*;
use kommander_core::raft::WriteRequest;
use kommander_core::{PartitionId, Wal, WalBatch, WalError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A partition's write, to be made durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Persist {
    /// Partition writing.
    pub partition: PartitionId,
    /// Incarnation of the partition executor (stale completions are ignored).
    pub incarnation: u64,
    /// The write.
    pub request: WriteRequest,
    /// Where to report the outcome.
    pub reply_to: Recipient<WriteOutcome>,
}

/// Outcome of a [`Persist`].
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct WriteOutcome {
    /// Incarnation that issued the write.
    pub incarnation: u64,
    /// Write id.
    pub id: u64,
    /// Durable, or the error (the partition must restart from its WAL).
    pub result: Result<(), WalError>,
}

/// Sent by a restarting partition before it re-reads its WAL: drop its queued writes of earlier
/// incarnations and answer once no flush containing its writes is still running (and, after a
/// failed flush, once the WAL is reopened), so the restore sees a WAL that no stale write will
/// change afterwards. An error means the WAL could not be reopened: do not restore now.
#[derive(Message)]
#[rtype(result = "Result<(), WalError>")]
pub struct FencePartition {
    /// The partition restarting.
    pub partition: PartitionId,
    /// Its new incarnation; queued writes of older ones are dropped.
    pub incarnation: u64,
}

/// Counters shared with the manager and benchmarks.
#[derive(Debug, Default)]
pub struct WalStats {
    /// `Wal::write` calls (one sync each).
    pub syncs: AtomicU64,
    /// Entries written.
    pub entries: AtomicU64,
    /// Partition writes written.
    pub writes: AtomicU64,
    /// Entries queued and not yet durable (drives backpressure).
    pub backlog_entries: AtomicUsize,
}

impl WalStats {
    /// Entries per sync so far.
    pub fn entries_per_sync(&self) -> f64 {
        let syncs = self.syncs.load(Ordering::Relaxed).max(1);
        self.entries.load(Ordering::Relaxed) as f64 / syncs as f64
    }
}

struct Queued {
    partition: PartitionId,
    incarnation: u64,
    id: u64,
    entries: usize,
    reply_to: Recipient<WriteOutcome>,
}

/// The group-commit writer of one node.
pub struct WalScheduler {
    wal: Arc<dyn Wal>,
    stats: Arc<WalStats>,
    queue: Vec<(Queued, kommander_core::PartitionWrite)>,
    flushing: bool,
    /// Fences waiting for the running flush to finish (and, after a failure, for the reopen).
    fences: Vec<tokio::sync::oneshot::Sender<Result<(), WalError>>>,
    /// A flush failed and the WAL has not been reopened since.
    needs_reopen: bool,
    /// Per partition, the newest incarnation a failed flush stopped: its writes (and older ones')
    /// are refused.
    failed: HashMap<PartitionId, u64>,
    /// When the running flush started.
    flush_started: std::time::Instant,
    metrics: crate::metrics::WalMetrics,
}

impl WalScheduler {
    /// A scheduler writing to `wal`, counting into `stats`.
    pub fn new(wal: Arc<dyn Wal>, stats: Arc<WalStats>) -> Self {
        WalScheduler {
            wal,
            stats,
            queue: Vec::new(),
            flushing: false,
            fences: Vec::new(),
            needs_reopen: false,
            failed: HashMap::new(),
            flush_started: std::time::Instant::now(),
            metrics: crate::metrics::WalMetrics::register(),
        }
    }

    /// Start the next job on the WAL unless one runs: the queued writes as one flush, preceded
    /// by a reopen after a failed flush (a reopen alone when only fences wait for it).
    fn start_flush(&mut self, ctx: &mut Context<Self>) {
        let reopen = self.needs_reopen;
        let reopen_awaited = reopen && !self.fences.is_empty();
        if self.flushing || (self.queue.is_empty() && !reopen_awaited) {
            return;
        }
        self.flushing = true;
        self.flush_started = std::time::Instant::now();
        if !self.wal.blocks() {
            // An in-memory WAL: written on this actor, without a thread hop, once the mailbox
            // batch being handled queued what it brings (group commit all the same).
            ctx.spawn(fut::ready(()).map(move |(), act: &mut Self, ctx| {
                let (waiting, batch, entries) = act.take_queue();
                let outcome = run_job(&*act.wal, reopen, &batch);
                act.finish_flush(outcome, waiting, entries, ctx);
            }));
            return;
        }
        let (waiting, batch, entries) = self.take_queue();
        let wal = self.wal.clone();
        let write = async move {
            tokio::task::spawn_blocking(move || run_job(&*wal, reopen, &batch)).await.unwrap_or_else(|e| {
                let error = Err(WalError::Io(format!("wal writer panicked: {e}")));
                JobOutcome { reopened: reopen.then(|| error.clone()), written: error }
            })
        };
        ctx.spawn(
            write.into_actor(self).map(move |outcome, act, ctx| act.finish_flush(outcome, waiting, entries, ctx)),
        );
    }

    /// The queued writes as one batch: who waits, the batch, its entry count.
    fn take_queue(&mut self) -> (Vec<Queued>, WalBatch, usize) {
        let (waiting, writes): (Vec<Queued>, Vec<_>) = std::mem::take(&mut self.queue).into_iter().unzip();
        let batch = WalBatch { writes };
        let entries = batch.entry_count();
        (waiting, batch, entries)
    }

    /// A job ended: count it, answer its writers, release the fences (once the WAL is usable),
    /// start the next one.
    fn finish_flush(&mut self, outcome: JobOutcome, waiting: Vec<Queued>, entries: usize, ctx: &mut Context<Self>) {
        self.flushing = false;
        match &outcome.reopened {
            Some(Ok(())) => {
                tracing::info!("wal reopened after a failed write");
                self.needs_reopen = false;
            }
            Some(Err(error)) => tracing::warn!(%error, "reopening the wal after a failed write failed; retrying later"),
            None => {}
        }
        let result = outcome.written;
        if waiting.is_empty() {
            // A reopen alone: nothing written, nothing to count.
        } else if result.is_ok() {
            let took = self.flush_started.elapsed();
            tracing::debug!(entries, writes = waiting.len(), took_us = took.as_micros() as u64, "wal group commit");
            self.metrics.sync_seconds.record(took);
            self.metrics.entries_per_sync.record(entries as f64);
            self.stats.syncs.fetch_add(1, Ordering::Relaxed);
            self.stats.entries.fetch_add(entries as u64, Ordering::Relaxed);
            self.stats.writes.fetch_add(waiting.len() as u64, Ordering::Relaxed);
        } else {
            tracing::error!(?result, "wal write failed; the partitions involved restart from their WAL");
            for q in &waiting {
                let newest = self.failed.entry(q.partition).or_insert(q.incarnation);
                *newest = (*newest).max(q.incarnation);
            }
            self.drop_stopped(&result);
            self.needs_reopen = true;
        }
        for q in waiting {
            self.stats.backlog_entries.fetch_sub(q.entries, Ordering::Relaxed);
            q.reply_to.do_send(WriteOutcome { incarnation: q.incarnation, id: q.id, result: result.clone() });
        }
        let released = match outcome.reopened {
            // The reopen failed: the restores waiting for it must not read the WAL now.
            Some(Err(error)) if self.needs_reopen => Some(Err(error)),
            // The WAL is usable.
            _ if !self.needs_reopen => Some(Ok(())),
            // A write just failed: the fences wait for the reopen, the next job.
            _ => None,
        };
        if let Some(answer) = released {
            for fence in self.fences.drain(..) {
                let _ = fence.send(answer.clone());
            }
        }
        self.start_flush(ctx);
    }
}

/// What one job on the WAL did: the reopen, when it had one, and the write (the reopen's error
/// when the reopen failed, since nothing was then written).
struct JobOutcome {
    reopened: Option<Result<(), WalError>>,
    written: Result<(), WalError>,
}

/// One job on the WAL (on a blocking thread for a blocking WAL): reopen it first when `reopen`,
/// then write `batch` unless it is empty.
fn run_job(wal: &dyn Wal, reopen: bool, batch: &WalBatch) -> JobOutcome {
    let reopened = reopen.then(|| wal.reopen());
    let written = match &reopened {
        Some(Err(error)) => Err(error.clone()),
        _ if batch.writes.is_empty() => Ok(()),
        _ => wal.write(batch),
    };
    JobOutcome { reopened, written }
}

impl WalScheduler {
    /// Is this partition incarnation stopped by a failed flush?
    fn is_stopped(&self, partition: PartitionId, incarnation: u64) -> bool {
        self.failed.get(&partition).is_some_and(|&failed| incarnation <= failed)
    }

    /// Answer and drop the queued writes of stopped incarnations with the flush's error.
    fn drop_stopped(&mut self, result: &Result<(), WalError>) {
        let (stopped, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.queue).into_iter().partition(|(q, _)| self.is_stopped(q.partition, q.incarnation));
        self.queue = kept;
        for (q, _) in stopped {
            self.stats.backlog_entries.fetch_sub(q.entries, Ordering::Relaxed);
            q.reply_to.do_send(WriteOutcome { incarnation: q.incarnation, id: q.id, result: result.clone() });
        }
    }
}

impl Actor for WalScheduler {
    type Context = Context<Self>;
}

impl Handler<Persist> for WalScheduler {
    type Result = ();

    fn handle(&mut self, msg: Persist, ctx: &mut Context<Self>) {
        if self.is_stopped(msg.partition, msg.incarnation) {
            let result = Err(WalError::Io(format!(
                "an earlier write of partition {} failed; it must restart from its WAL",
                msg.partition
            )));
            msg.reply_to.do_send(WriteOutcome { incarnation: msg.incarnation, id: msg.request.id, result });
            return;
        }
        let entries = msg.request.write.entries.len();
        self.stats.backlog_entries.fetch_add(entries, Ordering::Relaxed);
        let queued = Queued {
            partition: msg.partition,
            incarnation: msg.incarnation,
            id: msg.request.id,
            entries,
            reply_to: msg.reply_to,
        };
        self.queue.push((queued, msg.request.write));
        self.start_flush(ctx);
    }
}

impl Handler<FencePartition> for WalScheduler {
    type Result = ResponseFuture<Result<(), WalError>>;

    fn handle(&mut self, msg: FencePartition, ctx: &mut Context<Self>) -> Self::Result {
        let stats = self.stats.clone();
        self.queue.retain(|(q, _)| {
            let stale = q.partition == msg.partition && q.incarnation < msg.incarnation;
            if stale {
                stats.backlog_entries.fetch_sub(q.entries, Ordering::Relaxed);
            }
            !stale
        });
        if !self.flushing && !self.needs_reopen {
            return Box::pin(async { Ok(()) });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.fences.push(tx);
        // Idle after a failed flush: the reopen this fence waits for starts now.
        self.start_flush(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(WalError::Closed)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kommander_core::conformance::wal::entry;
    use kommander_core::conformance::WriteHookWal;
    use kommander_core::{LogIndex, MemoryWal, PartitionWrite};
    use std::sync::Mutex;
    use std::time::Duration;

    struct Outcomes(Arc<Mutex<Vec<u64>>>);
    impl Actor for Outcomes {
        type Context = Context<Self>;
    }
    impl Handler<WriteOutcome> for Outcomes {
        type Result = ();
        fn handle(&mut self, msg: WriteOutcome, _: &mut Context<Self>) {
            self.0.lock().unwrap().push(msg.id);
        }
    }

    fn persist(id: u64, index: LogIndex, incarnation: u64, reply_to: Recipient<WriteOutcome>) -> Persist {
        let p = PartitionId(1);
        let write = PartitionWrite { partition: p, entries: vec![entry(index, 1)], ..Default::default() };
        Persist { partition: p, incarnation, request: WriteRequest { id, write }, reply_to }
    }

    #[actix::test]
    async fn a_fence_drops_stale_queued_writes_and_waits_for_the_running_flush() {
        let memory = MemoryWal::new();
        let stats = Arc::new(WalStats::default());
        // Storage whose writes take 100 ms.
        let slow = WriteHookWal::new(memory.clone(), |_: &WalBatch| {
            std::thread::sleep(Duration::from_millis(100));
            Ok(())
        });
        let scheduler = WalScheduler::new(Arc::new(slow), stats.clone()).start();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let outcomes = Outcomes(seen.clone()).start().recipient();
        scheduler.do_send(persist(1, 1, 1, outcomes.clone())); // starts a 100 ms flush
        scheduler.do_send(persist(2, 2, 1, outcomes.clone())); // queued behind it
        let started = std::time::Instant::now();
        scheduler.send(FencePartition { partition: PartitionId(1), incarnation: 2 }).await.unwrap().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50), "the fence waits for the running flush");
        assert_eq!(memory.last_index(PartitionId(1)), Ok(1), "the flush that was running completed");
        actix::clock::sleep(Duration::from_millis(250)).await;
        assert_eq!(memory.last_index(PartitionId(1)), Ok(1), "the stale queued write never reaches the WAL");
        assert_eq!(*seen.lock().unwrap(), vec![1]);
        assert_eq!(stats.backlog_entries.load(Ordering::Relaxed), 0);
        assert_eq!(stats.syncs.load(Ordering::Relaxed), 1);
    }

    #[actix::test]
    async fn a_failed_flush_stops_its_partition_incarnations_until_they_restart() {
        let memory = MemoryWal::new();
        let stats = Arc::new(WalStats::default());
        // The first write fails after 100 ms; later ones succeed.
        let calls = Arc::new(Mutex::new(0));
        let counter = calls.clone();
        let flaky = WriteHookWal::new(memory.clone(), move |_: &WalBatch| {
            let mut n = counter.lock().unwrap();
            *n += 1;
            std::thread::sleep(Duration::from_millis(100));
            if *n == 1 {
                Err(WalError::Io("disk said no".into()))
            } else {
                Ok(())
            }
        });
        let scheduler = WalScheduler::new(Arc::new(flaky), stats.clone()).start();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let outcomes = Outcomes(seen.clone()).start().recipient();
        scheduler.do_send(persist(1, 1, 1, outcomes.clone())); // fails
        scheduler.do_send(persist(2, 2, 1, outcomes.clone())); // queued behind it: must never land
        let other = PartitionWrite { partition: PartitionId(2), entries: vec![entry(1, 1)], ..Default::default() };
        let other = Persist {
            partition: PartitionId(2),
            incarnation: 1,
            request: WriteRequest { id: 7, write: other },
            reply_to: outcomes.clone(),
        };
        scheduler.do_send(other); // another partition, not in the failed flush: written
        actix::clock::sleep(Duration::from_millis(400)).await;
        scheduler.do_send(persist(3, 1, 1, outcomes.clone())); // the stopped incarnation again: refused
        actix::clock::sleep(Duration::from_millis(100)).await;
        assert_eq!(memory.last_index(PartitionId(1)), Ok(0), "nothing of the stopped incarnation is durable");
        assert_eq!(memory.last_index(PartitionId(2)), Ok(1), "other partitions keep writing");
        let mut answered = seen.lock().unwrap().clone();
        answered.sort_unstable();
        assert_eq!(answered, vec![1, 2, 3, 7], "every write is answered");
        // After the restart (a fence with a newer incarnation) the partition writes again.
        scheduler.send(FencePartition { partition: PartitionId(1), incarnation: 2 }).await.unwrap().unwrap();
        scheduler.do_send(persist(1, 1, 2, outcomes.clone()));
        actix::clock::sleep(Duration::from_millis(300)).await;
        assert_eq!(memory.last_index(PartitionId(1)), Ok(1));
        assert_eq!(stats.backlog_entries.load(Ordering::Relaxed), 0);
    }

    /// A `MemoryWal` whose writes and reopens fail on demand, logging what it was asked to do.
    #[derive(Clone, Default)]
    struct Reopenable {
        inner: MemoryWal,
        fail_writes: Arc<std::sync::atomic::AtomicBool>,
        fail_reopens: Arc<std::sync::atomic::AtomicBool>,
        log: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Reopenable {
        fn log(&self) -> Vec<&'static str> {
            self.log.lock().unwrap().clone()
        }

        /// The WAL the scheduler gets: the hooks log each call and fail it while asked to.
        fn wal(&self) -> WriteHookWal<MemoryWal> {
            let hook = |fail: &Arc<std::sync::atomic::AtomicBool>,
                        log: &Arc<Mutex<Vec<&'static str>>>,
                        what: (&'static str, &'static str)| {
                let (fail, log) = (fail.clone(), log.clone());
                move || {
                    let failing = fail.load(Ordering::SeqCst);
                    log.lock().unwrap().push(if failing { what.0 } else { what.1 });
                    if failing {
                        Err(WalError::Io(what.0.into()))
                    } else {
                        Ok(())
                    }
                }
            };
            let write = hook(&self.fail_writes, &self.log, ("write failed", "write"));
            WriteHookWal::new(self.inner.clone(), move |_: &WalBatch| write()).with_reopen(hook(
                &self.fail_reopens,
                &self.log,
                ("reopen failed", "reopen"),
            ))
        }
    }

    #[actix::test]
    async fn after_a_failed_flush_the_wal_is_reopened_before_any_restore_or_write() {
        let wal = Reopenable::default();
        let stats = Arc::new(WalStats::default());
        let scheduler = WalScheduler::new(Arc::new(wal.wal()), stats.clone()).start();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let outcomes = Outcomes(seen.clone()).start().recipient();
        let fence = |incarnation| scheduler.send(FencePartition { partition: PartitionId(1), incarnation });

        // The disk fills: the write fails; so does the reopen a restarting partition waits for,
        // and its restore is told not to read.
        wal.fail_writes.store(true, Ordering::SeqCst);
        wal.fail_reopens.store(true, Ordering::SeqCst);
        scheduler.do_send(persist(1, 1, 1, outcomes.clone()));
        let refused = fence(2).await.unwrap();
        assert!(matches!(&refused, Err(WalError::Io(m)) if m.contains("reopen failed")), "{refused:?}");
        assert_eq!(wal.log(), ["write failed", "reopen failed"]);

        // Space returns: the next fence reopens the WAL before it answers; writes go on.
        wal.fail_writes.store(false, Ordering::SeqCst);
        wal.fail_reopens.store(false, Ordering::SeqCst);
        assert_eq!(fence(3).await.unwrap(), Ok(()));
        assert_eq!(wal.log(), ["write failed", "reopen failed", "reopen"]);
        scheduler.do_send(persist(2, 1, 3, outcomes.clone()));
        actix::clock::sleep(Duration::from_millis(100)).await;
        assert_eq!(wal.log(), ["write failed", "reopen failed", "reopen", "write"], "one reopen is enough");
        assert_eq!(wal.inner.last_index(PartitionId(1)), Ok(1));

        // Another failure, then a write of a healthy partition: the reopen comes first, in the
        // same job, and the fence that follows needs none.
        wal.fail_writes.store(true, Ordering::SeqCst);
        scheduler.do_send(persist(3, 2, 3, outcomes.clone()));
        actix::clock::sleep(Duration::from_millis(100)).await;
        wal.fail_writes.store(false, Ordering::SeqCst);
        let other = PartitionWrite { partition: PartitionId(2), entries: vec![entry(1, 1)], ..Default::default() };
        let reply_to = outcomes.clone();
        scheduler.do_send(Persist {
            partition: PartitionId(2),
            incarnation: 1,
            request: WriteRequest { id: 9, write: other },
            reply_to,
        });
        actix::clock::sleep(Duration::from_millis(100)).await;
        assert_eq!(fence(4).await.unwrap(), Ok(()));
        assert_eq!(wal.log()[4..], ["write failed", "reopen", "write"]);
        assert_eq!(wal.inner.last_index(PartitionId(2)), Ok(1));
        let mut answered = seen.lock().unwrap().clone();
        answered.sort_unstable();
        assert_eq!(answered, vec![1, 2, 3, 9], "every write is answered");
        assert_eq!(stats.backlog_entries.load(Ordering::Relaxed), 0);
    }
}

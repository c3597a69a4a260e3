//! `WalScheduler`: group commit across partitions. Partitions hand it their write requests; it
//! writes everything queued with **one** `Wal::write` call (one transaction, one sync) on a
//! blocking thread, then tells each partition its write is durable. While a flush runs, new
//! requests queue up and go into the next flush together.

use actix::prelude::*;
use kommander_core::raft::WriteRequest;
use kommander_core::{PartitionId, Wal, WalBatch, WalError};
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
}

impl WalScheduler {
    /// A scheduler writing to `wal`, counting into `stats`.
    pub fn new(wal: Arc<dyn Wal>, stats: Arc<WalStats>) -> Self {
        WalScheduler { wal, stats, queue: Vec::new(), flushing: false }
    }

    fn start_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.queue.is_empty() {
            return;
        }
        self.flushing = true;
        let (waiting, writes): (Vec<Queued>, Vec<_>) = std::mem::take(&mut self.queue).into_iter().unzip();
        let batch = WalBatch { writes };
        let entries = batch.entry_count();
        let wal = self.wal.clone();
        let write = async move {
            tokio::task::spawn_blocking(move || wal.write(&batch))
                .await
                .unwrap_or_else(|e| Err(WalError::Io(format!("wal writer panicked: {e}"))))
        };
        ctx.spawn(write.into_actor(self).map(move |result, act, ctx| {
            act.flushing = false;
            if result.is_ok() {
                act.stats.syncs.fetch_add(1, Ordering::Relaxed);
                act.stats.entries.fetch_add(entries as u64, Ordering::Relaxed);
                act.stats.writes.fetch_add(waiting.len() as u64, Ordering::Relaxed);
            } else {
                tracing::error!(?result, "wal write failed; the partitions involved restart from their WAL");
            }
            for q in waiting {
                act.stats.backlog_entries.fetch_sub(q.entries, Ordering::Relaxed);
                q.reply_to.do_send(WriteOutcome { incarnation: q.incarnation, id: q.id, result: result.clone() });
            }
            act.start_flush(ctx);
        }));
    }
}

impl Actor for WalScheduler {
    type Context = Context<Self>;
}

impl Handler<Persist> for WalScheduler {
    type Result = ();

    fn handle(&mut self, msg: Persist, ctx: &mut Context<Self>) {
        let entries = msg.request.write.entries.len();
        self.stats.backlog_entries.fetch_add(entries, Ordering::Relaxed);
        let queued = Queued { incarnation: msg.incarnation, id: msg.request.id, entries, reply_to: msg.reply_to };
        self.queue.push((queued, msg.request.write));
        self.start_flush(ctx);
    }
}

//! `ReadScheduler`: WAL range reads (follower catch-up) off the partition executors, on blocking
//! threads, fair across partitions: one queue per partition served round-robin, so one busy
//! partition cannot starve the others.

use actix::prelude::*;
use kommander_core::raft::ReadRequest;
use kommander_core::{LogEntry, PartitionId, Wal, WalError};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// A partition's read request.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Read {
    /// Incarnation of the partition executor.
    pub incarnation: u64,
    /// The read.
    pub request: ReadRequest,
    /// Where to deliver the result.
    pub reply_to: Recipient<ReadOutcome>,
}

/// Result of a [`Read`].
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct ReadOutcome {
    /// Incarnation that issued the read.
    pub incarnation: u64,
    /// Read id.
    pub id: u64,
    /// The entries or the error.
    pub result: Result<Vec<LogEntry>, WalError>,
}

/// The fair reader of one node.
pub struct ReadScheduler {
    wal: Arc<dyn Wal>,
    concurrency: usize,
    running: usize,
    queues: BTreeMap<PartitionId, VecDeque<Read>>,
    /// Partition served last (round-robin cursor).
    cursor: Option<PartitionId>,
}

impl ReadScheduler {
    /// A scheduler running at most `concurrency` reads at once.
    pub fn new(wal: Arc<dyn Wal>, concurrency: usize) -> Self {
        ReadScheduler { wal, concurrency: concurrency.max(1), running: 0, queues: BTreeMap::new(), cursor: None }
    }

    /// The next read in round-robin order over partitions.
    fn next_read(&mut self) -> Option<Read> {
        let after = self.cursor;
        let partition = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(p, _)| *p)
            .find(|p| after.is_none_or(|a| *p > a))
            .or_else(|| self.queues.iter().find(|(_, q)| !q.is_empty()).map(|(p, _)| *p))?;
        self.cursor = Some(partition);
        let queue = self.queues.get_mut(&partition)?;
        let read = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&partition);
        }
        read
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.running < self.concurrency {
            let Some(read) = self.next_read() else { return };
            self.running += 1;
            let wal = self.wal.clone();
            let r = read.request.clone();
            let fut = async move {
                tokio::task::spawn_blocking(move || wal.read_range(r.partition, r.from, r.to))
                    .await
                    .unwrap_or_else(|e| Err(WalError::Io(format!("wal reader panicked: {e}"))))
            };
            ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                act.running -= 1;
                read.reply_to.do_send(ReadOutcome { incarnation: read.incarnation, id: read.request.id, result });
                act.pump(ctx);
            }));
        }
    }
}

impl Actor for ReadScheduler {
    type Context = Context<Self>;
}

impl Handler<Read> for ReadScheduler {
    type Result = ();

    fn handle(&mut self, msg: Read, ctx: &mut Context<Self>) {
        self.queues.entry(msg.request.partition).or_default().push_back(msg);
        self.pump(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kommander_core::MemoryWal;

    #[test]
    fn round_robin_serves_every_partition_in_turn() {
        let mut s = ReadScheduler::new(Arc::new(MemoryWal::new()), 1);
        let sys = actix::System::new();
        sys.block_on(async {
            let sink = Sink.start().recipient();
            for (p, n) in [(1u32, 3u64), (2, 1), (3, 2)] {
                for i in 0..n {
                    let request = ReadRequest { id: i, partition: PartitionId(p), from: 1, to: 1 };
                    s.queues.entry(PartitionId(p)).or_default().push_back(Read {
                        incarnation: 0,
                        request,
                        reply_to: sink.clone(),
                    });
                }
            }
            let order: Vec<u32> = std::iter::from_fn(|| s.next_read()).map(|r| r.request.partition.0).collect();
            assert_eq!(order, vec![1, 2, 3, 1, 3, 1]);
        });
    }

    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<ReadOutcome> for Sink {
        type Result = ();
        fn handle(&mut self, _: ReadOutcome, _: &mut Context<Self>) {}
    }
}

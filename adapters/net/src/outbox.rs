//! Outbound queues: one bounded queue and one worker task per peer. `send` never blocks: it
//! enqueues or fails with [`TransportError::QueueFull`]. Each worker takes everything queued for its
//! peer — batches of every partition — merges it into one frame (up to a message limit), sends it and
//! waits for the answer before the next frame, so frames to a peer stay in order. After a failure
//! the worker backs off exponentially; the batches of the failed frame are dropped (Raft
//! retransmits), and other peers are unaffected.

use crate::backoff::Backoff;
use crate::stats::NetStats;
use kommander_core::{MessageBatch, NodeId, TransportError};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Sends one merged batch to a peer over a concrete protocol.
pub trait PeerSender: Send + Sync + 'static {
    /// Send `batch` to `peer` and wait for its answer. `Err` carries a description for logs.
    fn send_frame(&self, peer: NodeId, batch: MessageBatch) -> impl Future<Output = Result<(), String>> + Send;
}

/// Queue and back-off settings.
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// Batches queued per peer before `send` fails with `QueueFull`.
    pub queue_capacity: usize,
    /// Messages merged into one frame at most.
    pub max_messages_per_frame: usize,
    /// First pause after a failed frame.
    pub backoff_min: Duration,
    /// Longest pause between attempts.
    pub backoff_max: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            queue_capacity: 4096,
            max_messages_per_frame: 8192,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// The per-peer queues of one node.
#[derive(Debug)]
pub struct Outbox {
    local: NodeId,
    queues: HashMap<NodeId, mpsc::Sender<MessageBatch>>,
    stats: Arc<NetStats>,
}

impl Outbox {
    /// Start one worker per peer on `handle`.
    pub fn start<S: PeerSender>(
        handle: &Handle,
        local: NodeId,
        peers: impl IntoIterator<Item = NodeId>,
        config: &OutboxConfig,
        sender: Arc<S>,
        stats: Arc<NetStats>,
    ) -> Self {
        let mut queues = HashMap::new();
        for peer in peers.into_iter().filter(|&p| p != local) {
            let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
            let worker = PeerWorker {
                peer,
                rx,
                sender: sender.clone(),
                stats: stats.clone(),
                max_messages: config.max_messages_per_frame.max(1),
                backoff: Backoff::new(config.backoff_min, config.backoff_max, local.0 ^ (peer.0 << 32)),
            };
            handle.spawn(worker.run());
            queues.insert(peer, tx);
        }
        Outbox { local, queues, stats }
    }

    /// Enqueue `batch` for `batch.to`.
    pub fn send(&self, batch: MessageBatch) -> Result<(), TransportError> {
        if batch.from != self.local {
            return Err(TransportError::Setup(format!(
                "batch from {} sent through {}'s transport",
                batch.from, self.local
            )));
        }
        let queue = self.queues.get(&batch.to).ok_or(TransportError::UnknownPeer(batch.to))?;
        let to = batch.to;
        queue.try_send(batch).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                NetStats::bump(&self.stats.queue_full);
                TransportError::QueueFull(to)
            }
            mpsc::error::TrySendError::Closed(_) => TransportError::NotRunning,
        })
    }

    /// The peers this outbox sends to.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.queues.keys().copied()
    }
}

struct PeerWorker<S> {
    peer: NodeId,
    rx: mpsc::Receiver<MessageBatch>,
    sender: Arc<S>,
    stats: Arc<NetStats>,
    max_messages: usize,
    backoff: Backoff,
}

impl<S: PeerSender> PeerWorker<S> {
    async fn run(mut self) {
        let mut carried: Option<MessageBatch> = None;
        loop {
            let first = match carried.take() {
                Some(batch) => batch,
                None => match self.rx.recv().await {
                    Some(batch) => batch,
                    None => return,
                },
            };
            let (frame, batches, rest) = self.merge(first);
            carried = rest;
            match self.sender.send_frame(self.peer, frame).await {
                Ok(()) => {
                    if self.backoff.is_backing_off() {
                        tracing::info!(peer = %self.peer, "peer reachable again");
                    }
                    self.backoff.reset();
                    NetStats::bump(&self.stats.frames_sent);
                    self.stats.batches_sent.fetch_add(batches, std::sync::atomic::Ordering::Relaxed);
                }
                Err(error) => {
                    NetStats::bump(&self.stats.frames_failed);
                    if !self.backoff.is_backing_off() {
                        tracing::warn!(peer = %self.peer, %error, "sending to peer failed; backing off");
                    }
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
            }
        }
    }

    /// Merge `first` with whatever is queued, up to the message limit. Returns the frame, how many
    /// batches it holds, and a batch that did not fit.
    fn merge(&mut self, mut frame: MessageBatch) -> (MessageBatch, u64, Option<MessageBatch>) {
        let mut batches = 1;
        while frame.messages.len() < self.max_messages {
            let Ok(next) = self.rx.try_recv() else { break };
            if frame.messages.len() + next.messages.len() > self.max_messages {
                return (frame, batches, Some(next));
            }
            frame.messages.extend(next.messages);
            batches += 1;
        }
        (frame, batches, None)
    }
}

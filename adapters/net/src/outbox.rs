//! Outbound queues: one bounded queue and one worker task per peer. `send` never blocks: it
//! enqueues or fails with [`TransportError::QueueFull`]. Each worker takes what is queued for its
//! peer — batches of every partition — merges it into one frame (up to a message limit and an
//! estimated byte size, see [`estimated_bytes`]) and hands it to the [`PeerSender`] before it takes
//! the next, so frames to a peer stay in order. What "sent" means is the sender's: REST waits for
//! the peer's answer (one frame in flight); gRPC writes the frame on its long-lived stream and
//! returns (many in flight, bounded by HTTP/2 flow control). Either way an idle link sends at once,
//! and a busy one lets batches queue up and merge into the next frame. A single batch above the byte limit still goes out,
//! alone: the receiver judges it. After a failure the worker backs off exponentially; the batches
//! of the failed frame are dropped (Raft retransmits), and other peers are unaffected.
//!
//! Peers can be added and removed at run time (dynamic membership): adding one starts its queue
//! and worker, removing one aborts its worker and drops what was queued for it.
//!
//! Dropping the [`Outbox`] (what a transport's `stop` does) aborts its workers: nothing queued
//! before is sent afterwards, and a restarted transport's new workers never race old ones.

use crate::backoff::Backoff;
use crate::stats::NetStats;
use kommander_core::{MessageBatch, NodeId, RaftMessage, TransportError};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Estimated encoded bytes of a frame beyond its messages (cluster id excluded).
const FRAME_OVERHEAD_BYTES: usize = 64;
/// Estimated encoded bytes of one envelope beyond its entries.
const MESSAGE_OVERHEAD_BYTES: usize = 64;
/// Estimated encoded bytes of one entry beyond its payload and log type.
const ENTRY_OVERHEAD_BYTES: usize = 48;

/// A generous estimate of `batch`'s encoded size in either transport's wire format: a fixed
/// overhead per frame, envelope and entry, plus the cluster id, payload and log type bytes.
pub fn estimated_bytes(batch: &MessageBatch) -> usize {
    FRAME_OVERHEAD_BYTES.saturating_add(batch.cluster_id.len()).saturating_add(messages_bytes(batch))
}

fn messages_bytes(batch: &MessageBatch) -> usize {
    batch.messages.iter().fold(0usize, |total, envelope| {
        let entries = match &envelope.message {
            RaftMessage::AppendRequest { entries, .. } => entries.iter().fold(0usize, |sum, entry| {
                sum.saturating_add(ENTRY_OVERHEAD_BYTES + entry.payload.len() + entry.log_type.len())
            }),
            _ => 0,
        };
        total.saturating_add(MESSAGE_OVERHEAD_BYTES).saturating_add(entries)
    })
}

/// Sends one merged batch to a peer over a concrete protocol.
pub trait PeerSender: Send + Sync + 'static {
    /// Send `batch` to `peer`: done when the peer answered, or for a streaming sender when the
    /// frame is on the peer's stream (frames must leave in the order they are handed over). `Err`
    /// carries a description for logs.
    fn send_frame(&self, peer: NodeId, batch: MessageBatch) -> impl Future<Output = Result<(), String>> + Send;
}

/// Queue and back-off settings.
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// Batches queued per peer before `send` fails with `QueueFull`. Every awake leader sends a
    /// batch per peer per tick, and a node starting thousands of partitions runs their elections
    /// together, so this must exceed the partitions a node hosts: 65,536 by default (at 4,096, a
    /// node with 10,000 awake partitions dropped most of each tick's messages).
    pub queue_capacity: usize,
    /// Messages merged into one frame at most.
    pub max_messages_per_frame: usize,
    /// Estimated bytes ([`estimated_bytes`]) merged into one frame at most. Keep it well below the
    /// receivers' body limit. A single batch above it is still sent, alone.
    pub max_frame_bytes: usize,
    /// First pause after a failed frame.
    pub backoff_min: Duration,
    /// Longest pause between attempts.
    pub backoff_max: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            queue_capacity: 65_536,
            max_messages_per_frame: 8192,
            max_frame_bytes: crate::DEFAULT_MAX_FRAME_BYTES,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// Spawns the worker of one peer (captures the runtime handle, the sender and the settings).
type SpawnWorker = dyn Fn(NodeId, mpsc::Receiver<MessageBatch>) -> JoinHandle<()> + Send + Sync;

/// The queue and the worker of one peer.
#[derive(Debug)]
struct PeerQueue {
    tx: mpsc::Sender<MessageBatch>,
    worker: JoinHandle<()>,
}

/// The per-peer queues of one node. Peers can be added and removed while it runs
/// ([`Outbox::add_peer`], [`Outbox::remove_peer`]). Dropping it aborts the workers (see the
/// module docs).
pub struct Outbox {
    local: NodeId,
    queues: RwLock<HashMap<NodeId, PeerQueue>>,
    spawn: Box<SpawnWorker>,
    queue_capacity: usize,
    stats: Arc<NetStats>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("local", &self.local)
            .field("peers", &self.peers())
            .field("queue_capacity", &self.queue_capacity)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Start one worker per peer on `handle`. Workers of peers added later run on `handle` too.
    pub fn start<S: PeerSender>(
        handle: &Handle,
        local: NodeId,
        peers: impl IntoIterator<Item = NodeId>,
        config: &OutboxConfig,
        sender: Arc<S>,
        stats: Arc<NetStats>,
    ) -> Self {
        let (handle, worker_stats) = (handle.clone(), stats.clone());
        let max_messages = config.max_messages_per_frame.max(1);
        let max_bytes = config.max_frame_bytes.max(1);
        let (backoff_min, backoff_max) = (config.backoff_min, config.backoff_max);
        let spawn = move |peer: NodeId, rx: mpsc::Receiver<MessageBatch>| {
            let worker = PeerWorker {
                peer,
                rx,
                sender: sender.clone(),
                stats: worker_stats.clone(),
                max_messages,
                max_bytes,
                backoff: Backoff::new(backoff_min, backoff_max, local.0 ^ (peer.0 << 32)),
            };
            handle.spawn(worker.run())
        };
        let outbox = Outbox {
            local,
            queues: RwLock::new(HashMap::new()),
            spawn: Box::new(spawn),
            queue_capacity: config.queue_capacity.max(1),
            stats,
        };
        for peer in peers {
            outbox.add_peer(peer);
        }
        outbox
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<NodeId, PeerQueue>> {
        self.queues.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<NodeId, PeerQueue>> {
        self.queues.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a queue and a worker for `peer`. Returns false (and changes nothing) if `peer` is
    /// known already or is the local node.
    pub fn add_peer(&self, peer: NodeId) -> bool {
        if peer == self.local {
            return false;
        }
        let mut queues = self.write();
        if queues.contains_key(&peer) {
            return false;
        }
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let worker = (self.spawn)(peer, rx);
        queues.insert(peer, PeerQueue { tx, worker });
        true
    }

    /// Stop sending to `peer`: its worker is aborted (nothing queued for it is sent afterwards,
    /// a frame in flight is abandoned) and later sends to it fail with `UnknownPeer`. Returns
    /// false if `peer` was not known.
    pub fn remove_peer(&self, peer: NodeId) -> bool {
        let removed = self.write().remove(&peer);
        match removed {
            Some(queue) => {
                queue.worker.abort();
                true
            }
            None => false,
        }
    }

    /// Is `peer` one of the peers this outbox sends to?
    pub fn contains(&self, peer: NodeId) -> bool {
        self.read().contains_key(&peer)
    }

    /// Enqueue `batch` for `batch.to`.
    pub fn send(&self, batch: MessageBatch) -> Result<(), TransportError> {
        if batch.from != self.local {
            return Err(TransportError::Setup(format!(
                "batch from {} sent through {}'s transport",
                batch.from, self.local
            )));
        }
        let to = batch.to;
        let queues = self.read();
        let queue = queues.get(&to).ok_or(TransportError::UnknownPeer(to))?;
        queue.tx.try_send(batch).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                NetStats::bump(&self.stats.queue_full);
                TransportError::QueueFull(to)
            }
            mpsc::error::TrySendError::Closed(_) => TransportError::NotRunning,
        })
    }

    /// The peers this outbox sends to, in ascending order.
    pub fn peers(&self) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = self.read().keys().copied().collect();
        peers.sort();
        peers
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        for queue in self.write().values() {
            queue.worker.abort();
        }
    }
}

struct PeerWorker<S> {
    peer: NodeId,
    rx: mpsc::Receiver<MessageBatch>,
    sender: Arc<S>,
    stats: Arc<NetStats>,
    max_messages: usize,
    max_bytes: usize,
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

    /// Merge `first` with whatever is queued, up to the message and byte limits. Returns the frame,
    /// how many batches it holds, and a batch that did not fit.
    fn merge(&mut self, mut frame: MessageBatch) -> (MessageBatch, u64, Option<MessageBatch>) {
        let mut batches = 1;
        let mut bytes = estimated_bytes(&frame);
        while frame.messages.len() < self.max_messages && bytes < self.max_bytes {
            let Ok(next) = self.rx.try_recv() else { break };
            let next_bytes = messages_bytes(&next);
            if frame.messages.len() + next.messages.len() > self.max_messages
                || bytes.saturating_add(next_bytes) > self.max_bytes
            {
                return (frame, batches, Some(next));
            }
            frame.messages.extend(next.messages);
            bytes += next_bytes;
            batches += 1;
        }
        (frame, batches, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kommander_core::{EntryKind, Envelope, LogEntry, PartitionId, Ticket};
    use std::sync::Mutex;
    use tokio::sync::Semaphore;

    fn append(payload_bytes: usize) -> MessageBatch {
        let entry = LogEntry {
            index: 1,
            term: 1,
            kind: EntryKind::Application { auto_commit: true },
            log_type: "kv".into(),
            payload: vec![7; payload_bytes].into(),
            ticket: Ticket::default(),
        };
        let message = RaftMessage::AppendRequest {
            term: 1,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![entry],
            leader_commit: 0,
        };
        let envelope = Envelope { partition: PartitionId(1), from: NodeId(1), to: NodeId(2), message };
        MessageBatch { cluster_id: "c".into(), from: NodeId(1), to: NodeId(2), messages: vec![envelope] }
    }

    fn worker(max_messages: usize, max_bytes: usize, queued: Vec<MessageBatch>) -> PeerWorker<Recorder> {
        let (tx, rx) = mpsc::channel(queued.len().max(1));
        for batch in queued {
            tx.try_send(batch).unwrap();
        }
        PeerWorker {
            peer: NodeId(2),
            rx,
            sender: Arc::new(Recorder::default()),
            stats: Arc::default(),
            max_messages,
            max_bytes,
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(1), 1),
        }
    }

    /// Merge everything queued the way `run` does; the sizes (payload bytes) of each frame.
    fn frames(worker: &mut PeerWorker<Recorder>, first: MessageBatch) -> Vec<Vec<usize>> {
        let mut frames = Vec::new();
        let mut next = Some(first);
        while let Some(batch) = next.take().or_else(|| worker.rx.try_recv().ok()) {
            let (frame, batches, rest) = worker.merge(batch);
            assert_eq!(batches as usize, frame.messages.len());
            frames.push(frame.messages.iter().map(|e| payload_of(&e.message)).collect());
            next = rest;
        }
        frames
    }

    fn payload_of(message: &RaftMessage) -> usize {
        match message {
            RaftMessage::AppendRequest { entries, .. } => entries[0].payload.len(),
            _ => 0,
        }
    }

    #[test]
    fn estimates_cover_payloads_log_types_and_overheads() {
        let one = estimated_bytes(&append(1_000));
        assert!(one > 1_000 + 2, "{one}");
        assert!(one < 1_000 + 512, "{one}");
        let mut two = append(1_000);
        two.messages.extend(append(3_000).messages);
        assert_eq!(estimated_bytes(&two), one + messages_bytes(&append(3_000)));
        assert!(messages_bytes(&append(3_000)) >= 3_000 + 2);
    }

    #[test]
    fn frames_are_merged_up_to_the_byte_limit() {
        let limit = 2 * estimated_bytes(&append(1_000));
        let queued = vec![append(1_000), append(1_000), append(500), append(10_000), append(1_000)];
        let mut worker = worker(100, limit, queued);
        let frames = frames(&mut worker, append(1_000));
        // Two 1000-byte batches fill a frame; the one too large for any frame goes out alone.
        assert_eq!(frames, vec![vec![1_000, 1_000], vec![1_000, 500], vec![10_000], vec![1_000]]);
        for frame in &frames[..2] {
            assert!(frame.len() <= 2);
        }
    }

    #[test]
    fn the_message_limit_still_applies() {
        let queued = (0..5).map(|_| append(10)).collect();
        let mut worker = worker(2, usize::MAX, queued);
        assert_eq!(frames(&mut worker, append(10)), vec![vec![10, 10], vec![10, 10], vec![10, 10]]);
    }

    #[derive(Default)]
    struct Recorder {
        frames: Mutex<Vec<MessageBatch>>,
        /// Each frame takes one permit before it is "sent".
        gate: Option<Arc<Semaphore>>,
    }

    impl PeerSender for Recorder {
        async fn send_frame(&self, _peer: NodeId, batch: MessageBatch) -> Result<(), String> {
            if let Some(gate) = &self.gate {
                gate.acquire().await.map_err(|e| e.to_string())?.forget();
            }
            self.frames.lock().unwrap().push(batch);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_sent_after_the_outbox_is_dropped() {
        let gate = Arc::new(Semaphore::new(0));
        let sender = Arc::new(Recorder { frames: Mutex::default(), gate: Some(gate.clone()) });
        let stats = Arc::new(NetStats::default());
        let config = OutboxConfig { max_messages_per_frame: 1, ..OutboxConfig::default() };
        let outbox = Outbox::start(&Handle::current(), NodeId(1), [NodeId(2)], &config, sender.clone(), stats);
        for _ in 0..3 {
            outbox.send(append(10)).unwrap();
        }
        // The worker holds the first frame (waiting on the gate) with two more queued behind it.
        gate.add_permits(1);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sender.frames.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the first frame never went out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(outbox);
        gate.add_permits(10);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(sender.frames.lock().unwrap().len(), 1, "frames were sent after the outbox was dropped");
    }

    async fn wait_for_frames(sender: &Recorder, count: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sender.frames.lock().unwrap().len() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} frames went out",
                sender.frames.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_added_at_run_time_get_a_worker_and_removed_ones_stop() {
        let gate = Arc::new(Semaphore::new(0));
        let sender = Arc::new(Recorder { frames: Mutex::default(), gate: Some(gate.clone()) });
        let config = OutboxConfig { max_messages_per_frame: 1, ..OutboxConfig::default() };
        let outbox = Outbox::start(&Handle::current(), NodeId(1), [], &config, sender.clone(), Arc::default());
        assert_eq!(outbox.send(append(10)), Err(TransportError::UnknownPeer(NodeId(2))));
        assert!(!outbox.add_peer(NodeId(1)), "the local node is never a peer");
        assert!(outbox.add_peer(NodeId(2)));
        assert!(!outbox.add_peer(NodeId(2)), "adding twice is a no-op");
        assert_eq!(outbox.peers(), vec![NodeId(2)]);
        for _ in 0..3 {
            outbox.send(append(10)).unwrap();
        }
        gate.add_permits(1);
        wait_for_frames(&sender, 1).await;
        // Two batches are still queued (and the worker waits on the gate): removing the peer drops them.
        assert!(outbox.remove_peer(NodeId(2)));
        assert!(!outbox.remove_peer(NodeId(2)));
        assert!(!outbox.contains(NodeId(2)));
        assert_eq!(outbox.send(append(10)), Err(TransportError::UnknownPeer(NodeId(2))));
        gate.add_permits(10);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(sender.frames.lock().unwrap().len(), 1, "frames were sent to a removed peer");
        // Added again: a fresh queue and worker.
        assert!(outbox.add_peer(NodeId(2)));
        outbox.send(append(10)).unwrap();
        wait_for_frames(&sender, 2).await;
    }
}

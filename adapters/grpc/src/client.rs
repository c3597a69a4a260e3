//! The sending side: a [`PeerSender`] that turns each merged batch into a signed [`Frame`] and
//! writes it on a long-lived `Stream` call to the peer. Each peer has one lazily connected tonic
//! [`Channel`] — one HTTP/2 connection carrying the frames of all partitions — that reconnects by
//! itself after failures, and on it one open stream: frames go out in order, many in flight
//! (bounded by HTTP/2 flow control and a small hand-off queue), with no request set-up per frame.
//! A frame counts as sent once it is handed to the stream. When the stream ends (the peer refused
//! a frame, restarted or became unreachable — HTTP/2 keep-alive notices a silent one) the frames
//! still in flight are lost, as a failed frame always was (Raft retransmits), and the next frame
//! opens a new stream. Channels are added, replaced and dropped while running as peers come and go.

use crate::convert::encode_batch;
use crate::proto::raft_transport_client::RaftTransportClient;
use crate::proto::Frame;
use kommander_core::{MessageBatch, NodeId};
use kommander_net::{ClusterAuth, FrameHeader, NetStats, NonceSource, PeerSender};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Frames handed to a stream that its call has not taken yet. Small: what is in flight beyond it
/// is bounded by HTTP/2 flow control, and frames that wait here are not merged with later ones.
const STREAM_HANDOFF: usize = 2;

/// The open stream to one peer: where its frames go, and the task that runs the call.
#[derive(Debug)]
struct Link {
    frames: mpsc::Sender<Frame>,
    call: JoinHandle<()>,
}

impl Link {
    /// Open a `Stream` call on `client`; it runs until the peer ends it or the link is dropped.
    fn open(peer: NodeId, mut client: RaftTransportClient<Channel>, stats: Arc<NetStats>) -> Link {
        let (frames, queued) = mpsc::channel(STREAM_HANDOFF);
        let call = tokio::spawn(async move {
            let ended = match client.stream(ReceiverStream::new(queued)).await {
                Ok(response) => {
                    let mut acks = response.into_inner();
                    loop {
                        match acks.message().await {
                            Ok(Some(_ack)) => {}
                            Ok(None) => break None,
                            Err(status) => break Some(status),
                        }
                    }
                }
                Err(status) => Some(status),
            };
            NetStats::bump(&stats.streams_ended);
            if let Some(status) = ended {
                tracing::debug!(%peer, code = ?status.code(), message = status.message(), "stream to peer ended");
            }
        });
        Link { frames, call }
    }

    fn is_open(&self) -> bool {
        !self.frames.is_closed() && !self.call.is_finished()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.call.abort();
    }
}

/// Signs and sends frames to the peers of one node.
#[derive(Debug)]
pub(crate) struct GrpcSender {
    auth: ClusterAuth,
    nonces: NonceSource,
    clients: RwLock<HashMap<NodeId, RaftTransportClient<Channel>>>,
    /// The open stream per peer (only its outbox worker sends to a peer, one frame at a time).
    links: Mutex<HashMap<NodeId, Link>>,
    /// Counters (streams that ended).
    stats: Arc<NetStats>,
}

impl GrpcSender {
    /// A sender with one lazy channel per endpoint. Must run inside the tokio runtime the channels
    /// will use (a lazy channel spawns its worker there).
    pub(crate) fn new(auth: ClusterAuth, endpoints: &BTreeMap<NodeId, Endpoint>, stats: Arc<NetStats>) -> Self {
        let clients = endpoints.iter().map(|(&peer, endpoint)| (peer, Self::client(endpoint))).collect();
        GrpcSender { auth, nonces: NonceSource::new(), clients: RwLock::new(clients), links: Mutex::default(), stats }
    }

    fn client(endpoint: &Endpoint) -> RaftTransportClient<Channel> {
        RaftTransportClient::new(endpoint.connect_lazy()).max_encoding_message_size(usize::MAX)
    }

    /// Send to `peer` over a new lazy channel to `endpoint` from the next frame on (replacing any
    /// channel it had). Must run inside the channels' tokio runtime, like [`GrpcSender::new`].
    pub(crate) fn set_peer(&self, peer: NodeId, endpoint: &Endpoint) {
        let client = Self::client(endpoint);
        self.clients.write().unwrap_or_else(PoisonError::into_inner).insert(peer, client);
        self.links.lock().unwrap_or_else(PoisonError::into_inner).remove(&peer);
    }

    /// Drop `peer`'s channel (its connection closes once no frame in flight uses it).
    pub(crate) fn remove_peer(&self, peer: NodeId) {
        self.clients.write().unwrap_or_else(PoisonError::into_inner).remove(&peer);
        self.links.lock().unwrap_or_else(PoisonError::into_inner).remove(&peer);
    }

    /// Where `peer`'s next frame goes: its open stream, or a new one (runs inside the runtime).
    /// The first frame after a stream ended fails instead, so the outbox backs off before the
    /// next attempt: a dead or refusing peer costs one stream per back-off, not one per frame.
    fn link(&self, peer: NodeId) -> Result<mpsc::Sender<Frame>, String> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        match links.get(&peer) {
            Some(link) if link.is_open() => return Ok(link.frames.clone()),
            Some(_) => {
                links.remove(&peer);
                return Err(format!("the stream to {peer} ended"));
            }
            None => {}
        }
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        let client = clients.get(&peer).cloned().ok_or_else(|| format!("no channel to {peer}"))?;
        let link = Link::open(peer, client, self.stats.clone());
        let frames = link.frames.clone();
        links.insert(peer, link);
        Ok(frames)
    }

    /// The signed frame carrying `batch`.
    fn frame(&self, batch: &MessageBatch) -> Frame {
        let body = encode_batch(batch);
        let header = FrameHeader {
            cluster_id: self.auth.cluster_id().to_owned(),
            from: batch.from,
            to: batch.to,
            timestamp_ms: kommander_net::unix_millis(),
            nonce: self.nonces.next(),
        };
        let signature = self.auth.sign(&header, &body).to_vec();
        Frame {
            cluster_id: header.cluster_id,
            from: header.from.0,
            to: header.to.0,
            timestamp_ms: header.timestamp_ms,
            nonce: header.nonce,
            signature,
            batch: body,
        }
    }
}

impl PeerSender for GrpcSender {
    fn send_frame(&self, peer: NodeId, batch: MessageBatch) -> impl Future<Output = Result<(), String>> + Send {
        let link = self.link(peer).map(|link| (link, self.frame(&batch)));
        async move {
            let (link, frame) = link?;
            link.send(frame).await.map_err(|_| format!("the stream to {peer} ended"))
        }
    }
}

//! The sending side: a [`PeerSender`] that turns each merged batch into a signed [`Frame`] and
//! calls the peer's `Deliver`. Each peer has one lazily connected tonic [`Channel`] — one HTTP/2
//! connection carrying the frames of all partitions — that reconnects by itself after failures.
//! Channels are added, replaced and dropped while running as peers come and go.

use crate::convert::encode_batch;
use crate::proto::raft_transport_client::RaftTransportClient;
use crate::proto::Frame;
use kommander_core::{MessageBatch, NodeId};
use kommander_net::{ClusterAuth, FrameHeader, NonceSource, PeerSender};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{PoisonError, RwLock};
use tonic::transport::{Channel, Endpoint};

/// Signs and sends frames to the peers of one node.
#[derive(Debug)]
pub(crate) struct GrpcSender {
    auth: ClusterAuth,
    nonces: NonceSource,
    clients: RwLock<HashMap<NodeId, RaftTransportClient<Channel>>>,
}

impl GrpcSender {
    /// A sender with one lazy channel per endpoint. Must run inside the tokio runtime the channels
    /// will use (a lazy channel spawns its worker there).
    pub(crate) fn new(auth: ClusterAuth, endpoints: &BTreeMap<NodeId, Endpoint>) -> Self {
        let clients = endpoints.iter().map(|(&peer, endpoint)| (peer, Self::client(endpoint))).collect();
        GrpcSender { auth, nonces: NonceSource::new(), clients: RwLock::new(clients) }
    }

    fn client(endpoint: &Endpoint) -> RaftTransportClient<Channel> {
        RaftTransportClient::new(endpoint.connect_lazy()).max_encoding_message_size(usize::MAX)
    }

    /// Send to `peer` over a new lazy channel to `endpoint` from the next frame on (replacing any
    /// channel it had). Must run inside the channels' tokio runtime, like [`GrpcSender::new`].
    pub(crate) fn set_peer(&self, peer: NodeId, endpoint: &Endpoint) {
        let client = Self::client(endpoint);
        self.clients.write().unwrap_or_else(PoisonError::into_inner).insert(peer, client);
    }

    /// Drop `peer`'s channel (its connection closes once no frame in flight uses it).
    pub(crate) fn remove_peer(&self, peer: NodeId) {
        self.clients.write().unwrap_or_else(PoisonError::into_inner).remove(&peer);
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
        let client = self.clients.read().unwrap_or_else(PoisonError::into_inner).get(&peer).cloned();
        let frame = client.as_ref().map(|_| self.frame(&batch));
        async move {
            let (Some(mut client), Some(frame)) = (client, frame) else {
                return Err(format!("no channel to {peer}"));
            };
            match client.deliver(frame).await {
                Ok(_) => Ok(()),
                Err(status) => Err(format!("{peer} answered {:?}: {}", status.code(), status.message())),
            }
        }
    }
}

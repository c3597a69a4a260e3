//! Settings of a [`crate::GrpcTransport`].

use crate::tls::GrpcTls;
use kommander_core::NodeId;
use kommander_net::{OutboxConfig, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_INFLIGHT_BYTES};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Configuration of one node's gRPC transport.
#[derive(Clone)]
pub struct GrpcConfig {
    /// This node.
    pub node: NodeId,
    /// Cluster id every frame carries and is checked against.
    pub cluster_id: String,
    /// Shared secret that signs and authenticates frames (the same on every node of the cluster;
    /// at least [`kommander_net::MIN_SECRET_BYTES`], checked by [`crate::GrpcTransport::bind`]).
    pub secret: Vec<u8>,
    /// Address the server listens on. Default `127.0.0.1:0`: loopback only, any free port.
    pub listen: SocketAddr,
    /// Peers and their URIs, e.g. `"http://10.0.0.2:7400"` (or `"https://node2:7400"` with
    /// [`GrpcConfig::tls`]'s CA certificates).
    pub peers: BTreeMap<NodeId, String>,
    /// TLS of the listener and of the calls to `https://` peers. Default: none.
    pub tls: GrpcTls,
    /// Largest encoded batch accepted in one frame. Default
    /// [`kommander_net::DEFAULT_MAX_BODY_BYTES`] (8 MiB + 256 KiB: one largest entry).
    pub max_body_bytes: usize,
    /// Bytes of all frames being received or handled at once. Every call reserves one largest frame
    /// (`max_body_bytes`) before tonic reads it, so this bounds concurrent calls node-wide to
    /// `max_inflight_bytes / max_body_bytes`; a call that finds no room within
    /// [`kommander_net::DEFAULT_BUDGET_WAIT`] gets `Unavailable`. Default
    /// [`kommander_net::DEFAULT_MAX_INFLIGHT_BYTES`] (16 frames).
    pub max_inflight_bytes: usize,
    /// HTTP/2 streams (concurrent calls) one connection may open. Default 64.
    pub max_concurrent_streams: u32,
    /// Calls of one connection handled at once; the others wait (unread, within HTTP/2 flow
    /// control). Default 16.
    pub concurrency_limit_per_connection: usize,
    /// Time a frame may take to be answered; also the server's limit for handling one call
    /// (reading, waiting for budget, delivering). Default 2 s.
    pub request_timeout: Duration,
    /// Time a connection attempt may take. Default 1 s.
    pub connect_timeout: Duration,
    /// Accepted clock difference for frame timestamps (replay window). Default 30 s.
    pub replay_window: Duration,
    /// Outbound queue and back-off settings.
    pub outbox: OutboxConfig,
}

impl GrpcConfig {
    /// A configuration with the defaults, no peers.
    pub fn new(node: NodeId, cluster_id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        GrpcConfig {
            node,
            cluster_id: cluster_id.into(),
            secret: secret.into(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            peers: BTreeMap::new(),
            tls: GrpcTls::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            max_concurrent_streams: 64,
            concurrency_limit_per_connection: 16,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            replay_window: Duration::from_secs(30),
            outbox: OutboxConfig::default(),
        }
    }

    /// Add (or replace) a peer reachable at `uri`.
    pub fn with_peer(mut self, node: NodeId, uri: impl Into<String>) -> Self {
        self.peers.insert(node, uri.into());
        self
    }
}

impl std::fmt::Debug for GrpcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcConfig")
            .field("node", &self.node)
            .field("cluster_id", &self.cluster_id)
            .field("secret", &"<redacted>")
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("tls", &self.tls)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_inflight_bytes", &self.max_inflight_bytes)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field("concurrency_limit_per_connection", &self.concurrency_limit_per_connection)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("replay_window", &self.replay_window)
            .field("outbox", &self.outbox)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback_and_hide_the_secret() {
        let config = GrpcConfig::new(NodeId(1), "c", b"top-secret".to_vec()).with_peer(NodeId(2), "http://127.0.0.1:1");
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert!(config.max_body_bytes < 9 * 1024 * 1024);
        assert!(config.max_body_bytes >= kommander_core::MessageLimits::default().max_payload_bytes + 1024);
        assert!(config.outbox.max_frame_bytes < config.max_body_bytes);
        assert_eq!((config.max_concurrent_streams, config.concurrency_limit_per_connection), (64, 16));
        assert_eq!(config.peers.len(), 1);
        assert!(!format!("{config:?}").contains("top-secret"));
    }
}

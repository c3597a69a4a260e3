//! Settings of a [`crate::GrpcTransport`].

use kommander_core::NodeId;
use kommander_net::OutboxConfig;
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
    /// Shared secret that signs and authenticates frames (the same on every node of the cluster).
    pub secret: Vec<u8>,
    /// Address the server listens on. Default `127.0.0.1:0`: loopback only, any free port.
    pub listen: SocketAddr,
    /// Peers and their URIs, e.g. `"http://10.0.0.2:7400"`.
    pub peers: BTreeMap<NodeId, String>,
    /// Largest encoded batch accepted in one frame. Default 16 MiB.
    pub max_body_bytes: usize,
    /// Time a frame may take to be answered. Default 2 s.
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
            max_body_bytes: 16 * 1024 * 1024,
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
            .field("max_body_bytes", &self.max_body_bytes)
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
        assert_eq!(config.max_body_bytes, 16 * 1024 * 1024);
        assert_eq!(config.peers.len(), 1);
        assert!(!format!("{config:?}").contains("top-secret"));
    }
}

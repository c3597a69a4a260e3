//! `--pin-peers`: the node reaches its `--peer` nodes at the URLs given on the command line even
//! when the cluster's roster records other addresses for them (their `--advertise`). For nodes
//! that reach each other through something in between — a sidecar or NAT with per-node
//! addresses, or the fault-injecting proxies of the nemesis tests — where the address a node
//! advertises is not the one every other node must dial.

use kommander::core::{InboundSink, MessageBatch, NodeId, Transport, TransportError};
use std::collections::BTreeSet;
use std::sync::Arc;

/// A transport whose pinned peers keep the addresses it was configured with.
pub struct PinnedPeers {
    inner: Arc<dyn Transport>,
    pinned: BTreeSet<NodeId>,
}

impl PinnedPeers {
    /// Wrap `inner`; roster addresses of `pinned` nodes are ignored.
    pub fn new(inner: Arc<dyn Transport>, pinned: impl IntoIterator<Item = NodeId>) -> Self {
        PinnedPeers { inner, pinned: pinned.into_iter().collect() }
    }
}

impl Transport for PinnedPeers {
    fn start(&self, inbox: Arc<dyn InboundSink>) -> Result<(), TransportError> {
        self.inner.start(inbox)
    }
    fn send(&self, batch: MessageBatch) -> Result<(), TransportError> {
        self.inner.send(batch)
    }
    fn stop(&self) {
        self.inner.stop()
    }
    fn cluster_id(&self) -> Option<String> {
        self.inner.cluster_id()
    }
    fn auth_rejections(&self) -> (u64, Option<String>) {
        self.inner.auth_rejections()
    }
    fn add_peer(&self, node: NodeId, address: &str) -> Result<(), TransportError> {
        if self.pinned.contains(&node) {
            tracing::debug!(%node, %address, "pinned peer: the roster's address is not used");
            return Ok(());
        }
        self.inner.add_peer(node, address)
    }
    fn remove_peer(&self, node: NodeId) {
        self.inner.remove_peer(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the addresses it is told.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(NodeId, String)>>);

    impl Transport for Recorder {
        fn start(&self, _: Arc<dyn InboundSink>) -> Result<(), TransportError> {
            Ok(())
        }
        fn send(&self, _: MessageBatch) -> Result<(), TransportError> {
            Ok(())
        }
        fn stop(&self) {}
        fn add_peer(&self, node: NodeId, address: &str) -> Result<(), TransportError> {
            self.0.lock().unwrap().push((node, address.to_owned()));
            Ok(())
        }
    }

    #[test]
    fn roster_addresses_of_pinned_peers_are_ignored_and_others_pass() {
        let recorder = Arc::new(Recorder::default());
        let pinned = PinnedPeers::new(recorder.clone(), [NodeId(2)]);
        pinned.add_peer(NodeId(2), "http://b").unwrap();
        pinned.add_peer(NodeId(3), "http://c").unwrap();
        assert_eq!(*recorder.0.lock().unwrap(), vec![(NodeId(3), "http://c".to_owned())]);
    }
}

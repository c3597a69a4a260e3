//! Node-level failure detection, sans-IO: one detector per node, whatever the partition count.
//!
//! Any frame from a peer (a batch of any partitions' messages, or an empty keep-alive batch)
//! counts as hearing from it. Every [`LivenessConfig::probe_interval_ticks`] ticks the driver
//! sends a keep-alive to each peer it sent nothing to in that interval, so an idle pair exchanges
//! one frame per interval each way. A peer silent for [`LivenessConfig::down_after_ticks`] ticks
//! is reported down; the first frame from it reports it up again. The driver hands each change
//! to every partition it hosts ([`crate::PartitionStateMachine::set_peer_alive`]): quiet
//! followers whose leader's node went down wake and elect, and leaders stop waiting for followers
//! on dead nodes before they go quiet.

use crate::ids::NodeId;
use std::collections::BTreeMap;

/// Detector timing, in the driver's ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessConfig {
    /// Send a keep-alive to a peer that was sent nothing for this many ticks.
    pub probe_interval_ticks: u32,
    /// Report a peer down after this many ticks without a frame from it.
    pub down_after_ticks: u32,
}

impl Default for LivenessConfig {
    /// With a 50 ms tick: a keep-alive every 100 ms, down after 500 ms of silence.
    fn default() -> Self {
        LivenessConfig { probe_interval_ticks: 2, down_after_ticks: 10 }
    }
}

/// A peer's liveness changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LivenessChange {
    /// Silent for too long.
    Down(NodeId),
    /// Heard from again.
    Up(NodeId),
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    /// Ticks since a frame came from it.
    silent: u32,
    /// Ticks since a frame went to it.
    unsent: u32,
    alive: bool,
}

/// What one tick asks the driver to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LivenessTick {
    /// Send these peers a keep-alive.
    pub probes: Vec<NodeId>,
    /// Report these changes to the hosted partitions.
    pub changes: Vec<LivenessChange>,
}

/// The failure detector of one node.
#[derive(Clone, Debug)]
pub struct NodeLiveness {
    config: LivenessConfig,
    peers: BTreeMap<NodeId, Peer>,
}

impl NodeLiveness {
    /// A detector with no peers.
    pub fn new(config: LivenessConfig) -> Self {
        NodeLiveness { config, peers: BTreeMap::new() }
    }

    /// The peers to watch: new ones start alive, missing ones are forgotten.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = NodeId>) {
        let mut next = BTreeMap::new();
        for node in peers {
            let peer = self.peers.get(&node).copied().unwrap_or(Peer { silent: 0, unsent: 0, alive: true });
            next.insert(node, peer);
        }
        self.peers = next;
    }

    /// The watched peers.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }

    /// Is `node` considered alive (unknown nodes are)?
    pub fn is_alive(&self, node: NodeId) -> bool {
        self.peers.get(&node).is_none_or(|p| p.alive)
    }

    /// A frame came from `node`: it is alive (reported up if it was down).
    pub fn heard(&mut self, node: NodeId) -> Option<LivenessChange> {
        let peer = self.peers.get_mut(&node)?;
        peer.silent = 0;
        (!std::mem::replace(&mut peer.alive, true)).then_some(LivenessChange::Up(node))
    }

    /// A frame went to `node` (it needs no keep-alive this interval).
    pub fn sent(&mut self, node: NodeId) {
        if let Some(peer) = self.peers.get_mut(&node) {
            peer.unsent = 0;
        }
    }

    /// Advance one tick: the keep-alives to send and the peers that just went silent for too long.
    pub fn tick(&mut self) -> LivenessTick {
        let mut out = LivenessTick::default();
        for (&node, peer) in self.peers.iter_mut() {
            peer.silent = peer.silent.saturating_add(1);
            peer.unsent = peer.unsent.saturating_add(1);
            if peer.unsent >= self.config.probe_interval_ticks {
                peer.unsent = 0;
                out.probes.push(node);
            }
            if peer.alive && peer.silent >= self.config.down_after_ticks {
                peer.alive = false;
                out.changes.push(LivenessChange::Down(node));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> NodeLiveness {
        let mut d = NodeLiveness::new(LivenessConfig { probe_interval_ticks: 2, down_after_ticks: 5 });
        d.set_peers([NodeId(2), NodeId(3)]);
        d
    }

    #[test]
    fn an_idle_pair_exchanges_one_probe_per_interval() {
        let mut d = detector();
        let probes: Vec<usize> = (0..6).map(|_| d.tick().probes.len()).collect();
        assert_eq!(probes, vec![0, 2, 0, 2, 0, 2]);
        d.sent(NodeId(2));
        assert_eq!(d.tick().probes, Vec::<NodeId>::new());
        assert_eq!(d.tick().probes, vec![NodeId(2), NodeId(3)]);
    }

    #[test]
    fn a_silent_peer_goes_down_once_and_comes_back_on_its_first_frame() {
        let mut d = detector();
        let mut changes = Vec::new();
        for _ in 0..8 {
            d.heard(NodeId(3));
            changes.extend(d.tick().changes);
        }
        assert_eq!(changes, vec![LivenessChange::Down(NodeId(2))]);
        assert!(!d.is_alive(NodeId(2)) && d.is_alive(NodeId(3)));
        assert_eq!(d.heard(NodeId(2)), Some(LivenessChange::Up(NodeId(2))));
        assert_eq!(d.heard(NodeId(2)), None);
        assert_eq!(d.heard(NodeId(9)), None, "unknown nodes are not tracked");
    }

    #[test]
    fn forgotten_peers_are_not_reported() {
        let mut d = detector();
        d.set_peers([NodeId(3)]);
        let changes: Vec<_> = (0..6).flat_map(|_| d.tick().changes).collect();
        assert_eq!(changes, vec![LivenessChange::Down(NodeId(3))]);
    }
}

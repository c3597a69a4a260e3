//! Peers added and removed at run time (dynamic membership): a transport started without peers
//! reaches a peer once told its address, stops sending to it once told to forget it, remembers
//! peers added before `start` (and across a restart), and moves a known peer to a new address.

mod common;

use common::{batch, uri, vote, wait_until, RecordingSink, CLUSTER, SECRET};
use kommander_core::transport::{Transport, TransportError};
use kommander_core::{MessageBatch, NodeId};
use kommander_net::NetStats;
use kommander_transport_grpc::{GrpcConfig, GrpcTransport};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn config(node: u64) -> GrpcConfig {
    let mut config = GrpcConfig::new(NodeId(node), CLUSTER, SECRET.to_vec());
    config.outbox.backoff_min = Duration::from_millis(10);
    config.outbox.backoff_max = Duration::from_millis(100);
    config
}

fn vote_batch(term: u64) -> MessageBatch {
    batch(NodeId(1), NodeId(2), vec![vote(1, NodeId(1), NodeId(2), term)])
}

fn terms(sink: &RecordingSink) -> Vec<u64> {
    sink.envelopes_from(NodeId(1)).iter().map(|e| e.message.term()).collect()
}

/// A started node 2 and what it receives.
fn receiver() -> (GrpcTransport, std::sync::Arc<RecordingSink>) {
    let transport = GrpcTransport::bind(config(2)).unwrap();
    let sink = RecordingSink::new(NodeId(2), [1]);
    transport.start(sink.clone()).unwrap();
    (transport, sink)
}

#[test]
fn a_peer_added_at_run_time_receives_batches_until_removed() {
    let (receiver, sink) = receiver();
    let sender = GrpcTransport::bind(config(1)).unwrap();
    sender.start(RecordingSink::new(NodeId(1), [1])).unwrap();
    assert_eq!(sender.send(vote_batch(1)), Err(TransportError::UnknownPeer(NodeId(2))));

    let address = uri(receiver.local_addr());
    sender.add_peer(NodeId(2), &address).unwrap();
    sender.add_peer(NodeId(2), &address).unwrap(); // idempotent
    sender.add_peer(NodeId(1), "http://ignored.invalid:1").unwrap(); // the local node: a no-op
    assert_eq!(sender.peers().into_iter().collect::<Vec<_>>(), vec![(NodeId(2), address)]);
    for term in 2..=4 {
        sender.send(vote_batch(term)).unwrap();
    }
    assert!(wait_until(WAIT, || terms(&sink) == vec![2, 3, 4]), "got {:?}", terms(&sink));
    // A batch counts as sent once its answer is back (after the receiver recorded it): wait for
    // that before removing the peer, whose worker would otherwise be stopped with it in flight.
    assert!(wait_until(WAIT, || NetStats::get(&sender.stats().batches_sent) == 3));

    sender.remove_peer(NodeId(2));
    sender.remove_peer(NodeId(2)); // idempotent
    assert_eq!(sender.send(vote_batch(5)), Err(TransportError::UnknownPeer(NodeId(2))));
    assert!(sender.peers().is_empty());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(terms(&sink), vec![2, 3, 4], "a removed peer received a batch");
    assert_eq!(NetStats::get(&sender.stats().batches_sent), 3, "nothing sent after the removal");
    sender.stop();
    receiver.stop();
}

#[test]
fn peers_added_before_start_are_remembered_across_restarts() {
    let (receiver, sink) = receiver();
    let sender = GrpcTransport::bind(config(1)).unwrap();
    sender.add_peer(NodeId(2), &uri(receiver.local_addr())).unwrap();
    assert_eq!(sender.send(vote_batch(1)), Err(TransportError::NotRunning));
    sender.start(RecordingSink::new(NodeId(1), [1])).unwrap();
    sender.send(vote_batch(2)).unwrap();
    assert!(wait_until(WAIT, || terms(&sink) == vec![2]), "got {:?}", terms(&sink));

    sender.stop();
    sender.start(RecordingSink::new(NodeId(1), [1])).unwrap();
    sender.send(vote_batch(3)).unwrap();
    assert!(wait_until(WAIT, || terms(&sink) == vec![2, 3]), "got {:?}", terms(&sink));

    // Removed while stopped: not started again.
    sender.stop();
    sender.remove_peer(NodeId(2));
    sender.start(RecordingSink::new(NodeId(1), [1])).unwrap();
    assert_eq!(sender.send(vote_batch(4)), Err(TransportError::UnknownPeer(NodeId(2))));
    sender.stop();
    receiver.stop();
}

#[test]
fn a_known_peer_moves_to_its_new_address() {
    let (old, old_sink) = receiver();
    let sender = GrpcTransport::bind(config(1).with_peer(NodeId(2), uri(old.local_addr()))).unwrap();
    sender.start(RecordingSink::new(NodeId(1), [1])).unwrap();
    sender.send(vote_batch(1)).unwrap();
    assert!(wait_until(WAIT, || terms(&old_sink) == vec![1]));
    // Node 2 comes back on another port; the old one is gone.
    drop(old);

    let (new, new_sink) = receiver();
    sender.add_peer(NodeId(2), &uri(new.local_addr())).unwrap();
    sender.send(vote_batch(2)).unwrap();
    assert!(wait_until(WAIT, || terms(&new_sink) == vec![2]), "got {:?}", terms(&new_sink));
    assert_eq!(terms(&old_sink), vec![1]);
    sender.stop();
    new.stop();
}

#[test]
fn malformed_addresses_are_refused() {
    let transport = GrpcTransport::bind(config(1)).unwrap();
    for bad in ["", "127.0.0.1:7001", "https://h:1", "ftp://h:1", "http://"] {
        match transport.add_peer(NodeId(2), bad) {
            Err(TransportError::Setup(why)) => assert!(why.contains("peer n2"), "{why}"),
            other => panic!("address {bad:?} accepted: {other:?}"),
        }
    }
    assert!(transport.peers().is_empty());
}

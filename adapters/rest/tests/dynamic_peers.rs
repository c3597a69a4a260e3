//! Peers added and removed at run time (dynamic membership): a transport started without peers
//! reaches a peer once told its address, stops sending to it once told to forget it, remembers
//! peers added before `start` (and across a restart), and moves a known peer to a new address.

mod peers;

use actix_web::dev::ServerHandle;
use kommander_core::transport::{Transport, TransportError};
use kommander_core::NodeId;
use kommander_transport_rest::{serve, RestTransport, BATCH_PATH};
use peers::{config, until, vote, Recorder};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// A started receiving transport served on a loopback port, with what it received.
fn receiver(node: u64) -> (RestTransport, ServerHandle, String, Arc<Recorder>) {
    let transport = RestTransport::new(config(node)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = serve(&transport, listener).unwrap();
    let handle = server.handle();
    actix_rt::spawn(server);
    let inbox = Arc::new(Recorder::default());
    transport.start(inbox.clone()).unwrap();
    (transport, handle, base, inbox)
}

#[actix_rt::test]
async fn a_peer_added_at_run_time_receives_batches_until_removed() {
    let (receiver, server, base, inbox) = receiver(2);
    let sender = RestTransport::new(config(1)).unwrap();
    sender.start(Arc::new(Recorder::default())).unwrap();
    assert_eq!(sender.send(vote(1, 2, 1)), Err(TransportError::UnknownPeer(NodeId(2))));

    sender.add_peer(NodeId(2), &base).unwrap();
    sender.add_peer(NodeId(2), &base).unwrap(); // idempotent
    sender.add_peer(NodeId(1), "http://ignored.invalid:1").unwrap(); // the local node: a no-op
    assert_eq!(sender.peers().keys().copied().collect::<Vec<_>>(), vec![NodeId(2)]);
    for term in 2..=4 {
        sender.send(vote(1, 2, term)).unwrap();
    }
    until("the batches to the added peer", || inbox.terms() == vec![2, 3, 4]).await;
    // A batch counts as sent once its answer is back (after the receiver recorded it): wait for
    // that before removing the peer, whose worker would otherwise be stopped with it in flight.
    until("the answers to the added peer's batches", || sender.stats().batches_sent.load(Ordering::Relaxed) == 3).await;

    sender.remove_peer(NodeId(2));
    sender.remove_peer(NodeId(2)); // idempotent
    assert_eq!(sender.send(vote(1, 2, 5)), Err(TransportError::UnknownPeer(NodeId(2))));
    assert!(sender.peers().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(inbox.terms(), vec![2, 3, 4], "a removed peer received a batch");
    assert_eq!(sender.stats().batches_sent.load(Ordering::Relaxed), 3, "nothing sent after the removal");

    sender.stop();
    receiver.stop();
    server.stop(false).await;
}

#[actix_rt::test]
async fn peers_added_before_start_are_remembered_across_restarts() {
    let (receiver, server, base, inbox) = receiver(2);
    let sender = RestTransport::new(config(1)).unwrap();
    sender.add_peer(NodeId(2), &format!("{base}/")).unwrap();
    assert_eq!(sender.send(vote(1, 2, 1)), Err(TransportError::NotRunning));
    sender.start(Arc::new(Recorder::default())).unwrap();
    sender.send(vote(1, 2, 2)).unwrap();
    until("the batch to the peer added before start", || inbox.terms() == vec![2]).await;

    sender.stop();
    sender.start(Arc::new(Recorder::default())).unwrap();
    sender.send(vote(1, 2, 3)).unwrap();
    until("the batch after the restart", || inbox.terms() == vec![2, 3]).await;

    // Removed while stopped: not started again.
    sender.stop();
    sender.remove_peer(NodeId(2));
    sender.start(Arc::new(Recorder::default())).unwrap();
    assert_eq!(sender.send(vote(1, 2, 4)), Err(TransportError::UnknownPeer(NodeId(2))));
    sender.stop();
    receiver.stop();
    server.stop(false).await;
}

#[actix_rt::test]
async fn a_known_peer_moves_to_its_new_address() {
    // Node 2 "restarts" on another port: the old address stops answering.
    let (old, old_server, old_base, old_inbox) = receiver(2);
    let sender = RestTransport::new(config(1).peer(NodeId(2), old_base.clone())).unwrap();
    sender.start(Arc::new(Recorder::default())).unwrap();
    sender.send(vote(1, 2, 1)).unwrap();
    until("the batch to the old address", || old_inbox.terms() == vec![1]).await;
    old.stop();
    old_server.stop(false).await;

    let (new, new_server, new_base, new_inbox) = receiver(2);
    sender.add_peer(NodeId(2), &new_base).unwrap();
    assert_eq!(sender.peers()[&NodeId(2)], format!("{new_base}{BATCH_PATH}"));
    sender.send(vote(1, 2, 2)).unwrap();
    until("the batch to the new address", || new_inbox.terms() == vec![2]).await;
    assert_eq!(old_inbox.terms(), vec![1]);
    sender.stop();
    new.stop();
    new_server.stop(false).await;
}

#[test]
fn malformed_addresses_are_refused() {
    let transport = RestTransport::new(config(1)).unwrap();
    for bad in ["", "127.0.0.1:7001", "ftp://h:1", "http://", "http://h:1/?q=1"] {
        match transport.add_peer(NodeId(2), bad) {
            Err(TransportError::Setup(why)) => assert!(why.contains("peer n2"), "{why}"),
            other => panic!("address {bad:?} accepted: {other:?}"),
        }
    }
    assert!(transport.peers().is_empty());
    transport.add_peer(NodeId(2), "http://h:1/prefix").unwrap();
    assert_eq!(transport.peers()[&NodeId(2)], format!("http://h:1/prefix{BATCH_PATH}"));
}

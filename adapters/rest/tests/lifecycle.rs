//! The REST transport's lifecycle: secrets it refuses, stop → start → exchange again (a restarted
//! `RaftManager` reuses its transport), and that nothing queued before a stop is sent after it.

mod peers;

use actix_web::dev::ServerHandle;
use kommander_core::transport::{Transport, TransportError};
use kommander_core::NodeId;
use kommander_transport_rest::{serve, RestConfig, RestTransport};
use peers::{config, until, vote, Recorder, CLUSTER};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// A receiving transport served on a loopback port.
fn receiver(node: u64) -> (RestTransport, ServerHandle, String) {
    let transport = RestTransport::new(config(node)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = serve(&transport, listener).unwrap();
    let handle = server.handle();
    actix_rt::spawn(server);
    (transport, handle, base)
}

#[test]
fn empty_and_short_secrets_are_refused() {
    for secret in [&b""[..], b"1234567"] {
        match RestTransport::new(RestConfig::new(NodeId(1), CLUSTER, secret.to_vec())) {
            Err(TransportError::Setup(why)) => assert!(why.contains("secret"), "{why}"),
            other => panic!("secret {secret:?} accepted: {other:?}"),
        }
    }
    assert!(RestTransport::new(RestConfig::new(NodeId(1), CLUSTER, b"12345678".to_vec())).is_ok());
}

#[actix_rt::test]
async fn a_stopped_transport_starts_again_and_exchanges() {
    let (receiver, server, base) = receiver(2);
    let sender = RestTransport::new(config(1).peer(NodeId(2), base)).unwrap();
    let first = Arc::new(Recorder::default());
    receiver.start(first.clone()).unwrap();
    sender.start(Arc::new(Recorder::default())).unwrap();
    sender.send(vote(1, 2, 1)).unwrap();
    until("the first batch", || first.terms() == vec![1]).await;

    receiver.stop();
    sender.stop();
    assert_eq!(sender.send(vote(1, 2, 2)), Err(TransportError::NotRunning));
    let second = Arc::new(Recorder::default());
    receiver.start(second.clone()).unwrap();
    sender.start(Arc::new(Recorder::default())).unwrap();
    for term in 3..=5 {
        sender.send(vote(1, 2, term)).unwrap();
    }
    until("the batches after the restart", || second.terms() == vec![3, 4, 5]).await;
    assert_eq!(first.terms(), vec![1], "the first inbox gets nothing after the stop");
    sender.stop();
    receiver.stop();
    server.stop(false).await;
}

#[actix_rt::test]
async fn nothing_queued_before_stop_is_sent_after_it() {
    // A peer that accepts connections into its backlog and never answers: each frame times out.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = config(1).peer(NodeId(2), format!("http://{}", silent.local_addr().unwrap()));
    config.request_timeout = Duration::from_millis(200);
    config.outbox.max_messages_per_frame = 1;
    let sender = RestTransport::new(config).unwrap();
    sender.start(Arc::new(Recorder::default())).unwrap();
    for term in 1..=5 {
        sender.send(vote(1, 2, term)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    sender.stop();
    // On a loaded machine the first frame may already have timed out before `stop` ran; what
    // matters is that nothing is attempted after it. Before the fix the old worker went on: one
    // failed frame per 200 ms timeout.
    let stats = sender.stats();
    let at_stop = stats.frames_failed.load(Ordering::Relaxed);
    assert!(at_stop <= 1, "{at_stop} frames failed before the stop");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(stats.frames_failed.load(Ordering::Relaxed), at_stop, "frames were attempted after stop");
    assert_eq!(stats.frames_sent.load(Ordering::Relaxed), 0);

    // A restart runs fresh workers only: exactly the new batch is attempted.
    sender.start(Arc::new(Recorder::default())).unwrap();
    sender.send(vote(1, 2, 6)).unwrap();
    until("the new frame to time out", || stats.frames_failed.load(Ordering::Relaxed) == at_stop + 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stats.frames_failed.load(Ordering::Relaxed), at_stop + 1);
    sender.stop();
    drop(silent);
}

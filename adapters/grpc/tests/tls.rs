//! TLS between gRPC transports ([`GrpcTls`]): a CA and a certificate for `127.0.0.1` made at test
//! time. Frames reach a TLS listener from a peer that trusts its CA; a peer trusting another CA,
//! or speaking plaintext to it, gets nothing through; settings that cannot work are refused when
//! the transport is bound.

mod common;

use common::{batch, vote, wait_until, RecordingSink, CLUSTER, SECRET};
use kommander_core::transport::{Transport, TransportError};
use kommander_core::NodeId;
use kommander_net::NetStats;
use kommander_transport_grpc::{GrpcConfig, GrpcTls, GrpcTransport, TlsIdentity};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// A CA, and a certificate for `localhost` and `127.0.0.1` it signed with its key (PEM).
struct Pki {
    ca: Vec<u8>,
    identity: TlsIdentity,
}

fn make_pki() -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let identity = TlsIdentity { cert_pem: cert.pem().into_bytes(), key_pem: key.serialize_pem().into_bytes() };
    Pki { ca: ca.pem().into_bytes(), identity }
}

fn config(node: u64) -> GrpcConfig {
    let mut config = GrpcConfig::new(NodeId(node), CLUSTER, SECRET.to_vec());
    config.outbox.backoff_min = Duration::from_millis(10);
    config.outbox.backoff_max = Duration::from_millis(100);
    config
}

/// Node 2 serving TLS with `pki`'s certificate, started, and what it receives.
fn tls_receiver(pki: &Pki) -> (GrpcTransport, std::sync::Arc<RecordingSink>) {
    let mut config = config(2);
    config.tls = GrpcTls { identity: Some(pki.identity.clone()), ca_pem: Some(pki.ca.clone()) };
    let transport = GrpcTransport::bind(config).unwrap();
    let sink = RecordingSink::new(NodeId(2), [1]);
    transport.start(sink.clone()).unwrap();
    (transport, sink)
}

/// Node `node` sending to node 2 at `uri`, trusting `ca`, started.
fn sender(node: u64, uri: String, ca: Option<Vec<u8>>) -> GrpcTransport {
    let mut config = config(node).with_peer(NodeId(2), uri);
    config.tls = GrpcTls { identity: None, ca_pem: ca };
    let transport = GrpcTransport::bind(config).unwrap();
    transport.start(RecordingSink::new(NodeId(node), [1])).unwrap();
    transport
}

fn terms_from(sink: &RecordingSink, node: u64) -> Vec<u64> {
    sink.envelopes_from(NodeId(node)).iter().map(|e| e.message.term()).collect()
}

#[test]
fn frames_reach_a_tls_listener_from_a_peer_trusting_its_ca() {
    let pki = make_pki();
    let (receiver, sink) = tls_receiver(&pki);
    let https = format!("https://{}", receiver.local_addr());
    let sender = sender(1, https.clone(), Some(pki.ca.clone()));
    assert_eq!(sender.peers().get(&NodeId(2)), Some(&https));
    for term in 1..=3 {
        sender.send(batch(NodeId(1), NodeId(2), vec![vote(1, NodeId(1), NodeId(2), term)])).unwrap();
    }
    assert!(wait_until(WAIT, || terms_from(&sink, 1) == vec![1, 2, 3]), "got {:?}", terms_from(&sink, 1));
    assert_eq!(NetStats::get(&receiver.stats().rejected_auth), 0);
    sender.stop();
    receiver.stop();
}

#[test]
fn a_peer_trusting_another_ca_or_speaking_plaintext_gets_nothing_through() {
    let pki = make_pki();
    let (receiver, sink) = tls_receiver(&pki);
    let address = receiver.local_addr();
    let untrusting = sender(1, format!("https://{address}"), Some(make_pki().ca));
    let plaintext = sender(3, format!("http://{address}"), None);
    for (transport, from) in [(&untrusting, 1), (&plaintext, 3)] {
        transport.send(batch(NodeId(from), NodeId(2), vec![vote(1, NodeId(from), NodeId(2), 7)])).unwrap();
    }
    for transport in [&untrusting, &plaintext] {
        let stats = transport.stats();
        assert!(wait_until(WAIT, || NetStats::get(&stats.streams_ended) >= 1), "the stream never failed");
    }
    assert_eq!(sink.message_count(), 0, "a frame got through without a trusted TLS connection");
    assert_eq!(NetStats::get(&receiver.stats().frames_accepted), 0);
    // The listener itself works: a peer that trusts its CA gets through.
    let trusting = sender(4, format!("https://{address}"), Some(pki.ca.clone()));
    trusting.send(batch(NodeId(4), NodeId(2), vec![vote(1, NodeId(4), NodeId(2), 8)])).unwrap();
    assert!(wait_until(WAIT, || terms_from(&sink, 4) == vec![8]), "got {:?}", terms_from(&sink, 4));
    assert_eq!(terms_from(&sink, 1), Vec::<u64>::new());
    for transport in [trusting, untrusting, plaintext, receiver] {
        transport.stop();
    }
}

#[test]
fn tls_settings_that_cannot_work_are_refused_at_bind() {
    let (pki, other) = (make_pki(), make_pki());
    let setup_error = |config: GrpcConfig| match GrpcTransport::bind(config) {
        Err(TransportError::Setup(why)) => why,
        other => panic!("bound: {other:?}"),
    };
    // A key that does not belong to the certificate.
    let mut mismatched = config(1);
    let identity = TlsIdentity { cert_pem: pki.identity.cert_pem.clone(), key_pem: other.identity.key_pem.clone() };
    mismatched.tls.identity = Some(identity);
    let why = setup_error(mismatched);
    assert!(why.contains("TLS identity of the gRPC listener"), "{why}");
    // Not PEM at all.
    let mut garbage = config(1);
    garbage.tls.identity = Some(TlsIdentity { cert_pem: b"certificate".to_vec(), key_pem: b"key".to_vec() });
    assert!(setup_error(garbage).contains("TLS identity"));
    // An https:// peer without CA certificates, at bind and when added later.
    let why = setup_error(config(1).with_peer(NodeId(2), "https://127.0.0.1:1"));
    assert!(why.contains("peer n2") && why.contains("ca_pem"), "{why}");
    let plain = GrpcTransport::bind(config(1)).unwrap();
    assert!(matches!(plain.add_peer(NodeId(2), "https://127.0.0.1:1"), Err(TransportError::Setup(_))));
    assert!(plain.peers().is_empty());
    // With the CA both are fine.
    let mut trusting = config(1);
    trusting.tls.ca_pem = Some(pki.ca.clone());
    let trusting = GrpcTransport::bind(trusting.with_peer(NodeId(2), "https://127.0.0.1:1")).unwrap();
    trusting.add_peer(NodeId(3), "https://localhost:2").unwrap();
    assert_eq!(trusting.peers().len(), 2);
}

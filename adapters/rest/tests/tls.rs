//! TLS: the transport's route served over HTTPS by an actix-web server bound with rustls (a CA and
//! a certificate for `127.0.0.1` made at test time). A sender whose [`RestConfig::http_client`]
//! trusts the CA delivers to the `https://` peer; one with the default client, which trusts no
//! such CA, gets nothing through.
//!
//! [`RestConfig::http_client`]: kommander_transport_rest::RestConfig::http_client

mod peers;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer};
use kommander_core::transport::Transport;
use kommander_core::NodeId;
use kommander_net::NetStats;
use kommander_transport_rest::RestTransport;
use peers::{config, until, vote, Recorder};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// A CA (PEM) and a server configuration presenting a certificate for `127.0.0.1` it signed.
fn pki() -> (Vec<u8>, rustls::ServerConfig) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (ca.pem().into_bytes(), server)
}

/// Node 2's transport served over HTTPS on a loopback port: its base URL and what it received.
fn tls_receiver(server_config: rustls::ServerConfig) -> (RestTransport, ServerHandle, String, Arc<Recorder>) {
    let transport = RestTransport::new(config(2)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let routes = transport.routes();
    let server = HttpServer::new(move || App::new().configure(routes.clone()))
        .workers(1)
        .disable_signals()
        .listen_rustls_0_23(listener, server_config)
        .unwrap()
        .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    let inbox = Arc::new(Recorder::default());
    transport.start(inbox.clone()).unwrap();
    (transport, handle, base, inbox)
}

#[actix_rt::test]
async fn batches_reach_an_https_peer_only_with_a_client_trusting_its_ca() {
    let (ca, server_config) = pki();
    let (receiver, server, base, inbox) = tls_receiver(server_config);

    // The default client (`RestConfig::client_builder`) does not trust the test CA.
    let untrusting = RestTransport::new(config(3).peer(NodeId(2), &base)).unwrap();
    untrusting.start(Arc::new(Recorder::default())).unwrap();
    untrusting.send(vote(3, 2, 9)).unwrap();
    until("the untrusting sender's failure", || NetStats::get(&untrusting.stats().frames_failed) >= 1).await;

    let mut trusting = config(1).peer(NodeId(2), &base);
    let root = reqwest::Certificate::from_pem(&ca).unwrap();
    let client = trusting.client_builder().tls_built_in_root_certs(false).add_root_certificate(root).build().unwrap();
    trusting.http_client = Some(client);
    let trusting = RestTransport::new(trusting).unwrap();
    trusting.start(Arc::new(Recorder::default())).unwrap();
    for term in 1..=3 {
        trusting.send(vote(1, 2, term)).unwrap();
    }
    until("the batches over https", || inbox.terms() == vec![1, 2, 3]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(inbox.terms(), vec![1, 2, 3], "the untrusting sender got a batch through");
    assert_eq!(NetStats::get(&untrusting.stats().batches_sent), 0);

    for transport in [trusting, untrusting, receiver] {
        transport.stop();
    }
    server.stop(false).await;
}

//! Shared by the REST transport tests: a one-node kommander cluster served over the REST
//! transport on a loopback port, and helpers to build signed requests by hand.

#![allow(dead_code)]

use actix_web::dev::ServerHandle;
use kommander_actors::{RaftManager, RuntimeConfig};
use kommander_core::{MemoryWal, MessageBatch, NodeContact, NodeId, PartitionId, StaticDiscovery};
use kommander_net::auth::to_hex;
use kommander_net::{ClusterAuth, FrameHeader, NonceSource};
use kommander_transport_rest::wire::{self, H_CLUSTER, H_FROM, H_NONCE, H_SIGNATURE, H_TIMESTAMP, H_TO};
use kommander_transport_rest::{serve, RestConfig, RestTransport, BATCH_PATH};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CLUSTER: &str = "rest-tests";
pub const SECRET: &[u8] = b"correct horse battery staple";
pub const LOCAL: NodeId = NodeId(1);
pub const PEER: NodeId = NodeId(2);
pub const MAX_BODY: usize = 64 * 1024;

/// A running single-node cluster reachable over REST.
pub struct Node {
    pub manager: RaftManager,
    pub transport: RestTransport,
    pub url: String,
    pub server: ServerHandle,
}

impl Node {
    /// Start node 1 with two user partitions and a REST server on 127.0.0.1:0, in a two-voter
    /// cluster whose other voter (node 2) is never started: node 1 keeps pre-voting without
    /// changing its term, so its replica state stays put until someone sends it a valid message.
    pub async fn start() -> Node {
        Node::start_with(|_| {}).await
    }

    /// [`Node::start`] with the transport settings edited by `edit`.
    pub async fn start_with(edit: impl FnOnce(&mut RestConfig)) -> Node {
        let mut config = RestConfig::new(LOCAL, CLUSTER, SECRET.to_vec()).peer(PEER, "http://127.0.0.1:9");
        config.max_body_bytes = MAX_BODY;
        edit(&mut config);
        let transport = RestTransport::new(config).expect("transport");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = serve(&transport, listener).expect("serve");
        let handle = server.handle();
        actix_rt::spawn(server);
        let runtime = RuntimeConfig {
            initial_partitions: 2,
            tick: Duration::from_millis(20),
            heartbeat_interval: Duration::from_millis(20),
            election_timeout: (Duration::from_millis(100), Duration::from_millis(200)),
            ..RuntimeConfig::default()
        };
        let manager = RaftManager::builder(LOCAL)
            .config(runtime)
            .wal(Arc::new(MemoryWal::new()))
            .transport(Arc::new(transport.clone()))
            .discovery(Arc::new(StaticDiscovery::new(vec![NodeContact { node: PEER, address: "absent".into() }])))
            .build()
            .expect("manager");
        manager.join_cluster().await.expect("join");
        let m = manager.clone();
        eventually("partitions to finish restoring", Duration::from_secs(10), move || {
            (0..=2).all(|p| m.status(PartitionId(p)).is_ok_and(|s| !s.restoring))
        })
        .await;
        Node { manager, transport, url: format!("http://{addr}{BATCH_PATH}"), server: handle }
    }

    /// What must not change when a request is rejected: every partition's replica state and the
    /// count of batches the node accepted.
    pub fn state(&self) -> (Vec<(u64, u64, u64, bool)>, u64) {
        let partitions = (0..=2)
            .map(|p| {
                let s = self.manager.status(PartitionId(p)).expect("status");
                (s.term, s.commit_index, s.last_index, s.is_leader)
            })
            .collect();
        let accepted = self.manager.inbound_router().expect("router").accepted_batches.load(Ordering::Relaxed);
        (partitions, accepted)
    }

    /// The server's address.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").split('/').next().expect("host").to_string()
    }

    /// The batch route's path.
    pub fn path(&self) -> &'static str {
        BATCH_PATH
    }

    pub async fn stop(self) {
        self.manager.shutdown().await;
        self.server.stop(false).await;
    }
}

/// A hand-built HTTP request.
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub method: reqwest::Method,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Signs frames the way a peer would (or the way an attacker might, with other inputs).
pub struct Signer {
    pub nonces: NonceSource,
}

impl Signer {
    pub fn new() -> Self {
        Signer { nonces: NonceSource::new() }
    }

    pub fn header(&self, batch: &MessageBatch) -> FrameHeader {
        FrameHeader {
            cluster_id: batch.cluster_id.clone(),
            from: batch.from,
            to: batch.to,
            timestamp_ms: kommander_net::unix_millis(),
            nonce: self.nonces.next(),
        }
    }

    /// A request with `header` over `body`, signed with `secret`.
    pub fn request(&self, header: &FrameHeader, body: Vec<u8>, secret: &[u8]) -> RawRequest {
        let auth = ClusterAuth::new(header.cluster_id.clone(), secret, Duration::from_secs(30));
        let signature = to_hex(&auth.sign(header, &body));
        RawRequest {
            method: reqwest::Method::POST,
            headers: vec![
                ("content-type", wire::CONTENT_TYPE.to_string()),
                (H_CLUSTER, header.cluster_id.clone()),
                (H_FROM, header.from.0.to_string()),
                (H_TO, header.to.0.to_string()),
                (H_TIMESTAMP, header.timestamp_ms.to_string()),
                (H_NONCE, header.nonce.to_string()),
                (H_SIGNATURE, signature),
            ],
            body,
        }
    }

    /// A correctly signed request carrying `batch`.
    pub fn valid(&self, batch: &MessageBatch) -> RawRequest {
        self.request(&self.header(batch), wire::encode_batch(batch), SECRET)
    }
}

impl RawRequest {
    pub fn set(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }

    pub fn without(mut self, name: &'static str) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self
    }

    pub async fn send(&self, client: &reqwest::Client, url: &str) -> (u16, String) {
        let mut builder = client.request(self.method.clone(), url).body(self.body.clone());
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        let response = builder.send().await.expect("request reaches the server");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }
}

/// Poll until `probe` holds or `timeout` passes.
pub async fn eventually(what: &str, timeout: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

//! `kommander-transport-rest`: kommander's [`Transport`] over HTTP.
//!
//! * Server side: [`RestTransport::routes`] returns a `configure` function that mounts one route,
//!   `POST` [`BATCH_PATH`], inside **your own** actix-web `App`, next to your routes; or call
//!   [`serve`] for a standalone server. Bodies are MessagePack ([`wire`]); auth travels in headers.
//! * Client side ([`client`]): reqwest with keep-alive connection reuse and timeouts, one worker per
//!   peer from `kommander-net`'s outbox, which merges the batches of all partitions into one request.
//! * Every request is authenticated (cluster id + HMAC-SHA256 with timestamp and nonce) and checked
//!   by `kommander-net`'s inbound gate; failures get a 4xx and change nothing.
//! * Memory: a body is at most [`RestConfig::max_body_bytes`] (default
//!   [`kommander_net::DEFAULT_MAX_BODY_BYTES`], 413 above, refused from its `Content-Length` before
//!   it is read), and the bodies of all requests being read or handled at once share an in-flight
//!   budget of [`RestConfig::max_inflight_bytes`] (default
//!   [`kommander_net::DEFAULT_MAX_INFLIGHT_BYTES`]) reserved before reading; a request that finds
//!   no room within [`kommander_net::DEFAULT_BUDGET_WAIT`] gets 503.
//! * [`Transport::stop`] aborts the outbound workers (nothing queued is sent afterwards);
//!   [`Transport::start`] after a stop starts fresh ones.
//! * TLS: the route is served by *your* actix-web server, so HTTPS is that server's (e.g.
//!   `HttpServer::bind_rustls_0_23`). Outbound, give [`RestConfig::http_client`] a reqwest client
//!   that trusts your CA (start from [`RestConfig::client_builder`], which carries the transport's
//!   timeouts) and name peers by `https://` base URLs.
//! * Peers can be added and removed at any time ([`Transport::add_peer`] with the peer's base URL,
//!   [`Transport::remove_peer`]): a running transport starts or stops the peer's worker at once; a
//!   stopped one remembers the change for its next start.

#![warn(missing_docs)]

pub mod client;
pub mod server;
pub mod wire;

use kommander_core::transport::{InboundSink, Transport, TransportError};
use kommander_core::{MessageBatch, NodeId};
use kommander_net::{ClusterAuth, InboundGate, NetRuntime, NetStats, Outbox, OutboxConfig};
use kommander_net::{DEFAULT_BUDGET_WAIT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_INFLIGHT_BYTES};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use server::{serve, BATCH_PATH};

/// Settings of a node's REST transport.
#[derive(Clone, Debug)]
pub struct RestConfig {
    /// This node.
    pub node: NodeId,
    /// Cluster identity, checked on every request.
    pub cluster_id: String,
    /// Shared secret of the cluster (HMAC key; at least [`kommander_net::MIN_SECRET_BYTES`]).
    pub secret: Vec<u8>,
    /// Base URL of every peer known at construction, e.g. `http://127.0.0.1:7002` (more can be
    /// added later with [`Transport::add_peer`]).
    pub peers: BTreeMap<NodeId, String>,
    /// Largest request body accepted (413 above). Default
    /// [`kommander_net::DEFAULT_MAX_BODY_BYTES`] (8 MiB + 256 KiB: one largest entry).
    pub max_body_bytes: usize,
    /// Bytes of all request bodies being read or handled at once (503 when exhausted). Default
    /// [`kommander_net::DEFAULT_MAX_INFLIGHT_BYTES`].
    pub max_inflight_bytes: usize,
    /// Timeout of one request to a peer.
    pub request_timeout: Duration,
    /// Timeout of establishing a connection to a peer.
    pub connect_timeout: Duration,
    /// Accepted clock difference of request timestamps.
    pub replay_window: Duration,
    /// Outbound queue settings.
    pub outbox: OutboxConfig,
    /// The HTTP client batches are sent with. `None` (the default): one built by
    /// [`RestConfig::client_builder`]. Set it to reach `https://` peers with your TLS settings
    /// (trusted CA certificates, client identity, ...); a client built elsewhere keeps its own
    /// timeouts, so start from [`RestConfig::client_builder`] to keep the transport's.
    pub http_client: Option<reqwest::Client>,
}

impl RestConfig {
    /// Defaults for `node` of `cluster_id` with `secret` and no peers. The secret is checked by
    /// [`RestTransport::new`].
    pub fn new(node: NodeId, cluster_id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        RestConfig {
            node,
            cluster_id: cluster_id.into(),
            secret: secret.into(),
            peers: BTreeMap::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            replay_window: Duration::from_secs(30),
            outbox: OutboxConfig::default(),
            http_client: None,
        }
    }

    /// A reqwest client builder with the transport's settings: `connect_timeout`,
    /// `request_timeout`, a small idle pool per peer, `TCP_NODELAY`. What the transport sends with
    /// unless [`RestConfig::http_client`] is set; add TLS settings to it and build that client:
    ///
    /// ```text
    /// config.http_client = Some(config.client_builder().add_root_certificate(ca).build()?);
    /// ```
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .pool_max_idle_per_host(2)
            .tcp_nodelay(true)
    }

    /// Add a peer reachable at `base_url`.
    pub fn peer(mut self, node: NodeId, base_url: impl Into<String>) -> Self {
        self.peers.insert(node, base_url.into());
        self
    }
}

/// A node's REST transport. Cheap to clone; clones share everything.
#[derive(Clone, Debug)]
pub struct RestTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RestConfig,
    gate: Arc<InboundGate>,
    stats: Arc<NetStats>,
    sender: Arc<client::RestPeerSender>,
    runtime: NetRuntime,
    outbox: Mutex<Option<Outbox>>,
}

impl RestTransport {
    /// Create the transport (nothing is sent or accepted until [`Transport::start`]). Fails with
    /// [`TransportError::Setup`] for a secret shorter than [`kommander_net::MIN_SECRET_BYTES`].
    pub fn new(config: RestConfig) -> Result<Self, TransportError> {
        let stats = Arc::new(NetStats::default());
        let auth = ClusterAuth::try_new(config.cluster_id.clone(), &config.secret, config.replay_window)?;
        let gate = InboundGate::new(config.node, auth, config.max_body_bytes, stats.clone())
            .with_inflight_budget(config.max_inflight_bytes, DEFAULT_BUDGET_WAIT);
        let gate = Arc::new(gate);
        let sender = Arc::new(client::RestPeerSender::new(&config).map_err(TransportError::Setup)?);
        let runtime = NetRuntime::new(&format!("kommander-rest-{}", config.node.0), 1)
            .map_err(|e| TransportError::Setup(e.to_string()))?;
        Ok(RestTransport { inner: Arc::new(Inner { config, gate, stats, sender, runtime, outbox: Mutex::new(None) }) })
    }

    /// Mounts the transport's route into an actix-web `App`:
    /// `App::new().configure(transport.routes())`.
    pub fn routes(&self) -> impl Fn(&mut actix_web::web::ServiceConfig) + Clone + Send + 'static {
        let gate = self.inner.gate.clone();
        move |cfg| server::configure(cfg, gate.clone())
    }

    /// Transport counters.
    pub fn stats(&self) -> Arc<NetStats> {
        self.inner.stats.clone()
    }

    /// The settings (`peers` as constructed; see [`RestTransport::peers`] for the current ones).
    pub fn config(&self) -> &RestConfig {
        &self.inner.config
    }

    /// The peers the transport sends to now (or will once started), with their batch URLs.
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        let sender = &self.inner.sender;
        sender.peers().into_iter().filter_map(|peer| sender.url(peer).map(|url| (peer, url))).collect()
    }
}

/// Checks a peer's base URL: `http://host[:port][/prefix]` (or `https://` where
/// [`RestConfig::http_client`] was built with TLS).
fn check_base_url(node: NodeId, address: &str) -> Result<(), TransportError> {
    let url = reqwest::Url::parse(address)
        .map_err(|e| TransportError::Setup(format!("peer {node} address {address:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(TransportError::Setup(format!("peer {node} address {address:?}: expected http://host:port")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(TransportError::Setup(format!("peer {node} address {address:?}: a base URL has no query")));
    }
    Ok(())
}

impl Transport for RestTransport {
    fn start(&self, inbox: Arc<dyn InboundSink>) -> Result<(), TransportError> {
        let mut outbox = self.inner.outbox.lock().unwrap_or_else(|p| p.into_inner());
        if outbox.is_some() {
            return Err(TransportError::Setup("transport already started".into()));
        }
        let config = &self.inner.config;
        *outbox = Some(Outbox::start(
            self.inner.runtime.handle(),
            config.node,
            self.inner.sender.peers(),
            &config.outbox,
            self.inner.sender.clone(),
            self.inner.stats.clone(),
        ));
        self.inner.gate.open(inbox);
        Ok(())
    }

    fn send(&self, batch: MessageBatch) -> Result<(), TransportError> {
        let outbox = self.inner.outbox.lock().unwrap_or_else(|p| p.into_inner());
        outbox.as_ref().ok_or(TransportError::NotRunning)?.send(batch)
    }

    /// Stop accepting and sending: the outbound workers are aborted (dropping the outbox), so
    /// nothing queued before is sent afterwards. [`Transport::start`] may be called again.
    fn auth_rejections(&self) -> (u64, Option<String>) {
        self.inner.stats.auth_rejections()
    }

    fn cluster_id(&self) -> Option<String> {
        Some(self.inner.config.cluster_id.clone())
    }

    fn stop(&self) {
        self.inner.gate.close();
        drop(self.inner.outbox.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    /// `address` is the peer's base URL, e.g. `http://10.0.0.4:7001` (batches go to
    /// [`BATCH_PATH`] under it). A new peer gets a worker at once when running; a known peer's
    /// frames go to the new address from the next one on (its queue is kept).
    fn add_peer(&self, node: NodeId, address: &str) -> Result<(), TransportError> {
        if node == self.inner.config.node {
            return Ok(());
        }
        check_base_url(node, address)?;
        // Under the outbox lock, so a concurrent start or stop sees the peer either fully or not.
        let outbox = self.inner.outbox.lock().unwrap_or_else(|p| p.into_inner());
        if self.inner.sender.set_peer(node, address) {
            tracing::info!(local = %self.inner.config.node, peer = %node, %address, "REST peer added");
        }
        if let Some(outbox) = outbox.as_ref() {
            outbox.add_peer(node);
        }
        Ok(())
    }

    /// Forget `node`: its worker is aborted (what was queued for it is dropped).
    fn remove_peer(&self, node: NodeId) {
        let outbox = self.inner.outbox.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(outbox) = outbox.as_ref() {
            outbox.remove_peer(node);
        }
        if self.inner.sender.remove_peer(node) {
            tracing::info!(local = %self.inner.config.node, peer = %node, "REST peer removed");
        }
    }
}

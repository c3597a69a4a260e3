//! [`GrpcTransport`]: binds the listener, and on start runs the tonic server, the per-peer channels
//! and the outbox workers on a dedicated [`NetRuntime`]. `stop` shuts that runtime down (aborting
//! the outbox workers: nothing queued is sent afterwards) but keeps the bound listener, so `start`
//! can run the transport again on a fresh runtime, on the same address (a `RaftManager` restart
//! reuses its transport this way).
//!
//! Peers can be added and removed at any time ([`Transport::add_peer`] with the peer's
//! `http://host:port`, or `https://host:port` with [`GrpcConfig::tls`]'s CA certificates;
//! [`Transport::remove_peer`]). The transport keeps the current peers (those
//! of the configuration, then every change); a running transport opens or drops the peer's channel
//! and worker at once, a stopped one uses the current peers at its next start.

use crate::client::GrpcSender;
use crate::config::GrpcConfig;
use crate::server::{self, ServerLimits};
use kommander_core::transport::{InboundSink, Transport, TransportError};
use kommander_core::{MessageBatch, NodeId};
use kommander_net::{ClusterAuth, InboundGate, NetRuntime, NetStats, Outbox};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, RwLock};
use tokio::sync::oneshot;
use tonic::transport::{Endpoint, ServerTlsConfig};

/// Worker threads of the transport's runtime.
const RUNTIME_THREADS: usize = 1;

/// The gRPC transport of one node (see the crate docs).
#[derive(Debug)]
pub struct GrpcTransport {
    config: GrpcConfig,
    /// The listener's TLS (checked by `bind`); `None`: plaintext.
    server_tls: Option<ServerTlsConfig>,
    /// The current peers: their URIs as given and their endpoints.
    peers: RwLock<BTreeMap<NodeId, (String, Endpoint)>>,
    local_addr: SocketAddr,
    gate: Arc<InboundGate>,
    stats: Arc<NetStats>,
    state: RwLock<Lifecycle>,
}

#[derive(Debug)]
enum Lifecycle {
    /// Bound, not serving (never started, or stopped).
    Bound(TcpListener),
    /// Serving and sending.
    Running(Box<Running>),
    /// Placeholder while the state changes hands; left behind only if a start or stop panicked.
    Failed,
}

#[derive(Debug)]
struct Running {
    runtime: NetRuntime,
    sender: Arc<GrpcSender>,
    outbox: Outbox,
    shutdown: oneshot::Sender<()>,
    /// The listener again (a duplicate of the socket the server accepts on), for the next start.
    listener: TcpListener,
}

impl GrpcTransport {
    /// Bind the listener on `config.listen` now (so [`GrpcTransport::local_addr`] is known and the
    /// port reserved) and check the secret (at least [`kommander_net::MIN_SECRET_BYTES`]), the TLS
    /// identity ([`GrpcConfig::tls`]) and the peer URIs. Nothing is served or sent before [`Transport::start`].
    pub fn bind(config: GrpcConfig) -> Result<GrpcTransport, TransportError> {
        let setup = |what: &str, error: &dyn std::fmt::Display| TransportError::Setup(format!("{what}: {error}"));
        let auth = ClusterAuth::try_new(config.cluster_id.clone(), &config.secret, config.replay_window)?;
        let server_tls = config.tls.server_config()?;
        let mut peers = BTreeMap::new();
        for (&peer, uri) in config.peers.iter().filter(|(&peer, _)| peer != config.node) {
            peers.insert(peer, (uri.clone(), endpoint(&config, peer, uri)?));
        }
        let listener = TcpListener::bind(config.listen).map_err(|e| setup(&format!("bind {}", config.listen), &e))?;
        listener.set_nonblocking(true).map_err(|e| setup("listener", &e))?;
        let local_addr = listener.local_addr().map_err(|e| setup("listener", &e))?;
        let stats = Arc::new(NetStats::default());
        let gate = InboundGate::new(config.node, auth, config.max_body_bytes, stats.clone())
            .with_inflight_budget(config.max_inflight_bytes, kommander_net::DEFAULT_BUDGET_WAIT);
        let gate = Arc::new(gate);
        let (peers, state) = (RwLock::new(peers), RwLock::new(Lifecycle::Bound(listener)));
        Ok(GrpcTransport { config, server_tls, peers, local_addr, gate, stats, state })
    }

    /// The address the server listens on (the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The transport's counters.
    pub fn stats(&self) -> Arc<NetStats> {
        self.stats.clone()
    }

    /// The current peers and their URIs (the configuration's, then every added or removed one).
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        self.peers.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(&n, (uri, _))| (n, uri.clone())).collect()
    }

    /// Run server, channels and outbox on a fresh runtime. On failure the listener is handed back.
    fn launch(
        &self,
        listener: TcpListener,
        inbox: Arc<dyn InboundSink>,
    ) -> Result<Running, (TcpListener, TransportError)> {
        let setup = |error: std::io::Error| TransportError::Setup(format!("start: {error}"));
        let (runtime, serving) = match (NetRuntime::new("kommander-grpc", RUNTIME_THREADS), listener.try_clone()) {
            (Ok(runtime), Ok(serving)) => (runtime, serving),
            (Err(error), _) | (_, Err(error)) => return Err((listener, setup(error))),
        };
        let _context = runtime.handle().enter();
        let serving = match tokio::net::TcpListener::from_std(serving) {
            Ok(serving) => serving,
            Err(error) => return Err((listener, setup(error))),
        };
        self.gate.open(inbox);
        let (shutdown, stopped) = oneshot::channel();
        let limits = ServerLimits {
            max_concurrent_streams: self.config.max_concurrent_streams,
            concurrency_limit_per_connection: self.config.concurrency_limit_per_connection,
            timeout: self.config.request_timeout,
        };
        let tls = self.server_tls.clone();
        runtime.handle().spawn(server::serve(self.gate.clone(), limits, tls, serving, async {
            let _ = stopped.await;
        }));
        let auth = ClusterAuth::new(self.config.cluster_id.clone(), &self.config.secret, self.config.replay_window);
        let endpoints: BTreeMap<NodeId, Endpoint> =
            self.peers.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(&n, (_, e))| (n, e.clone())).collect();
        let sender = Arc::new(GrpcSender::new(auth, &endpoints, self.stats.clone()));
        let (node, config, stats) = (self.config.node, &self.config.outbox, self.stats.clone());
        let outbox = Outbox::start(runtime.handle(), node, endpoints.into_keys(), config, sender.clone(), stats);
        Ok(Running { runtime, sender, outbox, shutdown, listener })
    }
}

impl Transport for GrpcTransport {
    /// Start serving and sending; also after [`Transport::stop`] (on a fresh runtime, same address).
    fn start(&self, inbox: Arc<dyn InboundSink>) -> Result<(), TransportError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let listener = match std::mem::replace(&mut *state, Lifecycle::Failed) {
            Lifecycle::Bound(listener) => listener,
            other => {
                let what = if matches!(other, Lifecycle::Running(_)) {
                    "already started"
                } else {
                    "broken by an earlier panic"
                };
                *state = other;
                return Err(TransportError::Setup(format!("gRPC transport {what}")));
            }
        };
        match self.launch(listener, inbox) {
            Ok(running) => *state = Lifecycle::Running(Box::new(running)),
            Err((listener, error)) => {
                *state = Lifecycle::Bound(listener);
                return Err(error);
            }
        }
        tracing::info!(node = %self.config.node, addr = %self.local_addr, "gRPC transport started");
        Ok(())
    }

    fn send(&self, batch: MessageBatch) -> Result<(), TransportError> {
        match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
            Lifecycle::Running(running) => running.outbox.send(batch),
            Lifecycle::Bound(_) | Lifecycle::Failed => Err(TransportError::NotRunning),
        }
    }

    /// Stop serving and sending: the server and the outbox workers end with the runtime (nothing
    /// queued is sent afterwards); the listener stays bound for a later [`Transport::start`].
    fn auth_rejections(&self) -> (u64, Option<String>) {
        self.stats.auth_rejections()
    }

    fn cluster_id(&self) -> Option<String> {
        Some(self.config.cluster_id.clone())
    }

    fn stop(&self) {
        self.gate.close();
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        *state = match std::mem::replace(&mut *state, Lifecycle::Failed) {
            Lifecycle::Running(running) => {
                let Running { runtime, sender, outbox, shutdown, listener } = *running;
                drop(sender);
                let _ = shutdown.send(());
                drop(outbox);
                runtime.shutdown();
                tracing::info!(node = %self.config.node, "gRPC transport stopped");
                Lifecycle::Bound(listener)
            }
            other => other,
        };
    }

    /// `address` is the peer's gRPC listener, `http://host:port` (`https://host:port` with
    /// [`GrpcConfig::tls`]'s CA certificates). When running, a new peer gets a
    /// lazily connected channel and a worker at once; a known peer at a new address gets a new
    /// channel (its queue is kept); the same address again changes nothing.
    fn add_peer(&self, node: NodeId, address: &str) -> Result<(), TransportError> {
        if node == self.config.node {
            return Ok(());
        }
        let endpoint = endpoint(&self.config, node, address)?;
        // Under the state lock, so a concurrent start or stop sees the peer either fully or not.
        let state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        let changed = peers.get(&node).is_none_or(|(known, _)| known != address);
        if changed {
            peers.insert(node, (address.to_owned(), endpoint.clone()));
            tracing::info!(local = %self.config.node, peer = %node, %address, "gRPC peer added");
        }
        if let Lifecycle::Running(running) = &*state {
            if changed || !running.outbox.contains(node) {
                let _context = running.runtime.handle().enter();
                running.sender.set_peer(node, &endpoint);
                running.outbox.add_peer(node);
            }
        }
        Ok(())
    }

    /// Forget `node`: its worker is aborted (what was queued for it is dropped) and its channel
    /// closed.
    fn remove_peer(&self, node: NodeId) {
        let state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Lifecycle::Running(running) = &*state {
            running.outbox.remove_peer(node);
            running.sender.remove_peer(node);
        }
        if self.peers.write().unwrap_or_else(|p| p.into_inner()).remove(&node).is_some() {
            tracing::info!(local = %self.config.node, peer = %node, "gRPC peer removed");
        }
    }
}

/// The endpoint of `peer` at `uri` (`http://host:port`, or `https://host:port` with the
/// configuration's CA certificates), with the configuration's timeouts.
fn endpoint(config: &GrpcConfig, peer: NodeId, uri: &str) -> Result<Endpoint, TransportError> {
    let what = format!("peer {peer} uri {uri:?}");
    let endpoint = Endpoint::from_shared(uri.to_owned()).map_err(|e| TransportError::Setup(format!("{what}: {e}")))?;
    if !matches!(endpoint.uri().scheme_str(), Some("http" | "https")) || endpoint.uri().host().is_none() {
        return Err(TransportError::Setup(format!("{what}: expected http://host:port or https://host:port")));
    }
    let endpoint = config.tls.apply(peer, &what, endpoint)?;
    // Frames travel on a long-lived stream: HTTP/2 keep-alive pings notice a peer gone silent
    // (no reset, no answer) within twice the request timeout, which ends the stream.
    Ok(endpoint
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.request_timeout)
        .keep_alive_timeout(config.request_timeout)
        .keep_alive_while_idle(true))
}

impl Drop for GrpcTransport {
    fn drop(&mut self) {
        self.stop();
    }
}

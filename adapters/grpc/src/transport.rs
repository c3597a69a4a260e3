//! [`GrpcTransport`]: binds the listener, and on start runs the tonic server, the per-peer channels
//! and the outbox workers on a dedicated [`NetRuntime`].

use crate::client::GrpcSender;
use crate::config::GrpcConfig;
use crate::server;
use kommander_core::transport::{InboundSink, Transport, TransportError};
use kommander_core::{MessageBatch, NodeId};
use kommander_net::{ClusterAuth, InboundGate, NetRuntime, NetStats, Outbox};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, RwLock};
use tokio::sync::oneshot;
use tonic::transport::Endpoint;

/// Worker threads of the transport's runtime.
const RUNTIME_THREADS: usize = 2;

/// The gRPC transport of one node (see the crate docs).
#[derive(Debug)]
pub struct GrpcTransport {
    config: GrpcConfig,
    endpoints: BTreeMap<NodeId, Endpoint>,
    local_addr: SocketAddr,
    gate: Arc<InboundGate>,
    stats: Arc<NetStats>,
    state: RwLock<Lifecycle>,
}

#[derive(Debug)]
enum Lifecycle {
    /// Bound, not serving yet.
    Bound(TcpListener),
    /// Serving and sending.
    Running(Running),
    /// Stopped (or a start failed); cannot be started again.
    Stopped,
}

#[derive(Debug)]
struct Running {
    runtime: NetRuntime,
    outbox: Outbox,
    shutdown: oneshot::Sender<()>,
}

impl GrpcTransport {
    /// Bind the listener on `config.listen` now (so [`GrpcTransport::local_addr`] is known and the
    /// port reserved) and check the peer URIs. Nothing is served or sent before
    /// [`Transport::start`].
    pub fn bind(config: GrpcConfig) -> Result<GrpcTransport, TransportError> {
        let setup = |what: &str, error: &dyn std::fmt::Display| TransportError::Setup(format!("{what}: {error}"));
        let mut endpoints = BTreeMap::new();
        for (&peer, uri) in config.peers.iter().filter(|(&peer, _)| peer != config.node) {
            let what = format!("peer {peer} uri {uri:?}");
            let endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| setup(&what, &e))?;
            if endpoint.uri().scheme_str() != Some("http") || endpoint.uri().host().is_none() {
                return Err(setup(&what, &"expected http://host:port"));
            }
            let endpoint =
                endpoint.connect_timeout(config.connect_timeout).timeout(config.request_timeout).tcp_nodelay(true);
            endpoints.insert(peer, endpoint);
        }
        let listener = TcpListener::bind(config.listen).map_err(|e| setup(&format!("bind {}", config.listen), &e))?;
        listener.set_nonblocking(true).map_err(|e| setup("listener", &e))?;
        let local_addr = listener.local_addr().map_err(|e| setup("listener", &e))?;
        let stats = Arc::new(NetStats::default());
        let auth = ClusterAuth::new(config.cluster_id.clone(), &config.secret, config.replay_window);
        let gate = Arc::new(InboundGate::new(config.node, auth, config.max_body_bytes, stats.clone()));
        Ok(GrpcTransport { config, endpoints, local_addr, gate, stats, state: RwLock::new(Lifecycle::Bound(listener)) })
    }

    /// The address the server listens on (the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The transport's counters.
    pub fn stats(&self) -> Arc<NetStats> {
        self.stats.clone()
    }

    fn launch(&self, listener: TcpListener, inbox: Arc<dyn InboundSink>) -> Result<Running, TransportError> {
        let setup = |error: std::io::Error| TransportError::Setup(format!("start: {error}"));
        let runtime = NetRuntime::new("kommander-grpc", RUNTIME_THREADS).map_err(setup)?;
        let _context = runtime.handle().enter();
        let listener = tokio::net::TcpListener::from_std(listener).map_err(setup)?;
        self.gate.open(inbox);
        let (shutdown, stopped) = oneshot::channel();
        runtime.handle().spawn(server::serve(self.gate.clone(), listener, async {
            let _ = stopped.await;
        }));
        let auth = ClusterAuth::new(self.config.cluster_id.clone(), &self.config.secret, self.config.replay_window);
        let sender = Arc::new(GrpcSender::new(auth, &self.endpoints));
        let peers = self.endpoints.keys().copied();
        let outbox =
            Outbox::start(runtime.handle(), self.config.node, peers, &self.config.outbox, sender, self.stats.clone());
        Ok(Running { runtime, outbox, shutdown })
    }
}

impl Transport for GrpcTransport {
    fn start(&self, inbox: Arc<dyn InboundSink>) -> Result<(), TransportError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let listener = match std::mem::replace(&mut *state, Lifecycle::Stopped) {
            Lifecycle::Bound(listener) => listener,
            other => {
                let what = if matches!(other, Lifecycle::Running(_)) { "already started" } else { "stopped" };
                *state = other;
                return Err(TransportError::Setup(format!("gRPC transport {what}")));
            }
        };
        *state = Lifecycle::Running(self.launch(listener, inbox)?);
        tracing::info!(node = %self.config.node, addr = %self.local_addr, "gRPC transport started");
        Ok(())
    }

    fn send(&self, batch: MessageBatch) -> Result<(), TransportError> {
        match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
            Lifecycle::Running(running) => running.outbox.send(batch),
            Lifecycle::Bound(_) | Lifecycle::Stopped => Err(TransportError::NotRunning),
        }
    }

    fn stop(&self) {
        self.gate.close();
        let previous =
            std::mem::replace(&mut *self.state.write().unwrap_or_else(|p| p.into_inner()), Lifecycle::Stopped);
        if let Lifecycle::Running(running) = previous {
            let _ = running.shutdown.send(());
            running.runtime.shutdown();
            tracing::info!(node = %self.config.node, "gRPC transport stopped");
        }
    }
}

impl Drop for GrpcTransport {
    fn drop(&mut self) {
        self.stop();
    }
}

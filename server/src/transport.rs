//! Builds the node's Raft transport from the flags: REST (mounted on the API server, so served
//! over TLS when that server is; its client trusts `--tls-ca`) or gRPC (its own listener, with the
//! same certificate, key and CA).

use crate::args::{Args, TransportKind};
use crate::tls::NodeTls;
use kommander::core::{NodeId, Transport};
use kommander::net::NetStats;
use kommander::transport::grpc::{GrpcConfig, GrpcTransport};
use kommander::transport::rest::{RestConfig, RestTransport};
use std::sync::Arc;

/// Mounts REST transport routes into the API `App`.
pub type RestRoutes = Arc<dyn Fn(&mut actix_web::web::ServiceConfig) + Send + Sync>;

/// The chosen transport and what the server needs from it.
pub struct Network {
    /// The transport handed to the manager.
    pub transport: Arc<dyn Transport>,
    /// Its counters.
    pub stats: Arc<NetStats>,
    /// REST routes to mount (REST only).
    pub rest_routes: Option<RestRoutes>,
}

/// Build the transport selected by `args`, with the node's TLS.
pub fn build(args: &Args, tls: &NodeTls) -> Result<Network, Box<dyn std::error::Error>> {
    let node = NodeId(args.node_id);
    let secret = args.secret.as_bytes().to_vec();
    Ok(match args.transport {
        TransportKind::Rest => {
            let mut config = RestConfig::new(node, args.cluster_id.clone(), secret);
            config.peers = args.http_peers();
            config.http_client = Some(tls.http_client(config.client_builder())?);
            let transport = RestTransport::new(config)?;
            let routes = transport.routes();
            Network {
                stats: transport.stats(),
                rest_routes: Some(Arc::new(move |cfg: &mut actix_web::web::ServiceConfig| routes(cfg))),
                transport: Arc::new(transport),
            }
        }
        TransportKind::Grpc => {
            let mut config = GrpcConfig::new(node, args.cluster_id.clone(), secret);
            config.listen = args.grpc_listen;
            config.peers = args.grpc_peers();
            config.tls = tls.grpc();
            let transport = GrpcTransport::bind(config)?;
            Network { stats: transport.stats(), rest_routes: None, transport: Arc::new(transport) }
        }
    })
}

//! Builds the node's Raft transport from the flags: REST (mounted on the API server) or gRPC (its
//! own listener).

use crate::args::{Args, TransportKind};
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

/// Build the transport selected by `args`.
pub fn build(args: &Args) -> Result<Network, Box<dyn std::error::Error>> {
    let node = NodeId(args.node_id);
    let secret = args.secret.as_bytes().to_vec();
    Ok(match args.transport {
        TransportKind::Rest => {
            let mut config = RestConfig::new(node, args.cluster_id.clone(), secret);
            config.peers = args.http_peers();
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
            let transport = GrpcTransport::bind(config)?;
            Network { stats: transport.stats(), rest_routes: None, transport: Arc::new(transport) }
        }
    })
}

//! Command-line flags of `kommander-server`.

use clap::{Parser, ValueEnum};
use kommander::core::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Which network transport carries Raft traffic between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// HTTP + MessagePack on the `--listen` address (same server as the KV API).
    Rest,
    /// gRPC (tonic) on the `--grpc-listen` address.
    Grpc,
}

/// Run one kommander node with a demo replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "kommander-server", version, about)]
pub struct Args {
    /// This node's id (stable across restarts).
    #[arg(long)]
    pub node_id: u64,
    /// HTTP address of the KV API (and of the REST transport). Loopback by default.
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub listen: SocketAddr,
    /// gRPC address (with `--transport grpc`).
    #[arg(long, default_value = "127.0.0.1:7101")]
    pub grpc_listen: SocketAddr,
    /// A peer's HTTP base URL: `ID=http://host:port` (repeat for each peer).
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<(u64, String)>,
    /// A peer's gRPC URL: `ID=http://host:port` (with `--transport grpc`).
    #[arg(long = "peer-grpc", value_parser = parse_peer)]
    pub grpc_peers: Vec<(u64, String)>,
    /// Number of user partitions.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// WAL backend: sqlite, rocksdb (if compiled in) or memory.
    #[arg(long, default_value = "sqlite")]
    pub wal: String,
    /// Directory of the WAL files.
    #[arg(long, default_value = "kommander-data")]
    pub dir: PathBuf,
    /// Transport between nodes.
    #[arg(long, value_enum, default_value_t = TransportKind::Rest)]
    pub transport: TransportKind,
    /// Cluster id; nodes of other clusters are rejected.
    #[arg(long, default_value = "kommander-demo")]
    pub cluster_id: String,
    /// Shared secret of the cluster (or set KOMMANDER_SECRET).
    #[arg(long, env = "KOMMANDER_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Timer tick in milliseconds (heartbeats every tick; elections after 10–20 ticks).
    #[arg(long, default_value_t = 50)]
    pub tick_ms: u64,
}

impl Args {
    /// Peers' HTTP base URLs by node.
    pub fn http_peers(&self) -> BTreeMap<NodeId, String> {
        self.peers.iter().map(|(n, url)| (NodeId(*n), url.clone())).collect()
    }

    /// Peers' gRPC URLs by node.
    pub fn grpc_peers(&self) -> BTreeMap<NodeId, String> {
        self.grpc_peers.iter().map(|(n, url)| (NodeId(*n), url.clone())).collect()
    }
}

fn parse_peer(text: &str) -> Result<(u64, String), String> {
    let (id, url) = text.split_once('=').ok_or("expected ID=URL")?;
    let id = id.trim().parse::<u64>().map_err(|e| format!("bad node id {id:?}: {e}"))?;
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!("peer URL {url:?} must start with http:// or https://"));
    }
    Ok((id, url.trim_end_matches('/').to_string()))
}

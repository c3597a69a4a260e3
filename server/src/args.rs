//! Command-line flags of `kommander-server`.

use clap::{Parser, ValueEnum};
use kommander::core::NodeId;
use std::collections::{BTreeMap, BTreeSet};
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
    /// A peer's HTTP base URL: `ID=http://host:port` (repeat for each peer), or
    /// `ID=https://host:port` with `--tls-ca`. These peers are the founding voters whatever the
    /// transport (with `--join`: the seeds asked to add this node).
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<(u64, String)>,
    /// A peer's gRPC URL: `ID=http://host:port` or `ID=https://host:port` (with `--transport
    /// grpc`; exactly the node ids of `--peer`).
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
    /// Cluster id; nodes of other clusters are rejected. Printable ASCII without spaces, at most
    /// 256 bytes (it travels in HTTP headers).
    #[arg(long, default_value = "kommander-demo", value_parser = parse_cluster_id)]
    pub cluster_id: String,
    /// Shared secret of the cluster, at least 8 bytes (or set KOMMANDER_SECRET).
    #[arg(long, env = "KOMMANDER_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub secret: String,
    /// Timer tick in milliseconds (heartbeats every tick; elections after 10–20 ticks).
    #[arg(long, default_value_t = 50)]
    pub tick_ms: u64,
    /// Join a running cluster instead of founding one: start as a learner of every partition, ask
    /// the `--peer` nodes (the seeds) to add this node, and become a voter once caught up. The
    /// cluster's nodes need not know this node beforehand: they learn its `--advertise` address.
    #[arg(long)]
    pub join: bool,
    /// The URL other nodes reach this node's transport at, recorded in the cluster's roster.
    /// Default: `http://<--listen>` with `--transport rest`, `http://<--grpc-listen>` with gRPC
    /// (`https://` with `--tls-cert`).
    #[arg(long, value_parser = parse_url)]
    pub advertise: Option<String>,
    /// On SIGTERM, leave the cluster for good (a committed roster removal) before exiting, instead
    /// of only stopping (the node stays a member and may come back). Ctrl-C always only stops.
    #[arg(long)]
    pub leave_on_sigterm: bool,
    /// On shutdown, stop at once instead of first handing the partitions this node leads to
    /// other voters (leadership transfer; a rolling restart then waits out election timeouts).
    #[arg(long)]
    pub no_hand_over: bool,
    /// Serve `?consistency=lease` reads with a round like linearizable ones (no read leases).
    #[arg(long)]
    pub no_lease_reads: bool,
    /// Do not hand partitions led beyond this node's share to other voters.
    #[arg(long)]
    pub no_balance: bool,
    /// Snapshot a partition (and compact its log) every this many applied entries; 0 only on
    /// demand (`POST /admin/snapshot/{partition}`).
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_interval: u64,
    /// Also snapshot a partition once this many payload bytes were applied since its last
    /// snapshot; 0: no byte trigger.
    #[arg(long, default_value_t = 64 << 20)]
    pub snapshot_interval_bytes: u64,
    /// A partition idle for this many ticks goes quiet (no ticks, no heartbeats) until something
    /// happens to it; 0 keeps every partition awake.
    #[arg(long, default_value_t = 30)]
    pub quiesce_ticks: u32,
    /// Entries kept in the log below a snapshot for followers briefly behind.
    #[arg(long, default_value_t = 1_024)]
    pub snapshot_tail: u64,
    /// Bearer token of the client scope: the key-value API and `/status` (or set
    /// KOMMANDER_CLIENT_TOKEN). At least 16 printable ASCII characters; the same on every node.
    #[arg(long, env = "KOMMANDER_CLIENT_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub client_token: Option<String>,
    /// Bearer token of the admin scope: the admin endpoints, and everything a client may do (or set
    /// KOMMANDER_ADMIN_TOKEN). At least 16 printable ASCII characters; the same on every node.
    #[arg(long, env = "KOMMANDER_ADMIN_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub admin_token: Option<String>,
    /// Serve the HTTP API without tokens on a listener that is not loopback (anyone who reaches
    /// it may write keys and administer the cluster).
    #[arg(long)]
    pub allow_open_api: bool,
    /// Partitions that get their own series in `GET /metrics` at most: those with the largest
    /// replication lag (node-level gauges cover every partition).
    #[arg(long, default_value_t = 100)]
    pub metrics_partitions: usize,
    /// Serve `POST /bench/load`, the load generator of `server/examples/bench_cluster.rs` (it
    /// writes benchmark entries; admin scope when tokens are set). Off by default.
    #[arg(long)]
    pub enable_bench: bool,
    /// Reach the `--peer` (and `--peer-grpc`) nodes at the URLs given here even when the cluster's
    /// roster records other addresses for them: for nodes that reach each other through a proxy,
    /// sidecar or NAT whose addresses differ per node.
    #[arg(long)]
    pub pin_peers: bool,
    /// The certificate chain (PEM; this node's certificate first) to serve HTTPS with: the HTTP
    /// listener (API, admin, /metrics, /ui, REST transport) and, with `--transport grpc`, the gRPC
    /// listener. Needs `--tls-key`. Other nodes then reach this one by `https://` URLs.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) this node trusts when it calls `https://` nodes: peers' transports,
    /// forwarded client and admin requests, join requests to seeds. No other root is trusted.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
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

    /// Peers' addresses on the chosen transport (what discovery hands the node, and what the
    /// roster records): `--peer` with REST, `--peer-grpc` with gRPC.
    pub fn transport_peers(&self) -> BTreeMap<NodeId, String> {
        match self.transport {
            TransportKind::Rest => self.http_peers(),
            TransportKind::Grpc => self.grpc_peers(),
        }
    }

    /// Where other nodes reach this node's transport: `--advertise`, or the transport's listener.
    pub fn advertise_address(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| format!("{}://{}", self.scheme(), self.listener()))
    }

    /// Where other nodes reach this node's HTTP API (recorded in the roster, so that any node can
    /// forward a client to this one).
    pub fn api_address(&self) -> String {
        format!("{}://{}", self.scheme(), self.listen)
    }

    /// Whether the listeners serve TLS (`--tls-cert` and `--tls-key`).
    pub fn serves_tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// The scheme of this node's listeners.
    fn scheme(&self) -> &'static str {
        if self.serves_tls() {
            "https"
        } else {
            "http"
        }
    }

    fn listener(&self) -> SocketAddr {
        match self.transport {
            TransportKind::Rest => self.listen,
            TransportKind::Grpc => self.grpc_listen,
        }
    }

    /// Checks across flags, run before anything starts. With `--transport grpc` the voters come
    /// from `--peer` while traffic goes to `--peer-grpc`: both must name the same nodes.
    pub fn validate(&self) -> Result<(), String> {
        let open = self.client_token.is_none() && self.admin_token.is_none();
        if open && !self.listen.ip().is_loopback() && !self.allow_open_api {
            return Err(format!(
                "the HTTP API on {} would be open to anyone who reaches it: set --client-token and \
                 --admin-token (or KOMMANDER_CLIENT_TOKEN / KOMMANDER_ADMIN_TOKEN), or pass --allow-open-api",
                self.listen
            ));
        }
        if let Some(error) = self.tls_problem() {
            return Err(error);
        }
        if self.join && self.peers.is_empty() {
            return Err("--join needs at least one --peer: the running nodes (seeds) asked to add this one".into());
        }
        if self.transport == TransportKind::Grpc {
            let voters: BTreeSet<u64> = self.peers.iter().map(|(n, _)| *n).collect();
            let reachable: BTreeSet<u64> = self.grpc_peers.iter().map(|(n, _)| *n).collect();
            if voters != reachable {
                let only_http: Vec<_> = voters.difference(&reachable).collect();
                let only_grpc: Vec<_> = reachable.difference(&voters).collect();
                return Err(format!(
                    "with --transport grpc, --peer and --peer-grpc must name the same node ids \
                     (voters come from --peer, traffic goes to --peer-grpc); \
                     only in --peer: {only_http:?}, only in --peer-grpc: {only_grpc:?}"
                ));
            }
        }
        Ok(())
    }

    /// The TLS flags' rules: `--tls-cert` and `--tls-key` together; `https://` peers (those this
    /// node calls: `--peer`, and `--peer-grpc` with gRPC) need `--tls-ca`; `--advertise` names the
    /// transport listener's scheme.
    fn tls_problem(&self) -> Option<String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Some("--tls-cert needs --tls-key: the private key of the certificate (PEM)".into())
            }
            (None, Some(_)) => {
                return Some("--tls-key needs --tls-cert: the certificate chain of the key (PEM)".into())
            }
            _ => {}
        }
        let mut called = self.peers.iter().chain(match self.transport {
            TransportKind::Rest => &[][..],
            TransportKind::Grpc => &self.grpc_peers[..],
        });
        if self.tls_ca.is_none() {
            if let Some((node, url)) = called.find(|(_, url)| url.starts_with("https://")) {
                return Some(format!(
                    "peer {node} is {url}: https:// peers need --tls-ca, the CA certificates (PEM) \
                     their certificates are checked against"
                ));
            }
        }
        if let Some(advertise) = &self.advertise {
            let https = advertise.starts_with("https://");
            if https != self.serves_tls() {
                let (listener, wanted) = if self.serves_tls() {
                    ("serves HTTPS (--tls-cert)", "https://")
                } else {
                    ("serves plain HTTP (no --tls-cert)", "http://")
                };
                return Some(format!(
                    "--advertise {advertise}: this node's transport listener {listener}, so other \
                     nodes must reach it by an {wanted} URL"
                ));
            }
        }
        None
    }

    /// Suspicious but valid settings, to log at startup.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.peers.is_empty() {
            warnings.push("no --peer given: this node forms a single-node cluster on its own".to_string());
        }
        if self.advertise.is_none() && self.listener().ip().is_unspecified() {
            warnings.push(format!(
                "advertising {} to other nodes: an unspecified address; pass --advertise with a reachable URL",
                self.advertise_address()
            ));
        }
        if self.client_token.is_none() && self.admin_token.is_none() && !self.listen.ip().is_loopback() {
            warnings.push(format!("no API tokens: the HTTP API on {} is open to anyone who reaches it", self.listen));
        }
        if self.serves_tls() {
            let called = self.transport_peers();
            let plain: Vec<String> =
                called.iter().filter(|(_, url)| url.starts_with("http://")).map(|(node, _)| node.to_string()).collect();
            if !plain.is_empty() {
                warnings.push(format!("this node serves TLS but calls peers {} over plain http://", plain.join(", ")));
            }
        }
        if self.transport == TransportKind::Rest && !self.grpc_peers.is_empty() {
            warnings.push("--peer-grpc is ignored with --transport rest".to_string());
        }
        warnings
    }
}

/// Bytes a cluster id may have (the transports' limit, `MessageLimits::max_cluster_id_bytes`).
const MAX_CLUSTER_ID_BYTES: usize = 256;

fn parse_cluster_id(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_CLUSTER_ID_BYTES {
        return Err(format!("the cluster id must have 1 to {MAX_CLUSTER_ID_BYTES} bytes, not {}", text.len()));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the cluster id must be printable ASCII without spaces (it travels in HTTP headers)".into());
    }
    Ok(text.to_string())
}

fn parse_secret(text: &str) -> Result<String, String> {
    kommander::net::check_secret(text.as_bytes()).map_err(|error| match error {
        kommander::core::TransportError::Setup(why) => why,
        other => other.to_string(),
    })?;
    Ok(text.to_string())
}

const MIN_TOKEN_BYTES: usize = 16;

fn parse_token(text: &str) -> Result<String, String> {
    if text.len() < MIN_TOKEN_BYTES {
        return Err(format!("an API token needs at least {MIN_TOKEN_BYTES} bytes, not {}", text.len()));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("an API token must be printable ASCII without spaces (it travels in a header)".into());
    }
    Ok(text.to_string())
}

fn parse_peer(text: &str) -> Result<(u64, String), String> {
    let (id, url) = text.split_once('=').ok_or("expected ID=URL")?;
    let id = id.trim().parse::<u64>().map_err(|e| format!("bad node id {id:?}: {e}"))?;
    Ok((id, parse_url(url)?))
}

/// `http://host[:port]` or `https://host[:port]` (whether https is usable is checked across
/// flags, by [`Args::validate`]).
fn parse_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim_end_matches('/');
    let Some(rest) = trimmed.strip_prefix("http://").or_else(|| trimmed.strip_prefix("https://")) else {
        return Err(format!("URL {url:?} must start with http:// or https://"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("URL {url:?} has no host"));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec!["kommander-server", "--node-id", "1", "--secret", "s3cret-s3cret"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    }

    #[test]
    fn grpc_peers_must_name_the_voters() {
        let grpc = ["--transport", "grpc", "--peer", "2=http://h:1", "--peer", "3=http://h:2"];
        let same = parse(&[&grpc[..], &["--peer-grpc", "2=http://h:11", "--peer-grpc", "3=http://h:12"]].concat());
        assert_eq!(same.unwrap().validate(), Ok(()));
        let other = parse(&[&grpc[..], &["--peer-grpc", "2=http://h:11", "--peer-grpc", "4=http://h:12"]].concat());
        let error = other.unwrap().validate().unwrap_err();
        assert!(error.contains("only in --peer: [3]") && error.contains("only in --peer-grpc: [4]"), "{error}");
        let missing = parse(&grpc).unwrap().validate().unwrap_err();
        assert!(missing.contains("--peer-grpc"), "{missing}");
        // REST ignores --peer-grpc (with a warning).
        let rest = parse(&["--peer", "2=http://h:1", "--peer-grpc", "5=http://h:9"]).unwrap();
        assert_eq!(rest.validate(), Ok(()));
        assert_eq!(rest.warnings().len(), 1);
    }

    #[test]
    fn an_open_api_needs_loopback_or_an_explicit_flag() {
        assert_eq!(parse(&[]).unwrap().validate(), Ok(()), "loopback without tokens");
        let exposed = parse(&["--listen", "0.0.0.0:7001"]).unwrap().validate().unwrap_err();
        assert!(exposed.contains("--client-token") && exposed.contains("--allow-open-api"), "{exposed}");
        let allowed = parse(&["--listen", "0.0.0.0:7001", "--allow-open-api"]).unwrap();
        assert_eq!(allowed.validate(), Ok(()));
        assert!(allowed.warnings().iter().any(|w| w.contains("open to anyone")));
        let tokens = ["--client-token", "client-token-0123", "--admin-token", "admin-token-01234"];
        let guarded = parse(&[&["--listen", "0.0.0.0:7001"][..], &tokens].concat()).unwrap();
        assert_eq!(guarded.validate(), Ok(()));
        assert!(!guarded.enable_bench, "the load generator is off by default");
        assert!(parse(&["--client-token", "short"]).unwrap_err().to_string().contains("16 bytes"));
        assert!(parse(&["--admin-token", "has spaces in it ok?"]).unwrap_err().to_string().contains("printable"));
    }

    #[test]
    fn a_node_without_peers_is_warned_about() {
        let alone = parse(&[]).unwrap();
        assert_eq!(alone.validate(), Ok(()));
        assert!(alone.warnings().iter().any(|w| w.contains("no --peer")));
        assert!(parse(&["--peer", "2=http://h:1"]).unwrap().warnings().is_empty());
    }

    #[test]
    fn https_peers_need_a_ca_to_trust() {
        let https = parse(&["--peer", "2=https://h:1/"]).unwrap();
        assert_eq!(https.peers, vec![(2, "https://h:1".to_string())]);
        let error = https.validate().unwrap_err();
        assert!(error.contains("peer 2 is https://h:1") && error.contains("--tls-ca"), "{error}");
        assert_eq!(parse(&["--peer", "2=https://h:1", "--tls-ca", "ca.pem"]).unwrap().validate(), Ok(()));
        // gRPC peers are called with --transport grpc only.
        let grpc = ["--transport", "grpc", "--peer", "2=http://h:1", "--peer-grpc", "2=https://h:11"];
        let error = parse(&grpc).unwrap().validate().unwrap_err();
        assert!(error.contains("peer 2 is https://h:11") && error.contains("--tls-ca"), "{error}");
        assert_eq!(parse(&[&grpc[..], &["--tls-ca", "ca.pem"]].concat()).unwrap().validate(), Ok(()));
        let rest = parse(&["--peer", "2=http://h:1", "--peer-grpc", "2=https://h:11"]).unwrap();
        assert_eq!(rest.validate(), Ok(()), "--peer-grpc is not called with --transport rest");
        for bad in ["2=ftp://h:1", "2=https://", "2=https:///x", "2=h:1"] {
            assert!(parse(&["--peer", bad]).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse(&["--peer", "2=http://h:1/"]).unwrap().peers, vec![(2, "http://h:1".to_string())]);
    }

    #[test]
    fn a_certificate_needs_its_key_and_the_reverse() {
        let error = parse(&["--tls-cert", "c.pem"]).unwrap().validate().unwrap_err();
        assert!(error.contains("--tls-cert needs --tls-key"), "{error}");
        let error = parse(&["--tls-key", "k.pem"]).unwrap().validate().unwrap_err();
        assert!(error.contains("--tls-key needs --tls-cert"), "{error}");
        let both = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert_eq!(both.validate(), Ok(()));
        assert!(both.serves_tls());
        assert!(!parse(&["--tls-cert", "c.pem"]).unwrap().serves_tls());
        assert_eq!(both.tls_cert, Some(PathBuf::from("c.pem")));
    }

    #[test]
    fn a_node_serving_tls_advertises_https() {
        let tls = ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--listen", "127.0.0.1:7001"];
        let rest = parse(&tls).unwrap();
        assert_eq!(rest.advertise_address(), "https://127.0.0.1:7001");
        assert_eq!(rest.api_address(), "https://127.0.0.1:7001");
        let grpc = parse(&[&tls[..], &["--transport", "grpc", "--grpc-listen", "127.0.0.1:9000"]].concat()).unwrap();
        assert_eq!(grpc.advertise_address(), "https://127.0.0.1:9000");
        assert_eq!(grpc.api_address(), "https://127.0.0.1:7001");
        let plain = parse(&[]).unwrap();
        assert_eq!(
            (plain.advertise_address(), plain.api_address()),
            ("http://127.0.0.1:7001".into(), "http://127.0.0.1:7001".into())
        );
        // An explicit --advertise must name the listener's scheme.
        let error = parse(&[&tls[..], &["--advertise", "http://me:7"]].concat()).unwrap().validate().unwrap_err();
        assert!(error.contains("serves HTTPS") && error.contains("https://"), "{error}");
        let error = parse(&["--advertise", "https://me:7"]).unwrap().validate().unwrap_err();
        assert!(error.contains("serves plain HTTP"), "{error}");
        let https = parse(&[&tls[..], &["--advertise", "https://me:7/"]].concat()).unwrap();
        assert_eq!((https.validate(), https.advertise_address()), (Ok(()), "https://me:7".into()));
        // Serving TLS while calling peers over plain http is allowed, with a warning.
        let mixed = parse(&[&tls[..], &["--peer", "2=http://h:1"]].concat()).unwrap();
        assert_eq!(mixed.validate(), Ok(()));
        assert!(
            mixed.warnings().iter().any(|w| w.contains("plain http://") && w.contains("n2")),
            "{:?}",
            mixed.warnings()
        );
    }

    #[test]
    fn tls_does_not_open_the_api_beyond_loopback() {
        let tls = ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--listen", "0.0.0.0:7001"];
        let exposed = parse(&tls).unwrap().validate().unwrap_err();
        assert!(exposed.contains("--client-token") && exposed.contains("--allow-open-api"), "{exposed}");
        assert_eq!(parse(&[&tls[..], &["--allow-open-api"]].concat()).unwrap().validate(), Ok(()));
    }

    #[test]
    fn join_advertise_and_leave_flags() {
        let founder = parse(&["--peer", "2=http://h:1"]).unwrap();
        assert!(!founder.join && !founder.leave_on_sigterm);
        assert_eq!(founder.advertise_address(), "http://127.0.0.1:7001");
        assert_eq!(founder.transport_peers(), founder.http_peers());
        let grpc = parse(&["--transport", "grpc", "--grpc-listen", "127.0.0.1:9000"]).unwrap();
        assert_eq!(grpc.advertise_address(), "http://127.0.0.1:9000");
        let joiner = parse(&["--join", "--peer", "2=http://h:1", "--advertise", "http://me:7/", "--leave-on-sigterm"]);
        let joiner = joiner.unwrap();
        assert!(joiner.join && joiner.leave_on_sigterm);
        assert_eq!(joiner.advertise_address(), "http://me:7");
        assert_eq!(joiner.validate(), Ok(()));
        let alone = parse(&["--join"]).unwrap().validate().unwrap_err();
        assert!(alone.contains("--join needs"), "{alone}");
        for bad in ["me:7", "http://", "http:///x", "https://", "ftp://me:7"] {
            assert!(parse(&["--advertise", bad]).is_err(), "{bad:?} accepted");
        }
        let wildcard = parse(&["--listen", "0.0.0.0:7001", "--peer", "2=http://h:1"]).unwrap();
        assert!(wildcard.warnings().iter().any(|w| w.contains("--advertise")), "{:?}", wildcard.warnings());
    }

    #[test]
    fn cluster_ids_must_be_short_printable_ascii() {
        let long = "c".repeat(257);
        for bad in ["", "clüster", "with space", "tab\there", long.as_str()] {
            assert!(parse(&["--cluster-id", bad]).is_err(), "{bad:?} accepted");
        }
        let longest = "c".repeat(256);
        assert_eq!(parse(&["--cluster-id", &longest]).unwrap().cluster_id, longest);
    }

    #[test]
    fn secrets_must_have_at_least_eight_bytes() {
        for bad in ["", "1234567"] {
            let argv = ["kommander-server", "--node-id", "1", "--secret", bad];
            let error = Args::try_parse_from(argv).unwrap_err().to_string();
            assert!(error.contains("secret"), "{error}");
        }
        let argv = ["kommander-server", "--node-id", "1", "--secret", "12345678"];
        assert_eq!(Args::try_parse_from(argv).unwrap().secret, "12345678");
    }
}

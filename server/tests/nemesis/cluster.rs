//! The processes of a nemesis run: three `kommander-server` founders on loopback whose links to
//! each other (the Raft transport and the HTTP forwarding of client requests) go through the
//! fault-injecting proxies of [`super::proxy`] (`--pin-peers` keeps the nodes dialling the
//! proxies rather than the addresses the roster records), nodes that join and are removed again
//! (their links are direct), SQLite WALs in a temporary directory, the signals the nemesis
//! sends (SIGKILL, SIGSTOP and SIGCONT), and each node's wall clock, shifted through libfaketime
//! when it is installed (the monotonic clock is left alone, as a real clock step leaves it).

use super::proxy::Network;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SERVER: &str = env!("CARGO_BIN_EXE_kommander-server");
/// The founding nodes.
pub const FOUNDERS: [u64; 3] = [1, 2, 3];
const SECRET: &str = "nemesis-test-secret";
/// libfaketime (`apt-get install faketime`; `.ci/run` installs it).
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Whether nodes' wall clocks can be shifted (libfaketime is installed).
pub fn clock_faults_available() -> bool {
    Path::new(FAKETIME).exists()
}

/// Which transport carries Raft traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// HTTP + MessagePack.
    Rest,
    /// gRPC.
    Grpc,
}

impl Transport {
    fn flag(self) -> &'static str {
        match self {
            Transport::Rest => "rest",
            Transport::Grpc => "grpc",
        }
    }
}

/// A node's libfaketime offset file, created at the real time.
fn clock_file(dir: &Path, id: u64) -> PathBuf {
    let path = dir.join(format!("n{id}.clock"));
    std::fs::write(&path, "+0\n").expect("write the clock offset");
    path
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::ports::free_port()))
}

struct Node {
    args: Vec<String>,
    /// Where clients reach it (directly, not through a proxy).
    url: String,
    log: PathBuf,
    /// The libfaketime offset file of its wall clock (`+0`: the real time).
    clock: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// The running cluster. Dropping it kills every process.
pub struct Cluster {
    nodes: BTreeMap<u64, Node>,
    /// Links between the nodes' HTTP listeners (forwarded client requests; REST Raft traffic).
    pub http: Network,
    /// Links between the gRPC listeners (gRPC Raft traffic).
    pub grpc: Option<Network>,
    /// The founders' real HTTP and gRPC addresses (what joiners use as seeds).
    founders: BTreeMap<u64, (SocketAddr, SocketAddr)>,
    /// Logs of nodes that left.
    gone: Vec<(u64, PathBuf)>,
    transport: Transport,
    partitions: u32,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Start the proxies and the three founders with `partitions` user partitions.
    pub async fn start(transport: Transport, partitions: u32) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let http_addrs: BTreeMap<u64, SocketAddr> = FOUNDERS.iter().map(|&n| (n, free_addr())).collect();
        let grpc_addrs: BTreeMap<u64, SocketAddr> = FOUNDERS.iter().map(|&n| (n, free_addr())).collect();
        let http = Network::start(&http_addrs).await.expect("proxies");
        let grpc = match transport {
            Transport::Grpc => Some(Network::start(&grpc_addrs).await.expect("proxies")),
            Transport::Rest => None,
        };
        let mut nodes = BTreeMap::new();
        for &id in &FOUNDERS {
            let mut args = vec![
                format!("--node-id={id}"),
                format!("--listen={}", http_addrs[&id]),
                format!("--grpc-listen={}", grpc_addrs[&id]),
                format!("--partitions={partitions}"),
                format!("--dir={}", dir.path().join(format!("n{id}")).display()),
                "--wal=sqlite".into(),
                format!("--transport={}", transport.flag()),
                format!("--secret={SECRET}"),
                "--cluster-id=nemesis".into(),
                "--tick-ms=25".into(),
                "--pin-peers".into(),
                // Small logs: snapshots and compaction happen during the run.
                "--snapshot-interval=200".into(),
                "--snapshot-tail=50".into(),
            ];
            for &peer in FOUNDERS.iter().filter(|&&p| p != id) {
                args.push(format!("--peer={peer}={}", http.url(id, peer)));
                if let Some(grpc) = &grpc {
                    args.push(format!("--peer-grpc={peer}={}", grpc.url(id, peer)));
                }
            }
            let log = dir.path().join(format!("n{id}.log"));
            let url = format!("http://{}", http_addrs[&id]);
            let clock = clock_file(dir.path(), id);
            nodes.insert(id, Node { args, url, log, clock, child: None, paused: false });
        }
        let founders = FOUNDERS.iter().map(|&n| (n, (http_addrs[&n], grpc_addrs[&n]))).collect();
        let mut cluster = Cluster { nodes, http, grpc, founders, gone: Vec::new(), transport, partitions, _dir: dir };
        for id in FOUNDERS {
            cluster.start_node(id);
        }
        cluster
    }

    /// Start a new node (an id never used in this run, with an empty directory: a removed node's
    /// id is not reused) that joins the running cluster through the founders (its links are
    /// direct: the founders learn its address from the roster). Returns its id.
    pub fn add_joiner(&mut self) -> u64 {
        let id = self.ids().into_iter().chain(self.gone.iter().map(|(id, _)| *id)).max().unwrap_or(0) + 1;
        let (http, grpc) = (free_addr(), free_addr());
        let dir = self._dir.path();
        let mut args = vec![
            format!("--node-id={id}"),
            format!("--listen={http}"),
            format!("--grpc-listen={grpc}"),
            format!("--partitions={}", self.partitions),
            format!("--dir={}", dir.join(format!("n{id}")).display()),
            "--wal=sqlite".into(),
            format!("--transport={}", self.transport.flag()),
            format!("--secret={SECRET}"),
            "--cluster-id=nemesis".into(),
            "--tick-ms=25".into(),
            "--join".into(),
        ];
        for (seed, (seed_http, seed_grpc)) in &self.founders {
            args.push(format!("--peer={seed}=http://{seed_http}"));
            args.push(format!("--peer-grpc={seed}=http://{seed_grpc}"));
        }
        let log = dir.join(format!("n{id}.log"));
        let clock = clock_file(dir, id);
        self.nodes.insert(id, Node { args, url: format!("http://{http}"), log, clock, child: None, paused: false });
        self.start_node(id);
        id
    }

    /// Kill `id` and forget it (after it was removed from the cluster). Its log stays.
    pub fn forget(&mut self, id: u64) {
        self.kill(id);
        if let Some(node) = self.nodes.remove(&id) {
            self.gone.push((id, node.log));
        }
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Client URL of `id`.
    pub fn url(&self, id: u64) -> String {
        self.nodes[&id].url.clone()
    }

    /// Is `id`'s process running (paused or not)?
    pub fn is_running(&self, id: u64) -> bool {
        self.nodes[&id].child.is_some()
    }

    /// Start `id` (a no-op when it runs).
    pub fn start_node(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        if node.child.is_some() {
            return;
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).unwrap();
        let mut command = Command::new(SERVER);
        if clock_faults_available() {
            command
                .env("LD_PRELOAD", FAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", &node.clock)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        let child = command
            .args(&node.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kommander-server");
        node.child = Some(child);
        node.paused = false;
    }

    /// Shift `id`'s wall clock to `seconds` away from the real time (0: back to the real time);
    /// the process sees the step within a second.
    pub fn shift_clock(&self, id: u64, seconds: i64) {
        std::fs::write(&self.nodes[&id].clock, format!("{seconds:+}\n")).expect("write the clock offset");
    }

    /// SIGKILL `id` (a no-op when it is not running).
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    fn signal(&self, id: u64, signal: &str) {
        if let Some(child) = &self.nodes[&id].child {
            let _ = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
        }
    }

    /// SIGSTOP `id`.
    pub fn pause(&mut self, id: u64) {
        if self.is_running(id) {
            self.signal(id, "STOP");
            self.nodes.get_mut(&id).unwrap().paused = true;
        }
    }

    /// SIGCONT every paused node.
    pub fn resume_all(&mut self) {
        let paused: Vec<u64> = self.nodes.iter().filter(|(_, n)| n.paused).map(|(&id, _)| id).collect();
        for id in paused {
            self.signal(id, "CONT");
            self.nodes.get_mut(&id).unwrap().paused = false;
        }
    }

    /// Heal every link.
    pub fn heal_network(&self) {
        self.http.heal();
        if let Some(grpc) = &self.grpc {
            grpc.heal();
        }
    }

    /// Cut the links between `groups` (nodes in no group are alone).
    pub fn partition(&self, groups: &[&[u64]]) {
        self.http.partition(groups);
        if let Some(grpc) = &self.grpc {
            grpc.partition(groups);
        }
    }

    /// Lines of the nodes' logs that report a panic.
    pub fn panics(&self) -> Vec<String> {
        let mut found = Vec::new();
        let logs = self.nodes.iter().map(|(id, n)| (*id, &n.log)).chain(self.gone.iter().map(|(id, l)| (*id, l)));
        for (id, log) in logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            found.extend(text.lines().filter(|l| l.contains("panicked")).map(|l| format!("n{id}: {l}")));
        }
        found
    }

    /// Copy the logs into `into`.
    pub fn keep_logs(&self, into: &Path) {
        let logs = self.nodes.iter().map(|(id, n)| (*id, &n.log)).chain(self.gone.iter().map(|(id, l)| (*id, l)));
        for (id, log) in logs {
            let _ = std::fs::copy(log, into.join(format!("n{id}.log")));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.resume_all();
        for id in self.ids() {
            self.kill(id);
        }
    }
}

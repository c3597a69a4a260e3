//! Shared by the process benchmarks (`bench_partitions`, `bench_restart`): three real
//! `kommander-server` processes on loopback (REST transport, a shared secret, free ports, each
//! node's stderr in `n<id>.log` of a temporary directory under `/var/tmp`; `BENCH_LOG` sets the
//! nodes' `RUST_LOG`, default `warn`; `BENCH_KEEP=1` keeps the directory), their `/status`, and
//! keys that land on chosen partitions of the genesis map.

#![allow(dead_code)]

use kommander::core::system::{key_hash, HashRange};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "bench-nodes-secret";

/// `target/<profile>/kommander-server`, next to the running example's directory.
pub fn default_server() -> PathBuf {
    let me = std::env::current_exe().expect("locate this executable");
    me.parent().and_then(Path::parent).expect("target/<profile>").join("kommander-server")
}

#[path = "../../tests/support/ports.rs"]
mod ports;

use ports::free_port;

/// Three node processes on loopback; killed (SIGKILL) on drop, then the data dir is deleted.
pub struct Nodes {
    server: PathBuf,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    /// Every node's flags but its id, address, directory and peers.
    flags: Vec<String>,
    pub dir: tempfile::TempDir,
}

impl Nodes {
    /// Start nodes 1–3 of `server` with `flags` (`--partitions=…`, `--wal=…`, …).
    pub fn start(server: &Path, prefix: &str, flags: Vec<String>) -> std::io::Result<Nodes> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in("/var/tmp")?;
        let ports = (0..3).map(|_| free_port()).collect();
        let mut nodes = Nodes { server: server.to_path_buf(), ports, children: vec![None, None, None], flags, dir };
        for id in 1..=3 {
            nodes.spawn(id)?;
        }
        Ok(nodes)
    }

    /// (Re)start node `id` over its data directory.
    pub fn spawn(&mut self, id: usize) -> std::io::Result<()> {
        let mut args = vec![
            format!("--node-id={id}"),
            format!("--listen=127.0.0.1:{}", self.ports[id - 1]),
            format!("--dir={}", self.dir.path().join(format!("n{id}")).display()),
            "--transport=rest".into(),
            // bench_snapshots drives its load through `POST /bench/load`, off unless asked for.
            "--enable-bench".into(),
        ];
        args.extend(self.flags.iter().cloned());
        args.extend((1..=3).filter(|&p| p != id).map(|p| format!("--peer={p}={}", self.url(p))));
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(format!("n{id}.log")))?;
        let child = Command::new(&self.server)
            .args(args)
            .env("RUST_LOG", std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .env("KOMMANDER_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.children[id - 1] = Some(child);
        Ok(())
    }

    pub fn url(&self, id: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[id - 1])
    }

    /// SIGKILL node `id`.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.children[id - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM node `id` and wait for it to exit (SIGKILL after `patience`); how long it took.
    pub fn terminate(&mut self, id: usize, patience: Duration) -> Duration {
        let Some(mut child) = self.children[id - 1].take() else { return Duration::ZERO };
        let started = Instant::now();
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > patience {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        started.elapsed()
    }

    /// Node `id` runs (it was not killed or terminated).
    pub fn is_running(&self, id: usize) -> bool {
        self.children[id - 1].is_some()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().flatten().map(Child::id).collect()
    }

    /// A node that exited on its own, with the end of its log.
    pub fn crashed(&mut self) -> Option<String> {
        for id in 1..=3 {
            let exited = self.children[id - 1].as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(code) = exited {
                let log = std::fs::read_to_string(self.dir.path().join(format!("n{id}.log"))).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
                return Some(format!("node {id} exited ({code}): {tail}"));
            }
        }
        None
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for id in 1..=3 {
            self.kill(id);
        }
        if std::env::var("BENCH_KEEP").as_deref() == Ok("1") {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("a temp dir"));
            eprintln!("kept {}", kept.keep().display());
        }
    }
}

/// A node's `GET /status`.
pub async fn status(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = client.get(format!("{url}/status")).send().await.ok()?;
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

/// `partition -> (leader seen by this node, this node leads it)`.
pub fn leaders(status: &Value) -> BTreeMap<u64, (Option<u64>, bool)> {
    let partitions = status["partitions"].as_array().map(Vec::as_slice).unwrap_or_default();
    partitions
        .iter()
        .filter_map(|p| Some((p["partition"].as_u64()?, (p["leader"].as_u64(), p["is_leader"] == true))))
        .collect()
}

/// One key per partition of `wanted`, routed by the genesis map of `partitions` partitions.
pub fn keys_for(partitions: u32, wanted: &[u64]) -> BTreeMap<u64, String> {
    let ranges = HashRange::even(partitions);
    let mut keys = BTreeMap::new();
    for j in 0u64.. {
        let key = format!("bench-{j}");
        let p = ranges.partition_point(|r| r.end < key_hash(key.as_bytes())) as u64 + 1;
        if wanted.contains(&p) {
            keys.entry(p).or_insert(key);
            if keys.len() == wanted.len() {
                break;
            }
        }
    }
    keys
}

//! `kommanderctl`: the operator's command line for a `kommander-server` cluster. It calls a node's
//! HTTP API (any node: map and roster changes are forwarded to the partition-0 leader, transfers
//! to the partition's leader) and prints tables, or the API's JSON with `--json`.
//!
//! ```text
//! kommanderctl [--url http://127.0.0.1:7001] [--token TOKEN] [--ca CA.pem] [--json] <command>
//!   status | cluster | get KEY | put KEY VALUE | create | remove P | split P [BOUNDARY]
//!   merge SURVIVOR SOURCE | add-learner NODE URL | remove-node NODE | transfer P NODE | snapshot P
//! ```
//! `--token` (or `KOMMANDER_TOKEN`) is sent as a bearer token: the admin token for admin commands,
//! the client token (or the admin one) for `status`, `get` and `put`. An `https://` URL needs
//! `--ca` (or `KOMMANDER_CA`): the CA certificates (PEM) the node's certificate is checked against
//! (the nodes' `--tls-ca`); no other root is trusted. A refused request prints the node's error
//! and exits with status 1; an unreachable node (or one whose certificate is not trusted) exits
//! with status 2.

use clap::{Parser, Subcommand};
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

/// Operate a kommander cluster through a node's HTTP API.
#[derive(Debug, Parser)]
#[command(name = "kommanderctl", version, about)]
struct Cli {
    /// A node's HTTP API.
    #[arg(long, env = "KOMMANDER_URL", default_value = "http://127.0.0.1:7001")]
    url: String,
    /// Bearer token (admin scope for admin commands).
    #[arg(long, env = "KOMMANDER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificates (PEM) to trust for an https:// URL (no other root is trusted).
    #[arg(long, env = "KOMMANDER_CA", value_name = "PATH")]
    ca: Option<std::path::PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Partitions on the node: term, leader, indexes, lag.
    Status,
    /// The partition map and the roster.
    Cluster,
    /// Read a key (linearizable).
    Get { key: String },
    /// Write a key.
    Put { key: String, value: String },
    /// Create a partition (it owns no key range until a split or merge gives it one).
    Create,
    /// Remove a partition that owns no key range.
    Remove { partition: u32 },
    /// Split a partition's key range (at BOUNDARY, a key hash; default its middle).
    Split { partition: u32, boundary: Option<u64> },
    /// Merge SOURCE into SURVIVOR (adjacent ranges).
    Merge { survivor: u32, source: u32 },
    /// Add a node as a learner (promoted to voter once caught up).
    AddLearner { node: u64, url: String },
    /// Remove a node from the cluster.
    RemoveNode { node: u64 },
    /// Hand a partition's leadership to a voter.
    Transfer { partition: u32, node: u64 },
    /// Snapshot a partition on this node now.
    Snapshot { partition: u32 },
}

/// What went wrong, and the exit status it gets.
enum Failure {
    /// The node answered with an error status.
    Refused(u16, String),
    /// No answer.
    Unreachable(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kommanderctl: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(status, body)) => {
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(body);
            eprintln!("kommanderctl: the node answered {status}: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(error)) => {
            eprintln!("kommanderctl: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: &Cli) -> Result<String, Failure> {
    use reqwest::Method;
    let (method, path, body) = match &cli.command {
        Command::Status => (Method::GET, "status".to_string(), String::new()),
        Command::Cluster => (Method::GET, "admin/cluster".into(), String::new()),
        Command::Get { key } => (Method::GET, format!("kv/{key}"), String::new()),
        Command::Put { key, value } => (Method::PUT, format!("kv/{key}"), value.clone()),
        Command::Create => (Method::POST, "admin/partitions".into(), String::new()),
        Command::Remove { partition } => (Method::DELETE, format!("admin/partitions/{partition}"), String::new()),
        Command::Split { partition, boundary } => {
            (Method::POST, format!("admin/split/{partition}"), boundary.map(|b| b.to_string()).unwrap_or_default())
        }
        Command::Merge { survivor, source } => {
            (Method::POST, format!("admin/merge/{survivor}/{source}"), String::new())
        }
        Command::AddLearner { node, url } => (Method::POST, format!("admin/nodes/{node}"), url.clone()),
        Command::RemoveNode { node } => (Method::DELETE, format!("admin/nodes/{node}"), String::new()),
        Command::Transfer { partition, node } => {
            (Method::POST, format!("admin/transfer/{partition}/{node}"), String::new())
        }
        Command::Snapshot { partition } => (Method::POST, format!("admin/snapshot/{partition}"), String::new()),
    };
    let client = http_client(cli.ca.as_deref()).map_err(Failure::Unreachable)?;
    let url = format!("{}/{path}", cli.url.trim_end_matches('/'));
    let mut request = client.request(method, &url).body(body);
    if let Some(token) = &cli.token {
        request = request.header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request.send().await.map_err(|e| Failure::Unreachable(format!("{url}: {}", chain(&e))))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| Failure::Unreachable(format!("{url}: {}", chain(&e))))?;
    if !(200..300).contains(&status) {
        return Err(Failure::Refused(status, text));
    }
    if matches!(cli.command, Command::Get { .. }) {
        return Ok(text);
    }
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if cli.json {
        return Ok(serde_json::to_string_pretty(&json).unwrap_or_default());
    }
    Ok(match cli.command {
        Command::Status => status_table(&json),
        Command::Cluster => cluster_tables(&json),
        _ => one_line(&json),
    })
}

/// The HTTP client, trusting the certificates of `ca` (PEM) for https:// URLs, and no other.
fn http_client(ca: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30)).tls_built_in_root_certs(false);
    if let Some(path) = ca {
        let what = |e: &dyn std::fmt::Display| format!("--ca {}: {e}", path.display());
        let pem = std::fs::read(path).map_err(|e| what(&e))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| what(&chain(&e)))?;
        if certs.is_empty() {
            return Err(what(&"no certificate in the file (expected PEM `BEGIN CERTIFICATE` sections)"));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| chain(&e))
}

/// An error and its sources, `: `-separated (reqwest's own message omits why a connection failed,
/// e.g. an untrusted certificate).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `key=value` pairs of a flat JSON object.
fn one_line(json: &Value) -> String {
    match json.as_object() {
        Some(fields) => fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
        None => json.to_string(),
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Rows under a header, columns padded to their widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells.iter().enumerate().map(|(i, c)| format!("{c:>w$}", w = widths[i])).collect::<Vec<_>>().join("  ")
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

fn status_table(json: &Value) -> String {
    let columns = [
        "partition",
        "term",
        "leader",
        "is_leader",
        "commit_index",
        "applied_index",
        "last_index",
        "snapshot_index",
        "replication_lag",
    ];
    let rows = json["partitions"]
        .as_array()
        .map(|ps| ps.iter().map(|p| columns.iter().map(|c| cell(&p[*c])).collect()).collect())
        .unwrap_or_default();
    format!("node {}\n{}", cell(&json["node"]), table(&columns, rows))
}

fn cluster_tables(json: &Value) -> String {
    let members: Vec<Vec<String>> = json["roster"]["members"]
        .as_object()
        .map(|ms| {
            ms.iter()
                .map(|(id, m)| vec![id.clone(), cell(&m["role"]), cell(&m["address"]), cell(&m["application_address"])])
                .collect()
        })
        .unwrap_or_default();
    let partitions: Vec<Vec<String>> = match &json["map"]["partitions"] {
        Value::Array(ps) => ps.iter().map(partition_row).collect(),
        Value::Object(ps) => ps.values().map(partition_row).collect(),
        _ => Vec::new(),
    };
    format!(
        "roster (version {})\n{}\n\npartition map (version {})\n{}",
        cell(&json["roster"]["version"]),
        table(&["node", "role", "address", "api"], members),
        cell(&json["map"]["version"]),
        table(&["partition", "state", "generation", "range"], partitions)
    )
}

fn partition_row(p: &Value) -> Vec<String> {
    let range = match (p["range"]["start"].as_u64(), p["range"]["end"].as_u64()) {
        (Some(start), Some(end)) => format!("{start:#018x}..{end:#018x}"),
        _ => "-".into(),
    };
    vec![cell(&p["id"]), cell(&p["state"]), cell(&p["generation"]), range]
}

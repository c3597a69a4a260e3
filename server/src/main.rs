//! `kommander-server`: runs one kommander node with a demo replicated key-value store.
//!
//! ```text
//! cargo run -p kommander-server -- --node-id 1 --listen 127.0.0.1:7001 \
//!     --peer 2=http://127.0.0.1:7002 --peer 3=http://127.0.0.1:7003 --dir data/n1 --secret s3cret
//! ```
//! Flags: see `--help`. `PUT /kv/{key}` with the value as body writes through the key's partition
//! leader; `GET /kv/{key}` reads it (linearizable by default); `GET /status` shows partitions and
//! counters; `GET /healthz` and `GET /readyz` answer orchestrators. With `--client-token` and
//! `--admin-token` the API needs `Authorization: Bearer <token>` (without tokens it is served only
//! on loopback, unless `--allow-open-api`). The process runs on the mimalloc allocator.
//! SIGTERM or Ctrl-C stops the node cleanly (transport, partitions, HTTP server); the node stays a
//! member of the cluster. With `--leave-on-sigterm`, SIGTERM first removes the node from the
//! cluster (`leave_cluster`).
//!
//! With `--tls-cert` and `--tls-key` (PEM) the HTTP listener — and with `--transport grpc` the
//! gRPC listener — serves TLS (rustls, ring provider); `--tls-ca` names the CA certificates the
//! node trusts when it calls `https://` nodes (module [`tls`]).
//!
//! A node joins a running cluster with `--join`, naming running nodes (seeds) with `--peer`; the
//! other nodes learn its transport address from the roster (`--advertise`, by default its
//! listener's address):
//!
//! ```text
//! cargo run -p kommander-server -- --node-id 4 --listen 127.0.0.1:7004 --join \
//!     --peer 1=http://127.0.0.1:7001 --peer 2=http://127.0.0.1:7002 --dir data/n4 --secret s3cret
//! ```

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod api;
mod args;
mod auth;
mod bench;
mod kv;
mod metrics;
mod pinned;
mod tls;
mod transport;
mod ui;

use actix::prelude::*;
use actix_web::{App, HttpServer};
use args::Args;
use clap::{CommandFactory, Parser};
use kommander::prelude::*;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Err(message) = args.validate() {
        Args::command().error(clap::error::ErrorKind::ArgumentConflict, message).exit();
    }
    for warning in args.warnings() {
        tracing::warn!("{warning}");
    }
    // Read and check the TLS files before anything starts.
    let tls = match tls::NodeTls::load(args.tls_cert.as_deref(), args.tls_key.as_deref(), args.tls_ca.as_deref()) {
        Ok(tls) => tls,
        Err(error) => Args::command().error(clap::error::ErrorKind::InvalidValue, error).exit(),
    };
    let system = System::new();
    match system.block_on(run(args, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "kommander-server failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, tls: tls::NodeTls) -> Result<(), Box<dyn std::error::Error>> {
    let node = NodeId(args.node_id);
    std::fs::create_dir_all(&args.dir)?;
    let backend = WalBackend::from_name(&args.wal, &args.dir, &format!("node-{}", node.0))?;
    let wal = open_wal(&backend)?;
    // Before the runtime is built: it registers its metric handles with this recorder.
    let metrics = metrics::install()?;
    let mut network = transport::build(&args, &tls)?;
    if args.pin_peers {
        let pinned = args.peers.iter().map(|(id, _)| NodeId(*id));
        network.transport = std::sync::Arc::new(pinned::PinnedPeers::new(network.transport, pinned));
    }
    let kv = kv::KvState::default();
    let app = StateMachineActor::new(kv.clone()).start();
    let tick = Duration::from_millis(args.tick_ms.max(1));
    let config = RuntimeConfig {
        initial_partitions: args.partitions,
        tick,
        heartbeat_interval: tick,
        election_timeout: (tick * 10, tick * 20),
        join_existing: args.join,
        advertise_address: args.advertise_address(),
        // The KV API's address, recorded in the roster: any node can forward a client to the
        // leader's API (joined nodes included, not only the `--peer`s given on the command line).
        application_address: Some(args.api_address()),
        snapshot_interval_entries: args.snapshot_interval,
        snapshot_interval_bytes: args.snapshot_interval_bytes,
        quiesce_after: tick * args.quiesce_ticks,
        snapshot_tail_entries: args.snapshot_tail,
        hand_over_on_shutdown: !args.no_hand_over,
        lease_reads: !args.no_lease_reads,
        balance_leaders: !args.no_balance,
        // Snapshot files live next to the WAL files (in memory with the memory WAL).
        snapshot_dir: (args.wal != "memory").then(|| args.dir.join(format!("node-{}-snapshots", node.0))),
        ..RuntimeConfig::default()
    };
    // The contacts carry transport addresses, like the roster (and `--advertise`): the membership
    // driver hands roster addresses to the transport.
    let contacts = args.transport_peers().into_iter().map(|(node, address)| NodeContact { node, address }).collect();
    let manager = RaftManager::builder(node)
        .config(config)
        .wal(wal)
        .transport(network.transport.clone())
        .discovery(std::sync::Arc::new(StaticDiscovery::new(contacts)))
        .state_machine(&app)
        .build()?;
    let state = api::ApiState {
        manager: manager.clone(),
        kv,
        app,
        peers: args.http_peers(),
        client: tls.http_client(reqwest::Client::builder().timeout(Duration::from_secs(5)))?,
        net: network.stats.clone(),
        tokens: auth::ApiTokens::new(args.client_token.clone(), args.admin_token.clone()),
        joined: std::sync::Arc::default(),
        metrics: Some(metrics),
        metrics_partitions: args.metrics_partitions,
    };
    let joined = state.joined.clone();
    let enable_bench = args.enable_bench;
    let rest_routes = network.rest_routes.clone();
    let server = HttpServer::new(move || {
        let state = state.clone();
        let rest_routes = rest_routes.clone();
        App::new().configure(move |cfg| {
            api::configure(cfg, state, enable_bench);
            if let Some(routes) = rest_routes {
                routes(cfg);
            }
        })
    })
    .workers(2)
    .disable_signals();
    let server = match tls.server_config() {
        Some(config) => server.bind_rustls_0_23(args.listen, config)?,
        None => server.bind(args.listen)?,
    }
    .run();
    let server_handle = server.handle();
    actix_rt::spawn(server);
    manager.join_cluster().await?;
    joined.store(true, std::sync::atomic::Ordering::Release);
    let advertise = args.advertise_address();
    let (listen, transport) = (args.listen, args.transport);
    let tls = args.serves_tls();
    tracing::info!(%node, %listen, ?transport, %advertise, tls, join = args.join, wal = ?backend, "node running");

    let signal = wait_for_shutdown_signal().await;
    if signal == Signal::Terminate && args.leave_on_sigterm {
        tracing::info!(%node, "leaving the cluster");
        manager.leave_cluster().await;
    } else {
        tracing::info!(%node, "shutting down");
        manager.shutdown().await;
    }
    network.transport.stop();
    // Not graceful: the node no longer serves, so clients holding keep-alive connections must
    // see them close now and retry on another node, not wait for the workers to wind down.
    server_handle.stop(false).await;
    tracing::info!(%node, "stopped");
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Terminate,
    Interrupt,
}

async fn wait_for_shutdown_signal() -> Signal {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => Signal::Terminate,
        _ = tokio::signal::ctrl_c() => Signal::Interrupt,
    }
}

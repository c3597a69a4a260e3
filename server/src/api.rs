//! The node's HTTP API: `PUT /kv/{key}` (routed by the partition map to the key's partition,
//! written with the partition's generation as a guard — re-routed when a split or merge moved the
//! key — and forwarded to the partition's leader; during an election it waits for the leader),
//! `GET /kv/{key}` (this replica's applied value
//! in the partition that owns the key; `?consistency=linearizable` (the default) or `lease` reads
//! behind a read barrier — on any node, a follower asks the leader for the index — so the value
//! is at least as new as every acknowledged write; `local` reads this replica's applied value once
//! the partition finished replaying its log here: 503 with `Retry-After` after waiting
//! [`RESTORE_WAIT`]), `POST /admin/snapshot/{p}` (snapshot and compact a
//! partition on this node now), `GET /status` (partitions, leaders,
//! transport and WAL counters as JSON), `GET /metrics` (Prometheus, in [`crate::metrics`]),
//! `GET /ui` (the status page, in [`crate::ui`]), `GET /healthz` and `GET /readyz` (for
//! orchestrators), and
//! with `--enable-bench` `POST /bench/load` (the load generator of
//! `server/examples/bench_cluster.rs`, in [`bench`]). Who may call what: [`crate::auth`].

use crate::auth::{AdminAccess, ApiTokens, ClientAccess, Scope};
use crate::bench;
use crate::kv::{KvState, Put, PUT};
use actix_web::{web, HttpRequest, HttpResponse};
use kommander::net::NetStats;
use kommander::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Header marking a request another node forwarded (forwarded requests are never forwarded again).
pub(crate) const FORWARDED: &str = "x-kommander-forwarded";
/// How long a read waits for its partition to finish replaying its log on this replica.
pub const RESTORE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a write that found no leader (an election runs) waits for one before it is retried.
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Everything the handlers need.
#[derive(Clone)]
pub struct ApiState {
    /// This node.
    pub manager: RaftManager,
    /// Applied KV state.
    pub kv: KvState,
    /// The actor applying it (consistent reads run on it, after the entries they must see).
    pub app: actix::Addr<StateMachineActor<KvState>>,
    /// Peers' HTTP base URLs.
    pub peers: BTreeMap<NodeId, String>,
    /// Client for forwarding.
    pub client: reqwest::Client,
    /// Counters of the Raft transport.
    pub net: Arc<NetStats>,
    /// Who may call which endpoint.
    pub tokens: ApiTokens,
    /// Set once the node joined its cluster (`/readyz`).
    pub joined: Arc<std::sync::atomic::AtomicBool>,
    /// The Prometheus recorder's handle (`GET /metrics`).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Partitions with their own metric series at most.
    pub metrics_partitions: usize,
}

/// Mount the API routes (`/bench/load` only with `enable_bench`).
pub fn configure(cfg: &mut web::ServiceConfig, state: ApiState, enable_bench: bool) {
    cfg.app_data(web::Data::new(state.tokens.clone()))
        .app_data(web::Data::new(state))
        .route("/kv/{key}", web::put().to(put))
        .route("/kv/{key}", web::get().to(get))
        .route("/status", web::get().to(status))
        .route("/metrics", web::get().to(crate::metrics::scrape))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/admin/split/{partition}", web::post().to(split))
        .route("/admin/snapshot/{partition}", web::post().to(snapshot))
        .configure(crate::admin::configure)
        .configure(crate::ui::configure);
    if enable_bench {
        cfg.configure(bench::configure);
    }
}

/// `GET /healthz`: the process is up and serving HTTP (always open).
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// `GET /readyz` (always open): 200 once the node joined its cluster and every partition it hosts
/// finished restoring and knows its leader; otherwise 503 with what is missing.
async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    if !state.joined.load(Ordering::Acquire) {
        return HttpResponse::ServiceUnavailable().json(json!({ "ready": false, "reason": "not joined yet" }));
    }
    let mut restoring = Vec::new();
    let mut leaderless = Vec::new();
    for partition in std::iter::once(PartitionId::SYSTEM).chain(state.manager.partitions()) {
        match state.manager.status(partition) {
            Ok(status) if status.restoring => restoring.push(partition.0),
            Ok(status) if status.leader.is_none() => leaderless.push(partition.0),
            Ok(_) => {}
            Err(_) => restoring.push(partition.0),
        }
    }
    if restoring.is_empty() && leaderless.is_empty() {
        HttpResponse::Ok().json(json!({ "ready": true }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "ready": false, "restoring": restoring, "without_leader": leaderless,
        }))
    }
}

async fn put(
    _: ClientAccess,
    state: web::Data<ApiState>,
    key: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let key = key.into_inner();
    let Ok(value) = String::from_utf8(body.to_vec()) else {
        return HttpResponse::BadRequest().body("value must be UTF-8");
    };
    let payload = serde_json::to_vec(&Put { key: key.clone(), value: value.clone() }).expect("puts serialize");
    // A split or merge may move the key between the lookup and the write: the guard rejects the
    // write (nothing is applied) and the key is looked up again.
    let mut attempts = 0;
    let result = loop {
        attempts += 1;
        let info = match state.manager.partition_for_key(key.as_bytes()) {
            Ok(info) => info,
            Err(error) => break Err(error),
        };
        match state.manager.replicate_guarded(info.id, info.generation, PUT, vec![payload.clone()]).await {
            Err(ReplicateError::PartitionMoved { .. }) if attempts < 20 => {
                actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            // An election runs (nothing was appended): wait for its leader, then write again.
            Err(error @ ReplicateError::NotLeader { leader: None, .. }) if attempts < 20 => {
                if state.manager.wait_for_leader(info.id, LEADER_WAIT).await.is_err() {
                    break Err(error);
                }
            }
            other => break other.map(|committed| (info.id, committed)),
        }
    };
    match result {
        Ok((partition, committed)) => HttpResponse::Ok().json(json!({
            "partition": partition.0,
            "index": committed.last_index,
            "node": state.manager.node().0,
        })),
        Err(ReplicateError::NotLeader { leader: Some(leader), .. }) if !req.headers().contains_key(FORWARDED) => {
            forward(&state, leader, &key, value).await
        }
        // The leader is handing over to `to`: by the time the request gets there it leads.
        Err(ReplicateError::Rejected { source: kommander::core::ProposeError::LeadershipTransfer { to }, .. })
            if !req.headers().contains_key(FORWARDED) =>
        {
            actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
            forward(&state, to, &key, value).await
        }
        Err(error) => HttpResponse::ServiceUnavailable().body(error.to_string()),
    }
}

async fn forward(state: &ApiState, leader: NodeId, key: &str, value: String) -> HttpResponse {
    forward_to(state, leader, reqwest::Method::PUT, &format!("kv/{key}"), value, Scope::Client).await
}

/// Send the request on to `leader`'s HTTP API (marked as forwarded) and relay its answer.
pub(crate) async fn forward_to(
    state: &ApiState,
    leader: NodeId,
    method: reqwest::Method,
    path: &str,
    body: String,
    scope: Scope,
) -> HttpResponse {
    // The leader's API address from the roster (its `application_address`), else `--peer`.
    let recorded = state.manager.application_address(leader);
    let Some(base) = recorded.or_else(|| state.peers.get(&leader).cloned()) else {
        return HttpResponse::ServiceUnavailable().body(format!("no HTTP address for leader {leader}"));
    };
    let url = format!("{base}/{path}");
    let mut request = state.client.request(method, url).header(FORWARDED, "1").body(body);
    // The request was authorized here for `scope`: forward it with this node's token of it.
    if let Some(authorization) = state.tokens.forwarding_header(scope) {
        request = request.header(reqwest::header::AUTHORIZATION, authorization);
    }
    match request.send().await {
        Ok(response) => {
            let status = actix_web::http::StatusCode::from_u16(response.status().as_u16())
                .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
            let body = response.bytes().await.unwrap_or_default();
            HttpResponse::build(status).content_type("application/json").body(body)
        }
        Err(error) => HttpResponse::ServiceUnavailable().body(format!("forwarding to {leader} failed: {error}")),
    }
}

/// `POST /admin/split/{partition}` (body: an optional key-hash boundary; default the middle of
/// the partition's range): split through the partition-0 leader (forwarded there), answer the new
/// partition once the split completed.
async fn split(
    _: AdminAccess,
    state: web::Data<ApiState>,
    partition: web::Path<u32>,
    req: HttpRequest,
    body: String,
) -> HttpResponse {
    let source = PartitionId(partition.into_inner());
    let bad = |status: actix_web::http::StatusCode, error: String| {
        HttpResponse::build(status).json(json!({ "error": error }))
    };
    let boundary = match body.trim() {
        "" => match state.manager.partition_map().map(|m| m.get(source).map(|p| p.range)) {
            Ok(Some(Some(range))) => range.start + (range.end - range.start) / 2 + 1,
            Ok(Some(None)) => {
                return bad(actix_web::http::StatusCode::BAD_REQUEST, format!("{source} owns no key range"))
            }
            Ok(None) => return bad(actix_web::http::StatusCode::NOT_FOUND, format!("unknown partition {source}")),
            Err(error) => return bad(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        },
        text => match text.parse::<u64>() {
            Ok(boundary) => boundary,
            Err(_) => {
                let why = "the body must be empty or a key-hash boundary (u64)".to_string();
                return bad(actix_web::http::StatusCode::BAD_REQUEST, why);
            }
        },
    };
    let change = async {
        let target = state.manager.split_partition(source, boundary).await?;
        Ok(json!({ "source": source.0, "target": target.0, "boundary": boundary }))
    };
    crate::admin::system_change(&state, &req, boundary.to_string(), change).await
}

/// `POST /admin/snapshot/{partition}`: snapshot the partition on this node now and compact its
/// log; answers `{"partition": p, "index": i}` once the snapshot is durable.
async fn snapshot(_: AdminAccess, state: web::Data<ApiState>, partition: web::Path<u32>) -> HttpResponse {
    let partition = PartitionId(partition.into_inner());
    match state.manager.snapshot(partition).await {
        Ok(index) => HttpResponse::Ok().json(serde_json::json!({ "partition": partition.0, "index": index })),
        Err(error @ (ReplicateError::UnknownPartition(_) | ReplicateError::SystemPartitionReserved)) => {
            HttpResponse::NotFound().json(serde_json::json!({ "error": error.to_string() }))
        }
        Err(error) => HttpResponse::ServiceUnavailable().json(serde_json::json!({ "error": error.to_string() })),
    }
}

/// The query of `GET /kv/{key}`.
#[derive(serde::Deserialize)]
struct ReadQuery {
    consistency: Option<String>,
}

/// `linearizable` (also the default), `lease` or `local`.
fn parse_consistency(value: Option<&str>) -> Result<Consistency, String> {
    match value.unwrap_or("linearizable") {
        "linearizable" => Ok(Consistency::Linearizable),
        "lease" => Ok(Consistency::Lease),
        "local" => Ok(Consistency::Local),
        other => Err(format!("unknown consistency {other:?}: use linearizable, lease or local")),
    }
}

async fn get(
    _: ClientAccess,
    state: web::Data<ApiState>,
    key: web::Path<String>,
    query: web::Query<ReadQuery>,
) -> HttpResponse {
    let consistency = match parse_consistency(query.consistency.as_deref()) {
        Ok(consistency) => consistency,
        Err(error) => return HttpResponse::BadRequest().body(error),
    };
    let key = key.into_inner();
    if consistency == Consistency::Local {
        return local_get(&state, key).await;
    }
    let read_key = key.clone();
    let read = state.manager.read_for_key(&state.app, key.as_bytes(), consistency, move |kv, p| kv.get(p, &read_key));
    match read.await {
        Ok((_, Some(value))) => HttpResponse::Ok().body(value),
        Ok((partition, None)) => HttpResponse::NotFound().body(format!("{key} is not in {partition}")),
        Err(error) => {
            let partition = state.manager.partition_for_key(key.as_bytes()).map_or(PartitionId::SYSTEM, |p| p.id);
            read_refused(&state, partition, error)
        }
    }
}

/// A `local` read: this replica's restored state, routed by this node's map (re-read when a
/// split or merge moved the key meanwhile).
async fn local_get(state: &ApiState, key: String) -> HttpResponse {
    for _ in 0..3 {
        let info = match state.manager.partition_for_key(key.as_bytes()) {
            Ok(info) => info,
            Err(error) => return HttpResponse::ServiceUnavailable().body(error.to_string()),
        };
        let partition = info.id;
        let value = match state.kv.get_restored(partition, &key, RESTORE_WAIT).await {
            Ok(value) => value,
            Err(error) => {
                return HttpResponse::ServiceUnavailable().insert_header(("Retry-After", "1")).body(error.to_string())
            }
        };
        if state.manager.partition_for_key(key.as_bytes()).is_ok_and(|now| now == info) {
            return match value {
                Some(value) => HttpResponse::Ok().body(value),
                None => HttpResponse::NotFound().body(format!("{key} is not in {partition}")),
            };
        }
    }
    HttpResponse::ServiceUnavailable().insert_header(("Retry-After", "1")).body("the key kept moving; retry")
}

/// A consistent read that could not be served: 503 with `Retry-After`, naming the leader's API
/// (`X-Kommander-Leader`) when this node knows no way to a read index but the leader does.
fn read_refused(state: &ApiState, partition: PartitionId, error: ReplicateError) -> HttpResponse {
    let mut response = HttpResponse::ServiceUnavailable();
    response.insert_header(("Retry-After", "1"));
    if let Some(address) = state.manager.leader_application_address(partition) {
        response.insert_header(("X-Kommander-Leader", address));
    }
    response.json(json!({ "error": error.to_string(), "kind": error.kind() }))
}

async fn status(_: ClientAccess, state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(status_json(&state))
}

/// What `GET /status` answers: partitions, leaders, transport and WAL counters.
pub(crate) fn status_json(state: &ApiState) -> serde_json::Value {
    let sizes = state.kv.sizes();
    let partitions: Vec<_> = std::iter::once(PartitionId(0))
        .chain(state.manager.partitions())
        .filter_map(|p| state.manager.status(p).ok().map(|s| (p, s)))
        .map(|(p, s)| {
            json!({
                "partition": p.0,
                "term": s.term,
                "leader": s.leader.map(|l| l.0),
                "is_leader": s.is_leader,
                "commit_index": s.commit_index,
                "applied_index": s.applied_index,
                "last_index": s.last_index,
                "snapshot_index": s.snapshot_index,
                "compacted_through": s.compacted_through,
                "restoring": s.restoring,
                "quiesced": s.quiesced,
                "read_rounds": s.read_rounds,
                "replication_lag": s.replication_lag,
                "keys": sizes.get(&p).copied().unwrap_or(0),
            })
        })
        .collect();
    let net = &state.net;
    let wal = state.manager.wal_stats();
    json!({
        "node": state.manager.node().0,
        "partitions": partitions,
        "transport": net.counters().into_iter().map(|(name, value)| (name.to_owned(), json!(value))).collect::<serde_json::Map<_, _>>(),
        "wal": { "syncs": wal.syncs.load(Ordering::Relaxed), "entries": wal.entries.load(Ordering::Relaxed) },
    })
}

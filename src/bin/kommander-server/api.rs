//! The node's HTTP API: `PUT /kv/{key}` (routed to the key's partition and forwarded to its
//! leader), `GET /kv/{key}` (this replica's applied value), `GET /status` (partitions, leaders,
//! transport and WAL counters as JSON), and `POST /bench/load` (the load generator of
//! `examples/bench_cluster.rs`, in [`bench`]).

use crate::bench;
use crate::kv::{partition_for_key, KvState, Put, PUT};
use actix_web::{web, HttpRequest, HttpResponse};
use kommander::net::NetStats;
use kommander::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Header marking a request another node forwarded (forwarded requests are never forwarded again).
const FORWARDED: &str = "x-kommander-forwarded";

/// Everything the handlers need.
#[derive(Clone)]
pub struct ApiState {
    /// This node.
    pub manager: RaftManager,
    /// Applied KV state.
    pub kv: KvState,
    /// User partitions.
    pub partitions: u32,
    /// Peers' HTTP base URLs.
    pub peers: BTreeMap<NodeId, String>,
    /// Client for forwarding.
    pub client: reqwest::Client,
    /// Counters of the Raft transport.
    pub net: Arc<NetStats>,
}

/// Mount the API routes.
pub fn configure(cfg: &mut web::ServiceConfig, state: ApiState) {
    cfg.app_data(web::Data::new(state))
        .route("/kv/{key}", web::put().to(put))
        .route("/kv/{key}", web::get().to(get))
        .route("/status", web::get().to(status))
        .configure(bench::configure);
}

async fn put(state: web::Data<ApiState>, key: web::Path<String>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let key = key.into_inner();
    let Ok(value) = String::from_utf8(body.to_vec()) else {
        return HttpResponse::BadRequest().body("value must be UTF-8");
    };
    let partition = partition_for_key(&key, state.partitions);
    let payload = serde_json::to_vec(&Put { key: key.clone(), value: value.clone() }).expect("puts serialize");
    match state.manager.replicate_logs(partition, PUT, vec![payload], true).await {
        Ok(committed) => HttpResponse::Ok().json(json!({
            "partition": partition.0,
            "index": committed.last_index,
            "node": state.manager.node().0,
        })),
        Err(ReplicateError::NotLeader { leader: Some(leader), .. }) if !req.headers().contains_key(FORWARDED) => {
            forward(&state, leader, &key, value).await
        }
        Err(error) => HttpResponse::ServiceUnavailable().body(error.to_string()),
    }
}

async fn forward(state: &ApiState, leader: NodeId, key: &str, value: String) -> HttpResponse {
    let Some(base) = state.peers.get(&leader) else {
        return HttpResponse::ServiceUnavailable().body(format!("no HTTP address for leader {leader}"));
    };
    let url = format!("{base}/kv/{key}");
    match state.client.put(url).header(FORWARDED, "1").body(value).send().await {
        Ok(response) => {
            let status = actix_web::http::StatusCode::from_u16(response.status().as_u16())
                .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
            let body = response.bytes().await.unwrap_or_default();
            HttpResponse::build(status).content_type("application/json").body(body)
        }
        Err(error) => HttpResponse::ServiceUnavailable().body(format!("forwarding to {leader} failed: {error}")),
    }
}

async fn get(state: web::Data<ApiState>, key: web::Path<String>) -> HttpResponse {
    let partition = partition_for_key(&key, state.partitions);
    match state.kv.get(partition, &key) {
        Some(value) => HttpResponse::Ok().body(value),
        None => HttpResponse::NotFound().body(format!("{key} is not in {partition} on this replica")),
    }
}

async fn status(state: web::Data<ApiState>) -> HttpResponse {
    let sizes = state.kv.sizes();
    let partitions: Vec<_> = (0..=state.partitions)
        .map(PartitionId)
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
                "restoring": s.restoring,
                "keys": sizes.get(&p).copied().unwrap_or(0),
            })
        })
        .collect();
    let net = &state.net;
    let wal = state.manager.wal_stats();
    HttpResponse::Ok().json(json!({
        "node": state.manager.node().0,
        "partitions": partitions,
        "transport": {
            "frames_sent": net.frames_sent.load(Ordering::Relaxed),
            "batches_sent": net.batches_sent.load(Ordering::Relaxed),
            "frames_failed": net.frames_failed.load(Ordering::Relaxed),
            "frames_accepted": net.frames_accepted.load(Ordering::Relaxed),
            "rejected_auth": net.rejected_auth.load(Ordering::Relaxed),
            "rejected_invalid": net.rejected_invalid.load(Ordering::Relaxed),
        },
        "wal": { "syncs": wal.syncs.load(Ordering::Relaxed), "entries": wal.entries.load(Ordering::Relaxed) },
    }))
}

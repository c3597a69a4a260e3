//! The admin API (admin scope): change the partition map and the roster, move leaders, inspect
//! the cluster. Map and roster changes are made by the partition-0 leader: any node forwards
//! them there once. A change the map or roster refuses is committed as a no-op and answered with
//! a 4xx and a JSON `{"error": …}`: nothing changes.
//!
//! | endpoint | does |
//! |---|---|
//! | `GET /admin/cluster` | the partition map and the roster |
//! | `POST /admin/partitions` | create a partition (no key range) |
//! | `DELETE /admin/partitions/{p}` | remove a partition that owns no key range |
//! | `POST /admin/split/{p}` (body: optional boundary) | split a partition's key range |
//! | `POST /admin/merge/{survivor}/{source}` | merge two adjacent partitions |
//! | `POST /admin/nodes/{id}` (body: its transport URL) | add a node as a learner |
//! | `DELETE /admin/nodes/{id}` | remove a node from the cluster |
//! | `POST /admin/transfer/{p}/{node}` | hand partition `p`'s leadership to voter `node` |
//! | `POST /admin/snapshot/{p}` | snapshot a partition on this node now |

use crate::api::{forward_to, ApiState, FORWARDED};
use crate::auth::{AdminAccess, Scope};
use actix_web::{web, HttpRequest, HttpResponse};
use kommander::core::system::SystemError;
use kommander::prelude::*;
use serde::Serialize;
use serde_json::json;
use std::future::Future;

/// Mount the admin routes (split and snapshot are mounted by [`crate::api`]).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/cluster", web::get().to(cluster))
        .route("/admin/partitions", web::post().to(create))
        .route("/admin/partitions/{partition}", web::delete().to(remove))
        .route("/admin/merge/{survivor}/{source}", web::post().to(merge))
        .route("/admin/nodes/{node}", web::post().to(add_learner))
        .route("/admin/nodes/{node}", web::delete().to(remove_node))
        .route("/admin/transfer/{partition}/{node}", web::post().to(transfer));
}

/// The status code of a refused map or roster change.
fn refused_status(error: &SystemError) -> actix_web::http::StatusCode {
    use actix_web::http::StatusCode;
    match error {
        SystemError::UnknownPartition(_) | SystemError::NotMember(_) => StatusCode::NOT_FOUND,
        SystemError::NotActive(_)
        | SystemError::OperationPending
        | SystemError::NoMatchingOperation
        | SystemError::AlreadyMember(_)
        | SystemError::AlreadyBootstrapped
        | SystemError::NotBootstrapped => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn error_json(status: actix_web::http::StatusCode, error: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": error.to_string() }))
}

/// Run a map or roster change here, or forward it once to the partition-0 leader; map the outcome.
pub(crate) async fn system_change<T: Serialize, F: Future<Output = Result<T, AdminError>>>(
    state: &ApiState,
    req: &HttpRequest,
    body: String,
    change: F,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    match change.await {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(AdminError::NotLeader { leader: Some(leader) }) if !req.headers().contains_key(FORWARDED) => {
            let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap_or(reqwest::Method::POST);
            let path = req.path().trim_start_matches('/').to_owned();
            forward_to(state, leader, method, &path, body, Scope::Admin).await
        }
        Err(AdminError::Refused(error)) => error_json(refused_status(&error), error),
        Err(error @ AdminError::Aborted) => error_json(StatusCode::CONFLICT, error),
        Err(error @ AdminError::ExportFailed(_)) => error_json(StatusCode::INTERNAL_SERVER_ERROR, error),
        Err(error @ (AdminError::NotLeader { .. } | AdminError::Replicate(_))) => {
            let mut response = error_json(StatusCode::SERVICE_UNAVAILABLE, error);
            response
                .headers_mut()
                .insert(actix_web::http::header::RETRY_AFTER, actix_web::http::header::HeaderValue::from_static("1"));
            response
        }
    }
}

async fn cluster(_: AdminAccess, state: web::Data<ApiState>) -> HttpResponse {
    match (state.manager.partition_map(), state.manager.roster()) {
        (Ok(map), Ok(roster)) => HttpResponse::Ok().json(json!({ "map": map, "roster": roster })),
        (Err(error), _) | (_, Err(error)) => error_json(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, error),
    }
}

async fn create(_: AdminAccess, state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let change = async { state.manager.create_partition().await.map(|p| json!({ "partition": p.0 })) };
    system_change(&state, &req, String::new(), change).await
}

async fn remove(
    _: AdminAccess,
    state: web::Data<ApiState>,
    partition: web::Path<u32>,
    req: HttpRequest,
) -> HttpResponse {
    let partition = PartitionId(partition.into_inner());
    let change = async { state.manager.remove_partition(partition).await.map(|()| json!({ "removed": partition.0 })) };
    system_change(&state, &req, String::new(), change).await
}

async fn merge(
    _: AdminAccess,
    state: web::Data<ApiState>,
    path: web::Path<(u32, u32)>,
    req: HttpRequest,
) -> HttpResponse {
    let (survivor, source) = (PartitionId(path.0), PartitionId(path.1));
    let change = async {
        state
            .manager
            .merge_partitions(survivor, source)
            .await
            .map(|()| json!({ "survivor": survivor.0, "merged": source.0 }))
    };
    system_change(&state, &req, String::new(), change).await
}

async fn add_learner(
    _: AdminAccess,
    state: web::Data<ApiState>,
    node: web::Path<u64>,
    req: HttpRequest,
    body: String,
) -> HttpResponse {
    let address = body.trim().to_owned();
    let host = address.strip_prefix("http://").or_else(|| address.strip_prefix("https://"));
    if host.is_none_or(str::is_empty) {
        return error_json(
            actix_web::http::StatusCode::BAD_REQUEST,
            "the body must be the node's transport URL (http://host:port or https://host:port)",
        );
    }
    let node = NodeId(node.into_inner());
    let change = async { state.manager.add_learner(node, &address).await.map(|()| json!({ "learner": node.0 })) };
    system_change(&state, &req, address.clone(), change).await
}

async fn remove_node(
    _: AdminAccess,
    state: web::Data<ApiState>,
    node: web::Path<u64>,
    req: HttpRequest,
) -> HttpResponse {
    let node = NodeId(node.into_inner());
    let change = async { state.manager.remove_node(node).await.map(|()| json!({ "removed": node.0 })) };
    system_change(&state, &req, String::new(), change).await
}

/// Hand `partition`'s leadership to `node`: on its leader (forwarded there once).
async fn transfer(
    _: AdminAccess,
    state: web::Data<ApiState>,
    path: web::Path<(u32, u64)>,
    req: HttpRequest,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let (partition, to) = (PartitionId(path.0), NodeId(path.1));
    let voters = match state.manager.partition_membership(partition).await {
        Ok((membership, _)) => membership.voters,
        Err(error @ ReplicateError::UnknownPartition(_)) => return error_json(StatusCode::NOT_FOUND, error),
        Err(error) => return error_json(StatusCode::SERVICE_UNAVAILABLE, error),
    };
    if !voters.contains(&to) {
        return error_json(StatusCode::BAD_REQUEST, format!("{to} is not a voter of {partition}"));
    }
    match state.manager.leader(partition) {
        Some(leader) if leader == to => HttpResponse::Ok().json(json!({ "partition": partition.0, "leader": to.0 })),
        Some(leader) if leader != state.manager.node() && !req.headers().contains_key(FORWARDED) => {
            let path = req.path().trim_start_matches('/').to_owned();
            forward_to(&state, leader, reqwest::Method::POST, &path, String::new(), Scope::Admin).await
        }
        Some(leader) if leader == state.manager.node() => {
            match state.manager.transfer_leadership(partition, to).await {
                Ok(()) => HttpResponse::Ok().json(json!({ "partition": partition.0, "leader": to.0 })),
                Err(error) => error_json(StatusCode::SERVICE_UNAVAILABLE, error),
            }
        }
        _ => error_json(StatusCode::SERVICE_UNAVAILABLE, format!("{partition} has no known leader here")),
    }
}

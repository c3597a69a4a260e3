//! The status page: `GET /ui` serves one self-contained HTML page (embedded in the binary, no
//! CDN) that polls `GET /ui/state` every second and renders the nodes (reachable, partitions led,
//! WAL and transport rates), every partition (state, generation, key range, leader, term, commit,
//! applied index per node, replication lag) and the recent leader changes it saw. `/ui` itself is
//! open (it holds no data); `/ui/state` needs the client token, which the page takes from its
//! fragment (`/ui#token=…`) and sends as a bearer header. `/ui/state` gathers the cluster view on
//! the server: this node's status, map and roster, and every other member's `/status` (fetched
//! with this node's token; a member that does not answer within a second is unreachable).

use crate::api::{status_json, ApiState};
use crate::auth::{ClientAccess, Scope};
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use std::time::Duration;

const PAGE: &str = include_str!("ui.html");
/// How long `/ui/state` waits for another member's status.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);

/// Mount `/ui` and `/ui/state`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(page)).route("/ui/state", web::get().to(state));
}

async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(PAGE)
}

async fn state(_: ClientAccess, state: web::Data<ApiState>) -> HttpResponse {
    let (map, roster) = match (state.manager.partition_map(), state.manager.roster()) {
        (Ok(map), Ok(roster)) => (map, roster),
        (Err(error), _) | (_, Err(error)) => return HttpResponse::ServiceUnavailable().body(error.to_string()),
    };
    let me = state.manager.node();
    let mut nodes = vec![json!({ "id": me.0, "reachable": true, "status": status_json(&state) })];
    let peers = roster.members.iter().filter(|(id, _)| **id != me).map(|(id, member)| {
        let address = member.application_address.clone().or_else(|| state.peers.get(id).cloned());
        let (client, auth) = (state.client.clone(), state.tokens.forwarding_header(Scope::Client));
        let id = *id;
        async move {
            let status = match address {
                Some(base) => {
                    let mut request = client.get(format!("{base}/status")).timeout(PEER_TIMEOUT);
                    if let Some(auth) = auth {
                        request = request.header(reqwest::header::AUTHORIZATION, auth);
                    }
                    match request.send().await {
                        Ok(response) if response.status().is_success() => {
                            response.bytes().await.ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                        }
                        _ => None,
                    }
                }
                None => None,
            };
            json!({ "id": id.0, "reachable": status.is_some(), "status": status })
        }
    });
    nodes.extend(futures_util::future::join_all(peers).await);
    HttpResponse::Ok().json(json!({ "node": me.0, "nodes": nodes, "map": map, "roster": roster }))
}

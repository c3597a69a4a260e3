//! The server side: the actix-web route that receives batches, and a standalone server helper.
//!
//! The route checks the auth headers' shape and the content type, then reserves the body's
//! `Content-Length` (the largest body when it is not given) in the gate's in-flight budget *before*
//! reading the body, reads at most that many bytes, and hands the frame to the gate. A declared
//! length above the body limit is refused (413) without reading anything.

use crate::wire::{self, H_CLUSTER, H_FROM, H_NONCE, H_SIGNATURE, H_TIMESTAMP, H_TO};
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpServer};
use kommander_core::NodeId;
use kommander_net::auth::from_hex;
use kommander_net::{AuthError, FrameHeader, InboundError, InboundGate};
use std::net::TcpListener;
use std::sync::Arc;

/// Path of the batch route.
pub const BATCH_PATH: &str = "/kommander/v1/batch";

/// Mount the batch route for `gate` (what [`crate::RestTransport::routes`] returns).
pub fn configure(cfg: &mut web::ServiceConfig, gate: Arc<InboundGate>) {
    cfg.service(web::resource(BATCH_PATH).app_data(web::Data::from(gate)).route(web::post().to(receive)));
}

/// Run a standalone HTTP server with only the transport route on `listener` (bind it to a
/// loopback address unless peers are elsewhere). Spawn the returned server inside an actix system.
pub fn serve(transport: &crate::RestTransport, listener: TcpListener) -> std::io::Result<actix_web::dev::Server> {
    let routes = transport.routes();
    let server = HttpServer::new(move || actix_web::App::new().configure(routes.clone()))
        .workers(1)
        .disable_signals()
        .listen(listener)?;
    Ok(server.run())
}

fn header_text<'a>(req: &'a HttpRequest, name: &'static str) -> Result<&'a str, AuthError> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).ok_or(AuthError::MissingField(name))
}

fn header_u64(req: &HttpRequest, name: &'static str) -> Result<u64, AuthError> {
    header_text(req, name)?.parse().map_err(|_| AuthError::MissingField(name))
}

fn frame_header(req: &HttpRequest) -> Result<(FrameHeader, Vec<u8>), AuthError> {
    let header = FrameHeader {
        cluster_id: header_text(req, H_CLUSTER)?.to_string(),
        from: NodeId(header_u64(req, H_FROM)?),
        to: NodeId(header_u64(req, H_TO)?),
        timestamp_ms: header_u64(req, H_TIMESTAMP)?,
        nonce: header_u64(req, H_NONCE)?,
    };
    let signature = from_hex(header_text(req, H_SIGNATURE)?).ok_or(AuthError::MissingField(H_SIGNATURE))?;
    Ok((header, signature))
}

fn error_response(error: &InboundError) -> HttpResponse {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    HttpResponse::build(status).content_type("text/plain; charset=utf-8").body(error.to_string())
}

/// The declared body length; `None` when absent or unreadable (then the largest body is assumed).
fn content_length(req: &HttpRequest) -> Option<usize> {
    req.headers().get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

async fn receive(gate: web::Data<InboundGate>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let (header, signature) = match frame_header(&req) {
        Ok(parsed) => parsed,
        Err(auth) => {
            let error = InboundError::Unauthenticated(auth);
            gate.count_rejection(&error);
            return error_response(&error);
        }
    };
    let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type != wire::CONTENT_TYPE {
        return HttpResponse::UnsupportedMediaType().body(format!("content type must be {}", wire::CONTENT_TYPE));
    }
    let expected = content_length(&req).unwrap_or_else(|| gate.max_body_bytes());
    let _permit = match gate.reserve(expected).await {
        Ok(permit) => permit,
        Err(error) => return error_response(&error),
    };
    let body = match payload.to_bytes_limited(expected).await {
        Ok(Ok(body)) => body,
        Ok(Err(error)) => {
            let error = InboundError::Malformed(format!("reading the body failed: {error}"));
            gate.count_rejection(&error);
            return error_response(&error);
        }
        Err(_) => {
            let error = InboundError::TooLarge { size: expected.saturating_add(1), limit: expected };
            gate.count_rejection(&error);
            return error_response(&error);
        }
    };
    match gate.accept(&header, &signature, &body, wire::decode_batch) {
        Ok(messages) => HttpResponse::Ok().content_type("text/plain").body(messages.to_string()),
        Err(error) => error_response(&error),
    }
}

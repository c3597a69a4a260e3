//! The server side: the actix-web route that receives batches, and a standalone server helper.

use crate::wire::{self, H_CLUSTER, H_FROM, H_NONCE, H_SIGNATURE, H_TIMESTAMP, H_TO};
use actix_web::http::header::CONTENT_TYPE;
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
    let limit = gate.max_body_bytes();
    cfg.service(
        web::resource(BATCH_PATH)
            .app_data(web::PayloadConfig::new(limit))
            .app_data(web::Data::from(gate))
            .route(web::post().to(receive)),
    );
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

async fn receive(gate: web::Data<InboundGate>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
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
    match gate.accept(&header, &signature, &body, wire::decode_batch) {
        Ok(messages) => HttpResponse::Ok().content_type("text/plain").body(messages.to_string()),
        Err(error) => error_response(&error),
    }
}

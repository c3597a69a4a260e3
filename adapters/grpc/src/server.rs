//! The receiving side: the tonic `RaftTransport` service. Each `Deliver` call hands the frame's
//! signed header, signature and raw batch bytes to the shared [`InboundGate`] (authenticate before
//! decoding) and maps the gate's [`ErrorClass`] to a gRPC status code.

use crate::convert::decode_batch;
use crate::proto::raft_transport_server::{RaftTransport, RaftTransportServer};
use crate::proto::{Ack, Frame};
use kommander_core::NodeId;
use kommander_net::gate::ErrorClass;
use kommander_net::{FrameHeader, InboundGate};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codegen::http::{self, HeaderValue};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

/// Bytes a frame may carry beyond its batch (header fields, signature, protobuf framing) before
/// tonic refuses to decode it.
pub(crate) const FRAME_SLACK_BYTES: usize = 64 * 1024;

/// The header of a trailers-only gRPC answer that carries its status code.
const GRPC_STATUS: &str = "grpc-status";

/// The gRPC status code of an inbound error family.
pub(crate) fn status_code(class: ErrorClass) -> Code {
    match class {
        ErrorClass::Unauthenticated => Code::Unauthenticated,
        ErrorClass::TooLarge => Code::ResourceExhausted,
        ErrorClass::Invalid => Code::InvalidArgument,
        ErrorClass::NotFound => Code::NotFound,
        ErrorClass::Misdirected => Code::FailedPrecondition,
        ErrorClass::Unavailable => Code::Unavailable,
    }
}

/// The `RaftTransport` service of one node.
struct DeliverService {
    gate: Arc<InboundGate>,
}

#[tonic::async_trait]
impl RaftTransport for DeliverService {
    async fn deliver(&self, request: Request<Frame>) -> Result<Response<Ack>, Status> {
        let frame = request.into_inner();
        let header = FrameHeader {
            cluster_id: frame.cluster_id,
            from: NodeId(frame.from),
            to: NodeId(frame.to),
            timestamp_ms: frame.timestamp_ms,
            nonce: frame.nonce,
        };
        let decode = |bytes: &[u8]| decode_batch(bytes).map_err(|e| e.to_string());
        match self.gate.accept(&header, &frame.signature, &frame.batch, decode) {
            Ok(messages) => Ok(Response::new(Ack { messages: u32::try_from(messages).unwrap_or(u32::MAX) })),
            Err(error) => Err(Status::new(status_code(error.class()), error.to_string())),
        }
    }
}

/// Serve `gate` on `listener` until `shutdown` resolves. Frames above `max_body_bytes` plus
/// [`FRAME_SLACK_BYTES`] are refused by tonic before they are buffered; smaller ones whose batch
/// is above `max_body_bytes` are refused by the gate. Both answer `ResourceExhausted`.
pub(crate) async fn serve(
    gate: Arc<InboundGate>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let max_frame_bytes = gate.max_body_bytes().saturating_add(FRAME_SLACK_BYTES);
    let service = RaftTransportServer::new(DeliverService { gate }).max_decoding_message_size(max_frame_bytes);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let outcome = tonic::transport::Server::builder()
        .add_service(OversizeIsExhausted(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(error) = outcome {
        tracing::error!(%error, "gRPC transport server stopped");
    }
}

/// Rewrites tonic's `OutOfRange` answer to a frame above the decoding limit into
/// `ResourceExhausted`, the code every oversized frame gets. The service itself never answers
/// `OutOfRange`, so the rewrite touches nothing else.
#[derive(Clone)]
struct OversizeIsExhausted<S>(S);

impl<S: NamedService> NamedService for OversizeIsExhausted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for OversizeIsExhausted<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let response = self.0.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            let headers = response.headers_mut();
            let out_of_range = HeaderValue::from(Code::OutOfRange as i32);
            if headers.get(GRPC_STATUS) == Some(&out_of_range) {
                headers.insert(GRPC_STATUS, HeaderValue::from(Code::ResourceExhausted as i32));
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_class_has_its_code() {
        let table = [
            (ErrorClass::Unauthenticated, Code::Unauthenticated),
            (ErrorClass::TooLarge, Code::ResourceExhausted),
            (ErrorClass::Invalid, Code::InvalidArgument),
            (ErrorClass::NotFound, Code::NotFound),
            (ErrorClass::Misdirected, Code::FailedPrecondition),
            (ErrorClass::Unavailable, Code::Unavailable),
        ];
        for (class, code) in table {
            assert_eq!(status_code(class), code);
        }
    }
}

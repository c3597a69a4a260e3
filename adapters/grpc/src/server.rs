//! The receiving side: the tonic `RaftTransport` service. Each frame — one per `Deliver` call, or
//! one after the other on a `Stream` — hands its signed header, signature and raw batch bytes to
//! the shared [`InboundGate`] (authenticate before decoding); the gate's [`ErrorClass`] becomes a
//! gRPC status code. A stream's frames are handled in order on one task, each reserving the
//! in-flight budget before it is read; the first refused frame ends the stream.
//!
//! Resource limits (see [`ServerLimits`]): at most `max_concurrent_streams` streams per connection,
//! `concurrency_limit_per_connection` calls of a connection handled at once, every call bounded by
//! `timeout`, and every call reserves one largest frame of the gate's in-flight budget *before*
//! tonic reads its body (tonic buffers a whole message before the handler runs), so unauthenticated
//! peers cannot make the node buffer more than that budget. Calls waiting for any of these stay
//! unread within HTTP/2 flow control (64 KiB windows).

use crate::convert::decode_batch;
use crate::proto::raft_transport_server::{RaftTransport, RaftTransportServer};
use crate::proto::{Ack, Frame};
use kommander_core::NodeId;
use kommander_net::gate::ErrorClass;
use kommander_net::{FrameHeader, InboundGate};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::codegen::http::{self, HeaderValue};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::ServerTlsConfig;
use tonic::{Code, Request, Response, Status, Streaming};

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
    /// How long a new stream may wait for its first frame.
    first_frame_timeout: Duration,
}

/// Authenticate, decode, check and hand over one frame: its [`Ack`], or the status that refuses it.
fn accept(gate: &InboundGate, frame: Frame) -> Result<Ack, Status> {
    let header = FrameHeader {
        cluster_id: frame.cluster_id,
        from: NodeId(frame.from),
        to: NodeId(frame.to),
        timestamp_ms: frame.timestamp_ms,
        nonce: frame.nonce,
    };
    let decode = |bytes: &[u8]| decode_batch(bytes).map_err(|e| e.to_string());
    match gate.accept(&header, &frame.signature, &frame.batch, decode) {
        Ok(messages) => Ok(Ack { messages: u32::try_from(messages).unwrap_or(u32::MAX) }),
        Err(error) => Err(Status::new(status_code(error.class()), error.to_string())),
    }
}

/// Acks of a stream's frames, queued while the sender reads them.
const STREAM_ACKS: usize = 64;

/// Handle the frames of one stream in order, each answered with its [`Ack`]; the first refused
/// frame, read error or full budget ends the stream with its status.
///
/// Until a frame of the stream was accepted (the sender proved the cluster secret), the stream is
/// treated like a call: one largest frame of the in-flight budget is reserved before the frame is
/// read (what is not read stays within HTTP/2 flow control), and the frame must arrive within
/// `first_frame_timeout`. Later frames come from that authenticated peer: an idle stream holds no
/// budget, and each frame reserves its own size once read, while it is handled.
async fn serve_stream(
    gate: Arc<InboundGate>,
    first_frame_timeout: Duration,
    mut frames: Streaming<Frame>,
    acks: mpsc::Sender<Result<Ack, Status>>,
) {
    let refuse = |error: kommander_net::InboundError| Status::new(status_code(error.class()), error.to_string());
    let mut authenticated = false;
    loop {
        let (read, permit) = if authenticated {
            (frames.message().await, None)
        } else {
            let permit = match gate.reserve(gate.max_body_bytes()).await {
                Ok(permit) => permit,
                Err(error) => {
                    let _ = acks.send(Err(refuse(error))).await;
                    return;
                }
            };
            match tokio::time::timeout(first_frame_timeout, frames.message()).await {
                Ok(read) => (read, Some(permit)),
                Err(_) => (Err(Status::deadline_exceeded("no frame in time on a new stream")), Some(permit)),
            }
        };
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(status) => {
                // An oversized frame is `OutOfRange` from tonic's decoder: the code every
                // oversized frame gets is `ResourceExhausted`.
                let status = if status.code() == Code::OutOfRange {
                    Status::new(Code::ResourceExhausted, status.message().to_owned())
                } else {
                    status
                };
                let _ = acks.send(Err(status)).await;
                return;
            }
        };
        let permit = match permit {
            Some(permit) => permit,
            None => match gate.reserve(frame.batch.len()).await {
                Ok(permit) => permit,
                Err(error) => {
                    let _ = acks.send(Err(refuse(error))).await;
                    return;
                }
            },
        };
        let outcome = accept(&gate, frame);
        drop(permit);
        let refused = outcome.is_err();
        authenticated |= !refused;
        if acks.send(outcome).await.is_err() || refused {
            return;
        }
    }
}

#[tonic::async_trait]
impl RaftTransport for DeliverService {
    async fn deliver(&self, request: Request<Frame>) -> Result<Response<Ack>, Status> {
        accept(&self.gate, request.into_inner()).map(Response::new)
    }

    type StreamStream = ReceiverStream<Result<Ack, Status>>;

    async fn stream(&self, request: Request<Streaming<Frame>>) -> Result<Response<Self::StreamStream>, Status> {
        let (acks, answers) = mpsc::channel(STREAM_ACKS);
        tokio::spawn(serve_stream(self.gate.clone(), self.first_frame_timeout, request.into_inner(), acks));
        Ok(Response::new(ReceiverStream::new(answers)))
    }
}

/// Connection-level limits of the server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerLimits {
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub(crate) max_concurrent_streams: u32,
    /// Calls of one connection handled at once.
    pub(crate) concurrency_limit_per_connection: usize,
    /// Time one call may take on the server.
    pub(crate) timeout: Duration,
}

/// Bytes of request headers accepted per call (a frame's fields travel in the body).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Serve `gate` on `listener` (over TLS with `tls`) until `shutdown` resolves. Frames above `max_body_bytes` plus
/// [`FRAME_SLACK_BYTES`] are refused by tonic before they are buffered; smaller ones whose batch
/// is above `max_body_bytes` are refused by the gate. Both answer `ResourceExhausted`.
pub(crate) async fn serve(
    gate: Arc<InboundGate>,
    limits: ServerLimits,
    tls: Option<ServerTlsConfig>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let max_frame_bytes = gate.max_body_bytes().saturating_add(FRAME_SLACK_BYTES);
    let service = RaftTransportServer::new(DeliverService { gate: gate.clone(), first_frame_timeout: limits.timeout })
        .max_decoding_message_size(max_frame_bytes);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        // Checked when the transport was bound; a failure here would be tonic's own.
        builder = match builder.tls_config(tls) {
            Ok(builder) => builder,
            Err(error) => {
                tracing::error!(%error, "gRPC transport server not started: TLS configuration refused");
                return;
            }
        };
    }
    let outcome = builder
        .max_concurrent_streams(limits.max_concurrent_streams.max(1))
        .concurrency_limit_per_connection(limits.concurrency_limit_per_connection.max(1))
        .timeout(limits.timeout)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .add_service(Guarded { inner: service, gate })
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(error) = outcome {
        tracing::error!(%error, "gRPC transport server stopped");
    }
}

/// Wraps the generated service: reserves one largest frame of the gate's in-flight budget before
/// the call's body is read (answering `Unavailable` when there is no room in time), and rewrites
/// tonic's `OutOfRange` answer to a frame above the decoding limit into `ResourceExhausted`, the
/// code every oversized frame gets. The service itself never answers `OutOfRange`, so the rewrite
/// touches nothing else.
#[derive(Clone)]
struct Guarded<S> {
    inner: S,
    gate: Arc<InboundGate>,
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone takes the place of the service that was polled ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        Box::pin(async move {
            let _permit = match gate.reserve(gate.max_body_bytes()).await {
                Ok(permit) => permit,
                Err(error) => return Ok(Status::new(status_code(error.class()), error.to_string()).into_http()),
            };
            let mut response = inner.call(request).await?;
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

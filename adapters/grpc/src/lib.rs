//! `kommander-transport-grpc`: kommander's [`Transport`](kommander_core::Transport) over gRPC
//! (tonic, HTTP/2). Each node runs one `RaftTransport` service and keeps one HTTP/2 connection per
//! peer, with one long-lived `Stream` call on it: every signed [`proto::Frame`] holds the batches
//! of all partitions for that peer, and many frames are in flight in order. Authentication, replay protection, inbound checks and the per-peer outboxes come from
//! `kommander-net`, so this transport behaves like the REST one.
//!
//! Modules and what each owns:
//!
//! * [`proto`]: the types and the tonic client and server generated from `proto/kommander.proto`
//!   (parsed by `protox` at build time; no `protoc` needed).
//! * [`convert`]: core ⇄ protobuf conversions and [`encode_batch`] / [`decode_batch`], the frame
//!   body codec (panic-free on any input).
//! * `server`: the `Stream` and `Deliver` handlers — frames go through [`kommander_net::InboundGate`]; its error
//!   classes become gRPC status codes (`Unauthenticated`, `ResourceExhausted`, `InvalidArgument`,
//!   `NotFound`, `FailedPrecondition`, `Unavailable`).
//! * `client`: the [`kommander_net::PeerSender`] that signs frames and writes them on one stream
//!   per peer, over one lazily connected channel per peer.
//! * `config`: [`GrpcConfig`].
//! * `tls`: [`GrpcTls`], optional TLS (rustls, ring provider): the listener's certificate and key,
//!   and the CA certificates `https://` peers are checked against (PEM). Without it the listener
//!   speaks plaintext HTTP/2 and only `http://` peers are accepted.
//! * `transport`: [`GrpcTransport`], which binds at construction and runs server, channels and
//!   outbox workers on a dedicated [`kommander_net::NetRuntime`] once started.

#![warn(missing_docs)]

mod client;
mod config;
pub mod convert;
mod server;
mod tls;
mod transport;

pub use config::GrpcConfig;
pub use convert::{decode_batch, encode_batch, ConvertError, DecodeError};
pub use tls::{GrpcTls, TlsIdentity};
pub use transport::GrpcTransport;

/// Types, client and server generated from `proto/kommander.proto` (package `kommander.v1`).
pub mod proto {
    tonic::include_proto!("kommander.v1");
}

//! The REST wire format: the body is a MessagePack-encoded [`MessageBatch`]; the signed frame
//! header travels in HTTP headers.

use kommander_core::MessageBatch;

/// Content type of request bodies.
pub const CONTENT_TYPE: &str = "application/msgpack";
/// Header: cluster id.
pub const H_CLUSTER: &str = "x-kommander-cluster";
/// Header: sending node id (decimal).
pub const H_FROM: &str = "x-kommander-from";
/// Header: destination node id (decimal).
pub const H_TO: &str = "x-kommander-to";
/// Header: sender timestamp, ms since the Unix epoch (decimal).
pub const H_TIMESTAMP: &str = "x-kommander-timestamp";
/// Header: nonce (decimal).
pub const H_NONCE: &str = "x-kommander-nonce";
/// Header: HMAC-SHA256 signature (hex).
pub const H_SIGNATURE: &str = "x-kommander-signature";

/// Encode a batch as a request body.
pub fn encode_batch(batch: &MessageBatch) -> Vec<u8> {
    rmp_serde::to_vec(batch).expect("message batches always serialize")
}

/// Decode a request body; never panics, whatever the input.
pub fn decode_batch(body: &[u8]) -> Result<MessageBatch, String> {
    rmp_serde::from_slice(body).map_err(|e| e.to_string())
}

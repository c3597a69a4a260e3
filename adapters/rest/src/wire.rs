//! The REST wire format: the body is a MessagePack-encoded [`MessageBatch`]; the signed frame
//! header travels in HTTP headers.
//!
//! Entry payloads are written as MessagePack `bin` (one byte per payload byte) rather than as an
//! array of integers (up to two bytes per payload byte), so a body holding the largest entry fits
//! the default body limit. The decoder reads both forms.

use kommander_core::MessageBatch;
use rmp_serde::config::BytesMode;
use serde::Serialize;

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
    let mut body = Vec::new();
    let mut serializer = rmp_serde::Serializer::new(&mut body).with_bytes(BytesMode::ForceIterables);
    batch.serialize(&mut serializer).expect("message batches always serialize");
    body
}

/// Decode a request body; never panics, whatever the input.
pub fn decode_batch(body: &[u8]) -> Result<MessageBatch, String> {
    rmp_serde::from_slice(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kommander_core::{EntryKind, Envelope, LogEntry, NodeId, PartitionId, RaftMessage, Ticket};

    fn batch_with_payload(payload: Vec<u8>) -> MessageBatch {
        let entry = LogEntry {
            index: 1,
            term: 1,
            kind: EntryKind::Application { auto_commit: true },
            log_type: "kv".into(),
            payload: payload.into(),
            ticket: Ticket { physical_ms: 1, logical: 2, node: 3 },
        };
        let message = RaftMessage::AppendRequest {
            term: 1,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![entry],
            leader_commit: 0,
        };
        let envelope = Envelope { partition: PartitionId(1), from: NodeId(1), to: NodeId(2), message };
        MessageBatch { cluster_id: "c".into(), from: NodeId(1), to: NodeId(2), messages: vec![envelope] }
    }

    #[test]
    fn the_largest_payload_fits_the_default_body_limit() {
        let largest = kommander_core::MessageLimits::default().max_payload_bytes;
        let batch = batch_with_payload(vec![0xff; largest]);
        let body = encode_batch(&batch);
        assert!(body.len() <= kommander_net::DEFAULT_MAX_BODY_BYTES, "{} bytes", body.len());
        assert!(body.len() < largest + 1024, "{} bytes", body.len());
        assert_eq!(decode_batch(&body), Ok(batch));
    }

    #[test]
    fn payloads_travel_as_one_binary_chunk() {
        let batch = batch_with_payload(vec![0, 127, 128, 255]);
        let body = encode_batch(&batch);
        // MessagePack bin 8: 0xc4, the length, the bytes (not an array of four integers).
        assert!(body.windows(6).any(|w| w == [0xc4, 4, 0, 127, 128, 255]), "{body:?}");
        assert_eq!(decode_batch(&body), Ok(batch.clone()));
        let empty = MessageBatch { messages: vec![], ..batch };
        assert_eq!(decode_batch(&encode_batch(&empty)), Ok(empty));
    }
}

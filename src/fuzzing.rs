//! The body of the decoding fuzz target (`fuzz/fuzz_targets/decode_batch.rs`, run with
//! `cargo +nightly fuzz run decode_batch`), shared with a stable `#[test]` that replays seeds and
//! deterministic mutations (`tests/decode_fuzz.rs`), so CI exercises the same code without nightly.

use kommander_core::{validate_batch, MessageLimits};

/// Feed `data` to every wire decoder (REST MessagePack, gRPC protobuf), validate whatever decodes,
/// and check that re-encoding a decoded batch decodes to the same batch. Panics only on a bug.
pub fn decode_untrusted(data: &[u8]) {
    let limits = MessageLimits::default();
    if let Ok(batch) = kommander_transport_rest::wire::decode_batch(data) {
        let _ = validate_batch(&batch, &limits);
        let again = kommander_transport_rest::wire::decode_batch(&kommander_transport_rest::wire::encode_batch(&batch));
        assert_eq!(again.as_ref(), Ok(&batch), "MessagePack round trip changed a decoded batch");
    }
    if let Ok(batch) = kommander_transport_grpc::decode_batch(data) {
        let _ = validate_batch(&batch, &limits);
        let again = kommander_transport_grpc::decode_batch(&kommander_transport_grpc::encode_batch(&batch));
        assert_eq!(again.ok().as_ref(), Some(&batch), "protobuf round trip changed a decoded batch");
    }
}

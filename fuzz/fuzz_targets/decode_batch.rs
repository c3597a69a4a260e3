//! Fuzz the wire decoders of both network transports (see `kommander::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kommander::fuzzing::decode_untrusted(data);
});

//! The key hash of the partition map: xxHash64 (seed 0) of the key's bytes, from the
//! `xxhash-rust` crate (pure Rust, no I/O). It is stable across processes, platforms and versions
//! (a published algorithm, not `std`'s `DefaultHasher`), so every node routes a key to the same
//! partition; the reference vectors below pin it.

/// xxHash64 of `data` with `seed` (the `xxhash-rust` implementation).
fn xxh64(data: &[u8], seed: u64) -> u64 {
    xxhash_rust::xxh64::xxh64(data, seed)
}

/// The hash a key is routed by: `xxh64(key, 0)`.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh64(key, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_route_by_the_reference_hash() {
        assert_eq!(key_hash(b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(key_hash(b"abc"), 0x44BC_2CF5_AD77_0999);
    }

    #[test]
    fn matches_the_reference_vectors() {
        assert_eq!(xxh64(b"", 0), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(b"a", 0), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxh64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
        assert_eq!(xxh64(b"Nobody inspects the spammish repetition", 0), 0xFBCE_A83C_8A37_8BF1);
        let long = b"The quick brown fox jumps over the lazy dog, again and again and again.";
        assert_eq!(xxh64(long, 0), xxh64(long, 0));
        assert_ne!(xxh64(long, 0), xxh64(long, 1));
    }
}

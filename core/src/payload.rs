//! One codec for the runtime's own entry payloads — configuration changes
//! ([`crate::raft::Membership`]), system commands on partition 0, and the state imported by splits
//! and merges: a version byte, then [postcard](https://docs.rs/postcard) (serde, compact, no I/O).
//! Decoding is bounded by the input (a length prefix cannot make it allocate beyond what the bytes
//! hold) and answers a typed error for anything malformed. Application payloads are opaque bytes
//! and never go through here.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The format version written in front of every payload.
pub const VERSION: u8 = 1;

/// Why a runtime payload could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PayloadError {
    /// No bytes at all.
    #[error("empty payload")]
    Empty,
    /// Written by another version of the format.
    #[error("payload format version {0} is not {VERSION}")]
    Version(u8),
    /// The bytes do not hold a value of the expected type (truncated, trailing bytes, bad tag).
    #[error("malformed payload: {0}")]
    Malformed(String),
}

/// Encode `value` (version byte + postcard).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    out.extend(postcard::to_allocvec(value).expect("runtime payloads serialize"));
    out
}

/// Decode what [`encode`] wrote; every byte must be used.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, PayloadError> {
    let (&version, body) = bytes.split_first().ok_or(PayloadError::Empty)?;
    if version != VERSION {
        return Err(PayloadError::Version(version));
    }
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(PayloadError::Malformed(format!("{} trailing bytes", rest.len()))),
        Err(error) => Err(PayloadError::Malformed(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use std::collections::BTreeSet;

    #[test]
    fn round_trips_and_refuses_anything_else() {
        let value: (u64, BTreeSet<NodeId>, String) = (7, [NodeId(1), NodeId(3)].into(), "x".into());
        let bytes = encode(&value);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<(u64, BTreeSet<NodeId>, String)>(&bytes), Ok(value));
        assert_eq!(decode::<u64>(&[]), Err(PayloadError::Empty));
        assert_eq!(decode::<u64>(&[9, 1]), Err(PayloadError::Version(9)));
        assert!(matches!(
            decode::<(u64, BTreeSet<NodeId>, String)>(&bytes[..bytes.len() - 1]),
            Err(PayloadError::Malformed(_))
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode::<(u64, BTreeSet<NodeId>, String)>(&longer), Err(PayloadError::Malformed(_))));
        // A huge declared length with no bytes behind it fails without allocating for it.
        assert!(matches!(
            decode::<Vec<u64>>(&[VERSION, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(PayloadError::Malformed(_))
        ));
    }
}

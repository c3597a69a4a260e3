//! Node authentication: every frame carries a [`FrameHeader`] and an HMAC-SHA256 signature keyed
//! by the cluster's shared secret, computed over the header fields and the exact body bytes. The
//! receiver checks, in order: the cluster id, the signature (constant-time), the timestamp against a
//! replay window, and that the sender's nonce is above the highest nonce it accepted from that
//! sender. Senders draw nonces from a [`NonceSource`] (strictly increasing, seeded from the clock so
//! a restarted sender continues above its previous values).
//!
//! A receiver records a sender's nonce only once the frame is known to be meant for it (see
//! [`ClusterAuth::check`] and [`ClusterAuth::commit_nonce`]): a frame signed for another node, replayed
//! here, cannot raise the bar for the sender's genuine frames to this node.
//!
//! Secrets shorter than [`MIN_SECRET_BYTES`] are refused by [`ClusterAuth::try_new`], which every
//! transport uses; an empty key would let anyone sign frames.
//!
//! A receiver that restarts forgets the nonces it saw; a frame captured less than one window ago
//! could then be replayed once. Raft tolerates duplicated and delayed messages, so that costs
//! nothing in safety; the window bounds it.

use hmac::{Hmac, Mac};
use kommander_core::{NodeId, TransportError};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use thiserror::Error;

/// Bytes of a signature.
pub const SIGNATURE_LEN: usize = 32;

/// The shortest cluster secret transports accept. Use far more in production (32 random bytes);
/// this floor only refuses empty and trivially guessable keys.
pub const MIN_SECRET_BYTES: usize = 8;

/// Refuse secrets no transport should run with: empty, or shorter than [`MIN_SECRET_BYTES`].
pub fn check_secret(secret: &[u8]) -> Result<(), TransportError> {
    if secret.is_empty() {
        return Err(TransportError::Setup("the cluster secret must not be empty".into()));
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(TransportError::Setup(format!(
            "the cluster secret has {} bytes; at least {MIN_SECRET_BYTES} are required",
            secret.len()
        )));
    }
    Ok(())
}

const DOMAIN: &[u8] = b"kommander/frame/v1";

/// The signed fields that travel next to a frame's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Sender's cluster.
    pub cluster_id: String,
    /// Sending node.
    pub from: NodeId,
    /// Destination node.
    pub to: NodeId,
    /// Sender's clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Strictly increasing per sender.
    pub nonce: u64,
}

/// Why a frame failed authentication.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AuthError {
    /// The frame names another cluster.
    #[error("frame of cluster {0:?} rejected")]
    WrongCluster(String),
    /// A header field is missing or unreadable.
    #[error("missing or malformed auth field {0}")]
    MissingField(&'static str),
    /// The signature does not match the header and body.
    #[error("bad signature")]
    BadSignature,
    /// The timestamp is outside the replay window.
    #[error("timestamp {timestamp_ms} is outside the window around {now_ms}")]
    Expired {
        /// Frame timestamp.
        timestamp_ms: u64,
        /// Receiver's clock.
        now_ms: u64,
    },
    /// The nonce is not above the highest one accepted from the sender.
    #[error("nonce {nonce} from {from} was already used")]
    Replayed {
        /// Sender.
        from: NodeId,
        /// Offending nonce.
        nonce: u64,
    },
}

/// The cluster's identity and secret, and the receiver's replay state.
pub struct ClusterAuth {
    cluster_id: String,
    key: Hmac<Sha256>,
    window: Duration,
    last_nonce: Mutex<HashMap<NodeId, u64>>,
}

impl std::fmt::Debug for ClusterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAuth").field("cluster_id", &self.cluster_id).field("window", &self.window).finish()
    }
}

impl ClusterAuth {
    /// Auth for `cluster_id` with a shared `secret`, after [`check_secret`]. What transports use.
    pub fn try_new(cluster_id: impl Into<String>, secret: &[u8], window: Duration) -> Result<Self, TransportError> {
        check_secret(secret)?;
        Ok(Self::new(cluster_id, secret, window))
    }

    /// Auth for `cluster_id` with a shared `secret`, accepting timestamps within `window` of the
    /// local clock (either direction). Accepts any secret (tests sign with deliberately wrong
    /// ones); transports use [`ClusterAuth::try_new`].
    pub fn new(cluster_id: impl Into<String>, secret: &[u8], window: Duration) -> Self {
        ClusterAuth {
            cluster_id: cluster_id.into(),
            key: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length"),
            window,
            last_nonce: Mutex::new(HashMap::new()),
        }
    }

    /// The cluster id frames must carry.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    fn mac(&self, header: &FrameHeader, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.key.clone();
        mac.update(DOMAIN);
        mac.update(&(header.cluster_id.len() as u64).to_be_bytes());
        mac.update(header.cluster_id.as_bytes());
        mac.update(&header.from.0.to_be_bytes());
        mac.update(&header.to.0.to_be_bytes());
        mac.update(&header.timestamp_ms.to_be_bytes());
        mac.update(&header.nonce.to_be_bytes());
        mac.update(&(body.len() as u64).to_be_bytes());
        mac.update(body);
        mac
    }

    /// The signature of `header` + `body`.
    pub fn sign(&self, header: &FrameHeader, body: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.mac(header, body).finalize().into_bytes().into()
    }

    /// Authenticate a received frame at local time `now_ms`, recording its nonce on success
    /// ([`ClusterAuth::check`] then [`ClusterAuth::commit_nonce`]).
    pub fn verify(&self, header: &FrameHeader, body: &[u8], signature: &[u8], now_ms: u64) -> Result<(), AuthError> {
        self.check(header, body, signature, now_ms)?;
        self.commit_nonce(header)
    }

    /// Authenticate a received frame at local time `now_ms` without recording anything: cluster id,
    /// signature, timestamp window, and that the nonce is above the highest one recorded for the
    /// sender. Follow with [`ClusterAuth::commit_nonce`] once the frame is known to be for this
    /// node.
    pub fn check(&self, header: &FrameHeader, body: &[u8], signature: &[u8], now_ms: u64) -> Result<(), AuthError> {
        if header.cluster_id != self.cluster_id {
            return Err(AuthError::WrongCluster(header.cluster_id.clone()));
        }
        self.mac(header, body).verify_slice(signature).map_err(|_| AuthError::BadSignature)?;
        let window = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        if header.timestamp_ms.abs_diff(now_ms) > window {
            return Err(AuthError::Expired { timestamp_ms: header.timestamp_ms, now_ms });
        }
        let last = self.last_nonce.lock().unwrap_or_else(|p| p.into_inner());
        if header.nonce <= last.get(&header.from).copied().unwrap_or(0) {
            return Err(AuthError::Replayed { from: header.from, nonce: header.nonce });
        }
        Ok(())
    }

    /// Record the nonce of a frame [`ClusterAuth::check`] accepted. Fails with
    /// [`AuthError::Replayed`] if the sender's nonce was raised to or above it meanwhile (the same
    /// frame arriving twice concurrently is accepted once).
    pub fn commit_nonce(&self, header: &FrameHeader) -> Result<(), AuthError> {
        let mut last = self.last_nonce.lock().unwrap_or_else(|p| p.into_inner());
        let seen = last.entry(header.from).or_insert(0);
        if header.nonce <= *seen {
            return Err(AuthError::Replayed { from: header.from, nonce: header.nonce });
        }
        *seen = header.nonce;
        Ok(())
    }
}

/// Strictly increasing nonces: `max(previous + 1, microseconds since the epoch)`.
#[derive(Debug, Default)]
pub struct NonceSource(AtomicU64);

impl NonceSource {
    /// A new source.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next nonce.
    pub fn next(&self) -> u64 {
        let now = crate::unix_millis().saturating_mul(1000);
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let next = now.max(current + 1);
            match self.0.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => current = actual,
            }
        }
    }
}

/// Lower-case hex of `bytes` (for text headers).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse lower- or upper-case hex; `None` on odd length or a non-hex digit.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(nonce: u64) -> FrameHeader {
        FrameHeader { cluster_id: "c1".into(), from: NodeId(1), to: NodeId(2), timestamp_ms: 10_000, nonce }
    }

    #[test]
    fn a_signed_frame_verifies_once() {
        let auth = ClusterAuth::new("c1", b"secret", Duration::from_secs(30));
        let sig = auth.sign(&header(5), b"body");
        assert_eq!(auth.verify(&header(5), b"body", &sig, 10_500), Ok(()));
        assert_eq!(
            auth.verify(&header(5), b"body", &sig, 10_500),
            Err(AuthError::Replayed { from: NodeId(1), nonce: 5 })
        );
    }

    #[test]
    fn tampering_wrong_secret_and_wrong_cluster_are_rejected() {
        let auth = ClusterAuth::new("c1", b"secret", Duration::from_secs(30));
        let sig = auth.sign(&header(5), b"body");
        assert_eq!(auth.verify(&header(5), b"bodx", &sig, 10_000), Err(AuthError::BadSignature));
        let mut other_to = header(5);
        other_to.to = NodeId(3);
        assert_eq!(auth.verify(&other_to, b"body", &sig, 10_000), Err(AuthError::BadSignature));
        let intruder = ClusterAuth::new("c1", b"guess", Duration::from_secs(30));
        let forged = intruder.sign(&header(6), b"body");
        assert_eq!(auth.verify(&header(6), b"body", &forged, 10_000), Err(AuthError::BadSignature));
        let mut other_cluster = header(7);
        other_cluster.cluster_id = "c2".into();
        let sig = auth.sign(&other_cluster, b"body");
        assert!(matches!(auth.verify(&other_cluster, b"body", &sig, 10_000), Err(AuthError::WrongCluster(_))));
    }

    #[test]
    fn check_records_nothing_until_the_nonce_is_committed() {
        let auth = ClusterAuth::new("c1", b"secret", Duration::from_secs(30));
        let sig = auth.sign(&header(5), b"body");
        assert_eq!(auth.check(&header(5), b"body", &sig, 10_000), Ok(()));
        assert_eq!(auth.check(&header(5), b"body", &sig, 10_000), Ok(()));
        assert_eq!(auth.commit_nonce(&header(5)), Ok(()));
        assert!(matches!(auth.check(&header(5), b"body", &sig, 10_000), Err(AuthError::Replayed { .. })));
        assert!(matches!(auth.commit_nonce(&header(5)), Err(AuthError::Replayed { .. })));
        assert!(matches!(auth.commit_nonce(&header(4)), Err(AuthError::Replayed { .. })));
    }

    #[test]
    fn empty_and_short_secrets_are_refused() {
        for secret in [&b""[..], b"1234567"] {
            let result = ClusterAuth::try_new("c1", secret, Duration::from_secs(30));
            assert!(matches!(result, Err(TransportError::Setup(_))), "{secret:?}");
        }
        let Err(TransportError::Setup(why)) = check_secret(b"") else { panic!("empty secret accepted") };
        assert!(why.contains("empty"), "{why}");
        let Err(TransportError::Setup(why)) = check_secret(b"short") else { panic!("short secret accepted") };
        assert!(why.contains("at least 8"), "{why}");
        assert!(ClusterAuth::try_new("c1", b"12345678", Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn stale_timestamps_are_rejected() {
        let auth = ClusterAuth::new("c1", b"secret", Duration::from_secs(1));
        let sig = auth.sign(&header(5), b"");
        assert!(matches!(auth.verify(&header(5), b"", &sig, 12_000), Err(AuthError::Expired { .. })));
    }

    #[test]
    fn nonces_increase_and_hex_round_trips() {
        let source = NonceSource::new();
        let (a, b) = (source.next(), source.next());
        assert!(b > a);
        assert_eq!(from_hex(&to_hex(&[0, 255, 16])), Some(vec![0, 255, 16]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}

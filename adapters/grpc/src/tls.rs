//! TLS of the gRPC transport: rustls with the ring crypto provider, through tonic's `tls-ring`
//! feature. [`GrpcTls`] carries PEM bytes — the certificate chain and key the listener presents,
//! and the CA certificates `https://` peers are checked against — and [`crate::GrpcTransport::bind`]
//! checks them (a bad identity or CA bundle is a [`TransportError::Setup`] before anything runs).
//!
//! TLS authenticates the *listener* to its callers and encrypts the traffic; which node may send
//! frames is still decided by the cluster secret (every frame is signed), so no client
//! certificates are asked for.

use kommander_core::transport::TransportError;
use kommander_core::NodeId;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// TLS settings of a [`crate::GrpcTransport`]. The default is no TLS at all: the listener speaks
/// plaintext HTTP/2 and `https://` peers are refused.
#[derive(Clone, Default)]
pub struct GrpcTls {
    /// What the listener presents; `None`: it speaks plaintext HTTP/2 (`http://` peers).
    pub identity: Option<TlsIdentity>,
    /// CA certificates (PEM, one or more) that the certificate of an `https://` peer must chain
    /// to; the peer's URI host must be named in its certificate (a DNS name or an IP address).
    /// `None`: `https://` peers are refused.
    pub ca_pem: Option<Vec<u8>>,
}

/// A certificate chain and its private key, both PEM: the node's certificate first, then any
/// intermediates; the key PKCS#8, PKCS#1 or SEC1.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// The private key of the first certificate (PEM).
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTls")
            .field("identity", &self.identity)
            .field("ca_pem", &self.ca_pem.as_ref().map(|pem| format!("<{} bytes>", pem.len())))
            .finish()
    }
}

impl GrpcTls {
    /// The listener's tonic configuration, checked (the chain and key parse, and the key belongs
    /// to the first certificate); `None` without an identity.
    pub(crate) fn server_config(&self) -> Result<Option<ServerTlsConfig>, TransportError> {
        let Some(identity) = &self.identity else { return Ok(None) };
        let config = ServerTlsConfig::new().identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
        // tonic builds the rustls acceptor here: the same checks the server makes when it starts.
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|e| TransportError::Setup(format!("TLS identity of the gRPC listener: {}", chain(&e))))?;
        Ok(Some(config))
    }

    /// The client configuration for `https://` peers; `None` without CA certificates.
    pub(crate) fn client_config(&self) -> Option<ClientTlsConfig> {
        let ca = self.ca_pem.as_ref()?;
        Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
    }

    /// `endpoint` (for `peer`, whose URI is `what`) with TLS when its scheme is `https`.
    pub(crate) fn apply(
        &self,
        peer: NodeId,
        what: &str,
        endpoint: tonic::transport::Endpoint,
    ) -> Result<tonic::transport::Endpoint, TransportError> {
        if endpoint.uri().scheme_str() != Some("https") {
            return Ok(endpoint);
        }
        let Some(config) = self.client_config() else {
            return Err(TransportError::Setup(format!(
                "{what}: an https:// peer needs the CA certificates its certificate chains to \
                 (GrpcTls::ca_pem); peer {peer} cannot be reached without them"
            )));
        };
        endpoint.tls_config(config).map_err(|e| TransportError::Setup(format!("{what}: TLS: {}", chain(&e))))
    }
}

/// An error and its sources, `: `-separated (tonic's errors say little without their source).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_tls_is_the_default_and_keys_stay_out_of_debug_output() {
        let none = GrpcTls::default();
        assert!(none.server_config().unwrap().is_none());
        assert!(none.client_config().is_none());
        let tls = GrpcTls {
            identity: Some(TlsIdentity { cert_pem: b"cert".to_vec(), key_pem: b"very-secret-key".to_vec() }),
            ca_pem: None,
        };
        let shown = format!("{tls:?}");
        assert!(!shown.contains("very-secret-key") && shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn an_identity_that_is_not_pem_is_refused() {
        let tls = GrpcTls {
            identity: Some(TlsIdentity { cert_pem: b"not a certificate".to_vec(), key_pem: b"nor a key".to_vec() }),
            ca_pem: None,
        };
        match tls.server_config() {
            Err(TransportError::Setup(why)) => assert!(why.contains("TLS identity"), "{why}"),
            other => panic!("a bad identity was accepted: {other:?}"),
        }
    }
}

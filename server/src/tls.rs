//! TLS of the node (`--tls-cert`, `--tls-key`, `--tls-ca`), on rustls with the ring crypto
//! provider: the HTTP listener's [`rustls::ServerConfig`], the PEM the gRPC transport takes
//! ([`GrpcTls`]), and the HTTP clients that call other nodes (forwarding, `/ui/state`, the REST
//! transport) trusting the `--tls-ca` certificates only.
//!
//! Everything is read and checked once at start-up: a file that cannot be read, is not PEM,
//! holds no certificate or no key, or a key that does not belong to the certificate stops the
//! node with a [`TlsError`] naming the flag and the file.

use kommander::transport::grpc::{GrpcTls, TlsIdentity};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the TLS flags could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{flag} {}: cannot read the file: {source}", path.display())]
    Read {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("{flag} {}: not valid PEM: {source}", path.display())]
    Pem {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{flag} {}: no certificate in the file (expected PEM `BEGIN CERTIFICATE` sections)", path.display())]
    NoCertificate {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error(
        "--tls-key {}: no private key in the file (expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` section)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The certificate and the key do not make an identity (the key does not belong to the
    /// certificate, or a certificate or key rustls cannot use).
    #[error("--tls-cert {} with --tls-key {}: {source}", cert.display(), key.display())]
    Identity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// A CA certificate cannot be used as a trust anchor.
    #[error("--tls-ca {}: a certificate cannot be trusted as a CA: {source}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The HTTP client could not be built.
    #[error("the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The node's TLS material, read from the flags.
#[derive(Default)]
pub struct NodeTls {
    /// The listener's identity: `--tls-cert` and `--tls-key`.
    identity: Option<Identity>,
    /// `--tls-ca`: the PEM as read and its certificates.
    ca: Option<(Vec<u8>, Vec<CertificateDer<'static>>)>,
}

struct Identity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
}

/// The crypto provider of every TLS configuration the node builds.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { flag, path: path.to_owned(), source })
}

/// The certificates of a PEM file (at least one).
fn certificates(flag: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|source| TlsError::Pem {
        flag,
        path: path.to_owned(),
        source,
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { flag, path: path.to_owned() });
    }
    Ok(certs)
}

impl NodeTls {
    /// Read and check the files: `cert` and `key` together (the listener's identity; see
    /// [`crate::args::Args::validate`] for the flags' rules) and `ca` (trusted when calling nodes).
    pub fn load(cert: Option<&Path>, key: Option<&Path>, ca: Option<&Path>) -> Result<NodeTls, TlsError> {
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => {
                let cert_pem = read("--tls-cert", cert)?;
                let key_pem = read("--tls-key", key)?;
                let chain = certificates("--tls-cert", cert, &cert_pem)?;
                let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| match source {
                    pem::Error::NoItemsFound => TlsError::NoKey { path: key.to_owned() },
                    source => TlsError::Pem { flag: "--tls-key", path: key.to_owned(), source },
                })?;
                let identity_error = |source| TlsError::Identity { cert: cert.to_owned(), key: key.to_owned(), source };
                let server = rustls::ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(identity_error)?
                    .with_no_client_auth()
                    .with_single_cert(chain, private)
                    .map_err(identity_error)?;
                Some(Identity { cert_pem, key_pem, server: Arc::new(server) })
            }
            _ => None,
        };
        let ca = match ca {
            Some(path) => {
                let pem = read("--tls-ca", path)?;
                let certs = certificates("--tls-ca", path, &pem)?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in &certs {
                    roots.add(cert.clone()).map_err(|source| TlsError::Ca { path: path.to_owned(), source })?;
                }
                Some((pem, certs))
            }
            None => None,
        };
        Ok(NodeTls { identity, ca })
    }

    /// The listener's rustls configuration (`None`: plain HTTP).
    pub fn server_config(&self) -> Option<rustls::ServerConfig> {
        self.identity.as_ref().map(|identity| (*identity.server).clone())
    }

    /// The gRPC transport's TLS: the same identity, the same CA certificates.
    pub fn grpc(&self) -> GrpcTls {
        GrpcTls {
            identity: self
                .identity
                .as_ref()
                .map(|identity| TlsIdentity { cert_pem: identity.cert_pem.clone(), key_pem: identity.key_pem.clone() }),
            ca_pem: self.ca.as_ref().map(|(pem, _)| pem.clone()),
        }
    }

    /// `builder` (what the client does otherwise: timeouts, pools) trusting the `--tls-ca`
    /// certificates for `https://` URLs, and nothing else (no built-in root store).
    pub fn http_client(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::Client, TlsError> {
        let mut builder = builder.tls_built_in_root_certs(false);
        for cert in self.ca.iter().flat_map(|(_, certs)| certs) {
            builder = builder.add_root_certificate(reqwest::Certificate::from_der(cert)?);
        }
        Ok(builder.build()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA and a certificate for `localhost`/`127.0.0.1` it signed, with their keys (PEM).
    struct Material {
        ca: String,
        cert: String,
        key: String,
        other_key: String,
    }

    fn material() -> Material {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        Material { ca: ca.pem(), cert: cert.pem(), key: key.serialize_pem(), other_key }
    }

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_certificate_its_key_and_a_ca_make_a_listener_and_clients() {
        let dir = tempfile::tempdir().unwrap();
        let m = material();
        let (cert, key, ca) = (file(&dir, "c.pem", &m.cert), file(&dir, "k.pem", &m.key), file(&dir, "ca.pem", &m.ca));
        let tls = NodeTls::load(Some(&cert), Some(&key), Some(&ca)).unwrap();
        assert!(tls.server_config().is_some());
        let grpc = tls.grpc();
        assert_eq!(grpc.identity.map(|i| i.cert_pem), Some(m.cert.into_bytes()));
        assert_eq!(grpc.ca_pem, Some(m.ca.into_bytes()));
        tls.http_client(reqwest::Client::builder()).unwrap();
        let none = NodeTls::load(None, None, None).unwrap();
        assert!(none.server_config().is_none() && none.grpc().identity.is_none() && none.grpc().ca_pem.is_none());
    }

    #[test]
    fn unreadable_or_wrong_files_are_refused_naming_the_flag_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let m = material();
        let (cert, key, ca) = (file(&dir, "c.pem", &m.cert), file(&dir, "k.pem", &m.key), file(&dir, "ca.pem", &m.ca));
        let missing = dir.path().join("missing.pem");
        let garbage = file(&dir, "garbage.pem", "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n");
        let empty = file(&dir, "empty.pem", "just some text\n");
        let other_key = file(&dir, "other.pem", &m.other_key);
        type Case<'a> = (Option<&'a Path>, Option<&'a Path>, Option<&'a Path>, &'a [&'a str]);
        let cases: Vec<Case> = vec![
            (Some(&missing), Some(&key), None, &["--tls-cert", "missing.pem", "cannot read"]),
            (Some(&cert), Some(&missing), None, &["--tls-key", "missing.pem", "cannot read"]),
            (None, None, Some(&missing), &["--tls-ca", "missing.pem", "cannot read"]),
            (Some(&garbage), Some(&key), None, &["--tls-cert", "garbage.pem", "not valid PEM"]),
            (Some(&empty), Some(&key), None, &["--tls-cert", "empty.pem", "no certificate"]),
            (Some(&key), Some(&key), None, &["--tls-cert", "k.pem", "no certificate"]),
            (Some(&cert), Some(&cert), None, &["--tls-key", "c.pem", "no private key"]),
            (Some(&cert), Some(&other_key), None, &["--tls-cert", "--tls-key", "other.pem"]),
            (None, None, Some(&empty), &["--tls-ca", "empty.pem", "no certificate"]),
            (None, None, Some(&key), &["--tls-ca", "k.pem", "no certificate"]),
        ];
        for (cert, key, ca, expected) in cases {
            let error = match NodeTls::load(cert, key, ca) {
                Ok(_) => panic!("accepted {cert:?} {key:?} {ca:?}"),
                Err(error) => error.to_string(),
            };
            for part in expected {
                assert!(error.contains(part), "{error:?} lacks {part:?}");
            }
        }
        // The good files again: only the bad one was refused.
        assert!(NodeTls::load(Some(&cert), Some(&key), Some(&ca)).is_ok());
    }
}

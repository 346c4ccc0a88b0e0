//! TLS files and configurations: the serving [`Identity`] a reload swaps
//! for new connections (open ones keep theirs), the [`ClientIdentity`] that
//! a new outgoing connection reads again when its files changed, the
//! serving configuration (client certificates required, or optional for a
//! service that also takes bearer tokens) and the client connector.
//!
//! ring is the only crypto provider. This module must never accept a
//! client certificate that does not chain to the configured client CA: an
//! unverifiable certificate fails the handshake; with
//! [`ClientCertificates::Optional`] only *no* certificate is let through,
//! and the caller must then authenticate the request another way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: no CERTIFICATE PEM block found")]
    NoCertificate { path: String },
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Read every CERTIFICATE block of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// The root store of every certificate in a PEM file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots
            .add(c)
            .map_err(|e| TlsError::Rustls(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| read_error(key, e))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(load_certs(cert)?, der, &provider).map_err(|e| {
        TlsError::Rustls(format!(
            "{} with {}: {e} (the key must be the certificate's)",
            cert.display(),
            key.display()
        ))
    })
}

/// "subject S, serial X, expires T" of an identity's leaf.
fn describe(key: &CertifiedKey) -> Result<String, TlsError> {
    let leaf = key
        .end_entity_cert()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let (_, c) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(format!(
        "subject {}, serial {}, expires {}",
        c.subject(),
        c.raw_serial_as_string().replace(':', ""),
        c.validity().not_after
    ))
}

/// The serving certificate and key in use, swapped whole by [`Identity::reload`].
#[derive(Debug)]
pub struct Identity {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Identity {
    /// Load `cert` (the chain, leaf first) and `key`, which must match.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            current: RwLock::new(Arc::new(certified_key(cert, key)?)),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    /// Read the files again and put them in force for new connections
    /// (open ones keep theirs); on error the identity in use stays.
    /// Returns "subject S, serial X, expires T" of the new leaf.
    pub fn reload(&self) -> Result<String, TlsError> {
        let new = certified_key(&self.cert, &self.key)?;
        let summary = describe(&new)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
        Ok(summary)
    }

    /// The certificate file it reloads from.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// The leaf certificate in use (DER).
    pub fn leaf(&self) -> CertificateDer<'static> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.cert[0].clone()
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// Whether a client must present a certificate at the TLS layer. Either
/// way a certificate that is presented must chain to the client CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificates {
    /// No certificate, no connection (the signer).
    Required,
    /// A client without one is let through, to authenticate with a bearer
    /// token or be refused per request (the approver).
    Optional,
}

/// The serving configuration: the certificate from `identity`, client
/// certificates verified against `client_ca`, ALPN h2.
pub fn server_config(
    identity: Arc<Identity>,
    client_ca: &Path,
    clients: ClientCertificates,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(load_roots(client_ca)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    let verifier = match clients {
        ClientCertificates::Required => verifier,
        ClientCertificates::Optional => verifier.allow_unauthenticated(),
    }
    .build()
    .map_err(|e| TlsError::Rustls(format!("{}: {e}", client_ca.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A client identity for outgoing connections. A new connection reads the
/// files again when they changed since the last one (a rotation, or an
/// operator's), so it presents the current certificate while open
/// connections keep theirs. A changed pair that does not load keeps the
/// one in use (logged).
#[derive(Debug)]
pub struct ClientIdentity {
    cert: PathBuf,
    key: PathBuf,
    /// Which peer the identity is presented to, for the log lines.
    peer: &'static str,
    current: RwLock<(Option<SystemTime>, Arc<CertifiedKey>)>,
}

fn modified(cert: &Path, key: &Path) -> Option<SystemTime> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    m(cert).max(m(key))
}

impl ClientIdentity {
    /// Load `cert` and `key`, which must match; `peer` names who it is
    /// presented to ("the signer").
    pub fn load(cert: &Path, key: &Path, peer: &'static str) -> Result<Self, TlsError> {
        let at = modified(cert, key);
        Ok(Self {
            current: RwLock::new((at, Arc::new(certified_key(cert, key)?))),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            peer,
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let at = modified(&self.cert, &self.key);
        let held = self.current.read().unwrap_or_else(PoisonError::into_inner);
        if held.0 == at {
            return held.1.clone();
        }
        drop(held);
        let mut held = self.current.write().unwrap_or_else(PoisonError::into_inner);
        match certified_key(&self.cert, &self.key).and_then(|k| Ok((describe(&k)?, k))) {
            Ok((summary, k)) => {
                tracing::info!("calls to {} now present {summary}", self.peer);
                *held = (at, Arc::new(k));
            }
            Err(e) => {
                tracing::warn!(
                    "the changed TLS identity towards {} does not load; the one in use stays: {e}",
                    self.peer
                );
                held.0 = at;
            }
        }
        held.1.clone()
    }
}

impl rustls::client::ResolvesClientCert for ClientIdentity {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The TLS connector towards a peer whose certificate chains to `ca`,
/// presenting `identity`, ALPN h2.
pub fn connector(
    ca: &Path,
    identity: ClientIdentity,
) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(load_roots(ca)?)
        .with_client_cert_resolver(Arc::new(identity));
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

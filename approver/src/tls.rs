//! TLS: the serving rustls configuration (client certificates optional at
//! the TLS layer but, when sent, verified against the client CA), the
//! serving identity that a reload swaps for new connections ([`Identity`];
//! open ones keep theirs), the accept loop that hands finished handshakes to
//! tonic (a refused one is an info line with the peer and the reason), and
//! the mTLS client configuration towards the signer.
//!
//! ring is the only crypto provider. This module must never accept a client
//! certificate that does not chain to the configured client CA: an
//! unverifiable certificate fails the handshake; only *no* certificate is
//! let through (and then every RPC but a token create is UNAUTHENTICATED).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

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

/// Read every CERTIFICATE block of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
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

    /// Read the files again and serve them to new connections; on error
    /// the identity in use stays. Returns "subject S, serial X, expires T".
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

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(load_certs(cert)?, load_key(key)?, &provider).map_err(|e| {
        TlsError::Rustls(format!(
            "{} with {}: {e} (the key must be the certificate's)",
            cert.display(),
            key.display()
        ))
    })
}

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

/// The serving configuration: the certificate from `identity`, client
/// certificates verified against `client_ca` when presented, ALPN h2.
pub fn server_config(
    identity: Arc<Identity>,
    client_ca: &Path,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in load_certs(client_ca)? {
        roots.add(c).map_err(|e| TlsError::Rustls(e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Accept TCP connections and run each TLS handshake in its own task (a
/// slow client cannot stall the loop); finished streams are sent to the
/// returned channel for `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
) -> mpsc::Receiver<Result<TlsStream<TcpStream>, std::io::Error>> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer): (TcpStream, SocketAddr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            // Without it, Nagle's algorithm holds an answer's last segment
            // until the client's delayed ACK (~40 ms per list or get).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "TCP_NODELAY failed");
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let accept = acceptor.accept(tcp).into_fallible();
                match tokio::time::timeout(Duration::from_secs(10), accept).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err((e, tcp))) => {
                        tracing::info!(%peer, reason = %e, "TLS handshake refused");
                        linger(tcp).await;
                    }
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// The approver's client identity towards the signer. A new connection
/// reads the files again when they changed since the last one (the
/// approver's own rotation, or an operator's), so it presents the current
/// certificate while open connections keep theirs. A changed pair that does
/// not load keeps the one in use (logged).
#[derive(Debug)]
pub struct ClientIdentity {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Option<std::time::SystemTime>, Arc<CertifiedKey>)>,
}

fn modified(cert: &Path, key: &Path) -> Option<std::time::SystemTime> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    m(cert).max(m(key))
}

impl ClientIdentity {
    /// Load `cert` and `key`, which must match.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let at = modified(cert, key);
        Ok(Self {
            current: RwLock::new((at, Arc::new(certified_key(cert, key)?))),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
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
                tracing::info!("calls to the signer now present {summary}");
                *held = (at, Arc::new(k));
            }
            Err(e) => {
                tracing::warn!(
                    "the changed TLS identity towards the signer does not load; the one in use stays: {e}"
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

/// The TLS connector towards the signer: its CA, our [`ClientIdentity`],
/// ALPN h2.
pub fn signer_connector(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots.add(c).map_err(|e| TlsError::Rustls(e.to_string()))?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(ClientIdentity::load(cert, key)?));
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// Every TLS file `config` names loads: the serving identity (its key the
/// certificate's), the client CA, the trust bundle and the identity towards
/// the signer (`serve --check-config`).
pub fn check_files(config: &crate::config::Config) -> Result<(), TlsError> {
    let identity = Arc::new(Identity::load(&config.tls_cert, &config.tls_key)?);
    server_config(identity, &config.client_ca)?;
    load_certs(&config.trust_bundle)?;
    load_certs(&config.signer.ca)?;
    Identity::load(&config.signer.cert, &config.signer.key)?;
    Ok(())
}

/// After a refused handshake (the alert already written): close our side
/// and read what the client still sends for a moment before dropping the
/// socket. Dropping it with unread data would send a TCP reset, which can
/// destroy the alert before the client reads it, and the client would
/// see "broken pipe" instead of why it was refused.
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

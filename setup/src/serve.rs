//! `certsign-signer serve`: the process around the signer's service. It owns
//! the TLS listener (client certificates required and verified against
//! `client_ca`; a refused handshake is logged at info with the peer and the
//! reason), the serving identity that SIGHUP reloads from `tls_cert` /
//! `tls_key`, and SIGTERM / SIGINT with `shutdown_grace`.
//!
//! It never makes a signing decision, and a reload never touches the CA key,
//! the profiles or the allow-list: those need a restart. A reload that fails
//! (a missing file, a key that does not match the certificate) keeps the
//! identity in use and says why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use certsign_signer::authority::Authority;
use certsign_signer::config::Config;
use certsign_signer::daemon::DaemonError;
use certsign_signer::{harden, service};
use rustls::RootCertStore;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn failed(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Failed(e.to_string())
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
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        Ok(Self {
            current: RwLock::new(Arc::new(certified_key(cert, key)?)),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    /// Read the files again and put them in force for new connections
    /// (open ones keep theirs); on error the identity in use stays.
    /// Returns the new leaf's subject, serial and notAfter.
    pub fn reload(&self) -> Result<String, String> {
        let new = certified_key(&self.cert, &self.key)?;
        let summary = describe(&new)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
        Ok(summary)
    }

    /// The certificate file reloaded from.
    pub fn cert_path(&self) -> &Path {
        &self.cert
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

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let at = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| at(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| at(cert, &e))?;
    if chain.is_empty() {
        return Err(at(cert, &"no CERTIFICATE PEM block"));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| at(key, &e))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, der, &provider).map_err(|e| {
        format!(
            "{} with {}: {e} (the key must be the certificate's)",
            cert.display(),
            key.display()
        )
    })
}

/// "subject S, serial X, expires T" of the identity's leaf.
fn describe(key: &CertifiedKey) -> Result<String, String> {
    let leaf = key.end_entity_cert().map_err(|e| e.to_string())?;
    let (_, c) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| e.to_string())?;
    Ok(format!(
        "subject {}, serial {}, expires {}",
        c.subject(),
        c.raw_serial_as_string().replace(':', ""),
        c.validity().not_after
    ))
}

/// The serving configuration: client certificates required, verified
/// against `client_ca`; the certificate from `identity`; ALPN h2.
fn server_config(
    identity: Arc<Identity>,
    client_ca: &Path,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(client_ca)
        .map_err(|e| format!("{}: {e}", client_ca.display()))?
    {
        let c = c.map_err(|e| format!("{}: {e}", client_ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", client_ca.display()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("{}: {e}", client_ca.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Accept connections and run each handshake in its own task; finished
/// streams go to the returned channel. A refused handshake (an unknown CA,
/// an expired certificate, none at all) is one info line with the peer.
fn incoming(
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
            // until the client's delayed ACK (~40 ms).
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let accept = acceptor.accept(tcp).into_fallible();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
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

/// Reload the serving identity on every SIGHUP, logging what happened.
async fn on_sighup(identity: Arc<Identity>, mut hangups: Signal) {
    while hangups.recv().await.is_some() {
        let path = identity.cert_path().display().to_string();
        match identity.reload() {
            Ok(what) => tracing::info!(
                "SIGHUP: reloaded the TLS certificate from {path} ({what}); the CA key, profiles and allow-list need a restart"
            ),
            Err(e) => tracing::error!(
                "SIGHUP: TLS reload from {path} failed; the certificate in use stays: {e}"
            ),
        }
    }
}

/// Harden the process, open the authority and serve until SIGTERM or
/// SIGINT, then give open calls `shutdown_grace` to finish. Prints
/// `listening on <addr>` on stdout once connections are accepted.
pub async fn serve(path: &Path) -> Result<(), DaemonError> {
    // Before anything slow: SIGHUP's default action would end the process.
    let hangups = signal(SignalKind::hangup()).map_err(|e| failed(format!("SIGHUP: {e}")))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| failed(format!("SIGTERM: {e}")))?;
    harden::harden_process().map_err(|e| failed(format!("hardening failed: {e}")))?;
    let config = Config::load(path)?;
    let (listen, grace) = (config.listen, config.shutdown_grace);
    let (tls_key, renew_before) = (config.tls_key.clone(), config.tls_renew_before);
    let identity = Arc::new(Identity::load(&config.tls_cert, &config.tls_key).map_err(failed)?);
    let tls = server_config(identity.clone(), &config.client_ca).map_err(failed)?;
    let authority = Arc::new(Authority::open(config).map_err(failed)?);
    harden::lock_memory();
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| failed(format!("listen {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(failed)?;
    println!("listening on {addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::spawn(crate::self_renew::run(
        authority.clone(),
        identity.clone(),
        tls_key,
        renew_before,
    ));
    tokio::spawn(on_sighup(identity, hangups));
    let stopping = Arc::new(tokio::sync::Notify::new());
    let stop = stopping.clone();
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!(grace = ?grace, "stopping: no new calls; open ones get shutdown_grace");
        stop.notify_one();
    };
    let served = service::serve(
        authority,
        ReceiverStream::new(incoming(listener, tls)),
        shutdown,
    );
    tokio::select! {
        r = served => r.map_err(failed),
        () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("shutdown_grace elapsed with calls still open; exiting");
            Ok(())
        }
    }
}

/// `serve --check-config`: the configuration loads and validates, and the
/// TLS identity (its key matching its certificate) and the client CA it
/// names load. Opens no journal and no CA key, so it runs beside a serving
/// signer.
pub fn check_config(path: &Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let identity = Arc::new(Identity::load(&config.tls_cert, &config.tls_key)?);
    server_config(identity, &config.client_ca)?;
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

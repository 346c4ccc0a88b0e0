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

use std::path::Path;
use std::sync::Arc;

use certsign_runtime::accept::incoming;
use certsign_runtime::tls::{self, ClientCertificates, Identity, TlsError};
use certsign_signer::authority::Authority;
use certsign_signer::config::Config;
use certsign_signer::daemon::DaemonError;
use certsign_signer::{harden, service};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_stream::wrappers::ReceiverStream;

fn failed(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Failed(e.to_string())
}

/// The serving configuration: client certificates required, verified
/// against `client_ca`; the certificate from `identity`; ALPN h2.
fn server_config(
    identity: Arc<Identity>,
    client_ca: &Path,
) -> Result<rustls::ServerConfig, TlsError> {
    tls::server_config(identity, client_ca, ClientCertificates::Required)
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
    let identity =
        Arc::new(Identity::load(&config.tls_cert, &config.tls_key).map_err(|e| e.to_string())?);
    server_config(identity, &config.client_ca).map_err(|e| e.to_string())?;
    Ok(())
}

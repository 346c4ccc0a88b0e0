//! The daemon's entry points, called by the `certsign-signer` binary:
//! `serve` (harden, load, listen, answer until SIGTERM/SIGINT) and
//! `audit verify`.
//!
//! A configuration that does not load is [`DaemonError::Config`], so the
//! binary can exit 64 for it. This module never parses arguments or sets up
//! logging (the binary does) and never makes a signing decision.

use std::path::Path;
use std::sync::Arc;

use crate::authority::Authority;
use crate::config::{Config, ConfigError};
use crate::{harden, journal, service};

/// Why the daemon stopped or did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration does not load or validate (exit 64).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Anything else (exit 1).
    #[error("{0}")]
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Failed(e.to_string())
}

/// Harden the process, open the authority and serve until a stop signal.
/// Prints `listening on <addr>` on stdout once connections are accepted.
pub async fn serve(path: &Path) -> Result<(), DaemonError> {
    harden::harden_process().map_err(|e| failed(format!("hardening failed: {e}")))?;
    let config = Config::load(path)?;
    let listen = config.listen;
    let authority = Arc::new(Authority::open(config).map_err(failed)?);
    harden::lock_memory();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| failed(format!("listen {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(failed)?;
    println!("listening on {addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    service::serve(authority, listener, shutdown)
        .await
        .map_err(failed)
}

/// `audit verify`: check the journal's hash chain and sealed head; returns
/// the report line.
pub fn audit_verify(path: &Path) -> Result<String, DaemonError> {
    let config = Config::load(path)?;
    // A torn line after the sealed head is a write in progress (or a crash
    // before any answer), not tampering.
    let v = journal::verify(&config.journal, true).map_err(failed)?;
    Ok(format!(
        "journal {}: {} lines, chain and sealed head intact",
        config.journal.display(),
        v.lines
    ))
}

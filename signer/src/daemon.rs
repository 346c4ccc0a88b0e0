//! The daemon's entry points, called by the `certsign-signer` binary:
//! [`DaemonError`] and `audit verify`. Serving (the TLS listener, signals)
//! is the binary's; the service it serves is [`crate::service`].
//!
//! A configuration that does not load is [`DaemonError::Config`], so the
//! binary can exit 64 for it. This module never parses arguments or sets up
//! logging (the binary does) and never makes a signing decision.

use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::journal;

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

//! certsign set-up: everything the `certsign-signer` binary does that is not
//! serving.
//!
//! - [`init`]: `certsign-signer init`, a complete local deployment.
//! - [`console`]: console issuance (`certsign-signer issue`, init's own
//!   identities) through the signer's normal `Sign` path.
//! - [`serve`]: `certsign-signer serve`: the TLS listener, SIGHUP reloads of
//!   the serving identity, SIGTERM with its grace.
//! - [`self_renew`]: the signer re-issues its own TLS certificate before it
//!   expires.
//! - [`health`]: the signer's gRPC health without TLS (`health_listen`).
//! - [`metrics`]: the signer's Prometheus metrics (`metrics_listen`) and
//!   the expiry warnings of the certificates it runs on.
//!
//! The binary (`src/main.rs`) also calls the daemon library for `serve` and
//! `audit verify`. This crate never signs outside the authority and never
//! prints or logs a private key.

#![forbid(unsafe_code)]

pub mod console;
pub mod health;
pub mod init;
pub mod metrics;
pub mod self_renew;
pub mod serve;

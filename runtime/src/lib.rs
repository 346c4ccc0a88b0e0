//! What both certsign daemons (the signer's `certsign-signer serve` and the
//! approver) run on around their domain:
//!
//! - [`tls`]: the serving identity that a reload swaps for new connections,
//!   the client identity that follows its files, the rustls configurations;
//! - [`accept`]: the TCP accept loop that runs each TLS handshake in its own
//!   task and logs a refused one with the peer and the reason;
//! - [`files`]: writing a renewed certificate or key whole or not at all;
//! - [`expiry`]: seconds until the certificates a daemon runs on expire, and
//!   the log warning 30 days ahead;
//! - [`http`]: the small plain-HTTP endpoints (metrics, CRL);
//! - [`health`]: gRPC health without TLS for orchestrators' probes;
//! - [`log`]: the log subscriber, text or JSON.
//!
//! This crate makes no signing, approval or authorization decision, holds no
//! CA key, and never logs key material. It never accepts a client
//! certificate that does not chain to the CA it was given.

pub mod accept;
pub mod expiry;
pub mod files;
pub mod health;
pub mod http;
pub mod log;
pub mod tls;

/// Now, in unix seconds (0 before 1970, saturating far ahead).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

//! The certificates the approver itself runs on (its TLS identity, its
//! client identity towards the signer, the CA bundles it trusts) and the
//! CRL it publishes: seconds until each expires, as metrics, and a warning
//! in the log 30 days ahead (then once a day until it is renewed;
//! [`certsign_runtime::expiry`]).
//! Files are read again at every check, so a renewed certificate is seen
//! without a restart.
//!
//! This module only reads certificates; it must never change a file or
//! the CRL, and never log anything but names, paths and dates.

use std::path::PathBuf;
use std::sync::Arc;

use certsign_runtime::expiry::Warnings;

use crate::crl::CrlPublisher;
use crate::metrics::{CertificateLabels, Metrics};
use certsign_runtime::unix_now;

use certsign_runtime::expiry::CHECK_EVERY;

/// The certificate files the approver runs on, each under a fixed label,
/// each file once (the signer client identity is usually the TLS one).
pub fn watched(config: &crate::config::Config) -> Vec<(&'static str, PathBuf)> {
    let mut out: Vec<(&'static str, PathBuf)> = Vec::new();
    for (label, path) in [
        ("tls", &config.tls_cert),
        ("signer_client", &config.signer.cert),
        ("ca", &config.trust_bundle),
        ("client_ca", &config.client_ca),
        ("signer_ca", &config.signer.ca),
    ] {
        if !out.iter().any(|(_, p)| p == path) {
            out.push((label, path.clone()));
        }
    }
    out
}

/// Check now and then every [`CHECK_EVERY`], for as long as the process
/// runs.
pub async fn watch(files: Vec<(&'static str, PathBuf)>, crl: CrlPublisher, metrics: Arc<Metrics>) {
    let mut warnings = Warnings::default();
    loop {
        let now = unix_now();
        for (label, path) in &files {
            if let Some(left) = warnings.check(label, path, now, "the approver") {
                metrics
                    .certificate_expiry
                    .get_or_create(&CertificateLabels { certificate: label })
                    .set(left);
            }
        }
        if let Some(current) = crl.current() {
            let left = current.next_update - now;
            metrics.crl_expiry.set(left);
            // The publisher refreshes at half the validity: with a quarter
            // left, refreshes have been failing.
            let validity = (current.next_update - current.this_update).max(0);
            if left < validity / 4 && warnings.due("crl") {
                tracing::warn!(
                    certificate = "crl",
                    seconds_left = left,
                    next_update = current.next_update,
                    "the published CRL reaches its nextUpdate soon and has not been refreshed"
                );
            }
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

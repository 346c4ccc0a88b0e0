//! The certificates the approver itself runs on (its TLS identity, its
//! client identity towards the signer, the CA bundles it trusts) and the
//! CRL it publishes: seconds until each expires, as metrics, and a warning
//! in the log [`WARN_BEFORE`] ahead (then once a day until it is renewed).
//! Files are read again at every check, so a renewed certificate is seen
//! without a restart.
//!
//! This module only reads certificates; it must never change a file or
//! the CRL, and never log anything but names, paths and dates.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use x509_parser::prelude::*;

use crate::crl::CrlPublisher;
use crate::inventory::unix_now;
use crate::metrics::{CertificateLabels, Metrics};

/// How long before a certificate expires the warnings start.
pub const WARN_BEFORE: Duration = Duration::from_secs(30 * 86400);

/// How often the files and the CRL are checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// How often a warning about the same certificate is repeated.
const REPEAT_WARNING: Duration = Duration::from_secs(86400);

/// The earliest notAfter (unix seconds) of the certificates in a PEM file
/// (a bundle's first expiry is when it starts to fail).
pub fn earliest_not_after(path: &std::path::Path) -> Result<i64, String> {
    let certs = crate::tls::load_certs(path).map_err(|e| e.to_string())?;
    certs
        .iter()
        .map(|der| {
            X509Certificate::from_der(der.as_ref())
                .map(|(_, c)| c.validity().not_after.timestamp())
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .try_fold(None, |min: Option<i64>, t| {
            t.map(|t| Some(min.map_or(t, |m| m.min(t))))
        })?
        .ok_or_else(|| format!("{}: no certificate", path.display()))
}

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
    let mut warned: HashMap<&'static str, Instant> = HashMap::new();
    loop {
        let now = unix_now();
        for (label, path) in &files {
            match earliest_not_after(path) {
                Ok(not_after) => {
                    let left = not_after - now;
                    metrics
                        .certificate_expiry
                        .get_or_create(&CertificateLabels { certificate: label })
                        .set(left);
                    if left < secs(WARN_BEFORE) && due(&mut warned, label) {
                        warn_expiry(label, &path.display().to_string(), left);
                    }
                }
                Err(e) => {
                    if due(&mut warned, label) {
                        tracing::warn!(certificate = label, error = %e, "cannot read a certificate the approver runs on");
                    }
                }
            }
        }
        if let Some(current) = crl.current() {
            let left = current.next_update - now;
            metrics.crl_expiry.set(left);
            // The publisher refreshes at half the validity: with a quarter
            // left, refreshes have been failing.
            let validity = (current.next_update - current.this_update).max(0);
            if left < validity / 4 && due(&mut warned, "crl") {
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

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Whether a warning about `label` is due now (and note it).
fn due(warned: &mut HashMap<&'static str, Instant>, label: &'static str) -> bool {
    if warned
        .get(label)
        .is_some_and(|t| t.elapsed() < REPEAT_WARNING)
    {
        return false;
    }
    warned.insert(label, Instant::now());
    true
}

fn warn_expiry(label: &str, path: &str, left: i64) {
    let days_left = left.div_euclid(86400);
    if left <= 0 {
        tracing::warn!(
            certificate = label,
            path,
            days_left,
            "certificate has expired; renew it"
        );
    } else {
        tracing::warn!(
            certificate = label,
            path,
            days_left,
            "certificate expires in {days_left} days; renew it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_repeat_daily_not_every_check() {
        let mut warned = HashMap::new();
        assert!(due(&mut warned, "tls"));
        assert!(!due(&mut warned, "tls"));
        assert!(due(&mut warned, "ca"));
    }
}

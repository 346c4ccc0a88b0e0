//! The signer's own serving certificate, re-issued by the signer itself
//! before it expires, with no downtime: soon after start and then every
//! hour the certificate in `tls_cert` is checked; within its renewal window
//! (`tls_renew_before`, default the shorter of 30 days and a third of its
//! lifetime) a new ECDSA P-256 key and a CSR repeating the certificate's
//! subject (byte for byte) and SANs go through the authority's console path
//! under the profile the certificate names (its lineage) and with its
//! usages, journaled like every issue. The key, then the certificate, are
//! written atomically and the serving identity reloaded: new connections
//! get the new certificate, open ones keep theirs.
//!
//! It never touches the CA key, never writes a half-written file and never
//! logs key material.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use certsign_evidence::{Lineage, Usage};
use certsign_signer::authority::Authority;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData as _, SigningKey as _};
use x509_parser::prelude::X509Certificate;

use crate::console::console_issue;
use certsign_runtime::expiry::renewal_due;
use certsign_runtime::files::{self, write_atomically};
use certsign_runtime::tls::Identity;

const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Check soon after start and then every hour, forever (spawn it).
pub async fn run(
    authority: Arc<Authority>,
    identity: Arc<Identity>,
    key: std::path::PathBuf,
    window: Option<Duration>,
) {
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::time::sleep(wait).await;
        wait = CHECK_EVERY;
        let cert = identity.cert_path().to_path_buf();
        match renew_if_due(&authority, &cert, &key, window, SystemTime::now()).await {
            Ok(None) => {}
            Ok(Some(serial)) => match identity.reload() {
                Ok(what) => tracing::info!(
                    serial,
                    "re-issued the signer's own TLS certificate ({what}); written to {}",
                    cert.display()
                ),
                Err(e) => tracing::error!(
                    "the re-issued TLS certificate does not load; the one in use stays: {e}"
                ),
            },
            Err(e) => tracing::error!(
                "re-issuing the signer's own TLS certificate failed; retrying in an hour: {e}"
            ),
        }
    }
}

async fn renew_if_due(
    authority: &Authority,
    cert_path: &Path,
    key_path: &Path,
    window: Option<Duration>,
    now: SystemTime,
) -> Result<Option<String>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let leaf = CertificateDer::from_pem_file(cert_path)
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let v = cert.validity();
    let due = renewal_due(
        v.not_before.timestamp(),
        v.not_after.timestamp(),
        now,
        window,
    );
    if !due {
        return Ok(None);
    }
    let lineage = Lineage::of_certificate(&cert)
        .map_err(|e| e.to_string())?
        .ok_or(
            "the certificate carries no certsign lineage; re-issue it with `certsign-signer issue`",
        )?;
    let usages = Usage::of_certificate(&cert)
        .into_iter()
        .filter(|u| *u != Usage::Any)
        .map(|u| u.as_str().to_string())
        .collect();
    // Before anything is issued, so a read-only place costs no certificate.
    for path in [key_path, cert_path] {
        files::writable(path).map_err(|e| {
            format!("{e}: re-issuing writes the new files beside it (deploy/README.md, \"Rotate\")")
        })?;
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let csr = der::pem::encode_string(
        "CERTIFICATE REQUEST",
        der::pem::LineEnding::LF,
        &csr(&cert, &key)?,
    )
    .map_err(|e| e.to_string())?;
    let pem = console_issue(
        authority,
        csr.into_bytes(),
        &lineage.signer_name,
        usages,
        None,
    )
    .await?;
    write_atomically(key_path, crate::init::key_pem(&key)?.as_bytes(), 0o600)
        .map_err(|e| e.to_string())?;
    write_atomically(cert_path, pem.as_bytes(), 0o644).map_err(|e| e.to_string())?;
    let (_, new) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let new = new.parse_x509().map_err(|e| e.to_string())?;
    Ok(Some(new.raw_serial_as_string().replace(':', "")))
}

/// A PKCS#10 request for `key` with `cert`'s subject and SANs.
fn csr(cert: &X509Certificate<'_>, key: &KeyPair) -> Result<Vec<u8>, String> {
    certsign_evidence::request::renewal_request(cert, &key.subject_public_key_info(), |info| {
        key.sign(info).map_err(|e| e.to_string())
    })
    .map_err(|e| match e {
        certsign_evidence::request::RequestError::SubjectNotCanonical => {
            format!("{e}: re-issue with `certsign-signer issue`")
        }
        e => e.to_string(),
    })
}

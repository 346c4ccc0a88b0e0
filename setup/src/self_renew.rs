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

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use certsign_evidence::{Lineage, Usage};
use certsign_signer::authority::Authority;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData as _, SigningKey as _};
use x509_parser::prelude::X509Certificate;

use crate::console::console_issue;
use crate::serve::Identity;

const CHECK_EVERY: Duration = Duration::from_secs(3600);
const DEFAULT_WINDOW: Duration = Duration::from_secs(30 * 86400);

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
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    let lifetime = Duration::from_secs(secs(v.not_after.timestamp() - v.not_before.timestamp()));
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let left = Duration::from_secs(secs(v.not_after.timestamp()).saturating_sub(now_secs));
    if left > window.unwrap_or_else(|| DEFAULT_WINDOW.min(lifetime / 3)) {
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
    writable(key_path)?;
    writable(cert_path)?;
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
    write_atomically(key_path, crate::init::key_pem(&key)?.as_bytes(), 0o600)?;
    write_atomically(cert_path, pem.as_bytes(), 0o644)?;
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

/// A new file can be made beside `path` (checked before anything is
/// issued, so a read-only place costs no certificate).
fn writable(path: &Path) -> Result<(), String> {
    let name = path.file_name().ok_or("not a file name")?;
    let probe = path.with_file_name(format!(".{}.new", name.to_string_lossy()));
    std::fs::File::create(&probe).map_err(|e| {
        format!(
            "{}: {e}: re-issuing writes the new files beside it (deploy/README.md, \"Rotate\")",
            probe.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// `data` to `path` whole or not at all (temporary file, fsync, rename).
fn write_atomically(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    let name = path.file_name().ok_or("not a file name")?;
    let tmp = path.with_file_name(format!(".{}.new", name.to_string_lossy()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(at)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(at)?;
    std::fs::rename(&tmp, path).map_err(at)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

//! `certctl certificate revoke`: an admin revokes the certificates issued
//! for requests (`NAME...`) or found by serial (`--serial HEX`), or a holder
//! revokes its own certificate (`--cert F --key K`, no names). Each
//! revocation is a RevocationStatement signed with the caller's own key.
//!
//! Everything local is checked before connecting (the reason, the serials,
//! the key); nothing is sent for a target whose certificate cannot be found.
//! It never revokes a certificate other than the one it signed for: the
//! statement binds the serial and the SHA-256 of that certificate.

use std::time::SystemTime;

use anyhow::{Result, anyhow, bail};
use certsign_proto::v1 as pb;

use super::common::{fetch, finish_errors};
use crate::cli;
use crate::config::Settings;
use crate::conn::{self, Conn};
use crate::evidence::StatementSigner;
use crate::inventory::RESOURCE;
use crate::output::emit;
use crate::pkix;
use crate::revocation::{self, parse_reason};

/// One certificate to revoke, as named on the command line.
#[derive(Debug)]
enum Target {
    /// The certificate issued for this request.
    Request(String),
    /// The certificate with this serial (the signer's spelling).
    Serial(String),
}

/// Runs `certificate revoke`. `identity_flags`: whether `--cert` was given
/// on the command line (the holder's form needs it explicitly, so an
/// admin's configured certificate is never revoked by accident).
pub(super) async fn revoke(
    settings: Settings,
    a: cli::RevokeArgs,
    identity_flags: bool,
) -> Result<()> {
    let reason = parse_reason(a.reason.as_deref())?;
    let mut targets: Vec<Target> = a.names.iter().cloned().map(Target::Request).collect();
    for s in &a.serial {
        targets.push(Target::Serial(revocation::normalize_serial(s)?));
    }
    if settings.token.is_some() {
        bail!("revoking needs a certificate and key to sign the revocation; do not pass --token");
    }
    let Some((cert_path, key_path)) = settings.identity.clone() else {
        bail!(
            "revoking needs your own certificate and key to sign the revocation: pass --cert and --key or set them in the config file"
        );
    };
    if targets.is_empty() && !identity_flags {
        bail!(
            "certificate revoke needs request names or --serial HEX (as an admin), or --cert FILE --key FILE (the holder revoking that certificate)"
        );
    }
    // Load the signing identity before connecting: a bad key is a local error.
    let signer = StatementSigner::load(&cert_path, &key_path)?;
    let mut conn = conn::connect(&settings).await?;
    if targets.is_empty() {
        let own = signer.leaf()?.to_vec();
        let line = send(&mut conn, &signer, &own, reason).await?;
        emit(&line);
        return Ok(());
    }
    let mut errors = Vec::new();
    for t in &targets {
        let result = match certificate_of(&mut conn, t).await {
            Ok(der) => send(&mut conn, &signer, &der, reason).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(line) => emit(&line),
            Err(e) => errors.push(e),
        }
    }
    finish_errors(errors)
}

/// The DER of the certificate a target names.
async fn certificate_of(conn: &mut Conn, t: &Target) -> Result<Vec<u8>> {
    match t {
        Target::Request(name) => {
            let csr = fetch(conn, name).await?;
            let pem = csr.status.map(|s| s.certificate).unwrap_or_default();
            pkix::certs_der_from_pem(&pem)
                .into_iter()
                .next()
                .ok_or_else(|| {
                    anyhow!(
                        "certificatesigningrequest {name:?} has no issued certificate to revoke"
                    )
                })
        }
        Target::Serial(serial) => {
            let page = conn
                .client
                .list_certificates(pb::ListCertificatesRequest {
                    serial_number: serial.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|s| conn::status_error(&s, &conn.url, None))?
                .into_inner();
            let found = page
                .items
                .into_iter()
                .find(|c| c.serial_number.eq_ignore_ascii_case(serial))
                .ok_or_else(|| anyhow!("{RESOURCE} {serial:?} not found"))?;
            let der = pkix::certs_der_from_pem(&found.certificate)
                .into_iter()
                .next()
                .ok_or_else(|| {
                    anyhow!("{RESOURCE} {serial:?}: the inventory holds no PEM certificate for it")
                })?;
            // Sign only for the certificate asked for.
            let actual = revocation::serial_of(&der)?;
            if &actual != serial {
                bail!("{RESOURCE} {serial:?}: the inventory returned certificate {actual:?}");
            }
            Ok(der)
        }
    }
}

/// Signs the revocation of `cert_der` and sends it; the line to print.
async fn send(
    conn: &mut Conn,
    signer: &StatementSigner,
    cert_der: &[u8],
    reason: pb::RevocationReason,
) -> Result<String> {
    let statement = signer.revocation(cert_der, reason, SystemTime::now())?;
    let serial = revocation::serial_of(cert_der)?;
    conn.client
        .revoke_certificate(pb::RevokeCertificateRequest {
            revocation: Some(statement),
        })
        .await
        .map_err(|s| {
            anyhow!(
                "cannot revoke {RESOURCE}/{serial}: {:#}",
                conn::status_error(&s, &conn.url, None)
            )
        })?;
    Ok(format!("{RESOURCE}/{serial} revoked\n"))
}

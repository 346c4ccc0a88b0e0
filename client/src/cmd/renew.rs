//! `certctl renew`: replaces the current certificate and key in place with
//! a new pair, the request proven by a RenewalStatement signed with the
//! current key.
//!
//! It never installs a certificate that is not for the new key, and never
//! leaves the pair half replaced: the old pair is kept as `.bak` first, the
//! new key stays in a temp file until the certificate is issued (or, on a
//! timeout, is kept as `KEY.new`, the only copy), and the two final renames
//! come last. It asks for the current certificate's lifetime, or a shorter
//! `--expiration`, never a longer one (the signer would refuse it).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Result, anyhow, bail};
use certsign_proto::v1 as pb;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use super::common::{expiration_seconds, own_manifest, submit};
use super::wait::{EXIT_TIMEOUT, wait_issued};
use crate::cli;
use crate::config::Settings;
use crate::conn::{self, Conn};
use crate::evidence::StatementSigner;
use crate::files::{self, Staged};
use crate::kube::{self, RESOURCE};
use crate::manifest;
use crate::output::{Failure, emit};
use crate::pkix::{self, PrivateKey};

/// `--if-expires-within`: a duration or a percentage of the lifetime.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// Renew when less than this remains.
    Within(Duration),
    /// Renew when less than this fraction (0..=1) of the lifetime remains.
    Fraction(f64),
}

impl Threshold {
    /// Parses `720h` or `33%`.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| anyhow!("invalid --if-expires-within {text:?}: expected a duration (720h) or a percentage (33%)"))?;
            if !(v > 0.0 && v <= 100.0) {
                bail!("invalid --if-expires-within {text:?}: percentage must be in (0, 100]");
            }
            return Ok(Self::Fraction(v / 100.0));
        }
        humantime::parse_duration(t)
            .map(Self::Within)
            .map_err(|e| anyhow!("invalid --if-expires-within {text:?}: {e}"))
    }

    /// The remaining time under which to renew.
    pub fn limit(self, lifetime: Duration) -> Duration {
        match self {
            Self::Within(d) => d,
            Self::Fraction(f) => lifetime.mul_f64(f),
        }
    }
}

/// A certificate time as a `SystemTime` (times before 1970 as the epoch).
fn to_system_time(t: x509_parser::time::ASN1Time) -> SystemTime {
    let ts = t.timestamp();
    if ts >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(ts as u64)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

/// RFC 3339, as kubectl prints times.
fn format_time(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    kube::rfc3339(&prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: 0,
    })
    .unwrap_or_default()
}

/// A request name from the certificate's CN: `<cn>-renew-<8 hex>`, always
/// a valid RFC 1123 subdomain.
fn renewal_name(cn: &str) -> String {
    let mut base: String = cn
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(40);
    let base = base.trim_matches(|c| c == '-' || c == '.');
    let mut suffix = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix);
    let base = if base.is_empty() { "renewal" } else { base };
    format!("{base}-renew-{}", hex::encode(suffix))
}

/// `path` with `suffix` appended to the file name (`.bak`, `.new`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A prepared renewal: the new key, its CSR and the signed proof.
#[derive(Debug)]
pub struct Renewal {
    /// The new key (same type as the current one).
    pub key: PrivateKey,
    /// The new PKCS#10 DER.
    pub csr_der: Vec<u8>,
    /// The RenewalStatement signed by the current key.
    pub statement: pb::SignedStatement,
}

/// Builds the renewal of `current`: a new key of `key_type`, a CSR with the
/// current certificate's subject (byte for byte) and SANs, and the
/// RenewalStatement for request `name`.
pub fn build_renewal(
    current: &StatementSigner,
    key_type: pkix::KeyType,
    name: &str,
    signer_name: &str,
    now: SystemTime,
) -> Result<Renewal> {
    let (_, leaf) = X509Certificate::from_der(current.leaf()?)
        .map_err(|e| anyhow!("cannot parse the current certificate: {e}"))?;
    let sans = pkix::sans_of_certificate(&leaf)?;
    let key = PrivateKey::generate(key_type)?;
    let csr_der = pkix::build_csr(&key, leaf.subject().as_raw(), &sans)?;
    let statement = current.renewal(name, &csr_der, signer_name, now)?;
    Ok(Renewal {
        key,
        csr_der,
        statement,
    })
}

/// Runs `renew`.
pub(super) async fn renew(settings: Settings, a: cli::RenewArgs) -> Result<()> {
    let threshold = a
        .if_expires_within
        .as_deref()
        .map(Threshold::parse)
        .transpose()?;
    if settings.token.is_some() {
        bail!("renew authenticates with the current certificate; do not pass --token");
    }
    let Some((cert_path, key_path)) = settings.identity.clone() else {
        bail!("renew needs the current certificate and key: pass --cert and --key");
    };
    let current = StatementSigner::load(&cert_path, &key_path)?;
    let old_cert_pem = conn::read_file("certificate", &cert_path)?;
    let old_key_pem = Zeroizing::new(conn::read_file("key", &key_path)?);
    let (_, leaf) = X509Certificate::from_der(current.leaf()?)
        .map_err(|e| anyhow!("cannot read certificate {}: {e}", cert_path.display()))?;
    if let Some(line) = not_due(&leaf, threshold, &cert_path, SystemTime::now())? {
        emit(&line);
        return Ok(());
    }
    let key_type = current.key.key_type().ok_or_else(|| {
        anyhow!("cannot renew an RSA key: certctl cannot generate RSA keys (request a new certificate with create csr --key-type)")
    })?;
    let usages = carried_usages(&leaf, &a.usages, &cert_path)?;
    let expiration = renewal_lifetime(&leaf, expiration_seconds(a.expiration)?)?;
    let cn = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("")
        .to_string();
    let name = match &a.name {
        Some(n) if manifest::is_dns_subdomain(n) => n.clone(),
        Some(n) => bail!("invalid --name {n:?}: must be a lowercase RFC 1123 subdomain"),
        None => renewal_name(&cn),
    };
    let Renewal {
        key: new_key,
        csr_der: der,
        statement,
    } = build_renewal(&current, key_type, &name, &a.signer_name, SystemTime::now())?;
    let csr_pem = pkix::pem_encode(pkix::CSR_PEM_LABEL, &der);

    let mut conn = conn::connect(&settings).await?;
    let staged_key = files::stage(&key_path, new_key.pkcs8_pem()?.as_bytes(), 0o600)?;
    let m = own_manifest(&name, csr_pem, &a.signer_name, usages, expiration);
    submit(&mut conn, &m, Some(statement)).await?;
    let (issued, staged_key) =
        wait_or_keep_key(&mut conn, &name, a.timeout.into(), staged_key, &key_path).await?;
    let (serial, valid_until) = check_issued(&name, &issued, &new_key)?;
    let (cert_bak, key_bak) = install(
        &cert_path,
        &key_path,
        &old_cert_pem,
        &old_key_pem,
        &issued,
        staged_key,
    )?;
    emit(&format!(
        "certificate {} renewed by {RESOURCE}/{name}: serial {serial}, valid until {valid_until} (previous pair kept as {} and {})\n",
        cert_path.display(),
        cert_bak.display(),
        key_bak.display()
    ));
    Ok(())
}

/// Refuses an expired certificate; with `--if-expires-within`, the line to
/// print instead of renewing when the certificate is not due yet.
fn not_due(
    leaf: &X509Certificate<'_>,
    threshold: Option<Threshold>,
    cert_path: &Path,
    now: SystemTime,
) -> Result<Option<String>> {
    let not_before = to_system_time(leaf.validity().not_before);
    let not_after = to_system_time(leaf.validity().not_after);
    let remaining = not_after.duration_since(now).unwrap_or_default();
    if remaining.is_zero() {
        bail!(
            "certificate {} expired at {}; a renewal needs a valid certificate, request a new one",
            cert_path.display(),
            format_time(not_after)
        );
    }
    let Some(t) = threshold else { return Ok(None) };
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let limit = t.limit(lifetime);
    if remaining <= limit {
        return Ok(None);
    }
    Ok(Some(format!(
        "certificate {} is not due for renewal: expires in {} ({}), renewing within {}\n",
        cert_path.display(),
        kube::human_duration(remaining.as_secs() as i64),
        format_time(not_after),
        kube::human_duration(limit.as_secs() as i64),
    )))
}

/// The lifetime to ask for: `--expiration` if it is at most the current
/// certificate's lifetime (the signer never grants a renewal more), else the
/// current lifetime itself (below the API's 10-minute minimum: none, the
/// signer then caps it).
fn renewal_lifetime(leaf: &X509Certificate<'_>, flag: Option<i32>) -> Result<Option<i32>> {
    let v = leaf.validity();
    let current = v.not_after.timestamp() - v.not_before.timestamp();
    match flag {
        Some(s) if i64::from(s) > current => bail!(
            "invalid --expiration: {s}s is longer than the current certificate's lifetime ({current}s); a renewal never lengthens what was approved, request a new certificate"
        ),
        Some(s) => Ok(Some(s)),
        None => Ok(i32::try_from(current).ok().filter(|s| *s >= 600)),
    }
}

/// `--usages`, or the current certificate's usages when none are given.
fn carried_usages(
    leaf: &X509Certificate<'_>,
    flags: &[String],
    cert_path: &Path,
) -> Result<Vec<String>> {
    if !flags.is_empty() {
        return pkix::parse_usages(flags);
    }
    let u = pkix::usages_of_certificate(leaf);
    if u.is_empty() {
        bail!(
            "certificate {} has no key usages to carry over: pass --usages",
            cert_path.display()
        );
    }
    Ok(u)
}

/// Waits for the renewal's certificate and hands the staged key back.
/// Timed out: the request may still be issued later, so the new key (the
/// only copy) is kept next to the old one as `KEY.new` and the error says so.
async fn wait_or_keep_key(
    conn: &mut Conn,
    name: &str,
    timeout: Duration,
    staged_key: Staged,
    key_path: &Path,
) -> Result<(Vec<u8>, Staged)> {
    match wait_issued(conn, name, timeout).await {
        Ok(pem) => Ok((pem, staged_key)),
        Err(e) => {
            let timed_out = e
                .downcast_ref::<Failure>()
                .is_some_and(|f| f.code == EXIT_TIMEOUT);
            if !timed_out {
                return Err(e);
            }
            let kept = with_suffix(key_path, ".new");
            staged_key.commit_to(&kept)?;
            Err(Failure {
                code: EXIT_TIMEOUT,
                message: format!(
                    "{e:#}; the new key is kept in {} (fetch the certificate later with `certctl certificate wait {name} --out FILE`)",
                    kept.display()
                ),
            }
            .into())
        }
    }
}

/// Checks that the issued certificate is for the new key (never install one
/// that is not) and returns its serial and end of validity for the report.
fn check_issued(name: &str, issued: &[u8], new_key: &PrivateKey) -> Result<(String, String)> {
    let issued_der = pkix::certs_der_from_pem(issued);
    let new_leaf = issued_der.first().ok_or_else(|| {
        anyhow!("certificatesigningrequest {name:?}: issued certificate is not PEM")
    })?;
    let (_, parsed) = X509Certificate::from_der(new_leaf).map_err(|e| {
        anyhow!("certificatesigningrequest {name:?}: issued certificate does not parse: {e}")
    })?;
    if parsed.public_key().subject_public_key.data.as_ref() != new_key.public_key_raw().as_slice() {
        bail!(
            "certificatesigningrequest {name:?}: issued certificate is not for the new key; nothing was replaced"
        );
    }
    let serial = parsed.raw_serial_as_string();
    let valid_until = format_time(to_system_time(parsed.validity().not_after));
    Ok((serial, valid_until))
}

/// Puts the new pair in place and returns the backup paths. Backups first,
/// so the old pair survives whatever happens next; then key and certificate:
/// the window where they disagree is two renames, and the `.bak` pair
/// restores the old state.
fn install(
    cert_path: &Path,
    key_path: &Path,
    old_cert_pem: &[u8],
    old_key_pem: &[u8],
    issued: &[u8],
    staged_key: Staged,
) -> Result<(PathBuf, PathBuf)> {
    let cert_bak = with_suffix(cert_path, ".bak");
    let key_bak = with_suffix(key_path, ".bak");
    files::write_atomic(&cert_bak, old_cert_pem, 0o644, true)?;
    files::write_atomic(&key_bak, old_key_pem, 0o600, true)?;
    let cert_mode = {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(cert_path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o644)
    };
    let staged_cert = files::stage(cert_path, issued, cert_mode)?;
    staged_key.commit(true)?;
    staged_cert.commit(true)?;
    Ok((cert_bak, key_bak))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(Threshold::parse("33%").unwrap(), Threshold::Fraction(0.33));
        assert_eq!(
            Threshold::parse("720h").unwrap(),
            Threshold::Within(Duration::from_secs(720 * 3600))
        );
        assert_eq!(
            Threshold::parse("50%")
                .unwrap()
                .limit(Duration::from_secs(100)),
            Duration::from_secs(50)
        );
        for bad in ["0%", "101%", "x%", "soon", ""] {
            assert!(Threshold::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renewal_names_are_valid() {
        for cn in ["Alice Smith", "system:node:worker-1", "", "---"] {
            let n = renewal_name(cn);
            assert!(manifest::is_dns_subdomain(&n), "{n}");
        }
    }
}

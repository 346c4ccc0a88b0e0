//! `certctl renew`: replaces the current certificate and key in place with
//! a new pair, the request proven by a RenewalStatement signed with the
//! current key.
//!
//! It never installs a certificate that is not for the new key, and never
//! leaves the pair half replaced ([`crate::pair`]): the new key is written
//! as `KEY.new` with the request's name before the request is sent, so a
//! run that times out or crashes is resumed by the next one (the signer
//! renews a certificate once), and the pair is switched only once the
//! certificate is issued. It asks for the current certificate's lifetime,
//! or a shorter `--expiration`, never a longer one (the signer would refuse
//! it), under the signer name the certificate's lineage names.
//!
//! Oneshot exit codes: 0 renewed, [`EXIT_NOT_DUE`] nothing was due, 4 timed
//! out (the renewal stays pending), 2/3 denied/failed, 1 other errors.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Result, anyhow, bail};
use certsign_proto::v1 as pb;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use super::common::{expiration_seconds, new_request, own_manifest};
use super::wait::{EXIT_TIMEOUT, wait_issued};
use crate::cli;
use crate::config::Settings;
use crate::conn;
use crate::evidence::StatementSigner;
use crate::kube::{self, RESOURCE};
use crate::manifest;
use crate::output::{Failure, emit};
use crate::pair;
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
    /// Parses `720h` or `33%` given to `--if-expires-within`.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_as(text, "--if-expires-within")
    }

    /// Parses `720h` or `33%`; errors name `what` (the flag or key).
    pub fn parse_as(text: &str, what: &str) -> Result<Self> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| {
                anyhow!("invalid {what} {text:?}: expected a duration (720h) or a percentage (33%)")
            })?;
            if !(v > 0.0 && v <= 100.0) {
                bail!("invalid {what} {text:?}: percentage must be in (0, 100]");
            }
            return Ok(Self::Fraction(v / 100.0));
        }
        humantime::parse_duration(t)
            .map(Self::Within)
            .map_err(|e| anyhow!("invalid {what} {text:?}: {e}"))
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

/// Exit code of a oneshot `renew` that had nothing to do (no certificate was
/// due); 0 means at least one was renewed.
pub const EXIT_NOT_DUE: u8 = 5;

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
    renewal_for(
        current,
        PrivateKey::generate(key_type)?,
        name,
        signer_name,
        now,
    )
}

/// The renewal of `current` for the new key `key`.
fn renewal_for(
    current: &StatementSigner,
    key: PrivateKey,
    name: &str,
    signer_name: &str,
    now: SystemTime,
) -> Result<Renewal> {
    let (_, leaf) = X509Certificate::from_der(current.leaf()?)
        .map_err(|e| anyhow!("cannot parse the current certificate: {e}"))?;
    let sans = pkix::sans_of_certificate(&leaf)?;
    let csr_der = pkix::build_csr(&key, leaf.subject().as_raw(), &sans)?;
    let statement = current.renewal(name, &csr_der, signer_name, now)?;
    Ok(Renewal {
        key,
        csr_der,
        statement,
    })
}

/// One certificate to renew: from `--cert`/`--key` or a `[[renew]]` entry.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The certificate file.
    pub cert: PathBuf,
    /// Its key file.
    pub key: PathBuf,
    /// Run (`sh -c`) after each renewal.
    pub exec: Option<String>,
    /// `renew_before` / `--if-expires-within`.
    pub renew_before: Option<Threshold>,
    /// Signer name; default: the certificate's lineage.
    pub signer_name: Option<String>,
    /// `--usages`.
    pub usages: Vec<String>,
    /// `--expiration` in seconds.
    pub expiration: Option<i32>,
    /// `--name`.
    pub name: Option<String>,
}

/// When a certificate is due.
#[derive(Debug, Clone, Copy)]
pub(super) enum When {
    /// Now (a plain `certctl renew`).
    Now,
    /// When less than this is left.
    Threshold(Threshold),
    /// At two thirds of the lifetime, `jitter` (a share of the lifetime,
    /// below 1/15) earlier, so a fleet does not renew in lockstep.
    TwoThirds {
        /// Share of the lifetime to renew earlier.
        jitter: f64,
    },
}

impl When {
    /// The renewal point of a certificate valid from `not_before` to `not_after`.
    fn due_at(self, not_before: SystemTime, not_after: SystemTime) -> SystemTime {
        let lifetime = not_after.duration_since(not_before).unwrap_or_default();
        match self {
            Self::Now => SystemTime::UNIX_EPOCH,
            Self::Threshold(t) => not_after
                .checked_sub(t.limit(lifetime))
                .unwrap_or(SystemTime::UNIX_EPOCH),
            Self::TwoThirds { jitter } => {
                not_before + lifetime.mul_f64((2.0 / 3.0 - jitter.clamp(0.0, 1.0 / 15.0)).max(0.0))
            }
        }
    }

    /// A random jitter for [`When::TwoThirds`].
    pub(super) fn jitter() -> f64 {
        let mut b = [0u8; 2];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
        f64::from(u16::from_le_bytes(b)) / 65536.0 / 15.0
    }
}

/// What one renewal attempt did.
#[derive(Debug)]
pub(super) enum Done {
    /// Renewed: the line to print.
    Renewed(String),
    /// Not due until the time; the line to print.
    NotDue(SystemTime, String),
}

/// The targets of a `renew` command: `--cert`/`--key` given on the command
/// line (or only a top-level pair in the config), else the config's
/// `[[renew]]` entries. The command's flags are defaults for the entries.
pub(super) fn targets(
    settings: &Settings,
    a: &cli::RenewArgs,
    cert_flag: bool,
) -> Result<Vec<Target>> {
    let flag_threshold = a
        .if_expires_within
        .as_deref()
        .map(Threshold::parse)
        .transpose()?;
    let expiration = expiration_seconds(a.expiration)?;
    if let Some(n) = &a.name
        && !manifest::is_dns_subdomain(n)
    {
        bail!("invalid --name {n:?}: must be a lowercase RFC 1123 subdomain");
    }
    if a.exec.as_deref().is_some_and(|c| c.trim().is_empty()) {
        bail!("invalid --exec: empty command");
    }
    let from_flags = |cert: PathBuf, key: PathBuf| Target {
        cert,
        key,
        exec: a.exec.clone(),
        renew_before: flag_threshold,
        signer_name: a.signer_name.clone(),
        usages: a.usages.clone(),
        expiration,
        name: a.name.clone(),
    };
    if cert_flag || settings.renew.is_empty() {
        let Some((cert, key)) = settings.identity.clone() else {
            bail!(
                "renew needs the current certificate and key: pass --cert and --key (or add [[renew]] entries to the config)"
            );
        };
        return Ok(vec![from_flags(cert, key)]);
    }
    if a.name.is_some() && settings.renew.len() > 1 {
        bail!("--name names one request; the config has several [[renew]] entries");
    }
    settings
        .renew
        .iter()
        .map(|e| {
            let mut t = from_flags(e.cert.clone(), e.key.clone());
            if e.exec.is_some() {
                t.exec = e.exec.clone();
            }
            if let Some(rb) = &e.renew_before {
                t.renew_before = Some(Threshold::parse_as(rb, "renew_before")?);
            }
            if e.signer_name.is_some() {
                t.signer_name = e.signer_name.clone();
            }
            if let Some(x) = &e.expiration {
                let d = humantime::parse_duration(x)
                    .map_err(|err| anyhow!("invalid expiration {x:?}: {err}"))?;
                t.expiration = expiration_seconds(Some(d.into()))?;
            }
            Ok(t)
        })
        .collect()
}

/// Runs a oneshot `renew`: every target that is due is renewed and its
/// `--exec` run. Exit 0 when one was renewed, [`EXIT_NOT_DUE`] when none
/// was due; with several targets every error is printed and the last one
/// decides the exit code.
pub(super) async fn renew(settings: Settings, a: cli::RenewArgs, cert_flag: bool) -> Result<()> {
    if settings.token.is_some() {
        bail!("renew authenticates with the current certificate; do not pass --token");
    }
    let targets = targets(&settings, &a, cert_flag)?;
    let from_entries = targets.len() > 1 || (!cert_flag && !settings.renew.is_empty());
    let mut renewed = false;
    let mut failed = 0;
    for t in &targets {
        let when = match t.renew_before {
            Some(th) => When::Threshold(th),
            None if from_entries => When::TwoThirds {
                jitter: When::jitter(),
            },
            None => When::Now,
        };
        let result = async {
            match renew_once(&settings, t, when, a.timeout.into()).await? {
                Done::NotDue(_, line) => emit(&line),
                Done::Renewed(line) => {
                    emit(&line);
                    renewed = true;
                    run_hook(t).await?;
                }
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            if targets.len() == 1 {
                return Err(e);
            }
            crate::print_error(&e.context(format!("renewing {}", t.cert.display())));
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} [[renew]] entries failed", targets.len());
    }
    if renewed {
        return Ok(());
    }
    // Nothing was due: a distinct code, and no error line (the lines above said why).
    Err(Failure {
        code: EXIT_NOT_DUE,
        message: String::new(),
    }
    .into())
}

/// Runs the target's `--exec` command (`sh -c`), with `CERTCTL_CERT` and
/// `CERTCTL_KEY` naming the renewed files.
pub(super) async fn run_hook(t: &Target) -> Result<()> {
    let Some(cmd) = &t.exec else { return Ok(()) };
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("CERTCTL_CERT", &t.cert)
        .env("CERTCTL_KEY", &t.key)
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| anyhow!("certificate renewed, but --exec {cmd:?} did not start: {e}"))?;
    if !status.success() {
        bail!("certificate renewed, but --exec {cmd:?} failed ({status})");
    }
    Ok(())
}

/// Whether a failed call may succeed when repeated (the approver down or
/// restarting), so a pending renewal is kept for the next attempt.
fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
    )
}

/// One attempt at renewing `t`: finishes an interrupted installation,
/// resumes a pending renewal, or (when due) starts one; waits for the
/// certificate and installs the new pair.
pub(super) async fn renew_once(
    base: &Settings,
    t: &Target,
    when: When,
    timeout: Duration,
) -> Result<Done> {
    let (cert_path, key_path) = (&t.cert, &t.key);
    if crate::token::is_uri(key_path) {
        bail!(
            "cannot renew a certificate whose key is held in a PKCS#11 token: certctl writes the new key to a file; renew it with a file key, or request a new certificate for a new token key"
        );
    }
    pair::recover(cert_path, key_path)?;
    let settings = Settings {
        identity: Some((cert_path.clone(), key_path.clone())),
        token: None,
        ..base.clone()
    };
    let current = StatementSigner::load(cert_path, key_path)?;
    let old_cert_pem = conn::read_file("certificate", cert_path)?;
    let old_key_pem = Zeroizing::new(conn::read_file("key", key_path)?);
    let (_, leaf) = X509Certificate::from_der(current.leaf()?)
        .map_err(|e| anyhow!("cannot read certificate {}: {e}", cert_path.display()))?;
    let mut pending = pair::read_pending(key_path)?;
    if pending
        .as_ref()
        .is_some_and(|p| p.key.public_key_raw() == current.key.public_key_raw())
    {
        // Installed before a crash; only the bookkeeping was left.
        pair::clear_pending(cert_path, key_path);
        pending = None;
    }
    let now = SystemTime::now();
    if pending.is_none()
        && let Some(not_due) = not_due(&leaf, when, cert_path, now)?
    {
        return Ok(not_due);
    }
    let key_type = current.key.key_type().ok_or_else(|| {
        anyhow!("cannot renew an RSA key: certctl cannot generate RSA keys (request a new certificate with create csr --key-type)")
    })?;
    let usages = carried_usages(&leaf, &t.usages, cert_path)?;
    let expiration = renewal_lifetime(&leaf, t.expiration)?;
    let signer_name = match &t.signer_name {
        Some(s) => s.clone(),
        None => certsign_evidence::Lineage::of_certificate(&leaf)
            .map_err(|e| anyhow!("cannot read certificate {}: {e}", cert_path.display()))?
            .map(|l| l.signer_name)
            .unwrap_or_else(|| DEFAULT_SIGNER.to_string()),
    };
    let resuming = pending.is_some();
    let (name, new_key) = match pending {
        Some(p) => (p.name, p.key),
        None => {
            let cn = leaf
                .subject()
                .iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok())
                .unwrap_or("")
                .to_string();
            let name = t.name.clone().unwrap_or_else(|| renewal_name(&cn));
            (name, PrivateKey::generate(key_type)?)
        }
    };
    let Renewal {
        key: new_key,
        csr_der: der,
        statement,
    } = renewal_for(&current, new_key, &name, &signer_name, now)?;
    let csr_pem = pkix::pem_encode(pkix::CSR_PEM_LABEL, &der);
    let mut conn = conn::connect(&settings).await?;
    // Durable before the request leaves: from here on it may be issued.
    let kept = if resuming {
        pair::with_suffix(key_path, ".new")
    } else {
        pair::write_pending(key_path, &name, &new_key)?
    };
    let m = own_manifest(&name, csr_pem, &signer_name, usages, expiration);
    let created = conn
        .client
        .create_certificate_signing_request(pb::CreateCertificateSigningRequestRequest {
            certificate_signing_request: Some(new_request(&m)),
            renewal: Some(statement),
        })
        .await;
    match created {
        Ok(_) => {}
        // Sent before a crash or a lost answer: that request is ours.
        Err(s) if resuming && s.code() == tonic::Code::AlreadyExists => {}
        Err(s) => {
            if !transient(&s) {
                pair::clear_pending(cert_path, key_path);
            }
            return Err(conn::status_error(&s, &conn.url, None));
        }
    }
    pair::step("request sent");
    let issued = match wait_issued(&mut conn, &name, timeout).await {
        Ok(pem) => pem,
        Err(e) => {
            let timed_out = e
                .downcast_ref::<Failure>()
                .is_some_and(|f| f.code == EXIT_TIMEOUT);
            if !timed_out {
                pair::clear_pending(cert_path, key_path);
                return Err(e);
            }
            return Err(Failure {
                code: EXIT_TIMEOUT,
                message: format!(
                    "{e:#}; the new key is kept in {} (run certctl renew again to resume, or fetch the certificate with `certctl certificate wait {name} --out FILE`)",
                    kept.display()
                ),
            }
            .into());
        }
    };
    let (serial, valid_until) = match check_issued(&name, &issued, &new_key) {
        Ok(v) => v,
        Err(e) => {
            pair::clear_pending(cert_path, key_path);
            return Err(e);
        }
    };
    let (cert_bak, key_bak) = pair::install(
        cert_path,
        key_path,
        (&old_cert_pem, &old_key_pem),
        &issued,
        new_key.pkcs8_pem()?.as_bytes(),
    )?;
    pair::clear_pending(cert_path, key_path);
    Ok(Done::Renewed(format!(
        "certificate {} renewed by {RESOURCE}/{name}: serial {serial}, valid until {valid_until} (previous pair kept as {} and {})\n",
        cert_path.display(),
        cert_bak.display(),
        key_bak.display()
    )))
}

/// The signer name of a certificate without a lineage extension (one this
/// signer did not issue: the signer refuses its renewal in any case).
const DEFAULT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// Refuses an expired certificate; when it is not due yet, what to print
/// and when it will be.
fn not_due(
    leaf: &X509Certificate<'_>,
    when: When,
    cert_path: &Path,
    now: SystemTime,
) -> Result<Option<Done>> {
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
    let due = when.due_at(not_before, not_after);
    if due <= now {
        return Ok(None);
    }
    let limit = not_after.duration_since(due).unwrap_or_default();
    Ok(Some(Done::NotDue(
        due,
        format!(
            "certificate {} is not due for renewal: expires in {} ({}), renewing within {}\n",
            cert_path.display(),
            kube::human_duration(remaining.as_secs() as i64),
            format_time(not_after),
            kube::human_duration(limit.as_secs() as i64),
        ),
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
    fn renewal_points_two_thirds_with_jitter_or_renew_before() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(9000);
        let two_thirds = nb + Duration::from_secs(6000);
        assert_eq!(When::TwoThirds { jitter: 0.0 }.due_at(nb, na), two_thirds);
        for _ in 0..100 {
            let due = When::TwoThirds {
                jitter: When::jitter(),
            }
            .due_at(nb, na);
            // At most a fifteenth of the lifetime (600s) earlier.
            assert!(due <= two_thirds && due >= two_thirds - Duration::from_secs(600));
        }
        let before = Threshold::parse_as("585s", "renew_before").unwrap();
        assert_eq!(
            When::Threshold(before).due_at(nb, na),
            na - Duration::from_secs(585)
        );
        assert_eq!(
            When::Threshold(Threshold::Fraction(0.5)).due_at(nb, na),
            nb + Duration::from_secs(4500)
        );
        assert_eq!(When::Now.due_at(nb, na), SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn renewal_names_are_valid() {
        for cn in ["Alice Smith", "system:node:worker-1", "", "---"] {
            let n = renewal_name(cn);
            assert!(manifest::is_dns_subdomain(&n), "{n}");
        }
    }
}

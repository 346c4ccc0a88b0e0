//! The limit: in-process issuance with no network, through the signer
//! library's own steps (`VerifiedCsr`, profile rules, `verify_approvals`,
//! `validity`, `prepare`, `issue::sign`), on one thread and on all cores;
//! then each of those steps timed alone, and ring's P-256 verification and
//! signature alone, so the required crypto's share of (1) is printed, not
//! inferred.
//!
//! It must never skip a step the `Sign` path runs before signing; the one
//! step left out is the journal append, which (2) measures.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use certsign_evidence::{self as evidence, ApprovalTrust};
use certsign_keys::CaKey;
use certsign_proto::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec, Decision, SignedStatement,
};
use certsign_signer::config::Config;
use certsign_signer::csr::VerifiedCsr;
use certsign_signer::issue;
use certsign_signer::profile::{Checked, Profile, parse_usages};
use certsign_tests::grpc::{self, CLIENT_SIGNER, Ident};
use ring::rand::{SecureRandom as _, SystemRandom};

/// Everything one issuance needs, loaded once.
#[derive(Debug)]
pub struct Limit {
    ca: CaKey,
    trust: ApprovalTrust,
    profile: Profile,
    max_age: Duration,
    requests: Vec<(CertificateSigningRequest, SignedStatement)>,
    /// The same kind of requests, approved by one batch statement.
    batched: Vec<(CertificateSigningRequest, SignedStatement)>,
    /// [`Limit::issue_one`] issues the batch-approved requests (the
    /// statement verified once, then taken from the trust's cache, as the
    /// signer does), not the singly approved ones.
    batch_mode: bool,
}

/// `certsign-signer init --dir <dir> [--key-type <kt>]` with the binary
/// next to this one.
pub fn init(dir: &Path, key_type: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new(crate::bin("certsign-signer")?)
        .arg("init")
        .arg("--dir")
        .arg(dir)
        .args(["--key-type", key_type])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `n` distinct requests (uid, name) for one P-256 client CSR, each with
/// the init admin's signed approval.
pub fn approved_requests(
    admin: &Ident,
    n: usize,
    tag: &str,
) -> Vec<(CertificateSigningRequest, SignedStatement)> {
    unsigned_requests(n, tag)
        .into_iter()
        .map(|r| {
            let st = grpc::sign(&grpc::statement_for(&r, Decision::Approve), admin);
            (r, st)
        })
        .collect()
}

/// `n` distinct requests (uid, name) for one P-256 client CSR, not yet
/// approved.
fn unsigned_requests(n: usize, tag: &str) -> Vec<CertificateSigningRequest> {
    let (_, csr_pem) = grpc::csr("bench-client", &["bench"]);
    let mut req = grpc::create_request("x", &csr_pem)
        .certificate_signing_request
        .unwrap_or_default();
    if let Some(spec) = req.spec.as_mut() {
        spec.username = "bench-user".into();
    }
    (0..n)
        .map(|i| {
            let mut r = req.clone();
            if let Some(m) = r.metadata.as_mut() {
                m.name = format!("bench-{tag}-{i}");
                m.uid = format!("{tag}-{i:08}-uid");
            }
            r
        })
        .collect()
}

/// [`approved_requests`], approved by ONE batch statement of the init
/// admin covering all `n` (each request with its own entry and proof).
pub fn batch_approved_requests(
    admin: &Ident,
    n: usize,
    tag: &str,
) -> Vec<(CertificateSigningRequest, SignedStatement)> {
    let reqs = unsigned_requests(n, tag);
    let statements: Vec<_> = reqs
        .iter()
        .map(|r| grpc::statement_for(r, Decision::Approve))
        .collect();
    reqs.into_iter()
        .zip(grpc::sign_batch(&statements, admin))
        .collect()
}

impl Limit {
    /// Loads the CA and profile from an init directory.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let config = Config::load(&dir.join("signer/signer.toml"))?;
        let ca = CaKey::open(&config.ca_cert, &config.ca_key, config.pkcs11_sessions)?;
        let trust = ApprovalTrust::from_pem(&std::fs::read(&config.approval_ca)?)?;
        let profile = config
            .profile(CLIENT_SIGNER)
            .ok_or_else(|| anyhow::anyhow!("no profile {CLIENT_SIGNER}"))?
            .clone();
        let admin = Ident::load(&dir.join("admin/admin.crt"), &dir.join("admin/admin.key"));
        Ok(Limit {
            ca,
            trust,
            profile,
            max_age: config.statement_max_age,
            requests: approved_requests(&admin, 64, "limit"),
            batched: batch_approved_requests(&admin, 64, "limit-batch"),
            batch_mode: false,
        })
    }

    /// This limit issuing batch-approved requests (`on`) or singly
    /// approved ones.
    pub fn batch_mode(mut self, on: bool) -> Self {
        self.batch_mode = on;
        self
    }

    /// One issuance of request `i` (cycled): every check, then the signed
    /// certificate's DER length.
    pub fn issue_one(&self, i: usize) -> Result<usize, String> {
        let set = if self.batch_mode {
            &self.batched
        } else {
            &self.requests
        };
        let (req, st) = &set[i % set.len()];
        let spec = req.spec.as_ref().ok_or("no spec")?;
        let csr = VerifiedCsr::from_pem(&spec.request).map_err(|x| x.to_string())?;
        let usages = parse_usages(&spec.usages).map_err(|x| x.to_string())?;
        let checked = self
            .profile
            .check(&csr, &usages)
            .map_err(|x| x.to_string())?;
        let now = SystemTime::now();
        self.approval(req, st, now)?;
        let prepared = self.build(spec, checked, now)?;
        let cert = issue::sign(&self.ca, prepared).map_err(|x| x.to_string())?;
        Ok(cert.der.len())
    }

    /// The evidence step: the admin's signed approval against the
    /// profile's groups, freshness and quorum.
    fn approval(
        &self,
        req: &CertificateSigningRequest,
        st: &SignedStatement,
        now: SystemTime,
    ) -> Result<(), String> {
        evidence::verify_approvals(
            std::slice::from_ref(st),
            req,
            None,
            &self.trust,
            &self.profile.approver_groups,
            self.max_age,
            self.profile.required_approvals,
            now,
        )
        .map(drop)
        .map_err(|x| x.to_string())
    }

    /// The validity window, a fresh serial and the TBSCertificate.
    fn build(
        &self,
        spec: &CertificateSigningRequestSpec,
        checked: Checked<'_>,
        now: SystemTime,
    ) -> Result<issue::PreparedCert, String> {
        let window = issue::validity(
            &self.profile,
            spec.expiration_seconds,
            None,
            time::OffsetDateTime::from(now),
            self.ca.not_after(),
        )
        .map_err(|x| x.to_string())?;
        let mut serial = [0u8; 16];
        SystemRandom::new()
            .fill(&mut serial)
            .map_err(|_| "rng failed")?;
        issue::prepare(&self.ca, checked, &self.profile, now, window, serial)
            .map_err(|x| x.to_string())
    }

    /// Each step of [`Limit::issue_one`] timed alone on this thread for
    /// about `secs` each, in microseconds per certificate: where (1)'s time
    /// goes, so a per-call budget can be checked against the required work.
    pub fn steps(&self, secs: f64) -> Result<Steps, String> {
        let (req, st) = &self.requests[0];
        let spec = req.spec.as_ref().ok_or("no spec")?;
        let csr = VerifiedCsr::from_pem(&spec.request).map_err(|x| x.to_string())?;
        let usages = parse_usages(&spec.usages).map_err(|x| x.to_string())?;
        let now = SystemTime::now();
        let checked = self
            .profile
            .check(&csr, &usages)
            .map_err(|x| x.to_string())?;
        let build = || self.build(spec, checked, now);
        let csr_us = per_call_us(secs, || {
            VerifiedCsr::from_pem(&spec.request)
                .map(drop)
                .map_err(|x| x.to_string())
        })?;
        let profile_us = per_call_us(secs, || {
            let u = parse_usages(&spec.usages).map_err(|x| x.to_string())?;
            self.profile
                .check(&csr, &u)
                .map(drop)
                .map_err(|x| x.to_string())
        })?;
        let approval_us = per_call_us(secs, || self.approval(req, st, now))?;
        let mut i = 0;
        let batch_approval_us = per_call_us(secs, || {
            let (req, st) = &self.batched[i % self.batched.len()];
            i += 1;
            self.approval(req, st, now)
        })?;
        let build_us = per_call_us(secs, || build().map(drop))?;
        let build_sign_us = per_call_us(secs, || {
            issue::sign(&self.ca, build()?)
                .map(drop)
                .map_err(|x| x.to_string())
        })?;
        Ok(Steps {
            csr_us,
            profile_us,
            approval_us,
            batch_approval_us,
            build_us,
            sign_us: (build_sign_us - build_us).max(0.0),
        })
    }

    /// Issues on `threads` threads for `secs`: issuances per second.
    pub fn run(&self, threads: usize, secs: f64) -> Result<f64, String> {
        self.run_counted(threads, secs)
            .map(|(n, elapsed)| n as f64 / elapsed)
    }

    /// Issues on `threads` threads for `secs`: how many, in how many
    /// seconds.
    pub fn run_counted(&self, threads: usize, secs: f64) -> Result<(usize, f64), String> {
        let deadline = Duration::from_secs_f64(secs);
        let start = Instant::now();
        let counts: Vec<Result<usize, String>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        let mut n = 0usize;
                        while start.elapsed() < deadline {
                            self.issue_one(t * 7919 + n)?;
                            n += 1;
                        }
                        Ok(n)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
                .collect()
        });
        let elapsed = start.elapsed().as_secs_f64();
        let mut total = 0;
        for c in counts {
            total += c?;
        }
        Ok((total, elapsed))
    }
}

/// One thread's microseconds per certificate for each step of (1).
#[derive(Debug, Clone, Copy)]
pub struct Steps {
    /// `VerifiedCsr::from_pem`: parse, key and self-signature.
    pub csr_us: f64,
    /// Usages parsed and the profile's rules.
    pub profile_us: f64,
    /// `verify_approvals`: the admin's signature, chain, groups, bindings.
    pub approval_us: f64,
    /// `verify_approvals` of a request approved by a batch statement
    /// already verified (cached): its entry, proof, groups, bindings. Not
    /// part of the sum, which is the single-statement path.
    pub batch_approval_us: f64,
    /// Validity window, serial and TBSCertificate.
    pub build_us: f64,
    /// The CA's signature and the certificate assembled.
    pub sign_us: f64,
}

impl Steps {
    /// All steps: one certificate on one thread.
    pub fn total_us(&self) -> f64 {
        self.csr_us + self.profile_us + self.approval_us + self.build_us + self.sign_us
    }
}

/// Runs `f` for about `secs` on this thread: microseconds per call.
fn per_call_us(secs: f64, mut f: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let deadline = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < deadline || n == 0 {
        f()?;
        n += 1;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(n))
}

/// The P-256 primitives alone, with ring (the signer's library), on this
/// thread for about `secs` each: (ECDSA verification, ECDSA signature) in
/// microseconds, over a message the size of a TBSCertificate.
pub fn p256_primitives_us(secs: f64) -> Result<(f64, f64), String> {
    use ring::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
        UnparsedPublicKey,
    };
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| "P-256 key generation failed")?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "P-256 key rejected")?;
    let msg = [0x5a_u8; 400];
    let sig = key.sign(&rng, &msg).map_err(|_| "P-256 signing failed")?;
    let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key().as_ref());
    let verify = per_call_us(secs, || {
        public
            .verify(&msg, sig.as_ref())
            .map_err(|_| "P-256 verification failed".to_string())
    })?;
    let sign = per_call_us(secs, || {
        key.sign(&rng, &msg)
            .map(drop)
            .map_err(|_| "P-256 signing failed".to_string())
    })?;
    Ok((verify, sign))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn p256_primitives_are_timed() {
        // Only that both operations ran and gave a time: which is faster is
        // for the benchmark to show, not for a timed test to assert.
        let (verify, sign) = p256_primitives_us(0.02).unwrap();
        for t in [verify, sign] {
            assert!(t.is_finite() && t > 0.0, "{verify} µs, {sign} µs");
        }
    }

    #[test]
    fn steps_sum_to_the_total() {
        let s = Steps {
            csr_us: 1.0,
            profile_us: 0.5,
            approval_us: 2.0,
            batch_approval_us: 0.5,
            build_us: 0.25,
            sign_us: 4.0,
        };
        assert!((s.total_us() - 7.75).abs() < 1e-9);
    }
}

//! The limit: in-process issuance with no network, through the signer
//! library's own steps (`VerifiedCsr`, profile rules, `verify_approvals`,
//! `validity`, `prepare`, `CaKey::sign`), on one thread and on all cores.
//!
//! It must never skip a step the `Sign` path runs before signing; the one
//! step left out is the journal append, which (2) measures.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use certsign_proto::v1::{CertificateSigningRequest, Decision, SignedStatement};
use certsign_signer::ca_key::CaKey;
use certsign_signer::config::Config;
use certsign_signer::csr::VerifiedCsr;
use certsign_signer::evidence::{self, ApprovalTrust};
use certsign_signer::issue;
use certsign_signer::profile::{Profile, parse_usages};
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
            let st = grpc::sign(&grpc::statement_for(&r, Decision::Approve), admin);
            (r, st)
        })
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
        })
    }

    /// One issuance of request `i` (cycled): every check, then the signed
    /// certificate's DER length.
    pub fn issue_one(&self, i: usize) -> Result<usize, String> {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let (req, st) = &self.requests[i % self.requests.len()];
        let spec = req.spec.as_ref().ok_or("no spec")?;
        let csr = VerifiedCsr::from_pem(&spec.request).map_err(|x| e(&x))?;
        let usages = parse_usages(&spec.usages).map_err(|x| e(&x))?;
        self.profile.check(&csr, &usages).map_err(|x| e(&x))?;
        let now = SystemTime::now();
        evidence::verify_approvals(
            std::slice::from_ref(st),
            req,
            &self.trust,
            &self.profile.approver_groups,
            self.max_age,
            self.profile.required_approvals,
            now,
        )
        .map_err(|x| e(&x))?;
        let window = issue::validity(
            &self.profile,
            spec.expiration_seconds,
            time::OffsetDateTime::from(now),
            self.ca.not_after(),
        )
        .map_err(|x| e(&x))?;
        let mut serial = [0u8; 16];
        SystemRandom::new()
            .fill(&mut serial)
            .map_err(|_| "rng failed")?;
        let cert = self
            .ca
            .sign(issue::prepare(&self.ca, &csr, &usages, window, serial))
            .map_err(|x| e(&x))?;
        Ok(cert.der.len())
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

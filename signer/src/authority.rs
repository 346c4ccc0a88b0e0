//! `Authority`: one `Sign` decision from request to journaled certificate.
//!
//! Order of checks: request shape → CSR (`VerifiedCsr`) → uid idempotency
//! (replay / ALREADY_EXISTS) → profile for the signer name → usages and
//! duration → profile rules → evidence (signed approvals, a renewal proof,
//! the approver's word when the profile says so, or the console operator) →
//! validity → build, sign, journal (fsynced) → answer. Every refusal is
//! journaled too, its peer strings cut to [`PEER_STRING_MAX`] bytes. A
//! renewal proof's current certificate (by SHA-256) is reserved with the uid
//! and renewed at most once: the journal's issued line records it. This
//! module never answers before the journal has the line, and never imports
//! tonic: `service.rs` maps [`SignError`] to a status.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use humantime_serde::re::humantime;

use certsign_proto::v1::sign_request::Request;
use certsign_proto::v1::{CertificateSigningRequest, SignRequest, SignedStatement};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

use certsign_evidence::{self as evidence, ApprovalTrust, EvidenceError};
use certsign_keys::{CaError as CaKeyError, CaKey};

use crate::config::Config;
use crate::csr::{self, CsrError, VerifiedCsr};
use crate::ids::{EvidenceKind, Serial, Uid};
use crate::issue::{self, IssueError};
use crate::journal::{self, Event, Index, Journal, JournalError, LineAt};
use crate::profile::{ApprovalMode, ProfileError, parse_usages};

/// Told of every certificate `Sign` answered: the request, the result, how
/// long it took (the binary's metrics).
pub type SignObserver =
    Box<dyn Fn(&SignRequest, Result<&Signed, &SignError>, Duration) + Send + Sync>;
/// The process's [`SignObserver`], set once by the binary.
pub static SIGN_OBSERVER: OnceLock<SignObserver> = OnceLock::new();

/// A refusal or failure of `Sign`. Messages name the rule; `service.rs`
/// maps each to a gRPC status in one function.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The request's shape is wrong (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// The CSR is unusable (INVALID_ARGUMENT).
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// A usage or profile rule failed.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The evidence does not prove approval (FAILED_PRECONDITION).
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The certificate could not be built or signed.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// The journal failed (UNAVAILABLE; retry).
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// A signer rule failed (FAILED_PRECONDITION).
    #[error("{0}")]
    Refused(String),
    /// The uid was issued for another CSR (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// The same uid is being signed right now (ABORTED; retry).
    #[error("{0}")]
    Busy(String),
    /// Internal state unusable (UNAVAILABLE; retry).
    #[error("{0}")]
    Unavailable(String),
}

/// Why the authority could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// CA problem.
    #[error(transparent)]
    Ca(#[from] CaKeyError),
    /// Journal problem.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Approval CA problem.
    #[error("approval_ca {0}: {1}")]
    ApprovalCa(String, String),
}

/// What proves a request may be signed.
#[derive(Debug, Clone, Copy)]
pub enum Evidence<'a> {
    /// From a `SignRequest`: approvals and/or a renewal proof.
    Request {
        /// Signed ApprovalStatements.
        approvals: &'a [SignedStatement],
        /// A signed RenewalStatement.
        renewal: Option<&'a SignedStatement>,
    },
    /// The operator at the signer's console (`init`, `issue`): OS user.
    Console(&'a str),
    /// An allow-listed caller renewing its own identity: the renewal proof
    /// and the leaf certificate of the connection (DER).
    Identity(&'a SignedStatement, &'a [u8]),
}

/// The result of a successful `Sign`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Certificate then CA, PEM.
    pub certificate: String,
    /// Serial.
    pub serial: Serial,
    /// True when the uid was already issued and the journaled result returned.
    pub replayed: bool,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) index: Index,
    pending: HashSet<Uid>,
    /// Current certificates (SHA-256, hex) being renewed right now.
    renewing: HashSet<String>,
}

/// The most bytes of one peer string (uid, name, signer name, requestor,
/// caller) a refusal writes to the journal and the log; a refusal's reason
/// gets four times as much.
pub const PEER_STRING_MAX: usize = 256;

/// The most certificate requests one `SignBatch` may carry.
pub const MAX_BATCH: usize = 500;

/// A batch's answers, one per request in order, or why it was refused whole.
pub type Answers = Result<Vec<Result<Signed, SignError>>, SignError>;

/// `s` cut to at most `max` bytes on a char boundary, marked when cut.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let end = (0..=max)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}…[{} bytes cut]", &s[..end], s.len() - end)
}

/// The signing authority: config, CA key, approval trust, journal (also
/// for revocations, `revoke.rs`, and CRLs, `crl.rs`).
#[derive(Debug)]
pub struct Authority {
    pub(crate) config: Config,
    pub(crate) ca: CaKey,
    pub(crate) trust: ApprovalTrust,
    pub(crate) journal: Journal,
    pub(crate) state: Arc<Mutex<State>>,
    /// Held from a revocation's index check until its line is indexed.
    pub(crate) revoking: Arc<tokio::sync::Mutex<()>>,
}

/// Removes a uid (and the certificate it renews) from the in-flight sets
/// however `sign` ends.
struct Reservation {
    state: Arc<Mutex<State>>,
    uid: Uid,
    renewal_of: Option<String>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.lock() {
            s.pending.remove(&self.uid);
            if let Some(r) = &self.renewal_of {
                s.renewing.remove(r);
            }
        }
    }
}

enum Decision {
    Replay(Signed),
    Issue(Arc<Event>, Signed, Reservation),
}

impl Authority {
    /// Load the CA, the approval trust and the journal (rebuilding the index).
    pub fn open(config: Config) -> Result<Self, StartError> {
        let ca = CaKey::open(&config.ca_cert, &config.ca_key, config.pkcs11_sessions)?;
        let approval_ca = &config.approval_ca;
        let pem = std::fs::read(approval_ca).map_err(|e| {
            StartError::ApprovalCa(approval_ca.display().to_string(), e.to_string())
        })?;
        let trust = ApprovalTrust::from_pem(&pem).map_err(|e| {
            StartError::ApprovalCa(approval_ca.display().to_string(), e.to_string())
        })?;
        let (journal, index) = Journal::open(&config.journal)?;
        Ok(Self {
            config,
            ca,
            trust,
            journal,
            state: Arc::new(Mutex::new(State {
                index,
                ..State::default()
            })),
            revoking: Arc::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem().to_string()
    }

    /// Sign the certificate a `SignRequest` asks for (its `request` must be
    /// `certificate_signing_request`; anything else is refused here).
    pub async fn sign(&self, req: &SignRequest, caller: &str) -> Result<Signed, SignError> {
        let missing;
        let csr = match &req.request {
            Some(Request::CertificateSigningRequest(csr)) => csr,
            Some(_) => {
                return Err(SignError::Invalid(
                    "request: only certificate_signing_request is a certificate request (a batch holds no revocation, CRL or batch)".into(),
                ));
            }
            None => {
                missing = CertificateSigningRequest::default();
                &missing
            }
        };
        let ev = Evidence::Request {
            approvals: &req.approvals,
            renewal: req.renewal.as_ref(),
        };
        self.sign_with(csr, ev, caller).await
    }

    /// Renew the caller's own TLS identity (`identity_renewal`; see
    /// [`Evidence::Identity`]). A missing proof is refused in `decide`.
    pub async fn renew_identity(
        &self,
        req: &SignRequest,
        caller: &str,
        peer_leaf: &[u8],
    ) -> Result<Signed, SignError> {
        let (Some(Request::IdentityRenewal(csr)), Some(proof)) = (&req.request, &req.renewal)
        else {
            return Err(SignError::Invalid(
                "renewal: Required value: identity_renewal is proven by a RenewalStatement".into(),
            ));
        };
        self.sign_with(csr, Evidence::Identity(proof, peer_leaf), caller)
            .await
    }

    /// Sign each request of a batch as [`Authority::sign`] does alone (its
    /// own uid, journal line and exactly-once guarantee), each on a task of
    /// its own so a batch spreads over the cores and its lines share the
    /// journal's group commit. Answers in order; only the batch's shape
    /// ([`MAX_BATCH`], evidence outside the items) refuses it whole.
    pub async fn sign_batch(self: &Arc<Self>, req: SignRequest, caller: &str) -> Answers {
        let items = match req.request {
            Some(Request::Batch(b)) if req.approvals.is_empty() && req.renewal.is_none() => b,
            _ => Default::default(),
        };
        let n = items.requests.len();
        if n == 0 || n > MAX_BATCH {
            return Err(SignError::Invalid(format!(
                "batch.requests: Invalid value: {n} requests: a batch holds 1 to {MAX_BATCH} requests, each with its own approvals and renewal (the batch's own must be empty)"
            )));
        }
        let spawn = |item: SignRequest| {
            let (me, caller) = (self.clone(), caller.to_string());
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let signed = me.sign(&item, &caller).await;
                if let Some(observe) = SIGN_OBSERVER.get() {
                    observe(&item, signed.as_ref(), started.elapsed());
                }
                signed
            })
        };
        let tasks: Vec<_> = items.requests.into_iter().map(spawn).collect();
        let lost = |e: tokio::task::JoinError| Err(SignError::Unavailable(e.to_string()));
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.push(t.await.unwrap_or_else(lost));
        }
        Ok(out)
    }

    /// Sign with explicit evidence (the console path uses this too).
    pub async fn sign_with(
        &self,
        csr: &CertificateSigningRequest,
        ev: Evidence<'_>,
        caller: &str,
    ) -> Result<Signed, SignError> {
        match self.decide(csr, ev, caller, SystemTime::now()) {
            Ok(Decision::Replay(s)) => Ok(s),
            Ok(Decision::Issue(event, signed, reservation)) => {
                self.journal_and_index(event, reservation).await?;
                // The object's name and uid let an operator go from a serial
                // in the log to the request (and back); str fields are
                // logged quoted and escaped.
                let (name, uid) = csr
                    .metadata
                    .as_ref()
                    .map_or(("", ""), |m| (m.name.as_str(), m.uid.as_str()));
                tracing::info!(serial = %signed.serial, name, uid, caller, "issued");
                Ok(signed)
            }
            Err(e) => {
                let meta = csr.metadata.clone().unwrap_or_default();
                let spec = csr.spec.clone().unwrap_or_default();
                let b = |s: &str| bounded(s, PEER_STRING_MAX);
                let (uid, name, caller) = (b(&meta.uid), b(&meta.name), b(caller));
                let reason = bounded(&e.to_string(), 4 * PEER_STRING_MAX);
                tracing::info!(
                    name = name.as_str(),
                    uid = uid.as_str(),
                    caller = caller.as_str(),
                    reason = %reason,
                    "refused"
                );
                let event = Event::Refused {
                    uid: Uid(uid),
                    name,
                    signer_name: b(&spec.signer_name),
                    requestor: b(&spec.username),
                    csr_sha256: csr::csr_der_from_pem(&spec.request)
                        .map(|d| hex::encode(csr::sha256(&d)))
                        .unwrap_or_default(),
                    caller,
                    reason,
                };
                // A refusal that cannot be recorded is not answered as a refusal.
                self.journal.append(Arc::new(event)).await?;
                Err(e)
            }
        }
    }

    pub(crate) fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, SignError> {
        self.state
            .lock()
            .map_err(|_| SignError::Unavailable("internal state poisoned".into()))
    }

    /// Journal `event`, then index it. Once queued, the line is written even
    /// if the caller is dropped (it hung up mid-call), so journaling and
    /// indexing run in a task of their own that keeps `hold` (a uid's
    /// reservation, the revocation lock) to the end: a dropped call must
    /// never release it before the index knows, or a retry would issue the
    /// uid (or journal the serial's revocation) a second time.
    pub(crate) async fn journal_and_index<H: Send + 'static>(
        &self,
        event: Arc<Event>,
        hold: H,
    ) -> Result<(), SignError> {
        let (journal, state) = (self.journal.clone(), self.state.clone());
        let finish = async move {
            let appended = journal.append(event.clone()).await;
            if let Ok(at) = &appended
                && let Ok(mut s) = state.lock()
            {
                s.index.record(&event, *at);
            }
            drop(hold);
            appended
        };
        let appended = match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn(finish)
                .await
                .map_err(|e| SignError::Unavailable(format!("journal task: {e}")))?,
            Err(_) => finish.await,
        };
        Ok(appended.map(drop)?)
    }

    fn decide(
        &self,
        req: &CertificateSigningRequest,
        ev: Evidence<'_>,
        caller: &str,
        now: SystemTime,
    ) -> Result<Decision, SignError> {
        let invalid = |m: &str| SignError::Invalid(m.to_string());
        let meta = req
            .metadata
            .as_ref()
            .ok_or_else(|| invalid("metadata: Required value"))?;
        let spec = req
            .spec
            .as_ref()
            .ok_or_else(|| invalid("spec: Required value"))?;
        if meta.uid.is_empty() {
            return Err(invalid("metadata.uid: Required value"));
        }
        if meta.name.is_empty() {
            return Err(invalid("metadata.name: Required value"));
        }
        let csr = VerifiedCsr::from_pem(&spec.request)?;
        let hash = hex::encode(csr.sha256());
        let uid = Uid(meta.uid.clone());
        // One renewal proof, one certificate: the current certificate is
        // reserved with the uid before any heavy check.
        let renewal_of = match ev {
            Evidence::Request {
                renewal: Some(r), ..
            }
            | Evidence::Identity(r, _) => r
                .certificate_chain
                .first()
                .map(|c| hex::encode(csr::sha256(c))),
            _ => None,
        };
        let reservation = {
            let mut st = self.lock()?;
            if let Some(done) = st.index.by_uid.get(&uid) {
                if done.csr_sha256 == hash {
                    let at = done.line;
                    // The journal is read back outside the lock.
                    drop(st);
                    return self.replay(&at, &uid);
                }
                return Err(SignError::AlreadyExists(format!(
                    "uid {:?} was already issued for another CSR; a uid is signed at most once",
                    meta.uid
                )));
            }
            if let Some(r) = &renewal_of {
                if let Some(other) = st.index.renewed.get(r) {
                    return Err(SignError::Refused(format!(
                        "renewal: the current certificate was already renewed (uid {other}); one renewal proof yields one certificate"
                    )));
                }
                if st.renewing.contains(r) {
                    return Err(SignError::Busy(
                        "renewal: the current certificate is being renewed right now; retry".into(),
                    ));
                }
            }
            if !st.pending.insert(uid.clone()) {
                return Err(SignError::Busy(format!(
                    "uid {:?} is being signed right now; retry",
                    meta.uid
                )));
            }
            if let Some(r) = &renewal_of {
                st.renewing.insert(r.clone());
            }
            Reservation {
                state: self.state.clone(),
                uid: uid.clone(),
                renewal_of: renewal_of.clone(),
            }
        };
        let profile = self.config.profile(&spec.signer_name).ok_or_else(|| {
            SignError::Refused(format!(
                "unknown signer name {:?}: this signer has no profile for it",
                spec.signer_name
            ))
        })?;
        let usages = parse_usages(&spec.usages)?;
        if let Some(s) = spec.expiration_seconds.filter(|s| *s < 600) {
            return Err(SignError::Invalid(format!(
                "spec.expirationSeconds: Invalid value: {s}: may not specify a duration less than 600 seconds (10 minutes)"
            )));
        }
        let checked = profile.check(&csr, &usages)?;
        // The signer's own clients are minted only at its console: otherwise an
        // approved user CSR naming "certsign-approver" would become a Sign caller.
        let allowed = &self.config.allowed_clients;
        // An allow-listed caller may renew only itself: its proof must be
        // for the certificate of this very connection.
        if let Evidence::Identity(r, peer) = ev
            && r.certificate_chain.first().map(Vec::as_slice) != Some(peer)
        {
            return Err(SignError::Refused("identity renewal: the renewal proof is not for the certificate this connection presented; a client renews only its own identity".into()));
        }
        let identity = matches!(ev, Evidence::Identity(..));
        if !matches!(ev, Evidence::Console(_) | Evidence::Identity(..))
            && let Some(n) = csr
                .common_name
                .iter()
                .chain(csr.sans.dns.iter())
                .find(|n| allowed.contains(n))
        {
            return Err(SignError::Refused(format!(
                "subject names {n:?}, an allow-listed signer client; such identities are issued only at the signer console"
            )));
        }

        let max_age = self.config.statement_max_age;
        let (mut approved_at, mut lifetime) = (now, None);
        let (kind, by) = match ev {
            Evidence::Console(user) => (EvidenceKind::Console, vec![user.to_string()]),
            Evidence::Request {
                renewal: Some(r), ..
            }
            | Evidence::Identity(r, _) => {
                if !profile.allow_renewal {
                    return Err(SignError::Refused(format!(
                        "renewal: profile {} does not accept renewals",
                        profile.signer_name
                    )));
                }
                if let Some(other) = self.lock()?.index.by_csr.get(&hash).filter(|u| **u != uid) {
                    return Err(SignError::Refused(format!(
                        "renewal: this CSR was already issued under uid {other:?}"
                    )));
                }
                let proof = evidence::verify_renewal(
                    r,
                    req,
                    csr.renewal_input(),
                    self.ca.cert_der(),
                    max_age,
                    now,
                )?;
                if self.lock()?.index.is_revoked(&Serial(proof.serial.clone())) {
                    let revoked = format!("renewal: certificate {} is revoked", proof.serial);
                    return Err(SignError::Refused(revoked));
                }
                let began = proof.lineage.approved_at;
                // The allow-list, not a human's approval, authorizes a
                // client's own identity: no horizon for it.
                if let Some(h) = profile.renewal_horizon.filter(|_| !identity)
                    && began.checked_add(h).is_some_and(|end| end < now)
                {
                    return Err(SignError::Refused(format!(
                        "renewal: this line of renewals was last approved by a human at {}, longer ago than renewal_horizon {} of profile {}: create a new request and have it approved",
                        humantime::format_rfc3339_seconds(began),
                        humantime::format_duration(h),
                        profile.signer_name
                    )));
                }
                (approved_at, lifetime) = (began, Some(proof.lifetime));
                (
                    EvidenceKind::Renewal,
                    vec![format!(
                        "{} serial {}",
                        proof.identity.username, proof.serial
                    )],
                )
            }
            Evidence::Request { .. } if profile.approval == ApprovalMode::Approver => {
                (EvidenceKind::Approver, vec![caller.to_string()])
            }
            Evidence::Request { approvals, .. } => {
                let admins = evidence::verify_approvals(
                    approvals,
                    req,
                    csr.common_name.as_deref(),
                    &self.trust,
                    &profile.approver_groups,
                    max_age,
                    profile.required_approvals,
                    now,
                )?;
                (
                    EvidenceKind::Approvals,
                    admins.into_iter().map(|a| a.username).collect(),
                )
            }
        };

        let now_odt = OffsetDateTime::from(now);
        let window = issue::validity(
            profile,
            spec.expiration_seconds,
            lifetime,
            now_odt,
            self.ca.not_after(),
        )?;
        let serial = self.fresh_serial()?;
        let prepared = issue::prepare(&self.ca, checked, profile, approved_at, window, serial)?;
        let cert = issue::sign(&self.ca, prepared)?;
        let not_after = cert
            .not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let event = Event::Issued {
            uid,
            name: meta.name.clone(),
            signer_name: spec.signer_name.clone(),
            requestor: spec.username.clone(),
            csr_sha256: hash,
            evidence: kind,
            by,
            caller: caller.to_string(),
            serial: cert.serial.clone(),
            not_after,
            certificate: cert.pem_chain.clone(),
            renewal_of,
        };
        let signed = Signed {
            certificate: cert.pem_chain,
            serial: cert.serial,
            replayed: false,
        };
        Ok(Decision::Issue(Arc::new(event), signed, reservation))
    }

    /// The journaled answer to a uid issued before: the same certificate
    /// chain and serial, read back from its journal line (the index keeps
    /// only where that line is). A line that cannot be read back intact is
    /// UNAVAILABLE, never a second issuance: the uid stays taken.
    fn replay(&self, at: &LineAt, uid: &Uid) -> Result<Decision, SignError> {
        let (certificate, serial) = journal::read_issued(&self.config.journal, at, uid)
            .inspect_err(|e| {
                tracing::error!(uid = %uid, error = %e, "reading back an issued line failed");
            })?;
        Ok(Decision::Replay(Signed {
            certificate,
            serial,
            replayed: true,
        }))
    }

    /// 16 random bytes (positive after `prepare` clears the top bit), never
    /// one already journaled.
    fn fresh_serial(&self) -> Result<[u8; 16], SignError> {
        let rng = SystemRandom::new();
        loop {
            let mut s = [0u8; 16];
            rng.fill(&mut s)
                .map_err(|_| SignError::Unavailable("random number generator failed".into()))?;
            s[0] &= 0x7f;
            // Leading zero bytes would be stripped from the DER integer; keep
            // the serial at its full width.
            if s[0] == 0 {
                continue;
            }
            if !self
                .lock()?
                .index
                .serials
                .contains_key(&Serial::from_bytes(&s))
            {
                return Ok(s);
            }
        }
    }
}

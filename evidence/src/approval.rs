//! Approval statements: an admin's signed decision on one request, alone
//! (`ApprovalStatement`) or as one entry of a batch
//! (`BatchApprovalStatement` + this request's inclusion, see `batch.rs`).
//!
//! [`verify_approval`] checks ONE signed approval: the signature over
//! `context || 0x00 || statement` by the key of `certificate_chain[0]`
//! (context `certsign.v1.ApprovalStatement`, or
//! `certsign.v1.BatchApprovalStatement` when `batch` is set); that
//! certificate chains to the [`ApprovalTrust`] (the rest of the chain =
//! intermediates) and is valid both now and at `signed_at`; for a batch,
//! that this request's entry and path lead to the signed root; its groups
//! intersect `allowed_groups`; every bound field of the statement or entry
//! (uid, name, csr_sha256 of the PEM's DER, signer name, usages in order,
//! expiration_seconds, requestor) equals the request; the decision is the
//! one expected; `signed_at` is at most `max_age` old and at most
//! [`MAX_CLOCK_SKEW`](crate::MAX_CLOCK_SKEW) in the future; and the admin is
//! not the requestor. [`verify_approvals`] adds a quorum of distinct admins,
//! none of whom is the subject of the request (its CN is not their username).
//! A batch statement's signature and chain are verified once and remembered
//! in the trust's [`StatementCache`] while they hold; everything else is
//! checked for every request.
//!
//! It must never accept a statement whose signature it has not verified
//! before decoding it, nor take an identity from anywhere but the verified
//! certificate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certsign_proto::v1::{
    ApprovalEntry, ApprovalStatement, BatchApprovalStatement, BatchInclusion,
    CertificateSigningRequest, Decision, SignedStatement,
};
use prost::Message;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::batch::{MAX_BATCH_ENTRIES, included};
use crate::cache::{StatementCache, VerifiedBatch};
use crate::cert::{Identity, csr_der_from_pem, sha256};
use crate::statement::{
    APPROVAL_CONTEXT, BATCH_APPROVAL_CONTEXT, EvidenceError, bound, check_fresh, identity_of, open,
    parts, to_system_time, verify_chain_to,
};

/// The CA certificates admin statement certificates must chain to.
///
/// Admins sign many statements with one certificate, and checking its
/// chain costs a signature verification (two per statement: now and at
/// `signed_at`). A chain of one certificate that verified once is
/// remembered by the SHA-256 of its DER together with its validity window;
/// a later check of the same bytes at a time inside that window has the
/// same outcome (for a leaf issued directly by a root, webpki's result
/// depends on the time only through the leaf's validity), so it is
/// answered from memory. Roots never change for the life of the value, and
/// only successes are remembered, so the cache can only repeat a
/// verification webpki itself made.
#[derive(Debug, Clone)]
pub struct ApprovalTrust {
    roots: Vec<CertificateDer<'static>>,
    verified: Arc<Mutex<VerifiedLeaves>>,
    statements: Arc<StatementCache>,
}

/// SHA-256 of a verified leaf's DER → its (notBefore, notAfter), Unix seconds.
type VerifiedLeaves = HashMap<[u8; 32], (i64, i64)>;

/// Verified leaves remembered at most (then the memory starts over).
const VERIFIED_CACHE_MAX: usize = 4096;

impl ApprovalTrust {
    /// Load every CERTIFICATE block of a PEM bundle.
    pub fn from_pem(pem: &[u8]) -> Result<Self, EvidenceError> {
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EvidenceError::Malformed(format!("approval CA bundle: {e}")))?;
        if roots.is_empty() {
            return Err(EvidenceError::Malformed(
                "approval CA bundle has no certificate".into(),
            ));
        }
        Ok(Self {
            roots,
            verified: Arc::default(),
            statements: Arc::default(),
        })
    }

    /// From DER certificates.
    pub fn from_der(roots: Vec<Vec<u8>>) -> Self {
        Self {
            roots: roots.into_iter().map(CertificateDer::from).collect(),
            verified: Arc::default(),
            statements: Arc::default(),
        }
    }

    /// The same roots with a batch statement cache of at most `max_count`
    /// statements and about `max_bytes` (the default is
    /// [`DEFAULT_CACHE_COUNT`](crate::cache::DEFAULT_CACHE_COUNT) and
    /// [`DEFAULT_CACHE_BYTES`](crate::cache::DEFAULT_CACHE_BYTES)).
    pub fn with_statement_cache(mut self, max_count: usize, max_bytes: usize) -> Self {
        self.statements = Arc::new(StatementCache::new(max_count, max_bytes));
        self
    }

    /// The cache of verified batch statements.
    pub fn statement_cache(&self) -> &StatementCache {
        &self.statements
    }

    /// Verify `chain` (leaf first) to one of the roots at time `at`.
    pub(crate) fn verify_chain(
        &self,
        chain: &[Vec<u8>],
        at: SystemTime,
        what: &str,
    ) -> Result<(), EvidenceError> {
        let secs = at
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok());
        let key = match (chain, secs) {
            ([leaf], Some(t)) => {
                let key = sha256(leaf);
                let hit = self.verified.lock().ok().and_then(|m| m.get(&key).copied());
                if hit.is_some_and(|(nb, na)| nb <= t && t <= na) {
                    return Ok(());
                }
                Some(key)
            }
            _ => None,
        };
        verify_chain_to(&self.roots, chain, at, what)?;
        if let (Some(key), Some(leaf)) = (key, chain.first())
            && let Ok((_, cert)) = X509Certificate::from_der(leaf)
            && let Ok(mut m) = self.verified.lock()
        {
            if m.len() >= VERIFIED_CACHE_MAX {
                m.clear();
            }
            let v = cert.validity();
            m.insert(key, (v.not_before.timestamp(), v.not_after.timestamp()));
        }
        Ok(())
    }
}

/// SHA-256 of the DER inside `spec.request`'s PEM block.
fn request_csr_sha256(request: &CertificateSigningRequest) -> Result<[u8; 32], EvidenceError> {
    let spec = request
        .spec
        .as_ref()
        .ok_or_else(|| EvidenceError::Malformed("request has no spec".into()))?;
    let der = csr_der_from_pem(&spec.request).ok_or_else(|| {
        EvidenceError::Malformed("PEM block type must be CERTIFICATE REQUEST".into())
    })?;
    Ok(sha256(&der))
}

/// A signed approval opened: who signed, the bound fields, the decision.
struct Opened {
    id: Identity,
    entry: ApprovalEntry,
    decision: i32,
}

/// A single ApprovalStatement: signature, freshness, chain, identity.
fn open_single(
    signed: &SignedStatement,
    trust: &ApprovalTrust,
    max_age: Duration,
    now: SystemTime,
) -> Result<Opened, EvidenceError> {
    let (_, cert, st) = open::<ApprovalStatement>(signed, APPROVAL_CONTEXT)?;
    let signed_at = to_system_time(st.signed_at.as_ref())?;
    check_fresh(signed_at, max_age, now)?;
    trust.verify_chain(&signed.certificate_chain, now, "now")?;
    trust.verify_chain(&signed.certificate_chain, signed_at, "at signed_at")?;
    let id = identity_of(&cert)?;
    let entry = ApprovalEntry {
        request_uid: st.request_uid,
        request_name: st.request_name,
        csr_sha256: st.csr_sha256,
        signer_name: st.signer_name,
        usages: st.usages,
        expiration_seconds: st.expiration_seconds,
        requestor: st.requestor,
    };
    Ok(Opened {
        id,
        entry,
        decision: st.decision,
    })
}

/// The window in which a chain verified now and at `signed_at` stays
/// valid, cut at `fresh_until`: (latest notBefore, earliest notAfter).
fn chain_window(
    chain: &[Vec<u8>],
    fresh_until: SystemTime,
) -> Result<(SystemTime, SystemTime), EvidenceError> {
    let (mut from, mut until) = (UNIX_EPOCH, fresh_until);
    for der in chain {
        let (_, c) = X509Certificate::from_der(der)
            .map_err(|e| EvidenceError::Certificate(format!("certificate_chain: {e}")))?;
        let v = c.validity();
        let at = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
        from = from.max(at(v.not_before.timestamp()));
        until = until.min(at(v.not_after.timestamp()));
    }
    Ok((from, until))
}

/// A batch statement's signature, freshness, chain and identity, from the
/// cache while they hold; then this request's inclusion, always.
fn open_batch(
    signed: &SignedStatement,
    inclusion: &BatchInclusion,
    trust: &ApprovalTrust,
    max_age: Duration,
    now: SystemTime,
) -> Result<Opened, EvidenceError> {
    let key = StatementCache::key(signed);
    let verified = match trust.statements.get(&key, now) {
        Some(v) => v,
        None => {
            let (_, cert, st) = open::<BatchApprovalStatement>(signed, BATCH_APPROVAL_CONTEXT)?;
            let signed_at = to_system_time(st.signed_at.as_ref())?;
            check_fresh(signed_at, max_age, now)?;
            trust.verify_chain(&signed.certificate_chain, now, "now")?;
            trust.verify_chain(&signed.certificate_chain, signed_at, "at signed_at")?;
            let id = identity_of(&cert)?;
            let root = <[u8; 32]>::try_from(st.root_sha256.as_slice()).map_err(|_| {
                EvidenceError::Malformed(
                    "BatchApprovalStatement: root_sha256 is not 32 bytes".into(),
                )
            })?;
            if st.entry_count == 0 || st.entry_count > MAX_BATCH_ENTRIES as u64 {
                return Err(EvidenceError::Malformed(format!(
                    "BatchApprovalStatement: entry_count must be 1 to {MAX_BATCH_ENTRIES}"
                )));
            }
            let (from, until) = chain_window(&signed.certificate_chain, signed_at + max_age)?;
            let v = VerifiedBatch {
                id,
                signed_at,
                root,
                count: st.entry_count,
                decision: Decision::try_from(st.decision).unwrap_or(Decision::Unspecified),
                from,
                until,
            };
            trust.statements.insert(key, v.clone());
            Arc::new(v)
        }
    };
    check_fresh(verified.signed_at, max_age, now)?;
    if included(inclusion, verified.count)? != verified.root {
        return Err(EvidenceError::Inclusion(
            "this entry and path do not lead to the signed root_sha256".into(),
        ));
    }
    let entry = ApprovalEntry::decode(inclusion.entry.as_slice())
        .map_err(|e| EvidenceError::Malformed(format!("ApprovalEntry: {e}")))?;
    Ok(Opened {
        id: verified.id.clone(),
        entry,
        decision: verified.decision as i32,
    })
}

/// Verify one signed approval (single or one batch entry) against
/// `request` (see the module header for every rule). Returns the admin's
/// identity.
#[allow(clippy::too_many_arguments)] // Each argument is one independent input of the rule set.
pub fn verify_approval(
    signed: &SignedStatement,
    request: &CertificateSigningRequest,
    expected: Decision,
    trust: &ApprovalTrust,
    allowed_groups: &[String],
    max_age: Duration,
    now: SystemTime,
) -> Result<Identity, EvidenceError> {
    let Opened {
        id,
        entry: st,
        decision,
    } = match &signed.batch {
        None => open_single(signed, trust, max_age, now)?,
        Some(inclusion) => open_batch(signed, inclusion, trust, max_age, now)?,
    };
    if !id.groups.iter().any(|g| allowed_groups.contains(g)) {
        return Err(EvidenceError::GroupNotAllowed {
            user: id.username,
            groups: id.groups,
            allowed: allowed_groups.to_vec(),
        });
    }
    let (meta, spec) = parts(request);
    bound(&[
        ("request_uid", st.request_uid == meta.uid),
        ("request_name", st.request_name == meta.name),
        ("csr_sha256", st.csr_sha256 == request_csr_sha256(request)?),
        ("signer_name", st.signer_name == spec.signer_name),
        ("usages", st.usages == spec.usages),
        (
            "expiration_seconds",
            st.expiration_seconds == spec.expiration_seconds,
        ),
        ("requestor", st.requestor == spec.username),
    ])?;
    let got = Decision::try_from(decision).unwrap_or(Decision::Unspecified);
    if got != expected {
        return Err(EvidenceError::Decision { got, expected });
    }
    if expected == Decision::Approve && id.username == spec.username {
        return Err(EvidenceError::SelfApproval(id.username));
    }
    Ok(id)
}

/// Verify every approval and require `required` distinct admins, none of
/// them named by `subject_cn` (the CSR's common name: an admin may not
/// approve a certificate for their own username).
#[allow(clippy::too_many_arguments)] // Each argument is one independent input of the rule set.
pub fn verify_approvals(
    approvals: &[SignedStatement],
    request: &CertificateSigningRequest,
    subject_cn: Option<&str>,
    trust: &ApprovalTrust,
    allowed_groups: &[String],
    max_age: Duration,
    required: usize,
    now: SystemTime,
) -> Result<Vec<Identity>, EvidenceError> {
    let mut admins: Vec<Identity> = Vec::new();
    for s in approvals {
        let id = verify_approval(
            s,
            request,
            Decision::Approve,
            trust,
            allowed_groups,
            max_age,
            now,
        )?;
        if subject_cn == Some(id.username.as_str()) {
            return Err(EvidenceError::SubjectApproval(id.username));
        }
        if !admins.iter().any(|a| a.username == id.username) {
            admins.push(id);
        }
    }
    if admins.len() < required.max(1) {
        return Err(EvidenceError::Quorum {
            have: admins.len(),
            need: required.max(1),
        });
    }
    Ok(admins)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testkit::*;

    #[test]
    fn accepts_valid_approval_and_names_admin() {
        for (mode, sign) in MODES {
            let pki = pki();
            let (k, c) = admin(&pki, "admin", "system:masters", false);
            let req = request();
            let ids = check(&pki, &req, &[sign(&statement(&req, 0), &k, &c)], 1).unwrap();
            assert_eq!(ids[0].username, "admin", "{mode}");
            assert_eq!(ids[0].groups, vec!["system:masters".to_string()]);
        }
    }

    #[test]
    fn each_rule_refuses() {
        for (mode, sign) in MODES {
            let pki = pki();
            let (k, c) = admin(&pki, "admin", "system:masters", false);
            let (k2, _) = admin(&pki, "other", "system:masters", false);
            let req = request();
            let st = statement(&req, 0);
            // Wrong key.
            let e = check(&pki, &req, &[sign(&st, &k2, &c)], 1).unwrap_err();
            assert!(matches!(e, EvidenceError::Signature(_)), "{mode}: {e}");
            // Bound fields.
            for (field, f) in [
                (
                    "usages",
                    Box::new(|s: &mut ApprovalStatement| s.usages.push("server auth".into()))
                        as Box<dyn Fn(&mut ApprovalStatement)>,
                ),
                (
                    "expiration_seconds",
                    Box::new(|s| s.expiration_seconds = Some(7200)),
                ),
                (
                    "signer_name",
                    Box::new(|s| s.signer_name = "example.com/x".into()),
                ),
                ("csr_sha256", Box::new(|s| s.csr_sha256 = vec![0; 32])),
                ("request_uid", Box::new(|s| s.request_uid = "u-2".into())),
            ] {
                let mut s = st.clone();
                f(&mut s);
                assert_eq!(
                    check(&pki, &req, &[sign(&s, &k, &c)], 1).unwrap_err(),
                    EvidenceError::FieldMismatch(field),
                    "{mode}"
                );
            }
            // Stale and future.
            let e = check(&pki, &req, &[sign(&statement(&req, 7200), &k, &c)], 1).unwrap_err();
            assert!(matches!(e, EvidenceError::Stale { .. }), "{e}");
            let e = check(&pki, &req, &[sign(&statement(&req, -3600), &k, &c)], 1).unwrap_err();
            assert!(matches!(e, EvidenceError::Future(_)), "{e}");
            // Deny decision presented as approval.
            let mut s = st.clone();
            s.decision = Decision::Deny as i32;
            assert!(matches!(
                check(&pki, &req, &[sign(&s, &k, &c)], 1).unwrap_err(),
                EvidenceError::Decision { .. }
            ));
            // Quorum: the same admin twice is one.
            let e = check(&pki, &req, &[sign(&st, &k, &c), sign(&st, &k, &c)], 2).unwrap_err();
            assert_eq!(e, EvidenceError::Quorum { have: 1, need: 2 });
            assert!(matches!(
                check(&pki, &req, &[], 1).unwrap_err(),
                EvidenceError::Quorum { have: 0, need: 1 }
            ));
        }
    }

    #[test]
    fn remembered_chains_still_end_at_expiry_and_check_every_signature() {
        let pki = pki();
        let (k, c) = admin(&pki, "admin", "system:masters", false);
        let req = request();
        let trust = ApprovalTrust::from_der(vec![pki.ca_der.clone()]);
        let groups = vec!["system:masters".to_string()];
        let good = sign(&statement(&req, 0), &k, &c);
        let at = |t: SystemTime, s: &SignedStatement| {
            verify_approval(
                s,
                &req,
                Decision::Approve,
                &trust,
                &groups,
                Duration::from_secs(400_000),
                t,
            )
        };
        // Verified once: the chain is remembered.
        at(SystemTime::now(), &good).unwrap();
        assert_eq!(trust.verified.lock().unwrap().len(), 1);
        // A later time past the leaf's notAfter is refused, cache or not.
        let late = SystemTime::now() + Duration::from_secs(2 * 86_400);
        let old = sign(&statement(&req, -2 * 86_400), &k, &c);
        assert!(matches!(
            at(late, &old).unwrap_err(),
            EvidenceError::Certificate(_)
        ));
        // The statement's own signature is still checked every time.
        let mut forged = good.clone();
        forged.signature[10] ^= 1;
        assert_eq!(
            at(SystemTime::now(), &forged).unwrap_err(),
            EvidenceError::Signature(APPROVAL_CONTEXT)
        );
        // A different certificate with the same subject is verified afresh.
        let rogue = self::pki();
        let (k2, c2) = admin(&rogue, "admin", "system:masters", false);
        assert!(matches!(
            at(SystemTime::now(), &sign(&statement(&req, 0), &k2, &c2)).unwrap_err(),
            EvidenceError::Certificate(_)
        ));
    }

    #[test]
    fn refuses_expired_wrong_group_self_approval_and_foreign_ca() {
        for (mode, sign) in MODES {
            let pki = pki();
            let req = request();
            let st = statement(&req, 0);
            let (k, c) = admin(&pki, "admin", "system:masters", true);
            assert!(matches!(
                check(&pki, &req, &[sign(&st, &k, &c)], 1).unwrap_err(),
                EvidenceError::Certificate(_)
            ));
            let (k, c) = admin(&pki, "bob", "dev", false);
            assert!(matches!(
                check(&pki, &req, &[sign(&st, &k, &c)], 1).unwrap_err(),
                EvidenceError::GroupNotAllowed { .. }
            ));
            let (k, c) = admin(&pki, "alice", "system:masters", false);
            assert_eq!(
                check(&pki, &req, &[sign(&st, &k, &c)], 1).unwrap_err(),
                EvidenceError::SelfApproval("alice".into()),
                "{mode}"
            );
            // Separation of duties by subject: "carol" requests a certificate
            // whose CN is the approving admin's username.
            let mut by_carol = req.clone();
            by_carol.spec.as_mut().unwrap().username = "carol".into();
            let st = statement(&by_carol, 0);
            let e = check(&pki, &by_carol, &[sign(&st, &k, &c)], 1).unwrap_err();
            assert_eq!(e, EvidenceError::SubjectApproval("alice".into()));
            assert!(e.to_string().starts_with("separation of duties"), "{e}");
            let other = self::pki();
            let (k, c) = admin(&other, "admin", "system:masters", false);
            assert!(matches!(
                check(&pki, &req, &[sign(&st, &k, &c)], 1).unwrap_err(),
                EvidenceError::Certificate(_)
            ));
        }
    }
}

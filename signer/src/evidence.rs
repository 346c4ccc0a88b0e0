//! Evidence checks: signed admin approvals and renewal proofs.
//!
//! This is the one place that decides whether a `SignedStatement` proves
//! something. The signer runs it on every `Sign`; the approver calls the same
//! functions when it records a decision, so the rules are written once.
//! It must never accept a statement whose signature it has not verified
//! before decoding it, and never trust any identity the caller supplies:
//! identities come only from the verified certificate (CN = username,
//! O = groups).
//!
//! # API
//!
//! - [`ApprovalTrust::from_pem`]: the approval CA bundle (`approval_ca`).
//! - [`verify_approval`]`(signed, request, expected_decision, trust,
//!   allowed_groups, max_age, now) -> Result<Identity, EvidenceError>`:
//!   verifies ONE `ApprovalStatement`: signature over
//!   `"certsign.v1.ApprovalStatement" || 0x00 || statement` by the key of
//!   `certificate_chain[0]`; that certificate chains to `trust` (rest of the
//!   chain = intermediates) and is valid both now and at `signed_at`; its
//!   groups intersect `allowed_groups`; every bound field (uid, name,
//!   csr_sha256 of the PEM's DER, signer name, usages in order,
//!   expiration_seconds, requestor) equals `request`; the decision equals
//!   `expected_decision`; `signed_at` is at most `max_age` old and at most
//!   [`MAX_CLOCK_SKEW`] in the future; and the admin is not the requestor.
//! - [`verify_approvals`]: all of the above for each statement plus a quorum
//!   of `required` distinct admins (by username); returns the admins.
//! - [`verify_renewal`]: a `RenewalStatement` signed by the key of the
//!   current certificate (`certificate_chain[0]`), which must be issued by
//!   the given CA, unexpired, with the same subject and SANs as the new CSR;
//!   the statement binds name, csr hash, signer name and the current
//!   certificate's hash, and must be fresh.
//! - [`sign_statement`]: the signing side (certctl, tests).
//!
//! Every [`EvidenceError`] Display names the rule that failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certsign_proto::v1::{
    ApprovalStatement, CertificateSigningRequest, CertificateSigningRequestSpec, Decision,
    ObjectMeta, RenewalStatement, SignedStatement,
};
use prost::Message;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::csr::{self, KeyKind, Sans, VerifiedCsr};

/// Signing context of an ApprovalStatement.
pub const APPROVAL_CONTEXT: &str = "certsign.v1.ApprovalStatement";
/// Signing context of a RenewalStatement.
pub const RENEWAL_CONTEXT: &str = "certsign.v1.RenewalStatement";
/// How far in the future `signed_at` may be (clock skew between hosts).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Why evidence was refused. The Display names the rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The statement, its chain or a timestamp could not be decoded.
    #[error("evidence malformed: {0}")]
    Malformed(String),
    /// The signature does not verify with `certificate_chain[0]`'s key.
    #[error(
        "evidence signature: the signature over {0}||0x00||statement does not verify with the key of certificate_chain[0]"
    )]
    Signature(&'static str),
    /// The signing certificate does not chain to the trusted CA or is not
    /// valid at the given time.
    #[error("evidence certificate: {0}")]
    Certificate(String),
    /// The admin is in no group allowed for this signer name.
    #[error(
        "approver group: admin {user:?} (groups {groups:?}) is not in a group allowed to approve for this signer (allowed: {allowed:?})"
    )]
    GroupNotAllowed {
        /// Admin username.
        user: String,
        /// Admin groups.
        groups: Vec<String>,
        /// Groups allowed by the profile.
        allowed: Vec<String>,
    },
    /// A bound field differs from the request.
    #[error("bound field: statement {0} does not match the request")]
    FieldMismatch(&'static str),
    /// The statement's decision is not the one needed.
    #[error("decision: statement decision is {got:?}, expected {expected:?}")]
    Decision {
        /// What the statement says.
        got: Decision,
        /// What was needed.
        expected: Decision,
    },
    /// signed_at is too old.
    #[error(
        "freshness: statement signed {age_secs}s ago, older than statement_max_age ({max_secs}s)"
    )]
    Stale {
        /// Age in seconds.
        age_secs: u64,
        /// Allowed age in seconds.
        max_secs: u64,
    },
    /// signed_at is in the future.
    #[error("freshness: statement signed_at is {0}s in the future (allowed clock skew 300s)")]
    Future(u64),
    /// The requestor approved their own request.
    #[error("separation of duties: the requestor {0:?} may not approve their own request")]
    SelfApproval(String),
    /// Not enough distinct approving admins.
    #[error(
        "quorum: {have} distinct admin approval(s), {need} required (the same admin counts once)"
    )]
    Quorum {
        /// Distinct admins found.
        have: usize,
        /// Required.
        need: usize,
    },
    /// Renewal: the current certificate does not match the new CSR.
    #[error("renewal: {0}")]
    Renewal(String),
}

/// A verified identity from a certificate: CN and O values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Subject CN.
    pub username: String,
    /// Subject O values, in order.
    pub groups: Vec<String>,
}

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
        })
    }

    /// From DER certificates.
    pub fn from_der(roots: Vec<Vec<u8>>) -> Self {
        Self {
            roots: roots.into_iter().map(CertificateDer::from).collect(),
            verified: Arc::default(),
        }
    }

    /// Verify `chain` (leaf first) to one of the roots at time `at`.
    fn verify_chain(
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
                let key = csr::sha256(leaf);
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

/// Accepts any EKU: renewals replace client and serving certificates alike.
#[derive(Debug)]
struct AnyEku;

impl ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for id in iter {
            id?;
        }
        Ok(())
    }
}

fn verify_chain_to(
    roots: &[CertificateDer<'static>],
    chain: &[Vec<u8>],
    at: SystemTime,
    what: &str,
) -> Result<(), EvidenceError> {
    let leaf = chain
        .first()
        .ok_or_else(|| EvidenceError::Malformed("certificate_chain is empty".into()))?;
    let leaf = CertificateDer::from(leaf.as_slice());
    let ee = EndEntityCert::try_from(&leaf).map_err(|e| {
        EvidenceError::Certificate(format!("certificate_chain[0] does not parse: {e}"))
    })?;
    let anchors = roots
        .iter()
        .map(|r| {
            webpki::anchor_from_trusted_cert(r)
                .map_err(|e| EvidenceError::Malformed(format!("trust anchor: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| EvidenceError::Malformed("time before 1970".into()))?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        UnixTime::since_unix_epoch(secs),
        AnyEku,
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| {
        EvidenceError::Certificate(format!("certificate_chain[0] is not valid {what}: {e}"))
    })
}

/// Verify `signature` over `context||0x00||msg` with the key of `cert_der`.
fn verify_signature(
    context: &'static str,
    cert: &X509Certificate<'_>,
    msg: &[u8],
    signature: &[u8],
) -> Result<(), EvidenceError> {
    let spki = cert.public_key();
    let kind = KeyKind::from_spki(spki).map_err(|e| EvidenceError::Certificate(e.to_string()))?;
    let alg: &dyn ring::signature::VerificationAlgorithm = match kind {
        KeyKind::P256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
        KeyKind::P384 => &ring::signature::ECDSA_P384_SHA384_ASN1,
        KeyKind::Ed25519 => &ring::signature::ED25519,
        KeyKind::Rsa(_) => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
    };
    let signed = signed_bytes(context, msg);
    ring::signature::UnparsedPublicKey::new(alg, &spki.subject_public_key.data)
        .verify(&signed, signature)
        .map_err(|_| EvidenceError::Signature(context))
}

fn signed_bytes(context: &str, msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(context.len() + 1 + msg.len());
    v.extend_from_slice(context.as_bytes());
    v.push(0);
    v.extend_from_slice(msg);
    v
}

/// Sign `statement` (an encoded Approval/RenewalStatement) with `key`,
/// attaching `chain` (DER, the key's certificate first).
pub fn sign_statement(
    context: &'static str,
    statement: Vec<u8>,
    key: &rcgen::KeyPair,
    chain: Vec<Vec<u8>>,
) -> Result<SignedStatement, EvidenceError> {
    use rcgen::SigningKey;
    let signature = key
        .sign(&signed_bytes(context, &statement))
        .map_err(|e| EvidenceError::Malformed(format!("signing failed: {e}")))?;
    Ok(SignedStatement {
        statement,
        signature,
        certificate_chain: chain,
    })
}

/// Parse `certificate_chain[0]` once for the signature check and the identity.
fn parse_leaf(cert_der: &[u8]) -> Result<X509Certificate<'_>, EvidenceError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| {
        EvidenceError::Certificate(format!("certificate_chain[0] does not parse: {e}"))
    })?;
    Ok(cert)
}

fn identity_of(cert: &X509Certificate<'_>) -> Result<Identity, EvidenceError> {
    let (cn, groups) = csr::name_identity(cert.subject());
    let username = cn.ok_or_else(|| {
        EvidenceError::Certificate("certificate_chain[0] has no subject CN".into())
    })?;
    Ok(Identity { username, groups })
}

fn to_system_time(ts: Option<&prost_types::Timestamp>) -> Result<SystemTime, EvidenceError> {
    let ts = ts.ok_or_else(|| EvidenceError::Malformed("statement has no signed_at".into()))?;
    let secs = u64::try_from(ts.seconds)
        .map_err(|_| EvidenceError::Malformed("signed_at before 1970".into()))?;
    let nanos = u32::try_from(ts.nanos)
        .map_err(|_| EvidenceError::Malformed("signed_at nanos negative".into()))?;
    Ok(UNIX_EPOCH + Duration::new(secs, nanos.min(999_999_999)))
}

fn check_fresh(
    signed_at: SystemTime,
    max_age: Duration,
    now: SystemTime,
) -> Result<(), EvidenceError> {
    match now.duration_since(signed_at) {
        Ok(age) if age > max_age => Err(EvidenceError::Stale {
            age_secs: age.as_secs(),
            max_secs: max_age.as_secs(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.duration() > MAX_CLOCK_SKEW => {
            Err(EvidenceError::Future(e.duration().as_secs()))
        }
        Err(_) => Ok(()),
    }
}

/// SHA-256 of the DER inside `spec.request`'s PEM block.
fn request_csr_sha256(request: &CertificateSigningRequest) -> Result<[u8; 32], EvidenceError> {
    let spec = request
        .spec
        .as_ref()
        .ok_or_else(|| EvidenceError::Malformed("request has no spec".into()))?;
    let der = csr::csr_der_from_pem(&spec.request)
        .map_err(|e| EvidenceError::Malformed(e.to_string()))?;
    Ok(csr::sha256(&der))
}

/// Verify one signed ApprovalStatement against `request` (see the module
/// header for every rule). Returns the admin's identity.
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
    let leaf = signed
        .certificate_chain
        .first()
        .ok_or_else(|| EvidenceError::Malformed("certificate_chain is empty".into()))?;
    let cert = parse_leaf(leaf)?;
    verify_signature(
        APPROVAL_CONTEXT,
        &cert,
        &signed.statement,
        &signed.signature,
    )?;
    // Decode only after the signature verified: the bytes are the admin's.
    let st = ApprovalStatement::decode(signed.statement.as_slice())
        .map_err(|e| EvidenceError::Malformed(format!("ApprovalStatement: {e}")))?;
    let signed_at = to_system_time(st.signed_at.as_ref())?;
    check_fresh(signed_at, max_age, now)?;
    trust.verify_chain(&signed.certificate_chain, now, "now")?;
    trust.verify_chain(&signed.certificate_chain, signed_at, "at signed_at")?;
    let id = identity_of(&cert)?;
    if !id.groups.iter().any(|g| allowed_groups.contains(g)) {
        return Err(EvidenceError::GroupNotAllowed {
            user: id.username,
            groups: id.groups,
            allowed: allowed_groups.to_vec(),
        });
    }
    let (no_meta, no_spec) = (
        ObjectMeta::default(),
        CertificateSigningRequestSpec::default(),
    );
    let meta = request.metadata.as_ref().unwrap_or(&no_meta);
    let spec = request.spec.as_ref().unwrap_or(&no_spec);
    let checks: [(&'static str, bool); 7] = [
        ("request_uid", st.request_uid == meta.uid),
        ("request_name", st.request_name == meta.name),
        (
            "csr_sha256",
            st.csr_sha256.as_slice() == request_csr_sha256(request)?.as_slice(),
        ),
        ("signer_name", st.signer_name == spec.signer_name),
        ("usages", st.usages == spec.usages),
        (
            "expiration_seconds",
            st.expiration_seconds == spec.expiration_seconds,
        ),
        ("requestor", st.requestor == spec.username),
    ];
    if let Some((field, _)) = checks.iter().find(|(_, ok)| !ok) {
        return Err(EvidenceError::FieldMismatch(field));
    }
    let got = Decision::try_from(st.decision).unwrap_or(Decision::Unspecified);
    if got != expected {
        return Err(EvidenceError::Decision { got, expected });
    }
    if expected == Decision::Approve && id.username == spec.username {
        return Err(EvidenceError::SelfApproval(id.username));
    }
    Ok(id)
}

/// Verify every approval and require `required` distinct admins.
pub fn verify_approvals(
    approvals: &[SignedStatement],
    request: &CertificateSigningRequest,
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

/// What a verified renewal proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalProof {
    /// Identity of the certificate being replaced.
    pub identity: Identity,
    /// Its serial number, lowercase hex.
    pub serial: String,
}

/// Verify a renewal: see the module header.
pub fn verify_renewal(
    signed: &SignedStatement,
    request: &CertificateSigningRequest,
    new_csr: &VerifiedCsr,
    issuing_ca_der: &[u8],
    max_age: Duration,
    now: SystemTime,
) -> Result<RenewalProof, EvidenceError> {
    let leaf = signed
        .certificate_chain
        .first()
        .ok_or_else(|| EvidenceError::Malformed("certificate_chain is empty".into()))?;
    let cert = parse_leaf(leaf)?;
    verify_signature(RENEWAL_CONTEXT, &cert, &signed.statement, &signed.signature)?;
    let st = RenewalStatement::decode(signed.statement.as_slice())
        .map_err(|e| EvidenceError::Malformed(format!("RenewalStatement: {e}")))?;
    // Only the issuing CA itself, no intermediates: the certificate must be ours.
    let root = vec![CertificateDer::from(issuing_ca_der.to_vec())];
    verify_chain_to(
        &root,
        std::slice::from_ref(leaf),
        now,
        "now (renewal needs an unexpired certificate issued by this CA)",
    )
    .map_err(|e| EvidenceError::Renewal(e.to_string()))?;
    let (no_meta, no_spec) = (
        ObjectMeta::default(),
        CertificateSigningRequestSpec::default(),
    );
    let meta = request.metadata.as_ref().unwrap_or(&no_meta);
    let spec = request.spec.as_ref().unwrap_or(&no_spec);
    let checks: [(&'static str, bool); 4] = [
        ("request_name", st.request_name == meta.name),
        (
            "csr_sha256",
            st.csr_sha256.as_slice() == new_csr.sha256().as_slice(),
        ),
        ("signer_name", st.signer_name == spec.signer_name),
        (
            "current_certificate_sha256",
            st.current_certificate_sha256.as_slice() == csr::sha256(leaf).as_slice(),
        ),
    ];
    if let Some((field, _)) = checks.iter().find(|(_, ok)| !ok) {
        return Err(EvidenceError::FieldMismatch(field));
    }
    check_fresh(to_system_time(st.signed_at.as_ref())?, max_age, now)?;
    if cert.subject().as_raw() != new_csr.subject_der() {
        return Err(EvidenceError::Renewal(
            "the new CSR's subject differs from the current certificate's".into(),
        ));
    }
    let cert_sans = match cert.subject_alternative_name() {
        Ok(Some(ext)) => Sans::from_general_names(&ext.value.general_names)
            .map_err(|e| EvidenceError::Renewal(e.to_string()))?,
        Ok(None) => Sans::default(),
        Err(e) => {
            return Err(EvidenceError::Renewal(format!(
                "current certificate SAN: {e}"
            )));
        }
    };
    if cert_sans != new_csr.sans {
        return Err(EvidenceError::Renewal(
            "the new CSR's subjectAltNames differ from the current certificate's".into(),
        ));
    }
    // A renewal may not add extended key usages the current certificate lacks.
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let e = &eku.value;
        for u in &spec.usages {
            let present = match u.as_str() {
                "server auth" => e.server_auth,
                "client auth" => e.client_auth,
                "code signing" => e.code_signing,
                "email protection" | "s/mime" => e.email_protection,
                "timestamping" => e.time_stamping,
                "ocsp signing" => e.ocsp_signing,
                "any" => e.any,
                "ipsec end system" | "ipsec tunnel" | "ipsec user" | "microsoft sgc"
                | "netscape sgc" => false,
                _ => true, // a key usage, not an extended one
            };
            if !present && !e.any {
                return Err(EvidenceError::Renewal(format!(
                    "usage {u:?} is not in the current certificate's extended key usages"
                )));
            }
        }
    }
    Ok(RenewalProof {
        identity: identity_of(&cert)?,
        serial: hex::encode(cert.raw_serial()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use certsign_proto::v1::{CertificateSigningRequestSpec, ObjectMeta};
    use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};

    use super::*;

    struct Pki {
        ca_der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn pki() -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "test CA");
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Pki {
            ca_der: cert.der().to_vec(),
            issuer: Issuer::new(p, key),
        }
    }

    fn admin(pki: &Pki, cn: &str, group: &str, expired: bool) -> (KeyPair, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name.push(DnType::OrganizationName, group);
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(2);
        p.not_after = if expired {
            now - time::Duration::days(1)
        } else {
            now + time::Duration::days(1)
        };
        let der = p.signed_by(&key, &pki.issuer).unwrap().der().to_vec();
        (key, der)
    }

    fn request() -> CertificateSigningRequest {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "alice");
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        CertificateSigningRequest {
            metadata: Some(ObjectMeta {
                name: "alice-1".into(),
                uid: "u-1".into(),
                ..Default::default()
            }),
            spec: Some(CertificateSigningRequestSpec {
                request: pem.into_bytes(),
                signer_name: "kubernetes.io/kube-apiserver-client".into(),
                expiration_seconds: Some(3600),
                usages: vec!["client auth".into()],
                username: "alice".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn statement(req: &CertificateSigningRequest, age: i64) -> ApprovalStatement {
        let spec = req.spec.clone().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        ApprovalStatement {
            request_uid: "u-1".into(),
            request_name: "alice-1".into(),
            csr_sha256: request_csr_sha256(req).unwrap().to_vec(),
            signer_name: spec.signer_name,
            usages: spec.usages,
            expiration_seconds: spec.expiration_seconds,
            requestor: spec.username,
            decision: Decision::Approve as i32,
            signed_at: Some(prost_types::Timestamp {
                seconds: now - age,
                nanos: 0,
            }),
        }
    }

    fn sign(st: &ApprovalStatement, key: &KeyPair, cert: &[u8]) -> SignedStatement {
        sign_statement(
            APPROVAL_CONTEXT,
            st.encode_to_vec(),
            key,
            vec![cert.to_vec()],
        )
        .unwrap()
    }

    fn check(
        pki: &Pki,
        req: &CertificateSigningRequest,
        s: &[SignedStatement],
        need: usize,
    ) -> Result<Vec<Identity>, EvidenceError> {
        let trust = ApprovalTrust::from_der(vec![pki.ca_der.clone()]);
        let groups = vec!["system:masters".to_string()];
        verify_approvals(
            s,
            req,
            &trust,
            &groups,
            Duration::from_secs(3600),
            need,
            SystemTime::now(),
        )
    }

    #[test]
    fn accepts_valid_approval_and_names_admin() {
        let pki = pki();
        let (k, c) = admin(&pki, "admin", "system:masters", false);
        let req = request();
        let ids = check(&pki, &req, &[sign(&statement(&req, 0), &k, &c)], 1).unwrap();
        assert_eq!(ids[0].username, "admin");
        assert_eq!(ids[0].groups, vec!["system:masters".to_string()]);
    }

    #[test]
    fn each_rule_refuses() {
        let pki = pki();
        let (k, c) = admin(&pki, "admin", "system:masters", false);
        let (k2, _) = admin(&pki, "other", "system:masters", false);
        let req = request();
        let st = statement(&req, 0);
        // Wrong key.
        let e = check(&pki, &req, &[sign(&st, &k2, &c)], 1).unwrap_err();
        assert!(matches!(e, EvidenceError::Signature(_)), "{e}");
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
                EvidenceError::FieldMismatch(field)
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
            EvidenceError::SelfApproval("alice".into())
        );
        let other = self::pki();
        let (k, c) = admin(&other, "admin", "system:masters", false);
        assert!(matches!(
            check(&pki, &req, &[sign(&st, &k, &c)], 1).unwrap_err(),
            EvidenceError::Certificate(_)
        ));
    }
}

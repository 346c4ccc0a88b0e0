//! Signed statements: the signing contexts, the exact bytes signed, the
//! signing side, and the checks every verification shares (signature,
//! freshness, the signer's identity). [`EvidenceError`] is here: every
//! Display names the rule that failed.
//!
//! The signature covers `context || 0x00 || statement`, made with the key of
//! `certificate_chain[0]`. A statement is decoded only after its signature
//! verified, and an identity is read only from that verified certificate,
//! never from anything the caller supplies.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};

use certsign_proto::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec, Decision, ObjectMeta, SignedStatement,
};
use prost::Message;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cert::{Identity, KeyKind, name_identity};

/// Signing context of an ApprovalStatement.
pub const APPROVAL_CONTEXT: &str = "certsign.v1.ApprovalStatement";
/// Signing context of a BatchApprovalStatement.
pub const BATCH_APPROVAL_CONTEXT: &str = "certsign.v1.BatchApprovalStatement";
/// Signing context of a RenewalStatement.
pub const RENEWAL_CONTEXT: &str = "certsign.v1.RenewalStatement";
/// Signing context of a RevocationStatement.
pub const REVOCATION_CONTEXT: &str = "certsign.v1.RevocationStatement";
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
    /// The admin approved a certificate whose subject CN is their username.
    #[error(
        "separation of duties: admin {0:?} may not approve a request whose subject common name is their own username"
    )]
    SubjectApproval(String),
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
    /// Batch approval: the request's entry is not proven part of the
    /// signed batch.
    #[error("batch inclusion: {0}")]
    Inclusion(String),
    /// Revocation: the certificate or the revoking identity is refused.
    #[error("revocation: {0}")]
    Revocation(String),
}

/// A private key that signs statements (certctl's key, an rcgen key pair in
/// tools and tests). The algorithm is the key's own: ECDSA with SHA-256 or
/// SHA-384 by curve, Ed25519, or RSA PKCS#1 v1.5 with SHA-256.
pub trait StatementKey {
    /// Sign `msg`; the error text says why the key could not.
    fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, String>;
}

#[cfg(any(test, feature = "rcgen"))]
impl StatementKey for rcgen::KeyPair {
    fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        rcgen::SigningKey::sign(self, msg).map_err(|e| e.to_string())
    }
}

/// The exact bytes signed: `context || 0x00 || statement`.
pub fn signed_bytes(context: &str, statement: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(context.len() + 1 + statement.len());
    v.extend_from_slice(context.as_bytes());
    v.push(0);
    v.extend_from_slice(statement);
    v
}

/// Sign `statement` (an encoded Approval/RenewalStatement) with `key`,
/// attaching `chain` (DER, the key's certificate first).
pub fn sign_statement<K: StatementKey + ?Sized>(
    context: &'static str,
    statement: Vec<u8>,
    key: &K,
    chain: Vec<Vec<u8>>,
) -> Result<SignedStatement, EvidenceError> {
    let signature = key
        .sign_bytes(&signed_bytes(context, &statement))
        .map_err(|e| EvidenceError::Malformed(format!("signing failed: {e}")))?;
    Ok(SignedStatement {
        statement,
        signature,
        certificate_chain: chain,
        batch: None,
    })
}

/// A signed statement opened: `certificate_chain[0]` (DER and parsed) and
/// the statement, decoded only after its signature over
/// `context||0x00||statement` verified with that certificate's key.
pub(crate) fn open<'a, M: Message + Default>(
    signed: &'a SignedStatement,
    context: &'static str,
) -> Result<(&'a Vec<u8>, X509Certificate<'a>, M), EvidenceError> {
    let leaf = signed
        .certificate_chain
        .first()
        .ok_or_else(|| EvidenceError::Malformed("certificate_chain is empty".into()))?;
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| {
        EvidenceError::Certificate(format!("certificate_chain[0] does not parse: {e}"))
    })?;
    let spki = cert.public_key();
    let kind = KeyKind::from_spki(spki).map_err(|e| EvidenceError::Certificate(e.to_string()))?;
    let alg: &dyn ring::signature::VerificationAlgorithm = match kind {
        KeyKind::P256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
        KeyKind::P384 => &ring::signature::ECDSA_P384_SHA384_ASN1,
        KeyKind::Ed25519 => &ring::signature::ED25519,
        KeyKind::Rsa(_) => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
    };
    ring::signature::UnparsedPublicKey::new(alg, &spki.subject_public_key.data)
        .verify(&signed_bytes(context, &signed.statement), &signed.signature)
        .map_err(|_| EvidenceError::Signature(context))?;
    // The message type's name, e.g. "ApprovalStatement".
    let name = context.trim_start_matches("certsign.v1.");
    let statement = M::decode(signed.statement.as_slice())
        .map_err(|e| EvidenceError::Malformed(format!("{name}: {e}")))?;
    Ok((leaf, cert, statement))
}

/// A request's metadata and spec, empty where absent.
pub(crate) fn parts(
    r: &CertificateSigningRequest,
) -> (&ObjectMeta, &CertificateSigningRequestSpec) {
    static EMPTY: OnceLock<(ObjectMeta, CertificateSigningRequestSpec)> = OnceLock::new();
    let empty = EMPTY.get_or_init(Default::default);
    (
        r.metadata.as_ref().unwrap_or(&empty.0),
        r.spec.as_ref().unwrap_or(&empty.1),
    )
}

/// The first bound field that differs from the request, as an error.
pub(crate) fn bound(checks: &[(&'static str, bool)]) -> Result<(), EvidenceError> {
    match checks.iter().find(|(_, ok)| !ok) {
        Some((field, _)) => Err(EvidenceError::FieldMismatch(field)),
        None => Ok(()),
    }
}

pub(crate) fn identity_of(cert: &X509Certificate<'_>) -> Result<Identity, EvidenceError> {
    let (cn, groups) = name_identity(cert.subject());
    let username = cn.ok_or_else(|| {
        EvidenceError::Certificate("certificate_chain[0] has no subject CN".into())
    })?;
    Ok(Identity { username, groups })
}

pub(crate) fn to_system_time(
    ts: Option<&prost_types::Timestamp>,
) -> Result<SystemTime, EvidenceError> {
    let ts = ts.ok_or_else(|| EvidenceError::Malformed("statement has no signed_at".into()))?;
    let secs = u64::try_from(ts.seconds)
        .map_err(|_| EvidenceError::Malformed("signed_at before 1970".into()))?;
    let nanos = u32::try_from(ts.nanos)
        .map_err(|_| EvidenceError::Malformed("signed_at nanos negative".into()))?;
    Ok(UNIX_EPOCH + Duration::new(secs, nanos.min(999_999_999)))
}

pub(crate) fn check_fresh(
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

/// Accepts any EKU: renewals replace client and serving certificates alike.
#[derive(Debug)]
struct AnyEku;

impl ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, mut iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        iter.try_for_each(|id| id.map(|_| ()))
    }
}

pub(crate) fn verify_chain_to(
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

//! Test fixtures for the evidence checks: a CA, admins, a request, its
//! statement, and the two ways to sign it (alone, or as one entry of a
//! batch among others), so every approval test runs for both.
//!
//! Compiled for tests only; it must never be part of the library.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certsign_proto::v1::{
    ApprovalEntry, ApprovalStatement, CertificateSigningRequest, CertificateSigningRequestSpec,
    Decision, ObjectMeta, SignedStatement,
};
use prost::Message;
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::approval::{ApprovalTrust, verify_approvals};
use crate::batch::sign_batch;
use crate::cert::{Identity, csr_der_from_pem, sha256};
use crate::statement::{APPROVAL_CONTEXT, EvidenceError, sign_statement};

pub(crate) fn request_csr_sha256(req: &CertificateSigningRequest) -> Result<[u8; 32], ()> {
    let spec = req.spec.as_ref().ok_or(())?;
    csr_der_from_pem(&spec.request)
        .map(|d| sha256(&d))
        .ok_or(())
}

pub(crate) struct Pki {
    pub(crate) ca_der: Vec<u8>,
    pub(crate) issuer: Issuer<'static, KeyPair>,
}

pub(crate) fn pki() -> Pki {
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

pub(crate) fn admin(pki: &Pki, cn: &str, group: &str, expired: bool) -> (KeyPair, Vec<u8>) {
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

pub(crate) fn request() -> CertificateSigningRequest {
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

pub(crate) fn statement(req: &CertificateSigningRequest, age: i64) -> ApprovalStatement {
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

pub(crate) fn sign(st: &ApprovalStatement, key: &KeyPair, cert: &[u8]) -> SignedStatement {
    sign_statement(
        APPROVAL_CONTEXT,
        st.encode_to_vec(),
        key,
        vec![cert.to_vec()],
    )
    .unwrap()
}

pub(crate) fn check(
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
        Some("alice"),
        &trust,
        &groups,
        Duration::from_secs(3600),
        need,
        SystemTime::now(),
    )
}

/// The entry carrying `st`'s bound fields.
pub(crate) fn entry_of(st: &ApprovalStatement) -> ApprovalEntry {
    ApprovalEntry {
        request_uid: st.request_uid.clone(),
        request_name: st.request_name.clone(),
        csr_sha256: st.csr_sha256.clone(),
        signer_name: st.signer_name.clone(),
        usages: st.usages.clone(),
        expiration_seconds: st.expiration_seconds,
        requestor: st.requestor.clone(),
    }
}

/// `st` signed as the middle entry of a batch of three (the others are
/// other requests), with `st`'s decision and signed_at.
pub(crate) fn sign_in_batch(st: &ApprovalStatement, key: &KeyPair, cert: &[u8]) -> SignedStatement {
    let decoy = |i: u8| ApprovalEntry {
        request_uid: format!("decoy-{i}"),
        request_name: format!("decoy-{i}"),
        csr_sha256: vec![i; 32],
        ..entry_of(st)
    };
    let entries = [decoy(0), entry_of(st), decoy(1)];
    let decision = Decision::try_from(st.decision).unwrap_or(Decision::Unspecified);
    let mut all = sign_batch(
        &entries,
        decision,
        st.signed_at.unwrap(),
        key,
        vec![cert.to_vec()],
    )
    .unwrap();
    all.swap_remove(1)
}

/// How a statement is signed: alone or in a batch.
pub(crate) type SignFn = fn(&ApprovalStatement, &KeyPair, &[u8]) -> SignedStatement;

/// Every approval test runs once per way of signing.
pub(crate) const MODES: [(&str, SignFn); 2] = [("single", sign), ("batch", sign_in_batch)];

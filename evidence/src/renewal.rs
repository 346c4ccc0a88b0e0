//! Renewal statements: the holder of a certificate asks for its successor.
//!
//! [`verify_renewal`] accepts a `RenewalStatement` signed by the key of the
//! current certificate (`certificate_chain[0]`), which must be issued by the
//! given CA and unexpired, with the same subject and SANs as the new CSR and
//! every requested extended usage already in it; the statement binds the
//! request name, the new CSR's hash, the signer name and the current
//! certificate's hash, and must be fresh.
//!
//! The new CSR comes in as a [`RenewalInput`] that the caller read from a
//! request whose self-signature it verified; this module never parses a CSR
//! and never trusts a certificate it did not chain to the CA itself.

use std::time::{Duration, SystemTime};

use certsign_proto::v1::{CertificateSigningRequest, RenewalStatement, SignedStatement};
use rustls_pki_types::CertificateDer;

use crate::cert::{Identity, Sans, sha256};
use crate::statement::{
    EvidenceError, RENEWAL_CONTEXT, bound, check_fresh, identity_of, open, parts, to_system_time,
    verify_chain_to,
};
use crate::usage::Usage;

/// What a renewal check needs of the new, already verified CSR.
#[derive(Debug, Clone, Copy)]
pub struct RenewalInput<'a> {
    /// SHA-256 of the new request's DER.
    pub csr_sha256: &'a [u8; 32],
    /// The new request's subject Name, DER, exactly as requested.
    pub subject_der: &'a [u8],
    /// The new request's SANs.
    pub sans: &'a Sans,
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
    new_csr: RenewalInput<'_>,
    issuing_ca_der: &[u8],
    max_age: Duration,
    now: SystemTime,
) -> Result<RenewalProof, EvidenceError> {
    let (leaf, cert, st) = open::<RenewalStatement>(signed, RENEWAL_CONTEXT)?;
    // Only the issuing CA itself, no intermediates: the certificate must be ours.
    let root = vec![CertificateDer::from(issuing_ca_der.to_vec())];
    verify_chain_to(
        &root,
        std::slice::from_ref(leaf),
        now,
        "now (renewal needs an unexpired certificate issued by this CA)",
    )
    .map_err(|e| EvidenceError::Renewal(e.to_string()))?;
    let (meta, spec) = parts(request);
    bound(&[
        ("request_name", st.request_name == meta.name),
        ("csr_sha256", st.csr_sha256 == *new_csr.csr_sha256),
        ("signer_name", st.signer_name == spec.signer_name),
        (
            "current_certificate_sha256",
            st.current_certificate_sha256 == sha256(leaf),
        ),
    ])?;
    check_fresh(to_system_time(st.signed_at.as_ref())?, max_age, now)?;
    if cert.subject().as_raw() != new_csr.subject_der {
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
    if &cert_sans != new_csr.sans {
        return Err(EvidenceError::Renewal(
            "the new CSR's subjectAltNames differ from the current certificate's".into(),
        ));
    }
    // A renewal may not add extended key usages the current certificate lacks.
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let e = &eku.value;
        for u in &spec.usages {
            // A key usage (no EKU grants it) or an unknown word: not checked here.
            let present = Usage::parse(u).and_then(|u| u.in_eku(e)).unwrap_or(true);
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

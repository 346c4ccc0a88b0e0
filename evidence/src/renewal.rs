//! Renewal statements: the holder of a certificate asks for its successor.
//!
//! [`verify_renewal`] accepts a `RenewalStatement` signed by the key of the
//! current certificate (`certificate_chain[0]`), which must be issued by the
//! given CA and unexpired; the statement binds the request name, the new
//! CSR's hash, the signer name and the current certificate's hash, and must
//! be fresh. A renewal never widens what was approved, judged from the
//! current certificate alone: it must carry a [`Lineage`] naming the
//! request's signer name; the new CSR has its subject and SANs; every
//! requested usage is in its key usage or extended key usage (no EKU is
//! gained, also when it has none); and the requested lifetime is at most its
//! own (notAfter − notBefore). The caller applies the profile's renewal
//! horizon to [`RenewalProof::lineage`] and caps the new lifetime at
//! [`RenewalProof::lifetime`].
//!
//! The new CSR comes in as a [`RenewalInput`] that the caller read from a
//! request whose self-signature it verified; this module never parses a CSR
//! and never trusts a certificate it did not chain to the CA itself.

use std::time::{Duration, SystemTime};

use certsign_proto::v1::{CertificateSigningRequest, RenewalStatement, SignedStatement};
use rustls_pki_types::CertificateDer;

use crate::cert::serial_hex;
use crate::cert::{Identity, Sans, sha256};
use crate::lineage::Lineage;
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
    /// Its lineage (issuing profile, last human approval).
    pub lineage: Lineage,
    /// Its lifetime, notAfter − notBefore: the most a renewal may get.
    pub lifetime: Duration,
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
    let refuse = |m: String| Err(EvidenceError::Renewal(m));
    let Some(lineage) = Lineage::of_certificate(&cert)? else {
        return refuse("the current certificate carries no lineage (which profile issued it, when it was approved), so it cannot be renewed: create a new request and have it approved".into());
    };
    if lineage.signer_name != spec.signer_name {
        return refuse(format!(
            "the current certificate was issued under signer name {:?}, not {:?}; a renewal keeps its profile",
            lineage.signer_name, spec.signer_name
        ));
    }
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
    // Usages: a subset of the current key usage and extended key usage.
    let have = Usage::of_certificate(&cert);
    for word in &spec.usages {
        let Some(u) = Usage::parse(word).map(Usage::canonical) else {
            return refuse(format!("unknown usage {word:?}"));
        };
        let eku = !u.is_key_usage();
        let granted = have.contains(&u) || (eku && have.contains(&Usage::Any));
        if !granted {
            let what = if eku {
                "extended key usages"
            } else {
                "key usage"
            };
            return refuse(format!(
                "usage {word:?} is not in the current certificate's {what}; a renewal never gains a usage"
            ));
        }
    }
    let v = cert.validity();
    let lifetime = Duration::from_secs(
        u64::try_from(v.not_after.timestamp() - v.not_before.timestamp()).unwrap_or(0),
    );
    if let Some(s) = spec.expiration_seconds
        && u64::try_from(s).unwrap_or(0) > lifetime.as_secs()
    {
        return refuse(format!(
            "expiration_seconds {s} exceeds the current certificate's lifetime ({}s); a renewal never lengthens what was approved",
            lifetime.as_secs()
        ));
    }
    Ok(RenewalProof {
        identity: identity_of(&cert)?,
        serial: serial_hex(cert.raw_serial()),
        lineage,
        lifetime,
    })
}

//! Revocation statements: an admin or the holder gives a certificate up.
//!
//! [`verify_revocation`] accepts a `RevocationStatement` whose signature over
//! `"certsign.v1.RevocationStatement" || 0x00 || statement` verifies with the
//! key of `certificate_chain[0]`, about a certificate that is issued by the
//! given CA itself (no intermediates) and unexpired (an expired certificate
//! is valid nowhere and needs no revocation), bound by its serial number and
//! SHA-256, with an RFC 5280 reason this system knows and a fresh
//! `signed_at`. The statement is signed either
//! - by the holder: `certificate_chain[0]` is the revoked certificate itself,
//!   or
//! - by one admin: `certificate_chain` chains to the [`ApprovalTrust`] (now
//!   and at `signed_at`) and the admin is in a group allowed for the revoked
//!   certificate's signer name, read from its lineage extension. A
//!   certificate without lineage names no profile: fail closed, only an
//!   admin in a group that every profile allows may revoke it.
//!
//! It must never decode a statement before its signature verified, never
//! read lineage from a certificate whose CA signature it did not verify, and
//! never invent groups: the caller lists each profile's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certsign_proto::v1::{RevocationReason, RevocationStatement, SignedStatement};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::approval::ApprovalTrust;
use crate::cert::{Identity, serial_hex, sha256};
use crate::lineage::Lineage;
use crate::statement::{
    EvidenceError, REVOCATION_CONTEXT, bound, check_fresh, identity_of, open, to_system_time,
    verify_chain_to,
};

/// Who signed a verified revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokedBy {
    /// The holder, with the revoked certificate's own key.
    Holder,
    /// An admin allowed for the certificate's signer name.
    Admin(Identity),
}

/// "holder" or "admin NAME", as journals record it.
impl std::fmt::Display for RevokedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Holder => f.write_str("holder"),
            Self::Admin(id) => write!(f, "admin {}", id.username),
        }
    }
}

/// What a verified revocation proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationProof {
    /// The revoked certificate's serial number, lowercase hex without
    /// leading zero bytes.
    pub serial: String,
    /// The RFC 5280 reason.
    pub reason: RevocationReason,
    /// Who signed the statement.
    pub by: RevokedBy,
    /// The issuing profile from the certificate's lineage, if it has one.
    pub signer_name: Option<String>,
    /// The revoked certificate's notAfter.
    pub not_after: SystemTime,
}

fn refuse(msg: String) -> EvidenceError {
    EvidenceError::Revocation(msg)
}

/// Groups whose admins may revoke a certificate of `signer_name`: that
/// profile's groups; for a certificate without lineage (`None`), only the
/// groups every profile allows; for an unknown signer name, none.
pub fn revoking_groups(profiles: &[(&str, &[String])], signer_name: Option<&str>) -> Vec<String> {
    let mut of = (profiles.iter())
        .filter(|(n, _)| signer_name.is_none_or(|s| s == *n))
        .map(|(_, groups)| *groups);
    let first = of.next().unwrap_or_default();
    let rest: Vec<_> = of.collect();
    let everywhere = |g: &&String| rest.iter().all(|r| r.contains(g));
    first.iter().filter(everywhere).cloned().collect()
}

/// Verify a revocation (see the module header). `profiles` lists each
/// signer name with the groups whose admins may revoke its certificates
/// (the signer passes every profile's approver groups; see
/// [`revoking_groups`]).
pub fn verify_revocation(
    signed: &SignedStatement,
    certificate_der: &[u8],
    issuing_ca_der: &[u8],
    trust: &ApprovalTrust,
    profiles: &[(&str, &[String])],
    max_age: Duration,
    now: SystemTime,
) -> Result<RevocationProof, EvidenceError> {
    let (leaf, signer_cert, st) = open::<RevocationStatement>(signed, REVOCATION_CONTEXT)?;
    let cert = match X509Certificate::from_der(certificate_der) {
        Ok(([], cert)) => cert,
        Ok(_) => {
            return Err(refuse(
                "revocation.certificate: trailing bytes after the DER certificate".into(),
            ));
        }
        Err(e) => {
            return Err(refuse(format!(
                "revocation.certificate does not parse: {e}"
            )));
        }
    };
    let not_after = cert.validity().not_after;
    let not_after =
        UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after.timestamp()).unwrap_or(0));
    if not_after < now {
        return Err(refuse(format!(
            "revocation.certificate expired at {}: an expired certificate is valid nowhere and needs no revocation",
            cert.validity().not_after
        )));
    }
    // Only the issuing CA itself, no intermediates: the certificate must be ours.
    let root = [CertificateDer::from(issuing_ca_der.to_vec())];
    verify_chain_to(&root, &[certificate_der.to_vec()], now, "now").map_err(|e| {
        refuse(format!(
            "revocation.certificate is not a valid certificate issued by this CA ({e})"
        ))
    })?;
    let serial = serial_hex(cert.raw_serial());
    bound(&[
        ("serial_number", st.serial_number == serial),
        (
            "certificate_sha256",
            st.certificate_sha256 == sha256(certificate_der),
        ),
    ])?;
    let reason = RevocationReason::try_from(st.reason).map_err(|_| {
        refuse(format!(
            "reason {} is not an RFC 5280 reason this signer records (0-5, 9)",
            st.reason
        ))
    })?;
    let signed_at = to_system_time(st.signed_at.as_ref())?;
    check_fresh(signed_at, max_age, now)?;
    // Lineage is read only from the CA-verified certificate.
    let signer_name = Lineage::of_certificate(&cert)?.map(|l| l.signer_name);
    let by = if leaf.as_slice() == certificate_der {
        RevokedBy::Holder
    } else {
        trust.verify_chain(&signed.certificate_chain, now, "now")?;
        trust.verify_chain(&signed.certificate_chain, signed_at, "at signed_at")?;
        let id = identity_of(&signer_cert)?;
        let allowed = revoking_groups(profiles, signer_name.as_deref());
        if !id.groups.iter().any(|g| allowed.contains(g)) {
            let of = match &signer_name {
                Some(n) => format!("of signer name {n:?}"),
                None => "without lineage (groups allowed for every profile)".into(),
            };
            return Err(refuse(format!(
                "admin {:?} (groups {:?}) is in no group allowed to revoke certificates {of} (allowed: {allowed:?})",
                id.username, id.groups
            )));
        }
        RevokedBy::Admin(id)
    };
    Ok(RevocationProof {
        serial,
        reason,
        by,
        signer_name,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoking_groups_are_the_profiles_and_without_lineage_only_those_every_profile_allows() {
        let (masters, ops) = (String::from("system:masters"), String::from("ops"));
        let both = [masters.clone(), ops.clone()];
        let one = [masters.clone()];
        let profiles = [("a.example/x", &both[..]), ("b.example/y", &one[..])];
        assert_eq!(revoking_groups(&profiles, Some("a.example/x")), both);
        assert_eq!(revoking_groups(&profiles, Some("b.example/y")), one);
        assert!(revoking_groups(&profiles, Some("c.example/z")).is_empty());
        assert_eq!(revoking_groups(&profiles, None), one);
        assert!(revoking_groups(&[], None).is_empty());
        assert!(revoking_groups(&[("a.example/x", &[][..])], None).is_empty());
        assert_eq!(serial_hex(&[0, 0x80, 1]), "8001");
        assert_eq!(serial_hex(&[0]), "00");
    }
}

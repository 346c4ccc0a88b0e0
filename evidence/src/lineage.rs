//! The renewal lineage: what every certificate this CA issues says about
//! where it came from, so that a renewal can be judged from the current
//! certificate alone (any signer replica can read it, with no journal).
//!
//! A non-critical extension ([`LINEAGE_OID`]) holding
//!
//! ```text
//! CertsignLineage ::= SEQUENCE {
//!     signerName  UTF8String,        -- the profile that issued it
//!     approvedAt  GeneralizedTime }  -- when a human last approved this line
//! ```
//!
//! encoded and decoded with the `der` crate (strict DER both ways). The
//! signer writes it; the signer, the approver and certctl read it. It is
//! trustworthy only inside a certificate whose CA signature was verified:
//! this module never checks signatures and must never be used on its own
//! to grant anything.

use std::time::SystemTime;

use der::asn1::GeneralizedTime;
use der::{Decode, Encode, Sequence};
use x509_parser::prelude::X509Certificate;

use crate::statement::EvidenceError;

/// certsign's OID arc. A PLACEHOLDER under RFC 5612's documentation
/// enterprise number until the project has its own IANA Private Enterprise
/// Number: the registration-free 2.25.<UUID> arc (ITU-T X.667) has a
/// 128-bit arc, and pkilint's DER decoder (pyasn1-fasder) cannot load a
/// certificate with an arc above 32 bits at all, so no issued certificate
/// could be linted. Every arc here stays below 2^28.
pub const CERTSIGN_ARC: &str = "1.3.6.1.4.1.32473.1";
/// The lineage extension: `CERTSIGN_ARC`.1.
pub const LINEAGE_OID: &str = "1.3.6.1.4.1.32473.1.1";

/// Where a certificate came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// The signer name (profile) that issued it; a renewal keeps it.
    pub signer_name: String,
    /// When a human (or the console operator) approved the request this
    /// line of renewals began with; renewals copy it, never move it.
    pub approved_at: SystemTime,
}

#[derive(Sequence)]
struct LineageDer {
    signer_name: String,
    approved_at: GeneralizedTime,
}

impl Lineage {
    /// The extension value (DER of `CertsignLineage`).
    pub fn to_der(&self) -> Result<Vec<u8>, EvidenceError> {
        let approved_at = GeneralizedTime::from_system_time(self.approved_at)
            .map_err(|e| EvidenceError::Malformed(format!("lineage approvedAt: {e}")))?;
        LineageDer {
            signer_name: self.signer_name.clone(),
            approved_at,
        }
        .to_der()
        .map_err(|e| EvidenceError::Malformed(format!("lineage: {e}")))
    }

    /// Decode an extension value; anything but strict DER is refused.
    pub fn from_der(value: &[u8]) -> Result<Self, EvidenceError> {
        let l = LineageDer::from_der(value)
            .map_err(|e| EvidenceError::Malformed(format!("lineage extension: {e}")))?;
        Ok(Self {
            signer_name: l.signer_name,
            approved_at: l.approved_at.to_system_time(),
        })
    }

    /// The lineage of a (CA-verified) certificate; `None` when it has no
    /// lineage extension, an error when it has two or a malformed one.
    pub fn of_certificate(cert: &X509Certificate<'_>) -> Result<Option<Self>, EvidenceError> {
        let mut found = cert
            .extensions()
            .iter()
            .filter(|e| e.oid.to_id_string() == LINEAGE_OID);
        let Some(ext) = found.next() else {
            return Ok(None);
        };
        if found.next().is_some() {
            return Err(EvidenceError::Malformed(
                "lineage extension: present more than once".into(),
            ));
        }
        Self::from_der(ext.value).map(Some)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn lineage_round_trips_through_der_and_refuses_trailing_bytes() {
        let l = Lineage {
            signer_name: "certsign.io/identity".into(),
            approved_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        let der = l.to_der().unwrap();
        assert_eq!(Lineage::from_der(&der).unwrap(), l);
        let mut longer = der.clone();
        longer.push(0);
        assert!(Lineage::from_der(&longer).is_err());
        assert!(Lineage::from_der(&der[..der.len() - 1]).is_err());
    }
}

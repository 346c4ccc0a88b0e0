//! What a revocation names: RFC 5280 reason words, serial numbers as the
//! signer writes them (lowercase hex, leading zero bytes dropped), and the
//! `RevocationStatement` for one certificate.
//!
//! Pure functions: this module never signs (see [`crate::evidence`]), never
//! reads files and never talks to the network.

use std::time::SystemTime;

use anyhow::{Result, anyhow, bail};
use certsign_proto::v1 as pb;
use x509_parser::prelude::{FromDer, X509Certificate};

/// RFC 5280's reason words this deployment accepts, in RFC spelling, with
/// their codes. certificateHold and removeFromCRL do not exist here (a
/// revocation is final), nor aACompromise (attribute authorities only).
pub const REASONS: &[(&str, pb::RevocationReason)] = &[
    ("unspecified", pb::RevocationReason::Unspecified),
    ("keyCompromise", pb::RevocationReason::KeyCompromise),
    ("cACompromise", pb::RevocationReason::CaCompromise),
    (
        "affiliationChanged",
        pb::RevocationReason::AffiliationChanged,
    ),
    ("superseded", pb::RevocationReason::Superseded),
    (
        "cessationOfOperation",
        pb::RevocationReason::CessationOfOperation,
    ),
    (
        "privilegeWithdrawn",
        pb::RevocationReason::PrivilegeWithdrawn,
    ),
];

/// `--reason`: an RFC 5280 word, case-insensitive (so `caCompromise` too);
/// none means unspecified.
pub fn parse_reason(text: Option<&str>) -> Result<pb::RevocationReason> {
    let Some(text) = text else {
        return Ok(pb::RevocationReason::Unspecified);
    };
    let t = text.trim();
    REASONS
        .iter()
        .find(|(word, _)| word.eq_ignore_ascii_case(t))
        .map(|(_, r)| *r)
        .ok_or_else(|| {
            let allowed: Vec<&str> = REASONS.iter().map(|(w, _)| *w).collect();
            anyhow!(
                "invalid --reason {text:?}: must be one of {}",
                allowed.join(", ")
            )
        })
}

/// The RFC 5280 word of a reason code (`unspecified` for an unknown one).
pub fn reason_word(code: i32) -> &'static str {
    REASONS
        .iter()
        .find(|(_, r)| *r as i32 == code)
        .map(|(w, _)| *w)
        .unwrap_or("unspecified")
}

/// Big-endian serial bytes as the signer writes them (one definition, in
/// the evidence crate).
pub use certsign_evidence::serial_hex;

/// `--serial`: hex, upper or lower case, with optional `0x` and `:`
/// separators (as openssl prints serials), in the signer's spelling.
pub fn normalize_serial(text: &str) -> Result<String> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let digits: String = t.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("invalid --serial {text:?}: must be a hexadecimal serial number");
    }
    // 20 octets is RFC 5280's limit for a serial number.
    if digits.len() > 42 {
        bail!("invalid --serial {text:?}: longer than 20 octets (RFC 5280)");
    }
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    let bytes = hex::decode(padded.to_ascii_lowercase())
        .map_err(|e| anyhow!("invalid --serial {text:?}: {e}"))?;
    Ok(serial_hex(&bytes))
}

/// The serial number of a DER certificate, in the signer's spelling.
pub fn serial_of(cert_der: &[u8]) -> Result<String> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| anyhow!("cannot parse the certificate: {e}"))?;
    Ok(serial_hex(cert.raw_serial()))
}

/// The RevocationStatement for the DER certificate `cert_der`.
pub fn statement(
    cert_der: &[u8],
    reason: pb::RevocationReason,
    now: SystemTime,
) -> Result<pb::RevocationStatement> {
    Ok(pb::RevocationStatement {
        serial_number: serial_of(cert_der)?,
        certificate_sha256: certsign_evidence::sha256(cert_der).to_vec(),
        reason: reason as i32,
        signed_at: Some(now.into()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reasons_in_rfc_spelling_case_insensitive() {
        let r = |t: &str| parse_reason(Some(t)).unwrap();
        assert_eq!(r("keyCompromise"), pb::RevocationReason::KeyCompromise);
        assert_eq!(r("KEYCOMPROMISE"), pb::RevocationReason::KeyCompromise);
        assert_eq!(r("cACompromise"), pb::RevocationReason::CaCompromise);
        assert_eq!(r("caCompromise"), pb::RevocationReason::CaCompromise);
        assert_eq!(r("superseded"), pb::RevocationReason::Superseded);
        assert_eq!(
            r("cessationOfOperation"),
            pb::RevocationReason::CessationOfOperation
        );
        assert_eq!(
            r("affiliationchanged"),
            pb::RevocationReason::AffiliationChanged
        );
        assert_eq!(
            r("privilegeWithdrawn"),
            pb::RevocationReason::PrivilegeWithdrawn
        );
        assert_eq!(r("unspecified"), pb::RevocationReason::Unspecified);
        assert_eq!(
            parse_reason(None).unwrap(),
            pb::RevocationReason::Unspecified
        );
        // RFC 5280 numbers on the wire.
        assert_eq!(pb::RevocationReason::KeyCompromise as i32, 1);
        assert_eq!(pb::RevocationReason::PrivilegeWithdrawn as i32, 9);
        for bad in [
            "certificateHold",
            "removeFromCRL",
            "aACompromise",
            "key compromise",
            "1",
            "",
        ] {
            let e = parse_reason(Some(bad)).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "invalid --reason {bad:?}: must be one of unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn"
                )
            );
        }
        for (word, r) in REASONS {
            assert_eq!(reason_word(*r as i32), *word);
        }
    }

    #[test]
    fn serials_in_the_signers_spelling() {
        assert_eq!(normalize_serial("7F:0a:0B").unwrap(), "7f0a0b");
        assert_eq!(normalize_serial("0x00ff").unwrap(), "ff");
        assert_eq!(normalize_serial("abc").unwrap(), "0abc");
        assert_eq!(normalize_serial("00").unwrap(), "00");
        for bad in ["", "xyz", "0x", "12 34", &"a".repeat(43)] {
            assert!(normalize_serial(bad).is_err(), "{bad:?}");
        }
        assert_eq!(serial_hex(&[0, 0, 0x12, 0x34]), "1234");
        assert_eq!(serial_hex(&[0]), "00");
    }
}

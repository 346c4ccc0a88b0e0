//! Certificate construction: `VerifiedCsr` + profile decision → `PreparedCert`
//! → `IssuedCert` (signed by `CaKey`).
//!
//! The TBSCertificate is written here in DER rather than through rcgen's
//! `CertificateParams`, because rcgen's `DistinguishedName` is a map and
//! cannot carry a subject with several O values (Kubernetes groups); we copy
//! the CSR's subject Name and SubjectPublicKeyInfo byte for byte and write
//! every extension ourselves. Nothing the CSR requested is copied except the
//! checked SANs. This module must never emit CA:TRUE: basicConstraints is
//! always the critical, empty sequence (CA:FALSE).
//!
//! Key usage: keyEncipherment is set only for RSA keys. EC and Ed25519 keys
//! cannot encipher keys (RSA key transport), so a requested "key
//! encipherment" is dropped for them, as Kubernetes' own kubelet does for
//! ECDSA since 1.27.
//!
//! Validity follows Kubernetes (kubernetes-csr-api.md §3.3/§3.4): ttl =
//! requested (or the profile default) capped at the profile maximum, floored
//! at 10 minutes; notBefore = now − 5 min; notAfter = now + ttl when ttl <
//! 8 h, else now + ttl − 5 min; capped at the CA's notAfter.

use std::time::Duration;

use time::OffsetDateTime;

use crate::ca_key::{CaKey, pem_cert};
use crate::csr::{self, VerifiedCsr};
use crate::profile::{Profile, Usage};

const BACKDATE: Duration = Duration::from_secs(300);
const SHORT: Duration = Duration::from_secs(8 * 3600);
const MIN_TTL: Duration = Duration::from_secs(600);

/// Why a certificate could not be built or signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssueError {
    /// The CA has expired (Kubernetes' texts).
    #[error("{0}")]
    CaExpired(String),
    /// The CA key failed to sign.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A certificate ready to be signed. Only [`prepare`] makes one.
#[derive(Debug)]
pub struct PreparedCert {
    tbs: Vec<u8>,
    serial: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

/// A signed certificate.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The certificate then the CA certificate, PEM.
    pub pem_chain: String,
    /// Serial, lowercase hex.
    pub serial_hex: String,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
}

/// The validity window (see the module header).
pub fn validity(
    profile: &Profile,
    requested_secs: Option<i32>,
    now: OffsetDateTime,
    ca_not_after: OffsetDateTime,
) -> Result<(OffsetDateTime, OffsetDateTime), IssueError> {
    let requested =
        requested_secs.map(|s| Duration::from_secs(u64::try_from(s.max(0)).unwrap_or(0)));
    let ttl = requested
        .map_or(profile.default_lifetime, |r| r.min(profile.max_lifetime))
        .max(MIN_TTL);
    let not_before = now - BACKDATE;
    let mut not_after = if ttl < SHORT {
        now + ttl
    } else {
        now + ttl - BACKDATE
    };
    if not_before >= ca_not_after {
        return Err(IssueError::CaExpired(format!(
            "the signer has expired: NotAfter={ca_not_after}"
        )));
    }
    if now >= ca_not_after {
        return Err(IssueError::CaExpired(format!(
            "refusing to sign a certificate that expired in the past: NotAfter={ca_not_after}"
        )));
    }
    if not_after > ca_not_after {
        not_after = ca_not_after;
    }
    Ok((not_before, not_after))
}

/// Build the TBSCertificate for `csr` with `usages`, valid `window`.
/// `serial` is 16 random bytes; the top bit is cleared so it is positive.
pub fn prepare(
    ca: &CaKey,
    csr: &VerifiedCsr,
    usages: &[Usage],
    window: (OffsetDateTime, OffsetDateTime),
    mut serial: [u8; 16],
) -> PreparedCert {
    serial[0] &= 0x7f;
    let mut exts = Vec::new();
    // basicConstraints, critical, CA:FALSE (cA DEFAULT FALSE is omitted in DER).
    exts.push(extension(OID_BC, true, &tlv(0x30, &[])));
    if let Some(ku) = key_usage(usages, csr.key().can_encipher_keys()) {
        exts.push(extension(OID_KU, true, &ku));
    }
    let mut ekus: Vec<&[u8]> = Vec::new();
    let mut sorted = usages.to_vec();
    sorted.sort();
    for u in sorted {
        if let Some(oid) = eku_oid(u)
            && !ekus.contains(&oid)
        {
            ekus.push(oid);
        }
    }
    if !ekus.is_empty() {
        exts.push(extension(OID_EKU, false, &tlv(0x30, &ekus.concat())));
    }
    if !csr.sans.is_empty() {
        let mut names = Vec::new();
        for d in &csr.sans.dns {
            names.extend(tlv(0x82, d.as_bytes()));
        }
        for e in &csr.sans.emails {
            names.extend(tlv(0x81, e.as_bytes()));
        }
        for u in &csr.sans.uris {
            names.extend(tlv(0x86, u.as_bytes()));
        }
        for ip in &csr.sans.ips {
            let bytes = match ip {
                std::net::IpAddr::V4(a) => a.octets().to_vec(),
                std::net::IpAddr::V6(a) => a.octets().to_vec(),
            };
            names.extend(tlv(0x87, &bytes));
        }
        // RFC 5280: with an empty subject the SAN extension must be critical.
        let empty_subject = csr.subject_der().len() <= 2;
        exts.push(extension(OID_SAN, empty_subject, &tlv(0x30, &names)));
    }
    // SKI: first 160 bits of SHA-256 of the SubjectPublicKeyInfo.
    let ski = csr::sha256(csr.spki_der());
    exts.push(extension(OID_SKI, false, &tlv(0x04, &ski[..20])));
    exts.push(extension(OID_AKI, false, &tlv(0x30, &tlv(0x80, ca.ski()))));

    let serial_int = integer(&serial);
    let tbs = tlv(
        0x30,
        &[
            &[0xa0, 0x03, 0x02, 0x01, 0x02][..], // [0] EXPLICIT version v3
            &serial_int,
            ca.sig_alg(),
            ca.subject_der(),
            &tlv(0x30, &[time_der(window.0), time_der(window.1)].concat()),
            csr.subject_der(),
            csr.spki_der(),
            &tlv(0xa3, &tlv(0x30, &exts.concat())),
        ]
        .concat(),
    );
    PreparedCert {
        tbs,
        serial: serial.to_vec(),
        not_before: window.0,
        not_after: window.1,
    }
}

impl CaKey {
    /// Sign a prepared certificate (consumes it: one preparation, one signature).
    pub fn sign(&self, p: PreparedCert) -> Result<IssuedCert, IssueError> {
        let sig = self
            .sign_raw(&p.tbs)
            .map_err(|e| IssueError::Sign(e.to_string()))?;
        let mut bits = vec![0u8];
        bits.extend(sig);
        let der = tlv(
            0x30,
            &[p.tbs.as_slice(), self.sig_alg(), &tlv(0x03, &bits)].concat(),
        );
        let pem_chain = format!("{}{}", pem_cert(&der), self.cert_pem());
        let serial_hex = hex::encode(strip_zeros(&p.serial));
        Ok(IssuedCert {
            der,
            pem_chain,
            serial_hex,
            not_before: p.not_before,
            not_after: p.not_after,
        })
    }
}

// === DER helpers ===

const OID_BC: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x13];
const OID_KU: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x0f];
const OID_EKU: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x25];
const OID_SAN: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x11];
const OID_SKI: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x0e];
const OID_AKI: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x23];

fn eku_oid(u: Usage) -> Option<&'static [u8]> {
    use Usage::*;
    const KP: [u8; 9] = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03];
    const fn kp(n: u8) -> [u8; 10] {
        [
            KP[0], KP[1], KP[2], KP[3], KP[4], KP[5], KP[6], KP[7], KP[8], n,
        ]
    }
    const SERVER: [u8; 10] = kp(1);
    const CLIENT: [u8; 10] = kp(2);
    const CODE: [u8; 10] = kp(3);
    const EMAIL: [u8; 10] = kp(4);
    const IPSEC_ES: [u8; 10] = kp(5);
    const IPSEC_TUN: [u8; 10] = kp(6);
    const IPSEC_USER: [u8; 10] = kp(7);
    const TIMESTAMP: [u8; 10] = kp(8);
    const OCSP: [u8; 10] = kp(9);
    Some(match u {
        Any => &[0x06, 0x04, 0x55, 0x1d, 0x25, 0x00],
        ServerAuth => &SERVER,
        ClientAuth => &CLIENT,
        CodeSigning => &CODE,
        EmailProtection | SMime => &EMAIL,
        IpsecEndSystem => &IPSEC_ES,
        IpsecTunnel => &IPSEC_TUN,
        IpsecUser => &IPSEC_USER,
        Timestamping => &TIMESTAMP,
        OcspSigning => &OCSP,
        MicrosoftSgc => &[
            0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x0a, 0x03, 0x03,
        ],
        NetscapeSgc => &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x86, 0xf8, 0x42, 0x04, 0x01,
        ],
        _ => return None,
    })
}

/// keyUsage value (a DER BIT STRING), or None when no bit is set.
fn key_usage(usages: &[Usage], rsa: bool) -> Option<Vec<u8>> {
    use Usage::*;
    let mut bits: u16 = 0;
    for u in usages {
        let bit = match u {
            Signing | DigitalSignature => 0,
            ContentCommitment => 1,
            KeyEncipherment if rsa => 2,
            DataEncipherment => 3,
            KeyAgreement => 4,
            EncipherOnly => 7,
            DecipherOnly => 8,
            _ => continue,
        };
        bits |= 0x8000 >> bit;
    }
    if bits == 0 {
        return None;
    }
    // DER named bit list: drop trailing zero bits.
    let used = 16 - bits.trailing_zeros() as usize;
    let bytes = bits.to_be_bytes();
    let len = used.div_ceil(8);
    let mut v = vec![u8::try_from(len * 8 - used).unwrap_or(0)];
    v.extend_from_slice(&bytes[..len]);
    Some(tlv(0x03, &v))
}

fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let crit: &[u8] = if critical { &[0x01, 0x01, 0xff] } else { &[] };
    tlv(0x30, &[oid, crit, &tlv(0x04, value)].concat())
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .take_while(|x| **x == 0)
        .count()
        .min(b.len().saturating_sub(1));
    &b[n..]
}

/// DER INTEGER from non-negative big-endian bytes.
pub(crate) fn integer(b: &[u8]) -> Vec<u8> {
    let b = strip_zeros(b);
    let mut v = Vec::with_capacity(b.len() + 1);
    if b.first().is_some_and(|x| x & 0x80 != 0) {
        v.push(0);
    }
    v.extend_from_slice(b);
    tlv(0x02, &v)
}

/// UTCTime before 2050, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
fn time_der(t: OffsetDateTime) -> Vec<u8> {
    let t = t.to_offset(time::UtcOffset::UTC);
    let rest = format!(
        "{:02}{:02}{:02}{:02}{:02}Z",
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if t.year() < 2050 {
        tlv(0x17, format!("{:02}{rest}", t.year() % 100).as_bytes())
    } else {
        tlv(0x18, format!("{:04}{rest}", t.year()).as_bytes())
    }
}

/// One DER TLV.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut v = Vec::with_capacity(len + 6);
    v.push(tag);
    if len < 0x80 {
        v.push(len as u8);
    } else {
        let lb = len.to_be_bytes();
        let lb = strip_zeros(&lb);
        v.push(0x80 | lb.len() as u8);
        v.extend_from_slice(lb);
    }
    v.extend_from_slice(content);
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::profile::{ApprovalMode, Builtin, Rules};

    fn profile(max_h: u64) -> Profile {
        Profile {
            signer_name: "kubernetes.io/kube-apiserver-client".into(),
            rules: Rules::Builtin(Builtin::KubeApiserverClient),
            approval: ApprovalMode::Signed,
            required_approvals: 1,
            approver_groups: vec!["g".into()],
            allow_renewal: false,
            max_lifetime: Duration::from_secs(max_h * 3600),
            default_lifetime: Duration::from_secs(max_h * 3600),
        }
    }

    #[test]
    fn validity_follows_kubernetes() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let far = now + time::Duration::days(3650);
        let m = time::Duration::minutes;
        // Short (< 8h): full requested lifetime after now; backdated 5 minutes.
        assert_eq!(
            validity(&profile(24), Some(3600), now, far).unwrap(),
            (now - m(5), now + m(60))
        );
        // Floor at 10 minutes is the API minimum; below it is clamped here too.
        assert_eq!(
            validity(&profile(24), Some(60), now, far).unwrap().1,
            now + m(10)
        );
        // Long: total validity = ttl; capped by the profile maximum.
        assert_eq!(
            validity(&profile(24), Some(7 * 86400), now, far).unwrap().1,
            now + m(24 * 60 - 5)
        );
        assert_eq!(
            validity(&profile(24), None, now, far).unwrap().1,
            now + m(24 * 60 - 5)
        );
        // Capped by the CA's expiry; refused once the CA has expired.
        assert_eq!(
            validity(&profile(24), None, now, now + m(30)).unwrap().1,
            now + m(30)
        );
        let e = validity(&profile(24), None, now, now - m(1))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("refusing to sign a certificate that expired in the past"),
            "{e}"
        );
        let e = validity(&profile(24), None, now, now - m(10))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the signer has expired"), "{e}");
    }

    #[test]
    fn der_helpers_are_minimal() {
        assert_eq!(integer(&[0, 0, 0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer(&[0, 0x7f]), vec![0x02, 0x01, 0x7f]);
        assert_eq!(tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        // digitalSignature only: one byte, 7 unused bits.
        assert_eq!(
            key_usage(&[Usage::DigitalSignature], false).unwrap(),
            vec![0x03, 0x02, 0x07, 0x80]
        );
        // keyEncipherment is dropped for non-RSA keys.
        assert_eq!(key_usage(&[Usage::KeyEncipherment], false), None);
        assert_eq!(
            key_usage(&[Usage::DigitalSignature, Usage::KeyEncipherment], true).unwrap(),
            vec![0x03, 0x02, 0x05, 0xa0]
        );
    }
}

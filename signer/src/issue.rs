//! Certificate construction: `VerifiedCsr` + profile decision → `PreparedCert`
//! → `IssuedCert` (signed by the CA key through `certsign-keys`).
//!
//! The certificate is built with RustCrypto's x509-cert builder: the subject
//! is the CSR's subject Name decoded and re-encoded unchanged (so several O
//! values, Kubernetes groups, survive), the SubjectPublicKeyInfo is the
//! CSR's, and every extension is an x509-cert extension type. Nothing the
//! CSR requested is copied except the checked SANs. This module must never
//! emit CA:TRUE: basicConstraints is always critical and CA:FALSE.
//!
//! Key usage: keyEncipherment is set only for RSA keys. EC and Ed25519 keys
//! cannot encipher keys (RSA key transport), so a requested "key
//! encipherment" is dropped for them, as Kubernetes' own kubelet does for
//! ECDSA since 1.27.
//!
//! Every certificate carries its lineage (`certsign_evidence::lineage`, a
//! non-critical extension: the issuing profile and when a human last
//! approved this line of renewals), which renewals are judged by, and the
//! profile's CRL distribution point when it names one.
//!
//! Validity follows Kubernetes (kubernetes-csr-api.md §3.3/§3.4): ttl =
//! requested (or the profile default) capped at the profile maximum, floored
//! at 10 minutes; notBefore = now − 5 min; notAfter = now + ttl when ttl <
//! 8 h, else now + ttl − 5 min; capped at the CA's notAfter. A renewal asks
//! for the current certificate's lifetime unless it names a shorter one, and
//! its notAfter − notBefore never exceeds that lifetime.

use std::time::{Duration, SystemTime};

use certsign_evidence::{LINEAGE_OID, Lineage};
use certsign_keys::CaKey;
use der::asn1::{Ia5String, OctetString};
use der::{Decode, Encode};
use spki::{ObjectIdentifier, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use time::OffsetDateTime;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::DistributionPointName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, CrlDistributionPoints, ExtendedKeyUsage, KeyUsage,
    KeyUsages, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use crate::csr;
use crate::ids::Serial;
use crate::profile::{Checked, Profile, Usage};

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
    /// A field could not be encoded (e.g. a non-ASCII name in an IA5String).
    #[error("encoding the certificate: {0}")]
    Encode(String),
    /// The CA key failed to sign.
    #[error("signing failed: {0}")]
    Sign(String),
}

fn encode(e: impl std::fmt::Display) -> IssueError {
    IssueError::Encode(e.to_string())
}

/// The issuer, subject and extensions of one leaf certificate.
struct Leaf {
    issuer: Name,
    subject: Name,
}

impl BuilderProfile for Leaf {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        // Every extension is added explicitly by `prepare`.
        Ok(Vec::new())
    }
}

/// A certificate ready to be signed. Only [`prepare`] makes one.
pub struct PreparedCert {
    builder: CertificateBuilder<Leaf>,
    serial: Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for PreparedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCert")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// A signed certificate.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The certificate then the CA certificate, PEM.
    pub pem_chain: String,
    /// Serial.
    pub serial: Serial,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
}

/// The validity window (see the module header); `renewal` is the current
/// certificate's lifetime when renewing.
pub fn validity(
    profile: &Profile,
    requested_secs: Option<i32>,
    renewal: Option<Duration>,
    now: OffsetDateTime,
    ca_not_after: OffsetDateTime,
) -> Result<(OffsetDateTime, OffsetDateTime), IssueError> {
    let requested = requested_secs
        .map(|s| Duration::from_secs(u64::try_from(s.max(0)).unwrap_or(0)))
        .or(renewal);
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
    if let Some(cap) = renewal {
        not_after = not_after.min(not_before + cap);
    }
    Ok((not_before, not_after.min(ca_not_after)))
}

/// Whole seconds (X.509 times carry no fractions).
fn x509_time(t: OffsetDateTime) -> Result<Time, IssueError> {
    let secs = u64::try_from(t.unix_timestamp()).map_err(encode)?;
    Time::try_from(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).map_err(encode)
}

/// Build the certificate for a checked request under `profile`, approved
/// by a human at `approved_at`, valid `window`, with `serial` (16 random
/// bytes; the top bit is cleared so it is positive).
pub fn prepare(
    ca: &CaKey,
    checked: Checked<'_>,
    profile: &Profile,
    approved_at: SystemTime,
    window: (OffsetDateTime, OffsetDateTime),
    mut serial: [u8; 16],
) -> Result<PreparedCert, IssueError> {
    let (csr, usages) = (checked.csr(), checked.usages());
    serial[0] &= 0x7f;
    let subject = Name::from_der(csr.subject_der()).map_err(encode)?;
    let empty_subject = subject.is_empty();
    let leaf = Leaf {
        issuer: ca.subject().clone(),
        subject,
    };
    let validity = Validity::new(x509_time(window.0)?, x509_time(window.1)?);
    let spki = SubjectPublicKeyInfoOwned::from_der(csr.spki_der()).map_err(encode)?;
    let serial_number = SerialNumber::new(&serial).map_err(encode)?;
    let serial = Serial::from_bytes(serial_number.as_bytes());
    let mut b = CertificateBuilder::new(leaf, serial_number, validity, spki).map_err(encode)?;
    let mut add = |ext: Result<Extension, der::Error>| -> Result<(), IssueError> {
        b.add_extension(ext.map_err(encode)?).map_err(encode)
    };
    let (none, no) = (&Name::default(), &[][..]);
    add((
        true,
        &BasicConstraints {
            ca: false,
            path_len_constraint: None,
        },
    )
        .to_extension(none, no))?;
    if let Some(ku) = key_usage(usages, csr.key().can_encipher_keys()) {
        add((true, &ku).to_extension(none, no))?;
    }
    let mut ekus: Vec<ObjectIdentifier> = Vec::new();
    let mut sorted = usages.to_vec();
    sorted.sort();
    for oid in sorted.into_iter().filter_map(eku_oid) {
        if !ekus.contains(&oid) {
            ekus.push(oid);
        }
    }
    if !ekus.is_empty() {
        add((false, &ExtendedKeyUsage(ekus)).to_extension(none, no))?;
    }
    if !csr.sans.is_empty() {
        let ia5 = |s: &String| Ia5String::new(s).map_err(encode);
        let mut names = Vec::new();
        for d in &csr.sans.dns {
            names.push(GeneralName::DnsName(ia5(d)?));
        }
        for e in &csr.sans.emails {
            names.push(GeneralName::Rfc822Name(ia5(e)?));
        }
        for u in &csr.sans.uris {
            names.push(GeneralName::UniformResourceIdentifier(ia5(u)?));
        }
        names.extend(csr.sans.ips.iter().map(|ip| GeneralName::from(*ip)));
        // RFC 5280: with an empty subject the SAN extension must be critical.
        add((empty_subject, &SubjectAltName(names)).to_extension(none, no))?;
    }
    // SKI: first 160 bits of SHA-256 of the SubjectPublicKeyInfo.
    let ski = OctetString::new(&csr::sha256(csr.spki_der())[..20]).map_err(encode)?;
    add((false, &SubjectKeyIdentifier(ski)).to_extension(none, no))?;
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(ca.ski()).map_err(encode)?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    add((false, &aki).to_extension(none, no))?;
    if let Some(url) = &profile.crl_distribution_point {
        add((
            false,
            &CrlDistributionPoints(vec![DistributionPoint {
                distribution_point: Some(DistributionPointName::FullName(vec![
                    GeneralName::UniformResourceIdentifier(Ia5String::new(url).map_err(encode)?),
                ])),
                reasons: None,
                crl_issuer: None,
            }]),
        )
            .to_extension(none, no))?;
    }
    let lineage = Lineage {
        signer_name: profile.signer_name.clone(),
        approved_at,
    };
    add(Ok(Extension {
        extn_id: ObjectIdentifier::new(LINEAGE_OID).map_err(encode)?,
        critical: false,
        extn_value: OctetString::new(lineage.to_der().map_err(encode)?).map_err(encode)?,
    }))?;
    Ok(PreparedCert {
        builder: b,
        serial,
        not_before: window.0,
        not_after: window.1,
    })
}

/// Sign a prepared certificate (consumes it: one preparation, one signature).
pub fn sign(ca: &CaKey, mut p: PreparedCert) -> Result<IssuedCert, IssueError> {
    let tbs = p.builder.finalize(ca).map_err(encode)?;
    let sig = ca.sign(&tbs).map_err(|e| IssueError::Sign(e.to_string()))?;
    let cert = p
        .builder
        .assemble(sig.to_bitstring().map_err(encode)?, ca)
        .map_err(encode)?;
    let der = cert.to_der().map_err(encode)?;
    let pem = certsign_keys::pem("CERTIFICATE", &der).map_err(encode)?;
    Ok(IssuedCert {
        pem_chain: format!("{pem}{}", ca.cert_pem()),
        der,
        serial: p.serial,
        not_before: p.not_before,
        not_after: p.not_after,
    })
}

/// The extendedKeyUsage OID of a usage (None for keyUsage bits).
fn eku_oid(u: Usage) -> Option<ObjectIdentifier> {
    use Usage::*;
    let dotted = match u {
        Any => "2.5.29.37.0",
        ServerAuth => "1.3.6.1.5.5.7.3.1",
        ClientAuth => "1.3.6.1.5.5.7.3.2",
        CodeSigning => "1.3.6.1.5.5.7.3.3",
        EmailProtection | SMime => "1.3.6.1.5.5.7.3.4",
        IpsecEndSystem => "1.3.6.1.5.5.7.3.5",
        IpsecTunnel => "1.3.6.1.5.5.7.3.6",
        IpsecUser => "1.3.6.1.5.5.7.3.7",
        Timestamping => "1.3.6.1.5.5.7.3.8",
        OcspSigning => "1.3.6.1.5.5.7.3.9",
        MicrosoftSgc => "1.3.6.1.4.1.311.10.3.3",
        NetscapeSgc => "2.16.840.1.113730.4.1",
        _ => return None,
    };
    ObjectIdentifier::new(dotted).ok()
}

/// keyUsage, or None when no bit is set.
fn key_usage(usages: &[Usage], rsa: bool) -> Option<KeyUsage> {
    use Usage::*;
    let mut bits = der::flagset::FlagSet::<KeyUsages>::default();
    for u in usages {
        bits |= match u {
            Signing | DigitalSignature => KeyUsages::DigitalSignature,
            ContentCommitment => KeyUsages::NonRepudiation,
            KeyEncipherment if rsa => KeyUsages::KeyEncipherment,
            DataEncipherment => KeyUsages::DataEncipherment,
            KeyAgreement => KeyUsages::KeyAgreement,
            EncipherOnly => KeyUsages::EncipherOnly,
            DecipherOnly => KeyUsages::DecipherOnly,
            _ => continue,
        };
    }
    (!bits.is_empty()).then_some(KeyUsage(bits))
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
            renewal_horizon: None,
            crl_distribution_point: None,
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
            validity(&profile(24), Some(3600), None, now, far).unwrap(),
            (now - m(5), now + m(60))
        );
        // Floor at 10 minutes is the API minimum; below it is clamped here too.
        assert_eq!(
            validity(&profile(24), Some(60), None, now, far).unwrap().1,
            now + m(10)
        );
        // Long: total validity = ttl; capped by the profile maximum.
        assert_eq!(
            validity(&profile(24), Some(7 * 86400), None, now, far)
                .unwrap()
                .1,
            now + m(24 * 60 - 5)
        );
        assert_eq!(
            validity(&profile(24), None, None, now, far).unwrap().1,
            now + m(24 * 60 - 5)
        );
        // Capped by the CA's expiry; refused once the CA has expired.
        assert_eq!(
            validity(&profile(24), None, None, now, now + m(30))
                .unwrap()
                .1,
            now + m(30)
        );
        let e = validity(&profile(24), None, None, now, now - m(1))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("refusing to sign a certificate that expired in the past"),
            "{e}"
        );
        let e = validity(&profile(24), None, None, now, now - m(10))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the signer has expired"), "{e}");
        // A renewal gets the current lifetime, never the profile's, and
        // notAfter - notBefore never exceeds it (a 10-minute certificate
        // lasts 15 minutes with the backdate, and so does each renewal).
        let short = Some(Duration::from_secs(900));
        let w = validity(&profile(24), None, short, now, far).unwrap();
        assert_eq!(w, (now - m(5), now + m(10)));
        assert_eq!(
            validity(&profile(24), Some(900), short, now, far).unwrap(),
            w
        );
        let day = Some(Duration::from_secs(86_400));
        let w = validity(&profile(24 * 365), None, day, now, far).unwrap();
        assert_eq!(w.1 - w.0, time::Duration::days(1));
    }

    #[test]
    fn key_usage_bits_are_minimal_der() {
        let der = |ku: Option<KeyUsage>| ku.unwrap().to_der().unwrap();
        // digitalSignature only: one byte, 7 unused bits.
        assert_eq!(
            der(key_usage(&[Usage::DigitalSignature], false)),
            vec![0x03, 0x02, 0x07, 0x80]
        );
        // keyEncipherment is dropped for non-RSA keys.
        assert_eq!(key_usage(&[Usage::KeyEncipherment], false), None);
        assert_eq!(
            der(key_usage(
                &[Usage::DigitalSignature, Usage::KeyEncipherment],
                true
            )),
            vec![0x03, 0x02, 0x05, 0xa0]
        );
        assert!(eku_oid(Usage::NetscapeSgc).is_some() && eku_oid(Usage::Signing).is_none());
    }
}

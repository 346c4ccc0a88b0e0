//! Subjects, subject alternative names, PKCS#10 requests, PEM and Kubernetes
//! usage strings.
//!
//! Requests are built from RustCrypto `x509-cert` types and encoded with
//! `der`; a subject keeps every attribute in the order written (two `O`
//! groups stay two RDNs), and a renewal repeats the current certificate's
//! subject byte for byte. PEM is read with rustls-pki-types and written with
//! `der`'s pem-rfc7468. This module never writes files and never talks to the
//! network.

use std::net::IpAddr;

use anyhow::{Result, anyhow, bail};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc3280, rfc4519};
use der::asn1::{Any, BitString, Ia5String, OctetString, SetOfVec};
use der::{Decode as _, Encode as _, Tag};
use rustls_pki_types::pem::PemObject;
use x509_cert::attr::{Attribute as X509Attribute, AttributeTypeAndValue};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::request::{CertReq, CertReqInfo, ExtensionReq, Version};

pub use crate::key::{KeyType, PrivateKey};

/// PEM label of a PKCS#10 request (`CERTIFICATE REQUEST`).
pub const CSR_PEM_LABEL: &str = <CertReq as der::pem::PemLabel>::PEM_LABEL;

/// A DER encoding error as one line.
fn der_error(what: &str) -> impl FnOnce(der::Error) -> anyhow::Error + '_ {
    move |e| anyhow!("cannot encode the {what}: {e}")
}

// === Subject ===

/// One attribute of a subject, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The short name as openssl prints it (`CN`, `O`, ...).
    pub short: &'static str,
    oid: ObjectIdentifier,
    /// DER string type: UTF8String, PrintableString or IA5String.
    string_tag: Tag,
    /// The value.
    pub value: String,
}

/// Attribute types accepted in `--subject`: names (as openssl spells them,
/// matched case-insensitively), the short name, the OID and the string type.
const ATTRIBUTE_TYPES: &[(&[&str], &str, ObjectIdentifier, Tag)] = &[
    (&["CN", "commonName"], "CN", rfc4519::CN, Tag::Utf8String),
    (&["O", "organizationName"], "O", rfc4519::O, Tag::Utf8String),
    (
        &["OU", "organizationalUnitName"],
        "OU",
        rfc4519::OU,
        Tag::Utf8String,
    ),
    (&["C", "countryName"], "C", rfc4519::C, Tag::PrintableString),
    (
        &["ST", "stateOrProvinceName"],
        "ST",
        rfc4519::ST,
        Tag::Utf8String,
    ),
    (&["L", "localityName"], "L", rfc4519::L, Tag::Utf8String),
    (
        &["STREET", "streetAddress"],
        "STREET",
        rfc4519::STREET,
        Tag::Utf8String,
    ),
    (
        &["serialNumber"],
        "serialNumber",
        rfc4519::SERIAL_NUMBER,
        Tag::PrintableString,
    ),
    (&["title"], "title", rfc4519::TITLE, Tag::Utf8String),
    (&["GN", "givenName"], "GN", rfc4519::GN, Tag::Utf8String),
    (&["SN", "surname"], "SN", rfc4519::SN, Tag::Utf8String),
    (
        &["emailAddress"],
        "emailAddress",
        rfc3280::EMAIL_ADDRESS,
        Tag::Ia5String,
    ),
    (
        &["DC", "domainComponent"],
        "DC",
        rfc4519::DC,
        Tag::Ia5String,
    ),
    (&["UID", "userId"], "UID", rfc4519::UID, Tag::Utf8String),
];

/// A subject distinguished name, encoded in the order written (one attribute
/// per RDN, as openssl's `-subj` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The attributes in order.
    pub attributes: Vec<Attribute>,
    /// The DER `Name`, encoded once when parsed.
    der: Vec<u8>,
}

impl Subject {
    /// Parses `/CN=x/O=y` (openssl style) or `CN=x,O=y`. A backslash escapes the
    /// separator. Both forms keep the written order.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let (body, sep) = match text.strip_prefix('/') {
            Some(rest) => (rest, '/'),
            None => (text, ','),
        };
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(next) => current.push(next),
                    None => bail!("invalid --subject {text:?}: trailing backslash"),
                }
            } else if c == sep {
                parts.push(std::mem::take(&mut current));
            } else {
                current.push(c);
            }
        }
        parts.push(current);
        let mut attributes = Vec::new();
        for part in parts {
            let part = if sep == ',' {
                part.trim().to_string()
            } else {
                part
            };
            if part.is_empty() {
                continue;
            }
            let Some((name, value)) = part.split_once('=') else {
                bail!("invalid --subject {text:?}: {part:?} is not TYPE=value");
            };
            let name = name.trim();
            let Some((_, short, oid, string_tag)) = ATTRIBUTE_TYPES
                .iter()
                .find(|(names, ..)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            else {
                bail!("invalid --subject {text:?}: unknown attribute type {name:?}");
            };
            if value.is_empty() {
                bail!("invalid --subject {text:?}: {short} has an empty value");
            }
            if *string_tag != Tag::Utf8String && !value.is_ascii() {
                bail!("invalid --subject {text:?}: {short} must be ASCII");
            }
            if *short == "C" && value.len() != 2 {
                bail!("invalid --subject {text:?}: C must be a two-letter country code");
            }
            attributes.push(Attribute {
                short,
                oid: *oid,
                string_tag: *string_tag,
                value: value.to_string(),
            });
        }
        if attributes.is_empty() {
            bail!("invalid --subject {text:?}: no attributes");
        }
        let der = Self::encode(&attributes)
            .map_err(|e| anyhow!("invalid --subject {text:?}: cannot encode it ({e})"))?;
        Ok(Self { attributes, der })
    }

    /// The `RDNSequence` of `attributes`, one attribute per RDN.
    fn encode(attributes: &[Attribute]) -> der::Result<Vec<u8>> {
        let mut rdns = RdnSequence::default();
        for a in attributes {
            // The value is copied as typed; the checks in `parse` (ASCII for
            // PrintableString and IA5String) are the ones certctl applies.
            let atv = AttributeTypeAndValue {
                oid: a.oid,
                value: Any::new(a.string_tag, a.value.as_bytes())?,
            };
            rdns.push(RelativeDistinguishedName::try_from(vec![atv])?);
        }
        rdns.to_der()
    }

    /// The DER `Name`.
    pub fn to_der(&self) -> Vec<u8> {
        self.der.clone()
    }
}

// === Subject alternative names ===

/// One requested subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// dNSName.
    Dns(String),
    /// iPAddress.
    Ip(IpAddr),
    /// uniformResourceIdentifier.
    Uri(String),
    /// rfc822Name.
    Email(String),
}

impl San {
    fn to_general_name(&self) -> Result<GeneralName> {
        let ia5 =
            |s: &str| Ia5String::new(s).map_err(|_| anyhow!("SAN {s:?} is not ASCII (IA5String)"));
        Ok(match self {
            San::Dns(d) => GeneralName::DnsName(ia5(d)?),
            San::Ip(ip) => GeneralName::from(*ip),
            San::Uri(u) => GeneralName::UniformResourceIdentifier(ia5(u)?),
            San::Email(e) => GeneralName::Rfc822Name(ia5(e)?),
        })
    }
}

/// Checks the SAN values a user typed (the signer applies its own policy).
pub fn sans_from_flags(
    dns: &[String],
    ips: &[String],
    uris: &[String],
    emails: &[String],
) -> Result<Vec<San>> {
    let mut sans = Vec::new();
    for d in dns {
        if d.is_empty() || !d.is_ascii() || d.contains(char::is_whitespace) {
            bail!("invalid --dns {d:?}: not a DNS name");
        }
        sans.push(San::Dns(d.clone()));
    }
    for ip in ips {
        let parsed: IpAddr = ip
            .parse()
            .map_err(|_| anyhow!("invalid --ip {ip:?}: not an IP address"))?;
        sans.push(San::Ip(parsed));
    }
    for u in uris {
        let ok = u
            .split_once(':')
            .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty());
        if !ok || !u.is_ascii() || u.contains(char::is_whitespace) {
            bail!("invalid --uri {u:?}: not an absolute URI");
        }
        sans.push(San::Uri(u.clone()));
    }
    for e in emails {
        let ok = e
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty());
        if !ok || !e.is_ascii() {
            bail!("invalid --email {e:?}: not an email address");
        }
        sans.push(San::Email(e.clone()));
    }
    Ok(sans)
}

// === PKCS#10 ===

/// The request's attributes: an extensionRequest with the SANs, or none.
fn request_attributes(sans: &[San]) -> Result<SetOfVec<X509Attribute>> {
    let mut attributes = SetOfVec::new();
    if sans.is_empty() {
        return Ok(attributes);
    }
    let names = sans
        .iter()
        .map(San::to_general_name)
        .collect::<Result<Vec<_>>>()?;
    let san = SubjectAltName(names)
        .to_der()
        .map_err(der_error("subject alternative names"))?;
    let extension = Extension {
        extn_id: <SubjectAltName as const_oid::AssociatedOid>::OID,
        critical: false,
        extn_value: OctetString::new(san).map_err(der_error("subject alternative names"))?,
    };
    let attribute = X509Attribute::try_from(ExtensionReq(vec![extension]))
        .map_err(der_error("extension request"))?;
    attributes
        .insert(attribute)
        .map_err(der_error("extension request"))?;
    Ok(attributes)
}

/// Builds and signs a PKCS#10 request. `subject_der` is a DER `Name`, which the
/// request repeats byte for byte.
pub fn build_csr(key: &PrivateKey, subject_der: &[u8], sans: &[San]) -> Result<Vec<u8>> {
    let subject =
        Name::from_der(subject_der).map_err(|e| anyhow!("cannot read the subject: {e}"))?;
    if subject.to_der().ok().as_deref() != Some(subject_der) {
        bail!("the subject is not in canonical DER; it cannot be repeated byte for byte");
    }
    let info = CertReqInfo {
        version: Version::V1,
        subject,
        public_key: key.subject_public_key_info()?,
        attributes: request_attributes(sans)?,
    };
    let info_der = info.to_der().map_err(der_error("request"))?;
    let signature = key.sign(&info_der)?;
    CertReq {
        info,
        algorithm: key.signature_algorithm(),
        signature: BitString::from_bytes(&signature).map_err(der_error("signature"))?,
    }
    .to_der()
    .map_err(der_error("request"))
}

/// PEM-encodes DER with the given label (RFC 7468: 64-column base64 lines, LF).
///
/// pem-rfc7468 fails only on a malformed label (certctl passes its constants)
/// or a length past `usize`; either gives an empty string, which no PEM
/// reader accepts.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap_or_default()
}

/// The DER of the first `CERTIFICATE REQUEST` block of a PEM document.
pub fn csr_der_from_pem(pem: &[u8]) -> Result<Vec<u8>> {
    use rustls_pki_types::CertificateSigningRequestDer;
    CertificateSigningRequestDer::from_pem_slice(pem)
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| anyhow!("PEM block type must be CERTIFICATE REQUEST"))
}

/// The DER of every `CERTIFICATE` block of a PEM document, in order.
pub fn certs_der_from_pem(pem: &[u8]) -> Vec<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(|c| c.ok())
        .map(|c| c.as_ref().to_vec())
        .collect()
}

/// SHA-256 digest.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

// === Usages ===

/// Kubernetes' 23 key usage strings (`certificates.k8s.io/v1` KeyUsage).
pub const KNOWN_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// Splits and checks `--usages` values ("digital signature,client auth").
pub fn parse_usages(values: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        for u in v.split(',') {
            let u = u.trim();
            if u.is_empty() {
                continue;
            }
            if !KNOWN_USAGES.contains(&u) {
                bail!(
                    "invalid --usages: unsupported value {u:?}: supported values: {}",
                    quoted_list(KNOWN_USAGES)
                );
            }
            if out.iter().any(|o| o == u) {
                bail!("invalid --usages: duplicate value {u:?}");
            }
            out.push(u.to_string());
        }
    }
    if out.is_empty() {
        bail!("invalid --usages: at least one usage is required");
    }
    Ok(out)
}

pub(crate) fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Maps a certificate's KeyUsage and ExtendedKeyUsage back to Kubernetes strings.
pub fn usages_of_certificate(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(Some(ku)) = cert.key_usage() {
        let ku = &ku.value;
        let bits = [
            (ku.digital_signature(), "digital signature"),
            (ku.non_repudiation(), "content commitment"),
            (ku.key_encipherment(), "key encipherment"),
            (ku.key_agreement(), "key agreement"),
            (ku.data_encipherment(), "data encipherment"),
            (ku.key_cert_sign(), "cert sign"),
            (ku.crl_sign(), "crl sign"),
            (ku.encipher_only(), "encipher only"),
            (ku.decipher_only(), "decipher only"),
        ];
        out.extend(
            bits.iter()
                .filter(|(set, _)| *set)
                .map(|(_, s)| s.to_string()),
        );
    }
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let eku = &eku.value;
        let purposes = [
            (eku.any, "any"),
            (eku.server_auth, "server auth"),
            (eku.client_auth, "client auth"),
            (eku.code_signing, "code signing"),
            (eku.email_protection, "email protection"),
            (eku.time_stamping, "timestamping"),
            (eku.ocsp_signing, "ocsp signing"),
        ];
        out.extend(
            purposes
                .iter()
                .filter(|(set, _)| *set)
                .map(|(_, s)| s.to_string()),
        );
    }
    out
}

/// SANs of a certificate, as request SANs (for a renewal).
pub fn sans_of_certificate(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<Vec<San>> {
    use x509_parser::extensions::GeneralName;
    let mut out = Vec::new();
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Ok(out);
    };
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => out.push(San::Dns(d.to_string())),
            GeneralName::URI(u) => out.push(San::Uri(u.to_string())),
            GeneralName::RFC822Name(e) => out.push(San::Email(e.to_string())),
            GeneralName::IPAddress(b) => match b.len() {
                4 => {
                    let a: [u8; 4] = (*b).try_into().map_err(|_| anyhow!("bad IP SAN"))?;
                    out.push(San::Ip(IpAddr::from(a)));
                }
                16 => {
                    let a: [u8; 16] = (*b).try_into().map_err(|_| anyhow!("bad IP SAN"))?;
                    out.push(San::Ip(IpAddr::from(a)));
                }
                _ => bail!("certificate has a malformed IP address SAN"),
            },
            other => bail!("certificate has a SAN certctl cannot renew: {other:?}"),
        }
    }
    Ok(out)
}

/// "ECDSA P-256", "RSA 3072 bits", "Ed25519"... for a SubjectPublicKeyInfo.
pub fn describe_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> String {
    use x509_parser::public_key::PublicKey;
    let alg = spki.algorithm.algorithm.to_id_string();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {} bits", rsa.key_size()),
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => "ECDSA P-256".into(),
                "1.3.132.0.34" => "ECDSA P-384".into(),
                "1.3.132.0.35" => "ECDSA P-521".into(),
                other => format!("ECDSA (curve {other})"),
            }
        }
        _ if alg == "1.3.101.112" => "Ed25519".into(),
        _ if alg == "1.3.101.113" => "Ed448".into(),
        _ => format!("unknown ({alg})"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn parses_both_subject_forms_in_written_order() {
        let a = Subject::parse("/CN=alice/O=dev/O=ops").unwrap();
        let b = Subject::parse("CN=alice, O=dev,O=ops").unwrap();
        assert_eq!(a, b);
        let values: Vec<_> = a
            .attributes
            .iter()
            .map(|x| (x.short, x.value.as_str()))
            .collect();
        assert_eq!(values, [("CN", "alice"), ("O", "dev"), ("O", "ops")]);
        let esc = Subject::parse("/CN=a\\/b").unwrap();
        assert_eq!(esc.attributes[0].value, "a/b");
    }

    #[test]
    fn rejects_bad_subjects() {
        for bad in ["", "/", "CN", "/XX=1", "/CN=", "C=USA", "/CN=x\\"] {
            assert!(Subject::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn csr_parses_verifies_and_keeps_multiple_groups() {
        for kind in [KeyType::P256, KeyType::P384, KeyType::Ed25519] {
            let key = PrivateKey::generate(kind).unwrap();
            let subject = Subject::parse("/CN=alice/O=dev/O=ops").unwrap();
            let sans = sans_from_flags(
                &["a.example".into()],
                &["10.0.0.1".into(), "::1".into()],
                &["spiffe://x/y".into()],
                &["a@example.com".into()],
            )
            .unwrap();
            let der = build_csr(&key, &subject.to_der(), &sans).unwrap();
            let (rest, csr) = X509CertificationRequest::from_der(&der).unwrap();
            assert!(rest.is_empty());
            csr.verify_signature().unwrap();
            let info = &csr.certification_request_info;
            assert_eq!(info.subject.to_string(), "CN=alice, O=dev, O=ops");
            let exts = csr.requested_extensions().unwrap().count();
            assert_eq!(exts, 1);
            // x509-cert's strict DER decoder reads it back to the same bytes.
            let pem = pem_encode(CSR_PEM_LABEL, &der);
            let again = CertReq::from_der(&csr_der_from_pem(pem.as_bytes()).unwrap()).unwrap();
            assert_eq!(again.to_der().unwrap(), der);
        }
    }

    #[test]
    fn keys_round_trip_through_pem() {
        let key = PrivateKey::generate(KeyType::P384).unwrap();
        let pem = key.pkcs8_pem().unwrap();
        let again = PrivateKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(key.public_key_raw(), again.public_key_raw());
        assert_eq!(again.key_type(), Some(KeyType::P384));
        assert!(PrivateKey::from_pem(b"not a key").is_err());
    }

    #[test]
    fn usages_are_checked() {
        assert_eq!(
            parse_usages(&["digital signature, client auth".into()]).unwrap(),
            ["digital signature", "client auth"]
        );
        assert!(parse_usages(&["client auth,client auth".into()]).is_err());
        assert!(parse_usages(&["clientauth".into()]).is_err());
        assert!(parse_usages(&[" ".into()]).is_err());
        assert_eq!(KNOWN_USAGES.len(), 23);
    }

    /// An Ed25519 key (openssl genpkey, PKCS#8 v1) and the request certctl
    /// made with it for the subject and SANs below before the encoder was
    /// x509-cert: Ed25519 signatures are deterministic, so the whole request
    /// must come out byte for byte the same.
    const GOLDEN_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEILjMczrx5HML89laUDwo2Y+zqljnsjeUkEoklRp26DO/\n-----END PRIVATE KEY-----\n";
    const GOLDEN_SUBJECT: &str =
        "/CN=alice/O=dev/O=ops/C=DE/emailAddress=a@example.com/DC=example/serialNumber=x_1";
    const GOLDEN_CSR: &str = "3082015b3082010d020100307e310e300c06035504030c05616c696365310c300a060355040a0c03646576310c300a060355040a0c036f7073310b3009060355040613024445311c301a06092a864886f70d010901160d61406578616d706c652e636f6d31173015060a0992268993f22c64011916076578616d706c65310c300a06035504051303785f31302a300506032b657003210056988bff01e553b337ee4ca16f3c13556c685587d5249d6d7cebb31b90d3e50ca05c305a06092a864886f70d01090e314d304b30490603551d11044230408209612e6578616d706c6587040a000001871000000000000000000000000000000001860c7370696666653a2f2f782f79810d61406578616d706c652e636f6d300506032b65700341003d0cd1c5e9bcc762d4b6c1c1b49104dea19f7f2dc3ea48071e8945372b557b15b2032c744249e5fa1affcd899809f0f5bd071a9993a2d89dc7b20f76b65dd705";
    const GOLDEN_PEM: &str = "-----BEGIN CERTIFICATE REQUEST-----\nMIIBWzCCAQ0CAQAwfjEOMAwGA1UEAwwFYWxpY2UxDDAKBgNVBAoMA2RldjEMMAoG\nA1UECgwDb3BzMQswCQYDVQQGEwJERTEcMBoGCSqGSIb3DQEJARYNYUBleGFtcGxl\nLmNvbTEXMBUGCgmSJomT8ixkARkWB2V4YW1wbGUxDDAKBgNVBAUTA3hfMTAqMAUG\nAytlcAMhAFaYi/8B5VOzN+5MoW88E1VsaFWH1SSdbXzrsxuQ0+UMoFwwWgYJKoZI\nhvcNAQkOMU0wSzBJBgNVHREEQjBAgglhLmV4YW1wbGWHBAoAAAGHEAAAAAAAAAAA\nAAAAAAAAAAGGDHNwaWZmZTovL3gveYENYUBleGFtcGxlLmNvbTAFBgMrZXADQQA9\nDNHF6bzHYtS2wcG0kQTeoZ9/LcPqSAceiUU3K1V7FbIDLHRCSeX6Gv/NiZgJ8PW9\nBxqZk6LYnceyD3a2XdcF\n-----END CERTIFICATE REQUEST-----\n";
    const GOLDEN_CSR_NO_SANS: &str = "3081fe3081b1020100307e310e300c06035504030c05616c696365310c300a060355040a0c03646576310c300a060355040a0c036f7073310b3009060355040613024445311c301a06092a864886f70d010901160d61406578616d706c652e636f6d31173015060a0992268993f22c64011916076578616d706c65310c300a06035504051303785f31302a300506032b657003210056988bff01e553b337ee4ca16f3c13556c685587d5249d6d7cebb31b90d3e50ca000300506032b6570034100ec9aba03283a4a0ad63e0f6ddaff71544d6793c625fe7febb8dcc8e9805c3c59130c3bdd02405e2fb14193742aae156cfb94c1f4b9f1ce3ac9a1013cdd49b80c";

    #[test]
    fn requests_are_byte_for_byte_the_known_encoding() {
        let key = PrivateKey::from_pem(GOLDEN_KEY.as_bytes()).unwrap();
        assert_eq!(key.key_type(), Some(KeyType::Ed25519));
        assert_eq!(key.pkcs8_pem().unwrap().as_str(), GOLDEN_KEY);
        let subject = Subject::parse(GOLDEN_SUBJECT).unwrap();
        let sans = sans_from_flags(
            &["a.example".into()],
            &["10.0.0.1".into(), "::1".into()],
            &["spiffe://x/y".into()],
            &["a@example.com".into()],
        )
        .unwrap();
        let der = build_csr(&key, &subject.to_der(), &sans).unwrap();
        assert_eq!(hex::encode(&der), GOLDEN_CSR);
        let pem = pem_encode(CSR_PEM_LABEL, &der);
        assert_eq!(pem, GOLDEN_PEM);
        assert_eq!(csr_der_from_pem(pem.as_bytes()).unwrap(), der);
        let der = build_csr(&key, &subject.to_der(), &[]).unwrap();
        assert_eq!(hex::encode(&der), GOLDEN_CSR_NO_SANS);
    }

    /// The same for ECDSA (whose signatures are random): the signed part and
    /// the signature algorithm are the known bytes, and the signature verifies.
    #[test]
    fn ecdsa_requests_keep_the_known_info_and_algorithm() {
        use ring::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, UnparsedPublicKey};
        let cases = [
            (
                "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgN8hEVQl828CKJFEl\nQDCTEl5xSRXRHY1tpdGYZUnA/zqhRANCAARaMxd7Sz1RZ5gv9rR0F3qMiK+Gcvcr\nnE3GJAxVL3X+C9BXcdUCKWwqp/IRJsryN7RApjkTADYsJnsUHb1ZStJd\n-----END PRIVATE KEY-----\n",
                KeyType::P256,
                &ECDSA_P256_SHA256_ASN1,
                "3082013c020100307e310e300c06035504030c05616c696365310c300a060355040a0c03646576310c300a060355040a0c036f7073310b3009060355040613024445311c301a06092a864886f70d010901160d61406578616d706c652e636f6d31173015060a0992268993f22c64011916076578616d706c65310c300a06035504051303785f313059301306072a8648ce3d020106082a8648ce3d030107034200045a33177b4b3d5167982ff6b474177a8c88af8672f72b9c4dc6240c552f75fe0bd05771d502296c2aa7f21126caf237b440a6391300362c267b141dbd594ad25da05c305a06092a864886f70d01090e314d304b30490603551d11044230408209612e6578616d706c6587040a000001871000000000000000000000000000000001860c7370696666653a2f2f782f79810d61406578616d706c652e636f6d",
                "300a06082a8648ce3d040302",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBZbn65kjTRGmIa6EZa\nD+tRRmGa0bPHRfbGc41s5NB4L7p/KIK+lohduLgklpteKn2hZANiAAT6RVSaOt42\nvxcW/txQq6sbdG4Y3zh+uQAFl7leKC1j6dkmrM7TGOYjwSbx92Hsk/hzbqV9Vh2W\n04CDPPPLosc/9NhAl8D62jHAnqtl4Sy7PyLKqP2rb/8ay9vbFShnWEE=\n-----END PRIVATE KEY-----\n",
                KeyType::P384,
                &ECDSA_P384_SHA384_ASN1,
                "30820159020100307e310e300c06035504030c05616c696365310c300a060355040a0c03646576310c300a060355040a0c036f7073310b3009060355040613024445311c301a06092a864886f70d010901160d61406578616d706c652e636f6d31173015060a0992268993f22c64011916076578616d706c65310c300a06035504051303785f313076301006072a8648ce3d020106052b8104002203620004fa45549a3ade36bf1716fedc50abab1b746e18df387eb9000597b95e282d63e9d926acced318e623c126f1f761ec93f8736ea57d561d96d380833cf3cba2c73ff4d84097c0fada31c09eab65e12cbb3f22caa8fdab6fff1acbdbdb1528675841a05c305a06092a864886f70d01090e314d304b30490603551d11044230408209612e6578616d706c6587040a000001871000000000000000000000000000000001860c7370696666653a2f2f782f79810d61406578616d706c652e636f6d",
                "300a06082a8648ce3d040303",
            ),
        ];
        let subject = Subject::parse(GOLDEN_SUBJECT).unwrap();
        let sans = sans_from_flags(
            &["a.example".into()],
            &["10.0.0.1".into(), "::1".into()],
            &["spiffe://x/y".into()],
            &["a@example.com".into()],
        )
        .unwrap();
        for (pem, kind, verify, info, alg) in cases {
            let key = PrivateKey::from_pem(pem.as_bytes()).unwrap();
            assert_eq!(key.key_type(), Some(kind));
            assert_eq!(key.pkcs8_pem().unwrap().as_str(), pem);
            let der = build_csr(&key, &subject.to_der(), &sans).unwrap();
            let csr = CertReq::from_der(&der).unwrap();
            let info_der = csr.info.to_der().unwrap();
            assert_eq!(hex::encode(&info_der), info);
            assert_eq!(hex::encode(csr.algorithm.to_der().unwrap()), alg);
            UnparsedPublicKey::new(verify, key.public_key_raw())
                .verify(&info_der, csr.signature.raw_bytes())
                .unwrap();
        }
    }
}

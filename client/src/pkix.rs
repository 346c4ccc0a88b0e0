//! Keys, subjects, PKCS#10 requests and Kubernetes usage strings.
//!
//! The request is DER-encoded here rather than with rcgen's `serialize_request`
//! because rcgen keeps one value per attribute type (a subject with two `O`
//! groups could not be expressed) and because a renewal must repeat the
//! current certificate's subject byte for byte. This module never writes
//! files and never talks to the network.

use std::net::IpAddr;

use anyhow::{Context, Result, anyhow, bail};
use rcgen::{KeyPair, PublicKeyData, SigningKey};
use ring::signature::RsaKeyPair;
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};

// === DER ===

/// Encodes one tag-length-value.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn oid(content: &[u8]) -> Vec<u8> {
    tlv(0x06, content)
}

const OID_EXTENSION_REQUEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

// === Subject ===

/// One attribute of a subject, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The short name as openssl prints it (`CN`, `O`, ...).
    pub short: &'static str,
    oid: &'static [u8],
    /// DER string tag: UTF8String, PrintableString or IA5String.
    string_tag: u8,
    /// The value.
    pub value: String,
}

const UTF8: u8 = 0x0c;
const PRINTABLE: u8 = 0x13;
const IA5: u8 = 0x16;

/// Attribute types accepted in `--subject`: names (as openssl spells them, matched
/// case-insensitively), OID content bytes and the string type used.
const ATTRIBUTE_TYPES: &[(&[&str], &str, &[u8], u8)] = &[
    (&["CN", "commonName"], "CN", &[0x55, 0x04, 0x03], UTF8),
    (&["O", "organizationName"], "O", &[0x55, 0x04, 0x0a], UTF8),
    (
        &["OU", "organizationalUnitName"],
        "OU",
        &[0x55, 0x04, 0x0b],
        UTF8,
    ),
    (&["C", "countryName"], "C", &[0x55, 0x04, 0x06], PRINTABLE),
    (
        &["ST", "stateOrProvinceName"],
        "ST",
        &[0x55, 0x04, 0x08],
        UTF8,
    ),
    (&["L", "localityName"], "L", &[0x55, 0x04, 0x07], UTF8),
    (
        &["STREET", "streetAddress"],
        "STREET",
        &[0x55, 0x04, 0x09],
        UTF8,
    ),
    (
        &["serialNumber"],
        "serialNumber",
        &[0x55, 0x04, 0x05],
        PRINTABLE,
    ),
    (&["title"], "title", &[0x55, 0x04, 0x0c], UTF8),
    (&["GN", "givenName"], "GN", &[0x55, 0x04, 0x2a], UTF8),
    (&["SN", "surname"], "SN", &[0x55, 0x04, 0x04], UTF8),
    (
        &["emailAddress"],
        "emailAddress",
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        IA5,
    ),
    (
        &["DC", "domainComponent"],
        "DC",
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
        IA5,
    ),
    (
        &["UID", "userId"],
        "UID",
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
        UTF8,
    ),
];

/// A subject distinguished name, encoded in the order written (one attribute
/// per RDN, as openssl's `-subj` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The attributes in order.
    pub attributes: Vec<Attribute>,
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
            if *string_tag != UTF8 && !value.is_ascii() {
                bail!("invalid --subject {text:?}: {short} must be ASCII");
            }
            if *short == "C" && value.len() != 2 {
                bail!("invalid --subject {text:?}: C must be a two-letter country code");
            }
            attributes.push(Attribute {
                short,
                oid,
                string_tag: *string_tag,
                value: value.to_string(),
            });
        }
        if attributes.is_empty() {
            bail!("invalid --subject {text:?}: no attributes");
        }
        Ok(Self { attributes })
    }

    /// The DER `Name`.
    pub fn to_der(&self) -> Vec<u8> {
        let rdns: Vec<Vec<u8>> = self
            .attributes
            .iter()
            .map(|a| {
                let atv = seq(&[&oid(a.oid), &tlv(a.string_tag, a.value.as_bytes())]);
                tlv(0x31, &atv)
            })
            .collect();
        tlv(0x30, &rdns.concat())
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
    fn to_der(&self) -> Vec<u8> {
        match self {
            San::Dns(d) => tlv(0x82, d.as_bytes()),
            San::Ip(IpAddr::V4(ip)) => tlv(0x87, &ip.octets()),
            San::Ip(IpAddr::V6(ip)) => tlv(0x87, &ip.octets()),
            San::Uri(u) => tlv(0x86, u.as_bytes()),
            San::Email(e) => tlv(0x81, e.as_bytes()),
        }
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

// === Keys ===

/// Key types certctl can generate (ring cannot generate RSA keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default).
    P256,
    /// ECDSA on P-384 with SHA-384.
    P384,
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    fn alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// A private key that can sign requests and statements.
pub enum PrivateKey {
    /// ECDSA P-256/P-384 or Ed25519 (and RSA from PKCS#8), through rcgen/ring.
    Rcgen(KeyPair),
    /// RSA from a PKCS#1 file, through ring directly.
    Rsa(RsaKeyPair),
}

impl std::fmt::Debug for PrivateKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl PrivateKey {
    /// Generates a new key.
    pub fn generate(kind: KeyType) -> Result<Self> {
        let kp = KeyPair::generate_for(kind.alg()).context("cannot generate key")?;
        Ok(Self::Rcgen(kp))
    }

    /// Loads a PEM private key: PKCS#8, SEC1 (`EC PRIVATE KEY`) or PKCS#1 RSA.
    pub fn from_pem(pem: &[u8]) -> Result<Self> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| anyhow!("no usable PEM private key ({e})"))?;
        match &der {
            PrivateKeyDer::Pkcs8(_) => KeyPair::try_from(&der).map(Self::Rcgen).map_err(|_| {
                anyhow!("unsupported private key (need ECDSA P-256/P-384, Ed25519 or RSA)")
            }),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map(Self::Rsa)
                .map_err(|e| anyhow!("unusable RSA private key: {e}")),
            PrivateKeyDer::Sec1(k) => {
                // ring reads EC keys only inside PKCS#8: wrap the SEC1 structure,
                // trying each supported curve (ring rejects a mismatched one).
                for curve in [OID_P256, OID_P384] {
                    let alg = seq(&[&oid(OID_EC_PUBLIC_KEY), &oid(curve)]);
                    let pkcs8 = seq(&[&[0x02, 0x01, 0x00], &alg, &tlv(0x04, k.secret_sec1_der())]);
                    let wrapped = PrivateKeyDer::Pkcs8(pkcs8.into());
                    if let Ok(kp) = KeyPair::try_from(&wrapped) {
                        return Ok(Self::Rcgen(kp));
                    }
                }
                bail!("unsupported EC private key (need P-256 or P-384)")
            }
            _ => bail!("unsupported private key format"),
        }
    }

    /// The PKCS#8 PEM of a generated key.
    pub fn pkcs8_pem(&self) -> Result<String> {
        match self {
            Self::Rcgen(kp) => Ok(kp.serialize_pem()),
            Self::Rsa(_) => bail!("cannot serialize a PKCS#1 RSA key"),
        }
    }

    /// The public key bits as carried in a SubjectPublicKeyInfo BIT STRING.
    pub fn public_key_raw(&self) -> Vec<u8> {
        match self {
            Self::Rcgen(kp) => kp.public_key_raw().to_vec(),
            Self::Rsa(kp) => ring::signature::KeyPair::public_key(kp).as_ref().to_vec(),
        }
    }

    /// The key type, if certctl can generate another of it.
    pub fn key_type(&self) -> Option<KeyType> {
        match self {
            Self::Rcgen(kp) if kp.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 => {
                Some(KeyType::P256)
            }
            Self::Rcgen(kp) if kp.algorithm() == &rcgen::PKCS_ECDSA_P384_SHA384 => {
                Some(KeyType::P384)
            }
            Self::Rcgen(kp) if kp.algorithm() == &rcgen::PKCS_ED25519 => Some(KeyType::Ed25519),
            _ => None,
        }
    }

    /// Signs `msg` with the algorithm that follows the key (ECDSA P-256/SHA-256,
    /// P-384/SHA-384 DER, Ed25519, RSA PKCS#1 v1.5 SHA-256).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        match self {
            Self::Rcgen(kp) => kp.sign(msg).map_err(|e| anyhow!("cannot sign: {e}")),
            Self::Rsa(kp) => {
                let rng = ring::rand::SystemRandom::new();
                let mut sig = vec![0u8; kp.public().modulus_len()];
                kp.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(|_| anyhow!("cannot sign with the RSA key"))?;
                Ok(sig)
            }
        }
    }

    fn signature_algorithm_der(&self) -> Vec<u8> {
        match self {
            Self::Rcgen(kp) if kp.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 => {
                seq(&[&oid(OID_ECDSA_SHA256)])
            }
            Self::Rcgen(kp) if kp.algorithm() == &rcgen::PKCS_ECDSA_P384_SHA384 => {
                seq(&[&oid(OID_ECDSA_SHA384)])
            }
            Self::Rcgen(kp) if kp.algorithm() == &rcgen::PKCS_ED25519 => seq(&[&oid(OID_ED25519)]),
            _ => seq(&[&oid(OID_RSA_SHA256), &[0x05, 0x00]]),
        }
    }

    fn subject_public_key_info(&self) -> Result<Vec<u8>> {
        match self {
            Self::Rcgen(kp) => Ok(kp.subject_public_key_info()),
            Self::Rsa(_) => bail!("renewing RSA keys is not supported"),
        }
    }
}

// === PKCS#10 ===

/// Builds and signs a PKCS#10 request. `subject_der` is a DER `Name`.
pub fn build_csr(key: &PrivateKey, subject_der: &[u8], sans: &[San]) -> Result<Vec<u8>> {
    let spki = key.subject_public_key_info()?;
    let attributes = if sans.is_empty() {
        tlv(0xa0, &[])
    } else {
        let names: Vec<Vec<u8>> = sans.iter().map(San::to_der).collect();
        let san_ext = seq(&[
            &oid(OID_SUBJECT_ALT_NAME),
            &tlv(0x04, &seq(&[&names.concat()])),
        ]);
        let extensions = seq(&[&san_ext]);
        let attr = seq(&[&oid(OID_EXTENSION_REQUEST), &tlv(0x31, &extensions)]);
        tlv(0xa0, &attr)
    };
    let info = seq(&[&[0x02, 0x01, 0x00], subject_der, &spki, &attributes]);
    let signature = key.sign(&info)?;
    let mut bits = vec![0u8];
    bits.extend_from_slice(&signature);
    Ok(seq(&[
        &info,
        &key.signature_algorithm_der(),
        &tlv(0x03, &bits),
    ]))
}

/// PEM-encodes DER with the given label (64-column base64 lines).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
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
    certsign_evidence::sha256(data).to_vec()
}

// === Usages ===

/// Kubernetes' 23 key usage strings (`certificates.k8s.io/v1` KeyUsage).
pub const KNOWN_USAGES: &[&str] = &certsign_evidence::usage::NAMES;

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
    let usages = certsign_evidence::Usage::of_certificate(cert);
    usages.into_iter().map(|u| u.as_str().to_string()).collect()
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
            // rcgen accepts it too (the signer parses with rcgen/x509-parser).
            let pem = pem_encode("CERTIFICATE REQUEST", &der);
            rcgen::CertificateSigningRequestParams::from_pem(&pem).unwrap();
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

    #[test]
    fn long_der_lengths() {
        let v = tlv(0x04, &[0u8; 300]);
        assert_eq!(&v[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let v = tlv(0x04, &[0u8; 200]);
        assert_eq!(&v[..3], &[0x04, 0x81, 200]);
    }
}

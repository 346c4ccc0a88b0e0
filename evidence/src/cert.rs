//! What evidence reads from a certificate or a certificate request: the
//! identity (CN = username, O = groups), the key kind, the subject
//! alternative names, the DER inside a CSR's PEM block, and SHA-256.
//!
//! These are readers of bytes that were already parsed by x509-parser; this
//! module never parses a whole certificate or request itself and never
//! decides whether one is trusted.

use std::net::IpAddr;

use rustls_pki_types::pem::{PemObject, SectionKind};
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

/// Minimum RSA modulus size accepted anywhere (CSR keys, admin keys).
pub const MIN_RSA_BITS: usize = 2048;

/// SHA-256 of some bytes (what statements bind, what caches key on).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Decode the first PEM block to DER if it is a CERTIFICATE REQUEST
/// (otherwise Kubernetes says "PEM block type must be CERTIFICATE REQUEST").
pub fn csr_der_from_pem(pem: &[u8]) -> Option<Vec<u8>> {
    match <(SectionKind, Vec<u8>)>::from_pem_slice(pem) {
        Ok((SectionKind::Csr, der)) => Some(der),
        _ => None,
    }
}

/// Who a certificate names: the subject CN and O values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Subject CN.
    pub username: String,
    /// Subject O values, in order.
    pub groups: Vec<String>,
}

/// Subject CN (the first readable one) and O values (the readable ones, in
/// order) of an X.509 name.
pub fn name_identity(name: &X509Name<'_>) -> (Option<String>, Vec<String>) {
    let cn = name
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    let orgs = name
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_owned)
        .collect();
    (cn, orgs)
}

/// A key type outside the allowed set. The Display is the signer's
/// `spec.request` refusal text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "spec.request: key type not allowed: {0} (allowed: ECDSA P-256, ECDSA P-384, Ed25519, RSA >= 2048 bits)"
)]
pub struct KeyTypeError(pub String);

/// Public key algorithms this system accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on NIST P-256.
    P256,
    /// ECDSA on NIST P-384.
    P384,
    /// Ed25519.
    Ed25519,
    /// RSA with this many modulus bits (always >= [`MIN_RSA_BITS`]).
    Rsa(usize),
}

impl KeyKind {
    /// Classify a SubjectPublicKeyInfo, refusing anything not allowed.
    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, KeyTypeError> {
        let alg = &spki.algorithm.algorithm;
        if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve {
                Some(c) if c == OID_EC_P256 => Ok(Self::P256),
                Some(c) if c == OID_NIST_EC_P384 => Ok(Self::P384),
                Some(c) => Err(KeyTypeError(format!("ECDSA on curve {c}"))),
                None => Err(KeyTypeError("ECDSA without a named curve".into())),
            }
        } else if *alg == OID_SIG_ED25519 {
            Ok(Self::Ed25519)
        } else if *alg == OID_PKCS1_RSAENCRYPTION {
            let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
            if bits < MIN_RSA_BITS {
                return Err(KeyTypeError(format!("RSA-{bits} is too small")));
            }
            Ok(Self::Rsa(bits))
        } else {
            Err(KeyTypeError(format!("algorithm {alg}")))
        }
    }

    /// Whether keyEncipherment makes sense for this key (RSA key transport only).
    pub fn can_encipher_keys(self) -> bool {
        matches!(self, Self::Rsa(_))
    }
}

/// A subjectAltName this system does not read. The Display is the
/// signer's `spec.request` refusal text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.request: unsupported or malformed subjectAltName: {0}")]
pub struct SanError(pub String);

/// Subject alternative names, by type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sans {
    /// dNSName entries.
    pub dns: Vec<String>,
    /// iPAddress entries.
    pub ips: Vec<IpAddr>,
    /// uniformResourceIdentifier entries.
    pub uris: Vec<String>,
    /// rfc822Name entries.
    pub emails: Vec<String>,
}

impl Sans {
    /// True when there is no SAN at all.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ips.is_empty() && self.uris.is_empty() && self.emails.is_empty()
    }

    /// Read SANs from a parsed extension (requests and certificates alike).
    /// A name with a control character (NUL above all: `good.example\0.evil`
    /// reads as `good.example` to C string code) is refused.
    pub fn from_general_names(names: &[GeneralName<'_>]) -> Result<Self, SanError> {
        let mut sans = Self::default();
        let text = |kind: &str, v: &str| {
            if v.chars().any(char::is_control) {
                Err(SanError(format!(
                    "{kind} {v:?} contains a control character"
                )))
            } else {
                Ok(v.to_owned())
            }
        };
        for name in names {
            match name {
                GeneralName::DNSName(d) => sans.dns.push(text("dNSName", d)?),
                GeneralName::RFC822Name(e) => sans.emails.push(text("rfc822Name", e)?),
                GeneralName::URI(u) => sans.uris.push(text("URI", u)?),
                GeneralName::IPAddress(b) => sans.ips.push(match b.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*b).map_err(|_| SanError("IP".into()))?),
                    16 => {
                        IpAddr::from(<[u8; 16]>::try_from(*b).map_err(|_| SanError("IP".into()))?)
                    }
                    n => return Err(SanError(format!("IP address of {n} bytes"))),
                }),
                other => return Err(SanError(format!("{other:?}"))),
            }
        }
        Ok(sans)
    }
}

/// A serial number as statements and journals write it: lowercase hex of
/// the big-endian bytes without leading zero bytes (one byte at least).
pub fn serial_hex(raw: &[u8]) -> String {
    let zeros = raw.iter().take_while(|b| **b == 0).count();
    hex::encode(&raw[zeros.min(raw.len().saturating_sub(1))..])
}

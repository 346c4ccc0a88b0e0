//! `CaKey`: the CA certificate plus the key that signs for it, loaded once
//! at start.
//!
//! Loading refuses a key that does not match the certificate (a token key is
//! checked with a probe signature) and a certificate that is not a CA.
//! `CaKey` gives the certificate facts issuance needs (subject, SKI, expiry)
//! and signs raw bytes; it never decides what those bytes are, and its
//! `Debug` never shows key material.

use std::path::{Path, PathBuf};

use der::Decode;
use der::asn1::BitString;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use spki::{AlgorithmIdentifierOwned, Document, DynSignatureAlgorithmIdentifier, EncodePublicKey};
use time::OffsetDateTime;
use x509_cert::name::Name;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::file::FileKey;
use crate::interface::{CaError, KeyError, KeySigner, SigAlg};
use crate::pkcs11::{Pkcs11Uri, TokenKey};

/// Where the CA private key is: a file or a key in a PKCS#11 token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A PKCS#8 PEM file, mode 0600.
    File(PathBuf),
    /// An RFC 7512 URI (`pkcs11:token=…;object=…?module-path=…&pin-source=…`).
    Pkcs11(Pkcs11Uri),
}

/// The CA: signing key plus the certificate facts issuance needs.
#[derive(Debug)]
pub struct CaKey {
    key: Box<dyn KeySigner>,
    cert_der: Vec<u8>,
    cert_pem: String,
    subject: Name,
    ski: Vec<u8>,
    not_after: OffsetDateTime,
}

/// The CA's public key, as the x509-cert builder asks for it.
#[derive(Debug, Clone)]
pub struct CaPublicKey(Vec<u8>);

impl EncodePublicKey for CaPublicKey {
    fn to_public_key_der(&self) -> spki::Result<Document> {
        Ok(Document::from_der(&self.0)?)
    }
}

/// A signature made by the CA key (the X.509 signature value).
#[derive(Debug, Clone)]
pub struct CaSignature(pub Vec<u8>);

impl CaSignature {
    /// As the certificate's signatureValue BIT STRING.
    pub fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

impl CaKey {
    /// Load the CA certificate (first PEM block) and its key from a file or
    /// a token. `sessions` sizes the PKCS#11 session pool.
    pub fn open(cert_path: &Path, key: &KeySource, sessions: usize) -> Result<Self, CaError> {
        let cert = CertificateDer::from_pem_file(cert_path)
            .map_err(|e| CaError::Invalid(format!("{}: {e}", cert_path.display())))?
            .to_vec();
        let signer: Box<dyn KeySigner> = match key {
            KeySource::File(p) => Box::new(FileKey::load(p)?),
            KeySource::Pkcs11(uri) => {
                let (_, parsed) = X509Certificate::from_der(&cert)
                    .map_err(|e| CaError::Invalid(format!("CA certificate: {e}")))?;
                let spki = parsed.public_key();
                Box::new(
                    TokenKey::open(uri, spki.raw, sessions)
                        .map_err(|e| CaError::Invalid(e.to_string()))?,
                )
            }
        };
        Self::new(signer, cert)
    }

    /// Build from a key and a DER CA certificate, checking they belong together.
    pub fn new(key: Box<dyn KeySigner>, cert_der: Vec<u8>) -> Result<Self, CaError> {
        let bad = |m: &str| CaError::Invalid(format!("CA certificate: {m}"));
        let (_, cert) = X509Certificate::from_der(&cert_der).map_err(|e| bad(&e.to_string()))?;
        if cert.public_key().raw != key.public_key_der() {
            return Err(bad("the CA key does not match the CA certificate"));
        }
        if !cert.is_ca() {
            return Err(bad(
                "not a CA certificate (basicConstraints CA:TRUE missing)",
            ));
        }
        let ski = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .ok_or_else(|| {
                bad("no subjectKeyIdentifier (needed for the issued certificates' AKI)")
            })?;
        let subject = Name::from_der(cert.subject().as_raw()).map_err(|e| bad(&e.to_string()))?;
        let cert_pem =
            crate::interface::pem("CERTIFICATE", &cert_der).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            subject,
            not_after: cert.validity().not_after.to_datetime(),
            ski,
            key,
            cert_pem,
            cert_der,
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
    /// The CA subject Name (issuer of what we sign).
    pub fn subject(&self) -> &Name {
        &self.subject
    }
    /// The CA's subjectKeyIdentifier (our AKI).
    pub fn ski(&self) -> &[u8] {
        &self.ski
    }
    /// When the CA certificate expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
    /// The algorithm of our signatures.
    pub fn algorithm(&self) -> SigAlg {
        self.key.algorithm()
    }
    /// Sign raw bytes (a TBSCertificate the signer built).
    pub fn sign(&self, msg: &[u8]) -> Result<CaSignature, KeyError> {
        self.key.sign(msg).map(CaSignature)
    }
}

impl signature::Keypair for CaKey {
    type VerifyingKey = CaPublicKey;
    fn verifying_key(&self) -> CaPublicKey {
        CaPublicKey(self.key.public_key_der().to_vec())
    }
}

impl DynSignatureAlgorithmIdentifier for CaKey {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(self.key.algorithm().identifier())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_is_redacted_and_key_must_match_a_ca() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap().der().to_vec();
        let secret = key.serialize_der();
        let ca = CaKey::new(Box::new(FileKey::new(key).unwrap()), cert.clone()).unwrap();
        let dbg = format!("{ca:?}");
        assert!(dbg.contains("[REDACTED]"));
        assert!(!dbg.contains(&format!("{:?}", &secret[secret.len() - 8..])));
        let other = FileKey::new(rcgen::KeyPair::generate().unwrap()).unwrap();
        assert!(
            CaKey::new(Box::new(other), cert)
                .unwrap_err()
                .to_string()
                .contains("does not match")
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::default()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec();
        assert!(
            CaKey::new(Box::new(FileKey::new(key).unwrap()), leaf)
                .unwrap_err()
                .to_string()
                .contains("not a CA")
        );
    }

    #[test]
    fn pem_wraps_at_64_and_reads_back() {
        let der: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        let pem = crate::interface::pem("CERTIFICATE", &der).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
        assert!(pem.ends_with("\n-----END CERTIFICATE-----\n"), "{pem}");
        assert!(pem.lines().all(|l| l.len() <= 64), "{pem}");
        let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
    }
}

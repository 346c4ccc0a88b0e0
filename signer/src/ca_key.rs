//! `CaKey`: the CA private key and certificate, loaded once at start.
//!
//! The key is a PKCS#8 file or a key held in a PKCS#11 token
//! ([`crate::pkcs11::TokenKey`]); both sign through `CaKey::sign_raw`.
//! Loading refuses a key file readable by group or others, a key that does
//! not match the certificate (a token key is checked with a probe signature),
//! and a certificate that is not a CA. The key has a redacted `Debug`, no
//! `Clone`/`Serialize`/`Display`, and the PEM text it was read from is
//! zeroized right after parsing. It must never be logged.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{KeyPair, PublicKeyData};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::config::CaKeySource;
use crate::pkcs11::{Scheme, TokenKey};

/// Why the CA could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaKeyError {
    /// The key file's mode lets group or others read it.
    #[error(
        "CA key {path} has mode {mode:o}: it must not be accessible by group or others; fix: chmod 600 {path}"
    )]
    Permissions {
        /// Path of the key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// I/O error reading a file.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The key or certificate is unusable.
    #[error("{0}")]
    Invalid(String),
}

/// Where the CA's signatures are made.
enum CaSigner {
    File(KeyPair),
    Token(TokenKey),
}

/// The CA: signing key plus the certificate facts issuance needs.
pub struct CaKey {
    key: CaSigner,
    cert_der: Vec<u8>,
    subject_der: Vec<u8>,
    ski: Vec<u8>,
    not_after: OffsetDateTime,
    sig_alg: &'static [u8],
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaKey")
            .field(
                "key",
                &match &self.key {
                    CaSigner::File(_) => "[REDACTED]".to_string(),
                    CaSigner::Token(t) => format!("{t:?}"),
                },
            )
            .field("not_after", &self.not_after)
            .finish()
    }
}

// AlgorithmIdentifier DER of the CA's signature algorithm.
const ALG_ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
const ALG_ECDSA_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
const ALG_ED25519: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
const ALG_RSA_SHA256: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];

/// Refuse a file readable by group or others.
pub fn check_private(path: &Path) -> Result<(), CaKeyError> {
    let meta = std::fs::metadata(path).map_err(|e| CaKeyError::Io(path.to_path_buf(), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaKeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

impl CaKey {
    /// Load the CA certificate and its key from a file or a token.
    /// `sessions` sizes the PKCS#11 session pool.
    pub fn open(cert_path: &Path, key: &CaKeySource, sessions: usize) -> Result<Self, CaKeyError> {
        match key {
            CaKeySource::File(p) => Self::load(cert_path, p),
            CaKeySource::Pkcs11(uri) => {
                let cert = CertificateDer::from_pem_file(cert_path)
                    .map_err(|e| CaKeyError::Invalid(format!("{}: {e}", cert_path.display())))?;
                let (_, parsed) = X509Certificate::from_der(&cert)
                    .map_err(|e| CaKeyError::Invalid(format!("CA certificate: {e}")))?;
                let spki = parsed.public_key();
                let scheme = Scheme::from_spki(spki).ok_or_else(|| {
                    CaKeyError::Invalid(
                        "CA certificate: a token CA key must be ECDSA P-256, P-384 or RSA".into(),
                    )
                })?;
                let token = TokenKey::open(uri, scheme, &spki.subject_public_key.data, sessions)
                    .map_err(|e| CaKeyError::Invalid(e.to_string()))?;
                let sig_alg = match scheme {
                    Scheme::EcdsaP256 => ALG_ECDSA_SHA256,
                    Scheme::EcdsaP384 => ALG_ECDSA_SHA384,
                    Scheme::RsaSha256 => ALG_RSA_SHA256,
                };
                Self::build(CaSigner::Token(token), sig_alg, cert.to_vec())
            }
        }
    }

    /// Load the CA certificate (first PEM block) and key (PKCS#8 PEM).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CaKeyError> {
        check_private(key_path)?;
        let pem = Zeroizing::new(
            std::fs::read_to_string(key_path)
                .map_err(|e| CaKeyError::Io(key_path.to_path_buf(), e))?,
        );
        let key = KeyPair::from_pem(&pem)
            .map_err(|e| CaKeyError::Invalid(format!("{}: {e}", key_path.display())))?;
        drop(pem);
        let cert = CertificateDer::from_pem_file(cert_path)
            .map_err(|e| CaKeyError::Invalid(format!("{}: {e}", cert_path.display())))?;
        Self::new(key, cert.to_vec())
    }

    /// Build from a key and a DER CA certificate, checking they belong together.
    pub fn new(key: KeyPair, cert_der: Vec<u8>) -> Result<Self, CaKeyError> {
        let bad = |m: &str| CaKeyError::Invalid(format!("CA certificate: {m}"));
        let (_, cert) = X509Certificate::from_der(&cert_der).map_err(|e| bad(&e.to_string()))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(bad("the CA key does not match the CA certificate"));
        }
        let alg = key.algorithm();
        let sig_alg = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            ALG_ECDSA_SHA256
        } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            ALG_ECDSA_SHA384
        } else if alg == &rcgen::PKCS_ED25519 {
            ALG_ED25519
        } else if alg == &rcgen::PKCS_RSA_SHA256 {
            ALG_RSA_SHA256
        } else {
            return Err(bad(
                "unsupported CA key algorithm (use P-256, P-384, Ed25519 or RSA)",
            ));
        };
        Self::build(CaSigner::File(key), sig_alg, cert_der)
    }

    fn build(key: CaSigner, sig_alg: &'static [u8], cert_der: Vec<u8>) -> Result<Self, CaKeyError> {
        let bad = |m: &str| CaKeyError::Invalid(format!("CA certificate: {m}"));
        let (_, cert) = X509Certificate::from_der(&cert_der).map_err(|e| bad(&e.to_string()))?;
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
        Ok(Self {
            subject_der: cert.subject().as_raw().to_vec(),
            not_after: cert.validity().not_after.to_datetime(),
            ski,
            sig_alg,
            key,
            cert_der,
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem_cert(&self.cert_der)
    }
    /// The CA subject Name, DER (issuer of what we sign).
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }
    /// The CA's subjectKeyIdentifier (our AKI).
    pub fn ski(&self) -> &[u8] {
        &self.ski
    }
    /// When the CA certificate expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
    /// AlgorithmIdentifier DER of our signatures.
    pub fn sig_alg(&self) -> &'static [u8] {
        self.sig_alg
    }
    /// Sign raw bytes (a TBSCertificate). Crate-private: only `issue.rs`
    /// calls it, with a `PreparedCert`.
    pub(crate) fn sign_raw(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        match &self.key {
            CaSigner::File(k) => rcgen::SigningKey::sign(k, msg).map_err(|e| e.to_string()),
            CaSigner::Token(t) => t.sign(msg).map_err(|e| e.to_string()),
        }
    }
}

/// PEM-encode one certificate.
pub fn pem_cert(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

/// PEM-encode one block.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    // Sized once: this runs for every issued certificate.
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pem_block_wraps_at_64_and_reads_back() {
        use rustls_pki_types::pem::PemObject as _;
        let der: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        let pem = pem_block("CERTIFICATE", &der);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
        assert!(pem.ends_with("\n-----END CERTIFICATE-----\n"), "{pem}");
        assert!(pem.lines().all(|l| l.len() <= 64), "{pem}");
        let back = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
    }

    #[test]
    fn debug_is_redacted_and_key_must_match_a_ca() {
        let key = KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap().der().to_vec();
        let secret = key.serialize_der();
        let ca = CaKey::new(key, cert.clone()).unwrap();
        let dbg = format!("{ca:?}");
        assert!(dbg.contains("[REDACTED]"));
        assert!(!dbg.contains(&format!("{:?}", &secret[secret.len() - 8..])));
        let other = KeyPair::generate().unwrap();
        assert!(
            CaKey::new(other, cert)
                .unwrap_err()
                .to_string()
                .contains("does not match")
        );
        let key = KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::default()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec();
        assert!(
            CaKey::new(key, leaf)
                .unwrap_err()
                .to_string()
                .contains("not a CA")
        );
    }
}

//! Private keys: generation (PKCS#8 through ring), loading from PEM (PKCS#8,
//! SEC1 EC, PKCS#1 RSA), a key held in a PKCS#11 token, signing, and the public key as a
//! SubjectPublicKeyInfo and signature AlgorithmIdentifier for a request.
//!
//! Key material never leaves this module except as the PKCS#8 PEM of a key
//! the caller writes to its own file; it is never printed (`Debug` is
//! redacted) and the PKCS#8 bytes are zeroized on drop. This module never
//! writes files and never talks to the network.

use anyhow::{Result, anyhow, bail};
use certsign_pkcs11::Scheme;
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5912, rfc8410};
use der::asn1::{Any, BitString, OctetStringRef};
use der::{Encode as _, Sequence};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair as _, RsaKeyPair,
};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use zeroize::Zeroizing;

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

/// An ECDSA curve certctl offers.
#[derive(Debug)]
struct Curve {
    kind: KeyType,
    /// ring's signing algorithm (signatures DER-encoded, as X.509 wants).
    signing: &'static EcdsaSigningAlgorithm,
    /// The namedCurve parameter of the SubjectPublicKeyInfo.
    named_curve: ObjectIdentifier,
    /// The signature AlgorithmIdentifier.
    signature: ObjectIdentifier,
}

static CURVES: [Curve; 2] = [
    Curve {
        kind: KeyType::P256,
        signing: &ECDSA_P256_SHA256_ASN1_SIGNING,
        named_curve: rfc5912::SECP_256_R_1,
        signature: rfc5912::ECDSA_WITH_SHA_256,
    },
    Curve {
        kind: KeyType::P384,
        signing: &ECDSA_P384_SHA384_ASN1_SIGNING,
        named_curve: rfc5912::SECP_384_R_1,
        signature: rfc5912::ECDSA_WITH_SHA_384,
    },
];

/// The ring key pair behind a [`PrivateKey`].
enum Pair {
    /// ECDSA on one of [`CURVES`].
    Ecdsa(EcdsaKeyPair, &'static Curve),
    /// Ed25519.
    Ed25519(Ed25519KeyPair),
    /// RSA (PKCS#1 v1.5 with SHA-256 signatures).
    Rsa(RsaKeyPair),
    /// A key in a PKCS#11 token (its signatures verified before use).
    Token(std::sync::Arc<certsign_pkcs11::TokenSigner>),
}

/// A private key that can sign requests and statements.
pub struct PrivateKey {
    pair: Pair,
    /// The PKCS#8 DER the key was made or read as (none for a PKCS#1 file).
    pkcs8: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for PrivateKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// PKCS#8 `PrivateKeyInfo` version 1 (RFC 5208), to hand a SEC1 EC key to
/// ring, which reads EC keys only inside PKCS#8.
#[derive(Sequence)]
struct PrivateKeyInfo<'a> {
    version: u8,
    algorithm: AlgorithmIdentifierOwned,
    private_key: &'a OctetStringRef,
}

/// An ASN.1 encoding error in a few words.
fn der_error(e: der::Error) -> anyhow::Error {
    anyhow!("cannot encode the key's DER: {e}")
}

impl PrivateKey {
    /// Generates a new key.
    pub fn generate(kind: KeyType) -> Result<Self> {
        let rng = SystemRandom::new();
        let doc = match CURVES.iter().find(|c| c.kind == kind) {
            Some(curve) => EcdsaKeyPair::generate_pkcs8(curve.signing, &rng),
            None => Ed25519KeyPair::generate_pkcs8(&rng),
        }
        .map_err(|_| anyhow!("cannot generate key"))?;
        Self::from_pkcs8(Zeroizing::new(doc.as_ref().to_vec()))
            .ok_or_else(|| anyhow!("cannot generate key: ring refused its own key"))
    }

    /// A key from PKCS#8 DER, if it is one ring can use (Ed25519, ECDSA
    /// P-256/P-384 or RSA).
    fn from_pkcs8(der: Zeroizing<Vec<u8>>) -> Option<Self> {
        let rng = SystemRandom::new();
        let pair = if let Ok(kp) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) {
            Pair::Ed25519(kp)
        } else if let Some(ec) = CURVES.iter().find_map(|curve| {
            EcdsaKeyPair::from_pkcs8(curve.signing, &der, &rng)
                .ok()
                .map(|kp| Pair::Ecdsa(kp, curve))
        }) {
            ec
        } else {
            Pair::Rsa(RsaKeyPair::from_pkcs8(&der).ok()?)
        };
        Some(Self {
            pair,
            pkcs8: Some(der),
        })
    }

    /// A key held in a PKCS#11 token ([`crate::token::open`]).
    pub fn from_token(key: std::sync::Arc<certsign_pkcs11::TokenSigner>) -> Self {
        Self {
            pair: Pair::Token(key),
            pkcs8: None,
        }
    }

    /// Whether the key is held in a token (it cannot be written out or renewed).
    pub fn is_token(&self) -> bool {
        matches!(self.pair, Pair::Token(_))
    }

    /// Loads a PEM private key: PKCS#8, SEC1 (`EC PRIVATE KEY`) or PKCS#1 RSA.
    pub fn from_pem(pem: &[u8]) -> Result<Self> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| anyhow!("no usable PEM private key ({e})"))?;
        match &der {
            PrivateKeyDer::Pkcs8(k) => {
                Self::from_pkcs8(Zeroizing::new(k.secret_pkcs8_der().to_vec())).ok_or_else(|| {
                    anyhow!("unsupported private key (need ECDSA P-256/P-384, Ed25519 or RSA)")
                })
            }
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map(|kp| Self {
                    pair: Pair::Rsa(kp),
                    pkcs8: None,
                })
                .map_err(|e| anyhow!("unusable RSA private key: {e}")),
            PrivateKeyDer::Sec1(k) => {
                // The curve is not needed to read SEC1, but PKCS#8 names it:
                // try each supported one (ring rejects a mismatched curve).
                for curve in &CURVES {
                    let info = PrivateKeyInfo {
                        version: 0,
                        algorithm: AlgorithmIdentifierOwned {
                            oid: rfc5912::ID_EC_PUBLIC_KEY,
                            parameters: Some(
                                Any::encode_from(&curve.named_curve).map_err(der_error)?,
                            ),
                        },
                        private_key: OctetStringRef::new(k.secret_sec1_der()).map_err(der_error)?,
                    };
                    let pkcs8 = Zeroizing::new(info.to_der().map_err(der_error)?);
                    if let Some(key) = Self::from_pkcs8(pkcs8) {
                        return Ok(key);
                    }
                }
                bail!("unsupported EC private key (need P-256 or P-384)")
            }
            _ => bail!("unsupported private key format"),
        }
    }

    /// The PKCS#8 PEM of the key (a generated key, or one read as PKCS#8 or SEC1).
    pub fn pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        let Some(der) = &self.pkcs8 else {
            bail!("cannot serialize a PKCS#1 RSA key or a key held in a token")
        };
        der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, der)
            .map(Zeroizing::new)
            .map_err(|e| anyhow!("cannot PEM-encode the key: {e}"))
    }

    /// The public key bits as carried in a SubjectPublicKeyInfo BIT STRING.
    pub fn public_key_raw(&self) -> Vec<u8> {
        match &self.pair {
            Pair::Ecdsa(kp, _) => kp.public_key().as_ref().to_vec(),
            Pair::Ed25519(kp) => kp.public_key().as_ref().to_vec(),
            Pair::Rsa(kp) => kp.public_key().as_ref().to_vec(),
            Pair::Token(t) => t.public_key_raw().to_vec(),
        }
    }

    /// The key type, if certctl can generate another of it.
    pub fn key_type(&self) -> Option<KeyType> {
        match &self.pair {
            Pair::Ecdsa(_, curve) => Some(curve.kind),
            Pair::Ed25519(_) => Some(KeyType::Ed25519),
            Pair::Rsa(_) | Pair::Token(_) => None,
        }
    }

    /// Signs `msg` with the algorithm that follows the key (ECDSA P-256/SHA-256,
    /// P-384/SHA-384 DER, Ed25519, RSA PKCS#1 v1.5 SHA-256).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Ecdsa(kp, _) => kp
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| anyhow!("cannot sign with the ECDSA key")),
            Pair::Ed25519(kp) => Ok(kp.sign(msg).as_ref().to_vec()),
            Pair::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public().modulus_len()];
                kp.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(|_| anyhow!("cannot sign with the RSA key"))?;
                Ok(sig)
            }
            Pair::Token(t) => t.sign(msg).map_err(|e| anyhow!("{e}")),
        }
    }

    /// The AlgorithmIdentifier of [`Self::sign`]'s signatures.
    pub fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        let (oid, parameters) = match &self.pair {
            Pair::Ecdsa(_, curve) => (curve.signature, None),
            Pair::Ed25519(_) => (rfc8410::ID_ED_25519, None),
            Pair::Rsa(_) => (rfc5912::SHA_256_WITH_RSA_ENCRYPTION, Some(Any::null())),
            Pair::Token(t) => match t.scheme() {
                Scheme::EcdsaP256 => (rfc5912::ECDSA_WITH_SHA_256, None),
                Scheme::EcdsaP384 => (rfc5912::ECDSA_WITH_SHA_384, None),
                Scheme::RsaSha256 => (rfc5912::SHA_256_WITH_RSA_ENCRYPTION, Some(Any::null())),
            },
        };
        AlgorithmIdentifierOwned { oid, parameters }
    }

    /// The SubjectPublicKeyInfo of the key.
    pub fn subject_public_key_info(&self) -> Result<SubjectPublicKeyInfoOwned> {
        let (oid, parameters) = match &self.pair {
            Pair::Ecdsa(_, curve) => (
                rfc5912::ID_EC_PUBLIC_KEY,
                Some(Any::encode_from(&curve.named_curve).map_err(der_error)?),
            ),
            Pair::Ed25519(_) => (rfc8410::ID_ED_25519, None),
            Pair::Rsa(_) => (rfc5912::RSA_ENCRYPTION, Some(Any::null())),
            Pair::Token(t) => match t.scheme() {
                Scheme::EcdsaP256 => (
                    rfc5912::ID_EC_PUBLIC_KEY,
                    Some(Any::encode_from(&rfc5912::SECP_256_R_1).map_err(der_error)?),
                ),
                Scheme::EcdsaP384 => (
                    rfc5912::ID_EC_PUBLIC_KEY,
                    Some(Any::encode_from(&rfc5912::SECP_384_R_1).map_err(der_error)?),
                ),
                Scheme::RsaSha256 => (rfc5912::RSA_ENCRYPTION, Some(Any::null())),
            },
        };
        Ok(SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned { oid, parameters },
            subject_public_key: BitString::from_bytes(&self.public_key_raw()).map_err(der_error)?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// One P-256 key as openssl writes it in SEC1 and in PKCS#8.
    const SEC1: &str = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIDfIRFUJfNvAiiRRJUAwkxJecUkV0R2NbaXRmGVJwP86oAoGCCqGSM49\nAwEHoUQDQgAEWjMXe0s9UWeYL/a0dBd6jIivhnL3K5xNxiQMVS91/gvQV3HVAils\nKqfyESbK8je0QKY5EwA2LCZ7FB29WUrSXQ==\n-----END EC PRIVATE KEY-----\n";
    const PKCS8: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgN8hEVQl828CKJFEl\nQDCTEl5xSRXRHY1tpdGYZUnA/zqhRANCAARaMxd7Sz1RZ5gv9rR0F3qMiK+Gcvcr\nnE3GJAxVL3X+C9BXcdUCKWwqp/IRJsryN7RApjkTADYsJnsUHb1ZStJd\n-----END PRIVATE KEY-----\n";

    #[test]
    fn sec1_keys_load_as_their_pkcs8_form() {
        let sec1 = PrivateKey::from_pem(SEC1.as_bytes()).unwrap();
        let pkcs8 = PrivateKey::from_pem(PKCS8.as_bytes()).unwrap();
        assert_eq!(sec1.key_type(), Some(KeyType::P256));
        assert_eq!(sec1.public_key_raw(), pkcs8.public_key_raw());
        // The SEC1 key travels inside a PKCS#8 v1 wrapper naming its curve.
        let wrapped = sec1.pkcs8_pem().unwrap();
        let again = PrivateKey::from_pem(wrapped.as_bytes()).unwrap();
        assert_eq!(again.public_key_raw(), pkcs8.public_key_raw());
        assert_eq!(format!("{sec1:?}"), "PrivateKey(<redacted>)");
        for kind in [KeyType::P256, KeyType::P384, KeyType::Ed25519] {
            let key = PrivateKey::generate(kind).unwrap();
            assert_eq!(key.key_type(), Some(kind));
            assert!(
                key.pkcs8_pem()
                    .unwrap()
                    .starts_with("-----BEGIN PRIVATE KEY-----\n")
            );
        }
    }
}

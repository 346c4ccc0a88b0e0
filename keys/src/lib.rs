//! The certsign CA key: one small signing interface, two backends.
//!
//! - [`KeySigner`]: what issuance needs from a CA key: its signature
//!   algorithm, its public key and `sign(bytes)`.
//! - [`file::FileKey`]: a PKCS#8 PEM file (mode 0600, zeroized, redacted).
//! - [`pkcs11::TokenKey`]: a key in a PKCS#11 token (RFC 7512 URI, session
//!   pool, every signature verified before use).
//! - [`CaKey`]: a backend plus the CA certificate facts issuance needs.
//!
//! This crate never depends on the signer, never logs or displays key
//! material or a PIN, and never decides what gets signed: the signer's
//! `issue` module builds the bytes, this crate only signs them.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use der::asn1::{Any, Null};
use spki::AlgorithmIdentifierOwned;

mod ca;
pub mod file;
pub mod pkcs11;

pub use ca::{CaError, CaKey, CaPublicKey, CaSignature};
pub use pkcs11::Pkcs11Uri;

/// A backend failed to sign or to load.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// The signature algorithms a CA key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlg {
    /// ECDSA P-256 with SHA-256.
    EcdsaP256,
    /// ECDSA P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RsaSha256,
}

impl SigAlg {
    /// The AlgorithmIdentifier of this algorithm's signatures.
    pub fn identifier(self) -> AlgorithmIdentifierOwned {
        use const_oid::db::{rfc5912, rfc8410};
        let (oid, null) = match self {
            Self::EcdsaP256 => (rfc5912::ECDSA_WITH_SHA_256, false),
            Self::EcdsaP384 => (rfc5912::ECDSA_WITH_SHA_384, false),
            Self::Ed25519 => (rfc8410::ID_ED_25519, false),
            // RFC 4055: the RSA PKCS#1 v1.5 identifiers carry NULL parameters.
            Self::RsaSha256 => (rfc5912::SHA_256_WITH_RSA_ENCRYPTION, true),
        };
        AlgorithmIdentifierOwned {
            oid,
            parameters: null.then(|| Any::from(Null)),
        }
    }
}

/// What issuance needs from a CA key. Implementations never expose the
/// private key and have a redacted `Debug`.
pub trait KeySigner: std::fmt::Debug + Send + Sync {
    /// The algorithm of [`KeySigner::sign`]'s signatures.
    fn algorithm(&self) -> SigAlg;
    /// The public key as a SubjectPublicKeyInfo, DER.
    fn public_key_der(&self) -> &[u8];
    /// Sign `msg`, returning the X.509 signature value.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError>;
}

/// Where the CA private key is: a file or a key in a PKCS#11 token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A PKCS#8 PEM file, mode 0600.
    File(PathBuf),
    /// An RFC 7512 URI (`pkcs11:token=…;object=…?module-path=…&pin-source=…`).
    Pkcs11(Pkcs11Uri),
}

/// PEM-encode one DER block (RFC 7468: 64-column base64, LF line ends).
pub fn pem(label: &str, der: &[u8]) -> der::Result<String> {
    Ok(der::pem::encode_string(
        label,
        der::pem::LineEnding::LF,
        der,
    )?)
}

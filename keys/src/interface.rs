//! The signing interface every CA key backend implements, and the types
//! around it (algorithm, errors, PEM encoding).
//!
//! This module never touches key material itself: it only says what a
//! backend must offer.

use der::asn1::{Any, Null};
use spki::AlgorithmIdentifierOwned;

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

/// PEM-encode one DER block (RFC 7468: 64-column base64, LF line ends).
pub fn pem(label: &str, der: &[u8]) -> der::Result<String> {
    Ok(der::pem::encode_string(
        label,
        der::pem::LineEnding::LF,
        der,
    )?)
}

/// Why the CA could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The key file's mode lets group or others read it.
    #[error(
        "CA key {path} has mode {mode:o}: it must not be accessible by group or others; fix: chmod 600 {path}"
    )]
    Permissions {
        /// Path of the key file.
        path: std::path::PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// I/O error reading a file.
    #[error("{0}: {1}")]
    Io(std::path::PathBuf, std::io::Error),
    /// The key or certificate is unusable.
    #[error("{0}")]
    Invalid(String),
}

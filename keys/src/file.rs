//! `FileKey`: the CA key as a PKCS#8 PEM file.
//!
//! Loading refuses a file readable by group or others; the PEM text is
//! zeroized right after parsing. The key has a redacted `Debug` and no
//! `Clone`/`Serialize`/`Display`; it must never be logged.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rcgen::{KeyPair, PublicKeyData};
use zeroize::Zeroizing;

use crate::interface::{CaError, KeyError, KeySigner, SigAlg};

/// A CA key read from a file.
pub struct FileKey {
    key: KeyPair,
    alg: SigAlg,
    spki: Vec<u8>,
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKey")
            .field("key", &"[REDACTED]")
            .field("alg", &self.alg)
            .finish()
    }
}

/// Refuse a file readable by group or others.
pub fn check_private(path: &Path) -> Result<(), CaError> {
    let meta = std::fs::metadata(path).map_err(|e| CaError::Io(path.to_path_buf(), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

impl FileKey {
    /// Load a PKCS#8 PEM key file (mode 0600 or stricter).
    pub fn load(path: &Path) -> Result<Self, CaError> {
        check_private(path)?;
        let pem = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| CaError::Io(path.to_path_buf(), e))?,
        );
        let key = KeyPair::from_pem(&pem)
            .map_err(|e| CaError::Invalid(format!("{}: {e}", path.display())))?;
        Self::new(key)
    }

    /// Wrap a key pair of a supported algorithm.
    pub fn new(key: KeyPair) -> Result<Self, CaError> {
        let alg = key.algorithm();
        let alg = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            SigAlg::EcdsaP256
        } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            SigAlg::EcdsaP384
        } else if alg == &rcgen::PKCS_ED25519 {
            SigAlg::Ed25519
        } else if alg == &rcgen::PKCS_RSA_SHA256 {
            SigAlg::RsaSha256
        } else {
            return Err(CaError::Invalid(
                "CA certificate: unsupported CA key algorithm (use P-256, P-384, Ed25519 or RSA)"
                    .into(),
            ));
        };
        let spki = key.subject_public_key_info();
        Ok(Self { key, alg, spki })
    }
}

impl KeySigner for FileKey {
    fn algorithm(&self) -> SigAlg {
        self.alg
    }
    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        rcgen::SigningKey::sign(&self.key, msg).map_err(|e| KeyError(e.to_string()))
    }
}

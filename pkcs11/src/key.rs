//! A private key in a token that signs for one certificate: certctl's
//! admin key (approvals, denials, revocations, TLS client authentication).
//!
//! The key is found once, and checked by a probe signature against the
//! certificate's public key; every signature after that is verified the
//! same way before it is returned. One session, behind a lock (a
//! `Session` is not `Sync`). It never logs or displays the PIN.

use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use ring::signature::UnparsedPublicKey;

use crate::session::{
    Scheme, TokenError, ck, fail, find_one, find_slot, load_module, open_session, read_pin,
    scheme_and_key, sign_with,
};
use crate::uri::Pkcs11Uri;

/// A token-held private key matching a certificate's public key.
pub struct TokenSigner {
    // Dropped before the module: the session closes while it is loaded.
    session: Mutex<Session>,
    _ctx: Pkcs11,
    key: ObjectHandle,
    scheme: Scheme,
    public_key: Vec<u8>,
    uri: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("uri", &self.uri)
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl TokenSigner {
    /// Opens the key `uri` names and checks it against `spki_der` (the
    /// SubjectPublicKeyInfo of the certificate it signs for).
    pub fn open(uri: &Pkcs11Uri, spki_der: &[u8]) -> Result<Self, TokenError> {
        let (scheme, public_key) =
            scheme_and_key(spki_der, "certificate public key", "a token key")?;
        let pin = read_pin(&uri.pin_source)?;
        let ctx = load_module(uri)?;
        let slot = find_slot(&ctx, uri)?;
        let session = open_session(&ctx, slot, &pin, uri, false)?;
        let keys = find_one(&session, uri, ObjectClass::PRIVATE_KEY)?;
        let key = match keys.as_slice() {
            [k] => *k,
            [] => return Err(fail(format!("{uri}: no such private key in the token"))),
            _ => {
                return Err(fail(format!(
                    "{uri}: several private keys match; add id= to the URI"
                )));
            }
        };
        let signer = Self {
            session: Mutex::new(session),
            _ctx: ctx,
            key,
            scheme,
            public_key,
            uri: uri.to_string(),
        };
        signer.sign(b"certsign key check").map_err(|_| {
            fail(format!(
                "{uri}: the key in the token does not match the certificate"
            ))
        })?;
        Ok(signer)
    }

    /// The signature scheme (from the certificate).
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The public key bits, as in the certificate's SubjectPublicKeyInfo.
    pub fn public_key_raw(&self) -> &[u8] {
        &self.public_key
    }

    /// Signs `msg` (X.509 / TLS signature value: ECDSA DER, RSA PKCS#1
    /// v1.5 SHA-256), verified against the certificate's key before use.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, TokenError> {
        let session = self
            .session
            .lock()
            .map_err(|_| fail("token session poisoned"))?;
        let sig =
            sign_with(&session, self.key, self.scheme, msg).map_err(|e| fail(ck(&self.uri, &e)))?;
        UnparsedPublicKey::new(self.scheme.verify_alg(), &self.public_key)
            .verify(msg, &sig)
            .map_err(|_| {
                fail(format!(
                    "{}: the token returned a signature that does not verify; refused",
                    self.uri
                ))
            })?;
        Ok(sig)
    }
}

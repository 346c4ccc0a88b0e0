//! The CA key in a token: loading the module, logging in, finding and
//! probing the key, and signing through a pool of sessions with recovery.
//!
//! Every signature the token returns is verified before use. This module
//! never logs or displays the PIN.

use std::sync::{Condvar, Mutex, RwLock};
use std::time::Duration;

use certsign_pkcs11::{
    Pkcs11Uri, Scheme, TokenError, ck, fail, find_one, find_slot, load_module, open_session,
    read_pin, scheme_and_key, sign_with,
};
use cryptoki::context::Pkcs11;
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use ring::signature::UnparsedPublicKey;

use crate::interface::{KeyError, KeySigner, SigAlg};

/// A loaded, initialized module with the key found and checked.
struct Module {
    ctx: Pkcs11,
    slot: Slot,
    key: ObjectHandle,
}

/// Check the key by signing a probe and verifying it against `spki_key`.
fn probe(
    session: &Session,
    key: ObjectHandle,
    scheme: Scheme,
    spki_key: &[u8],
    uri: &Pkcs11Uri,
) -> Result<(), TokenError> {
    let msg = b"certsign CA key check";
    let sig = sign_with(session, key, scheme, msg)
        .map_err(|e| fail(ck(&format!("{uri}: test signature"), &e)))?;
    UnparsedPublicKey::new(scheme.verify_alg(), spki_key)
        .verify(msg, &sig)
        .map_err(|_| {
            fail(format!(
                "{uri}: the key in the token does not match the CA certificate"
            ))
        })
}

impl Module {
    fn open(
        uri: &Pkcs11Uri,
        pin: &AuthPin,
        scheme: Scheme,
        spki_key: &[u8],
    ) -> Result<(Self, Session), TokenError> {
        let ctx = load_module(uri)?;
        let slot = find_slot(&ctx, uri)?;
        // get_mechanism_info, not the whole list: cryptoki logs every
        // mechanism of the list it does not know as an error.
        if ctx.get_mechanism_info(slot, scheme.mechanism()).is_err() {
            return Err(fail(format!(
                "token {:?}: the module does not offer {} (needed for a {scheme:?} CA key)",
                uri.token,
                scheme.mechanism()
            )));
        }
        let session = open_session(&ctx, slot, pin, uri, false)?;
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
        probe(&session, key, scheme, spki_key, uri)?;
        Ok((Self { ctx, slot, key }, session))
    }
}

#[derive(Default)]
struct Idle {
    sessions: Vec<Session>,
    /// Sessions open now, idle or in use (≤ pool size).
    open: usize,
}

struct Live {
    module: Option<Module>,
    generation: u64,
    last_error: String,
}

/// The CA's private key in a token, signed through a session pool.
pub struct TokenKey {
    uri: Pkcs11Uri,
    pin: AuthPin,
    scheme: Scheme,
    spki: Vec<u8>,
    spki_key: Vec<u8>,
    pool: usize,
    live: RwLock<Live>,
    idle: Mutex<Idle>,
    freed: Condvar,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("uri", &self.uri.to_string())
            .field("pin", &"[REDACTED]")
            .field("sessions", &self.pool)
            .finish()
    }
}

/// How long a `Sign` waits for a free session before giving up.
const SESSION_WAIT: Duration = Duration::from_secs(30);

impl TokenKey {
    /// Load the module, log in, find the key and check it against the CA
    /// certificate's public key (`spki`: its SubjectPublicKeyInfo, DER).
    pub fn open(uri: &Pkcs11Uri, spki: &[u8], sessions: usize) -> Result<Self, TokenError> {
        let (scheme, spki_key) = scheme_and_key(spki, "CA certificate", "a token CA key")?;
        let pin = read_pin(&uri.pin_source)?;
        let (module, session) = Module::open(uri, &pin, scheme, &spki_key)?;
        Ok(Self {
            uri: uri.clone(),
            pin,
            scheme,
            spki: spki.to_vec(),
            spki_key,
            pool: sessions.max(1),
            live: RwLock::new(Live {
                module: Some(module),
                generation: 0,
                last_error: String::new(),
            }),
            idle: Mutex::new(Idle {
                sessions: vec![session],
                open: 1,
            }),
            freed: Condvar::new(),
        })
    }

    /// The scheme (from the CA certificate).
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Sign `msg`, returning the X.509 signature value. On failure the module
    /// is re-initialized and the signature tried once more.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, TokenError> {
        let (generation, err) = match self.try_sign(msg) {
            Ok(sig) => return Ok(sig),
            // Busy pool or poisoned state: re-initializing would not help.
            Err((None, e)) => return Err(e),
            Err((Some(g), e)) => (g, e),
        };
        tracing::warn!(uri = %self.uri, error = %err, "PKCS#11 signing failed; re-initializing the module");
        if let Err(re) = self.recover(generation) {
            return Err(fail(format!(
                "the CA key's token is unavailable: {err}; re-initializing failed: {re}; the signer retries on the next request"
            )));
        }
        self.try_sign(msg).map_err(|(_, e)| {
            fail(format!(
                "the CA key's token is unavailable: {e}; the signer retries on the next request"
            ))
        })
    }

    /// One attempt. The error carries the module generation it failed in,
    /// or `None` when the module is not to blame.
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, (Option<u64>, TokenError)> {
        let live = self
            .live
            .read()
            .map_err(|_| (None, fail("token state poisoned")))?;
        let generation = live.generation;
        let module = live
            .module
            .as_ref()
            .ok_or_else(|| (Some(generation), fail(live.last_error.clone())))?;
        let session = self.checkout(module, generation)?;
        let signed = sign_with(&session, module.key, self.scheme, msg)
            .map_err(|e| fail(ck(&format!("{}", self.uri), &e)))
            .and_then(|sig| {
                // Every signature is verified before it is used: a faulty
                // module must not yield a bad certificate, and a faulty
                // RSA-CRT signature would even leak the key (Lenstra).
                UnparsedPublicKey::new(self.scheme.verify_alg(), &self.spki_key)
                    .verify(msg, &sig)
                    .map(|()| sig)
                    .map_err(|_| {
                        fail(format!(
                            "{}: the token returned a signature that does not verify; refused",
                            self.uri
                        ))
                    })
            });
        match signed {
            Ok(sig) => {
                self.checkin(Some(session));
                Ok(sig)
            }
            Err(e) => {
                // Closed now, while the module is still initialized.
                drop(session);
                self.checkin(None);
                Err((Some(generation), e))
            }
        }
    }

    fn checkout(
        &self,
        module: &Module,
        generation: u64,
    ) -> Result<Session, (Option<u64>, TokenError)> {
        let mut idle = self
            .idle
            .lock()
            .map_err(|_| (None, fail("session pool poisoned")))?;
        loop {
            if let Some(s) = idle.sessions.pop() {
                return Ok(s);
            }
            if idle.open < self.pool {
                idle.open += 1;
                drop(idle);
                return open_session(&module.ctx, module.slot, &self.pin, &self.uri, false)
                    .map_err(|e| {
                        self.checkin(None);
                        (Some(generation), e)
                    });
            }
            let (guard, timeout) = self
                .freed
                .wait_timeout(idle, SESSION_WAIT)
                .map_err(|_| (None, fail("session pool poisoned")))?;
            idle = guard;
            if timeout.timed_out() && idle.sessions.is_empty() && idle.open >= self.pool {
                return Err((
                    None,
                    fail(format!(
                        "all {} PKCS#11 sessions stayed busy for {SESSION_WAIT:?}",
                        self.pool
                    )),
                ));
            }
        }
    }

    /// Return a session to the pool (`None`: it was closed).
    fn checkin(&self, s: Option<Session>) {
        if let Ok(mut idle) = self.idle.lock() {
            match s {
                Some(s) => idle.sessions.push(s),
                None => idle.open = idle.open.saturating_sub(1),
            }
        }
        self.freed.notify_one();
    }

    /// Re-initialize the module unless another call already did since `seen`.
    fn recover(&self, seen: u64) -> Result<(), TokenError> {
        let mut live = self
            .live
            .write()
            .map_err(|_| fail("token state poisoned"))?;
        if live.generation != seen && live.module.is_some() {
            return Ok(());
        }
        // No signature is in flight (they hold the read lock): close every
        // session before finalizing, so no stale handle outlives the module.
        if let Ok(mut idle) = self.idle.lock() {
            idle.sessions.clear();
            idle.open = 0;
        }
        if let Some(old) = live.module.take() {
            let _ = old.ctx.finalize();
        }
        live.generation = live.generation.wrapping_add(1);
        match Module::open(&self.uri, &self.pin, self.scheme, &self.spki_key) {
            Ok((module, session)) => {
                live.module = Some(module);
                self.checkin_new(session);
                tracing::info!(uri = %self.uri, "PKCS#11 module re-initialized; signing again");
                Ok(())
            }
            Err(e) => {
                live.last_error = format!("{e}");
                Err(e)
            }
        }
    }

    fn checkin_new(&self, s: Session) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.open += 1;
            idle.sessions.push(s);
        }
        self.freed.notify_one();
    }
}

impl KeySigner for TokenKey {
    fn algorithm(&self) -> SigAlg {
        match self.scheme {
            Scheme::EcdsaP256 => SigAlg::EcdsaP256,
            Scheme::EcdsaP384 => SigAlg::EcdsaP384,
            Scheme::RsaSha256 => SigAlg::RsaSha256,
        }
    }
    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        TokenKey::sign(self, msg).map_err(|e| KeyError(e.to_string()))
    }
}

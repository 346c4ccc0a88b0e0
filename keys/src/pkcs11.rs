//! The CA key in a PKCS#11 token (an HSM, or SoftHSM2 for tests).
//!
//! - [`Pkcs11Uri`]: an RFC 7512 URI (`pkcs11:token=…;object=…?module-path=…&pin-source=…`).
//!   The PIN comes from `pin-source` only: `file:/abs/path` (RFC 7512) or
//!   `env:NAME` (our extension). `pin-value` is refused: a PIN must never sit
//!   in a configuration file. Unknown attributes are refused (fail closed).
//! - [`TokenKey`]: the signing key behind the same interface as a file key.
//!   Signing goes through a pool of sessions (`pkcs11_sessions` in
//!   signer.toml), so concurrent `Sign` calls do not serialize on one
//!   session (`Session` is not `Sync`). When the module fails, the call is
//!   retried once after a full re-initialization (close sessions, finalize,
//!   reload, log in, find the key, check it); if that fails too the caller
//!   gets an error it maps to UNAVAILABLE, and the next call tries again, so
//!   the signer recovers by itself when the token returns.
//! - [`generate`]: `init --ca-key-uri` creates the key inside the token, so
//!   it never exists outside it.
//!
//! Every key found is checked by signing a probe and verifying it with ring
//! against the CA certificate's public key, so a wrong object, a wrong token
//! or a broken signature encoding cannot go unnoticed; and every signature
//! the token returns is verified the same way before a certificate uses it.
//! ECDSA: modules often lack `ECDSA-SHA256`, so we hash on the host, call
//! raw `ECDSA` and DER-encode r‖s. RSA uses `SHA256-RSA-PKCS`.
//! This module never logs or displays the PIN; `AuthPin` is zeroized on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, RwLock};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use der::Encode;
use der::asn1::UintRef;
use ring::signature::{self, UnparsedPublicKey};
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::interface::{KeyError, KeySigner, SigAlg};

/// A PKCS#11 failure, with the URI (never the PIN) in the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(String);

fn fail(m: impl Into<String>) -> TokenError {
    TokenError(m.into())
}

/// Where the PIN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file (absolute path), mode 0600 or stricter; trailing newline ignored.
    File(PathBuf),
    /// An environment variable of the signer process.
    Env(String),
}

/// A parsed RFC 7512 URI naming a private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    text: String,
    /// `module-path`: the PKCS#11 library to load.
    pub module_path: PathBuf,
    /// `token`: the token label.
    pub token: String,
    /// `serial`: the token serial number, when several tokens share a label.
    pub serial: Option<String>,
    /// `object`: the key's label.
    pub object: Option<String>,
    /// `id`: the key's CKA_ID bytes.
    pub id: Option<Vec<u8>>,
    /// `pin-source`.
    pub pin_source: PinSource,
}

impl std::fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Safe to show: pin-value is refused at parse time.
        f.write_str(&self.text)
    }
}

fn pct_decode(s: &str, what: &str) -> Result<Vec<u8>, String> {
    // percent-encoding passes a stray '%' through; RFC 7512 does not allow one.
    let stray = s.split('%').skip(1).any(|rest| {
        rest.get(..2)
            .is_none_or(|h| !h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if stray {
        return Err(format!("{what}: bad percent-encoding in {s:?}"));
    }
    Ok(percent_encoding::percent_decode_str(s).collect())
}

fn pct_str(s: &str, what: &str) -> Result<String, String> {
    String::from_utf8(pct_decode(s, what)?).map_err(|_| format!("{what}: not UTF-8"))
}

impl Pkcs11Uri {
    /// Is this text meant as a PKCS#11 URI (rather than a file path)?
    pub fn is_uri(s: &str) -> bool {
        s.starts_with("pkcs11:")
    }

    /// Parse a URI; errors name the attribute and the rule.
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("pkcs11:")
            .ok_or("a PKCS#11 URI starts with \"pkcs11:\"")?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut serial, mut object, mut id) = (None, None, None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| format!("{attr:?}: an attribute is name=value"))?;
            let dup = || format!("{k}: given twice");
            match k {
                "token" if token.is_none() => token = Some(pct_str(v, k)?),
                "serial" if serial.is_none() => serial = Some(pct_str(v, k)?),
                "object" if object.is_none() => object = Some(pct_str(v, k)?),
                "id" if id.is_none() => id = Some(pct_decode(v, k)?),
                "type" if v == "private" => {}
                "type" => {
                    return Err(format!(
                        "type={v}: the CA key is a private key (type=private)"
                    ));
                }
                "token" | "serial" | "object" | "id" => return Err(dup()),
                _ => {
                    return Err(format!(
                        "unsupported path attribute {k:?} (supported: token, serial, object, id, type)"
                    ));
                }
            }
        }
        let (mut module, mut pin) = (None, None);
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            match k {
                "pin-value" => {
                    return Err("pin-value: a PIN is never accepted in the configuration; use pin-source=file:/path/to/pin (mode 0600) or pin-source=env:NAME".into());
                }
                "module-path" if module.is_none() => module = Some(PathBuf::from(pct_str(v, k)?)),
                "pin-source" if pin.is_none() => {
                    let v = pct_str(v, k)?;
                    pin = Some(if let Some(name) = v.strip_prefix("env:") {
                        if name.is_empty() {
                            return Err("pin-source=env:NAME: NAME is empty".into());
                        }
                        PinSource::Env(name.to_string())
                    } else {
                        // file:/p, file:///p and a bare absolute path.
                        let p = v
                            .strip_prefix("file://")
                            .or_else(|| v.strip_prefix("file:"))
                            .unwrap_or(&v);
                        if !p.starts_with('/') {
                            return Err(format!(
                                "pin-source={v}: use file:/absolute/path or env:NAME"
                            ));
                        }
                        PinSource::File(PathBuf::from(p))
                    });
                }
                "module-path" | "pin-source" => return Err(format!("{k}: given twice")),
                "module-name" => return Err(
                    "module-name: not supported; give module-path (the library's absolute path)"
                        .into(),
                ),
                _ => {
                    return Err(format!(
                        "unsupported query attribute {k:?} (supported: module-path, pin-source)"
                    ));
                }
            }
        }
        let module_path = module
            .ok_or("module-path: required (e.g. ?module-path=/usr/lib/softhsm/libsofthsm2.so)")?;
        if !module_path.is_absolute() {
            return Err("module-path: must be an absolute path".into());
        }
        if object.is_none() && id.is_none() {
            return Err("object or id: required to name the key".into());
        }
        Ok(Self {
            text: s.to_string(),
            module_path,
            token: token.ok_or("token: required (the token label)")?,
            serial,
            object,
            id,
            pin_source: pin.ok_or("pin-source: required (file:/path/to/pin or env:NAME)")?,
        })
    }

    fn key_template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut t = vec![Attribute::Class(class), Attribute::Token(true)];
        if let Some(l) = &self.object {
            t.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        if let Some(id) = &self.id {
            t.push(Attribute::Id(id.clone()));
        }
        t
    }
}

/// Read the PIN named by `pin-source`.
fn read_pin(src: &PinSource) -> Result<AuthPin, TokenError> {
    let raw = match src {
        PinSource::File(p) => {
            let meta = std::fs::metadata(p)
                .map_err(|e| fail(format!("pin-source {}: {e}", p.display())))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(fail(format!(
                    "pin-source {0} has mode {mode:o}: it must not be accessible by group or others; fix: chmod 600 {0}",
                    p.display()
                )));
            }
            Zeroizing::new(
                std::fs::read_to_string(p)
                    .map_err(|e| fail(format!("pin-source {}: {e}", p.display())))?,
            )
        }
        PinSource::Env(n) => Zeroizing::new(std::env::var(n).map_err(|_| {
            fail(format!(
                "pin-source=env:{n}: the environment variable {n} is not set"
            ))
        })?),
    };
    let pin = raw.trim_end_matches(['\n', '\r']);
    if pin.is_empty() {
        return Err(fail("pin-source: the PIN is empty"));
    }
    Ok(AuthPin::from(pin.to_string()))
}

fn ck(what: &str, e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => {
            let f = f.to_string();
            let f = f.trim_start_matches("Function::");
            format!("{what}: C_{f} returned {rv:?}")
        }
        other => format!("{what}: {other}"),
    }
}

/// The signature scheme, from the CA certificate's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// ECDSA P-256 with SHA-256.
    EcdsaP256,
    /// ECDSA P-384 with SHA-384.
    EcdsaP384,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RsaSha256,
}

impl Scheme {
    fn mechanism(self) -> MechanismType {
        match self {
            Self::EcdsaP256 | Self::EcdsaP384 => MechanismType::ECDSA,
            Self::RsaSha256 => MechanismType::SHA256_RSA_PKCS,
        }
    }
    fn verify_alg(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            Self::EcdsaP256 => &signature::ECDSA_P256_SHA256_ASN1,
            Self::EcdsaP384 => &signature::ECDSA_P384_SHA384_ASN1,
            Self::RsaSha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        }
    }
    /// From a SubjectPublicKeyInfo's algorithm OID and curve.
    pub fn from_spki(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<Self> {
        let alg = spki.algorithm.algorithm.to_id_string();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        match (alg.as_str(), curve.as_deref()) {
            ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => Some(Self::EcdsaP256),
            ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => Some(Self::EcdsaP384),
            ("1.2.840.113549.1.1.1", _) => Some(Self::RsaSha256),
            _ => None,
        }
    }
}

/// SEQUENCE { INTEGER, INTEGER }: an ECDSA signature (r, s) or an
/// RSAPublicKey (n, e), from unsigned big-endian bytes.
#[derive(der::Sequence)]
struct TwoIntegers<'a> {
    a: UintRef<'a>,
    b: UintRef<'a>,
}

fn two_integers(a: &[u8], b: &[u8]) -> der::Result<Vec<u8>> {
    TwoIntegers {
        a: UintRef::new(a)?,
        b: UintRef::new(b)?,
    }
    .to_der()
}

/// Sign `msg` in `session` and return the X.509 signature value.
fn sign_with(
    session: &Session,
    key: ObjectHandle,
    scheme: Scheme,
    msg: &[u8],
) -> Result<Vec<u8>, CkError> {
    match scheme {
        Scheme::EcdsaP256 | Scheme::EcdsaP384 => {
            let d = if scheme == Scheme::EcdsaP256 {
                ring::digest::digest(&ring::digest::SHA256, msg)
            } else {
                ring::digest::digest(&ring::digest::SHA384, msg)
            };
            let raw = session.sign(&Mechanism::Ecdsa, key, d.as_ref())?;
            // Raw r‖s, each half the field size → SEQUENCE { INTEGER r, INTEGER s }.
            let (r, s) = raw.split_at(raw.len() / 2);
            two_integers(r, s).map_err(|_| CkError::InvalidValue)
        }
        Scheme::RsaSha256 => session.sign(&Mechanism::Sha256RsaPkcs, key, msg),
    }
}

/// A loaded, initialized module with the key found and checked.
struct Module {
    ctx: Pkcs11,
    slot: Slot,
    key: ObjectHandle,
}

fn load_module(uri: &Pkcs11Uri) -> Result<Pkcs11, TokenError> {
    let m = uri.module_path.display();
    // The module runs inside the CA's process: one that others may rewrite
    // would let them sign with the CA key.
    let meta = std::fs::metadata(&uri.module_path)
        .map_err(|e| fail(format!("PKCS#11 module {m}: {e}")))?;
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(fail(format!(
            "PKCS#11 module {m} is writable by group or others; fix: chmod go-w {m}"
        )));
    }
    let ctx = Pkcs11::new(&uri.module_path)
        .map_err(|e| fail(format!("PKCS#11 module {m}: cannot load: {e}")))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(fail(ck(&format!("PKCS#11 module {m}"), &e))),
    }
}

fn find_slot(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, TokenError> {
    let m = uri.module_path.display();
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| fail(ck(&format!("PKCS#11 module {m}"), &e)))?;
    let mut found = Vec::new();
    let mut labels = Vec::new();
    for s in slots {
        let Ok(info) = ctx.get_token_info(s) else {
            continue;
        };
        let label = info.label().trim_end().to_string();
        if label == uri.token
            && uri
                .serial
                .as_ref()
                .is_none_or(|want| info.serial_number().trim_end() == want)
        {
            found.push(s);
        }
        labels.push(label);
    }
    match found.as_slice() {
        [s] => Ok(*s),
        [] => Err(fail(format!(
            "PKCS#11 module {m}: no token labelled {:?} (tokens present: {labels:?})",
            uri.token
        ))),
        _ => Err(fail(format!(
            "PKCS#11 module {m}: several tokens labelled {:?}; add serial= to the URI",
            uri.token
        ))),
    }
}

fn open_session(
    ctx: &Pkcs11,
    slot: Slot,
    pin: &AuthPin,
    uri: &Pkcs11Uri,
    rw: bool,
) -> Result<Session, TokenError> {
    let t = &uri.token;
    let s = if rw {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .map_err(|e| fail(ck(&format!("token {t:?}: opening a session"), &e)))?;
    match s.login(UserType::User, Some(pin)) {
        // Login state is per application and token: later sessions share it.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(s),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(fail(format!(
            "token {t:?}: the PIN is incorrect (from {}); check the pin-source",
            match &uri.pin_source {
                PinSource::File(p) => format!("file {}", p.display()),
                PinSource::Env(n) => format!("environment variable {n}"),
            }
        ))),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(fail(format!(
            "token {t:?}: the user PIN is locked; unlock it with the token's SO tools"
        ))),
        Err(e) => Err(fail(ck(&format!("token {t:?}: login"), &e))),
    }
}

fn find_one(
    session: &Session,
    uri: &Pkcs11Uri,
    class: ObjectClass,
) -> Result<Vec<ObjectHandle>, TokenError> {
    session
        .find_objects(&uri.key_template(class))
        .map_err(|e| fail(ck(&format!("token {:?}: finding the key", uri.token), &e)))
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
            .field("uri", &self.uri.text)
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
        let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki)
            .map_err(|e| fail(format!("CA certificate: {e}")))?;
        let scheme = Scheme::from_spki(&parsed).ok_or_else(|| {
            fail("CA certificate: a token CA key must be ECDSA P-256, P-384 or RSA")
        })?;
        let spki_key = parsed.subject_public_key.data.to_vec();
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

/// A key just generated in a token, able to self-sign the CA certificate
/// through rcgen (`init --ca-key-uri`).
pub struct GeneratedKey {
    ctx: Pkcs11,
    session: Mutex<Session>,
    key: ObjectHandle,
    scheme: Scheme,
    public: Vec<u8>,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("scheme", &self.scheme)
            .finish()
    }
}

/// Create the CA key pair inside the token named by `uri`. Refuses when an
/// object with the same label or id already exists (never overwrite a CA key).
pub fn generate(uri: &Pkcs11Uri, scheme: Scheme) -> Result<GeneratedKey, TokenError> {
    let pin = read_pin(&uri.pin_source)?;
    let ctx = load_module(uri)?;
    let slot = find_slot(&ctx, uri)?;
    let session = open_session(&ctx, slot, &pin, uri, true)?;
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        if !find_one(&session, uri, class)?.is_empty() {
            return Err(fail(format!(
                "{uri}: the token already holds a key with this label/id; refusing to overwrite a CA key"
            )));
        }
    }
    let mut id = uri.id.clone().unwrap_or_default();
    if id.is_empty() {
        id = vec![0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| fail("random number generator failed"))?;
    }
    let label = uri.object.clone().unwrap_or_else(|| "certsign-ca".into());
    let common = |v: &mut Vec<Attribute>| {
        v.push(Attribute::Token(true));
        v.push(Attribute::Label(label.as_bytes().to_vec()));
        v.push(Attribute::Id(id.clone()));
    };
    let mut public = vec![
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
    ];
    common(&mut public);
    // Sign only: no decrypt/unwrap/derive (SoftHSM would default some to true).
    let mut private = vec![
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    common(&mut private);
    let mech = match scheme {
        Scheme::EcdsaP256 | Scheme::EcdsaP384 => {
            let curve = if scheme == Scheme::EcdsaP256 {
                const_oid::db::rfc5912::SECP_256_R_1
            } else {
                const_oid::db::rfc5912::SECP_384_R_1
            };
            let params = curve.to_der().map_err(|e| fail(e.to_string()))?;
            public.push(Attribute::EcParams(params));
            private.push(Attribute::KeyType(KeyType::EC));
            Mechanism::EccKeyPairGen
        }
        Scheme::RsaSha256 => {
            public.push(Attribute::ModulusBits(3072.into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    let (pub_h, key) = session
        .generate_key_pair(&mech, &public, &private)
        .map_err(|e| fail(ck(&format!("{uri}: generating the key"), &e)))?;
    let public = public_key(&session, pub_h, scheme).map_err(|e| fail(format!("{uri}: {e}")))?;
    Ok(GeneratedKey {
        ctx,
        session: Mutex::new(session),
        key,
        scheme,
        public,
    })
}

/// The public key bits rcgen wants: the EC point, or RSAPublicKey DER.
fn public_key(session: &Session, h: ObjectHandle, scheme: Scheme) -> Result<Vec<u8>, String> {
    let types = match scheme {
        Scheme::RsaSha256 => vec![AttributeType::Modulus, AttributeType::PublicExponent],
        _ => vec![AttributeType::EcPoint],
    };
    let attrs = session
        .get_attributes(h, &types)
        .map_err(|e| ck("reading the public key", &e))?;
    let (mut n, mut e, mut point) = (None, None, None);
    for a in attrs {
        match a {
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            _ => {}
        }
    }
    match scheme {
        Scheme::RsaSha256 => match (n, e) {
            (Some(n), Some(e)) => two_integers(&n, &e).map_err(|e| e.to_string()),
            _ => Err("the token did not return the RSA public key".into()),
        },
        _ => {
            let v = point.ok_or("the token did not return the EC point")?;
            let len = if scheme == Scheme::EcdsaP256 { 65 } else { 97 };
            // Usually a DER OCTET STRING around the point; some modules give it bare.
            if v.len() == len + 2 && v[0] == 0x04 && usize::from(v[1]) == len {
                Ok(v[2..].to_vec())
            } else if v.len() == len && v[0] == 0x04 {
                Ok(v)
            } else {
                Err("the token returned an EC point of unexpected form".into())
            }
        }
    }
}

impl GeneratedKey {
    /// Close the session and finalize the module (before the signer opens it again).
    pub fn close(self) {
        drop(self.session);
        let _ = self.ctx.finalize();
    }
}

impl rcgen::PublicKeyData for GeneratedKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.scheme {
            Scheme::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Scheme::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Scheme::RsaSha256 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl rcgen::SigningKey for GeneratedKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let s = self
            .session
            .lock()
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        sign_with(&s, self.key, self.scheme, msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const M: &str = "module-path=/usr/lib/softhsm/libsofthsm2.so";

    #[test]
    fn parses_rfc7512_uris() {
        let u = Pkcs11Uri::parse(&format!(
            "pkcs11:token=signer%20ca;object=ca;id=%01%02;type=private?{M}&pin-source=file:/etc/pin"
        ))
        .unwrap();
        assert_eq!(u.token, "signer ca");
        assert_eq!(u.object.as_deref(), Some("ca"));
        assert_eq!(u.id, Some(vec![1, 2]));
        assert_eq!(u.pin_source, PinSource::File("/etc/pin".into()));
        let u = Pkcs11Uri::parse(&format!(
            "pkcs11:token=t;object=ca?{M}&pin-source=env:CA_PIN"
        ))
        .unwrap();
        assert_eq!(u.pin_source, PinSource::Env("CA_PIN".into()));
        let u = Pkcs11Uri::parse(&format!(
            "pkcs11:token=t;object=ca?{M}&pin-source=file:///p"
        ))
        .unwrap();
        assert_eq!(u.pin_source, PinSource::File("/p".into()));
    }

    #[test]
    fn refuses_pins_in_the_uri_and_unknown_attributes() {
        let e =
            Pkcs11Uri::parse(&format!("pkcs11:token=t;object=ca?{M}&pin-value=1234")).unwrap_err();
        assert!(e.starts_with("pin-value: a PIN is never accepted"), "{e}");
        for (uri, want) in [
            (
                format!("pkcs11:token=t;object=ca?{M}"),
                "pin-source: required",
            ),
            (
                "pkcs11:token=t;object=ca?pin-source=env:X".to_string(),
                "module-path: required",
            ),
            (
                format!("pkcs11:object=ca?{M}&pin-source=env:X"),
                "token: required",
            ),
            (
                format!("pkcs11:token=t?{M}&pin-source=env:X"),
                "object or id",
            ),
            (
                format!("pkcs11:token=t;object=ca;slot-id=1?{M}&pin-source=env:X"),
                "\"slot-id\"",
            ),
            (
                format!("pkcs11:token=t;object=ca?{M}&pin-source=file:pin"),
                "file:/absolute/path",
            ),
            (
                format!("pkcs11:token=t;object=ca;type=cert?{M}&pin-source=env:X"),
                "type=cert",
            ),
            (
                format!("pkcs11:token=%zz;object=ca?{M}&pin-source=env:X"),
                "percent-encoding",
            ),
        ] {
            let e = Pkcs11Uri::parse(&uri).unwrap_err();
            assert!(e.contains(want), "{uri}: {e}");
        }
    }
}

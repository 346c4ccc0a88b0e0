//! What every PKCS#11 user in certsign shares: the PIN from its source,
//! loading the module, finding the token and the key, logging in, and
//! signing (ECDSA hashed on the host and DER-encoded, RSA PKCS#1 v1.5).
//!
//! It never logs, displays or keeps a PIN beyond the `AuthPin` it returns
//! (zeroized on drop), and never verifies anything itself: callers check
//! every signature against the public key they trust.

use std::os::unix::fs::PermissionsExt;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use der::Encode;
use der::asn1::UintRef;
use ring::signature;
use zeroize::Zeroizing;

use crate::uri::{PinSource, Pkcs11Uri};

/// A PKCS#11 failure, with the URI (never the PIN) in the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(String);

pub fn fail(m: impl Into<String>) -> TokenError {
    TokenError(m.into())
}

/// Read the PIN named by `pin-source`.
pub fn read_pin(src: &PinSource) -> Result<AuthPin, TokenError> {
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

pub fn ck(what: &str, e: &CkError) -> String {
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
    /// The PKCS#11 mechanism signing with this scheme.
    pub fn mechanism(self) -> MechanismType {
        match self {
            Self::EcdsaP256 | Self::EcdsaP384 => MechanismType::ECDSA,
            Self::RsaSha256 => MechanismType::SHA256_RSA_PKCS,
        }
    }
    /// ring's verification algorithm for the scheme's signatures.
    pub fn verify_alg(self) -> &'static dyn signature::VerificationAlgorithm {
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

/// The scheme and the raw public key (the BIT STRING's contents) of a DER
/// SubjectPublicKeyInfo. Errors name `what` it belongs to ("CA
/// certificate") and `key` ("a token CA key").
pub fn scheme_and_key(
    spki_der: &[u8],
    what: &str,
    key: &str,
) -> Result<(Scheme, Vec<u8>), TokenError> {
    use x509_parser::prelude::FromDer as _;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| fail(format!("{what}: {e}")))?;
    let scheme = Scheme::from_spki(&spki)
        .ok_or_else(|| fail(format!("{what}: {key} must be ECDSA P-256, P-384 or RSA")))?;
    Ok((scheme, spki.subject_public_key.data.to_vec()))
}

/// SEQUENCE { INTEGER, INTEGER }: an ECDSA signature (r, s) or an
/// RSAPublicKey (n, e), from unsigned big-endian bytes.
#[derive(der::Sequence)]
struct TwoIntegers<'a> {
    a: UintRef<'a>,
    b: UintRef<'a>,
}

pub fn two_integers(a: &[u8], b: &[u8]) -> der::Result<Vec<u8>> {
    TwoIntegers {
        a: UintRef::new(a)?,
        b: UintRef::new(b)?,
    }
    .to_der()
}

/// Sign `msg` in `session` and return the X.509 signature value.
pub fn sign_with(
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

pub fn load_module(uri: &Pkcs11Uri) -> Result<Pkcs11, TokenError> {
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

pub fn find_slot(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, TokenError> {
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

pub fn open_session(
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

pub fn find_one(
    session: &Session,
    uri: &Pkcs11Uri,
    class: ObjectClass,
) -> Result<Vec<ObjectHandle>, TokenError> {
    session
        .find_objects(&uri.key_template(class))
        .map_err(|e| fail(ck(&format!("token {:?}: finding the key", uri.token), &e)))
}

//! `init --ca-key-uri`: create the CA key pair inside the token, so the
//! private key never exists outside it. Never overwrites an existing key.

use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use der::Encode;

use certsign_pkcs11::{
    Pkcs11Uri, Scheme, TokenError, ck, fail, find_one, find_slot, load_module, open_session,
    read_pin, sign_with, two_integers,
};

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

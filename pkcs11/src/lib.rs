//! certsign's PKCS#11 code shared by the signer's CA key (certsign-keys)
//! and certctl's admin keys: one RFC 7512 URI parser ([`Pkcs11Uri`]), the
//! PIN from `pin-source`, module loading, token and key lookup, login and
//! signing ([`session`]), and a token key bound to one certificate
//! ([`TokenSigner`]).
//!
//! It never logs or displays a PIN, never accepts one in a URI, and never
//! returns a signature it has not verified against the trusted public key
//! ([`TokenSigner`]; certsign-keys verifies its own).

#![forbid(unsafe_code)]

mod key;
pub mod session;
mod uri;

pub use key::TokenSigner;
pub use session::{
    Scheme, TokenError, ck, fail, find_one, find_slot, load_module, open_session, read_pin,
    scheme_and_key, sign_with, two_integers,
};
pub use uri::{PinSource, Pkcs11Uri};

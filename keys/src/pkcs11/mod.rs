//! The CA key in a PKCS#11 token (an HSM, or SoftHSM2 for tests).
//!
//! - [`Pkcs11Uri`] (from `certsign-pkcs11`, shared with certctl): an RFC 7512 URI (`pkcs11:token=…;object=…?module-path=…&pin-source=…`).
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

mod generate;
mod token;

pub use certsign_pkcs11::{PinSource, Pkcs11Uri, Scheme, TokenError};
pub use generate::{GeneratedKey, generate};
pub use token::TokenKey;

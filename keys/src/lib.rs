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

mod ca;
pub mod file;
mod interface;
pub mod pkcs11;

pub use ca::{CaKey, CaPublicKey, CaSignature, KeySource};
pub use interface::{CaError, KeyError, KeySigner, SigAlg, pem};
pub use pkcs11::Pkcs11Uri;

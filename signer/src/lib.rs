//! The certsign signer: the trusted core.
//!
//! It holds the CA key and serves exactly one application RPC,
//! `certsign.v1.Signer/Sign`, over mTLS to allow-listed callers. It must
//! never sign anything it has not checked itself: the CSR, the key, the
//! signing profile and the evidence of approval. It never trusts the
//! approver's word alone (unless a profile says `approval = "approver"`),
//! never issues a CA certificate, and never logs key material.
//!
//! # Layout
//! - [`config`]: `signer.toml`, strict and validated.
//! - [`csr`]: `VerifiedCsr` (parse, key policy, self-signature).
//! - [`profile`]: signing profiles, Kubernetes' built-in signer rules.
//! - [`ca_key`]: the CA key (permission check, redacted, zeroized source).
//! - [`pkcs11`]: the CA key in a PKCS#11 token (RFC 7512 URI, session pool).
//! - [`issue`]: `PreparedCert` → `IssuedCert` (DER built here, CA:FALSE always).
//! - [`journal`]: hash-chained, fsynced, group-committed journal = audit log.
//! - [`authority`]: one `Sign` decision, end to end.
//! - [`service`]: the tonic service, mTLS allow-list, Error → Status.
//! - [`harden`]: no_new_privs, no core dumps, memory locking.
//! - [`init`]: `certsign-signer init`, the local deployment.

#![forbid(unsafe_code)]

pub mod authority;
pub mod ca_key;
pub mod config;
pub mod csr;
pub mod harden;
pub mod init;
pub mod issue;
pub mod journal;
pub mod pkcs11;
pub mod profile;
pub mod service;

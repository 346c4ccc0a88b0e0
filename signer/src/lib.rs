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
//! - [`issue`]: `PreparedCert` → `IssuedCert` (x509-cert builder, CA:FALSE always).
//! - [`journal`]: hash-chained, fsynced, group-committed journal = audit log.
//! - [`authority`]: one `Sign` decision, end to end.
//! - [`revoke`]: a verified revocation, journaled once per serial.
//! - [`crl`]: RFC 5280 v2 CRLs of the journaled revocations, CA-signed.
//! - [`sharded`]: the journal index's sharded hash maps.
//! - [`service`]: the tonic service, mTLS allow-list, Error → Status.
//! - [`daemon`]: `audit verify` and the errors the binary maps to exit codes.
//! - [`ids`]: `Uid`, `Serial`, `EvidenceKind`.
//! - [`harden`]: no_new_privs, no core dumps, memory locking.
//!
//! Evidence checks (signed approvals, renewal and revocation statements) are
//! `certsign-evidence`,
//! shared with the approver and certctl; the CA key itself (file or PKCS#11
//! token) is `certsign-keys`.

#![forbid(unsafe_code)]

pub mod authority;
pub mod config;
pub mod crl;
pub mod csr;
pub mod daemon;
pub mod harden;
pub mod ids;
pub mod issue;
pub mod journal;
pub mod profile;
pub mod revoke;
pub mod service;
pub mod sharded;

//! The certsign signer: the trusted core.
//!
//! It holds the CA key and serves exactly one application RPC,
//! `certsign.v1.Signer/Sign`, over mTLS to allow-listed callers. It must
//! never sign anything it has not checked itself: the CSR, the key, the
//! signing profile and the evidence of approval. It never trusts the
//! approver's word alone, never issues a CA certificate, and never logs key
//! material.
//!
//! # Layout
//! - [`csr`]: `VerifiedCsr` (parse, key policy, self-signature).
//! - [`evidence`]: signed approvals and renewal proofs (shared with the approver).

#![forbid(unsafe_code)]

pub mod csr;
pub mod evidence;

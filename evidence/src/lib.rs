//! certsign evidence: what proves that a certificate may be issued, written
//! once for the signer, the approver and certctl.
//!
//! - [`statement`]: the signing contexts, the exact bytes signed,
//!   [`sign_statement`] and [`EvidenceError`] (every Display names a rule).
//! - [`approval`]: [`verify_approval`] / [`verify_approvals`] of an admin's
//!   `ApprovalStatement` against an [`ApprovalTrust`].
//! - [`batch`]: batch approvals, one signature over a Merkle tree of many
//!   requests' entries ([`sign_batch`], [`approval_entry`]); [`cache`]: the
//!   bounded cache of verified batch statements an [`ApprovalTrust`] holds.
//! - [`renewal`]: [`verify_renewal`] of a holder's `RenewalStatement`.
//! - [`request`]: the PKCS#10 request a service renews its own TLS identity
//!   with (subject and SANs of its current certificate).
//! - [`revocation`]: [`verify_revocation`] of a holder's or an admin's
//!   `RevocationStatement`.
//! - [`lineage`]: the extension naming a certificate's issuing profile and
//!   its last human approval, which renewals are judged by.
//! - [`cert`]: the [`Identity`] read from a certificate (CN = username,
//!   O = groups), key kinds, SANs, SHA-256.
//! - [`kubernetes`]: the built-in signers' rules and `spec.usages` validation,
//!   with Kubernetes' texts.
//! - [`usage`]: Kubernetes' 23 key usage words, one table.
//! - [`strict`]: [`check_strict_der`], a request's encoding must be exactly
//!   its strict DER re-encoding.
//!
//! It must never accept a statement whose signature it has not verified,
//! never take an identity from anything but a verified certificate, and
//! never hold a CA key, sign a certificate or talk to the network: it is a
//! library of pure checks that every component can link.

#![forbid(unsafe_code)]

pub mod approval;
pub mod batch;
pub mod cache;
pub mod cert;
pub mod kubernetes;
pub mod lineage;
pub mod renewal;
pub mod request;
pub mod revocation;
pub mod statement;
pub mod strict;
pub mod usage;

#[cfg(test)]
mod testkit;

pub use approval::{ApprovalTrust, verify_approval, verify_approvals};
pub use batch::{MAX_BATCH_ENTRIES, approval_entry, batch_statement, sign_batch};
pub use cache::StatementCache;
pub use cert::{
    Identity, KeyKind, KeyTypeError, MIN_RSA_BITS, SanError, Sans, csr_der_from_pem, name_identity,
    serial_hex, sha256,
};
pub use lineage::{LINEAGE_OID, Lineage};
pub use renewal::{RenewalInput, RenewalProof, verify_renewal};
pub use revocation::{RevocationProof, RevokedBy, revoking_groups, verify_revocation};
pub use statement::{
    APPROVAL_CONTEXT, BATCH_APPROVAL_CONTEXT, EvidenceError, MAX_CLOCK_SKEW, RENEWAL_CONTEXT,
    REVOCATION_CONTEXT, StatementKey, sign_statement, signed_bytes,
};
pub use strict::check_strict_der;
pub use usage::Usage;

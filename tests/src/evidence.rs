//! Signed evidence as an admin or a certificate holder makes it: approval
//! and renewal statements signed under their contexts, and the hashes they
//! bind. The one place the harness reaches the evidence code.
//!
//! It must never verify evidence (that is the signer's job under test).

use certsign_evidence as imp;
use certsign_proto::v1::{
    ApprovalEntry, ApprovalStatement, Decision, RenewalStatement, SignedStatement,
};
use prost::Message as _;
use rcgen::KeyPair;

pub use certsign_evidence::{APPROVAL_CONTEXT, BATCH_APPROVAL_CONTEXT, RENEWAL_CONTEXT};

/// Signs `bytes` under `context` with `key`, chain `chain`.
pub fn sign_bytes(
    context: &'static str,
    bytes: Vec<u8>,
    key: &KeyPair,
    chain: Vec<Vec<u8>>,
) -> SignedStatement {
    imp::sign_statement(context, bytes, key, chain).unwrap()
}

/// Signs an approval statement under the approval context.
pub fn sign_approval(
    st: &ApprovalStatement,
    key: &KeyPair,
    chain: Vec<Vec<u8>>,
) -> SignedStatement {
    sign_bytes(APPROVAL_CONTEXT, st.encode_to_vec(), key, chain)
}

/// The bound fields of `st` as a batch entry.
pub fn entry_of(st: &ApprovalStatement) -> ApprovalEntry {
    ApprovalEntry {
        request_uid: st.request_uid.clone(),
        request_name: st.request_name.clone(),
        csr_sha256: st.csr_sha256.clone(),
        signer_name: st.signer_name.clone(),
        usages: st.usages.clone(),
        expiration_seconds: st.expiration_seconds,
        requestor: st.requestor.clone(),
    }
}

/// Signs ONE batch statement over the bound fields of `statements` (the
/// decision and signed_at of the first): one SignedStatement per
/// statement, in order, each with its own entry and inclusion proof.
pub fn sign_batch(
    statements: &[ApprovalStatement],
    key: &KeyPair,
    chain: Vec<Vec<u8>>,
) -> Vec<SignedStatement> {
    let first = &statements[0];
    let entries: Vec<ApprovalEntry> = statements.iter().map(entry_of).collect();
    let decision = Decision::try_from(first.decision).unwrap_or(Decision::Unspecified);
    imp::sign_batch(
        &entries,
        decision,
        first.signed_at.unwrap_or_default(),
        key,
        chain,
    )
    .unwrap()
}

/// Signs a renewal statement under the renewal context.
pub fn sign_renewal(st: &RenewalStatement, key: &KeyPair, chain: Vec<Vec<u8>>) -> SignedStatement {
    sign_bytes(RENEWAL_CONTEXT, st.encode_to_vec(), key, chain)
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    imp::sha256(bytes).to_vec()
}

/// The DER of a CSR PEM.
pub fn csr_der(pem: &[u8]) -> Vec<u8> {
    imp::csr_der_from_pem(pem).unwrap()
}

/// SHA-256 of a CSR PEM's DER (what a statement binds).
pub fn csr_sha256(pem: &[u8]) -> Vec<u8> {
    sha256(&csr_der(pem))
}

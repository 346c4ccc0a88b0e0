//! Recording an admin's decision (the Approve and Deny RPCs after
//! authentication): who may decide for the request's signer name, a dry
//! run of the transition (kubectl's texts for conflicting decisions before
//! any evidence is looked at), separation of duties by subject (nobody
//! approves a certificate in their own name), the signed statement verified
//! with the same code the signer runs, then the transition in the store's
//! writer.
//!
//! This module must never record an approval without a verified statement
//! signed with the caller's own client certificate, except for a signer
//! name configured `approval = "approver"` when the caller chose
//! [`Evidence::TrustedApprover`] (the Kubernetes face, which carries no
//! signature); and never show a caller a request it may not read.

use std::time::SystemTime;

use certsign_evidence::{self as evidence, ApprovalTrust};
use certsign_proto::v1::{CertificateSigningRequest, Decision, SignedStatement};

use crate::access;
use crate::authn::Caller;
use crate::config::{ApprovalMode, Config};
use crate::decision::{self, DecisionInput};
use crate::status::ServiceError;
use crate::store::Store;

/// What recording a decision works with besides the call itself.
#[derive(Debug, Clone, Copy)]
pub struct Recorder<'a> {
    pub store: &'a Store,
    /// Admin statement certificates chain to the client CA.
    pub approval_trust: &'a ApprovalTrust,
}

/// What a decision carries as its proof.
#[derive(Debug, Clone)]
pub enum Evidence {
    /// The gRPC face: an approval needs a signed statement from the
    /// deciding admin; a denial may carry one.
    Statement(Option<SignedStatement>),
    /// The Kubernetes face: no signature. Accepted only for signer names
    /// whose signer trusts the approver's decision (`approval =
    /// "approver"`); refused (403) everywhere else, so no unsigned decision
    /// ever reaches a signer that needs signed evidence.
    TrustedApprover,
}

/// The refusal of an unsigned approval for a signer name that needs a
/// signed one.
pub fn unsigned_refused(signer_name: &str) -> String {
    format!(
        "signerName {signer_name:?} requires a signed approval: approve it with `certctl certificate approve` (an approval through the Kubernetes API carries no signature)"
    )
}

fn spec_of(csr: &CertificateSigningRequest) -> certsign_proto::v1::CertificateSigningRequestSpec {
    csr.spec.clone().unwrap_or_default()
}

impl Recorder<'_> {
    /// Verify a signed statement from the caller: its signing certificate
    /// must be the caller's own client certificate.
    fn verify_statement(
        &self,
        cfg: &Config,
        id: &Caller,
        signed: &SignedStatement,
        obj: &CertificateSigningRequest,
        expected: Decision,
        groups: &[String],
    ) -> Result<(), ServiceError> {
        let context = if expected == Decision::Approve {
            "approval statement refused"
        } else {
            "denial statement refused"
        };
        if signed.certificate_chain.first().map(Vec::as_slice) != id.certificate() {
            return Err(ServiceError::Forbidden(format!(
                "{context}: it must be signed with the key of the caller's own client certificate (certificate_chain[0])"
            )));
        }
        evidence::verify_approval(
            signed,
            obj,
            expected,
            self.approval_trust,
            groups,
            cfg.statement_max_age,
            SystemTime::now(),
        )
        .map(|_| ())
        .map_err(|source| ServiceError::Evidence { context, source })
    }

    // The request's configuration snapshot travels with it explicitly (one
    // snapshot per call), which takes this past clippy's argument count.
    #[allow(clippy::too_many_arguments)]
    pub async fn decide(
        &self,
        cfg: &Config,
        id: Caller,
        name: &str,
        decision: Decision,
        evidence: Evidence,
        reason: String,
        message: String,
    ) -> Result<CertificateSigningRequest, ServiceError> {
        let current = access::readable(self.store, cfg, &id, name).await?;
        let spec = spec_of(&current);
        let groups = access::approver_groups_for(cfg, &id, &spec.signer_name)?;
        let signer_cfg = cfg.signer_name(&spec.signer_name).ok_or_else(|| {
            ServiceError::Precondition(format!(
                "signerName {:?} is no longer served by this deployment",
                spec.signer_name
            ))
        })?;
        let trusted = matches!(evidence, Evidence::TrustedApprover);
        if trusted && decision == Decision::Approve && signer_cfg.approval != ApprovalMode::Approver
        {
            return Err(ServiceError::Forbidden(unsigned_refused(&spec.signer_name)));
        }
        let statement = match evidence {
            Evidence::Statement(s) => s,
            Evidence::TrustedApprover => None,
        };
        let input = DecisionInput {
            actor: id.identity.clone(),
            reason,
            message,
            statement: statement.clone(),
        };
        // Refuse conflicting decisions with kubectl's text before looking
        // at the evidence (a dry run on a copy; the store re-checks).
        let mut probe = current.clone();
        let changed = match decision {
            Decision::Approve => {
                decision::approve(&mut probe, input.clone(), signer_cfg.required_approvals)?
            }
            _ => decision::deny(&mut probe, input.clone())?,
        };
        if !changed {
            return Ok(current);
        }
        if decision == Decision::Approve {
            decision::check_subject(&current, &input.actor)?;
        }
        match (&statement, decision) {
            (Some(s), d) => self.verify_statement(cfg, &id, s, &current, d, &groups)?,
            (None, Decision::Approve) if !trusted => {
                return Err(ServiceError::BadRequest(
                    "approval: a signed ApprovalStatement from the approving admin is required"
                        .into(),
                ));
            }
            (None, _) => {}
        }
        let required = signer_cfg.required_approvals;
        let updated = self
            .store
            .update(name, move |c| match decision {
                Decision::Approve => decision::approve(c, input, required),
                _ => decision::deny(c, input),
            })
            .await?;
        tracing::info!(%name, admin = %id.username, ?decision, "recorded decision");
        Ok(updated)
    }
}

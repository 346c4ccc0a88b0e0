//! Decisions and state transitions on a CertificateSigningRequest object.
//!
//! Pure functions over the stored object: approve (with an M-of-N quorum of
//! distinct admins), deny, fail, issue, and the derived state and kubectl
//! CONDITION column. Conditions are only ever added, never removed, and
//! Approved and Denied stay mutually exclusive. This module must never check
//! who may decide (that is `decide.rs` with the config) nor verify
//! signatures (that is `certsign_evidence`); it only records.

use std::time::{SystemTime, UNIX_EPOCH};

use certsign_proto::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    Decision, DecisionRecord, SignedStatement,
};

pub const APPROVED: &str = "Approved";
pub const DENIED: &str = "Denied";
pub const FAILED: &str = "Failed";

/// Where a request is in its life; stored as an indexed column so the
/// forwarder and the limits can find requests without decoding objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No condition yet (possibly with some approvals short of quorum).
    Pending,
    /// Approved, waiting for the signer.
    Approved,
    /// Approved and a certificate is set.
    Issued,
    Denied,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Issued => "issued",
            State::Denied => "denied",
            State::Failed => "failed",
        }
    }
}

/// The deciding identity.
pub type Actor = certsign_evidence::Identity;

/// Why a decision cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecisionError {
    /// kubectl's text for approving a denied request (and the reverse).
    #[error("certificate signing request {name:?} is already {condition}")]
    Conflicting {
        name: String,
        condition: &'static str,
    },
    /// Separation of duties: the requestor never counts as an approver.
    #[error("user {username:?} requested {name:?} and may not approve it")]
    SelfApproval { name: String, username: String },
    /// Separation of duties by subject: nobody approves a certificate that
    /// would carry their own username as its subject CN (whoever asked).
    #[error(
        "separation of duties: user {username:?} may not approve {name:?}, whose subject CN is the user's own username"
    )]
    SubjectApproval { name: String, username: String },
}

/// The current time as a protobuf timestamp, whole seconds as Kubernetes.
pub fn now() -> prost_types::Timestamp {
    timestamp(SystemTime::now())
}

/// A `SystemTime` as a protobuf timestamp (whole seconds).
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }
}

fn conditions(csr: &CertificateSigningRequest) -> &[CertificateSigningRequestCondition] {
    csr.status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
}

/// The condition of type `ty`, if present.
pub fn condition<'a>(
    csr: &'a CertificateSigningRequest,
    ty: &str,
) -> Option<&'a CertificateSigningRequestCondition> {
    conditions(csr).iter().find(|c| c.r#type == ty)
}

fn has_certificate(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .is_some_and(|s| !s.certificate.is_empty())
}

/// The derived state.
pub fn state_of(csr: &CertificateSigningRequest) -> State {
    if condition(csr, DENIED).is_some() {
        State::Denied
    } else if condition(csr, FAILED).is_some() {
        State::Failed
    } else if has_certificate(csr) {
        State::Issued
    } else if condition(csr, APPROVED).is_some() {
        State::Approved
    } else {
        State::Pending
    }
}

/// kubectl's CONDITION column (`extractCSRStatus`).
pub fn condition_column(csr: &CertificateSigningRequest) -> String {
    let mut s = if condition(csr, DENIED).is_some() {
        "Denied".to_string()
    } else if condition(csr, APPROVED).is_some() {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if condition(csr, FAILED).is_some() {
        s.push_str(",Failed");
    }
    if has_certificate(csr) {
        s.push_str(",Issued");
    }
    s
}

fn status_mut(csr: &mut CertificateSigningRequest) -> &mut CertificateSigningRequestStatus {
    csr.status.get_or_insert_with(Default::default)
}

fn name_of(csr: &CertificateSigningRequest) -> String {
    csr.metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

fn requestor(csr: &CertificateSigningRequest) -> &str {
    csr.spec.as_ref().map(|s| s.username.as_str()).unwrap_or("")
}

/// Separation of duties by subject: refuses `actor` approving a request
/// whose CSR subject has `actor`'s username as a CN. A CSR that cannot be
/// read counts as naming everyone (fail closed); admission only stores
/// requests whose CSR parsed and verified. The subject never changes after
/// create, so checking it once per decision call is enough.
pub fn check_subject(csr: &CertificateSigningRequest, actor: &Actor) -> Result<(), DecisionError> {
    if subject_names(csr, &actor.username) {
        return Err(DecisionError::SubjectApproval {
            name: name_of(csr),
            username: actor.username.clone(),
        });
    }
    Ok(())
}

fn subject_names(csr: &CertificateSigningRequest, username: &str) -> bool {
    use x509_parser::prelude::{FromDer, X509CertificationRequest};
    let request = csr
        .spec
        .as_ref()
        .map(|s| s.request.as_slice())
        .unwrap_or(&[]);
    let Some(der) = certsign_evidence::csr_der_from_pem(request) else {
        return true;
    };
    let Ok((_, parsed)) = X509CertificationRequest::from_der(&der) else {
        return true;
    };
    parsed
        .certification_request_info
        .subject
        .iter_common_name()
        .any(|cn| cn.as_str().map_or(true, |v| v == username))
}

fn add_condition(csr: &mut CertificateSigningRequest, ty: &str, reason: &str, message: &str) {
    let t = now();
    status_mut(csr)
        .conditions
        .push(CertificateSigningRequestCondition {
            r#type: ty.to_string(),
            status: "True".to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_update_time: Some(t),
            last_transition_time: Some(t),
        });
}

/// Distinct usernames that have recorded an approval.
pub fn approvers(csr: &CertificateSigningRequest) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in csr.status.iter().flat_map(|s| s.decisions.iter()) {
        if d.decision == Decision::Approve as i32 && !out.contains(&d.username) {
            out.push(d.username.clone());
        }
    }
    out
}

/// The signed approval statements on record, one per approving admin.
pub fn approval_statements(csr: &CertificateSigningRequest) -> Vec<SignedStatement> {
    csr.status
        .iter()
        .flat_map(|s| s.decisions.iter())
        .filter(|d| d.decision == Decision::Approve as i32)
        .filter_map(|d| d.statement.clone())
        .collect()
}

/// What an approve or deny carries.
#[derive(Debug, Clone)]
pub struct DecisionInput {
    pub actor: Actor,
    pub reason: String,
    pub message: String,
    pub statement: Option<SignedStatement>,
}

/// Record an approval. Returns whether the object changed. Quorum: the
/// Approved condition is added once `required` distinct admins (never the
/// requestor) have approved; an admin approving twice changes nothing.
pub fn approve(
    csr: &mut CertificateSigningRequest,
    input: DecisionInput,
    required: u32,
) -> Result<bool, DecisionError> {
    let name = name_of(csr);
    if condition(csr, DENIED).is_some() {
        return Err(DecisionError::Conflicting {
            name,
            condition: DENIED,
        });
    }
    if condition(csr, FAILED).is_some() {
        return Err(DecisionError::Conflicting {
            name,
            condition: FAILED,
        });
    }
    if input.actor.username == requestor(csr) {
        return Err(DecisionError::SelfApproval {
            name,
            username: input.actor.username,
        });
    }
    if condition(csr, APPROVED).is_some() {
        // Already approved: a further approval adds nothing.
        return Ok(false);
    }
    if approvers(csr).contains(&input.actor.username) {
        return Ok(false);
    }
    let (reason, message) = record(
        csr,
        Decision::Approve,
        input,
        (
            "KubectlApprove",
            "This CSR was approved by kubectl certificate approve.",
        ),
    );
    let have = u32::try_from(approvers(csr).len()).unwrap_or(u32::MAX);
    if have >= required {
        add_condition(csr, APPROVED, &reason, &message);
    }
    Ok(true)
}

/// Record an automatic approval (renewal or a configured rule).
pub fn auto_approve(csr: &mut CertificateSigningRequest, message: &str) {
    if condition(csr, APPROVED).is_none() {
        add_condition(csr, APPROVED, "AutoApproved", message);
    }
}

/// Record a denial. Returns whether the object changed.
pub fn deny(
    csr: &mut CertificateSigningRequest,
    input: DecisionInput,
) -> Result<bool, DecisionError> {
    if condition(csr, APPROVED).is_some() {
        return Err(DecisionError::Conflicting {
            name: name_of(csr),
            condition: APPROVED,
        });
    }
    if condition(csr, DENIED).is_some() {
        return Ok(false);
    }
    let (reason, message) = record(
        csr,
        Decision::Deny,
        input,
        (
            "KubectlDeny",
            "This CSR was denied by kubectl certificate deny.",
        ),
    );
    add_condition(csr, DENIED, &reason, &message);
    Ok(true)
}

/// Record the signer's refusal (terminal). Returns whether anything changed.
pub fn fail(csr: &mut CertificateSigningRequest, message: &str) -> bool {
    if state_of(csr) != State::Approved {
        return false;
    }
    add_condition(csr, FAILED, "SignerValidationFailure", message);
    true
}

/// Set the issued certificate, once, on an approved request: the leaf and
/// any intermediates, without the root the signer sends after them
/// ([`crate::chain`]).
pub fn issue(csr: &mut CertificateSigningRequest, certificate_pem: Vec<u8>) -> bool {
    if state_of(csr) != State::Approved {
        return false;
    }
    let certificate_pem = match crate::chain::leaf_and_intermediates(&certificate_pem) {
        std::borrow::Cow::Owned(trimmed) => trimmed,
        std::borrow::Cow::Borrowed(_) => certificate_pem,
    };
    status_mut(csr).certificate = certificate_pem;
    true
}

/// Appends `input` as a decision record, with kubectl's reason and message
/// (`defaults`) where the caller gave none; returns the reason and message
/// used, for the condition.
fn record(
    csr: &mut CertificateSigningRequest,
    decision: Decision,
    input: DecisionInput,
    defaults: (&str, &str),
) -> (String, String) {
    let or_default = |given: String, default: &str| {
        if given.is_empty() {
            default.to_string()
        } else {
            given
        }
    };
    let reason = or_default(input.reason, defaults.0);
    let message = or_default(input.message, defaults.1);
    status_mut(csr).decisions.push(DecisionRecord {
        decision: decision as i32,
        username: input.actor.username,
        groups: input.actor.groups,
        reason: reason.clone(),
        message: message.clone(),
        time: Some(now()),
        statement: input.statement,
    });
    (reason, message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use certsign_proto::v1::{CertificateSigningRequestSpec, ObjectMeta};

    /// A request by alice for a certificate whose subject CN is `cn`.
    fn csr_for(cn: &str) -> CertificateSigningRequest {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        CertificateSigningRequest {
            metadata: Some(ObjectMeta {
                name: "r1".into(),
                ..Default::default()
            }),
            spec: Some(CertificateSigningRequestSpec {
                username: "alice".into(),
                request: pem.into_bytes(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn csr() -> CertificateSigningRequest {
        csr_for("alice")
    }

    fn by(u: &str) -> DecisionInput {
        DecisionInput {
            actor: Actor {
                username: u.into(),
                groups: vec!["system:masters".into()],
            },
            reason: String::new(),
            message: String::new(),
            statement: None,
        }
    }

    #[test]
    fn quorum_of_distinct_admins() {
        let mut c = csr();
        assert!(approve(&mut c, by("a1"), 2).unwrap());
        assert_eq!(condition_column(&c), "Pending");
        assert!(!approve(&mut c, by("a1"), 2).unwrap());
        assert_eq!(approvers(&c), vec!["a1"]);
        assert!(approve(&mut c, by("a2"), 2).unwrap());
        assert_eq!(condition_column(&c), "Approved");
        assert_eq!(state_of(&c), State::Approved);
        assert_eq!(condition(&c, APPROVED).unwrap().reason, "KubectlApprove");
        assert!(issue(&mut c, b"pem".to_vec()));
        assert_eq!(condition_column(&c), "Approved,Issued");
        assert!(!issue(&mut c, b"other".to_vec()));
    }

    #[test]
    fn requestor_never_counts() {
        let mut c = csr();
        assert!(matches!(
            approve(&mut c, by("alice"), 1),
            Err(DecisionError::SelfApproval { .. })
        ));
    }

    #[test]
    fn nobody_approves_a_certificate_naming_themselves() {
        // alice asks for a certificate in a1's name: a1 may not approve it.
        let c = csr_for("a1");
        let e = check_subject(&c, &by("a1").actor).unwrap_err();
        assert_eq!(
            e.to_string(),
            "separation of duties: user \"a1\" may not approve \"r1\", whose subject CN is the user's own username"
        );
        // Another admin may.
        check_subject(&c, &by("a2").actor).unwrap();
        // A request whose CSR cannot be read is refused (fail closed).
        let mut broken = csr();
        broken.spec.as_mut().unwrap().request = b"garbage".to_vec();
        assert!(matches!(
            check_subject(&broken, &by("a2").actor),
            Err(DecisionError::SubjectApproval { .. })
        ));
    }

    #[test]
    fn approve_and_deny_exclusive_with_kubectl_text() {
        let mut c = csr();
        assert!(deny(&mut c, by("a1")).unwrap());
        assert_eq!(
            approve(&mut c, by("a2"), 1).unwrap_err().to_string(),
            "certificate signing request \"r1\" is already Denied"
        );
        let mut c = csr();
        approve(&mut c, by("a1"), 1).unwrap();
        assert_eq!(
            deny(&mut c, by("a2")).unwrap_err().to_string(),
            "certificate signing request \"r1\" is already Approved"
        );
        assert!(fail(&mut c, "nope"));
        assert_eq!(condition_column(&c), "Approved,Failed");
        assert_eq!(state_of(&c), State::Failed);
    }
}

//! Every way an RPC can fail ([`ServiceError`]) and the one mapping from
//! those errors to `tonic::Status` ([`to_status`]). Internal details
//! (database errors) are logged here, never sent.
//!
//! This module must never decide anything; it only names and maps.

use certsign_evidence::EvidenceError;
use tonic::Status;

use crate::authn::AuthnError;
use crate::decision::DecisionError;
use crate::limits::LimitError;
use crate::store::{StoreError, UpdateError};
use crate::validation::Invalid;

/// Every way an RPC can fail, before it becomes a `Status`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error(transparent)]
    Unauthenticated(#[from] AuthnError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Decision(#[from] DecisionError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{context}: {source}")]
    Evidence {
        context: &'static str,
        source: EvidenceError,
    },
    /// Something other than a request is not there (the message names it).
    #[error("{0}")]
    NotFound(String),
    /// Stored, but its next step (a signer) cannot be reached yet.
    #[error("{0}")]
    Unavailable(String),
    /// A signer's refusal, passed on with its code and message.
    #[error("{message}")]
    Signer { code: tonic::Code, message: String },
    /// A watch resumed from a version whose later events were pruned
    /// (Kubernetes' 410 Gone; the client lists again).
    #[error("too old resource version: {requested} ({pruned_through})")]
    TooOldResourceVersion { requested: i64, pruned_through: i64 },
    /// A watch fell too far behind its events.
    #[error("watch fell too far behind; list again and start a new watch")]
    WatchLagged,
}

impl<E: Into<ServiceError>> From<UpdateError<E>> for ServiceError {
    fn from(e: UpdateError<E>) -> Self {
        match e {
            UpdateError::Store(s) => ServiceError::Store(s),
            UpdateError::Rejected(r) => r.into(),
        }
    }
}

/// Longest status message sent, in bytes. The message travels in an HTTP/2
/// trailer (percent-encoded, so up to 3x longer); a very long one (e.g. 1000
/// aggregated field errors) overflows the peer's header limit and the client
/// sees an opaque INTERNAL instead of the INVALID_ARGUMENT it was given.
pub const MAX_STATUS_MESSAGE: usize = 2048;

/// The one mapping from errors to gRPC statuses. Internal details (database
/// errors) are logged, not sent.
pub fn to_status(e: &ServiceError) -> Status {
    let status = to_status_unbounded(e);
    let msg = status.message();
    if msg.len() <= MAX_STATUS_MESSAGE {
        return status;
    }
    let mut cut = MAX_STATUS_MESSAGE;
    while !msg.is_char_boundary(cut) {
        cut -= 1;
    }
    Status::new(
        status.code(),
        format!("{}... ({} more bytes)", &msg[..cut], msg.len() - cut),
    )
}

fn to_status_unbounded(e: &ServiceError) -> Status {
    use ServiceError as E;
    match e {
        E::Unauthenticated(a) => Status::unauthenticated(a.to_string()),
        E::Invalid(i) => Status::invalid_argument(i.to_string()),
        E::BadRequest(m) => Status::invalid_argument(m.clone()),
        E::Store(StoreError::NotFound(_)) => Status::not_found(e.to_string()),
        E::Store(StoreError::AlreadyExists(_)) => Status::already_exists(e.to_string()),
        E::Store(StoreError::PendingLimit { .. }) => Status::resource_exhausted(e.to_string()),
        E::Store(StoreError::TokenExhausted { .. }) => Status::unauthenticated(e.to_string()),
        E::Store(other) => {
            tracing::error!(error = %other, "storage failure");
            Status::unavailable("the request store is unavailable; retry later")
        }
        E::Decision(DecisionError::Conflicting { .. }) => {
            Status::failed_precondition(e.to_string())
        }
        E::Decision(DecisionError::SelfApproval { .. } | DecisionError::SubjectApproval { .. }) => {
            Status::permission_denied(e.to_string())
        }
        E::Limit(_) => Status::resource_exhausted(e.to_string()),
        E::Forbidden(m) => Status::permission_denied(m.clone()),
        E::Precondition(m) => Status::failed_precondition(m.clone()),
        E::WatchLagged => Status::aborted(e.to_string()),
        E::TooOldResourceVersion { .. } => Status::out_of_range(e.to_string()),
        E::NotFound(m) => Status::not_found(m.clone()),
        E::Unavailable(m) => Status::unavailable(m.clone()),
        E::Signer { code, message } => Status::new(*code, message.clone()),
        E::Evidence { source, .. } => match source {
            EvidenceError::GroupNotAllowed { .. } | EvidenceError::SelfApproval(_) => {
                Status::permission_denied(e.to_string())
            }
            _ => Status::invalid_argument(e.to_string()),
        },
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        to_status(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{FieldError, Value};

    #[test]
    fn long_messages_are_cut_but_keep_their_code() {
        let errors = (0..1000)
            .map(|i| FieldError::Invalid {
                field: format!("spec.usages[{i}]"),
                value: Value::Str("client auth".into()),
                detail: "duplicate".into(),
            })
            .collect();
        let s = to_status(&ServiceError::Invalid(Invalid {
            name: "x".into(),
            errors,
        }));
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message().len() < MAX_STATUS_MESSAGE + 64,
            "{}",
            s.message().len()
        );
        assert!(s.message().ends_with("more bytes)"), "{}", s.message());
        let short = to_status(&ServiceError::BadRequest("short".into()));
        assert_eq!(short.message(), "short");
    }

    #[test]
    fn a_lagging_watch_is_aborted_with_advice() {
        let s = to_status(&ServiceError::WatchLagged);
        assert_eq!(s.code(), tonic::Code::Aborted);
        assert_eq!(
            s.message(),
            "watch fell too far behind; list again and start a new watch"
        );
    }
}

//! Errors of the Kubernetes face as `metav1.Status` with Kubernetes'
//! codes, reasons and messages (kubectl then prints `Error from server
//! (NotFound): ...`, `The CertificateSigningRequest "x" is invalid: ...`).
//! [`from_service`] is the one mapping from the approver's
//! [`ServiceError`] to an HTTP status and a Status body, as
//! [`crate::status::to_status`] is for gRPC.
//!
//! This module must never decide anything and never send internal details
//! (database errors are logged by name only).

use http::StatusCode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

use crate::authn::AuthnError;
use crate::decision::DecisionError;
use crate::status::ServiceError;
use crate::store::StoreError;
use crate::validation::FieldError;

/// The group every object of this face belongs to.
pub const GROUP: &str = "certificates.k8s.io";
/// The resource (plural), as Kubernetes names it in errors.
pub const RESOURCE: &str = "certificatesigningrequests";

/// An error answer: the HTTP status and its Status body.
#[derive(Debug, Clone)]
pub struct KubeError {
    pub code: StatusCode,
    /// Boxed: errors travel in every `Result` of the face.
    pub status: Box<Status>,
}

impl KubeError {
    /// A failure Status with `code`, `reason` and `message`.
    pub fn new(code: StatusCode, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            status: Box::new(Status {
                code: Some(i32::from(code.as_u16())),
                message: Some(message.into()),
                reason: Some(reason.to_string()),
                status: Some("Failure".into()),
                ..Default::default()
            }),
        }
    }

    /// Details naming the object (`kind` holds the resource, as Kubernetes).
    pub fn named(mut self, name: &str) -> Self {
        self.status.details = Some(StatusDetails {
            name: (!name.is_empty()).then(|| name.to_string()),
            group: Some(GROUP.into()),
            kind: Some(RESOURCE.into()),
            ..Default::default()
        });
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_found_path() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    pub fn method_not_allowed(method: &http::Method) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// `<resource> "<name>" is forbidden: <why>` (Kubernetes' forbiddenMessage:
    /// the prefix names the resource without its subresource).
    pub fn forbidden(resource: &str, name: &str, why: &str) -> Self {
        let resource = resource.split('/').next().unwrap_or(RESOURCE);
        let prefix = if name.is_empty() {
            format!("{resource}.{GROUP} is forbidden: ")
        } else {
            format!("{resource}.{GROUP} {name:?} is forbidden: ")
        };
        let message = if why.starts_with(&prefix) {
            why.to_string()
        } else {
            format!("{prefix}{why}")
        };
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message).named(name)
    }

    /// `CertificateSigningRequest in version "v1" cannot be handled as a
    /// CertificateSigningRequest: <why>` (a body that does not decode).
    pub fn undecodable(why: &str) -> Self {
        Self::bad_request(format!(
            "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: {why}"
        ))
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    pub fn unsupported_media_type(given: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {given:?})"
            ),
        )
    }

    /// A watch that cannot resume from where it was asked to.
    pub fn expired(message: &str) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }
}

fn cause(e: &FieldError) -> StatusCause {
    let (reason, field) = match e {
        FieldError::Required { field, .. } => ("FieldValueRequired", field),
        FieldError::Invalid { field, .. } => ("FieldValueInvalid", field),
        FieldError::NotSupported { field, .. } => ("FieldValueNotSupported", field),
        FieldError::Duplicate { field, .. } => ("FieldValueDuplicate", field),
        FieldError::TooLong { field, .. } => ("FieldValueTooLong", field),
    };
    let text = e.to_string();
    let message = text
        .strip_prefix(&format!("{field}: "))
        .unwrap_or(&text)
        .to_string();
    StatusCause {
        field: Some(field.clone()),
        message: Some(message),
        reason: Some(reason.into()),
    }
}

/// The one mapping from the approver's errors to this face's answers.
/// `resource` is what the call acted on (`certificatesigningrequests` or
/// `certificatesigningrequests/approval`), `name` the object, if any.
pub fn from_service(e: &ServiceError, resource: &str, name: &str) -> KubeError {
    use ServiceError as E;
    let msg = e.to_string();
    match e {
        E::Unauthenticated(AuthnError::TokenNotAllowed) => {
            KubeError::forbidden(resource, name, &msg)
        }
        E::Unauthenticated(_) => KubeError::unauthorized(),
        E::Invalid(i) => {
            let mut k = KubeError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", msg.clone());
            k.status.details = Some(StatusDetails {
                name: Some(i.name.clone()),
                group: Some(GROUP.into()),
                kind: Some("CertificateSigningRequest".into()),
                causes: Some(i.errors.iter().map(cause).collect()),
                ..Default::default()
            });
            k
        }
        E::BadRequest(m) => KubeError::bad_request(m.clone()),
        E::Store(StoreError::NotFound(n)) => {
            KubeError::new(StatusCode::NOT_FOUND, "NotFound", msg.clone()).named(n)
        }
        E::Store(StoreError::AlreadyExists(n)) => {
            KubeError::new(StatusCode::CONFLICT, "AlreadyExists", msg.clone()).named(n)
        }
        E::Store(StoreError::PendingLimit { .. }) | E::Limit(_) => {
            KubeError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", msg)
        }
        E::Store(StoreError::TokenExhausted { .. }) => {
            KubeError::new(StatusCode::UNAUTHORIZED, "Unauthorized", msg)
        }
        E::Store(other) => {
            tracing::error!(error = %other, "storage failure");
            KubeError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the request store is unavailable; retry later",
            )
        }
        E::Decision(DecisionError::Conflicting { .. }) | E::Precondition(_) => {
            KubeError::new(StatusCode::CONFLICT, "Conflict", msg).named(name)
        }
        E::Decision(_) | E::Forbidden(_) => KubeError::forbidden(resource, name, &msg),
        E::Evidence { source, .. } => match source {
            certsign_evidence::EvidenceError::GroupNotAllowed { .. }
            | certsign_evidence::EvidenceError::SelfApproval(_) => {
                KubeError::forbidden(resource, name, &msg)
            }
            _ => KubeError::bad_request(msg),
        },
        E::NotFound(m) => KubeError::new(StatusCode::NOT_FOUND, "NotFound", m.clone()),
        E::Unavailable(m) => KubeError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            m.clone(),
        ),
        E::Signer { message, .. } => KubeError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            message.clone(),
        ),
        E::WatchLagged | E::TooOldResourceVersion { .. } => KubeError::expired(&msg),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::validation::Invalid;

    #[test]
    fn not_found_is_kubernetes_status() {
        let e = from_service(
            &ServiceError::Store(StoreError::NotFound("x".into())),
            RESOURCE,
            "x",
        );
        assert_eq!(e.code, StatusCode::NOT_FOUND);
        let v = serde_json::to_value(&e.status).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                "message":"certificatesigningrequests.certificates.k8s.io \"x\" not found",
                "reason":"NotFound","details":{"name":"x","group":"certificates.k8s.io",
                "kind":"certificatesigningrequests"},"code":404})
        );
    }

    #[test]
    fn invalid_carries_causes() {
        let e = from_service(
            &ServiceError::Invalid(Invalid {
                name: "bob".into(),
                errors: vec![FieldError::Required {
                    field: "spec.signerName".into(),
                    detail: String::new(),
                }],
            }),
            RESOURCE,
            "bob",
        );
        assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY);
        let d = e.status.details.unwrap();
        assert_eq!(d.kind.as_deref(), Some("CertificateSigningRequest"));
        let c = &d.causes.unwrap()[0];
        assert_eq!(c.message.as_deref(), Some("Required value"));
        assert_eq!(c.reason.as_deref(), Some("FieldValueRequired"));
    }

    #[test]
    fn forbidden_message_is_prefixed_once() {
        let e = KubeError::forbidden(RESOURCE, "x", "no");
        assert_eq!(
            e.status.message.as_deref(),
            Some("certificatesigningrequests.certificates.k8s.io \"x\" is forbidden: no")
        );
    }
}

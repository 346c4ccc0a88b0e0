//! The two reviews kubectl asks about the caller itself:
//! SelfSubjectReview (`kubectl auth whoami`: the username and groups
//! authentication found) and SelfSubjectAccessReview (`kubectl auth can-i`:
//! whether certsign lets the caller do something, answered by
//! [`crate::access::review`]). kubectl sends both as Kubernetes protobuf;
//! JSON is read too. Answers are JSON.
//!
//! Nothing here changes anything, and an answer never comes from the body
//! but the question: the identity is the authenticated caller's.

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, SelfSubjectReviewStatus, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SelfSubjectAccessReview,
    SelfSubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use prost::Message as _;

use super::errors::KubeError;
use super::wire;
use crate::access::{self, AccessQuestion};
use crate::authn::Caller;
use crate::config::Config;

/// `kubectl auth whoami`.
pub fn self_subject_review(id: &Caller) -> SelfSubjectReview {
    let who = crate::service::user_info(id);
    SelfSubjectReview {
        metadata: Default::default(),
        status: Some(SelfSubjectReviewStatus {
            user_info: Some(UserInfo {
                username: Some(who.username),
                groups: Some(who.groups),
                ..Default::default()
            }),
        }),
    }
}

/// `kubectl auth can-i`: the question decoded from `body`, answered.
pub fn self_subject_access_review(
    cfg: &Config,
    id: &Caller,
    media: &str,
    body: &[u8],
) -> Result<SelfSubjectAccessReview, KubeError> {
    let spec = decode_spec(media, body)?;
    let (allowed, reason) = match (&spec.resource_attributes, &spec.non_resource_attributes) {
        (Some(r), None) => {
            let s = |v: &Option<String>| v.clone().unwrap_or_default();
            let question = AccessQuestion {
                verb: s(&r.verb),
                group: s(&r.group),
                resource: s(&r.resource),
                subresource: s(&r.subresource),
                name: s(&r.name),
            };
            access::review(cfg, id, &question)
        }
        (None, Some(n)) => non_resource(n),
        _ => {
            return Err(KubeError::new(
                http::StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
    };
    Ok(SelfSubjectAccessReview {
        metadata: Default::default(),
        spec,
        status: Some(SubjectAccessReviewStatus {
            allowed,
            denied: None,
            evaluation_error: None,
            reason: (!reason.is_empty()).then_some(reason),
        }),
    })
}

/// Non-resource URLs: the discovery, version and OpenAPI documents are
/// readable by everyone authenticated; nothing else exists.
fn non_resource(n: &NonResourceAttributes) -> (bool, String) {
    let path = n.path.as_deref().unwrap_or_default();
    let readable = ["/version", "/api", "/apis", "/openapi/v3"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    if readable && n.verb.as_deref() == Some("get") {
        (true, String::new())
    } else {
        (
            false,
            "certsign serves only discovery and certificatesigningrequests".into(),
        )
    }
}

fn decode_spec(media: &str, body: &[u8]) -> Result<SelfSubjectAccessReviewSpec, KubeError> {
    let undecodable = |e: &dyn std::fmt::Display| {
        KubeError::bad_request(format!("the body is not a SelfSubjectAccessReview: {e}"))
    };
    if media == wire::PROTOBUF {
        let raw =
            wire::unwrap_protobuf(body, "authorization.k8s.io/v1", "SelfSubjectAccessReview")?;
        let review =
            k8s_pb::api::authorization::v1::SelfSubjectAccessReview::decode(raw.as_slice())
                .map_err(|e| undecodable(&e))?;
        let spec = review.spec.unwrap_or_default();
        return Ok(SelfSubjectAccessReviewSpec {
            resource_attributes: spec.resource_attributes.map(|r| ResourceAttributes {
                group: r.group,
                name: r.name,
                namespace: r.namespace,
                resource: r.resource,
                subresource: r.subresource,
                verb: r.verb,
                version: r.version,
                ..Default::default()
            }),
            non_resource_attributes: spec.non_resource_attributes.map(|n| NonResourceAttributes {
                path: n.path,
                verb: n.verb,
            }),
        });
    }
    let review: SelfSubjectAccessReview =
        serde_json::from_slice(body).map_err(|e| undecodable(&e))?;
    Ok(review.spec)
}

//! The one object, three encodings: the approver's stored
//! `certsign.v1.CertificateSigningRequest` (protobuf, what both faces
//! store and read), Kubernetes' JSON object (`k8s-openapi`) and
//! Kubernetes' protobuf object (`k8s-pb`, what `kubectl certificate
//! approve|deny` sends). Field names mirror Kubernetes' on every side, so
//! the conversion is field by field.
//!
//! This module must never carry an identity or a status from a client's
//! body into the store: [`create_request`] keeps only what a create may set
//! (the approver sets the rest from authentication), and decisions travel
//! as conditions the face reads, never as stored status.

use std::collections::BTreeMap;

use certsign_proto::v1 as pb;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
    CertificateSigningRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

/// A protobuf timestamp as Kubernetes' `Time` (whole seconds).
pub fn time(t: &prost_types::Timestamp) -> Time {
    Time(Timestamp::from_second(t.seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn map(m: &std::collections::HashMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// The stored object's metadata as Kubernetes' ObjectMeta.
pub fn meta(m: &pb::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: non_empty(&m.name),
        generate_name: non_empty(&m.generate_name),
        uid: non_empty(&m.uid),
        resource_version: non_empty(&m.resource_version),
        creation_timestamp: m.creation_timestamp.as_ref().map(time),
        labels: map(&m.labels),
        annotations: map(&m.annotations),
        ..Default::default()
    }
}

/// The stored object as Kubernetes' JSON object.
pub fn to_kube(c: &pb::CertificateSigningRequest) -> CertificateSigningRequest {
    let spec = c.spec.clone().unwrap_or_default();
    let status = c.status.clone().unwrap_or_default();
    let extra: BTreeMap<String, Vec<String>> = spec
        .extra
        .iter()
        .map(|(k, v)| (k.clone(), v.items.clone()))
        .collect();
    CertificateSigningRequest {
        metadata: c.metadata.as_ref().map(meta).unwrap_or_default(),
        spec: CertificateSigningRequestSpec {
            request: ByteString(spec.request),
            signer_name: spec.signer_name,
            expiration_seconds: spec.expiration_seconds,
            usages: Some(spec.usages),
            username: Some(spec.username),
            uid: non_empty(&spec.uid),
            groups: (!spec.groups.is_empty()).then_some(spec.groups),
            extra: (!extra.is_empty()).then_some(extra),
        },
        status: Some(CertificateSigningRequestStatus {
            // As the gRPC face serves it: the leaf and intermediates.
            certificate: (!status.certificate.is_empty()).then(|| {
                ByteString(crate::chain::leaf_and_intermediates(&status.certificate).into_owned())
            }),
            conditions: (!status.conditions.is_empty()).then(|| {
                status
                    .conditions
                    .iter()
                    .map(|k| CertificateSigningRequestCondition {
                        type_: k.r#type.clone(),
                        status: k.status.clone(),
                        reason: non_empty(&k.reason),
                        message: non_empty(&k.message),
                        last_update_time: k.last_update_time.as_ref().map(time),
                        last_transition_time: k.last_transition_time.as_ref().map(time),
                    })
                    .collect()
            }),
        }),
    }
}

/// What a create through this face submits: name (or generateName),
/// labels, annotations and the spec fields a requestor sets. Identity and
/// status are not carried (admission sets them).
pub fn create_request(k: &CertificateSigningRequest) -> pb::CreateCertificateSigningRequestRequest {
    let m = &k.metadata;
    let to_map = |b: &Option<BTreeMap<String, String>>| {
        b.iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    pb::CreateCertificateSigningRequestRequest {
        certificate_signing_request: Some(pb::CertificateSigningRequest {
            api_version: "certificates.k8s.io/v1".into(),
            kind: "CertificateSigningRequest".into(),
            metadata: Some(pb::ObjectMeta {
                name: m.name.clone().unwrap_or_default(),
                generate_name: m.generate_name.clone().unwrap_or_default(),
                labels: to_map(&m.labels),
                annotations: to_map(&m.annotations),
                ..Default::default()
            }),
            spec: Some(pb::CertificateSigningRequestSpec {
                request: k.spec.request.0.clone(),
                signer_name: k.spec.signer_name.clone(),
                expiration_seconds: k.spec.expiration_seconds,
                usages: k.spec.usages.clone().unwrap_or_default(),
                ..Default::default()
            }),
            status: None,
        }),
        renewal: None,
    }
}

fn pb_time(t: Option<k8s_pb::apimachinery::pkg::apis::meta::v1::Time>) -> Option<Time> {
    // An empty Time message means "unset" (metav1.Time's protobuf rule).
    let seconds = t?.seconds?;
    Timestamp::from_second(seconds).ok().map(Time)
}

/// Kubernetes' protobuf object (the body of `kubectl certificate
/// approve|deny`) as its JSON object. Only what the approval subresource
/// reads is kept: name, resource version and the conditions.
pub fn from_protobuf(
    p: k8s_pb::api::certificates::v1::CertificateSigningRequest,
) -> CertificateSigningRequest {
    let m = p.metadata.unwrap_or_default();
    let spec = p.spec.unwrap_or_default();
    let status = p.status.unwrap_or_default();
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name: m.name,
            uid: m.uid,
            resource_version: m.resource_version,
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(spec.request.unwrap_or_default()),
            signer_name: spec.signer_name.unwrap_or_default(),
            ..Default::default()
        },
        status: Some(CertificateSigningRequestStatus {
            certificate: None,
            conditions: Some(
                status
                    .conditions
                    .into_iter()
                    .map(|c| CertificateSigningRequestCondition {
                        type_: c.r#type.unwrap_or_default(),
                        status: c.status.unwrap_or_default(),
                        reason: c.reason,
                        message: c.message,
                        last_update_time: pb_time(c.last_update_time),
                        last_transition_time: pb_time(c.last_transition_time),
                    })
                    .collect(),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stored_object_has_kubernetes_json_shape() {
        let c = pb::CertificateSigningRequest {
            metadata: Some(pb::ObjectMeta {
                name: "alice".into(),
                uid: "u1".into(),
                resource_version: "7".into(),
                creation_timestamp: Some(prost_types::Timestamp {
                    seconds: 1_796_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            spec: Some(pb::CertificateSigningRequestSpec {
                request: b"PEM".to_vec(),
                signer_name: "example.com/x".into(),
                expiration_seconds: Some(600),
                usages: vec!["client auth".into()],
                username: "alice".into(),
                ..Default::default()
            }),
            status: None,
            ..Default::default()
        };
        let v = serde_json::to_value(to_kube(&c)).unwrap();
        assert_eq!(v["kind"], "CertificateSigningRequest");
        assert_eq!(v["apiVersion"], "certificates.k8s.io/v1");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(v["metadata"]["creationTimestamp"], "2026-11-30T00:53:20Z");
        assert_eq!(v["spec"]["request"], "UEVN");
        assert_eq!(v["spec"]["expirationSeconds"], 600);
        assert_eq!(v["status"], serde_json::json!({}));
    }
}

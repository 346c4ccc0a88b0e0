//! What kubectl and client libraries ask before anything else: `/version`
//! and the legacy discovery documents (`/api`, `/apis`,
//! `/apis/certificates.k8s.io`, `/apis/certificates.k8s.io/v1`). Only the
//! `certificates.k8s.io/v1` group is served, with the one resource
//! `certificatesigningrequests` (short name `csr`) and its `approval` and
//! `status` subresources, with the verbs this face serves; the core group lists no versions, so clients
//! never ask for `/api/v1`. `/apis` answers aggregated discovery
//! (`apidiscovery.k8s.io/v2`, labelled so in Content-Type, which is how
//! client-go tells the formats apart) when the client lists it in Accept,
//! saving kubectl the per-group request; otherwise, and everywhere else,
//! the legacy documents as plain `application/json`. `k8s-openapi` has no
//! apidiscovery types, so that one document is written as JSON here.
//!
//! This module must never list a resource the face does not serve.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
};
use k8s_openapi::apimachinery::pkg::version::Info;
use serde_json::Value;

use super::errors::{GROUP, RESOURCE};

/// The Kubernetes minor version this face speaks (kubectl warns beyond
/// one minor of skew).
pub const MINOR: &str = "32";

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// `GET /version`.
pub fn version() -> Value {
    json(&Info {
        major: "1".into(),
        minor: MINOR.into(),
        git_version: format!("v1.{MINOR}.0-certsign.{}", env!("CARGO_PKG_VERSION")),
        git_commit: String::new(),
        git_tree_state: "clean".into(),
        build_date: String::new(),
        go_version: String::new(),
        compiler: "rustc".into(),
        platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        ..Default::default()
    })
}

/// `GET /api`: no core versions.
pub fn core() -> Value {
    json(&APIVersions {
        server_address_by_client_cidrs: Vec::new(),
        versions: Vec::new(),
    })
}

/// The group of SelfSubjectReview (`kubectl auth whoami`).
pub const AUTHENTICATION: &str = "authentication.k8s.io";
/// The group of SelfSubjectAccessReview (`kubectl auth can-i`).
pub const AUTHORIZATION: &str = "authorization.k8s.io";

fn group(name: &str) -> APIGroup {
    let v1 = GroupVersionForDiscovery {
        group_version: format!("{name}/v1"),
        version: "v1".into(),
    };
    APIGroup {
        name: name.into(),
        preferred_version: Some(v1.clone()),
        server_address_by_client_cidrs: None,
        versions: vec![v1],
    }
}

/// `GET /apis`.
pub fn groups() -> Value {
    json(&APIGroupList {
        groups: vec![group(GROUP), group(AUTHENTICATION), group(AUTHORIZATION)],
    })
}

/// `GET /apis/certificates.k8s.io`.
pub fn certificates_group() -> Value {
    json(&group(GROUP))
}

/// `GET /apis/authentication.k8s.io`.
pub fn authentication_group() -> Value {
    json(&group(AUTHENTICATION))
}

/// `GET /apis/authorization.k8s.io`.
pub fn authorization_group() -> Value {
    json(&group(AUTHORIZATION))
}

/// The one create-only review resource of `group`.
fn review_resources(group: &str, kind: &str) -> Value {
    let name = format!("{}s", kind.to_ascii_lowercase());
    json(&APIResourceList {
        group_version: format!("{group}/v1"),
        resources: vec![APIResource {
            singular_name: kind.to_ascii_lowercase(),
            name,
            namespaced: false,
            kind: kind.into(),
            verbs: strings(&["create"]),
            ..Default::default()
        }],
    })
}

/// `GET /apis/authentication.k8s.io/v1`: only SelfSubjectReview.
pub fn authentication_resources() -> Value {
    review_resources(AUTHENTICATION, "SelfSubjectReview")
}

/// `GET /apis/authorization.k8s.io/v1`: only SelfSubjectAccessReview.
pub fn authorization_resources() -> Value {
    review_resources(AUTHORIZATION, "SelfSubjectAccessReview")
}

/// An aggregated discovery item for a create-only review resource.
fn aggregated_review(group: &str, kind: &str) -> Value {
    serde_json::json!({
        "metadata": {"name": group, "creationTimestamp": null},
        "versions": [{
            "version": "v1",
            "freshness": "Current",
            "resources": [{
                "resource": format!("{}s", kind.to_ascii_lowercase()),
                "responseKind": {"group": "", "version": "", "kind": kind},
                "scope": "Cluster",
                "singularResource": kind.to_ascii_lowercase(),
                "verbs": ["create"],
            }],
        }],
    })
}

/// The Content-Type of an aggregated discovery answer.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an Accept header asks for aggregated discovery v2.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|t| {
        let params: Vec<&str> = t.split(';').map(str::trim).collect();
        params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

/// `GET /apis` as aggregated discovery v2.
pub fn aggregated() -> Value {
    let kind = serde_json::json!({"group": "", "version": "", "kind": "CertificateSigningRequest"});
    serde_json::json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": [{
            "metadata": {"name": GROUP, "creationTimestamp": null},
            "versions": [{
                "version": "v1",
                "freshness": "Current",
                "resources": [{
                    "resource": RESOURCE,
                    "responseKind": kind,
                    "scope": "Cluster",
                    "singularResource": "certificatesigningrequest",
                    "shortNames": ["csr"],
                    "verbs": ["create", "delete", "get", "list", "patch", "watch"],
                    "subresources": [
                        {"subresource": "approval", "responseKind": kind, "verbs": ["get", "update"]},
                        {"subresource": "status", "responseKind": kind, "verbs": ["get"]},
                    ],
                }],
            }],
        },
        aggregated_review(AUTHENTICATION, "SelfSubjectReview"),
        aggregated_review(AUTHORIZATION, "SelfSubjectAccessReview"),
        ],
    })
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `GET /apis/certificates.k8s.io/v1`: a real server's CSR entries.
pub fn resources() -> Value {
    let sub = |name: &str, verbs: &[&str]| APIResource {
        name: format!("{RESOURCE}/{name}"),
        singular_name: String::new(),
        namespaced: false,
        kind: "CertificateSigningRequest".into(),
        verbs: strings(verbs),
        ..Default::default()
    };
    json(&APIResourceList {
        group_version: format!("{GROUP}/v1"),
        resources: vec![
            APIResource {
                name: RESOURCE.into(),
                singular_name: "certificatesigningrequest".into(),
                namespaced: false,
                kind: "CertificateSigningRequest".into(),
                verbs: strings(&["create", "delete", "get", "list", "patch", "watch"]),
                short_names: Some(strings(&["csr"])),
                storage_version_hash: Some("95fRKMXA+00=".into()),
                ..Default::default()
            },
            sub("approval", &["get", "update"]),
            sub("status", &["get"]),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_list_names_csr() {
        let v = resources();
        assert_eq!(v["kind"], "APIResourceList");
        assert_eq!(v["groupVersion"], "certificates.k8s.io/v1");
        assert_eq!(v["resources"][0]["shortNames"][0], "csr");
        assert_eq!(
            v["resources"][1]["name"],
            "certificatesigningrequests/approval"
        );
        assert_eq!(groups()["groups"][0]["name"], "certificates.k8s.io");
        assert_eq!(groups()["groups"][1]["name"], "authentication.k8s.io");
        assert_eq!(groups()["groups"][2]["name"], "authorization.k8s.io");
        assert_eq!(
            authorization_resources()["resources"][0]["name"],
            "selfsubjectaccessreviews"
        );
        assert_eq!(
            aggregated()["items"][2]["versions"][0]["resources"][0]["resource"],
            "selfsubjectaccessreviews"
        );
        assert_eq!(
            authentication_resources()["resources"][0]["kind"],
            "SelfSubjectReview"
        );
        assert_eq!(core()["versions"], serde_json::json!([]));
        assert_eq!(version()["minor"], "32");
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json"));
        assert_eq!(
            aggregated()["items"][0]["versions"][0]["resources"][0]["shortNames"][0],
            "csr"
        );
    }
}

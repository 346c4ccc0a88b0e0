//! The OpenAPI v3 documents `kubectl create -f` and `apply -f` fetch with
//! their default `--validate=strict`: the root (`/openapi/v3`) mapping
//! `apis/certificates.k8s.io/v1` to its document, and that document, whose
//! PATCH operation carries the CertificateSigningRequest GVK and the
//! `fieldValidation` parameter (so kubectl leaves validation to this
//! server) and lists strategic merge patch (so `apply` patches as against
//! a cluster). The schemas carry the GVK too, for `kubectl explain`.
//! OpenAPI v2 is protobuf-only in client-go and is not served (404).
//!
//! This module must never describe an operation the face does not serve.

use std::sync::OnceLock;

use serde_json::{Value, json};

const GVK: &str = "x-kubernetes-group-version-kind";

fn gvk() -> Value {
    json!([{"group": "certificates.k8s.io", "version": "v1", "kind": "CertificateSigningRequest"}])
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

const CSR: &str = "io.k8s.api.certificates.v1.CertificateSigningRequest";

fn op(action: &str, id: &str, params: &[&str], body: &[&str], ok: &str) -> Value {
    let mut parameters: Vec<Value> = params
        .iter()
        .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    if !body.is_empty() {
        parameters.push(json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}));
    }
    let mut o = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        GVK: gvk()[0].clone(),
        "parameters": parameters,
        "responses": {ok: {"description": "OK", "content": {"application/json": {"schema": schema_ref(CSR)}}}},
    });
    if !body.is_empty() {
        let content: serde_json::Map<String, Value> = body
            .iter()
            .map(|t| (t.to_string(), json!({"schema": schema_ref(CSR)})))
            .collect();
        o["requestBody"] = json!({"content": content, "required": true});
    }
    o
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn schemas() -> Value {
    json!({
        CSR: {
            "type": "object",
            "description": "CertificateSigningRequest objects provide a mechanism to obtain x509 certificates by submitting a certificate signing request, and having it asynchronously approved and issued.",
            "required": ["spec"],
            GVK: gvk(),
            "properties": {
                "apiVersion": string("APIVersion defines the versioned schema of this representation of an object."),
                "kind": string("Kind is a string value representing the REST resource this object represents."),
                "metadata": {"allOf": [schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")], "default": {}},
                "spec": {"allOf": [schema_ref("io.k8s.api.certificates.v1.CertificateSigningRequestSpec")], "default": {},
                         "description": "spec contains the certificate request, and is immutable after creation."},
                "status": {"allOf": [schema_ref("io.k8s.api.certificates.v1.CertificateSigningRequestStatus")], "default": {},
                           "description": "status contains information about whether the request is approved or denied, and the certificate issued by the signer, or the failure condition indicating signer failure."},
            },
        },
        "io.k8s.api.certificates.v1.CertificateSigningRequestSpec": {
            "type": "object",
            "required": ["request", "signerName"],
            "properties": {
                "request": {"type": "string", "format": "byte", "x-kubernetes-list-type": "atomic",
                            "description": "request contains an x509 certificate signing request encoded in a \"CERTIFICATE REQUEST\" PEM block."},
                "signerName": string("signerName indicates the requested signer, and is a qualified name."),
                "expirationSeconds": {"type": "integer", "format": "int32", "description": "expirationSeconds is the requested duration of validity of the issued certificate."},
                "usages": {"type": "array", "items": {"type": "string", "default": ""}, "x-kubernetes-list-type": "atomic",
                           "description": "usages specifies a set of key usages requested in the issued certificate."},
                "username": string("username contains the name of the user that created the CertificateSigningRequest. Populated by the API server on creation and immutable."),
                "uid": string("uid contains the uid of the user that created the CertificateSigningRequest. Populated by the API server on creation and immutable."),
                "groups": {"type": "array", "items": {"type": "string", "default": ""}, "x-kubernetes-list-type": "atomic",
                           "description": "groups contains group membership of the user that created the CertificateSigningRequest. Populated by the API server on creation and immutable."},
                "extra": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string", "default": ""}},
                          "description": "extra contains extra attributes of the user that created the CertificateSigningRequest. Populated by the API server on creation and immutable."},
            },
        },
        "io.k8s.api.certificates.v1.CertificateSigningRequestStatus": {
            "type": "object",
            "properties": {
                "conditions": {"type": "array", "items": {"allOf": [schema_ref("io.k8s.api.certificates.v1.CertificateSigningRequestCondition")], "default": {}},
                               "x-kubernetes-list-map-keys": ["type"], "x-kubernetes-list-type": "map",
                               "description": "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\"."},
                "certificate": {"type": "string", "format": "byte", "x-kubernetes-list-type": "atomic",
                                "description": "certificate is populated with an issued certificate by the signer after an Approved condition is present."},
            },
        },
        "io.k8s.api.certificates.v1.CertificateSigningRequestCondition": {
            "type": "object",
            "required": ["type", "status"],
            "properties": {
                "type": string("type of the condition. Known conditions are \"Approved\", \"Denied\", and \"Failed\"."),
                "status": string("status of the condition, one of True, False, Unknown."),
                "reason": string("reason indicates a brief reason for the request state"),
                "message": string("message contains a human readable message with details about the request state"),
                "lastUpdateTime": {"type": "string", "format": "date-time", "description": "lastUpdateTime is the time of the last update to this condition"},
                "lastTransitionTime": {"type": "string", "format": "date-time", "description": "lastTransitionTime is the time the condition last transitioned from one status to another."},
            },
        },
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
            "type": "object",
            "description": "ObjectMeta is metadata that all persisted resources must have.",
            "properties": {
                "name": string("Name must be unique within a namespace."),
                "generateName": string("GenerateName is an optional prefix, used by the server, to generate a unique name ONLY IF the Name field has not been provided."),
                "uid": string("UID is the unique in time and space value for this object."),
                "resourceVersion": string("An opaque value that represents the internal version of this object."),
                "creationTimestamp": {"type": "string", "format": "date-time", "description": "CreationTimestamp is a timestamp representing the server time when this object was created."},
                "labels": {"type": "object", "additionalProperties": {"type": "string", "default": ""}, "description": "Map of string keys and values that can be used to organize and categorize (scope and select) objects."},
                "annotations": {"type": "object", "additionalProperties": {"type": "string", "default": ""}, "description": "Annotations is an unstructured key value map stored with a resource."},
            },
        },
    })
}

/// The group-version document (`/openapi/v3/apis/certificates.k8s.io/v1`).
pub fn group_version() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let base = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
        let writes = [
            "application/json",
            "application/yaml",
            "application/vnd.kubernetes.protobuf",
        ];
        let patches = [
            "application/strategic-merge-patch+json",
            "application/merge-patch+json",
        ];
        let name = json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}}]);
        json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": {
                base: {
                    "get": op("list", "listCertificatesV1CertificateSigningRequest",
                        &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch", "timeoutSeconds"], &[], "200"),
                    "post": op("post", "createCertificatesV1CertificateSigningRequest", &["fieldManager"], &writes, "201"),
                },
                format!("{base}/{{name}}"): {
                    "parameters": name,
                    "get": op("get", "readCertificatesV1CertificateSigningRequest", &[], &[], "200"),
                    "delete": op("delete", "deleteCertificatesV1CertificateSigningRequest", &[], &[], "200"),
                    "patch": op("patch", "patchCertificatesV1CertificateSigningRequest", &["fieldManager"], &patches, "200"),
                },
                format!("{base}/{{name}}/approval"): {
                    "parameters": name,
                    "get": op("get", "readCertificatesV1CertificateSigningRequestApproval", &[], &[], "200"),
                    "put": op("put", "replaceCertificatesV1CertificateSigningRequestApproval", &["fieldManager"], &writes, "200"),
                },
            },
            "components": {"schemas": schemas()},
        })
    })
}

/// A hash of the group-version document (the `hash` the root points at).
fn hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let bytes = serde_json::to_vec(group_version()).unwrap_or_default();
        hex::encode(&ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()[..16])
    })
}

/// The root (`/openapi/v3`): paths without a leading slash.
pub fn root() -> Value {
    json!({"paths": {"apis/certificates.k8s.io/v1": {
        "serverRelativeURL": format!("/openapi/v3/apis/certificates.k8s.io/v1?hash={}", hash())
    }}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_carries_gvk_and_field_validation() {
        let doc = group_version();
        let patch = &doc["paths"]["/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}"]
            ["patch"];
        assert_eq!(patch[GVK]["kind"], "CertificateSigningRequest");
        assert!(
            patch["parameters"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "fieldValidation"))
        );
        assert!(
            root()["paths"]["apis/certificates.k8s.io/v1"]["serverRelativeURL"]
                .as_str()
                .is_some_and(|u| u.contains("?hash="))
        );
    }
}

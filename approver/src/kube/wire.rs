//! The HTTP wire of the Kubernetes face: reading a request body within the
//! size and time limits, decoding it by its media type (JSON, YAML, or
//! Kubernetes protobuf; no Content-Type is JSON, as kube-apiserver reads
//! the Python client's bodies), server-side field validation
//! (`fieldValidation=Strict|Warn|Ignore`), and building responses (JSON,
//! Status errors, `Warning` headers).
//!
//! This module must never read more than the limit of a body, nor wait for
//! one longer than [`BODY_TIMEOUT`].

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions;
use prost::Message as _;
use serde_json::Value;

use super::convert;
use super::errors::KubeError;

/// Longest a client may take to send a whole body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Every response body of this face.
pub type Body = BoxBody<Bytes, Infallible>;

/// The magic prefix of Kubernetes' protobuf encoding.
const PROTOBUF_MAGIC: &[u8] = b"k8s\0";
/// Kubernetes protobuf (what kubectl sends for typed writes).
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// A JSON answer with `code`.
pub fn json(code: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A Status error answer.
pub fn error(e: &KubeError) -> Response<Body> {
    json(e.code, &e.status)
}

/// Adds one `Warning: 299 - "<text>"` header per warning.
pub fn warn(r: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        let quoted = serde_json::to_string(w).unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {quoted}")) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
}

/// Read the whole body, at most `limit` bytes, within [`BODY_TIMEOUT`].
pub async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, KubeError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await;
    match collected {
        Err(_) => Err(KubeError::new(
            StatusCode::REQUEST_TIMEOUT,
            "Timeout",
            "the request body was not received in time",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(KubeError::too_large(limit))
        }
        Ok(Err(e)) => Err(KubeError::bad_request(format!(
            "the request body could not be read: {e}"
        ))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// How unknown fields in a body are treated (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    pub fn parse(v: Option<&str>) -> Result<Self, KubeError> {
        match v {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(KubeError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict (got {other:?})"
            ))),
        }
    }
}

/// The media type of a request, without parameters (`""` when absent).
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Paths of fields in `input` the typed object does not have (`known` is
/// the typed object serialized back). `null` values are never unknown.
fn unknown_fields(input: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => {
            for (key, v) in i {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => unknown_fields(v, kv, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(k)) => {
            for (n, (iv, kv)) in i.iter().zip(k).enumerate() {
                unknown_fields(iv, kv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Decode a CertificateSigningRequest body by its media type. Returns the
/// object and the warnings to send (unknown fields with `Warn`).
pub fn decode_object(
    media: &str,
    body: &[u8],
    validation: FieldValidation,
) -> Result<(CertificateSigningRequest, Vec<String>), KubeError> {
    let value: Value = match media {
        "" | "application/json" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| KubeError::undecodable(&format!("json: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| KubeError::undecodable("yaml: the body is not UTF-8"))?;
            serde_saphyr::from_str(text)
                .map_err(|e| KubeError::undecodable(&format!("yaml: {e}")))?
        }
        PROTOBUF => return decode_protobuf(body).map(|o| (o, Vec::new())),
        other => return Err(KubeError::unsupported_media_type(other)),
    };
    if !value.is_object() {
        return Err(KubeError::undecodable(
            "the body must be a CertificateSigningRequest object",
        ));
    }
    for (key, want) in [
        ("apiVersion", "certificates.k8s.io/v1"),
        ("kind", "CertificateSigningRequest"),
    ] {
        if let Some(got) = value.get(key).filter(|v| !v.is_null())
            && got.as_str() != Some(want)
        {
            return Err(KubeError::bad_request(format!(
                "{key}: must be {want:?} on this resource (got {got})"
            )));
        }
    }
    let mut object = value.clone();
    // The typed object checks these itself when present; absent is fine.
    if let Some(o) = object.as_object_mut() {
        o.entry("apiVersion")
            .or_insert("certificates.k8s.io/v1".into());
        o.entry("kind")
            .or_insert("CertificateSigningRequest".into());
        o.entry("spec")
            .or_insert_with(|| serde_json::json!({"request": "", "signerName": ""}));
        if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
            spec.entry("request").or_insert("".into());
            spec.entry("signerName").or_insert("".into());
        }
    }
    let typed: CertificateSigningRequest =
        serde_json::from_value(object).map_err(|e| KubeError::undecodable(&e.to_string()))?;
    let mut unknown = Vec::new();
    if validation != FieldValidation::Ignore {
        let known = serde_json::to_value(&typed).unwrap_or(Value::Null);
        unknown_fields(&value, &known, "", &mut unknown);
    }
    let texts: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match validation {
        FieldValidation::Strict if !texts.is_empty() => Err(KubeError::undecodable(&format!(
            "strict decoding error: {}",
            texts.join(", ")
        ))),
        FieldValidation::Warn => Ok((typed, texts)),
        _ => Ok((typed, Vec::new())),
    }
}

/// Apply a JSON merge patch (RFC 7386) to `target`. For a
/// CertificateSigningRequest a strategic merge patch is the same (its
/// lists have no merge strategy); strategic directives (`$patch`,
/// `$setElementOrder/...`, `$retainKeys`, ...) are dropped, never stored.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if k.starts_with('$') {
                continue;
            }
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Decode a PATCH body: merge and strategic merge patches (JSON objects).
pub fn decode_patch(media: &str, body: &[u8]) -> Result<Value, KubeError> {
    match media {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| KubeError::bad_request(format!("the patch is not JSON: {e}")))?;
            if !v.is_object() {
                return Err(KubeError::bad_request("the patch must be a JSON object"));
            }
            Ok(v)
        }
        other => Err(KubeError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
            ),
        )),
    }
}

/// Decode a DELETE body: `DeleteOptions` as JSON, or none. Any other
/// encoding is refused rather than ignored: the options may ask for a dry
/// run or a precondition, and a delete carried out against them cannot be
/// undone.
pub fn decode_delete_options(media: &str, body: &[u8]) -> Result<DeleteOptions, KubeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DeleteOptions::default());
    }
    match media {
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            KubeError::bad_request(format!("the body is not DeleteOptions in JSON: {e}"))
        }),
        other => Err(KubeError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json (got {other:?})"
            ),
        )),
    }
}

/// Kubernetes' protobuf envelope (`k8s\0` + runtime.Unknown) holding a
/// CertificateSigningRequest.
fn decode_protobuf(body: &[u8]) -> Result<CertificateSigningRequest, KubeError> {
    let raw = unwrap_protobuf(body, "certificates.k8s.io/v1", "CertificateSigningRequest")?;
    let csr = k8s_pb::api::certificates::v1::CertificateSigningRequest::decode(raw.as_slice())
        .map_err(|e| KubeError::undecodable(&format!("protobuf: {e}")))?;
    Ok(convert::from_protobuf(csr))
}

/// The object bytes inside Kubernetes' protobuf envelope (`k8s\0` +
/// runtime.Unknown), which must say it holds `api_version` `kind`.
pub fn unwrap_protobuf(body: &[u8], api_version: &str, kind: &str) -> Result<Vec<u8>, KubeError> {
    let bad = |why: &str| KubeError::undecodable(&format!("protobuf: {why}"));
    let rest = body
        .strip_prefix(PROTOBUF_MAGIC)
        .ok_or_else(|| bad("missing the k8s\\0 prefix"))?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(rest)
        .map_err(|e| bad(&e.to_string()))?;
    let meta = unknown.type_meta.unwrap_or_default();
    if meta.api_version.as_deref() != Some(api_version) || meta.kind.as_deref() != Some(kind) {
        return Err(bad(&format!("the object is not a {api_version} {kind}")));
    }
    Ok(unknown.raw.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn strict_validation_names_unknown_fields() {
        let body = br#"{"apiVersion":"certificates.k8s.io/v1","kind":"CertificateSigningRequest",
            "metadata":{"name":"x"},"spec":{"request":"","signerName":"a/b","foo":1}}"#;
        let e = decode_object("application/json", body, FieldValidation::Strict).unwrap_err();
        assert_eq!(
            e.status.message.as_deref(),
            Some(
                "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: strict decoding error: unknown field \"spec.foo\""
            )
        );
        let (_, warnings) = decode_object("", body, FieldValidation::Warn).unwrap();
        assert_eq!(warnings, vec!["unknown field \"spec.foo\"".to_string()]);
        let (_, none) = decode_object("", body, FieldValidation::Ignore).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn merge_patches_replace_remove_and_drop_directives() {
        let mut t = serde_json::json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        merge_patch(
            &mut t,
            &serde_json::json!({"a": {"c": [3], "$setElementOrder/c": [3]}, "d": null, "e": "x"}),
        );
        assert_eq!(t, serde_json::json!({"a": {"b": 1, "c": [3]}, "e": "x"}));
        assert_eq!(
            decode_patch("application/json-patch+json", b"[]")
                .unwrap_err()
                .code,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn bad_bodies_are_bad_requests() {
        let e = decode_object("application/json", b"{", FieldValidation::Strict).unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        let e = decode_object("text/plain", b"{}", FieldValidation::Strict).unwrap_err();
        assert_eq!(e.code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = decode_object(PROTOBUF, b"nope", FieldValidation::Strict).unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn protobuf_envelope_decodes() {
        use k8s_pb::api::certificates::v1 as p;
        let csr = p::CertificateSigningRequest {
            metadata: Some(k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("alice".into()),
                resource_version: Some("5".into()),
                ..Default::default()
            }),
            status: Some(p::CertificateSigningRequestStatus {
                conditions: vec![p::CertificateSigningRequestCondition {
                    r#type: Some("Approved".into()),
                    status: Some("True".into()),
                    reason: Some("KubectlApprove".into()),
                    last_transition_time: Some(Default::default()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some("certificates.k8s.io/v1".into()),
                kind: Some("CertificateSigningRequest".into()),
            }),
            raw: Some(csr.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = PROTOBUF_MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        let (o, _) = decode_object(PROTOBUF, &body, FieldValidation::Strict).unwrap();
        assert_eq!(o.metadata.name.as_deref(), Some("alice"));
        let c = &o.status.unwrap().conditions.unwrap()[0];
        assert_eq!(c.type_, "Approved");
        assert!(c.last_transition_time.is_none());
    }
}

//! Reading Kubernetes `CertificateSigningRequest` manifests for `apply -f`.
//!
//! A manifest (YAML or JSON, one object or a `kind: List`) becomes a
//! [`Manifest`] once it has the shape of a CertificateSigningRequest: the
//! right apiVersion and kind, fields of the right JSON types, and
//! `spec.request` in base64 (what is needed to build the request at all).
//! The values themselves (the CSR, signer name, usages, duration, name,
//! labels) are the server's to judge: it answers with Kubernetes' full list
//! of field errors, which certctl prints as kubectl does; a local copy of
//! those rules could only say it differently. Shape problems of one object
//! are reported together in kubectl's form (`The CertificateSigningRequest
//! "x" is invalid: [...]`). Fields the server sets (spec.username/uid/
//! groups/extra, status, metadata.uid...) and unknown fields are ignored,
//! as kubectl does. This module never talks to the network.

use anyhow::{Result, anyhow, bail};
use base64::Engine as _;
use serde_json::Value;

/// A request ready to be sent: its shape checked, its values as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// metadata.name (may be empty when generate_name is set).
    pub name: String,
    /// metadata.generateName.
    pub generate_name: String,
    /// metadata.labels.
    pub labels: Vec<(String, String)>,
    /// metadata.annotations.
    pub annotations: Vec<(String, String)>,
    /// The decoded spec.request (PEM bytes).
    pub request: Vec<u8>,
    /// spec.signerName.
    pub signer_name: String,
    /// spec.usages.
    pub usages: Vec<String>,
    /// spec.expirationSeconds.
    pub expiration_seconds: Option<i32>,
}

/// Parses a document (JSON, or YAML with one or more `---` documents) into
/// the manifests it holds; a `kind: List` contributes its items. Every
/// invalid object is reported, not just the first.
pub fn parse_document(text: &str) -> Result<Vec<Manifest>> {
    let mut objects = Vec::new();
    for value in parse_values(text)? {
        if value.get("kind").and_then(Value::as_str) == Some("List") {
            let Some(items) = value.get("items").and_then(Value::as_array) else {
                bail!("List has no items");
            };
            objects.extend(items.iter().cloned());
        } else {
            objects.push(value);
        }
    }
    if objects.is_empty() {
        bail!("no objects passed to apply");
    }
    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    for o in &objects {
        match parse_object(o) {
            Ok(m) => manifests.push(m),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(manifests)
}

fn parse_values(text: &str) -> Result<Vec<Value>> {
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        vec![serde_json::from_str(text).map_err(|e| anyhow!("invalid JSON: {e}"))?]
    } else {
        serde_saphyr::from_multiple(text)
            .map_err(|e| anyhow!("invalid YAML: {}", one_line(&e.to_string())))?
    };
    let mut out = Vec::new();
    for v in values {
        match v {
            // Empty documents (a trailing `---`) are skipped, as kubectl does.
            Value::Null => {}
            Value::Object(_) => out.push(v),
            _ => bail!("not a Kubernetes object: expected a mapping with apiVersion and kind"),
        }
    }
    Ok(out)
}

/// Folds a multi-line parser message (serde-saphyr draws source snippets) into
/// its first meaningful line.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("parse error")
        .trim_start_matches("error: ")
        .to_string()
}

/// Parses and checks one object, collecting every field problem.
pub fn parse_object(v: &Value) -> Result<Manifest> {
    let mut errs: Vec<String> = Vec::new();

    match v.get("apiVersion") {
        None => errs.push("apiVersion: Required value".into()),
        Some(Value::String(s)) if s == "certificates.k8s.io/v1" => {}
        Some(other) => errs.push(format!(
            "apiVersion: Unsupported value: {}: supported values: \"certificates.k8s.io/v1\"",
            short(other)
        )),
    }
    match v.get("kind") {
        None => errs.push("kind: Required value".into()),
        Some(Value::String(s)) if s == "CertificateSigningRequest" => {}
        Some(other) => errs.push(format!(
            "kind: Unsupported value: {}: supported values: \"CertificateSigningRequest\"",
            short(other)
        )),
    }

    let mut m = Manifest {
        name: String::new(),
        generate_name: String::new(),
        labels: Vec::new(),
        annotations: Vec::new(),
        request: Vec::new(),
        signer_name: String::new(),
        usages: Vec::new(),
        expiration_seconds: None,
    };

    match v.get("metadata") {
        None => {}
        Some(Value::Object(meta)) => {
            m.name = string_field(meta.get("name"), "metadata.name", &mut errs);
            m.generate_name =
                string_field(meta.get("generateName"), "metadata.generateName", &mut errs);
            m.labels = string_map(meta.get("labels"), "metadata.labels", &mut errs);
            m.annotations = string_map(meta.get("annotations"), "metadata.annotations", &mut errs);
        }
        Some(_) => errs.push("metadata: Invalid value: must be a mapping".into()),
    }

    match v.get("spec") {
        None => {}
        Some(Value::Object(spec)) => {
            check_request(spec.get("request"), &mut m, &mut errs);
            m.signer_name = string_field(spec.get("signerName"), "spec.signerName", &mut errs);
            check_usages(spec.get("usages"), &mut m, &mut errs);
            match spec.get("expirationSeconds") {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) => match n.as_i64().and_then(|n| i32::try_from(n).ok()) {
                    Some(s) => m.expiration_seconds = Some(s),
                    None => errs.push(format!(
                        "spec.expirationSeconds: Invalid value: {n}: must be a 32-bit integer"
                    )),
                },
                Some(other) => errs.push(format!(
                    "spec.expirationSeconds: Invalid value: {}: must be an integer",
                    short(other)
                )),
            }
        }
        Some(_) => errs.push("spec: Invalid value: must be a mapping".into()),
    }

    if errs.is_empty() {
        return Ok(m);
    }
    let who = if m.name.is_empty() {
        m.generate_name.clone()
    } else {
        m.name.clone()
    };
    let detail = if errs.len() == 1 {
        errs.remove(0)
    } else {
        format!("[{}]", errs.join(", "))
    };
    bail!("The CertificateSigningRequest {who:?} is invalid: {detail}")
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(37).collect::<String>())
    } else {
        s
    }
}

fn string_field(v: Option<&Value>, path: &str, errs: &mut Vec<String>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            errs.push(format!(
                "{path}: Invalid value: {}: must be a string",
                short(other)
            ));
            String::new()
        }
    }
}

fn string_map(v: Option<&Value>, path: &str, errs: &mut Vec<String>) -> Vec<(String, String)> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .filter_map(|(k, val)| match val {
                Value::String(s) => Some((k.clone(), s.clone())),
                other => {
                    errs.push(format!(
                        "{path}.{k}: Invalid value: {}: must be a string",
                        short(other)
                    ));
                    None
                }
            })
            .collect(),
        Some(other) => {
            errs.push(format!(
                "{path}: Invalid value: {}: must be a mapping",
                short(other)
            ));
            Vec::new()
        }
    }
}

fn check_request(v: Option<&Value>, m: &mut Manifest, errs: &mut Vec<String>) {
    let text = match v {
        // Sent empty: the server's answer names the rule.
        None | Some(Value::Null) => return,
        Some(Value::String(s)) => s,
        Some(other) => {
            errs.push(format!(
                "spec.request: Invalid value: {}: must be a base64 string",
                short(other)
            ));
            return;
        }
    };
    // YAML block scalars may wrap the text; base64 itself has no whitespace.
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
        Ok(pem) => m.request = pem,
        Err(e) => errs.push(format!(
            "spec.request: Invalid value: {}: illegal base64 data ({e})",
            short(&Value::String(compact))
        )),
    }
}

fn check_usages(v: Option<&Value>, m: &mut Manifest, errs: &mut Vec<String>) {
    let items = match v {
        None | Some(Value::Null) => return,
        Some(Value::Array(a)) => a,
        Some(other) => {
            errs.push(format!(
                "spec.usages: Invalid value: {}: must be a list",
                short(other)
            ));
            return;
        }
    };
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(u) => m.usages.push(u.clone()),
            other => errs.push(format!(
                "spec.usages[{i}]: Invalid value: {}: must be a string",
                short(other)
            )),
        }
    }
}

/// The `metadata.name` of every CertificateSigningRequest in a document
/// (one object, a YAML stream, a `kind: List` or a JSON array), for the
/// commands that act on existing requests (`certificate approve|deny -f`).
/// Only the names are read; every object must have one.
pub fn names_in_document(text: &str) -> Result<Vec<String>> {
    let mut pending: Vec<Value> = if text.trim_start().starts_with('[') {
        vec![serde_json::from_str(text).map_err(|e| anyhow!("invalid JSON: {e}"))?]
    } else {
        parse_values(text)?
    };
    let mut names = Vec::new();
    let mut i = 0;
    while i < pending.len() {
        let v = pending[i].clone();
        i += 1;
        if let Value::Array(items) = v {
            pending.extend(items);
            continue;
        }
        match v.get("kind").and_then(Value::as_str) {
            Some("List") => {
                let Some(items) = v.get("items").and_then(Value::as_array) else {
                    bail!("List has no items");
                };
                pending.extend(items.iter().cloned());
                continue;
            }
            Some("CertificateSigningRequest") => {}
            _ => bail!(
                "object {}: kind: Unsupported value: supported values: \"CertificateSigningRequest\"",
                names.len() + 1
            ),
        }
        match v.pointer("/metadata/name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => names.push(n.to_string()),
            _ => bail!("object {}: metadata.name: Required value", names.len() + 1),
        }
    }
    if names.is_empty() {
        bail!("no objects passed to approve or deny");
    }
    Ok(names)
}

/// Kubernetes' DNS subdomain rule for object names.
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pkix;

    fn csr_b64() -> String {
        let key = pkix::PrivateKey::generate(pkix::KeyType::P256).unwrap();
        let subject = pkix::Subject::parse("/CN=myuser").unwrap();
        let der = pkix::build_csr(&key, &subject.to_der(), &[]).unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(pkix::pem_encode("CERTIFICATE REQUEST", &der))
    }

    #[test]
    fn accepts_the_kubernetes_docs_manifest() {
        let doc = format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: myuser\n  labels:\n    a: b\nspec:\n  request: {}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 86400  # one day\n  groups: [system:masters]\n  usages:\n  - client auth\n",
            csr_b64()
        );
        let m = parse_document(&doc).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name, "myuser");
        assert_eq!(m[0].expiration_seconds, Some(86400));
        assert_eq!(m[0].usages, ["client auth"]);
        assert!(
            m[0].request
                .starts_with(b"-----BEGIN CERTIFICATE REQUEST-----")
        );
        assert_eq!(m[0].labels, [("a".to_string(), "b".to_string())]);
    }

    #[test]
    fn accepts_json_and_lists() {
        let obj = serde_json::json!({
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": "x", "uid": "ignored"},
            "spec": {"request": csr_b64(), "signerName": "s.io/x", "usages": ["client auth"], "username": "ignored"},
            "status": {"conditions": [{"type": "Approved"}]}
        });
        let list =
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [obj.clone(), obj]});
        assert_eq!(parse_document(&list.to_string()).unwrap().len(), 2);
        let y1 = serde_saphyr::to_string(&obj).unwrap();
        let multi = format!("---\n{y1}---\n{y1}---\n");
        assert_eq!(parse_document(&multi).unwrap().len(), 2);
    }

    #[test]
    fn reports_every_shape_problem_at_once() {
        let doc = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  request: '!!!notbase64'\n  signerName: 5\n  expirationSeconds: 300\n  usages: [client auth, client auth, bogus, 7]\n";
        let err = parse_document(doc).unwrap_err().to_string();
        assert!(
            err.starts_with("The CertificateSigningRequest \"x\" is invalid: ["),
            "{err}"
        );
        for want in [
            "apiVersion: Unsupported value: \"v1\"",
            "kind: Unsupported value: \"Pod\"",
            "spec.request: Invalid value: \"!!!notbase64\": illegal base64 data",
            "spec.signerName: Invalid value: 5: must be a string",
            "spec.usages[3]: Invalid value: 7: must be a string",
        ] {
            assert!(err.contains(want), "missing {want:?} in {err}");
        }
        // Values are the server's to judge: it lists those errors itself.
        assert!(!err.contains("Duplicate"), "{err}");
        assert!(!err.contains("600 seconds"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn passes_values_through_for_the_server() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        let doc = format!(
            "{{\"apiVersion\":\"certificates.k8s.io/v1\",\"kind\":\"CertificateSigningRequest\",\"metadata\":{{\"name\":\"Bad_Name\"}},\"spec\":{{\"request\":\"{b64}\",\"expirationSeconds\":300,\"usages\":[\"bogus\",\"bogus\"]}}}}"
        );
        let m = parse_document(&doc).unwrap();
        assert_eq!(m[0].name, "Bad_Name");
        assert_eq!(m[0].request, pem.as_bytes());
        assert_eq!(m[0].usages, ["bogus", "bogus"]);
        assert_eq!(m[0].expiration_seconds, Some(300));
        assert_eq!(m[0].signer_name, "");
        let empty = "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {}\nspec: {}\n";
        let m = parse_document(empty).unwrap();
        assert!(m[0].request.is_empty() && m[0].usages.is_empty() && m[0].name.is_empty());
    }

    #[test]
    fn bad_yaml_is_one_line() {
        let err = parse_document("apiVersion: [unclosed\nkind: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid YAML"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(parse_document("- a\n- b\n").is_err());
        assert!(parse_document("").is_err());
    }

    #[test]
    fn names_from_a_yaml_stream_a_list_and_a_json_array() {
        let yaml = "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: a\n---\nkind: List\nitems:\n- kind: CertificateSigningRequest\n  metadata: {name: b}\n";
        assert_eq!(names_in_document(yaml).unwrap(), ["a", "b"]);
        let json = r#"[{"kind":"CertificateSigningRequest","metadata":{"name":"c"}},
            {"kind":"CertificateSigningRequest","metadata":{"name":"d"}}]"#;
        assert_eq!(names_in_document(json).unwrap(), ["c", "d"]);
        let e = names_in_document(r#"{"kind":"CertificateSigningRequest"}"#).unwrap_err();
        assert_eq!(e.to_string(), "object 1: metadata.name: Required value");
        let e = names_in_document(r#"{"kind":"Pod","metadata":{"name":"p"}}"#).unwrap_err();
        assert!(e.to_string().contains("kind: Unsupported value"), "{e}");
    }
}

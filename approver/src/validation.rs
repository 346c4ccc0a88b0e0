//! Kubernetes' create-time validation of a CertificateSigningRequest, with
//! Kubernetes' field paths and texts (pkg/apis/certificates/validation, and
//! apimachinery's object metadata rules for labels and annotations).
//!
//! Every field error is collected and reported at once, joined like
//! Kubernetes' aggregate errors. This module must never accept a request
//! whose PEM does not hold a PKCS#10 request with a valid self-signature:
//! `VerifiedCsr` can only be built by checking it.

use std::collections::HashMap;
use std::fmt;

use certsign_evidence::{KeyKind, RenewalInput, Sans, sha256, usage};
use rustls_pki_types::pem::{PemObject, SectionKind};
use x509_parser::prelude::*;

pub use crate::names::{is_dns1123_label, is_dns1123_subdomain};
use crate::names::{is_qualified_name, label_value_errors};

/// The legacy signer name the v1 API refuses on create.
pub const LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";

/// Kubernetes' `TotalAnnotationSizeLimitB`: keys plus values, 256 KiB.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// A value shown in a field error, formatted like Go's `%q` / `%v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Int(i) => write!(f, "{i}"),
        }
    }
}

/// One field error, as Kubernetes' `field.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    Required {
        field: String,
        detail: String,
    },
    Invalid {
        field: String,
        value: Value,
        detail: String,
    },
    NotSupported {
        field: String,
        value: Value,
        supported: Vec<String>,
    },
    Duplicate {
        field: String,
        value: Value,
    },
    TooLong {
        field: String,
        max: usize,
    },
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::Required { field, detail } if detail.is_empty() => {
                write!(f, "{field}: Required value")
            }
            FieldError::Required { field, detail } => {
                write!(f, "{field}: Required value: {detail}")
            }
            FieldError::Invalid {
                field,
                value,
                detail,
            } => write!(f, "{field}: Invalid value: {value}: {detail}"),
            FieldError::NotSupported {
                field,
                value,
                supported,
            } => {
                let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
                write!(
                    f,
                    "{field}: Unsupported value: {value}: supported values: {}",
                    quoted.join(", ")
                )
            }
            FieldError::Duplicate { field, value } => {
                write!(f, "{field}: Duplicate value: {value}")
            }
            FieldError::TooLong { field, max } => {
                write!(f, "{field}: Too long: may not be more than {max} bytes")
            }
        }
    }
}

/// All field errors of one object, displayed like Kubernetes' Invalid
/// status: `CertificateSigningRequest.certificates.k8s.io "<name>" is
/// invalid: <aggregate>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub name: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CertificateSigningRequest.certificates.k8s.io {:?} is invalid: {}",
            self.name,
            aggregate(&self.errors)
        )
    }
}

impl std::error::Error for Invalid {}

/// Kubernetes' `utilerrors.NewAggregate(...).Error()`: one message alone,
/// several as `[a, b]`.
pub fn aggregate(errors: &[FieldError]) -> String {
    let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
    match msgs.as_slice() {
        [one] => one.clone(),
        _ => format!("[{}]", msgs.join(", ")),
    }
}

/// A parsed PKCS#10 request whose self-signature has been verified.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    der: Vec<u8>,
    /// Subject common name (empty if none).
    pub common_name: String,
    /// Subject organization values, in order.
    pub organizations: Vec<String>,
}

impl VerifiedCsr {
    /// Parse the first PEM block and verify its self-signature; the error
    /// text is Kubernetes' `ParseCSR` message where it has one.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let der = match first_pem_block(pem) {
            Some((SectionKind::Csr, der)) => der,
            _ => return Err("PEM block type must be CERTIFICATE REQUEST".into()),
        };
        // Strict DER before anything reads it, as the signer requires: no
        // parser may read the request differently from another.
        certsign_evidence::check_strict_der(&der)
            .map_err(|e| format!("x509: certificate request is not strict DER: {e}"))?;
        let (rest, csr) = X509CertificationRequest::from_der(&der)
            .map_err(|e| format!("x509: malformed certificate request: {e}"))?;
        if !rest.is_empty() {
            return Err("x509: trailing data after certificate request".into());
        }
        csr.verify_signature()
            .map_err(|e| format!("x509: invalid certificate request signature: {e}"))?;
        let subject = &csr.certification_request_info.subject;
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string();
        let organizations = subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect();
        Ok(Self {
            der: der.clone(),
            common_name,
            organizations,
        })
    }

    /// The DER of the request (what `csr_sha256` hashes).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// What a renewal check reads of this request. Refuses, with the
    /// signer's texts, a key type or a subjectAltName the signer would.
    pub fn renewal_facts(&self) -> Result<RenewalFacts, String> {
        let (_, csr) = X509CertificationRequest::from_der(&self.der)
            .map_err(|e| format!("x509: malformed certificate request: {e}"))?;
        let info = &csr.certification_request_info;
        KeyKind::from_spki(&info.subject_pki).map_err(|e| e.to_string())?;
        let mut sans = Sans::default();
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                sans = Sans::from_general_names(&san.general_names).map_err(|e| e.to_string())?;
            }
        }
        Ok(RenewalFacts {
            sha256: sha256(&self.der),
            subject_der: info.subject.as_raw().to_vec(),
            sans,
        })
    }
}

/// A verified request's hash, subject and SANs, for `verify_renewal`.
#[derive(Debug, Clone)]
pub struct RenewalFacts {
    sha256: [u8; 32],
    subject_der: Vec<u8>,
    sans: Sans,
}

impl RenewalFacts {
    /// The input `certsign_evidence::verify_renewal` takes.
    pub fn input(&self) -> RenewalInput<'_> {
        RenewalInput {
            csr_sha256: &self.sha256,
            subject_der: &self.subject_der,
            sans: &self.sans,
        }
    }
}

/// Decode the first PEM block of `data` that has a known label: (kind, DER).
/// Text before the block is tolerated (RFC 7468 §5.2), as Go's `pem.Decode`
/// does; rustls-pki-types is the one PEM decoder.
pub fn first_pem_block(data: &[u8]) -> Option<(SectionKind, Vec<u8>)> {
    <(SectionKind, Vec<u8>)>::from_pem_slice(data).ok()
}

/// What create validation reads from the submitted object.
#[derive(Debug)]
pub struct CreateInput<'a> {
    pub name: &'a str,
    pub generate_name: &'a str,
    pub labels: &'a HashMap<String, String>,
    pub annotations: &'a HashMap<String, String>,
    pub request: &'a [u8],
    pub signer_name: &'a str,
    pub usages: &'a [String],
    pub expiration_seconds: Option<i32>,
}

/// Kubernetes' rules for labels and annotations, on create and on a
/// metadata update.
pub fn validate_metadata(
    labels: &HashMap<String, String>,
    annotations: &HashMap<String, String>,
) -> Vec<FieldError> {
    let mut errs = validate_labels(labels);
    errs.extend(validate_annotations(annotations));
    errs
}

/// Validate a create the way Kubernetes does; on success the verified CSR.
/// `name` is the final name (after generateName).
pub fn validate_create(input: &CreateInput<'_>) -> Result<VerifiedCsr, Vec<FieldError>> {
    let mut errs = Vec::new();
    errs.extend(validate_object_name(input.name, input.generate_name));
    errs.extend(validate_labels(input.labels));
    errs.extend(validate_annotations(input.annotations));

    let csr = match VerifiedCsr::from_pem(input.request) {
        Ok(c) => Some(c),
        Err(detail) => {
            errs.push(FieldError::Invalid {
                field: "spec.request".into(),
                value: Value::Str("<request data>".into()),
                detail,
            });
            None
        }
    };
    if input.usages.is_empty() {
        errs.push(FieldError::Required {
            field: "spec.usages".into(),
            detail: String::new(),
        });
    }
    for (i, u) in input.usages.iter().enumerate() {
        if usage::Usage::parse(u).is_none() {
            errs.push(FieldError::NotSupported {
                field: format!("spec.usages[{i}]"),
                value: Value::Str(u.clone()),
                supported: usage::sorted_names()
                    .into_iter()
                    .map(String::from)
                    .collect(),
            });
        }
    }
    for (i, u) in input.usages.iter().enumerate() {
        if input.usages[..i].contains(u) {
            errs.push(FieldError::Duplicate {
                field: format!("spec.usages[{i}]"),
                value: Value::Str(u.clone()),
            });
        }
    }
    if input.signer_name == LEGACY_UNKNOWN {
        errs.push(FieldError::Invalid {
            field: "spec.signerName".into(),
            value: Value::Str(input.signer_name.into()),
            detail: "the legacy signerName is not allowed via this API version".into(),
        });
    } else {
        errs.extend(validate_signer_name("spec.signerName", input.signer_name));
    }
    if let Some(secs) = input.expiration_seconds
        && secs < 600
    {
        errs.push(FieldError::Invalid {
            field: "spec.expirationSeconds".into(),
            value: Value::Int(i64::from(secs)),
            detail: "may not specify a duration less than 600 seconds (10 minutes)".into(),
        });
    }
    match (errs.is_empty(), csr) {
        (true, Some(csr)) => Ok(csr),
        _ => Err(errs),
    }
}

/// metadata.name rules: name or generateName required; the name is a DNS
/// subdomain (the contract's name rule for CSR objects).
fn validate_object_name(name: &str, generate_name: &str) -> Vec<FieldError> {
    if name.is_empty() {
        if generate_name.is_empty() {
            return vec![FieldError::Required {
                field: "metadata.name".into(),
                detail: "name or generateName is required".into(),
            }];
        }
        return Vec::new();
    }
    is_dns1123_subdomain(name)
        .into_iter()
        .map(|detail| FieldError::Invalid {
            field: if generate_name.is_empty() {
                "metadata.name".into()
            } else {
                "metadata.generateName".into()
            },
            value: Value::Str(if generate_name.is_empty() {
                name.to_string()
            } else {
                generate_name.to_string()
            }),
            detail,
        })
        .collect()
}

/// Kubernetes' `ValidateSignerName`.
pub fn validate_signer_name(field: &str, signer_name: &str) -> Vec<FieldError> {
    let mut el = Vec::new();
    if signer_name.is_empty() {
        el.push(FieldError::Required {
            field: field.into(),
            detail: String::new(),
        });
        return el;
    }
    let segments: Vec<&str> = signer_name.split('/').collect();
    if segments.len() != 2 {
        el.push(FieldError::Invalid {
            field: field.into(),
            value: Value::Str(signer_name.into()),
            detail:
                "must be a fully qualified domain and path of the form 'example.com/signer-name'"
                    .into(),
        });
        return el;
    }
    let (domain, path) = (segments[0], segments[1]);
    if domain.len() > 253 {
        el.push(FieldError::TooLong {
            field: field.into(),
            max: 253,
        });
    }
    let labels: Vec<&str> = domain.split('.').collect();
    for lbl in &labels {
        let errs = is_dns1123_label(lbl);
        if !errs.is_empty() {
            for e in errs {
                el.push(FieldError::Invalid {
                    field: field.into(),
                    value: Value::Str(domain.into()),
                    detail: format!("validating label {lbl:?}: {e}"),
                });
            }
            break;
        }
    }
    if labels.len() < 2 {
        el.push(FieldError::Invalid {
            field: field.into(),
            value: Value::Str(domain.into()),
            detail: "should be a domain with at least two segments separated by dots".into(),
        });
    }
    for part in path.split('.') {
        let errs = is_dns1123_subdomain(part);
        if !errs.is_empty() {
            for e in errs {
                el.push(FieldError::Invalid {
                    field: field.into(),
                    value: Value::Str(path.into()),
                    detail: format!("validating component {part:?}: {e}"),
                });
            }
            break;
        }
    }
    let max = 253 + (253 + 63 + 1) + 1;
    if signer_name.len() > max {
        el.push(FieldError::TooLong {
            field: field.into(),
            max,
        });
    }
    el
}

/// `(key, value)` pairs in key order, so errors come out the same each time.
fn sorted(map: &HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort();
    v
}

/// apimachinery's `ValidateLabels`: qualified-name keys, label values.
fn validate_labels(labels: &HashMap<String, String>) -> Vec<FieldError> {
    let invalid = |value: &str, detail: String| FieldError::Invalid {
        field: "metadata.labels".into(),
        value: Value::Str(value.into()),
        detail,
    };
    let mut errs = Vec::new();
    for (k, v) in sorted(labels) {
        errs.extend(is_qualified_name(k).into_iter().map(|m| invalid(k, m)));
        errs.extend(label_value_errors(v).into_iter().map(|m| invalid(v, m)));
    }
    errs
}

/// apimachinery's `ValidateAnnotations`: keys are qualified names ignoring
/// case, and keys plus values total at most 256 KiB.
fn validate_annotations(annotations: &HashMap<String, String>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in sorted(annotations) {
        for detail in is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::Invalid {
                field: "metadata.annotations".into(),
                value: Value::Str(k.clone()),
                detail,
            });
        }
        total = total.saturating_add(k.len()).saturating_add(v.len());
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::TooLong {
            field: "metadata.annotations".into(),
            max: TOTAL_ANNOTATION_SIZE_LIMIT,
        });
    }
    errs
}

/// Kubernetes' `SimpleNameGenerator`: the prefix (cut to 58 bytes) plus five
/// random characters from an alphabet without vowels or confusable digits.
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut cut = prefix.len().min(58);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut name = prefix[..cut].to_string();
    let id = uuid::Uuid::new_v4();
    for b in id.as_bytes().iter().take(5) {
        name.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
    }
    name
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn csr_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "dev");
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn input<'a>(pem: &'a [u8], usages: &'a [String]) -> CreateInput<'a> {
        let empty: &'static HashMap<String, String> = Box::leak(Box::default());
        CreateInput {
            name: "alice",
            generate_name: "",
            labels: empty,
            annotations: empty,
            request: pem,
            signer_name: "kubernetes.io/kube-apiserver-client",
            usages,
            expiration_seconds: Some(3600),
        }
    }

    fn msgs(i: &CreateInput<'_>) -> String {
        aggregate(&validate_create(i).unwrap_err())
    }

    #[test]
    fn valid_csr_passes_and_names_subject() {
        let pem = csr_pem();
        let usages = vec!["client auth".to_string()];
        let csr = validate_create(&input(pem.as_bytes(), &usages)).unwrap();
        assert_eq!(csr.common_name, "alice");
        assert_eq!(csr.organizations, vec!["dev"]);
    }

    #[test]
    fn tampered_signature_is_refused() {
        let pem = csr_pem();
        let (_, mut der) = first_pem_block(pem.as_bytes()).unwrap();
        let n = der.len();
        der[n - 3] ^= 0x01;
        let pem2 = to_pem("CERTIFICATE REQUEST", &der);
        let err = VerifiedCsr::from_pem(pem2.as_bytes()).unwrap_err();
        assert!(
            err.contains("signature") || err.contains("malformed"),
            "{err}"
        );
    }

    fn to_pem(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{b}\n-----END {label}-----\n")
    }

    #[test]
    fn wrong_pem_type() {
        let usages = vec!["client auth".to_string()];
        let pem = to_pem("CERTIFICATE", b"abc");
        assert_eq!(
            msgs(&input(pem.as_bytes(), &usages)),
            "spec.request: Invalid value: \"<request data>\": PEM block type must be CERTIFICATE REQUEST"
        );
    }

    #[test]
    fn every_error_at_once() {
        let pem = csr_pem();
        let usages = vec![
            "client auth".to_string(),
            "bogus".into(),
            "client auth".into(),
        ];
        let mut i = input(pem.as_bytes(), &usages);
        i.expiration_seconds = Some(300);
        i.signer_name = "nope";
        let m = msgs(&i);
        assert!(m.starts_with('[') && m.ends_with(']'), "{m}");
        assert!(m.contains("spec.usages[1]: Unsupported value: \"bogus\": supported values: \"any\", \"cert sign\""), "{m}");
        assert!(
            m.contains("spec.usages[2]: Duplicate value: \"client auth\""),
            "{m}"
        );
        assert!(m.contains("spec.signerName: Invalid value: \"nope\": must be a fully qualified domain and path of the form 'example.com/signer-name'"), "{m}");
        assert!(m.contains("spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 600 seconds (10 minutes)"), "{m}");
    }

    #[test]
    fn signer_name_rules() {
        let f = |s: &str| aggregate(&validate_signer_name("spec.signerName", s));
        assert_eq!(f(""), "spec.signerName: Required value");
        assert_eq!(
            f("example/x"),
            "spec.signerName: Invalid value: \"example\": should be a domain with at least two segments separated by dots"
        );
        assert!(
            f("Example.com/x").contains("validating label \"Example\": a lowercase RFC 1123 label")
        );
        assert!(
            f("example.com/X_")
                .contains("validating component \"X_\": a lowercase RFC 1123 subdomain")
        );
        assert!(validate_signer_name("f", "example.com/ns.name").is_empty());
        let long = format!("example.com/{}", "a.".repeat(300));
        assert!(f(&long).contains("Too long: may not be more than 571 bytes"));
    }

    #[test]
    fn legacy_and_usages_required() {
        let pem = csr_pem();
        let usages: Vec<String> = vec![];
        let mut i = input(pem.as_bytes(), &usages);
        i.signer_name = LEGACY_UNKNOWN;
        assert_eq!(
            msgs(&i),
            "[spec.usages: Required value, spec.signerName: Invalid value: \"kubernetes.io/legacy-unknown\": the legacy signerName is not allowed via this API version]"
        );
    }

    #[test]
    fn names() {
        let pem = csr_pem();
        let usages = vec!["client auth".to_string()];
        let mut i = input(pem.as_bytes(), &usages);
        i.name = "";
        assert_eq!(
            msgs(&i),
            "metadata.name: Required value: name or generateName is required"
        );
        i.name = "Bad_Name";
        assert!(msgs(&i).starts_with(
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        ));
        let g = generate_name("csr-");
        assert_eq!(g.len(), 9);
        assert!(g.starts_with("csr-"));
        assert!(is_dns1123_subdomain(&g).is_empty());
    }

    #[test]
    fn invalid_display() {
        let e = Invalid {
            name: "x".into(),
            errors: vec![FieldError::Required {
                field: "spec.usages".into(),
                detail: String::new(),
            }],
        };
        assert_eq!(
            e.to_string(),
            "CertificateSigningRequest.certificates.k8s.io \"x\" is invalid: spec.usages: Required value"
        );
    }
}

#[cfg(test)]
mod openssl_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// CSRs made by openssl (an outside producer) for each key type the
    /// signer accepts verify here too.
    #[test]
    fn openssl_csrs_of_every_key_type_verify() {
        let dir = tempfile::tempdir().unwrap();
        for (name, args) in [
            ("rsa", vec!["-newkey", "rsa:2048"]),
            (
                "p256",
                vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            ),
            (
                "p384",
                vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            ),
            ("ed25519", vec!["-newkey", "ed25519"]),
        ] {
            let csr = dir.path().join(format!("{name}.csr"));
            let out = std::process::Command::new("openssl")
                .args(["req", "-new", "-nodes", "-subj", "/CN=x/O=g"])
                .args(&args)
                .arg("-keyout")
                .arg(dir.path().join(format!("{name}.key")))
                .arg("-out")
                .arg(&csr)
                .output()
                .expect("openssl must be installed");
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v = VerifiedCsr::from_pem(&std::fs::read(&csr).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v.common_name, "x");
            assert_eq!(v.organizations, vec!["g"]);
        }
    }
}

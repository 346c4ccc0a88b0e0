//! What several commands share: kubectl's resource spellings, fetching one
//! request, turning a manifest into a create call, `--expiration`, and the
//! "print every error, exit with the last" rule.
//!
//! Nothing here prints a success line or decides an exit code other than 1;
//! the command modules do. No command module is imported from here.

use anyhow::{Result, anyhow, bail};
use certsign_proto::v1 as pb;

use crate::conn::{self, Conn};
use crate::manifest::Manifest;

/// The resources `get` knows besides requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OtherResource {
    /// The inventory of issued certificates.
    Certificates,
    /// The current CRL.
    Crl,
    /// The CA bundle to trust (GetTrustBundle).
    TrustBundle,
}

/// `get certificates` (also certificate, certs, cert) or `get crl`.
pub(super) fn other_resource(resource: &str) -> Option<OtherResource> {
    match resource.to_ascii_lowercase().as_str() {
        "certificates"
        | "certificate"
        | "certs"
        | "cert"
        | "certificates.certsign.io"
        | "certificate.certsign.io" => Some(OtherResource::Certificates),
        "crl" | "crls" | "certificaterevocationlist" => Some(OtherResource::Crl),
        "trustbundle" | "trustbundles" | "clustertrustbundle" | "clustertrustbundles" => {
            Some(OtherResource::TrustBundle)
        }
        _ => None,
    }
}

/// Accepts kubectl's spellings of the resource (and `csr/NAME`).
pub(super) fn csr_resource(resource: &str, names: &mut Vec<String>) -> Result<()> {
    let (kind, name) = match resource.split_once('/') {
        Some((k, n)) => (k, Some(n)),
        None => (resource, None),
    };
    let known = [
        "csr",
        "csrs",
        "certificatesigningrequest",
        "certificatesigningrequests",
        "certificatesigningrequest.certificates.k8s.io",
        "certificatesigningrequests.certificates.k8s.io",
    ];
    if !known.contains(&kind.to_ascii_lowercase().as_str()) {
        bail!("the server doesn't have a resource type {kind:?}");
    }
    if let Some(n) = name {
        if n.is_empty() {
            bail!("arguments in resource/name form must have a single resource and name");
        }
        names.insert(0, n.to_string());
    }
    Ok(())
}

/// The request's `metadata.name` (empty if the approver sent no metadata).
pub(super) fn name_of(csr: &pb::CertificateSigningRequest) -> String {
    csr.metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

/// Whether the request carries a condition of type `t`.
pub(super) fn has_condition(csr: &pb::CertificateSigningRequest, t: &str) -> bool {
    csr.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.r#type == t))
}

/// One request by name, with the gRPC status as a one-line error.
pub(super) async fn fetch(conn: &mut Conn, name: &str) -> Result<pb::CertificateSigningRequest> {
    conn.client
        .get_certificate_signing_request(pb::GetCertificateSigningRequestRequest {
            name: name.to_string(),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| conn::status_error(&s, &conn.url, Some(name)))
}

/// Prints all but the last error, returns the last (so the exit code is 1).
pub(super) fn finish_errors(mut errors: Vec<anyhow::Error>) -> Result<()> {
    let Some(last) = errors.pop() else {
        return Ok(());
    };
    for e in errors {
        crate::output::print_error(&e);
    }
    Err(last)
}

/// The CertificateSigningRequest object a manifest describes.
pub(super) fn new_request(m: &Manifest) -> pb::CertificateSigningRequest {
    pb::CertificateSigningRequest {
        api_version: "certificates.k8s.io/v1".into(),
        kind: "CertificateSigningRequest".into(),
        metadata: Some(pb::ObjectMeta {
            name: m.name.clone(),
            generate_name: m.generate_name.clone(),
            labels: m.labels.iter().cloned().collect(),
            annotations: m.annotations.iter().cloned().collect(),
            ..Default::default()
        }),
        spec: Some(pb::CertificateSigningRequestSpec {
            request: m.request.clone(),
            signer_name: m.signer_name.clone(),
            expiration_seconds: m.expiration_seconds,
            usages: m.usages.clone(),
            ..Default::default()
        }),
        status: None,
    }
}

/// The manifest of a request certctl made itself (`create csr`, `renew`):
/// a fixed name, no labels or annotations.
pub(super) fn own_manifest(
    name: &str,
    csr_pem: String,
    signer_name: &str,
    usages: Vec<String>,
    expiration_seconds: Option<i32>,
) -> Manifest {
    Manifest {
        name: name.to_string(),
        generate_name: String::new(),
        labels: Vec::new(),
        annotations: Vec::new(),
        request: csr_pem.into_bytes(),
        signer_name: signer_name.to_string(),
        usages,
        expiration_seconds,
    }
}

/// Creates the request of a manifest certctl made (with the renewal proof,
/// if any) and returns what the approver stored.
pub(super) async fn submit(
    conn: &mut Conn,
    m: &Manifest,
    renewal: Option<pb::SignedStatement>,
) -> Result<pb::CertificateSigningRequest> {
    conn.client
        .create_certificate_signing_request(pb::CreateCertificateSigningRequestRequest {
            certificate_signing_request: Some(new_request(m)),
            renewal,
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| conn::status_error(&s, &conn.url, None))
}

/// `--expiration` as `spec.expirationSeconds` (Kubernetes' 10-minute minimum).
pub(super) fn expiration_seconds(d: Option<humantime::Duration>) -> Result<Option<i32>> {
    let Some(d) = d else { return Ok(None) };
    let secs = d.as_secs();
    if secs < 600 {
        bail!(
            "invalid --expiration {d}: may not specify a duration less than 600 seconds (10 minutes)"
        );
    }
    let secs = i32::try_from(secs).map_err(|_| anyhow!("invalid --expiration {d}: too long"))?;
    Ok(Some(secs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn other_resources() {
        for r in ["certificates", "Certificate", "certs", "cert"] {
            assert_eq!(other_resource(r), Some(OtherResource::Certificates), "{r}");
        }
        assert_eq!(other_resource("crl"), Some(OtherResource::Crl));
        assert_eq!(
            other_resource("trustbundle"),
            Some(OtherResource::TrustBundle)
        );
        assert_eq!(other_resource("csr"), None);
    }

    #[test]
    fn resources() {
        let mut names = vec![];
        csr_resource("csr/myuser", &mut names).unwrap();
        assert_eq!(names, ["myuser"]);
        csr_resource("certificatesigningrequests.certificates.k8s.io", &mut names).unwrap();
        let err = csr_resource("pods", &mut names).unwrap_err().to_string();
        assert_eq!(err, "the server doesn't have a resource type \"pods\"");
    }

    #[test]
    fn expirations() {
        assert_eq!(expiration_seconds(None).unwrap(), None);
        assert_eq!(
            expiration_seconds(Some("24h".parse().unwrap())).unwrap(),
            Some(86400)
        );
        assert!(expiration_seconds(Some("5m".parse().unwrap())).is_err());
    }
}

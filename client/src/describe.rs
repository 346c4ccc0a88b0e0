//! `describe csr`: a request decoded for a human (subject, SANs, key, usages,
//! duration, requestor, conditions, who decided, and the issued certificate).
//!
//! Pure formatting over an object the approver returned; anything that does
//! not parse is shown as such, never trusted or panicked on.

use std::fmt::Write as _;
use std::time::SystemTime;

use certsign_proto::v1 as pb;
use x509_parser::prelude::*;

use crate::kube;
use crate::pkix;

fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{:<20}{}", format!("{label}:"), value);
}

fn ts(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(kube::rfc3339)
        .unwrap_or_else(|| "<unknown>".into())
}

fn map_or_none(m: &std::collections::HashMap<String, String>) -> String {
    if m.is_empty() {
        return "<none>".into();
    }
    let mut v: Vec<_> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join(", ")
}

fn sans_text(out: &mut String, names: &[GeneralName<'_>]) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let mut uris = Vec::new();
    let mut emails = Vec::new();
    for n in names {
        match n {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                let a: [u8; 4] = [b[0], b[1], b[2], b[3]];
                ips.push(std::net::IpAddr::from(a).to_string());
            }
            GeneralName::IPAddress(b) if b.len() == 16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                ips.push(std::net::IpAddr::from(a).to_string());
            }
            GeneralName::URI(u) => uris.push(u.to_string()),
            GeneralName::RFC822Name(e) => emails.push(e.to_string()),
            other => dns.push(format!("{other:?}")),
        }
    }
    for (label, v) in [
        ("DNS Names", dns),
        ("IP Addresses", ips),
        ("URIs", uris),
        ("Email Addresses", emails),
    ] {
        if !v.is_empty() {
            let _ = writeln!(out, "    {:<18}{}", format!("{label}:"), v.join(", "));
        }
    }
}

fn subject_text(out: &mut String, name: &X509Name<'_>) {
    let _ = writeln!(out, "Subject:");
    let _ = writeln!(
        out,
        "    {}",
        if name.iter().count() == 0 {
            "<empty>".to_string()
        } else {
            name.to_string()
        }
    );
}

/// The describe text for one request.
pub fn describe(csr: &pb::CertificateSigningRequest, now: SystemTime) -> String {
    let meta = csr.metadata.clone().unwrap_or_default();
    let spec = csr.spec.clone().unwrap_or_default();
    let status = csr.status.clone().unwrap_or_default();
    let mut out = String::new();
    line(&mut out, "Name", &meta.name);
    line(&mut out, "UID", &meta.uid);
    line(&mut out, "Labels", map_or_none(&meta.labels));
    line(&mut out, "Annotations", map_or_none(&meta.annotations));
    line(
        &mut out,
        "CreationTimestamp",
        format!(
            "{} ({} ago)",
            ts(&meta.creation_timestamp),
            kube::age_column(csr, now)
        ),
    );
    line(&mut out, "Requesting User", &spec.username);
    line(
        &mut out,
        "Groups",
        if spec.groups.is_empty() {
            "<none>".into()
        } else {
            spec.groups.join(", ")
        },
    );
    line(&mut out, "Signer", &spec.signer_name);
    line(
        &mut out,
        "Requested Duration",
        spec.expiration_seconds
            .map(|s| kube::human_duration(i64::from(s)))
            .unwrap_or_else(|| "<none>".into()),
    );
    line(&mut out, "Usages", spec.usages.join(", "));
    line(&mut out, "Status", kube::condition_column(csr));

    match pkix::csr_der_from_pem(&spec.request) {
        Err(e) => line(&mut out, "Request", format!("<unreadable: {e}>")),
        Ok(der) => match X509CertificationRequest::from_der(&der) {
            Err(e) => line(&mut out, "Request", format!("<unreadable: {e}>")),
            Ok((_, req)) => {
                let info = &req.certification_request_info;
                subject_text(&mut out, &info.subject);
                let _ = writeln!(out, "Subject Alternative Names:");
                let mut any = false;
                if let Some(exts) = req.requested_extensions() {
                    for ext in exts {
                        if let ParsedExtension::SubjectAlternativeName(san) = ext {
                            any = true;
                            sans_text(&mut out, &san.general_names);
                        }
                    }
                }
                if !any {
                    let _ = writeln!(out, "    <none>");
                }
                line(
                    &mut out,
                    "Public Key",
                    pkix::describe_key(&info.subject_pki),
                );
                line(
                    &mut out,
                    "CSR Signature",
                    if req.verify_signature().is_ok() {
                        "valid"
                    } else {
                        "INVALID"
                    },
                );
            }
        },
    }

    let _ = writeln!(out, "Conditions:");
    if status.conditions.is_empty() {
        let _ = writeln!(out, "    <none>");
    }
    for c in &status.conditions {
        let _ = writeln!(
            out,
            "    {} ({}) at {}: {} {}",
            c.r#type,
            c.status,
            ts(&c.last_update_time),
            c.reason,
            c.message
        );
    }
    let _ = writeln!(out, "Decisions:");
    if status.decisions.is_empty() {
        let _ = writeln!(out, "    <none>");
    }
    for d in &status.decisions {
        let signed = match &d.statement {
            Some(s) if !s.signature.is_empty() && s.batch.is_some() => ", signed batch statement",
            Some(s) if !s.signature.is_empty() => ", signed statement",
            _ => "",
        };
        let groups = if d.groups.is_empty() {
            String::new()
        } else {
            format!(" [{}]", d.groups.join(", "))
        };
        let _ = writeln!(
            out,
            "    {} by {}{groups} at {}{signed}: {} {}",
            kube::decision_word(d.decision),
            d.username,
            ts(&d.time),
            d.reason,
            d.message
        );
    }
    if !status.certificate.is_empty() {
        let _ = writeln!(out, "Certificate:");
        let certs = pkix::certs_der_from_pem(&status.certificate);
        match certs.first().map(|d| X509Certificate::from_der(d)) {
            Some(Ok((_, cert))) => {
                let _ = writeln!(out, "    {:<18}{}", "Serial:", cert.raw_serial_as_string());
                let _ = writeln!(out, "    {:<18}{}", "Subject:", cert.subject());
                let _ = writeln!(out, "    {:<18}{}", "Issuer:", cert.issuer());
                let nb = cert.validity().not_before;
                let na = cert.validity().not_after;
                let _ = writeln!(
                    out,
                    "    {:<18}{}",
                    "Not Before:",
                    nb.to_rfc2822().unwrap_or_else(|_| nb.to_string())
                );
                let _ = writeln!(
                    out,
                    "    {:<18}{}",
                    "Not After:",
                    na.to_rfc2822().unwrap_or_else(|_| na.to_string())
                );
                let _ = writeln!(out, "    {:<18}{}", "Chain Length:", certs.len());
            }
            _ => {
                let _ = writeln!(out, "    <unreadable certificate>");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn describes_subject_sans_key_and_decisions() {
        let key = pkix::PrivateKey::generate(pkix::KeyType::P384).unwrap();
        let sans =
            pkix::sans_from_flags(&["a.example".into()], &["10.1.2.3".into()], &[], &[]).unwrap();
        let der = pkix::build_csr(
            &key,
            &pkix::Subject::parse("/CN=alice/O=dev").unwrap().to_der(),
            &sans,
        )
        .unwrap();
        let csr = pb::CertificateSigningRequest {
            metadata: Some(pb::ObjectMeta {
                name: "alice".into(),
                ..Default::default()
            }),
            spec: Some(pb::CertificateSigningRequestSpec {
                request: pkix::pem_encode("CERTIFICATE REQUEST", &der).into_bytes(),
                signer_name: "kubernetes.io/kube-apiserver-client".into(),
                usages: vec!["client auth".into()],
                expiration_seconds: Some(86400),
                username: "alice".into(),
                groups: vec!["system:authenticated".into()],
                ..Default::default()
            }),
            status: Some(pb::CertificateSigningRequestStatus {
                decisions: vec![pb::DecisionRecord {
                    decision: pb::Decision::Approve as i32,
                    username: "admin".into(),
                    groups: vec!["system:masters".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = describe(&csr, SystemTime::now());
        for want in [
            "CN=alice, O=dev",
            "DNS Names:        a.example",
            "IP Addresses:     10.1.2.3",
            "ECDSA P-384",
            "Requested Duration: 24h",
            "Approve by admin [system:masters]",
            "system:authenticated",
            "CSR Signature:      valid",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}

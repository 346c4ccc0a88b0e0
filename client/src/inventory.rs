//! The inventory of issued certificates as certctl shows it: the
//! `get certificates` table (`SERIAL SUBJECT SIGNERNAME REQUESTOR NOTAFTER
//! STATUS`, kubectl's column spacing) and the `certsign.io/v1` JSON/YAML
//! shape (`Certificate`, `CertificateList`).
//!
//! Pure functions over the protocol types: this module never talks to the
//! network and never reads the clock itself (callers pass `now`).

use std::time::SystemTime;

use base64::Engine as _;
use certsign_proto::v1 as pb;
use serde::Serialize;

use crate::kube::{rfc3339, tabwrite};
use crate::revocation::reason_word;

/// The API group and version of the inventory's objects.
pub const API_VERSION: &str = "certsign.io/v1";
/// The resource name in `-o name` lines and messages.
pub const RESOURCE: &str = "certificate";

/// `Valid`, `Revoked` or `Expired`: the approver's word, or, when it sent
/// none, derived the same way (Revoked wins over Expired).
pub fn status_of(c: &pb::IssuedCertificate, now: SystemTime) -> String {
    if !c.status.is_empty() {
        return c.status.clone();
    }
    if c.revocation_time.is_some() {
        return "Revoked".into();
    }
    let expired = c
        .not_after
        .as_ref()
        .and_then(|t| SystemTime::try_from(*t).ok())
        .is_some_and(|t| t <= now);
    if expired { "Expired" } else { "Valid" }.into()
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

fn time_column(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(rfc3339).unwrap_or_else(|| "<none>".into())
}

fn is_revoked(c: &pb::IssuedCertificate, now: SystemTime) -> bool {
    status_of(c, now) == "Revoked"
}

/// The table `get certificates` prints; `wide` adds REQUEST and REASON.
pub fn table(items: &[pb::IssuedCertificate], wide: bool, now: SystemTime) -> String {
    let mut header = vec![
        "SERIAL",
        "SUBJECT",
        "SIGNERNAME",
        "REQUESTOR",
        "NOTAFTER",
        "STATUS",
    ];
    if wide {
        header.extend(["REQUEST", "REASON"]);
    }
    let mut rows: Vec<Vec<String>> = vec![header.into_iter().map(String::from).collect()];
    for c in items {
        let mut row = vec![
            c.serial_number.clone(),
            or_none(&c.subject),
            or_none(&c.signer_name),
            or_none(&c.requestor),
            time_column(c.not_after.as_ref()),
            status_of(c, now),
        ];
        if wide {
            row.push(or_none(&c.request_name));
            row.push(if is_revoked(c, now) {
                reason_word(c.revocation_reason).to_string()
            } else {
                "<none>".into()
            });
        }
        rows.push(row);
    }
    tabwrite(&rows)
}

/// One issued certificate, as `-o json|yaml` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    api_version: &'static str,
    kind: &'static str,
    serial_number: String,
    subject: String,
    signer_name: String,
    requestor: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    request_name: String,
    #[serde(rename = "requestUID", skip_serializing_if = "String::is_empty")]
    request_uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_after: Option<String>,
    status: String,
    /// RFC 5280's word; only on a revoked certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    revocation_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revocation_time: Option<String>,
    /// Base64 of the certificate's PEM, as `status.certificate` of a request.
    #[serde(skip_serializing_if = "String::is_empty")]
    certificate: String,
}

impl Certificate {
    /// The JSON/YAML shape of one inventory entry.
    pub fn new(c: &pb::IssuedCertificate, now: SystemTime) -> Self {
        let revoked = is_revoked(c, now);
        Self {
            api_version: API_VERSION,
            kind: "Certificate",
            serial_number: c.serial_number.clone(),
            subject: c.subject.clone(),
            signer_name: c.signer_name.clone(),
            requestor: c.requestor.clone(),
            request_name: c.request_name.clone(),
            request_uid: c.request_uid.clone(),
            not_before: c.not_before.as_ref().and_then(rfc3339),
            not_after: c.not_after.as_ref().and_then(rfc3339),
            status: status_of(c, now),
            revocation_reason: revoked.then(|| reason_word(c.revocation_reason).to_string()),
            revocation_time: c.revocation_time.as_ref().and_then(rfc3339),
            certificate: if c.certificate.is_empty() {
                String::new()
            } else {
                base64::engine::general_purpose::STANDARD.encode(&c.certificate)
            },
        }
    }
}

/// Several entries: `{"apiVersion":"certsign.io/v1","kind":"CertificateList","items":[...]}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateList {
    api_version: &'static str,
    items: Vec<Certificate>,
    kind: &'static str,
}

impl CertificateList {
    /// Wraps entries in a `CertificateList`.
    pub fn new(items: Vec<Certificate>) -> Self {
        Self {
            api_version: API_VERSION,
            items,
            kind: "CertificateList",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn ts(secs: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: secs,
            nanos: 0,
        })
    }

    fn entry(serial: &str, status: &str) -> pb::IssuedCertificate {
        pb::IssuedCertificate {
            serial_number: serial.into(),
            subject: "CN=alice,O=dev".into(),
            signer_name: "kubernetes.io/kube-apiserver-client".into(),
            requestor: "alice".into(),
            request_name: "alice-1".into(),
            request_uid: "u-1".into(),
            not_before: ts(1_800_000_000),
            not_after: ts(1_800_086_400),
            status: status.into(),
            certificate: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn table_has_the_contract_columns_with_kubectl_spacing() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_100);
        let mut revoked = entry("0a1b", "Revoked");
        revoked.revocation_reason = pb::RevocationReason::KeyCompromise as i32;
        revoked.revocation_time = ts(1_800_000_050);
        let t = table(&[entry("7f3c", "Valid"), revoked.clone()], false, now);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "SERIAL   SUBJECT          SIGNERNAME                            REQUESTOR   NOTAFTER               STATUS"
        );
        assert_eq!(
            lines[1],
            "7f3c     CN=alice,O=dev   kubernetes.io/kube-apiserver-client   alice       2027-01-16T08:00:00Z   Valid"
        );
        assert!(lines[2].ends_with("   Revoked"), "{t}");
        let wide = table(&[revoked], true, now);
        assert!(wide.lines().next().unwrap().ends_with("REQUEST   REASON"));
        assert!(
            wide.lines()
                .nth(1)
                .unwrap()
                .ends_with("alice-1   keyCompromise")
        );
    }

    #[test]
    fn status_is_derived_when_the_approver_sends_none() {
        let before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_100);
        let after = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let c = entry("01", "");
        assert_eq!(status_of(&c, before), "Valid");
        assert_eq!(status_of(&c, after), "Expired");
        let mut r = c.clone();
        r.revocation_time = ts(1_800_000_050);
        assert_eq!(status_of(&r, after), "Revoked");
    }

    #[test]
    fn json_list_shape() {
        let now = SystemTime::UNIX_EPOCH;
        let mut r = entry("0a1b", "Revoked");
        r.revocation_reason = pb::RevocationReason::Superseded as i32;
        r.revocation_time = ts(1_800_000_050);
        let list = CertificateList::new(vec![
            Certificate::new(&entry("7f3c", "Valid"), now),
            Certificate::new(&r, now),
        ]);
        let v = serde_json::to_value(&list).unwrap();
        assert_eq!(v["apiVersion"], "certsign.io/v1");
        assert_eq!(v["kind"], "CertificateList");
        assert_eq!(v["items"][0]["kind"], "Certificate");
        assert_eq!(v["items"][0]["serialNumber"], "7f3c");
        assert_eq!(
            v["items"][0]["signerName"],
            "kubernetes.io/kube-apiserver-client"
        );
        assert_eq!(v["items"][0]["requestUID"], "u-1");
        assert_eq!(v["items"][0]["notAfter"], "2027-01-16T08:00:00Z");
        assert_eq!(v["items"][0]["status"], "Valid");
        assert!(v["items"][0].get("revocationReason").is_none());
        assert_eq!(v["items"][1]["revocationReason"], "superseded");
        assert_eq!(v["items"][1]["revocationTime"], "2027-01-15T08:00:50Z");
        let pem = base64::engine::general_purpose::STANDARD
            .decode(v["items"][0]["certificate"].as_str().unwrap())
            .unwrap();
        assert!(pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
    }
}

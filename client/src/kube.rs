//! The Kubernetes view of a request: the `certificates.k8s.io/v1` JSON/YAML
//! shape, kubectl's table columns and its duration and condition formatting.
//!
//! Pure functions over the protocol types; this module never talks to the
//! network and never reads the clock itself (callers pass `now`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use base64::Engine as _;
use certsign_proto::v1 as pb;
use serde::Serialize;

/// `certificatesigningrequest.certificates.k8s.io`, kubectl's resource name in
/// messages.
pub const RESOURCE: &str = "certificatesigningrequest.certificates.k8s.io";

// === kubectl's formatting ===

/// Go's `duration.HumanDuration` (k8s.io/apimachinery/pkg/util/duration),
/// as kubectl prints AGE and REQUESTEDDURATION. `seconds` may be negative.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{}h", hours / 24, h);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{}d", hours / 24 / 365, dy);
    }
    format!("{}y", hours / 24 / 365)
}

/// kubectl's CONDITION column (`extractCSRStatus`).
pub fn condition_column(csr: &pb::CertificateSigningRequest) -> String {
    let (conditions, certificate) = match &csr.status {
        Some(s) => (&s.conditions[..], !s.certificate.is_empty()),
        None => (&[][..], false),
    };
    let has = |t: &str| conditions.iter().any(|c| c.r#type == t);
    let mut out = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        out.push_str(",Failed");
    }
    if certificate {
        out.push_str(",Issued");
    }
    out
}

fn system_time(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn seconds_between(earlier: SystemTime, later: SystemTime) -> i64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

/// kubectl's AGE column: `<unknown>` without a creation time.
pub fn age_column(csr: &pb::CertificateSigningRequest, now: SystemTime) -> String {
    let created = csr
        .metadata
        .as_ref()
        .and_then(|m| m.creation_timestamp.as_ref())
        .and_then(system_time);
    match created {
        Some(t) if t != SystemTime::UNIX_EPOCH => human_duration(seconds_between(t, now)),
        _ => "<unknown>".into(),
    }
}

/// The table rows kubectl prints for `get csr`.
pub fn table(items: &[pb::CertificateSigningRequest], now: SystemTime) -> String {
    table_with(items, now, true)
}

/// kubectl's `get csr` columns.
pub const TABLE_HEADER: [&str; 6] = [
    "NAME",
    "AGE",
    "SIGNERNAME",
    "REQUESTOR",
    "REQUESTEDDURATION",
    "CONDITION",
];

/// [`table`], with or without the header line (`--no-headers`).
pub fn table_with(
    items: &[pb::CertificateSigningRequest],
    now: SystemTime,
    headers: bool,
) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    if headers {
        rows.push(TABLE_HEADER.iter().map(|s| s.to_string()).collect());
    }
    rows.extend(items.iter().map(|c| table_row(c, now)));
    tabwrite(&rows)
}

/// One request's cells under [`TABLE_HEADER`].
pub fn table_row(csr: &pb::CertificateSigningRequest, now: SystemTime) -> Vec<String> {
    let spec = csr.spec.clone().unwrap_or_default();
    let name = csr
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let signer = if spec.signer_name.is_empty() {
        "<none>".to_string()
    } else {
        spec.signer_name.clone()
    };
    let duration = spec
        .expiration_seconds
        .map(|s| human_duration(i64::from(s)))
        .unwrap_or_else(|| "<none>".into());
    vec![
        name,
        age_column(csr, now),
        signer,
        spec.username.clone(),
        duration,
        condition_column(csr),
    ]
}

/// Go's `text/tabwriter` as kubectl configures it (minwidth 6, padding 3,
/// pad with spaces): every column but the last is padded to its widest cell
/// plus 3; the last column is not padded.
pub fn tabwrite(rows: &[Vec<String>]) -> String {
    const MIN_WIDTH: usize = 6;
    const PADDING: usize = 3;
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        // Cells are terminated by a tab except the last one of each row.
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max((cell.chars().count() + PADDING).max(MIN_WIDTH));
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

// === The Kubernetes object shape ===

/// `certificates.k8s.io/v1` CertificateSigningRequest, as kubectl prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeCsr {
    api_version: String,
    kind: String,
    metadata: KubeMeta,
    spec: KubeSpec,
    status: KubeStatus,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeMeta {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    creation_timestamp: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    generate_name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    resource_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    uid: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration_seconds: Option<i32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extra: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    request: String,
    signer_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    uid: String,
    usages: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    username: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    conditions: Vec<KubeCondition>,
    /// certsign extension: who decided, in order (without the statement bytes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    decisions: Vec<KubeDecision>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeCondition {
    #[serde(skip_serializing_if = "Option::is_none")]
    last_transition_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_update_time: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
    status: String,
    #[serde(rename = "type")]
    type_: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeDecision {
    decision: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    username: String,
}

/// A `kind: List` as kubectl prints several objects.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeList {
    api_version: &'static str,
    items: Vec<KubeCsr>,
    kind: &'static str,
    metadata: ListMeta,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    resource_version: &'static str,
}

impl KubeList {
    /// Wraps objects in a `v1` `List`.
    pub fn new(items: Vec<KubeCsr>) -> Self {
        Self {
            api_version: "v1",
            items,
            kind: "List",
            metadata: ListMeta {
                resource_version: "",
            },
        }
    }
}

/// RFC 3339 in UTC with second precision, as Kubernetes' `metav1.Time`.
pub fn rfc3339(ts: &prost_types::Timestamp) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(ts.seconds).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decision enum as a word.
pub fn decision_word(d: i32) -> &'static str {
    match pb::Decision::try_from(d) {
        Ok(pb::Decision::Approve) => "Approve",
        Ok(pb::Decision::Deny) => "Deny",
        _ => "Unspecified",
    }
}

impl From<&pb::CertificateSigningRequest> for KubeCsr {
    fn from(csr: &pb::CertificateSigningRequest) -> Self {
        let meta = csr.metadata.clone().unwrap_or_default();
        let spec = csr.spec.clone().unwrap_or_default();
        let status = csr.status.clone().unwrap_or_default();
        KubeCsr {
            api_version: "certificates.k8s.io/v1".into(),
            kind: "CertificateSigningRequest".into(),
            metadata: KubeMeta {
                annotations: meta.annotations.into_iter().collect(),
                creation_timestamp: meta.creation_timestamp.as_ref().and_then(rfc3339),
                generate_name: meta.generate_name,
                labels: meta.labels.into_iter().collect(),
                name: meta.name,
                resource_version: meta.resource_version,
                uid: meta.uid,
            },
            spec: KubeSpec {
                expiration_seconds: spec.expiration_seconds,
                extra: spec.extra.into_iter().map(|(k, v)| (k, v.items)).collect(),
                groups: spec.groups,
                request: b64(&spec.request),
                signer_name: spec.signer_name,
                uid: spec.uid,
                usages: spec.usages,
                username: spec.username,
            },
            status: KubeStatus {
                certificate: (!status.certificate.is_empty()).then(|| b64(&status.certificate)),
                conditions: status
                    .conditions
                    .into_iter()
                    .map(|c| KubeCondition {
                        last_transition_time: c.last_transition_time.as_ref().and_then(rfc3339),
                        last_update_time: c.last_update_time.as_ref().and_then(rfc3339),
                        message: c.message,
                        reason: c.reason,
                        status: c.status,
                        type_: c.r#type,
                    })
                    .collect(),
                decisions: status
                    .decisions
                    .into_iter()
                    .map(|d| KubeDecision {
                        decision: decision_word(d.decision).into(),
                        groups: d.groups,
                        message: d.message,
                        reason: d.reason,
                        time: d.time.as_ref().and_then(rfc3339),
                        username: d.username,
                    })
                    .collect(),
            },
        }
    }
}

/// kubectl's `-o json`: 4-space indentation, trailing newline.
pub fn to_json<T: Serialize>(value: &T) -> Result<String> {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    value.serialize(&mut ser)?;
    let mut s = String::from_utf8(buf)?;
    s.push('\n');
    Ok(s)
}

/// kubectl's `-o yaml`: keys sorted (kubectl goes through JSON maps).
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String> {
    let v = serde_json::to_value(value)?;
    // Plain scalars, as kubectl prints them (no `>-` folding of base64), so
    // line-oriented tools see one `request: ...` line.
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    let mut s = serde_saphyr::to_string_with_options(&v, options)?;
    if !s.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn human_duration_matches_kubectl() {
        let cases: &[(i64, &str)] = &[
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (1, "1s"),
            (119, "119s"),
            (120, "2m"),
            (121, "2m1s"),
            (599, "9m59s"),
            (600, "10m"),
            (3600, "60m"),
            (7200, "120m"),
            (10799, "179m"),
            (10800, "3h"),
            (10860, "3h1m"),
            (28799, "7h59m"),
            (28800, "8h"),
            (86400, "24h"),
            (172799, "47h"),
            (172800, "2d"),
            (176400, "2d1h"),
            (691199, "7d23h"),
            (691200, "8d"),
            (864000, "10d"),
            (31536000, "365d"),
            (63071999, "729d"),
            (63072000, "2y"),
            (63158400, "2y1d"),
            (252288000, "8y"),
            (315360000, "10y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(*secs), *want, "{secs}s");
        }
    }

    fn csr(
        name: &str,
        conds: &[&str],
        cert: bool,
        exp: Option<i32>,
        created: i64,
    ) -> pb::CertificateSigningRequest {
        pb::CertificateSigningRequest {
            metadata: Some(pb::ObjectMeta {
                name: name.into(),
                creation_timestamp: Some(prost_types::Timestamp {
                    seconds: created,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            spec: Some(pb::CertificateSigningRequestSpec {
                signer_name: "kubernetes.io/kube-apiserver-client".into(),
                username: "kubernetes-admin".into(),
                expiration_seconds: exp,
                ..Default::default()
            }),
            status: Some(pb::CertificateSigningRequestStatus {
                conditions: conds
                    .iter()
                    .map(|t| pb::CertificateSigningRequestCondition {
                        r#type: t.to_string(),
                        status: "True".into(),
                        ..Default::default()
                    })
                    .collect(),
                certificate: if cert { b"pem".to_vec() } else { vec![] },
                decisions: vec![],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn condition_column_matches_kubectl() {
        assert_eq!(condition_column(&csr("a", &[], false, None, 0)), "Pending");
        assert_eq!(
            condition_column(&csr("a", &["Approved"], true, None, 0)),
            "Approved,Issued"
        );
        assert_eq!(
            condition_column(&csr("a", &["Approved", "Failed"], false, None, 0)),
            "Approved,Failed"
        );
        assert_eq!(
            condition_column(&csr("a", &["Denied"], false, None, 0)),
            "Denied"
        );
        assert_eq!(
            condition_column(&csr("a", &["Failed"], false, None, 0)),
            "Pending,Failed"
        );
    }

    #[test]
    fn table_matches_kubectl_layout() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_010);
        let items = [
            csr("myuser", &["Approved"], true, Some(86400), 1_000_000),
            csr("b", &[], false, None, 1_000_010 - 3 * 86400),
        ];
        let got = table(&items, now);
        let want = "\
NAME     AGE   SIGNERNAME                            REQUESTOR          REQUESTEDDURATION   CONDITION
myuser   10s   kubernetes.io/kube-apiserver-client   kubernetes-admin   24h                 Approved,Issued
b        3d    kubernetes.io/kube-apiserver-client   kubernetes-admin   <none>              Pending
";
        assert_eq!(got, want);
    }

    #[test]
    fn tabwriter_minimum_width_is_six() {
        let rows = vec![
            vec!["A".to_string(), "B".to_string()],
            vec!["cc".to_string(), "d".to_string()],
        ];
        assert_eq!(tabwrite(&rows), "A     B\ncc    d\n");
    }

    #[test]
    fn json_shape_is_kubernetes() {
        let mut c = csr("myuser", &["Approved"], true, Some(86400), 1_700_000_000);
        c.spec.as_mut().unwrap().request = b"-----BEGIN CERTIFICATE REQUEST-----\n".to_vec();
        let v = serde_json::to_value(KubeCsr::from(&c)).unwrap();
        assert_eq!(v["apiVersion"], "certificates.k8s.io/v1");
        assert_eq!(v["kind"], "CertificateSigningRequest");
        assert_eq!(v["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(v["spec"]["expirationSeconds"], 86400);
        assert_eq!(
            v["spec"]["request"],
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K"
        );
        assert_eq!(v["status"]["certificate"], "cGVt");
        assert_eq!(v["status"]["conditions"][0]["type"], "Approved");
        let list = serde_json::to_value(KubeList::new(vec![KubeCsr::from(&c)])).unwrap();
        assert_eq!(list["apiVersion"], "v1");
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"][0]["metadata"]["name"], "myuser");
    }

    #[test]
    fn yaml_quotes_ambiguous_strings() {
        let mut c = csr("myuser", &[], false, None, 1_700_000_000);
        c.metadata.as_mut().unwrap().resource_version = "5".into();
        let y = to_yaml(&KubeCsr::from(&c)).unwrap();
        let back: serde_json::Value = serde_saphyr::from_str(&y).unwrap();
        assert_eq!(back["metadata"]["resourceVersion"], "5");
        assert_eq!(
            back["metadata"]["creationTimestamp"],
            "2023-11-14T22:13:20Z"
        );
        assert!(y.starts_with("apiVersion: certificates.k8s.io/v1\n"), "{y}");
        let long = "A".repeat(300);
        c.spec.as_mut().unwrap().request = long.clone().into_bytes();
        let y = to_yaml(&KubeCsr::from(&c)).unwrap();
        assert!(y.lines().any(|l| l.starts_with("  request: QUFB")), "{y}");
    }
}

//! Server-side printing: the `meta.k8s.io/v1` Table kubectl asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, with Kubernetes'
//! CertificateSigningRequest columns (`NAME AGE SIGNERNAME REQUESTOR
//! REQUESTEDDURATION CONDITION`) and cells (`printCertificateSigningRequest`,
//! `HumanDuration`). `k8s-openapi` has no Table type (it is not part of the
//! OpenAPI document), so its few fields are declared here.
//!
//! This module must never decide what a caller may see; it prints what it
//! is given.

use certsign_proto::v1 as pb;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use serde::Serialize;

use crate::decision;

/// How much of each object a row carries (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// PartialObjectMetadata (the default).
    Metadata,
    /// The whole object.
    Object,
    None,
}

impl Include {
    /// Parse `includeObject`; Kubernetes' text for anything else.
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v {
            None | Some("") | Some("Metadata") => Ok(Include::Metadata),
            Some("Object") => Ok(Include::Object),
            Some("None") => Ok(Include::None),
            Some(other) => Err(format!("unrecognized includeObject value: {other:?}")),
        }
    }
}

/// One column definition.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Column {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i32,
}

/// One row: the cells and (as asked) the object.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub cells: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<serde_json::Value>,
}

/// `meta.k8s.io/v1` Table. `column_definitions` is `null` in watch events
/// after the first, as kube-apiserver sends them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub metadata: ListMeta,
    pub column_definitions: Option<Vec<Column>>,
    pub rows: Vec<Row>,
}

const fn col(name: &'static str, format: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_: "string",
        format,
        description,
        priority: 0,
    }
}

/// Kubernetes' `certificateSigningRequestColumnDefinitions`.
pub fn columns() -> Vec<Column> {
    vec![
        col(
            "Name",
            "name",
            "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.",
        ),
        col(
            "Age",
            "",
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
        ),
        col(
            "SignerName",
            "",
            "signerName indicates the requested signer, and is a qualified name.",
        ),
        col(
            "Requestor",
            "",
            "username contains the name of the user that created the CertificateSigningRequest.",
        ),
        col(
            "RequestedDuration",
            "",
            "expirationSeconds is the requested duration of validity of the issued certificate.",
        ),
        col(
            "Condition",
            "",
            "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\".",
        ),
    ]
}

/// apimachinery's `HumanDuration` of `secs` seconds.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 192 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = hours / 24;
        let rem = days % 365;
        return if rem == 0 {
            format!("{}y", days / 365)
        } else {
            format!("{}y{rem}d", days / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The cells of one request (`printCertificateSigningRequest`).
pub fn cells(c: &pb::CertificateSigningRequest) -> Vec<serde_json::Value> {
    let meta = c.metadata.clone().unwrap_or_default();
    let spec = c.spec.clone().unwrap_or_default();
    let age = meta
        .creation_timestamp
        .map(|t| human_duration(certsign_runtime::unix_now() - t.seconds))
        .unwrap_or_else(|| "<unknown>".into());
    let signer = if spec.signer_name.is_empty() {
        "<none>".to_string()
    } else {
        spec.signer_name
    };
    let duration = spec
        .expiration_seconds
        .map(|s| human_duration(i64::from(s)))
        .unwrap_or_else(|| "<none>".into());
    vec![
        meta.name.into(),
        age.into(),
        signer.into(),
        spec.username.into(),
        duration.into(),
        decision::condition_column(c).into(),
    ]
}

/// One row for `c` with the object as `include` asks.
pub fn row(c: &pb::CertificateSigningRequest, include: Include) -> Row {
    let object = match include {
        Include::None => None,
        Include::Object => serde_json::to_value(super::convert::to_kube(c)).ok(),
        Include::Metadata => Some(serde_json::json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": c.metadata.as_ref().map(super::convert::meta).unwrap_or_default(),
        })),
    };
    Row {
        cells: cells(c),
        object,
    }
}

/// A Table of `items` with the list's metadata.
pub fn table(
    items: &[pb::CertificateSigningRequest],
    metadata: ListMeta,
    include: Include,
    headers: bool,
) -> Table {
    Table {
        kind: "Table",
        api_version: "meta.k8s.io/v1",
        metadata,
        column_definitions: headers.then(columns),
        rows: items.iter().map(|c| row(c, include)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_apimachinery() {
        for (s, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3600, "60m"),
            (3 * 3600 + 60, "3h1m"),
            (86400, "24h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (10 * 365 * 86400, "10y"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn include_object_values() {
        assert_eq!(Include::parse(None), Ok(Include::Metadata));
        assert_eq!(Include::parse(Some("Object")), Ok(Include::Object));
        assert_eq!(
            Include::parse(Some("x")),
            Err("unrecognized includeObject value: \"x\"".into())
        );
    }
}

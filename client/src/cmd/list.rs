//! Reading requests for `get` and its watch: the named ones, or every page
//! of the list (filters and the label selector applied by the server),
//! with the store's resource version to watch from; and `-o json|yaml`.
//!
//! It only reads and renders; it prints nothing.

use anyhow::Result;
use certsign_proto::v1 as pb;

use super::common::fetch;
use crate::cli::{self, Output};
use crate::conn::{self, Conn};
use crate::kube;

/// What a `get` read: the objects, the names not found, and the store's
/// resource version from before the objects were read (a watch from it
/// misses no change).
pub(super) struct Listed {
    pub items: Vec<pb::CertificateSigningRequest>,
    pub missing: Vec<anyhow::Error>,
    pub resource_version: String,
}

/// The named requests, or every page of the list.
pub(super) async fn read(conn: &mut Conn, a: &cli::GetArgs) -> Result<Listed> {
    let mut listed = Listed {
        items: Vec::new(),
        missing: Vec::new(),
        resource_version: String::new(),
    };
    if !a.names.is_empty() {
        // The version first: whatever changes after it, the watch sends.
        listed.resource_version = list_page(conn, a, 1, String::new()).await?.resource_version;
        for name in &a.names {
            match fetch(conn, name).await {
                Ok(c) => listed.items.push(c),
                Err(e) => listed.missing.push(e),
            }
        }
        return Ok(listed);
    }
    let mut token = String::new();
    loop {
        let page = list_page(conn, a, a.chunk_size.max(0), token.clone()).await?;
        if listed.resource_version.is_empty() {
            // The first page's version: later pages may show newer objects,
            // whose changes the watch then sends again, but none is missed.
            listed.resource_version = page.resource_version;
        }
        listed.items.extend(page.items);
        if page.continue_token.is_empty() || page.continue_token == token {
            break;
        }
        token = page.continue_token;
    }
    Ok(listed)
}

async fn list_page(
    conn: &mut Conn,
    a: &cli::GetArgs,
    limit: i32,
    continue_token: String,
) -> Result<pb::ListCertificateSigningRequestsResponse> {
    Ok(conn
        .client
        .list_certificate_signing_requests(pb::ListCertificateSigningRequestsRequest {
            signer_name: a.signer_name.clone().unwrap_or_default(),
            condition: a.condition.clone().unwrap_or_default(),
            username: a.requestor.clone().unwrap_or_default(),
            limit,
            continue_token,
            label_selector: a.selector.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| conn::status_error(&s, &conn.url, None))?
        .into_inner())
}

/// `-o json` or `-o yaml`.
pub(super) fn render<T: serde::Serialize>(value: &T, fmt: Output) -> Result<String> {
    match fmt {
        Output::Yaml => kube::to_yaml(value),
        _ => kube::to_json(value),
    }
}

//! `certctl get csr [NAME...]`: kubectl's table, `-o name`, or the objects
//! as JSON/YAML; without names, every page of the list (`-l` selects by
//! label on the server). With `-w`/`--watch-only` the watch
//! (`get_watch`) takes over after the list.
//!
//! It only reads; a name that is not found is an error line after the
//! others are printed.

use std::time::SystemTime;

use anyhow::{Result, bail};
use certsign_proto::v1 as pb;

use super::common::{csr_resource, fetch, finish_errors, name_of};
use super::get_watch;
use crate::cli::{self, Output};
use crate::config::Settings;
use crate::conn::{self, Conn};
use crate::kube::{self, KubeCsr, KubeList, RESOURCE};
use crate::output::emit;

/// What a `get` read: the objects, the names not found, and the store's
/// resource version from before the objects were read (a watch from it
/// misses no change).
pub(super) struct Listed {
    pub items: Vec<pb::CertificateSigningRequest>,
    pub missing: Vec<anyhow::Error>,
    pub resource_version: String,
}

/// Runs `get`.
pub(super) async fn get(settings: Settings, mut a: cli::GetArgs) -> Result<()> {
    csr_resource(&a.resource, &mut a.names)?;
    if matches!(a.output, Some(Output::Pem | Output::Der)) || a.out.is_some() {
        bail!("-o pem|der and --out are for get crl; get csr prints wide, json, yaml or name");
    }
    if a.selector.is_some() && !a.names.is_empty() {
        bail!("name cannot be provided when a selector is specified");
    }
    let mut conn = conn::connect(&settings).await?;
    if a.watch || a.watch_only {
        return get_watch::watch(&mut conn, &a).await;
    }
    let listed = read(&mut conn, &a).await?;
    let single = a.names.len() == 1;
    match a.output {
        None | Some(Output::Wide) => {
            if listed.items.is_empty() {
                if listed.missing.is_empty() {
                    eprintln!("No resources found");
                }
            } else {
                emit(&kube::table_with(
                    &listed.items,
                    SystemTime::now(),
                    !a.no_headers,
                ));
            }
        }
        Some(Output::Name) => {
            for c in &listed.items {
                emit(&format!("{RESOURCE}/{}\n", name_of(c)));
            }
        }
        Some(fmt) => {
            let text = if single {
                match listed.items.first() {
                    Some(c) => render(&KubeCsr::from(c), fmt)?,
                    None => String::new(),
                }
            } else {
                render(
                    &KubeList::new(listed.items.iter().map(KubeCsr::from).collect()),
                    fmt,
                )?
            };
            emit(&text);
        }
    }
    finish_errors(listed.missing)
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

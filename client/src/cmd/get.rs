//! `certctl get csr [NAME...]`: kubectl's table, `-o name`, or the objects
//! as JSON/YAML; without names, every page of the list.
//!
//! It only reads; a name that is not found is an error line after the
//! others are printed.

use std::time::SystemTime;

use anyhow::{Result, bail};
use certsign_proto::v1 as pb;

use super::common::{csr_resource, fetch, finish_errors, name_of};
use crate::cli::{self, Output};
use crate::config::Settings;
use crate::conn;
use crate::kube::{self, KubeCsr, KubeList, RESOURCE};
use crate::output::emit;

/// Runs `get`.
pub(super) async fn get(settings: Settings, mut a: cli::GetArgs) -> Result<()> {
    csr_resource(&a.resource, &mut a.names)?;
    if matches!(a.output, Some(Output::Pem | Output::Der)) || a.out.is_some() {
        bail!("-o pem|der and --out are for get crl; get csr prints wide, json, yaml or name");
    }
    let mut conn = conn::connect(&settings).await?;
    let mut items = Vec::new();
    let mut missing = Vec::new();
    let single = a.names.len() == 1;
    if a.names.is_empty() {
        let mut token = String::new();
        loop {
            let page = conn
                .client
                .list_certificate_signing_requests(pb::ListCertificateSigningRequestsRequest {
                    signer_name: a.signer_name.clone().unwrap_or_default(),
                    condition: a.condition.clone().unwrap_or_default(),
                    username: a.requestor.clone().unwrap_or_default(),
                    limit: a.chunk_size.max(0),
                    continue_token: token.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|s| conn::status_error(&s, &conn.url, None))?
                .into_inner();
            items.extend(page.items);
            if page.continue_token.is_empty() || page.continue_token == token {
                break;
            }
            token = page.continue_token;
        }
    } else {
        for name in &a.names {
            match fetch(&mut conn, name).await {
                Ok(c) => items.push(c),
                Err(e) => missing.push(e),
            }
        }
    }
    match a.output {
        None | Some(Output::Wide) => {
            if items.is_empty() {
                if missing.is_empty() {
                    eprintln!("No resources found");
                }
            } else {
                emit(&kube::table(&items, SystemTime::now()));
            }
        }
        Some(Output::Name) => {
            for c in &items {
                emit(&format!("{RESOURCE}/{}\n", name_of(c)));
            }
        }
        Some(fmt) => {
            let text = if single {
                match items.first() {
                    Some(c) => render(&KubeCsr::from(c), fmt)?,
                    None => String::new(),
                }
            } else {
                render(
                    &KubeList::new(items.iter().map(KubeCsr::from).collect()),
                    fmt,
                )?
            };
            emit(&text);
        }
    }
    finish_errors(missing)
}

/// `-o json` or `-o yaml`.
fn render<T: serde::Serialize>(value: &T, fmt: Output) -> Result<String> {
    match fmt {
        Output::Yaml => kube::to_yaml(value),
        _ => kube::to_json(value),
    }
}

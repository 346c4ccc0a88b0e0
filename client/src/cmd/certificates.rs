//! `certctl get certificates [SERIAL...]`: the approver's inventory of
//! issued certificates (`SERIAL SUBJECT SIGNERNAME REQUESTOR NOTAFTER
//! STATUS`), `-o wide|json|yaml|name`, `--signer-name`; without serials,
//! every page of the list.
//!
//! It only reads; a serial that is not found is an error line after the
//! others are printed.

use std::time::SystemTime;

use anyhow::{Result, anyhow, bail};
use certsign_proto::v1 as pb;

use super::common::finish_errors;
use crate::cli::{self, Output};
use crate::config::Settings;
use crate::conn::{self, Conn};
use crate::inventory::{self, Certificate, CertificateList, RESOURCE};
use crate::kube;
use crate::output::emit;
use crate::revocation::normalize_serial;

/// Every page of `ListCertificates` for `filter`.
async fn list_all(
    conn: &mut Conn,
    filter: pb::ListCertificatesRequest,
) -> Result<Vec<pb::IssuedCertificate>> {
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let page = conn
            .client
            .list_certificates(pb::ListCertificatesRequest {
                continue_token: token.clone(),
                ..filter.clone()
            })
            .await
            .map_err(|s| conn::status_error(&s, &conn.url, None))?
            .into_inner();
        items.extend(page.items);
        if page.continue_token.is_empty() || page.continue_token == token {
            return Ok(items);
        }
        token = page.continue_token;
    }
}

/// Runs `get certificates`.
pub(super) async fn get_certificates(settings: Settings, a: cli::GetArgs) -> Result<()> {
    if matches!(a.output, Some(Output::Pem | Output::Der)) || a.out.is_some() {
        bail!(
            "-o pem|der and --out are for get crl; get certificates prints wide, json, yaml or name"
        );
    }
    if a.condition.is_some() || a.requestor.is_some() {
        bail!(
            "--condition and --requestor are for get csr; get certificates filters by --signer-name"
        );
    }
    let serials = a
        .names
        .iter()
        .map(|s| normalize_serial(s))
        .collect::<Result<Vec<_>>>()?;
    let mut conn = conn::connect(&settings).await?;
    let filter = pb::ListCertificatesRequest {
        signer_name: a.signer_name.clone().unwrap_or_default(),
        limit: a.chunk_size.max(0),
        ..Default::default()
    };
    let mut items = Vec::new();
    let mut missing = Vec::new();
    if serials.is_empty() {
        items = list_all(&mut conn, filter).await?;
    } else {
        for serial in &serials {
            let found = list_all(
                &mut conn,
                pb::ListCertificatesRequest {
                    serial_number: serial.clone(),
                    ..filter.clone()
                },
            )
            .await?;
            match found.into_iter().find(|c| &c.serial_number == serial) {
                Some(c) => items.push(c),
                None => missing.push(anyhow!("{RESOURCE} {serial:?} not found")),
            }
        }
    }
    let now = SystemTime::now();
    match a.output {
        None | Some(Output::Wide) => {
            if items.is_empty() {
                if missing.is_empty() {
                    eprintln!("No resources found");
                }
            } else {
                emit(&inventory::table(&items, a.output.is_some(), now));
            }
        }
        Some(Output::Name) => {
            for c in &items {
                emit(&format!("{RESOURCE}/{}\n", c.serial_number));
            }
        }
        Some(fmt) => {
            let text = if serials.len() == 1 {
                match items.first() {
                    Some(c) => render(&Certificate::new(c, now), fmt)?,
                    None => String::new(),
                }
            } else {
                let list = items.iter().map(|c| Certificate::new(c, now)).collect();
                render(&CertificateList::new(list), fmt)?
            };
            emit(&text);
        }
    }
    finish_errors(missing)
}

fn render<T: serde::Serialize>(value: &T, fmt: Output) -> Result<String> {
    match fmt {
        Output::Yaml => kube::to_yaml(value),
        _ => kube::to_json(value),
    }
}

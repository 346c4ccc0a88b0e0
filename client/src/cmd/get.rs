//! `certctl get csr [NAME...]`: kubectl's table, `-o name`, or the objects
//! as JSON/YAML; without names, every page of the list (`-l` selects by
//! label on the server). With `-w`/`--watch-only` the watch
//! (`get_watch`) takes over after the list.
//!
//! It only reads; a name that is not found is an error line after the
//! others are printed.

use std::time::SystemTime;

use anyhow::{Result, bail};

use super::common::{csr_resource, finish_errors, name_of};
use super::get_watch;
use super::list::{read, render};
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

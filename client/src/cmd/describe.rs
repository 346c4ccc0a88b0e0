//! `certctl describe csr NAME...`: kubectl's describe text for each request.
//!
//! It only reads; names that are not found are error lines after the others.

use std::time::SystemTime;

use anyhow::{Result, bail};

use super::common::{csr_resource, fetch, finish_errors};
use crate::cli;
use crate::config::Settings;
use crate::conn;
use crate::output::emit;

/// Runs `describe`.
pub(super) async fn describe(settings: Settings, mut a: cli::DescribeArgs) -> Result<()> {
    csr_resource(&a.resource, &mut a.names)?;
    if a.names.is_empty() {
        bail!("describe needs a name: certctl describe csr NAME");
    }
    let mut conn = conn::connect(&settings).await?;
    let mut errors = Vec::new();
    let mut first = true;
    for name in &a.names {
        match fetch(&mut conn, name).await {
            Ok(c) => {
                if !first {
                    emit("\n\n");
                }
                first = false;
                emit(&crate::describe::describe(&c, SystemTime::now()));
            }
            Err(e) => errors.push(e),
        }
    }
    finish_errors(errors)
}

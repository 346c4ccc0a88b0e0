//! `certctl delete csr NAME...`: deletes each request, kubectl-style.
//!
//! Names that are not found are error lines after the others; nothing is
//! deleted that was not named.

use anyhow::Result;
use certsign_proto::v1 as pb;

use super::common::{csr_resource, finish_errors};
use crate::cli;
use crate::config::Settings;
use crate::conn;
use crate::kube::RESOURCE;
use crate::output::emit;

/// Runs `delete csr`.
pub(super) async fn delete(settings: Settings, mut a: cli::DeleteArgs) -> Result<()> {
    csr_resource(&a.resource, &mut a.names)?;
    let mut conn = conn::connect(&settings).await?;
    let mut errors = Vec::new();
    for name in &a.names {
        let r = conn
            .client
            .delete_certificate_signing_request(pb::DeleteCertificateSigningRequestRequest {
                name: name.clone(),
            })
            .await;
        match r {
            Ok(_) => emit(&format!("{RESOURCE} {name:?} deleted\n")),
            Err(s) => errors.push(conn::status_error(&s, &conn.url, Some(name))),
        }
    }
    finish_errors(errors)
}

//! `certctl certificate approve|deny NAME...`: records the decision, signed
//! with the admin's own key (an ApprovalStatement) when approving.
//!
//! The signing identity is loaded before connecting (a bad key is a local
//! error). A request already decided the same way is a success without a
//! call (unless `--force`); one decided the other way is an error, never
//! overturned.

use std::time::SystemTime;

use anyhow::{Result, bail};
use certsign_proto::v1 as pb;

use super::common::{fetch, finish_errors, has_condition};
use crate::cli;
use crate::config::Settings;
use crate::conn::{self, Conn};
use crate::evidence::StatementSigner;
use crate::kube::RESOURCE;
use crate::output::emit;

/// Runs `certificate approve` or `certificate deny`.
pub(super) async fn decide(
    settings: Settings,
    a: cli::DecideArgs,
    decision: pb::Decision,
) -> Result<()> {
    let approving = decision == pb::Decision::Approve;
    // Load the signing identity before connecting: a bad key is a local error.
    let signer = match (&settings.identity, &settings.token) {
        (Some((cert, key)), None) => Some(StatementSigner::load(cert, key)?),
        _ if approving => bail!(
            "approving needs your own certificate and key to sign the approval: pass --cert and --key or set them in the config file"
        ),
        _ => None,
    };
    let mut conn = conn::connect(&settings).await?;
    let mut errors = Vec::new();
    for name in &a.names {
        match decide_one(&mut conn, signer.as_ref(), name, &a, decision).await {
            Ok(line) => emit(&line),
            Err(e) => errors.push(e),
        }
    }
    finish_errors(errors)
}

/// Decides one request; the line to print.
async fn decide_one(
    conn: &mut Conn,
    signer: Option<&StatementSigner>,
    name: &str,
    a: &cli::DecideArgs,
    decision: pb::Decision,
) -> Result<String> {
    let (same, opposite, verb) = match decision {
        pb::Decision::Approve => ("Approved", "Denied", "approved"),
        _ => ("Denied", "Approved", "denied"),
    };
    let csr = fetch(conn, name).await?;
    if has_condition(&csr, opposite) {
        bail!("certificate signing request {name:?} is already {opposite}");
    }
    if has_condition(&csr, same) && !a.force {
        // kubectl: nothing to update, same success line.
        return Ok(format!("{RESOURCE}/{name} {verb}\n"));
    }
    let statement = match signer {
        Some(s) => Some(s.approval(&csr, decision, SystemTime::now())?),
        None => None,
    };
    let reason = a.reason.clone().unwrap_or_default();
    let message = a.message.clone().unwrap_or_default();
    let result = if decision == pb::Decision::Approve {
        conn.client
            .approve_certificate_signing_request(pb::ApproveCertificateSigningRequestRequest {
                name: name.to_string(),
                approval: statement,
                reason,
                message,
            })
            .await
    } else {
        conn.client
            .deny_certificate_signing_request(pb::DenyCertificateSigningRequestRequest {
                name: name.to_string(),
                denial: statement,
                reason,
                message,
            })
            .await
    };
    result.map_err(|s| conn::status_error(&s, &conn.url, Some(name)))?;
    Ok(format!("{RESOURCE}/{name} {verb}\n"))
}

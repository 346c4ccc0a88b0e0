//! `certctl certificate approve|deny NAME... | -f FILE | --all-pending`:
//! records the decision, signed with the admin's own key when approving
//! (and when denying with a key): one ApprovalStatement for one request,
//! one BatchApprovalStatement covering all of them for several (one
//! signature, one touch of a hardware key), sent with each request.
//!
//! The signing identity and the manifest are read before connecting (a bad
//! key or file is a local error). A request already decided the same way
//! is a success without a call (unless `--force`); one decided the other
//! way is an error, never overturned.

use std::time::SystemTime;

use anyhow::{Result, anyhow, bail};
use certsign_evidence::MAX_BATCH_ENTRIES;
use certsign_proto::v1 as pb;
use x509_parser::prelude::FromDer;

use super::apply::read_input;
use super::common::{fetch, finish_errors, has_condition, name_of};
use crate::cli;
use crate::config::Settings;
use crate::conn::{self, Conn};
use crate::evidence::StatementSigner;
use crate::kube::RESOURCE;
use crate::manifest;
use crate::output::emit;

/// What happens to one named request.
enum Step {
    /// Already decided this way: the line, no call.
    Done(String),
    /// Cannot be decided: the error.
    Failed(anyhow::Error),
    /// To send (its statement is made with the others).
    Send(Box<pb::CertificateSigningRequest>),
}

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
    let mut names = a.names.clone();
    if let Some(path) = &a.filename {
        let text = read_input(path)?;
        let found = manifest::names_in_document(&text)
            .map_err(|e| anyhow!("error validating {:?}: {e}", path.display().to_string()))?;
        names.extend(found);
    }
    let mut conn = conn::connect(&settings).await?;
    if a.all_pending {
        let me = match &signer {
            Some(s) => Some(username_of(s.leaf()?)?),
            None => None,
        };
        names.extend(pending(&mut conn, a.signer_name.as_deref(), me.as_deref()).await?);
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));

    let mut steps = Vec::with_capacity(names.len());
    for name in &names {
        steps.push(match check(&mut conn, name, &a, decision).await {
            Ok(Some(csr)) => Step::Send(Box::new(csr)),
            Ok(None) => Step::Done(line(name, decision)),
            Err(e) => Step::Failed(e),
        });
    }
    // One signature for every request to send.
    let to_send: Vec<pb::CertificateSigningRequest> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Send(c) => Some((**c).clone()),
            _ => None,
        })
        .collect();
    let now = SystemTime::now();
    let mut statements: Vec<Option<pb::SignedStatement>> = match &signer {
        Some(s) if to_send.len() == 1 => vec![Some(s.approval(&to_send[0], decision, now)?)],
        Some(s) => {
            let mut all = Vec::with_capacity(to_send.len());
            for chunk in to_send.chunks(MAX_BATCH_ENTRIES) {
                all.extend(s.batch(chunk, decision, now)?.into_iter().map(Some));
            }
            all
        }
        None => vec![None; to_send.len()],
    };
    statements.reverse();

    let mut errors = Vec::new();
    for step in steps {
        match step {
            Step::Done(l) => emit(&l),
            Step::Failed(e) => errors.push(e),
            Step::Send(csr) => {
                let statement = statements.pop().flatten();
                match send(&mut conn, &name_of(&csr), statement, &a, decision).await {
                    Ok(l) => emit(&l),
                    Err(e) => errors.push(e),
                }
            }
        }
    }
    finish_errors(errors)
}

/// kubectl's line for a decided request.
fn line(name: &str, decision: pb::Decision) -> String {
    let verb = match decision {
        pb::Decision::Approve => "approved",
        _ => "denied",
    };
    format!("{RESOURCE}/{name} {verb}\n")
}

/// The CN of a certificate: the admin's username.
fn username_of(cert_der: &[u8]) -> Result<String> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|e| anyhow!("cannot read your certificate: {e}"))?;
    certsign_evidence::name_identity(cert.subject())
        .0
        .ok_or_else(|| anyhow!("your certificate has no subject common name"))
}

/// Every Pending request (of `signer_name`, if given) the caller may read,
/// except the caller's own (the requestor may never approve them).
async fn pending(
    conn: &mut Conn,
    signer_name: Option<&str>,
    me: Option<&str>,
) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = conn
            .client
            .list_certificate_signing_requests(pb::ListCertificateSigningRequestsRequest {
                signer_name: signer_name.unwrap_or_default().to_string(),
                condition: "Pending".into(),
                username: String::new(),
                limit: 0,
                continue_token: token.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| conn::status_error(&s, &conn.url, None))?
            .into_inner();
        names.extend(
            page.items
                .iter()
                .filter(|c| me.is_none() || c.spec.as_ref().map(|s| s.username.as_str()) != me)
                .map(name_of),
        );
        if page.continue_token.is_empty() || page.continue_token == token {
            break;
        }
        token = page.continue_token;
    }
    Ok(names)
}

/// The request if it is to be decided now; None if already decided this way.
async fn check(
    conn: &mut Conn,
    name: &str,
    a: &cli::DecideArgs,
    decision: pb::Decision,
) -> Result<Option<pb::CertificateSigningRequest>> {
    let (same, opposite) = match decision {
        pb::Decision::Approve => ("Approved", "Denied"),
        _ => ("Denied", "Approved"),
    };
    let csr = fetch(conn, name).await?;
    if has_condition(&csr, opposite) {
        bail!("certificate signing request {name:?} is already {opposite}");
    }
    if has_condition(&csr, same) && !a.force {
        // kubectl: nothing to update, same success line.
        return Ok(None);
    }
    Ok(Some(csr))
}

/// Sends one decision; the line to print.
async fn send(
    conn: &mut Conn,
    name: &str,
    statement: Option<pb::SignedStatement>,
    a: &cli::DecideArgs,
    decision: pb::Decision,
) -> Result<String> {
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
    Ok(line(name, decision))
}

//! `certctl certificate wait NAME`: follows a request until it is issued,
//! denied or failed, and prints or writes the certificate. `renew` waits the
//! same way.
//!
//! The exit code says how it ended (0 issued, 2 denied, 3 failed, 4 timed
//! out). An approver that restarts or a dropped watch is not an answer: it
//! fetches again until the timeout. It never writes a partial certificate.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{Result, bail};
use certsign_proto::v1 as pb;
use tokio_stream::StreamExt as _;

use super::common::{fetch, has_condition, name_of};
use crate::cli;
use crate::config::Settings;
use crate::conn::{self, Conn};
use crate::files;
use crate::kube;
use crate::output::{Failure, emit};

/// Exit code: the request was denied.
pub const EXIT_DENIED: u8 = 2;
/// Exit code: the request failed.
pub const EXIT_FAILED: u8 = 3;
/// Exit code: timed out.
pub const EXIT_TIMEOUT: u8 = 4;

/// How a request ended.
#[derive(Debug)]
enum Outcome {
    Issued(Vec<u8>),
    Denied(String),
    Failed(String),
}

/// The reason and message of the condition of type `t`, if any.
fn condition_text(csr: &pb::CertificateSigningRequest, t: &str) -> String {
    let c = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == t));
    match c {
        Some(c) if !c.message.is_empty() => format!("{}: {}", c.reason, c.message),
        Some(c) => c.reason.clone(),
        None => String::new(),
    }
}

/// How the request ended, if it has.
fn outcome(csr: &pb::CertificateSigningRequest) -> Option<Outcome> {
    if let Some(s) = &csr.status
        && !s.certificate.is_empty()
    {
        return Some(Outcome::Issued(s.certificate.clone()));
    }
    if has_condition(csr, "Denied") {
        return Some(Outcome::Denied(condition_text(csr, "Denied")));
    }
    if has_condition(csr, "Failed") {
        return Some(Outcome::Failed(condition_text(csr, "Failed")));
    }
    None
}

/// Follows the watch stream (re-fetching after any interruption) until the
/// request is issued, denied or failed.
async fn follow(conn: &mut Conn, name: &str, spinner: &indicatif::ProgressBar) -> Result<Outcome> {
    loop {
        let got = conn
            .client
            .get_certificate_signing_request(pb::GetCertificateSigningRequestRequest {
                name: name.to_string(),
            })
            .await;
        let csr = match got {
            Ok(r) => r.into_inner(),
            // The approver restarting or a dropped connection is not an
            // answer: keep trying until the timeout.
            Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) => {
                spinner.set_message(format!(
                    "waiting for {name}: approver unavailable, retrying"
                ));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(s) => return Err(conn::status_error(&s, &conn.url, Some(name))),
        };
        spinner.set_message(format!(
            "waiting for {name}: {}",
            kube::condition_column(&csr)
        ));
        if let Some(o) = outcome(&csr) {
            return Ok(o);
        }
        let watch = conn
            .client
            .watch_certificate_signing_requests(pb::WatchCertificateSigningRequestsRequest {
                name: name.to_string(),
                signer_name: String::new(),
                send_initial_events: true,
                ..Default::default()
            })
            .await;
        if let Ok(resp) = watch {
            let mut stream = resp.into_inner();
            while let Some(Ok(event)) = stream.next().await {
                let Some(obj) = event.object else { continue };
                if name_of(&obj) != name {
                    continue;
                }
                if event.r#type == "DELETED" {
                    bail!("certificatesigningrequest {name:?} was deleted");
                }
                spinner.set_message(format!(
                    "waiting for {name}: {}",
                    kube::condition_column(&obj)
                ));
                if let Some(o) = outcome(&obj) {
                    return Ok(o);
                }
            }
        }
        // Stream ended or could not start: back off, then fetch again.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A spinner on a terminal; nothing when stderr is a pipe or file.
fn spinner() -> indicatif::ProgressBar {
    if std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(Duration::from_millis(100));
        pb
    } else {
        indicatif::ProgressBar::hidden()
    }
}

/// Waits for `name`, mapping denial, failure and timeout to their exit codes.
pub(super) async fn wait_issued(conn: &mut Conn, name: &str, timeout: Duration) -> Result<Vec<u8>> {
    let sp = spinner();
    let result = tokio::time::timeout(timeout, follow(conn, name, &sp)).await;
    sp.finish_and_clear();
    match result {
        Err(_) => Err(Failure {
            code: EXIT_TIMEOUT,
            message: format!(
                "timed out after {} waiting for certificatesigningrequest {name:?}",
                humantime::format_duration(timeout)
            ),
        }
        .into()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Outcome::Issued(pem))) => Ok(pem),
        Ok(Ok(Outcome::Denied(why))) => Err(Failure {
            code: EXIT_DENIED,
            message: format!(
                "certificatesigningrequest {name:?} was denied{}",
                suffix(&why)
            ),
        }
        .into()),
        Ok(Ok(Outcome::Failed(why))) => Err(Failure {
            code: EXIT_FAILED,
            message: format!("certificatesigningrequest {name:?} failed{}", suffix(&why)),
        }
        .into()),
    }
}

/// `: why`, or nothing when there is no reason.
fn suffix(why: &str) -> String {
    if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    }
}

/// Runs `certificate wait`.
pub(super) async fn wait(settings: Settings, a: cli::WaitArgs) -> Result<()> {
    let mut conn = conn::connect(&settings).await?;
    let pem = wait_issued(&mut conn, &a.name, a.timeout.into()).await?;
    if let Some(ca_out) = &a.ca_out {
        let signer = fetch(&mut conn, &a.name)
            .await?
            .spec
            .map(|s| s.signer_name)
            .unwrap_or_default();
        let bundle = super::trustbundle::fetch_bundle(&mut conn, &signer).await?;
        files::write_atomic(ca_out, &bundle, 0o644, true)?;
    }
    match &a.out {
        Some(path) => files::write_atomic(path, &pem, 0o644, true)?,
        None => emit(&String::from_utf8_lossy(&pem)),
    }
    Ok(())
}

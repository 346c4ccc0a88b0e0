//! `certctl get csr -w` / `--watch-only`: kubectl's watch. With `-w` the
//! current objects first (header and rows, as `get` prints them), then one
//! row per change as it happens; the header is printed once. Each row is
//! laid out on its own, as kubectl's watch flushes its table writer per
//! event.
//!
//! The watch resumes from the store's resource version: the list's at
//! first, then the version of the last event received. A dropped
//! connection (an approver restart, a network blip) is retried with
//! backoff from that version, so no change is shown twice or missed. It
//! only reads, and it never ends by itself except on an error the server
//! gives for the watch itself (e.g. a version too old to resume from).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use certsign_proto::v1 as pb;

use super::common::{finish_errors, name_of};
use super::list::{read, render};
use crate::cli::{self, Output};
use crate::conn::{self, Conn};
use crate::kube::{self, KubeCsr, RESOURCE};
use crate::output::{emit, print_error};

/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Prints objects as the watch goes.
struct Printer {
    output: Option<Output>,
    /// The header is still to be printed (table output with headers).
    header_due: bool,
    /// Objects printed so far (YAML documents are separated by `---`).
    printed: usize,
}

impl Printer {
    fn print(&mut self, items: &[pb::CertificateSigningRequest]) -> Result<()> {
        for c in items {
            let text = match self.output {
                None | Some(Output::Wide) => {
                    let mut rows = Vec::new();
                    if self.header_due {
                        rows.push(kube::TABLE_HEADER.iter().map(|s| s.to_string()).collect());
                        self.header_due = false;
                    }
                    rows.push(kube::table_row(c, SystemTime::now()));
                    kube::tabwrite(&rows)
                }
                Some(Output::Name) => format!("{RESOURCE}/{}\n", name_of(c)),
                Some(Output::Yaml) if self.printed > 0 => {
                    format!("---\n{}", render(&KubeCsr::from(c), Output::Yaml)?)
                }
                Some(fmt) => render(&KubeCsr::from(c), fmt)?,
            };
            emit(&text);
            self.printed += 1;
        }
        Ok(())
    }

    /// The first block (the list) is laid out as one table.
    fn print_table_block(&mut self, items: &[pb::CertificateSigningRequest]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        if matches!(self.output, None | Some(Output::Wide)) {
            emit(&kube::table_with(items, SystemTime::now(), self.header_due));
            self.header_due = false;
            self.printed += items.len();
            return Ok(());
        }
        self.print(items)
    }
}

/// What the watch filters on the client: the filters Watch does not take.
struct Filter {
    names: HashSet<String>,
    condition: Option<String>,
    requestor: Option<String>,
}

impl Filter {
    fn keeps(&self, c: &pb::CertificateSigningRequest) -> bool {
        if !self.names.is_empty() && !self.names.contains(&name_of(c)) {
            return false;
        }
        if let Some(want) = &self.condition {
            let cond = kube::condition_column(c);
            if cond != *want && !cond.split(',').any(|p| p == want) {
                return false;
            }
        }
        if let Some(user) = &self.requestor
            && c.spec.as_ref().is_none_or(|s| s.username != *user)
        {
            return false;
        }
        true
    }
}

/// Errors after which the watch reconnects and resumes: the connection
/// went away, or the server ended the stream for its own reasons (a
/// restart, a watch that fell behind), none of them about the request.
fn resumable(s: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted | Code::Internal
    ) || (s.code() == Code::DeadlineExceeded)
}

/// Runs the watch; returns only on an error.
pub(super) async fn watch(conn: &mut Conn, a: &cli::GetArgs) -> Result<()> {
    let mut printer = Printer {
        output: a.output,
        header_due: !a.no_headers,
        printed: 0,
    };
    let listed = read(conn, a).await?;
    let mut resource_version = listed.resource_version;
    if !a.watch_only {
        printer.print_table_block(&listed.items)?;
    }
    for e in &listed.missing {
        print_error(e);
    }
    let filter = Filter {
        names: a.names.iter().cloned().collect(),
        condition: a.condition.clone(),
        requestor: a.requestor.clone(),
    };
    let request = |rv: &str| pb::WatchCertificateSigningRequestsRequest {
        name: if a.names.len() == 1 {
            a.names[0].clone()
        } else {
            String::new()
        },
        signer_name: a.signer_name.clone().unwrap_or_default(),
        send_initial_events: false,
        resource_version: rv.to_string(),
        label_selector: a.selector.clone().unwrap_or_default(),
    };
    let mut backoff = Duration::from_millis(250);
    loop {
        let status = match conn
            .client
            .watch_certificate_signing_requests(request(&resource_version))
            .await
        {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(ev)) => {
                            backoff = Duration::from_millis(250);
                            let Some(obj) = ev.object else { continue };
                            if let Some(m) = &obj.metadata
                                && !m.resource_version.is_empty()
                            {
                                resource_version = m.resource_version.clone();
                            }
                            if filter.keeps(&obj) {
                                printer.print(std::slice::from_ref(&obj))?;
                            }
                        }
                        // The server closed the stream: resume.
                        Ok(None) => break None,
                        Err(s) => break Some(s),
                    }
                }
            }
            Err(s) => Some(s),
        };
        if let Some(s) = status
            && !resumable(&s)
        {
            return finish_errors(vec![conn::status_error(&s, &conn.url, None)]);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

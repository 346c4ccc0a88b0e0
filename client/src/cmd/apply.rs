//! `certctl apply -f FILE|-`: creates each request of a manifest (YAML or
//! JSON, one object or a list), kubectl-style.
//!
//! The whole manifest is validated before connecting; an existing request
//! with the same spec is "unchanged", a different spec is an error (the spec
//! is immutable), never a replacement.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use certsign_proto::v1 as pb;

use super::common::{fetch, finish_errors, name_of, new_request};
use crate::cli;
use crate::config::Settings;
use crate::conn::{self, Conn};
use crate::kube::RESOURCE;
use crate::manifest::{self, Manifest};
use crate::output::{KubectlLine, emit};

/// The manifest text from a file or stdin (`-`), with kubectl's messages.
pub(super) fn read_input(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| anyhow!("cannot read stdin: {}", crate::output::io_reason(&e)))?;
        return Ok(s);
    }
    match std::fs::read(path) {
        Ok(bytes) => {
            String::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8 text", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("the path {:?} does not exist", path.display().to_string())
        }
        Err(e) => bail!(
            "cannot read {}: {}",
            path.display(),
            crate::output::io_reason(&e)
        ),
    }
}

/// Runs `apply`.
pub(super) async fn apply(
    settings: impl FnOnce() -> Result<Settings>,
    a: cli::ApplyArgs,
) -> Result<()> {
    let text = read_input(&a.filename)?;
    // Shape problems read as the server's Invalid answer would; a document
    // that is not YAML or JSON at all stays an `error: ` line.
    let manifests = manifest::parse_document(&text).map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with("The CertificateSigningRequest ") {
            KubectlLine(msg).into()
        } else {
            e
        }
    })?;
    let mut conn = conn::connect(&settings()?).await?;
    let mut errors = Vec::new();
    for m in &manifests {
        match apply_one(&mut conn, m).await {
            Ok(line) => emit(&line),
            Err(e) => errors.push(e),
        }
    }
    finish_errors(errors)
}

/// Creates one request; the line to print (`created` or `unchanged`).
async fn apply_one(conn: &mut Conn, m: &Manifest) -> Result<String> {
    let req = new_request(m);
    match conn
        .client
        .create_certificate_signing_request(pb::CreateCertificateSigningRequestRequest {
            certificate_signing_request: Some(req),
            renewal: None,
        })
        .await
    {
        Ok(resp) => Ok(format!("{RESOURCE}/{} created\n", name_of(resp.get_ref()))),
        Err(s) if s.code() == tonic::Code::AlreadyExists && !m.name.is_empty() => {
            // kubectl apply on an existing object: the spec is immutable, so an
            // identical spec is "unchanged" and anything else an error.
            let existing = fetch(conn, &m.name).await?;
            let spec = existing.spec.unwrap_or_default();
            if spec.request == m.request
                && spec.signer_name == m.signer_name
                && spec.usages == m.usages
                && spec.expiration_seconds == m.expiration_seconds
            {
                Ok(format!("{RESOURCE}/{} unchanged\n", m.name))
            } else {
                bail!(
                    "certificatesigningrequest {:?} already exists with a different spec (the spec is immutable; delete it first)",
                    m.name
                )
            }
        }
        Err(s) => Err(conn::status_error(&s, &conn.url, None)),
    }
}

//! `certctl create csr NAME --subject ... --key-out FILE`: generates a key,
//! builds and signs the PKCS#10 request, and creates it.
//!
//! Every flag and both target files are checked before the key is made or
//! the approver is reached. The key is written to a 0600 temp file before
//! the request leaves and takes its final name only once the approver
//! accepted the request; a refused request leaves no file behind.

use anyhow::{Result, bail};

use super::common::{csr_resource, expiration_seconds, name_of, own_manifest, submit};
use crate::cli;
use crate::config::Settings;
use crate::kube::RESOURCE;
use crate::output::emit;
use crate::pkix::{self, PrivateKey, Subject};
use crate::{conn, files, manifest};

/// Runs `create csr`.
pub(super) async fn create(
    settings: impl FnOnce() -> Result<Settings>,
    mut a: cli::CreateArgs,
) -> Result<()> {
    let mut extra = Vec::new();
    csr_resource(&a.resource, &mut extra)?;
    if !extra.is_empty() {
        // `create csr/NAME` is not a kubectl form; keep the grammar strict.
        bail!("usage: certctl create csr NAME --subject ... --key-out FILE");
    }
    if !manifest::is_dns_subdomain(&a.name) {
        bail!(
            "invalid name {:?}: must be a lowercase RFC 1123 subdomain (lower case alphanumerics, '-' or '.')",
            a.name
        );
    }
    let subject = Subject::parse(&a.subject)?;
    let sans = pkix::sans_from_flags(&a.dns, &a.ip, &a.uri, &a.email)?;
    let usages = pkix::parse_usages(&std::mem::take(&mut a.usages))?;
    let expiration = expiration_seconds(a.expiration)?;
    files::check_target(&a.key_out, a.force)?;
    if let Some(p) = &a.csr_out {
        files::check_target(p, a.force)?;
    }
    let settings = settings()?;
    let key = PrivateKey::generate(a.key_type)?;
    let der = pkix::build_csr(&key, &subject.to_der(), &sans)?;
    let pem = pkix::pem_encode(pkix::CSR_PEM_LABEL, &der);

    let mut conn = conn::connect(&settings).await?;
    // The key is durable on disk (a 0600 temp file) before the request leaves,
    // and takes its final name only once the approver accepted the request.
    let staged_key = files::stage(&a.key_out, key.pkcs8_pem()?.as_bytes(), 0o600)?;
    let staged_csr = match &a.csr_out {
        Some(p) => Some(files::stage(p, pem.as_bytes(), 0o644)?),
        None => None,
    };
    let m = own_manifest(&a.name, pem, &a.signer_name, usages, expiration);
    let created = submit(&mut conn, &m, None).await?;
    staged_key.commit(a.force)?;
    if let Some(s) = staged_csr {
        s.commit(a.force)?;
    }
    emit(&format!("{RESOURCE}/{} created\n", name_of(&created)));
    Ok(())
}

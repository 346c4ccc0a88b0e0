//! `certctl get trustbundle [--signer-name S] [--out FILE]`: the CA
//! certificates to trust for a signer (GetTrustBundle), PEM. Issued
//! certificates (`status.certificate`) hold the leaf and intermediates
//! only, as Kubernetes' signers give them; the root comes from here.
//!
//! It only reads; `--out` writes through a temp file and a rename.

use anyhow::{Result, bail};
use certsign_proto::v1 as pb;

use crate::cli::{self, Output};
use crate::config::Settings;
use crate::conn::{self, Conn};
use crate::files;
use crate::output::emit;

/// The bundle for `signer_name` (empty: the deployment's).
pub(super) async fn fetch_bundle(conn: &mut Conn, signer_name: &str) -> Result<Vec<u8>> {
    Ok(conn
        .client
        .get_trust_bundle(pb::GetTrustBundleRequest {
            signer_name: signer_name.to_string(),
        })
        .await
        .map_err(|s| conn::status_error(&s, &conn.url, None))?
        .into_inner()
        .trust_bundle)
}

/// Runs `get trustbundle`.
pub(super) async fn get_trust_bundle(settings: Settings, a: cli::GetArgs) -> Result<()> {
    if !a.names.is_empty() {
        bail!("get trustbundle takes no names: use --signer-name to pick a signer's bundle");
    }
    if !matches!(a.output, None | Some(Output::Pem)) {
        bail!("get trustbundle prints PEM only (-o pem)");
    }
    let mut conn = conn::connect(&settings).await?;
    let bundle = fetch_bundle(&mut conn, a.signer_name.as_deref().unwrap_or_default()).await?;
    match &a.out {
        Some(path) => files::write_atomic(path, &bundle, 0o644, true)?,
        None => emit(&String::from_utf8_lossy(&bundle)),
    }
    Ok(())
}

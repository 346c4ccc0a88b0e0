//! `certctl get crl [-o pem|der] [--out FILE]`: the current certificate
//! revocation list, as the signer signed it and the approver publishes it.
//!
//! PEM (`X509 CRL`, RFC 7468) by default. DER is binary, so it is never
//! written to a terminal; `--out` writes through a temp file and a rename,
//! so a reader (a web server, a relying party's cron job) never sees half
//! a CRL. This command only reads; it never changes a CRL.

use std::io::IsTerminal as _;

use anyhow::{Result, bail};
use certsign_proto::v1 as pb;

use crate::cli::{self, Output};
use crate::config::Settings;
use crate::conn;
use crate::files;
use crate::output::emit;
use crate::pkix;

/// RFC 7468's label of a CRL.
pub const CRL_PEM_LABEL: &str = "X509 CRL";

/// The output `-o` selects, checked before connecting.
fn format_of(output: Option<Output>) -> Result<Output> {
    match output {
        None | Some(Output::Pem) => Ok(Output::Pem),
        Some(Output::Der) => Ok(Output::Der),
        Some(other) => {
            let name = format!("{other:?}").to_ascii_lowercase();
            bail!(
                "unable to match a printer suitable for the output format {name:?}, allowed formats are: der, pem"
            )
        }
    }
}

/// The bytes to write: the DER as received, or its PEM.
pub fn encode(der: &[u8], format: Output) -> Vec<u8> {
    match format {
        Output::Der => der.to_vec(),
        _ => pkix::pem_encode(CRL_PEM_LABEL, der).into_bytes(),
    }
}

/// Runs `get crl`.
pub(super) async fn get_crl(settings: Settings, a: cli::GetArgs) -> Result<()> {
    let format = format_of(a.output)?;
    if !a.names.is_empty() {
        bail!("get crl takes no names: there is one current CRL");
    }
    if format == Output::Der && a.out.is_none() && std::io::stdout().is_terminal() {
        bail!(
            "refusing to write a DER CRL to a terminal: pass --out FILE, redirect stdout, or use -o pem"
        );
    }
    let mut conn = conn::connect(&settings).await?;
    let crl = conn
        .client
        .get_certificate_revocation_list(pb::GetCertificateRevocationListRequest {})
        .await
        .map_err(|s| conn::status_error(&s, &conn.url, None))?
        .into_inner();
    if crl.crl.is_empty() {
        bail!("the approver returned no CRL");
    }
    let bytes = encode(&crl.crl, format);
    match &a.out {
        Some(path) => files::write_atomic(path, &bytes, 0o644, true)?,
        None if format == Output::Der => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&bytes).and_then(|_| out.flush());
        }
        None => emit(&String::from_utf8_lossy(&bytes)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(format_of(None).unwrap(), Output::Pem);
        assert_eq!(format_of(Some(Output::Der)).unwrap(), Output::Der);
        assert_eq!(
            format_of(Some(Output::Json)).unwrap_err().to_string(),
            "unable to match a printer suitable for the output format \"json\", allowed formats are: der, pem"
        );
        let der = [0x30, 0x03, 0x02, 0x01, 0x01];
        assert_eq!(encode(&der, Output::Der), der);
        let pem = String::from_utf8(encode(&der, Output::Pem)).unwrap();
        assert_eq!(
            pem,
            "-----BEGIN X509 CRL-----\nMAMCAQE=\n-----END X509 CRL-----\n"
        );
    }
}

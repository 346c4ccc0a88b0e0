//! The approver's TLS wiring from its configuration: client certificates
//! are optional at the TLS layer (a bootstrap-token caller sends none) but,
//! when sent, verified against `client_ca`; towards the signer it presents
//! `signer.cert`, read again when the files change. The mechanisms live in
//! [`certsign_runtime::tls`] and [`certsign_runtime::accept`].
//!
//! This module must never let a client certificate through that does not
//! chain to the configured client CA: only *no* certificate is, and then
//! every RPC but a token create is UNAUTHENTICATED.

use std::path::Path;
use std::sync::Arc;

use certsign_runtime::tls::{ClientCertificates, ClientIdentity};
pub use certsign_runtime::tls::{Identity, TlsError, load_certs};

/// The serving configuration: the certificate from `identity`, client
/// certificates verified against `client_ca` when presented, ALPN h2.
pub fn server_config(
    identity: Arc<Identity>,
    client_ca: &Path,
) -> Result<rustls::ServerConfig, TlsError> {
    certsign_runtime::tls::server_config(identity, client_ca, ClientCertificates::Optional)
}

/// The TLS connector towards the signer: its CA, the approver's client
/// identity (followed through rotations), ALPN h2.
pub fn signer_connector(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<tokio_rustls::TlsConnector, TlsError> {
    certsign_runtime::tls::connector(ca, ClientIdentity::load(cert, key, "the signer")?)
}

/// Every TLS file `config` names loads: the serving identity (its key the
/// certificate's), the client CA, the trust bundle and the identity towards
/// the signer (`serve --check-config`).
pub fn check_files(config: &crate::config::Config) -> Result<(), TlsError> {
    let identity = Arc::new(Identity::load(&config.tls_cert, &config.tls_key)?);
    server_config(identity, &config.client_ca)?;
    load_certs(&config.trust_bundle)?;
    load_certs(&config.signer.ca)?;
    Identity::load(&config.signer.cert, &config.signer.key)?;
    Ok(())
}

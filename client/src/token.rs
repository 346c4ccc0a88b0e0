//! Admin keys held in a PKCS#11 token: `--key` / `key` given as an RFC 7512
//! `pkcs11:` URI (parsed by `certsign-pkcs11`, the signer's own parser),
//! the token key opened once per process, and TLS client authentication
//! with it (rustls with a signing key that calls the token).
//!
//! TLS with a token key needs an ECDSA key (P-256 or P-384): TLS 1.3 signs
//! with RSA only in PSS, which the token code does not do; an RSA token key
//! still signs statements. This module never reads or shows a PIN itself
//! (`pin-source` is read by `certsign-pkcs11`) and never hands out the key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Result, anyhow};
use certsign_pkcs11::{Pkcs11Uri, Scheme, TokenSigner};
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

/// Whether a `--key` value is a PKCS#11 URI rather than a file.
pub fn is_uri(key: &Path) -> bool {
    key.to_str().is_some_and(Pkcs11Uri::is_uri)
}

/// `uri` with `module-path=module` added when it names no module (the
/// config's `pkcs11_module`).
pub fn with_module(uri: &Path, module: &Path) -> PathBuf {
    let Some(text) = uri.to_str() else {
        return uri.to_path_buf();
    };
    if !Pkcs11Uri::is_uri(text) || text.contains("module-path=") {
        return uri.to_path_buf();
    }
    let encoded = percent_encoding::utf8_percent_encode(
        &module.to_string_lossy(),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string()
    // Path separators and dots stay readable; they need no escaping.
    .replace("%2F", "/")
    .replace("%2E", ".")
    .replace("%2D", "-")
    .replace("%5F", "_");
    let sep = if text.contains('?') { '&' } else { '?' };
    PathBuf::from(format!("{text}{sep}module-path={encoded}"))
}

/// Token keys opened by this process, by URI and certificate key: a module
/// is loaded and logged into once, and never finalized under another user.
type Opened = Mutex<HashMap<(String, Vec<u8>), Arc<TokenSigner>>>;

fn opened() -> &'static Opened {
    static OPENED: OnceLock<Opened> = OnceLock::new();
    OPENED.get_or_init(Default::default)
}

/// Opens the token key `uri` names for the certificate whose
/// SubjectPublicKeyInfo is `spki_der`; errors are one line.
pub fn open(uri: &Path, spki_der: &[u8]) -> Result<Arc<TokenSigner>> {
    let text = uri
        .to_str()
        .ok_or_else(|| anyhow!("invalid --key: the PKCS#11 URI is not UTF-8"))?;
    let parsed = Pkcs11Uri::parse(text).map_err(|e| anyhow!("invalid --key PKCS#11 URI: {e}"))?;
    let mut cache = opened()
        .lock()
        .map_err(|_| anyhow!("token key cache poisoned"))?;
    let id = (text.to_string(), spki_der.to_vec());
    if let Some(k) = cache.get(&id) {
        return Ok(k.clone());
    }
    let key = Arc::new(TokenSigner::open(&parsed, spki_der).map_err(|e| anyhow!("{e}"))?);
    cache.insert(id, key.clone());
    Ok(key)
}

/// The token key as rustls' client signing key.
#[derive(Debug)]
struct TlsKey(Arc<TokenSigner>);

/// One TLS signature with the token key.
#[derive(Debug)]
struct TlsSigner(Arc<TokenSigner>, SignatureScheme);

impl TlsKey {
    fn tls_scheme(&self) -> Option<SignatureScheme> {
        match self.0.scheme() {
            Scheme::EcdsaP256 => Some(SignatureScheme::ECDSA_NISTP256_SHA256),
            Scheme::EcdsaP384 => Some(SignatureScheme::ECDSA_NISTP384_SHA384),
            Scheme::RsaSha256 => None,
        }
    }
}

impl SigningKey for TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let want = self.tls_scheme()?;
        offered
            .contains(&want)
            .then(|| Box::new(TlsSigner(self.0.clone(), want)) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        match self.0.scheme() {
            Scheme::EcdsaP256 | Scheme::EcdsaP384 => rustls::SignatureAlgorithm::ECDSA,
            Scheme::RsaSha256 => rustls::SignatureAlgorithm::RSA,
        }
    }
}

impl Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, rustls::Error> {
        self.0
            .sign(message)
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        self.1
    }
}

/// Always the one certificate and its token key.
#[derive(Debug)]
struct Resolver(Arc<CertifiedKey>);

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Connects to `url` (`https://host:port`) over TLS (ring, HTTP/2) with the
/// certificates of `cert_pem` and their token key, trusting `ca_pem`. The
/// outer error is a setup error, the inner one the connection's.
pub async fn connect(
    url: &str,
    host: &str,
    ca_pem: &[u8],
    cert_pem: &[u8],
    key: Arc<TokenSigner>,
) -> Result<std::result::Result<Channel, tonic::transport::Error>> {
    if key.scheme() == Scheme::RsaSha256 {
        anyhow::bail!(
            "TLS client authentication with a PKCS#11 key needs an ECDSA key (P-256 or P-384); this token key is RSA"
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        let c = c.map_err(|e| anyhow!("cannot read the CA bundle: {e}"))?;
        roots
            .add(c)
            .map_err(|e| anyhow!("cannot use the CA bundle: {e}"))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(|c| c.ok())
        .collect();
    let certified = Arc::new(CertifiedKey::new(chain, Arc::new(TlsKey(key))));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Resolver(certified)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|e| anyhow!("invalid server name {host:?}: {e}"))?;
    let authority = url.strip_prefix("https://").unwrap_or(url);
    // tonic dials through this connector, which does the TLS itself; the
    // URI only carries the authority.
    let connector = tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        let server_name = server_name.clone();
        async move {
            let host = uri.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Ok(Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| anyhow!("invalid server {url}: {e}"))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_with_connector(connector)
        .await)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn adds_the_configured_module_only_when_the_uri_names_none() {
        let m = Path::new("/usr/lib/softhsm/libsofthsm2.so");
        let uri = |s: &str| with_module(Path::new(s), m).to_str().unwrap().to_string();
        assert_eq!(
            uri("pkcs11:token=a;object=k?pin-source=env:P"),
            "pkcs11:token=a;object=k?pin-source=env:P&module-path=/usr/lib/softhsm/libsofthsm2.so"
        );
        assert_eq!(
            uri("pkcs11:token=a;object=k"),
            "pkcs11:token=a;object=k?module-path=/usr/lib/softhsm/libsofthsm2.so"
        );
        let given = "pkcs11:token=a;object=k?module-path=/x.so&pin-source=env:P";
        assert_eq!(uri(given), given);
        assert_eq!(uri("admin.key"), "admin.key");
        let spaced = with_module(
            Path::new("pkcs11:token=a;object=k?pin-source=env:P"),
            Path::new("/opt/my hsm/p11.so"),
        );
        let parsed = Pkcs11Uri::parse(spaced.to_str().unwrap()).unwrap();
        assert_eq!(parsed.module_path, Path::new("/opt/my hsm/p11.so"));
    }
}

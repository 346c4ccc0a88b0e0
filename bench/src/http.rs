//! A minimal HTTP/1.1 keep-alive client for `cfssl serve`: one request at
//! a time per connection (HTTP/1.1 has no multiplexing), bodies framed by
//! Content-Length or chunked encoding, over plain TCP or over mutual TLS.
//!
//! It must never count a response as a success without reading all of it
//! and finding cfssl's `"success":true`.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A byte stream: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Client side of mutual TLS to cfssl: trusts `ca_pem` for 127.0.0.1 and
/// presents a client certificate.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// A client trusting `ca_pem`, authenticating with `cert_pem` / `key_pem`.
    pub fn new(ca_pem: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(client_config(ca_pem, cert_pem, key_pem)?)),
        })
    }
}

/// A rustls client configuration for mutual TLS: trusts only `ca_pem`,
/// presents `cert_pem` / `key_pem`.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "no CA certificate in the CA PEM");
    let chain =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?)
}

/// One keep-alive connection.
pub struct Conn {
    stream: BufReader<Box<dyn Io>>,
    host: String,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("host", &self.host).finish()
    }
}

impl Conn {
    /// Connects to `addr` (host:port), over mutual TLS when `tls` is given
    /// (the handshake completes here, before any timed call).
    pub async fn connect(addr: &str, tls: Option<&Tls>) -> std::io::Result<Self> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let io: Box<dyn Io> = match tls {
            None => Box::new(s),
            Some(t) => {
                let name = ServerName::try_from("127.0.0.1")
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Box::new(t.connector.connect(name, s).await?)
            }
        };
        Ok(Conn {
            stream: BufReader::new(io),
            host: addr.to_string(),
        })
    }

    /// POSTs `body` (JSON) to `path`, returning (status, body).
    pub async fn post(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        let io = |e: std::io::Error| e.to_string();
        let w = self.stream.get_mut();
        w.write_all(&req).await.map_err(io)?;
        w.flush().await.map_err(io)?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await.map_err(io)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await.map_err(io)? == 0 {
                return Err("connection closed in headers".into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    length = v.parse().ok();
                } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await.map_err(io)?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| format!("bad chunk size {line:?}"))?;
                let mut chunk = vec![0u8; n + 2];
                self.stream.read_exact(&mut chunk).await.map_err(io)?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        } else {
            let n = length.ok_or("response without Content-Length")?;
            out.resize(n, 0);
            self.stream.read_exact(&mut out).await.map_err(io)?;
        }
        Ok((status, out))
    }
}

/// The `cfssl serve` sign call body for `csr_pem`.
pub fn cfssl_sign_body(csr_pem: &str) -> Vec<u8> {
    serde_json::json!({ "certificate_request": csr_pem })
        .to_string()
        .into_bytes()
}

/// Checks a cfssl API answer: HTTP 200 and `"success": true` with a
/// certificate.
pub fn cfssl_ok(status: u16, body: &[u8]) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("HTTP {status}: not JSON: {e}"))?;
    if status == 200
        && v["success"] == true
        && v["result"]["certificate"]
            .as_str()
            .is_some_and(|c| c.contains("BEGIN CERTIFICATE"))
    {
        Ok(())
    } else {
        Err(format!("HTTP {status}: {}", v["errors"]))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use certsign_tests::grpc::{MintSpec, mint_with, rogue_ca};
    use tokio::net::TcpListener;

    /// One HTTPS server requiring a client certificate from `ca`; answers
    /// every request on a connection with a cfssl-shaped success.
    async fn mtls_server(ca: &(String, String)) -> String {
        let server = mint_with(&MintSpec::new("server", &[]), &ca.0, &ca.1);
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.0.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server.cert_der.clone())],
                PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut r = BufReader::new(tls);
                    let mut line = String::new();
                    let mut length = 0usize;
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            let mut body = vec![0u8; length];
                            r.read_exact(&mut body).await.unwrap();
                            let out = br#"{"success":true,"result":{"certificate":"-----BEGIN CERTIFICATE-----\n"},"errors":[]}"#;
                            let head =
                                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", out.len());
                            let w = r.get_mut();
                            w.write_all(head.as_bytes()).await.unwrap();
                            w.write_all(out).await.unwrap();
                            w.flush().await.unwrap();
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn posts_over_mutual_tls_and_needs_a_trusted_client_certificate() {
        let ca = rogue_ca("bench test CA");
        let addr = mtls_server(&ca).await;
        let client = mint_with(&MintSpec::new("client", &[]), &ca.0, &ca.1);
        let tls = Tls::new(&ca.0, &client.cert_pem, &client.key_pem).unwrap();
        let mut conn = Conn::connect(&addr, Some(&tls)).await.unwrap();
        for _ in 0..2 {
            let (status, body) = conn.post("/api/v1/cfssl/sign", b"{}").await.unwrap();
            cfssl_ok(status, &body).unwrap();
        }
        // A client certificate from another CA gets no answer.
        let other = rogue_ca("other CA");
        let stranger = mint_with(&MintSpec::new("stranger", &[]), &other.0, &other.1);
        let tls = Tls::new(&ca.0, &stranger.cert_pem, &stranger.key_pem).unwrap();
        let refused = match Conn::connect(&addr, Some(&tls)).await {
            Err(_) => true,
            Ok(mut c) => c.post("/api/v1/cfssl/sign", b"{}").await.is_err(),
        };
        assert!(
            refused,
            "a client certificate from an unknown CA was served"
        );
        assert!(Tls::new("not a PEM", &client.cert_pem, &client.key_pem).is_err());
    }

    #[test]
    fn judges_cfssl_answers() {
        let good = br#"{"success":true,"result":{"certificate":"-----BEGIN CERTIFICATE-----\n"},"errors":[]}"#;
        assert!(cfssl_ok(200, good).is_ok());
        let bad = br#"{"success":false,"result":null,"errors":[{"code":1000,"message":"x"}]}"#;
        assert!(cfssl_ok(400, bad).unwrap_err().contains("1000"));
        assert!(cfssl_ok(200, b"nope").is_err());
        let body = cfssl_sign_body("PEM\n");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["certificate_request"], "PEM\n");
    }
}

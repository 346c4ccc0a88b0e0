//! The gRPC connection to the approver (mTLS or bootstrap token) and the one
//! place where gRPC statuses become readable one-line errors.
//!
//! TLS is tonic's `ClientTlsConfig` on ring; the server name is the URL's host.
//! This module never sends a client certificate and a token together: with a
//! token the caller is a bootstrapping machine, not the certificate's owner.

use std::error::Error as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use certsign_proto::v1::approver_client::ApproverClient;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::Settings;
use crate::output::KubectlLine;

/// Adds `authorization: Bearer <token>` when a bootstrap token is used.
#[derive(Debug, Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The approver client type.
pub type Client = ApproverClient<InterceptedService<Channel, Auth>>;

/// A live connection.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The generated client.
    pub client: Client,
    /// The URL, for messages.
    pub url: String,
}

/// Reads a file for a named purpose, with a one-line error naming it.
pub fn read_file(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        anyhow!(
            "cannot read {what} {}: {}",
            path.display(),
            crate::output::io_reason(&e)
        )
    })
}

/// Reads a PEM certificate file (at least one CERTIFICATE block).
pub fn read_certs(what: &str, path: &Path) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let pem = read_file(what, path)?;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(|c| c.ok())
        .map(|c| c.as_ref().to_vec())
        .collect();
    if certs.is_empty() {
        bail!(
            "cannot read {what} {}: no PEM CERTIFICATE block",
            path.display()
        );
    }
    Ok((pem, certs))
}

/// Reads a PEM private key file.
pub fn read_key(path: &Path) -> Result<Vec<u8>> {
    let pem = read_file("key", path)?;
    if PrivateKeyDer::from_pem_slice(&pem).is_err() {
        bail!(
            "cannot read key {}: no usable PEM private key",
            path.display()
        );
    }
    Ok(pem)
}

/// Connects to the approver.
pub async fn connect(settings: &Settings) -> Result<Conn> {
    let (ca_pem, _) = read_certs("CA", &settings.ca)?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(settings.server.host.clone());
    let mut identity_paths = None;
    let auth = match &settings.token {
        Some(token) => {
            let value: MetadataValue<Ascii> = format!("Bearer {token}")
                .parse()
                .map_err(|_| anyhow!("invalid --token: not ASCII"))?;
            Auth(Some(value))
        }
        None => {
            if let Some((cert, key)) = &settings.identity {
                let (cert_pem, _) = read_certs("certificate", cert)?;
                let key_pem = read_key(key)?;
                tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
                identity_paths = Some((cert.clone(), key.clone()));
            }
            Auth(None)
        }
    };
    let url = settings.server.url.clone();
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| anyhow!("invalid server {url}: {e}"))?
        .tls_config(tls)
        .map_err(|e| match &identity_paths {
            // rustls checks the client certificate and key here.
            Some((c, k)) => anyhow!(
                "cannot use certificate {} with key {}: {}",
                c.display(),
                k.display(),
                innermost(&e)
            ),
            None => anyhow!("cannot set up TLS for {url}: {}", innermost(&e)),
        })?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow!("cannot reach approver at {url}: {}", innermost(&e)))?;
    Ok(Conn {
        client: ApproverClient::with_interceptor(channel, auth),
        url,
    })
}

/// The most specific message of an error chain, with io errors worded as
/// `connection refused` rather than `Connection refused (os error 111)`.
pub fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current: &(dyn std::error::Error + 'static) = err;
    let mut last = one_line(&current.to_string());
    loop {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return crate::output::io_reason(io);
        }
        match current.source() {
            Some(next) => {
                current = next;
                let s = one_line(&current.to_string());
                if !s.is_empty() {
                    last = s;
                }
            }
            None => return last,
        }
    }
}

/// kubectl's line for the server's Invalid status
/// (`CertificateSigningRequest.certificates.k8s.io "x" is invalid: ...`):
/// `The CertificateSigningRequest "x" is invalid: ...`, every field error
/// kept.
pub fn invalid_object(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("CertificateSigningRequest.certificates.k8s.io ")?;
    rest.contains(" is invalid: ")
        .then(|| format!("The CertificateSigningRequest {rest}"))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Turns a gRPC status into the readable line certctl prints.
/// `name` is the request the call was about, if any.
pub fn status_error(status: &tonic::Status, url: &str, name: Option<&str>) -> anyhow::Error {
    use tonic::Code;
    let msg = one_line(status.message());
    match status.code() {
        // The approver sends Kubernetes' text; kubectl prints it after the
        // reason, as it is.
        Code::NotFound if !msg.is_empty() => {
            KubectlLine(format!("Error from server (NotFound): {msg}")).into()
        }
        Code::NotFound => KubectlLine(format!(
            "Error from server (NotFound): certificatesigningrequests.certificates.k8s.io {:?} not found",
            name.unwrap_or_default()
        ))
        .into(),
        Code::InvalidArgument if invalid_object(&msg).is_some() => {
            KubectlLine(invalid_object(&msg).unwrap_or_default()).into()
        }
        Code::Unavailable | Code::Unknown
            if status.source().is_some() || msg.contains("transport error") =>
        {
            let reason = status.source().map(innermost).unwrap_or(msg);
            anyhow!("cannot reach approver at {url}: {reason}")
        }
        Code::Unavailable => anyhow!("approver at {url} is unavailable: {msg}"),
        Code::DeadlineExceeded => anyhow!("timed out waiting for the approver at {url}"),
        Code::PermissionDenied => anyhow!("forbidden: {msg}"),
        Code::Unauthenticated => anyhow!("unauthorized: {msg}"),
        Code::ResourceExhausted => anyhow!("too many requests: {msg}"),
        Code::AlreadyExists
        | Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange => anyhow!("{msg}"),
        other => anyhow!("{msg} ({other:?})"),
    }
}

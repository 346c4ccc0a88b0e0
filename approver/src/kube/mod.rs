//! The Kubernetes API face (`kube_listen`): `certificates.k8s.io/v1`
//! CertificateSigningRequests over HTTPS for the real `kubectl` and
//! Kubernetes client libraries, unchanged. The same TLS identity, the same
//! authentication (client certificates, bootstrap tokens as bearer
//! tokens), the same authorization, limits and store as the gRPC face:
//! every handler calls the service functions the gRPC handlers call.
//!
//! Responsibilities: this file accepts connections (TLS handshake with a
//! deadline, HTTP/1.1, a bound on connections and on a slow client's
//! request head); [`router`] routes one request; [`discovery`] and
//! [`openapi`] describe the API; [`resource`] and [`watch`] serve the
//! resource; [`review`] answers `kubectl auth whoami` and `can-i`; [`table`] prints it; [`convert`] maps the object between
//! encodings; [`wire`] reads bodies and writes answers; [`errors`] maps
//! errors to `metav1.Status`.
//!
//! It must never accept a client certificate that does not chain to the
//! client CA (the rustls verifier of [`crate::tls`] decides that), and
//! never let an approval through this face count as signed evidence.

pub mod convert;
pub mod discovery;
pub mod errors;
pub mod openapi;
pub mod resource;
pub mod review;
pub mod router;
pub mod table;
pub mod watch;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::service::ApproverService;

/// How long a client may take for a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;

/// The face's TLS configuration: the approver's own (same identity, same
/// client CA), speaking HTTP/1.1.
pub fn tls_config(approver: &rustls::ServerConfig) -> rustls::ServerConfig {
    let mut cfg = approver.clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg
}

/// Serve the face on `listener` for as long as the process runs. The
/// handshakes are [`certsign_runtime::accept`]'s, as on the gRPC port (a
/// refused one is an info line with the peer and the reason).
pub async fn serve(listener: TcpListener, tls: rustls::ServerConfig, service: ApproverService) {
    let mut accepted = certsign_runtime::accept::incoming(listener, tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    while let Some(stream) = accepted.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok(tls) = stream else { continue };
        let service = service.clone();
        tokio::spawn(async move {
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Arc::new(c.as_ref().to_vec()));
            let handler = service_fn(move |req: Request<Incoming>| {
                let service = service.clone();
                let cert = cert.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(router::handle(service, cert, req).await)
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), handler);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "kube: connection ended with an error");
            }
            drop(slot);
        });
    }
}

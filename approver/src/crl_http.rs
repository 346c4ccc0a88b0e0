//! The published CRL over plain HTTP (`crl_listen`): `GET /crl` (or HEAD)
//! answers 200 with the DER and `Content-Type: application/pkix-crl`;
//! other paths 404, other methods 405, and 503 until a CRL is published.
//! No TLS: a CRL is public and signed by the CA, and relying parties fetch
//! it from the CRL distribution point URL in certificates.
//!
//! This module must never serve anything but the published CRL, and never
//! read a request body.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::crl::CrlPublisher;
use crate::inventory::unix_now;

/// The path the CRL is served at.
pub const CRL_PATH: &str = "/crl";

/// The media type of a DER CRL (RFC 2585).
pub const CRL_CONTENT_TYPE: &str = "application/pkix-crl";

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The answer to one request.
pub fn respond<B>(req: &Request<B>, crl: &CrlPublisher) -> Response<Full<Bytes>> {
    if req.uri().path() != CRL_PATH {
        return plain(StatusCode::NOT_FOUND, "not found; the CRL is at /crl");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(current) = crl.current() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no CRL has been published yet",
        );
    };
    let mut r = Response::new(Full::new(Bytes::from(current.der.clone())));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CRL_CONTENT_TYPE),
    );
    // Caches may keep it until the approver refreshes it, at the latest
    // its nextUpdate.
    let max_age = (current.next_update - unix_now()).clamp(0, 3600);
    if let Ok(v) = header::HeaderValue::from_str(&format!("max-age={max_age}")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    r
}

/// Connections served at once; more wait in the listen backlog (the
/// endpoint is public and unauthenticated).
const MAX_CONNECTIONS: usize = 1024;

/// Serve `crl` on `listener` for as long as the process runs.
pub async fn serve(listener: TcpListener, crl: CrlPublisher) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "CRL listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let crl = crl.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let r = respond(&req, &crl);
                async move { Ok::<_, Infallible>(r) }
            });
            // One request per connection: an idle keep-alive connection
            // would hold a slot.
            let conn = http1::Builder::new()
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "CRL connection ended with an error");
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::StoredCrl;

    fn get(method: Method, path: &str, crl: &CrlPublisher) -> Response<Full<Bytes>> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        respond(&req, crl)
    }

    #[test]
    fn serves_the_published_crl_at_crl_only() {
        let crl = CrlPublisher::fixed(Some(StoredCrl {
            der: vec![0x30, 0x00],
            number: "1".into(),
            this_update: unix_now(),
            next_update: unix_now() + 86400,
        }));
        let r = get(Method::GET, "/crl", &crl);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], CRL_CONTENT_TYPE);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "max-age=3600");
        assert_eq!(get(Method::HEAD, "/crl", &crl).status(), StatusCode::OK);
        assert_eq!(
            get(Method::GET, "/crl/x", &crl).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(get(Method::GET, "/", &crl).status(), StatusCode::NOT_FOUND);
        let post = get(Method::POST, "/crl", &crl);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
        let none = CrlPublisher::fixed(None);
        assert_eq!(
            get(Method::GET, "/crl", &none).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

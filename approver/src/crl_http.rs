//! The published CRL over plain HTTP (`crl_listen`): `GET /crl` (or HEAD)
//! answers 200 with the DER and `Content-Type: application/pkix-crl`;
//! other paths 404, other methods 405, and 503 until a CRL is published.
//! No TLS: a CRL is public and signed by the CA, and relying parties fetch
//! it from the CRL distribution point URL in certificates.
//!
//! This module must never serve anything but the published CRL, and never
//! read a request body.

use certsign_runtime::http::{Answer, document, plain, refusal};
use http::{Request, StatusCode, header};
use tokio::net::TcpListener;

use crate::crl::CrlPublisher;
use certsign_runtime::unix_now;

/// The path the CRL is served at.
pub const CRL_PATH: &str = "/crl";

/// The media type of a DER CRL (RFC 2585).
pub const CRL_CONTENT_TYPE: &str = "application/pkix-crl";

/// The answer to one request.
pub fn respond<B>(req: &Request<B>, crl: &CrlPublisher) -> Answer {
    if let Some(r) = refusal(req, CRL_PATH, "not found; the CRL is at /crl") {
        return r;
    }
    let Some(current) = crl.current() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no CRL has been published yet",
        );
    };
    let mut r = document(CRL_CONTENT_TYPE, current.der.clone());
    let h = r.headers_mut();
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
    certsign_runtime::http::serve(listener, MAX_CONNECTIONS, "CRL", move |req| {
        let r = respond(&req, &crl);
        async move { r }
    })
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::StoredCrl;
    use http::Method;

    fn get(method: Method, path: &str, crl: &CrlPublisher) -> Answer {
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

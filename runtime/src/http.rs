//! The small plain-HTTP endpoints of both daemons (Prometheus metrics, the
//! published CRL): one path, `GET` or `HEAD` only, one request per
//! connection, a deadline for the request head, a cap on connections
//! served at once (more wait in the listen backlog).
//!
//! Nothing here reads a request body, and an endpoint must never serve
//! anything but its one document.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where both daemons serve their Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The OpenMetrics text media type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A response body.
pub type Answer = Response<Full<Bytes>>;

/// A `text/plain` answer (a newline appended).
pub fn plain(status: StatusCode, text: &str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A 200 answer of `content_type`.
pub fn document(content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// The refusal for anything but `GET|HEAD path`, if this is one: 404 with
/// `not_found` ("not found; the CRL is at /crl"), or 405 with `Allow`.
pub fn refusal<B>(req: &Request<B>, path: &str, not_found: &str) -> Option<Answer> {
    if req.uri().path() != path {
        return Some(plain(StatusCode::NOT_FOUND, not_found));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Some(r);
    }
    None
}

/// The refusal for anything but `GET|HEAD /metrics`, if this is one.
pub fn metrics_refusal<B>(req: &Request<B>) -> Option<Answer> {
    refusal(req, METRICS_PATH, "not found; the metrics are at /metrics")
}

/// Serve `answer` on `listener` for as long as the process runs, at most
/// `max_connections` at once; `what` names the endpoint in log lines.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    what: &'static str,
    answer: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "{what} listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let r = answer(req);
                async move { Ok::<_, Infallible>(r.await) }
            });
            // One request per connection: an idle keep-alive connection
            // would hold a slot.
            let conn = http1::Builder::new()
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "{what} connection ended with an error");
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    #[test]
    fn only_get_and_head_of_metrics() {
        assert!(metrics_refusal(&req(Method::GET, "/metrics")).is_none());
        assert!(metrics_refusal(&req(Method::HEAD, "/metrics")).is_none());
        let r = metrics_refusal(&req(Method::GET, "/")).unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = metrics_refusal(&req(Method::POST, "/metrics")).unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
        let ok = document(OPENMETRICS, "# EOF\n");
        assert_eq!(ok.headers()[header::CONTENT_TYPE], OPENMETRICS);
    }
}

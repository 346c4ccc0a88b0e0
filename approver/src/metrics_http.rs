//! Prometheus metrics over plain HTTP (`metrics_listen`): `GET /metrics`
//! (or HEAD) answers 200 with the OpenMetrics text of [`Metrics`]; other
//! paths 404, other methods 405. No TLS and no authentication: bind it to
//! loopback or a network only the scraper reaches (the numbers are
//! operational, never secrets, request names or identities).
//!
//! This module must never serve anything but the metrics, and never read a
//! request body.

use std::convert::Infallible;
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

use crate::config::LiveConfig;
use crate::crl::CrlPublisher;
use crate::metrics::Metrics;
use crate::store::Store;

/// The path the metrics are served at.
pub const METRICS_PATH: &str = "/metrics";

/// The OpenMetrics text media type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The refusal for anything but `GET|HEAD /metrics`, if this is one.
pub fn refusal<B>(req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    if req.uri().path() != METRICS_PATH {
        return Some(plain(
            StatusCode::NOT_FOUND,
            "not found; the metrics are at /metrics",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Some(r);
    }
    None
}

/// A 200 answer carrying `text`.
pub fn exposition(text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

/// Serve `metrics` on `listener` for as long as the process runs; each
/// scrape first refreshes the CRL gauge and the store counts (those at
/// most every few seconds).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    store: Store,
    config: Arc<LiveConfig>,
    crl: CrlPublisher,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, store, config, crl) =
            (metrics.clone(), store.clone(), config.clone(), crl.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (metrics, store, config, crl) =
                    (metrics.clone(), store.clone(), config.clone(), crl.clone());
                async move {
                    if let Some(r) = refusal(&req) {
                        return Ok::<_, Infallible>(r);
                    }
                    metrics.refresh(&store, &config, &crl).await;
                    Ok(exposition(metrics.encode()))
                }
            });
            let conn = http1::Builder::new()
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
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
        assert!(refusal(&req(Method::GET, "/metrics")).is_none());
        assert!(refusal(&req(Method::HEAD, "/metrics")).is_none());
        let r = refusal(&req(Method::GET, "/")).unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = refusal(&req(Method::POST, "/metrics")).unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
        let ok = exposition("# EOF\n".into());
        assert_eq!(ok.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }
}

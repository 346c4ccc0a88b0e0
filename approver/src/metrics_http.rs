//! Prometheus metrics over plain HTTP (`metrics_listen`): `GET /metrics`
//! (or HEAD) answers 200 with the OpenMetrics text of [`Metrics`]; other
//! paths 404, other methods 405. No TLS and no authentication: bind it to
//! loopback or a network only the scraper reaches (the numbers are
//! operational, never secrets, request names or identities).
//!
//! This module must never serve anything but the metrics, and never read a
//! request body.

use std::sync::Arc;

use certsign_runtime::http;
use hyper::Request;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::config::LiveConfig;
use crate::crl::CrlPublisher;
use crate::metrics::Metrics;
use crate::store::Store;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

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
    http::serve(
        listener,
        MAX_CONNECTIONS,
        "metrics",
        move |req: Request<Incoming>| {
            let (metrics, store, config, crl) =
                (metrics.clone(), store.clone(), config.clone(), crl.clone());
            async move {
                if let Some(r) = http::metrics_refusal(&req) {
                    return r;
                }
                metrics.refresh(&store, &config, &crl).await;
                http::document(http::OPENMETRICS, metrics.encode())
            }
        },
    )
    .await;
}

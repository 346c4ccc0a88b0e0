//! The signer's gRPC health without TLS on `health_listen`, for
//! orchestrators' native gRPC probes (Kubernetes' `grpc:` probe cannot speak
//! TLS). It answers from the signer's own health reporter
//! (`certsign_signer::service::HEALTH`), so it tells what the mTLS port's
//! health service tells, and accepts connections only once the signer
//! serves.
//!
//! It must never serve anything but `grpc.health.v1.Health`.

use std::time::Duration;

use certsign_signer::service::HEALTH;
use tokio::net::TcpListener;

/// Bind `addr` now (so a taken port fails the start) and serve health on
/// it once the signer's reporter exists.
pub async fn start(addr: std::net::SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (health_listen): {e}"))?;
    tokio::spawn(async move {
        let reporter = loop {
            if let Some(r) = HEALTH.get() {
                break r.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        tracing::info!(%addr, "serving gRPC health without TLS (health_listen)");
        certsign_runtime::health::serve_plaintext(listener, reporter).await;
    });
    Ok(())
}

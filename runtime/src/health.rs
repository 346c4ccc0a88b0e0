//! gRPC health without TLS (`health_listen`) for orchestrators' native gRPC
//! probes (Kubernetes' `grpc:` probe cannot speak TLS): the statuses a
//! daemon's own health reporter holds, so it tells what the TLS port's
//! health service tells.
//!
//! It must never serve anything but `grpc.health.v1.Health`.

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

/// Serve only `grpc.health.v1.Health` on `listener`, answering from
/// `reporter`, until the process ends.
pub async fn serve_plaintext(listener: TcpListener, reporter: HealthReporter) {
    let health = HealthServer::new(HealthService::from_health_reporter(reporter));
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await
    {
        tracing::error!(error = %e, "health_listen: the plaintext health server stopped");
    }
}

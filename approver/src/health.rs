//! gRPC health (`grpc.health.v1.Health`) that follows the database: a
//! replica whose store does not answer reports NOT_SERVING, so a load
//! balancer or orchestrator sends its clients to a replica that can serve
//! them, and SERVING again once the store answers.
//!
//! `health_listen` serves the same statuses without TLS, and nothing else,
//! for orchestrators' native gRPC probes ([`certsign_runtime::health`]).
//!
//! It must never report SERVING on a failed probe, and it only reads
//! (`SELECT 1`); it changes nothing in the store.

use std::time::Duration;

use certsign_proto::v1::approver_server::ApproverServer;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::service::ApproverService;
use crate::store::Store;

/// The health service name that is SERVING for as long as the process
/// serves, whatever the database does: what a liveness probe asks (a
/// database outage must not restart the approver).
pub const LIVENESS: &str = "liveness";

/// How often the database is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long one probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Probe the store every [`PROBE_INTERVAL`] and set both the overall
/// status (`""`, what `grpcurl ... Health/Check` with `{}` asks) and the
/// `certsign.v1.Approver` status from the answer. Runs until the process
/// ends.
pub async fn follow_store(store: Store, reporter: HealthReporter) {
    let mut serving = true;
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let ok = match store.ping(PROBE_TIMEOUT).await {
            Ok(()) => true,
            Err(e) => {
                if serving {
                    tracing::warn!(error = %e, "health: the database does not answer; NOT_SERVING");
                }
                false
            }
        };
        if ok != serving {
            if ok {
                tracing::info!("health: the database answers again; SERVING");
            }
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            if ok {
                reporter
                    .set_serving::<ApproverServer<ApproverService>>()
                    .await;
            } else {
                reporter
                    .set_not_serving::<ApproverServer<ApproverService>>()
                    .await;
            }
            serving = ok;
        }
    }
}

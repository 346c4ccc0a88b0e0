//! The certsign approver: the queue and the record.
//!
//! It stores CertificateSigningRequest objects with Kubernetes semantics,
//! authenticates callers (client certificate or bootstrap token), authorizes
//! admins per signer name, records every decision with its signed evidence,
//! auto-approves renewals and configured rules, forwards approved requests to
//! the signer with retries, garbage-collects old objects, and serves gRPC
//! health and reflection so grpcurl works out of the box.
//!
//! It must never take an identity from a request body, never hold the CA
//! key, and never lose an acknowledged request or decision.
//!
//! # Layout
//! - [`config`]: `approver.toml`, strict and validated.
//! - [`authn`]: who is calling.
//! - [`validation`]: Kubernetes' create rules and texts.
//! - [`names`]: Kubernetes' name syntax (DNS-1123, qualified names, label
//!   values) with apimachinery's messages.
//! - [`store`]: SQLite (rusqlite) or PostgreSQL (sqlx), the only
//!   persistence.
//! - [`expiry`]: a request's certificate expiry (the store's `expires`).
//! - [`decision`]: approve / deny / fail / issue transitions.
//! - [`decide`]: records an admin's decision (Approve, Deny).
//! - [`admission`]: what Create admits, and how it is stored.
//! - [`access`]: who may read and decide what.
//! - [`forwarder`]: approved requests to the signer.
//! - [`issued`]: what the inventory records of an issued certificate.
//! - [`inventory`]: the inventory as ListCertificates shows it.
//! - [`revocation`]: RevokeCertificate, delivery to every signer endpoint.
//! - [`crl`]: CRL refresh, checks and publication; [`crl_http`] serves it.
//! - [`health`]: gRPC health follows the database.
//! - [`metrics`]: Prometheus metrics; [`metrics_http`] serves them.
//! - [`own_certs`]: expiry of the certificates the approver runs on.
//! - [`cleaner`]: Kubernetes' retention.
//! - [`watch`]: change events fan-out.
//! - [`limits`]: rate and size limits.
//! - [`reload`]: SIGHUP configuration reload of the parts that may change,
//!   and of the TLS identity.
//! - [`drain`]: SIGTERM ends open watches with a status.
//! - [`rotate`]: the approver's own TLS identity renewed through the signer.
//! - [`service`]: the gRPC service's handlers.
//! - [`kube`]: the Kubernetes API face (`kube_listen`) over the same
//!   service functions.
//! - [`status`]: the only Error → Status mapping.
//! - [`tls`]: rustls server and signer-client configuration.

#![forbid(unsafe_code)]

pub mod access;
pub mod admission;
pub mod authn;
pub mod chain;
pub mod cleaner;
pub mod config;
pub mod crl;
pub mod crl_http;
pub mod decide;
pub mod decision;
pub mod drain;
pub mod expiry;
pub mod forwarder;
pub mod health;
pub mod inventory;
pub mod issued;
pub mod kube;
pub mod limits;
pub mod metrics;
pub mod metrics_http;
pub mod names;
pub mod own_certs;
pub mod paging;
pub mod reload;
pub mod revocation;
pub mod rotate;
pub mod selector;
pub mod service;
pub mod status;
pub mod store;
pub mod tls;
pub mod validation;
pub mod watch;

use std::future::Future;
use std::sync::Arc;

use certsign_evidence::ApprovalTrust;
use certsign_proto::v1::approver_server::ApproverServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::{Config, LiveConfig};
use crate::crl::CrlPublisher;
use crate::forwarder::Forwarder;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::revocation::Deliverer;
use crate::service::{ApproverService, Shared};
use crate::store::Store;
use crate::watch::Hub;

/// Why the approver could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Forwarder(#[from] forwarder::ForwarderError),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("cannot listen on {addr} (crl_listen): {message}")]
    CrlListen { addr: String, message: String },
    #[error("cannot listen on {addr} (kube_listen): {message}")]
    KubeListen { addr: String, message: String },
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot listen on {addr} (health_listen): {message}")]
    HealthListen { addr: String, message: String },
}

/// A started approver (store open, workers running), ready to serve.
#[derive(Debug)]
pub struct App {
    /// The configuration as started: what the listener and transport use.
    config: Arc<Config>,
    service: ApproverService,
    tls: rustls::ServerConfig,
    reloader: Reloader,
    /// For the health check's database probe.
    store: Store,
    /// Ends open watches at shutdown.
    drain: drain::Drain,
}

impl App {
    /// Open the store (running migrations), start the watch hub, the
    /// forwarder and the cleaner, and load the TLS material.
    pub async fn start(config: Config) -> Result<Self, ServeError> {
        let config = Arc::new(config);
        let identity = Arc::new(tls::Identity::load(&config.tls_cert, &config.tls_key)?);
        let tls = tls::server_config(identity.clone(), &config.client_ca)?;
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| ServeError::File {
                path: p.display().to_string(),
                message: e.to_string(),
            })
        };
        let client_ca_pem = read(&config.client_ca)?;
        let approval_trust =
            ApprovalTrust::from_pem(&client_ca_pem).map_err(|e| ServeError::File {
                path: config.client_ca.display().to_string(),
                message: e.to_string(),
            })?;
        let client_ca_der = tls::load_certs(&config.client_ca)?
            .into_iter()
            .map(|c| c.as_ref().to_vec())
            .collect();
        let trust_bundle_pem = read(&config.trust_bundle)?;
        tls::load_certs(&config.trust_bundle)?;

        let store = Store::open(&config.database_url).await?;
        let hub = Hub::start(store.clone()).await?;
        let metrics = Arc::new(Metrics::new(&store));
        let forwarder = Forwarder::start(
            store.clone(),
            hub.clone(),
            &config.signer,
            metrics.forwarder.clone(),
        )
        .await?;
        let limiter = Arc::new(Limiter::new(&config.limits));
        cleaner::spawn(store.clone(), config.retention.clone(), limiter.clone());
        let crl_wake = Arc::new(tokio::sync::Notify::new());
        let deliverer = Deliverer::start(store.clone(), &config.signer, crl_wake.clone())?;
        let trust_der = tls::load_certs(&config.trust_bundle)?
            .into_iter()
            .map(|c| c.as_ref().to_vec())
            .collect();
        let crl = CrlPublisher::start(
            store.clone(),
            deliverer.clients(),
            trust_der,
            config.crl_refresh,
            crl_wake,
        )
        .await;
        if let Some(addr) = config.crl_listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::CrlListen {
                    addr: addr.to_string(),
                    message: e.to_string(),
                })?;
            tracing::info!(%addr, "serving the CRL over HTTP at /crl");
            tokio::spawn(crl_http::serve(listener, crl.clone()));
        }
        let backfill = store.clone();
        tokio::spawn(async move {
            match backfill.backfill_inventory().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    certificates = n,
                    "inventory: recorded certificates issued before it existed"
                ),
                Err(e) => tracing::warn!(error = %e, "inventory: backfill failed"),
            }
        });

        let live = Arc::new(LiveConfig::new(Config::clone(&config)));
        tokio::spawn(own_certs::watch(
            own_certs::watched(&config),
            crl.clone(),
            metrics.clone(),
        ));
        if let Some(addr) = config.metrics_listen {
            // Metrics never keep the approver from serving: a port that
            // cannot be bound is an error in the log, not a failed start.
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    let bound = listener.local_addr().map_or(addr, |a| a);
                    tracing::info!(addr = %bound, "serving Prometheus metrics over HTTP at /metrics");
                    tokio::spawn(metrics_http::serve(
                        listener,
                        metrics.clone(),
                        store.clone(),
                        live.clone(),
                        crl.clone(),
                    ));
                }
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot listen on metrics_listen; serving without metrics")
                }
            }
        }
        let reloader = Reloader::new(live.clone(), limiter.clone()).with_identity(identity.clone());
        tokio::spawn(rotate::run(reloader.clone(), identity));
        let drain = drain::Drain::default();
        let service = ApproverService::new(Shared {
            config: live,
            store: store.clone(),
            hub,
            forwarder,
            deliverer,
            crl,
            limiter,
            approval_trust,
            client_ca_der,
            trust_bundle_pem,
            drain: drain.clone(),
            metrics,
        });
        if let Some(addr) = config.kube_listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::KubeListen {
                    addr: addr.to_string(),
                    message: e.to_string(),
                })?;
            tracing::info!(%addr, "serving the Kubernetes API (certificates.k8s.io/v1) over HTTPS");
            tokio::spawn(kube::serve(
                listener,
                kube::tls_config(&tls),
                service.clone(),
            ));
        }
        Ok(Self {
            config,
            service,
            tls,
            reloader,
            store,
            drain,
        })
    }

    /// The handle that reloads this approver's configuration (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Serve on `listener` until `shutdown` completes; then health says
    /// NOT_SERVING, no new calls are taken, open watches end with
    /// UNAVAILABLE, and whatever is still open after `shutdown_grace` (as
    /// configured then) is cut off by returning.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let incoming = certsign_runtime::accept::incoming(listener, self.tls);
        let max_message = self.config.transport_max_message();
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<ApproverServer<ApproverService>>()
            .await;
        health_reporter
            .set_service_status(health::LIVENESS, tonic_health::ServingStatus::Serving)
            .await;
        if let Some(addr) = self.config.health_listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::HealthListen {
                    addr: addr.to_string(),
                    message: e.to_string(),
                })?;
            tracing::info!(%addr, "serving gRPC health without TLS (health_listen)");
            tokio::spawn(certsign_runtime::health::serve_plaintext(
                listener,
                health_reporter.clone(),
            ));
        }
        let prober = tokio::spawn(health::follow_store(
            self.store.clone(),
            health_reporter.clone(),
        ));
        let stopping = Arc::new(tokio::sync::Notify::new());
        let (stop, drain, reloader) = (stopping.clone(), self.drain.clone(), self.reloader.clone());
        let shutdown = async move {
            shutdown.await;
            prober.abort();
            health_reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            health_reporter
                .set_not_serving::<ApproverServer<ApproverService>>()
                .await;
            let grace = reloader.current().shutdown_grace;
            tracing::info!(
                ?grace,
                "stopping: NOT_SERVING, no new calls, open watches ended"
            );
            drain.start();
            stop.notify_one();
        };
        let approver = ApproverServer::new(self.service)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(16 * 1024 * 1024);
        let mut builder = tonic::transport::Server::builder();
        let mut router = builder.add_service(health).add_service(approver);
        if self.config.reflection {
            // The descriptor set also defines certsign.v1.Signer, which the
            // approver does not serve: advertise only what it serves.
            let served = |reflection: &str| {
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(certsign_proto::v1::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .with_service_name("certsign.v1.Approver")
                    .with_service_name("grpc.health.v1.Health")
                    .with_service_name(reflection)
            };
            let v1 = served("grpc.reflection.v1.ServerReflection")
                .build_v1()
                .map_err(|e| ServeError::Reflection(e.to_string()))?;
            let v1alpha = served("grpc.reflection.v1alpha.ServerReflection")
                .build_v1alpha()
                .map_err(|e| ServeError::Reflection(e.to_string()))?;
            router = router.add_service(v1).add_service(v1alpha);
        }
        let served = router.serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown);
        let reloader = self.reloader;
        tokio::select! {
            r = served => r?,
            () = async {
                stopping.notified().await;
                tokio::time::sleep(reloader.current().shutdown_grace).await;
            } => tracing::warn!("shutdown_grace elapsed with calls still open; exiting"),
        }
        Ok(())
    }
}

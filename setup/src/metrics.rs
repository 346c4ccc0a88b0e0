//! The signer's Prometheus metrics (OpenMetrics text, `prometheus-client`),
//! served by the `certsign-signer` binary on `metrics_listen` (plain HTTP,
//! off unless set): certificate Sign outcomes by signer name, refusals by
//! rule, Sign latency, and seconds until the certificates the signer runs
//! on expire, with a warning in the log 30 days ahead (then once a day
//! until renewed; [`certsign_runtime::expiry`]).
//!
//! The signer library only reports each Sign to the observer installed
//! here (`certsign_signer::service::SIGN_OBSERVER`). Label values come from
//! the configuration (profile signer names, `other` for anything else) or
//! fixed lists: this module must never put a peer-chosen string into a
//! label, never serve anything but `/metrics`, and never read a request
//! body.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use certsign_proto::v1::SignRequest;
use certsign_proto::v1::sign_request::Request as Asked;
use certsign_runtime::expiry::{CHECK_EVERY, Warnings};
use certsign_runtime::http;
use certsign_signer::authority::{SignError, Signed};
use certsign_signer::config::Config;
use certsign_signer::service::SIGN_OBSERVER;
use hyper::Request;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The label value for a signer name no profile serves.
pub const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignLabels {
    signer_name: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    signer_name: String,
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: &'static str,
}

/// The signer's registry and families.
#[derive(Debug)]
pub struct SignerMetrics {
    registry: Registry,
    signs: Family<SignLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    sign_seconds: Histogram,
    certificate_expiry: Family<CertificateLabels, Gauge>,
    /// The configured profile signer names (the only label values besides
    /// [`OTHER`]).
    signer_names: Vec<String>,
}

impl SignerMetrics {
    pub fn new(config: &Config) -> Self {
        let mut registry = Registry::default();
        let signs = Family::<SignLabels, Counter>::default();
        registry.register(
            "certsign_signer_signs",
            "Certificate Sign calls answered, by profile signer name and outcome (issued, replayed, refused)",
            signs.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "certsign_signer_refusals",
            "Certificate Sign calls refused, by profile signer name and rule",
            refusals.clone(),
        );
        let sign_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 15));
        registry.register(
            "certsign_signer_sign_duration_seconds",
            "Seconds per certificate Sign call (checks, signing, journal fsync)",
            sign_seconds.clone(),
        );
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certsign_signer_certificate_expiry_seconds",
            "Seconds until a certificate the signer runs on expires (negative: expired)",
            certificate_expiry.clone(),
        );
        let signer_names: Vec<String> = config
            .profiles
            .iter()
            .map(|p| p.signer_name.clone())
            .collect();
        // Every series of the fixed label sets exists from the start (at
        // 0), so rates and alerts see the first event.
        for signer_name in signer_names.iter().map(String::as_str).chain([OTHER]) {
            for outcome in ["issued", "replayed", "refused"] {
                drop(signs.get_or_create(&SignLabels {
                    signer_name: signer_name.to_string(),
                    outcome,
                }));
            }
            for rule in RULES {
                drop(refusals.get_or_create(&RefusalLabels {
                    signer_name: signer_name.to_string(),
                    rule,
                }));
            }
        }
        Self {
            registry,
            signs,
            refusals,
            sign_seconds,
            certificate_expiry,
            signer_names,
        }
    }

    /// The label for a requested signer name: a profile's, else [`OTHER`].
    fn signer_label(&self, req: &SignRequest) -> String {
        let asked = match &req.request {
            Some(Asked::CertificateSigningRequest(c)) => {
                c.spec.as_ref().map_or("", |s| s.signer_name.as_str())
            }
            _ => "",
        };
        self.signer_names
            .iter()
            .find(|n| n.as_str() == asked)
            .map_or_else(|| OTHER.to_string(), Clone::clone)
    }

    /// Count one answered Sign.
    pub fn observe(&self, req: &SignRequest, result: Result<&Signed, &SignError>, took: Duration) {
        let signer_name = self.signer_label(req);
        self.sign_seconds.observe(took.as_secs_f64());
        let outcome = match result {
            Ok(s) if s.replayed => "replayed",
            Ok(_) => "issued",
            Err(e) => {
                self.refusals
                    .get_or_create(&RefusalLabels {
                        signer_name: signer_name.clone(),
                        rule: rule_of(e),
                    })
                    .inc();
                "refused"
            }
        };
        self.signs
            .get_or_create(&SignLabels {
                signer_name,
                outcome,
            })
            .inc();
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics: encoding failed");
        }
        out
    }
}

/// The refusal rules [`rule_of`] names.
pub const RULES: [&str; 11] = [
    "invalid_request",
    "csr",
    "profile",
    "evidence",
    "issue",
    "journal",
    "signer_rule",
    "uid_reused",
    "busy",
    "unavailable",
    "other",
];

/// A fixed name for each kind of refusal.
pub fn rule_of(e: &SignError) -> &'static str {
    match e {
        SignError::Invalid(_) => "invalid_request",
        SignError::Csr(_) => "csr",
        SignError::Profile(_) => "profile",
        SignError::Evidence(_) => "evidence",
        SignError::Issue(_) => "issue",
        SignError::Journal(_) => "journal",
        SignError::Refused(_) => "signer_rule",
        SignError::AlreadyExists(_) => "uid_reused",
        SignError::Busy(_) => "busy",
        SignError::Unavailable(_) => "unavailable",
        _ => "other",
    }
}

/// Set up metrics for `config`: install the Sign observer, start the
/// certificate expiry checks (always: the warnings go to the log even
/// without a metrics listener) and, when `metrics_listen` is set, the
/// HTTP listener. A listener that cannot be bound is logged, not fatal:
/// metrics never keep the CA from serving.
pub async fn start(config: &Config) {
    let metrics = Arc::new(SignerMetrics::new(config));
    let observer = metrics.clone();
    let _ = SIGN_OBSERVER.set(Box::new(move |req, result, took| {
        observer.observe(req, result, took);
    }));
    tokio::spawn(watch_expiry(watched(config), metrics.clone()));
    let Some(addr) = config.metrics_listen else {
        return;
    };
    match TcpListener::bind(addr).await {
        Ok(listener) => {
            let bound = listener.local_addr().map_or(addr, |a| a);
            tracing::info!(addr = %bound, "serving Prometheus metrics over HTTP at /metrics");
            tokio::spawn(serve(listener, metrics));
        }
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen on metrics_listen; serving without metrics")
        }
    }
}

/// The answer to one request.
pub fn respond<B>(req: &Request<B>, metrics: &SignerMetrics) -> http::Answer {
    if let Some(r) = http::metrics_refusal(req) {
        return r;
    }
    http::document(http::OPENMETRICS, metrics.encode())
}

async fn serve(listener: TcpListener, metrics: Arc<SignerMetrics>) {
    http::serve(listener, 64, "metrics", move |req| {
        let r = respond(&req, &metrics);
        async move { r }
    })
    .await;
}

/// The certificate files the signer runs on, each under a fixed label,
/// each file once.
pub fn watched(config: &Config) -> Vec<(&'static str, PathBuf)> {
    let mut out: Vec<(&'static str, PathBuf)> = Vec::new();
    for (label, path) in [
        ("ca", &config.ca_cert),
        ("tls", &config.tls_cert),
        ("client_ca", &config.client_ca),
        ("approval_ca", &config.approval_ca),
    ] {
        if !out.iter().any(|(_, p)| p == path) {
            out.push((label, path.clone()));
        }
    }
    out
}

/// Check now and then every [`CHECK_EVERY`], for as long as the process
/// runs: set the gauges and warn about what expires within
/// [`WARN_BEFORE`](certsign_runtime::expiry::WARN_BEFORE).
async fn watch_expiry(files: Vec<(&'static str, PathBuf)>, metrics: Arc<SignerMetrics>) {
    let mut warnings = Warnings::default();
    loop {
        let now = certsign_runtime::unix_now();
        for (label, path) in &files {
            if let Some(left) = warnings.check(label, path, now, "the signer") {
                metrics
                    .certificate_expiry
                    .get_or_create(&CertificateLabels { certificate: label })
                    .set(left);
            }
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ::http::{Method, StatusCode, header};
    use std::path::Path;

    #[test]
    fn only_get_and_head_of_metrics() {
        let config = Config::parse(
            "listen = \"127.0.0.1:0\"\nca_cert = \"c\"\nca_key = \"k\"\ntls_cert = \"t\"\ntls_key = \"k\"\nclient_ca = \"c\"\nallowed_clients = [\"a\"]\napproval_ca = \"c\"\njournal = \"j\"\n",
            Path::new("s.toml"),
        )
        .unwrap();
        let m = SignerMetrics::new(&config);
        let get = |method: Method, path: &str| {
            respond(
                &Request::builder()
                    .method(method)
                    .uri(path)
                    .body(())
                    .unwrap(),
                &m,
            )
        };
        let ok = get(Method::GET, "/metrics");
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[header::CONTENT_TYPE], http::OPENMETRICS);
        assert_eq!(get(Method::GET, "/").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            get(Method::POST, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert!(m.encode().ends_with("# EOF\n"));
    }
}

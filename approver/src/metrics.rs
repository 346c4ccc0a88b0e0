//! The approver's Prometheus metrics (OpenMetrics text, `prometheus-client`):
//! one registry per [`crate::App`], the families the service, the
//! forwarder and the store update, and the gauges read from the store when
//! scraped ([`Metrics::refresh`]). `metrics_http` serves them.
//!
//! Every label value comes from a fixed list or from the configuration
//! (signer names as configured, `other` for anything else): this module
//! must never put a peer-chosen string into a label, or a caller could grow
//! the registry without bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::authn::AuthnError;
use crate::config::LiveConfig;
use crate::crl::CrlPublisher;
use crate::status::ServiceError;
use crate::store::Store;
use certsign_runtime::unix_now;

/// The label value for a signer name no configured entry serves.
pub const OTHER: &str = "other";

/// Request states, as the store names them.
pub const STATES: [&str; 5] = ["pending", "approved", "issued", "denied", "failed"];

/// The outcomes of a bootstrap token login.
const TOKEN_OUTCOMES: [&str; 6] = [
    "ok",
    "expired",
    "invalid",
    "malformed",
    "not_allowed",
    "other",
];

/// The reasons a call is refused ([`rejection_reason`]).
const REJECTION_REASONS: [&str; 12] = [
    "unauthenticated",
    "invalid",
    "store",
    "conflict",
    "limit",
    "forbidden",
    "precondition",
    "evidence",
    "not_found",
    "unavailable",
    "signer",
    "other",
];

/// Store counts are read at most this often, however often it is scraped
/// (a count scans the table).
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// How long counting may take before a scrape goes on without it.
const COUNT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
    pub signer_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignerLabels {
    pub signer_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: &'static str,
    /// `admin` (a recorded Approve/Deny) or `auto` (a renewal or rule).
    pub by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectedLabels {
    pub rpc: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub certificate: &'static str,
}

/// What the forwarder updates.
#[derive(Clone, Debug)]
pub struct ForwarderMetrics {
    /// Sign calls running now.
    pub in_flight: Gauge,
    /// Finished forwarding attempts: `issued`, `refused` (the signer's
    /// terminal answer) or `retry` (no signer answered; tried again later).
    pub attempts: Family<OutcomeLabels, Counter>,
    /// Seconds per Sign call (every endpoint it tried).
    pub sign_seconds: Histogram,
}

impl ForwarderMetrics {
    pub fn attempt(&self, outcome: &'static str) {
        self.attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

/// The registry and every family in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<StateLabels, Gauge>,
    pending: Family<SignerLabels, Gauge>,
    pub forwarder: ForwarderMetrics,
    rejected: Family<RejectedLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    token_logins: Family<OutcomeLabels, Counter>,
    /// Seconds until each certificate the approver runs on expires.
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    /// Seconds until the published CRL's nextUpdate.
    pub crl_expiry: Gauge,
    /// When the store counts were last read, and the label sets then.
    refreshed: tokio::sync::Mutex<(Option<Instant>, Vec<StateLabels>)>,
}

impl Metrics {
    /// A registry with every family, the store's write histogram included.
    pub fn new(store: &Store) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<StateLabels, Gauge>::default();
        registry.register(
            "certsign_approver_requests",
            "Certificate signing requests stored, by state and configured signer name",
            requests.clone(),
        );
        let pending = Family::<SignerLabels, Gauge>::default();
        registry.register(
            "certsign_approver_pending_requests",
            "Requests waiting for a decision (the queue), by configured signer name",
            pending.clone(),
        );
        let forwarder = ForwarderMetrics {
            in_flight: Gauge::default(),
            attempts: Family::default(),
            sign_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        };
        registry.register(
            "certsign_approver_forwarder_in_flight",
            "Sign calls to the signer running now",
            forwarder.in_flight.clone(),
        );
        registry.register(
            "certsign_approver_forwarder_attempts",
            "Forwarding attempts by outcome: issued, refused (by the signer, final) or retry (no signer answered)",
            forwarder.attempts.clone(),
        );
        registry.register(
            "certsign_approver_sign_duration_seconds",
            "Seconds per Sign call to the signer",
            forwarder.sign_seconds.clone(),
        );
        registry.register(
            "certsign_approver_store_write_duration_seconds",
            "Seconds from queueing a store write to its committed answer",
            store.write_latency(),
        );
        let rejected = Family::<RejectedLabels, Counter>::default();
        registry.register(
            "certsign_approver_rejected",
            "Create, Approve and Deny calls refused, by RPC and reason",
            rejected.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "certsign_approver_decisions",
            "Approvals and denials recorded, by decision and by whom (admin or auto)",
            decisions.clone(),
        );
        let token_logins = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "certsign_approver_token_logins",
            "Bootstrap token authentications by outcome",
            token_logins.clone(),
        );
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certsign_approver_certificate_expiry_seconds",
            "Seconds until a certificate the approver runs on expires (negative: expired)",
            certificate_expiry.clone(),
        );
        let crl_expiry = Gauge::default();
        registry.register(
            "certsign_approver_crl_expiry_seconds",
            "Seconds until the published CRL's nextUpdate (negative: stale)",
            crl_expiry.clone(),
        );
        // Every series of a fixed label set exists from the start (at 0),
        // so rates and alerts see the first event.
        for outcome in ["issued", "refused", "retry"] {
            drop(forwarder.attempts.get_or_create(&OutcomeLabels { outcome }));
        }
        for decision in ["approve", "deny"] {
            for by in ["admin", "auto"] {
                drop(decisions.get_or_create(&DecisionLabels { decision, by }));
            }
        }
        for outcome in TOKEN_OUTCOMES {
            drop(token_logins.get_or_create(&OutcomeLabels { outcome }));
        }
        for rpc in ["create", "approve", "deny"] {
            for reason in REJECTION_REASONS {
                drop(rejected.get_or_create(&RejectedLabels { rpc, reason }));
            }
        }
        Self {
            registry,
            requests,
            pending,
            forwarder,
            rejected,
            decisions,
            token_logins,
            certificate_expiry,
            crl_expiry,
            refreshed: tokio::sync::Mutex::new((None, Vec::new())),
        }
    }

    /// A decision recorded: `decision` is `approve` or `deny`, `by`
    /// `admin` or `auto`.
    pub fn decision(&self, decision: &'static str, by: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels { decision, by })
            .inc();
    }

    /// A Create, Approve or Deny call refused.
    pub fn rejected(&self, rpc: &'static str, e: &ServiceError) {
        let reason = rejection_reason(e);
        self.rejected
            .get_or_create(&RejectedLabels { rpc, reason })
            .inc();
    }

    /// A bootstrap token presented: `None` for a valid one.
    pub fn token_login(&self, e: Option<&AuthnError>) {
        let outcome = match e {
            None => "ok",
            Some(AuthnError::ExpiredToken(_)) => "expired",
            Some(AuthnError::InvalidToken) => "invalid",
            Some(AuthnError::MalformedToken) => "malformed",
            Some(AuthnError::TokenNotAllowed) => "not_allowed",
            Some(_) => "other",
        };
        self.token_logins
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Before a scrape: the CRL's seconds left, and the store's counts
    /// into the request gauges unless they were read less than
    /// `REFRESH_EVERY` ago. Stored signer names map to the configured
    /// entry that serves them, else [`OTHER`]; every state of every
    /// configured name is reported (0 when none).
    pub async fn refresh(&self, store: &Store, config: &LiveConfig, crl: &CrlPublisher) {
        if let Some(current) = crl.current() {
            self.crl_expiry.set(current.next_update - unix_now());
        }
        let mut last = self.refreshed.lock().await;
        if last.0.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
            return;
        }
        // A database that does not answer must not hold the scrape: the
        // gauges keep their last values (health reports the outage).
        let counts = match tokio::time::timeout(COUNT_TIMEOUT, store.count_by_state()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics: counting requests failed");
                return;
            }
            Err(_) => {
                tracing::warn!("metrics: counting requests took longer than {COUNT_TIMEOUT:?}");
                return;
            }
        };
        let cfg = config.snapshot();
        let mut names: Vec<String> = cfg.signer_names.iter().map(|s| s.name.clone()).collect();
        names.push(OTHER.to_string());
        let mut values: Vec<(StateLabels, i64)> = names
            .iter()
            .flat_map(|n| {
                STATES.iter().map(|state| {
                    let labels = StateLabels {
                        state,
                        signer_name: n.clone(),
                    };
                    (labels, 0)
                })
            })
            .collect();
        for (state, signer_name, n) in counts {
            let name = cfg
                .signer_name(&signer_name)
                .map_or(OTHER, |s| s.name.as_str());
            if let Some((_, v)) = values
                .iter_mut()
                .find(|(l, _)| l.state == state && l.signer_name == name)
            {
                *v += n;
            }
        }
        let labels: Vec<StateLabels> = values.iter().map(|(l, _)| l.clone()).collect();
        if labels != last.1 {
            // The configured names changed: drop the series of old ones.
            self.requests.clear();
            self.pending.clear();
        }
        for (l, v) in values {
            if l.state == "pending" {
                self.pending
                    .get_or_create(&SignerLabels {
                        signer_name: l.signer_name.clone(),
                    })
                    .set(v);
            }
            self.requests.get_or_create(&l).set(v);
        }
        *last = (Some(Instant::now()), labels);
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

/// A fixed name for each kind of refusal.
fn rejection_reason(e: &ServiceError) -> &'static str {
    match e {
        ServiceError::Unauthenticated(_) => "unauthenticated",
        ServiceError::Invalid(_) | ServiceError::BadRequest(_) => "invalid",
        ServiceError::Store(_) => "store",
        ServiceError::Decision(_) => "conflict",
        ServiceError::Limit(_) => "limit",
        ServiceError::Forbidden(_) => "forbidden",
        ServiceError::Precondition(_) => "precondition",
        ServiceError::Evidence { .. } => "evidence",
        ServiceError::NotFound(_) => "not_found",
        ServiceError::Unavailable(_) => "unavailable",
        ServiceError::Signer { .. } => "signer",
        ServiceError::WatchLagged | ServiceError::TooOldResourceVersion { .. } => "other",
    }
}

/// The shared handle.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reasons_and_outcomes_are_fixed_names() {
        assert!(REJECTION_REASONS.contains(&rejection_reason(&ServiceError::WatchLagged)));
        assert_eq!(
            rejection_reason(&ServiceError::BadRequest("x".into())),
            "invalid"
        );
        assert_eq!(
            rejection_reason(&ServiceError::Forbidden("peer text".into())),
            "forbidden"
        );
    }
}

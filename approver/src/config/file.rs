//! What `approver.toml` may contain: its keys, their types and defaults,
//! as serde reads them (`deny_unknown_fields` everywhere, so a misspelt key
//! is an error that names it). The public parts (approval modes, limits,
//! retention, auto-approval rules) are used as read; the rest is checked
//! and converted by the parent module.
//!
//! This module must never read a file or judge a value; it only describes
//! the file's shape.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How approval of a signer name is proven to the signer. Mirrors the
/// signer's profile `approval` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalMode {
    /// Admins sign `ApprovalStatement`s; the signer checks them itself.
    Signed,
    /// The signer trusts the approver's decision; auto-approval rules apply.
    Approver,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: String,
    pub(super) tls_cert: PathBuf,
    pub(super) tls_key: PathBuf,
    pub(super) client_ca: PathBuf,
    pub(super) trust_bundle: PathBuf,
    #[serde(default = "default_database_url")]
    pub(super) database_url: String,
    #[serde(default = "default_true")]
    pub(super) reflection: bool,
    pub(super) signer: RawSigner,
    #[serde(default)]
    pub(super) signer_names: Vec<RawSignerName>,
    #[serde(default)]
    pub(super) limits: Limits,
    #[serde(default)]
    pub(super) retention: Retention,
    #[serde(default)]
    pub(super) bootstrap_tokens: Vec<RawBootstrapToken>,
    #[serde(default)]
    pub(super) auto_approve: Vec<AutoApproveRule>,
    #[serde(default = "default_statement_max_age", with = "humantime_serde")]
    pub(super) statement_max_age: Duration,
    /// Where the current CRL is served over plain HTTP (`GET /crl`); off
    /// when absent.
    #[serde(default)]
    pub(super) crl_listen: Option<String>,
    /// How often a fresh CRL is asked for (default: at half the current
    /// CRL's validity).
    #[serde(default, with = "humantime_serde")]
    pub(super) crl_refresh: Option<Duration>,
    /// Plain-HTTP address of the Prometheus `/metrics` endpoint; off when
    /// absent.
    #[serde(default)]
    pub(super) metrics_listen: Option<String>,
    /// Address serving only gRPC health without TLS (native gRPC probes);
    /// off when absent.
    #[serde(default)]
    pub(super) health_listen: Option<String>,
    /// Where the Kubernetes API face is served over HTTPS; off when absent.
    #[serde(default)]
    pub(super) kube_listen: Option<String>,
    /// After SIGTERM, how long open calls may finish before the process exits.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub(super) shutdown_grace: Duration,
    /// Renew the approver's own TLS identity this long before it expires
    /// (default: the shorter of 30 days and a third of its lifetime).
    #[serde(default, with = "humantime_serde")]
    pub(super) tls_renew_before: Option<Duration>,
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}

fn default_statement_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_database_url() -> String {
    "sqlite://approver.db".to_string()
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigner {
    pub(super) endpoints: Vec<String>,
    pub(super) ca: PathBuf,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    #[serde(default = "default_rpc_timeout", with = "humantime_serde")]
    pub(super) timeout: Duration,
}

fn default_rpc_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignerName {
    pub(super) name: String,
    pub(super) approval: ApprovalMode,
    #[serde(default = "default_one")]
    pub(super) required_approvals: u32,
    #[serde(default)]
    pub(super) approver_groups: Vec<String>,
    #[serde(default)]
    pub(super) allow_renewal: bool,
}

fn default_one() -> u32 {
    1
}

/// Resource limits; every field has a safe default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted `spec.request` (PEM bytes).
    pub max_request_bytes: usize,
    /// Most requests without any condition one requestor may have at once.
    pub max_pending_per_requestor: u32,
    /// Sustained RPCs per second per authenticated identity.
    pub requests_per_second: u32,
    /// Burst allowance per identity (default: `requests_per_second`).
    pub burst: Option<u32>,
    /// Watches one identity may hold open at once, on both faces together.
    pub max_watches_per_identity: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 65536,
            max_pending_per_requestor: 100,
            requests_per_second: 50,
            burst: None,
            max_watches_per_identity: 100,
        }
    }
}

/// How long finished or stale requests are kept (Kubernetes' csrcleaner
/// defaults).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Issued requests: this long after approval (or once the certificate
    /// has expired, whichever is first).
    #[serde(with = "humantime_serde")]
    pub issued: Duration,
    #[serde(with = "humantime_serde")]
    pub denied: Duration,
    #[serde(with = "humantime_serde")]
    pub failed: Duration,
    /// Requests without any condition, counted from creation.
    #[serde(with = "humantime_serde")]
    pub pending: Duration,
    /// Approved requests that never got a certificate, counted from approval.
    #[serde(with = "humantime_serde")]
    pub approved_unissued: Duration,
    /// How often the cleaner runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        let hour = Duration::from_secs(3600);
        Self {
            issued: hour,
            denied: hour,
            failed: hour,
            pending: 24 * hour,
            approved_unissued: 24 * hour,
            interval: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBootstrapToken {
    pub(super) id: String,
    pub(super) secret_sha256: String,
    pub(super) expires: String,
    pub(super) signer_names: Vec<String>,
    pub(super) max_uses: u32,
}

/// An auto-approval rule (`[[auto_approve]]`). A new request is approved
/// automatically (reason `AutoApproved`) when every condition of one rule
/// holds. Rules apply only to signer names configured `approval =
/// "approver"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoApproveRule {
    /// Signer names (exact, or `domain/*`) the rule covers.
    pub signer_names: Vec<String>,
    /// The requestor must be in one of these groups (empty: any group).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The requestor's username must be one of these (empty: any user).
    #[serde(default)]
    pub usernames: Vec<String>,
    /// The CSR's subject CN must equal the requestor's username.
    #[serde(default)]
    pub cn_equals_username: bool,
    /// Every CSR subject O must be one of these (empty: no check).
    #[serde(default)]
    pub allowed_organizations: Vec<String>,
    /// Condition message for requests this rule approves.
    #[serde(default)]
    pub message: Option<String>,
}

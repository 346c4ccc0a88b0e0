//! `approver.toml`: the typed, validated configuration.
//!
//! Parsing is strict (`deny_unknown_fields`), every error names the key, and
//! relative paths resolve against the config file's directory. This module
//! must never read anything but the config file itself (certificate files are
//! loaded by `tls.rs`), and never accept a configuration that would make a
//! security decision ambiguous (an unknown approval mode, a bootstrap token
//! with a malformed id, an auto-approval rule for a signer name that requires
//! signed approvals). [`LiveConfig`] holds the configuration in force so a
//! reload (`reload.rs`) can swap it whole; [`Config::restart_only_changes`]
//! names the keys a reload cannot apply. The file's shape is `file`, the
//! syntax of names, tokens and database URLs `syntax`; this module checks
//! the values and builds the [`Config`].

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

mod file;
mod syntax;

use file::RawConfig;
pub use file::{ApprovalMode, AutoApproveRule, Limits, Retention};
use syntax::{is_signer_name_pattern, resolve_database_url};
pub use syntax::{is_token_id, is_token_secret, pattern_matches};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML did not match the schema (the message names the key).
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value parsed but is not acceptable.
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// One signer name this deployment serves (exact, or a `domain/*` pattern).
#[derive(Debug, Clone)]
pub struct SignerNameConfig {
    pub name: String,
    pub approval: ApprovalMode,
    pub required_approvals: u32,
    pub approver_groups: Vec<String>,
    pub allow_renewal: bool,
}

/// A configured bootstrap token (the secret only as its SHA-256).
#[derive(Clone)]
pub struct BootstrapToken {
    pub id: String,
    pub secret_sha256: [u8; 32],
    pub expires: SystemTime,
    pub signer_names: Vec<String>,
    pub max_uses: u32,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is not the secret, but there is no reason to print it.
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .field("expires", &self.expires)
            .field("signer_names", &self.signer_names)
            .field("max_uses", &self.max_uses)
            .finish_non_exhaustive()
    }
}

/// The connection to the signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerConnection {
    pub endpoints: Vec<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub timeout: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub client_ca: PathBuf,
    pub trust_bundle: PathBuf,
    pub database_url: String,
    pub reflection: bool,
    pub signer: SignerConnection,
    pub signer_names: Vec<SignerNameConfig>,
    pub limits: Limits,
    pub retention: Retention,
    pub bootstrap_tokens: Vec<BootstrapToken>,
    pub auto_approve: Vec<AutoApproveRule>,
    /// Freshness of approval and renewal statements (as the signer's).
    pub statement_max_age: Duration,
    /// Plain-HTTP address serving the current CRL at `/crl` (off: `None`).
    pub crl_listen: Option<std::net::SocketAddr>,
    /// Fixed CRL refresh interval; `None`: half the current CRL's validity.
    pub crl_refresh: Option<Duration>,
    /// After SIGTERM, how long open calls (watches) may run before the
    /// process exits anyway; reloadable.
    pub shutdown_grace: Duration,
    /// Renew the approver's own TLS identity this long before it expires
    /// (`None`: the shorter of 30 days and a third of its lifetime).
    pub tls_renew_before: Option<Duration>,
    /// HTTPS address of the Kubernetes API face (off: `None`).
    pub kube_listen: Option<std::net::SocketAddr>,
    /// Plain-HTTP address serving Prometheus metrics at `/metrics` (off:
    /// `None`).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Address serving only `grpc.health.v1.Health` without TLS, for
    /// orchestrators' gRPC probes (off: `None`).
    pub health_listen: Option<std::net::SocketAddr>,
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, path, &base)
    }

    /// Parse config text; `base` is the directory relative paths resolve
    /// against and `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let resolve = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        if raw.signer.endpoints.is_empty() {
            return Err(invalid(
                "signer.endpoints",
                "at least one endpoint is required".into(),
            ));
        }
        for (i, e) in raw.signer.endpoints.iter().enumerate() {
            if !e.starts_with("https://") {
                return Err(invalid(
                    &format!("signer.endpoints[{i}]"),
                    format!(
                        "{e:?} must be an https:// URL (the signer is only spoken to over mTLS)"
                    ),
                ));
            }
        }
        if raw.signer_names.is_empty() {
            return Err(invalid(
                "signer_names",
                "at least one [[signer_names]] entry is required".into(),
            ));
        }
        let mut signer_names = Vec::new();
        for (i, s) in raw.signer_names.into_iter().enumerate() {
            let key = format!("signer_names[{i}]");
            if !is_signer_name_pattern(&s.name) {
                return Err(invalid(
                    &format!("{key}.name"),
                    format!(
                        "{:?} must be of the form 'example.com/signer-name' or 'example.com/*'",
                        s.name
                    ),
                ));
            }
            if signer_names
                .iter()
                .any(|o: &SignerNameConfig| o.name == s.name)
            {
                return Err(invalid(
                    &format!("{key}.name"),
                    format!("{:?} is configured twice", s.name),
                ));
            }
            if s.required_approvals == 0 {
                return Err(invalid(
                    &format!("{key}.required_approvals"),
                    "must be at least 1".into(),
                ));
            }
            signer_names.push(SignerNameConfig {
                name: s.name,
                approval: s.approval,
                required_approvals: s.required_approvals,
                approver_groups: s.approver_groups,
                allow_renewal: s.allow_renewal,
            });
        }

        let limits = raw.limits;
        if limits.max_request_bytes == 0 {
            return Err(invalid(
                "limits.max_request_bytes",
                "must be positive".into(),
            ));
        }
        if limits.requests_per_second == 0 {
            return Err(invalid(
                "limits.requests_per_second",
                "must be positive".into(),
            ));
        }
        if limits.burst == Some(0) {
            return Err(invalid("limits.burst", "must be positive".into()));
        }
        if limits.max_watches_per_identity == 0 {
            return Err(invalid(
                "limits.max_watches_per_identity",
                "must be positive".into(),
            ));
        }
        if raw.retention.interval.is_zero() {
            return Err(invalid("retention.interval", "must be positive".into()));
        }

        let mut tokens: Vec<BootstrapToken> = Vec::new();
        for (i, t) in raw.bootstrap_tokens.into_iter().enumerate() {
            let key = format!("bootstrap_tokens[{i}]");
            if !is_token_id(&t.id) {
                return Err(invalid(
                    &format!("{key}.id"),
                    format!("{:?} must match [a-z0-9]{{6}}", t.id),
                ));
            }
            if tokens.iter().any(|o| o.id == t.id) {
                return Err(invalid(
                    &format!("{key}.id"),
                    format!("{:?} is configured twice", t.id),
                ));
            }
            let hash = hex::decode(&t.secret_sha256)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| {
                    invalid(
                        &format!("{key}.secret_sha256"),
                        "must be 64 hex digits (the SHA-256 of the secret)".into(),
                    )
                })?;
            let expires = humantime::parse_rfc3339(&t.expires).map_err(|e| {
                invalid(
                    &format!("{key}.expires"),
                    format!("{:?} is not an RFC 3339 time: {e}", t.expires),
                )
            })?;
            if t.signer_names.is_empty() {
                return Err(invalid(
                    &format!("{key}.signer_names"),
                    "at least one signer name is required".into(),
                ));
            }
            tokens.push(BootstrapToken {
                id: t.id,
                secret_sha256: hash,
                expires,
                signer_names: t.signer_names,
                max_uses: t.max_uses,
            });
        }

        for (i, rule) in raw.auto_approve.iter().enumerate() {
            let key = format!("auto_approve[{i}].signer_names");
            if rule.signer_names.is_empty() {
                return Err(invalid(&key, "at least one signer name is required".into()));
            }
            for name in &rule.signer_names {
                // A rule may only ever approve for signer names whose
                // signer trusts the approver; otherwise the signer would
                // refuse the request anyway, and a rule for a "signed"
                // name would silently weaken the operator's intent.
                let covered: Vec<&SignerNameConfig> = signer_names
                    .iter()
                    .filter(|s| pattern_matches(name, &s.name) || pattern_matches(&s.name, name))
                    .collect();
                if covered.is_empty() {
                    return Err(invalid(
                        &key,
                        format!("{name:?} is not a configured signer name"),
                    ));
                }
                if let Some(s) = covered
                    .iter()
                    .find(|s| s.approval != ApprovalMode::Approver)
                {
                    return Err(invalid(
                        &key,
                        format!(
                            "{name:?}: auto-approval rules apply only to signer names configured approval = \"approver\" ({:?} is \"signed\")",
                            s.name
                        ),
                    ));
                }
            }
        }

        let database_url = resolve_database_url(&raw.database_url, base)
            .map_err(|m| invalid("database_url", m))?;
        let crl_listen = raw
            .crl_listen
            .as_deref()
            .map(|a| {
                a.parse::<std::net::SocketAddr>().map_err(|e| {
                    invalid(
                        "crl_listen",
                        format!("{a:?} is not a socket address (e.g. \"127.0.0.1:8080\"): {e}"),
                    )
                })
            })
            .transpose()?;
        let kube_listen = raw
            .kube_listen
            .as_deref()
            .map(|a| {
                a.parse::<std::net::SocketAddr>().map_err(|e| {
                    invalid(
                        "kube_listen",
                        format!("{a:?} is not a socket address (e.g. \"127.0.0.1:6443\"): {e}"),
                    )
                })
            })
            .transpose()?;
        let socket = |key: &str, value: Option<&str>| {
            value
                .map(|a| {
                    a.parse::<std::net::SocketAddr>().map_err(|e| {
                        invalid(
                            key,
                            format!("{a:?} is not a socket address (e.g. \"127.0.0.1:9464\"): {e}"),
                        )
                    })
                })
                .transpose()
        };
        let metrics_listen = socket("metrics_listen", raw.metrics_listen.as_deref())?;
        let health_listen = socket("health_listen", raw.health_listen.as_deref())?;
        if raw.crl_refresh.is_some_and(|d| d < Duration::from_secs(1)) {
            return Err(invalid("crl_refresh", "must be at least 1s".into()));
        }

        Ok(Self {
            listen: raw.listen,
            tls_cert: resolve(&raw.tls_cert),
            tls_key: resolve(&raw.tls_key),
            client_ca: resolve(&raw.client_ca),
            trust_bundle: resolve(&raw.trust_bundle),
            database_url,
            reflection: raw.reflection,
            signer: SignerConnection {
                endpoints: raw.signer.endpoints,
                ca: resolve(&raw.signer.ca),
                cert: resolve(&raw.signer.cert),
                key: resolve(&raw.signer.key),
                timeout: raw.signer.timeout,
            },
            signer_names,
            limits,
            retention: raw.retention,
            bootstrap_tokens: tokens,
            auto_approve: raw.auto_approve,
            statement_max_age: raw.statement_max_age,
            crl_listen,
            crl_refresh: raw.crl_refresh,
            shutdown_grace: raw.shutdown_grace,
            tls_renew_before: raw.tls_renew_before,
            kube_listen,
            metrics_listen,
            health_listen,
        })
    }

    /// The configuration that governs `signer_name`: the exact entry, else a
    /// matching `domain/*` entry. `None` means this deployment does not serve
    /// it.
    pub fn signer_name(&self, signer_name: &str) -> Option<&SignerNameConfig> {
        self.signer_names
            .iter()
            .find(|s| s.name == signer_name)
            .or_else(|| {
                self.signer_names
                    .iter()
                    .find(|s| pattern_matches(&s.name, signer_name))
            })
    }

    /// Groups allowed to approve `signer_name`: as Kubernetes RBAC checks the
    /// exact signer name and then `domain/*`, the union of both entries.
    pub fn approver_groups(&self, signer_name: &str) -> Vec<&str> {
        self.signer_names
            .iter()
            .filter(|s| s.name == signer_name || pattern_matches(&s.name, signer_name))
            .flat_map(|s| s.approver_groups.iter().map(String::as_str))
            .collect()
    }

    /// Whether any group of `groups` may approve for some signer name (an
    /// admin, who may read every request).
    pub fn is_admin(&self, groups: &[String]) -> bool {
        self.signer_names
            .iter()
            .flat_map(|s| s.approver_groups.iter())
            .any(|g| groups.contains(g))
    }

    /// The keys of `new` that differ from `self` but only take effect on a
    /// restart (the listener, TLS material, the store, the signer
    /// connection, the cleaner's schedule, reflection): one name per key.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (self, new);
        [
            ("listen", a.listen != b.listen),
            ("tls_cert", a.tls_cert != b.tls_cert),
            ("tls_key", a.tls_key != b.tls_key),
            ("client_ca", a.client_ca != b.client_ca),
            ("trust_bundle", a.trust_bundle != b.trust_bundle),
            ("database_url", a.database_url != b.database_url),
            ("reflection", a.reflection != b.reflection),
            ("signer.endpoints", a.signer.endpoints != b.signer.endpoints),
            ("signer.ca", a.signer.ca != b.signer.ca),
            ("signer.cert", a.signer.cert != b.signer.cert),
            ("signer.key", a.signer.key != b.signer.key),
            ("signer.timeout", a.signer.timeout != b.signer.timeout),
            ("retention", a.retention != b.retention),
            ("crl_listen", a.crl_listen != b.crl_listen),
            ("crl_refresh", a.crl_refresh != b.crl_refresh),
            ("kube_listen", a.kube_listen != b.kube_listen),
            ("metrics_listen", a.metrics_listen != b.metrics_listen),
            ("health_listen", a.health_listen != b.health_listen),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }

    /// `self` (a freshly loaded file) with every restart-only key taken
    /// from `running`, so what a reload swaps in describes what the process
    /// really does: the reloadable parts are new, the rest stays as started.
    pub fn keeping_restart_only_from(self, running: &Config) -> Config {
        Config {
            listen: running.listen.clone(),
            tls_cert: running.tls_cert.clone(),
            tls_key: running.tls_key.clone(),
            client_ca: running.client_ca.clone(),
            trust_bundle: running.trust_bundle.clone(),
            database_url: running.database_url.clone(),
            reflection: running.reflection,
            signer: running.signer.clone(),
            retention: running.retention.clone(),
            crl_listen: running.crl_listen,
            crl_refresh: running.crl_refresh,
            kube_listen: running.kube_listen,
            metrics_listen: running.metrics_listen,
            health_listen: running.health_listen,
            // Reloadable: applied per request from the next call on.
            signer_names: self.signer_names,
            limits: self.limits,
            bootstrap_tokens: self.bootstrap_tokens,
            auto_approve: self.auto_approve,
            statement_max_age: self.statement_max_age,
            shutdown_grace: self.shutdown_grace,
            tls_renew_before: self.tls_renew_before,
        }
    }

    /// The gRPC transport's decoding cap for these limits: generous (at
    /// least tonic's 4 MiB default) so an oversized CSR meets the
    /// RESOURCE_EXHAUSTED check with its message; only absurd messages are
    /// cut off by tonic itself. Fixed when the server starts.
    pub fn transport_max_message(&self) -> usize {
        (self.limits.max_request_bytes.saturating_mul(4) + 64 * 1024).max(4 * 1024 * 1024)
    }
}

/// The configuration in force, swapped whole on reload. Every RPC takes one
/// [`LiveConfig::snapshot`] and uses only it, so a call never mixes two
/// configurations.
#[derive(Debug)]
pub struct LiveConfig {
    current: std::sync::RwLock<std::sync::Arc<Config>>,
}

impl LiveConfig {
    pub fn new(config: Config) -> Self {
        Self {
            current: std::sync::RwLock::new(std::sync::Arc::new(config)),
        }
    }

    /// The configuration in force now.
    pub fn snapshot(&self) -> std::sync::Arc<Config> {
        // A poisoned lock still holds a whole `Arc` (the only write is one
        // pointer assignment), so its value is safe to use.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Put `config` in force for every later snapshot.
    pub fn replace(&self, config: Config) -> std::sync::Arc<Config> {
        let config = std::sync::Arc::new(config);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config.clone();
        config
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BASE: &str = r#"
listen = "127.0.0.1:0"
tls_cert = "tls.crt"
tls_key = "tls.key"
client_ca = "../ca.crt"
trust_bundle = "../ca.crt"
[signer]
endpoints = ["https://127.0.0.1:7443"]
ca = "../ca.crt"
cert = "tls.crt"
key = "tls.key"
[[signer_names]]
name = "kubernetes.io/kube-apiserver-client"
approval = "signed"
approver_groups = ["system:masters"]
[[signer_names]]
name = "example.com/*"
approval = "approver"
approver_groups = ["example-admins"]
"#;

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!("{BASE}{extra}"),
            Path::new("/etc/a/approver.toml"),
            Path::new("/etc/a"),
        )
    }

    #[test]
    fn resolves_relative_paths_and_sqlite() {
        let c = parse("").unwrap();
        assert_eq!(c.client_ca, Path::new("/etc/a/../ca.crt"));
        assert_eq!(c.database_url, "sqlite:///etc/a/approver.db?mode=rwc");
        assert_eq!(c.limits.max_request_bytes, 65536);
        assert_eq!(c.retention.pending, Duration::from_secs(86400));
    }

    /// `top` (top-level keys) before the base file.
    fn parse_top(top: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!("{top}{BASE}"),
            Path::new("/etc/a/approver.toml"),
            Path::new("/etc/a"),
        )
    }

    #[test]
    fn crl_keys_are_optional_and_checked() {
        let c = parse("").unwrap();
        assert_eq!((c.crl_listen, c.crl_refresh), (None, None));
        let c = parse_top("crl_listen = \"127.0.0.1:8080\"\ncrl_refresh = \"6h\"\n").unwrap();
        assert_eq!(c.crl_listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.crl_refresh, Some(Duration::from_secs(6 * 3600)));
        let err = parse_top("crl_listen = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`crl_listen`") && err.contains("socket address"),
            "{err}"
        );
        let err = parse_top("crl_refresh = \"0s\"\n").unwrap_err().to_string();
        assert!(err.contains("`crl_refresh`"), "{err}");
        // Both take effect at start only; a reload keeps the running ones.
        let running = parse("").unwrap();
        let loaded = parse_top("crl_listen = \"127.0.0.1:8080\"\ncrl_refresh = \"6h\"\n").unwrap();
        assert_eq!(
            running.restart_only_changes(&loaded),
            vec!["crl_listen", "crl_refresh"]
        );
        let merged = loaded.keeping_restart_only_from(&running);
        assert_eq!((merged.crl_listen, merged.crl_refresh), (None, None));
    }

    #[test]
    fn metrics_listen_is_optional_checked_and_restart_only() {
        assert_eq!(parse("").unwrap().metrics_listen, None);
        let c = parse_top("metrics_listen = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        let err = parse_top("metrics_listen = \"localhost:9464\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`metrics_listen`") && err.contains("socket address"),
            "{err}"
        );
        let running = parse("").unwrap();
        assert_eq!(running.restart_only_changes(&c), vec!["metrics_listen"]);
        assert_eq!(c.keeping_restart_only_from(&running).metrics_listen, None);
        let c = parse_top("health_listen = \"0.0.0.0:8081\"\n").unwrap();
        assert_eq!(c.health_listen, Some("0.0.0.0:8081".parse().unwrap()));
        let err = parse_top("health_listen = \"8081\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`health_listen`"), "{err}");
        assert_eq!(running.restart_only_changes(&c), vec!["health_listen"]);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("bogus = 1\n").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = parse("[limits]\nmax_pending = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_pending"), "{err}");
        let err = parse("[limits]\nmax_watches_per_identity = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("limits.max_watches_per_identity") && err.contains("must be positive"),
            "{err}"
        );
    }

    #[test]
    fn wildcard_signer_names() {
        let c = parse("").unwrap();
        assert!(c.signer_name("example.com/foo").is_some());
        assert!(c.signer_name("other.com/foo").is_none());
        assert_eq!(c.approver_groups("example.com/x"), vec!["example-admins"]);
        assert!(c.is_admin(&["example-admins".to_string()]));
        assert!(!c.is_admin(&["x".to_string()]));
    }

    #[test]
    fn auto_approve_only_for_approver_mode() {
        let err =
            parse("[[auto_approve]]\nsigner_names = [\"kubernetes.io/kube-apiserver-client\"]\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("auto_approve[0].signer_names"), "{err}");
        parse("[[auto_approve]]\nsigner_names = [\"example.com/x\"]\ngroups = [\"g\"]\ncn_equals_username = true\n")
            .unwrap();
    }

    #[test]
    fn restart_only_changes_name_each_key() {
        let a = parse("").unwrap();
        assert!(a.restart_only_changes(&a.clone()).is_empty());
        let b = Config::parse(
            &BASE
                .replace("tls_cert = \"tls.crt\"", "tls_cert = \"new.crt\"")
                .replace("client_ca = \"../ca.crt\"", "client_ca = \"../new-ca.crt\"")
                .replace("cert = \"tls.crt\"\nkey", "cert = \"x.crt\"\nkey")
                .replace(
                    "[signer]\n",
                    "reflection = false\n[signer]\ntimeout = \"5s\"\n",
                )
                .replace(
                    "approver_groups = [\"example-admins\"]",
                    "approver_groups = [\"ops\"]",
                ),
            Path::new("/etc/a/approver.toml"),
            Path::new("/etc/a"),
        )
        .unwrap();
        assert_eq!(
            a.restart_only_changes(&b),
            vec![
                "tls_cert",
                "client_ca",
                "reflection",
                "signer.cert",
                "signer.timeout"
            ]
        );
        // Merged: the restart-only keys as running, the rest as loaded.
        let merged = b.keeping_restart_only_from(&a);
        assert!(a.restart_only_changes(&merged).is_empty());
        assert_eq!(merged.approver_groups("example.com/x"), vec!["ops"]);
    }

    #[test]
    fn live_config_swaps_whole() {
        let live = LiveConfig::new(parse("").unwrap());
        let before = live.snapshot();
        let hour = Config::parse(
            &format!("statement_max_age = \"1h\"\n{BASE}"),
            Path::new("/etc/a/approver.toml"),
            Path::new("/etc/a"),
        )
        .unwrap();
        live.replace(hour);
        assert_eq!(before.statement_max_age, Duration::from_secs(86400));
        assert_eq!(live.snapshot().statement_max_age, Duration::from_secs(3600));
    }

    #[test]
    fn bad_token_id_named() {
        let err = parse(
            "[[bootstrap_tokens]]\nid = \"ABC\"\nsecret_sha256 = \"00\"\nexpires = \"2030-01-01T00:00:00Z\"\nsigner_names = [\"example.com/x\"]\nmax_uses = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bootstrap_tokens[0].id"), "{err}");
    }
}

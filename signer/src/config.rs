//! `signer.toml`: parsed strictly (unknown keys refused), validated at load,
//! relative paths resolved against the config file's directory.
//!
//! Errors name the key and the rule. This module never reads key material;
//! it only says where things are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use certsign_keys::KeySource as CaKeySource;
use certsign_keys::Pkcs11Uri;
use serde::Deserialize;

use crate::profile::{ApprovalMode, Builtin, CustomRules, Profile, Rules, Usage};

/// A config problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct ConfigError {
    path: String,
    msg: String,
}

fn err(path: &Path, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    ca_cert: PathBuf,
    ca_key: String,
    #[serde(default = "default_sessions")]
    pkcs11_sessions: usize,
    tls_cert: PathBuf,
    tls_key: PathBuf,
    client_ca: PathBuf,
    allowed_clients: Vec<String>,
    approval_ca: PathBuf,
    journal: PathBuf,
    #[serde(default)]
    reflection: bool,
    #[serde(default = "one_day", with = "humantime_serde")]
    statement_max_age: Duration,
    #[serde(default = "one_day", with = "humantime_serde")]
    crl_validity: Duration,
    #[serde(default)]
    profiles: Vec<RawProfile>,
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    shutdown_grace: Duration,
    #[serde(default, with = "humantime_serde")]
    tls_renew_before: Option<Duration>,
    metrics_listen: Option<SocketAddr>,
    health_listen: Option<SocketAddr>,
}

fn default_sessions() -> usize {
    4
}
fn one_day() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn default_lifetime() -> Duration {
    Duration::from_secs(8760 * 3600)
}
fn default_horizon() -> String {
    "90d".into()
}
fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    signer_name: String,
    builtin: Option<Builtin>,
    #[serde(default)]
    approval: ApprovalMode,
    #[serde(default = "one")]
    required_approvals: usize,
    #[serde(default)]
    approver_groups: Vec<String>,
    #[serde(default)]
    allow_renewal: bool,
    #[serde(default = "default_horizon")]
    renewal_horizon: String,
    crl_distribution_point: Option<String>,
    #[serde(default = "default_lifetime", with = "humantime_serde")]
    max_lifetime: Duration,
    #[serde(default = "default_lifetime", with = "humantime_serde")]
    default_lifetime: Duration,
    allowed_usages: Option<Vec<String>>,
    required_usages: Option<Vec<String>>,
    allowed_dns_suffixes: Option<Vec<String>>,
    allow_ip_sans: Option<bool>,
    allow_uri_sans: Option<bool>,
    allow_email_sans: Option<bool>,
    common_name_prefix: Option<String>,
    allowed_organizations: Option<Vec<String>>,
    forbidden_organizations: Option<Vec<String>>,
}

/// The validated signer configuration. Paths are absolute.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address (port 0 allowed).
    pub listen: SocketAddr,
    /// CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// CA private key: a file (PKCS#8 PEM, mode 0600) or a token key.
    pub ca_key: CaKeySource,
    /// Size of the PKCS#11 session pool (token keys only).
    pub pkcs11_sessions: usize,
    /// Serving certificate.
    pub tls_cert: PathBuf,
    /// Serving key.
    pub tls_key: PathBuf,
    /// Client certificates must chain to this bundle.
    pub client_ca: PathBuf,
    /// Allowed client identities (DNS SAN or CN).
    pub allowed_clients: Vec<String>,
    /// Admin statement certificates must chain to this bundle.
    pub approval_ca: PathBuf,
    /// The journal / audit log.
    pub journal: PathBuf,
    /// Serve gRPC reflection.
    pub reflection: bool,
    /// Maximum age of approval, renewal and revocation statements.
    pub statement_max_age: Duration,
    /// nextUpdate − thisUpdate of the CRLs this signer signs.
    pub crl_validity: Duration,
    /// One profile per signer name.
    pub profiles: Vec<Profile>,
    /// After SIGTERM, how long open calls may finish before the process exits.
    pub shutdown_grace: Duration,
    /// Re-issue the serving certificate this long before it expires
    /// (`None`: the shorter of 30 days and a third of its lifetime).
    pub tls_renew_before: Option<Duration>,
    /// Plain-HTTP Prometheus `/metrics` address (the binary serves it); off
    /// when `None`, never on the mTLS port.
    pub metrics_listen: Option<SocketAddr>,
    /// Plain gRPC health (no TLS, nothing else) for orchestrators' probes;
    /// the binary serves it. Off when `None`.
    pub health_listen: Option<SocketAddr>,
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
        Self::parse(&text, path)
    }

    /// Parse config text; `path` locates relative paths and names errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| err(path, e.to_string()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::path::absolute(&base).unwrap_or(base);
        let abs = |p: &PathBuf| base.join(p);
        let listen: SocketAddr = raw.listen.parse().map_err(|e| {
            err(
                path,
                format!("listen: {:?} is not an IP:port address: {e}", raw.listen),
            )
        })?;
        if raw
            .metrics_listen
            .is_some_and(|m| m.port() == listen.port() && m.port() != 0)
        {
            let rule =
                "metrics_listen: must not be the mTLS port of listen (metrics are plain HTTP)";
            return Err(err(path, rule));
        }
        if raw.allowed_clients.is_empty() {
            return Err(err(
                path,
                "allowed_clients: must name at least one client (fail closed)",
            ));
        }
        let ca_key = if Pkcs11Uri::is_uri(&raw.ca_key) {
            CaKeySource::Pkcs11(
                Pkcs11Uri::parse(&raw.ca_key).map_err(|m| err(path, format!("ca_key: {m}")))?,
            )
        } else {
            CaKeySource::File(abs(&PathBuf::from(&raw.ca_key)))
        };
        let crl_validity = Duration::from_secs(300)..=Duration::from_secs(366 * 86400);
        if !crl_validity.contains(&raw.crl_validity) {
            return Err(err(path, "crl_validity: must be between 5m and 366d"));
        }
        if !(1..=256).contains(&raw.pkcs11_sessions) {
            return Err(err(path, "pkcs11_sessions: must be between 1 and 256"));
        }
        let mut profiles: Vec<Profile> = Vec::new();
        for (i, p) in raw.profiles.into_iter().enumerate() {
            let prof = profile(p).map_err(|m| err(path, format!("profiles[{i}].{m}")))?;
            if profiles.iter().any(|q| q.signer_name == prof.signer_name) {
                return Err(err(
                    path,
                    format!(
                        "profiles[{i}].signer_name: duplicate {:?}",
                        prof.signer_name
                    ),
                ));
            }
            profiles.push(prof);
        }
        Ok(Self {
            listen,
            ca_cert: abs(&raw.ca_cert),
            ca_key,
            pkcs11_sessions: raw.pkcs11_sessions,
            tls_cert: abs(&raw.tls_cert),
            tls_key: abs(&raw.tls_key),
            client_ca: abs(&raw.client_ca),
            allowed_clients: raw.allowed_clients,
            approval_ca: abs(&raw.approval_ca),
            journal: abs(&raw.journal),
            reflection: raw.reflection,
            statement_max_age: raw.statement_max_age,
            crl_validity: raw.crl_validity,
            profiles,
            shutdown_grace: raw.shutdown_grace,
            tls_renew_before: raw.tls_renew_before,
            metrics_listen: raw.metrics_listen,
            health_listen: raw.health_listen,
        })
    }

    /// The profile for a signer name.
    pub fn profile(&self, signer_name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.signer_name == signer_name)
    }
}

/// A `[[profiles]]` entry that does not validate: the key and the rule.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {rule}")]
struct ProfileKeyError {
    key: &'static str,
    rule: String,
}

fn bad(key: &'static str, rule: impl Into<String>) -> ProfileKeyError {
    ProfileKeyError {
        key,
        rule: rule.into(),
    }
}

fn usages(
    key: &'static str,
    v: Option<Vec<String>>,
    default: &[Usage],
) -> Result<Vec<Usage>, ProfileKeyError> {
    match v {
        None => Ok(default.to_vec()),
        Some(v) => v
            .iter()
            .map(|s| Usage::parse(s).ok_or_else(|| bad(key, format!("unknown usage {s:?}"))))
            .collect(),
    }
}

fn profile(p: RawProfile) -> Result<Profile, ProfileKeyError> {
    let name = p.signer_name;
    if name.split('/').count() != 2 || name.starts_with('/') || name.ends_with('/') {
        return Err(bad(
            "signer_name",
            format!("{name:?} must be of the form 'example.com/signer-name'"),
        ));
    }
    if p.approval == ApprovalMode::Signed
        && (p.required_approvals == 0 || p.approver_groups.is_empty())
    {
        return Err(bad(
            "approver_groups/required_approvals",
            "approval = \"signed\" needs at least one group and one approval",
        ));
    }
    if p.max_lifetime < Duration::from_secs(600) {
        return Err(bad("max_lifetime", "must be at least 10m"));
    }
    if p.default_lifetime > p.max_lifetime || p.default_lifetime < Duration::from_secs(600) {
        return Err(bad(
            "default_lifetime",
            "must be between 10m and max_lifetime",
        ));
    }
    let renewal_horizon = match p.renewal_horizon.as_str() {
        "none" => None,
        h => Some(
            humantime_serde::re::humantime::parse_duration(h).map_err(|e| {
                bad(
                    "renewal_horizon",
                    format!("{h:?}: {e} (a duration like \"90d\", or \"none\")"),
                )
            })?,
        ),
    };
    if let Some(u) = &p.crl_distribution_point {
        let rest = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/'))
            || !u.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(bad(
                "crl_distribution_point",
                format!("{u:?} must be an http:// or https:// URL (printable ASCII, no spaces)"),
            ));
        }
    }
    let rules = match p.builtin {
        Some(b) => {
            if b.name() != name {
                return Err(bad(
                    "builtin",
                    format!("{:?} must equal signer_name {name:?}", b.name()),
                ));
            }
            let custom = [
                ("allowed_usages", p.allowed_usages.is_some()),
                ("required_usages", p.required_usages.is_some()),
                ("allowed_dns_suffixes", p.allowed_dns_suffixes.is_some()),
                ("allow_ip_sans", p.allow_ip_sans.is_some()),
                ("allow_uri_sans", p.allow_uri_sans.is_some()),
                ("allow_email_sans", p.allow_email_sans.is_some()),
                ("common_name_prefix", p.common_name_prefix.is_some()),
                ("allowed_organizations", p.allowed_organizations.is_some()),
                (
                    "forbidden_organizations",
                    p.forbidden_organizations.is_some(),
                ),
            ];
            if let Some((k, _)) = custom.iter().find(|(_, set)| *set) {
                return Err(bad(
                    k,
                    "not allowed with builtin (Kubernetes' rules are fixed)",
                ));
            }
            Rules::Builtin(b)
        }
        None => {
            use Usage::*;
            let allowed = usages(
                "allowed_usages",
                p.allowed_usages,
                &[DigitalSignature, KeyEncipherment, ClientAuth, ServerAuth],
            )?;
            if let Some(u) = allowed.iter().find(|u| matches!(u, CertSign | CrlSign)) {
                return Err(bad(
                    "allowed_usages",
                    format!("{:?} is never issued (CA:FALSE only)", u.as_str()),
                ));
            }
            Rules::Custom(CustomRules {
                allowed_usages: allowed,
                required_usages: usages("required_usages", p.required_usages, &[])?,
                allowed_dns_suffixes: p.allowed_dns_suffixes,
                allow_ip_sans: p.allow_ip_sans.unwrap_or(false),
                allow_uri_sans: p.allow_uri_sans.unwrap_or(false),
                allow_email_sans: p.allow_email_sans.unwrap_or(false),
                common_name_prefix: p.common_name_prefix,
                allowed_organizations: p.allowed_organizations,
                forbidden_organizations: p
                    .forbidden_organizations
                    .unwrap_or_else(|| vec!["system:masters".into()]),
            })
        }
    };
    Ok(Profile {
        signer_name: name,
        rules,
        approval: p.approval,
        required_approvals: p.required_approvals,
        approver_groups: p.approver_groups,
        allow_renewal: p.allow_renewal,
        renewal_horizon,
        crl_distribution_point: p.crl_distribution_point,
        max_lifetime: p.max_lifetime,
        default_lifetime: p.default_lifetime,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BASE: &str = r#"
listen = "127.0.0.1:0"
ca_cert = "../ca.crt"
ca_key = "ca.key"
tls_cert = "tls.crt"
tls_key = "tls.key"
client_ca = "../ca.crt"
allowed_clients = ["certsign-approver"]
approval_ca = "../ca.crt"
journal = "journal.jsonl"
"#;

    #[test]
    fn resolves_paths_and_defaults() {
        let c = Config::parse(BASE, Path::new("/etc/x/signer/signer.toml")).unwrap();
        assert_eq!(
            c.ca_key,
            CaKeySource::File(PathBuf::from("/etc/x/signer/ca.key"))
        );
        assert_eq!(c.pkcs11_sessions, 4);
        assert_eq!(c.statement_max_age, Duration::from_secs(86400));
        assert_eq!(c.crl_validity, Duration::from_secs(86400));
        assert!(!c.reflection);
        let t = format!("{BASE}crl_validity = \"2h\"\n");
        let c = Config::parse(&t, Path::new("s.toml")).unwrap();
        assert_eq!(c.crl_validity, Duration::from_secs(7200));
        for bad in ["\"1m\"", "\"400days\"", "\"soon\""] {
            let t = format!("{BASE}crl_validity = {bad}\n");
            let e = Config::parse(&t, Path::new("s.toml")).unwrap_err();
            assert!(e.to_string().contains("crl_validity"), "{e}");
        }
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_never_the_mtls_port() {
        let c = Config::parse(BASE, Path::new("s.toml")).unwrap();
        assert_eq!(c.metrics_listen, None);
        let on = BASE.replace("127.0.0.1:0", "127.0.0.1:7443");
        let t = format!("{on}metrics_listen = \"127.0.0.1:9465\"\n");
        let c = Config::parse(&t, Path::new("s.toml")).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9465".parse().unwrap()));
        for bad in ["127.0.0.1:7443", "0.0.0.0:7443"] {
            let t = format!("{on}metrics_listen = \"{bad}\"\n");
            let e = Config::parse(&t, Path::new("s.toml")).unwrap_err();
            assert!(e.to_string().contains("metrics_listen"), "{e}");
        }
        let t = format!("{on}health_listen = \"0.0.0.0:8081\"\n");
        let c = Config::parse(&t, Path::new("s.toml")).unwrap();
        assert_eq!(c.health_listen, Some("0.0.0.0:8081".parse().unwrap()));
        let t = format!("{on}metrics_listen = \"nowhere\"\n");
        let e = Config::parse(&t, Path::new("s.toml")).unwrap_err();
        assert!(e.to_string().contains("metrics_listen"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse(&format!("{BASE}bogus = 1\n"), Path::new("s.toml")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let t = format!(
            "{BASE}[[profiles]]\nsigner_name = \"kubernetes.io/kube-apiserver-client\"\nbuiltin = \"kubernetes.io/kube-apiserver-client\"\napprover_groups = [\"g\"]\nallow_ip_sans = true\n"
        );
        let e = Config::parse(&t, Path::new("s.toml")).unwrap_err();
        assert!(e.to_string().contains("profiles[0].allow_ip_sans"), "{e}");
        let t = format!("{BASE}[[profiles]]\nsigner_name = \"example.com/x\"\n");
        let e = Config::parse(&t, Path::new("s.toml")).unwrap_err();
        assert!(e.to_string().contains("approver_groups"), "{e}");
    }

    #[test]
    fn renewal_horizon_defaults_to_90_days_and_none_must_be_written() {
        let profile = |extra: &str| {
            let t = format!(
                "{BASE}[[profiles]]\nsigner_name = \"example.com/x\"\nrequired_approvals = 2\napprover_groups = [\"g\"]\n{extra}"
            );
            Config::parse(&t, Path::new("s.toml")).map(|c| c.profiles[0].clone())
        };
        let p = profile("").unwrap();
        assert_eq!(p.renewal_horizon, Some(Duration::from_secs(90 * 86400)));
        assert_eq!(p.crl_distribution_point, None);
        let p = profile("renewal_horizon = \"none\"\n").unwrap();
        assert_eq!(p.renewal_horizon, None);
        let p = profile("renewal_horizon = \"12h\"\n").unwrap();
        assert_eq!(p.renewal_horizon, Some(Duration::from_secs(12 * 3600)));
        let e = profile("renewal_horizon = \"forever\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("profiles[0].renewal_horizon: \"forever\""),
            "{e}"
        );
        let url = "http://crl.example.test/ca.crl";
        let p = profile(&format!("crl_distribution_point = \"{url}\"\n")).unwrap();
        assert_eq!(p.crl_distribution_point.as_deref(), Some(url));
        for bad in [
            "ftp://x/crl",
            "http://",
            "https:///crl",
            "http://a b/crl",
            "crl.example",
        ] {
            let e = profile(&format!("crl_distribution_point = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("profiles[0].crl_distribution_point"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_token_key_is_a_uri_and_its_pin_never_in_the_config() {
        let uri = "pkcs11:token=ca;object=ca?module-path=/usr/lib/softhsm/libsofthsm2.so";
        let t = BASE.replace(
            "ca_key = \"ca.key\"",
            &format!("ca_key = \"{uri}&pin-source=env:PIN\"\npkcs11_sessions = 8"),
        );
        let c = Config::parse(&t, Path::new("s.toml")).unwrap();
        assert!(matches!(&c.ca_key, CaKeySource::Pkcs11(u) if u.token == "ca"));
        assert_eq!(c.pkcs11_sessions, 8);
        let t = BASE.replace(
            "ca_key = \"ca.key\"",
            &format!("ca_key = \"{uri}&pin-value=1234\""),
        );
        let e = Config::parse(&t, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ca_key: pin-value: a PIN is never accepted"),
            "{e}"
        );
        assert!(!e.contains("1234"), "the PIN must not be echoed: {e}");
        let t = BASE.replace(
            "ca_key = \"ca.key\"",
            "ca_key = \"ca.key\"\npkcs11_sessions = 0",
        );
        let e = Config::parse(&t, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pkcs11_sessions"), "{e}");
    }
}

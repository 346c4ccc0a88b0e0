//! Where certctl connects and as whom: `certctl.toml` plus flag overrides.
//!
//! Precedence for the file: `--config`, then `CERTCTL_CONFIG` (both via clap),
//! then `$XDG_CONFIG_HOME/certctl/config.toml` or `~/.config/certctl/config.toml`
//! if it exists. Each setting is then overridden by `--server`, `--ca`,
//! `--cert`, `--key`. Relative paths in the file resolve against the file's
//! directory; relative paths on the command line against the working
//! directory. A key may be a `pkcs11:` URI instead of a path; the file's
//! `pkcs11_module` fills in its `module-path` when it has none. This module reads files but never connects anywhere.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

/// The file `certsign-signer init` writes to `DIR/admin/certctl.toml`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Approver URL, e.g. `https://127.0.0.1:8443`.
    pub server: Option<String>,
    /// CA bundle (PEM) the approver's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Client private key (PEM), or an RFC 7512 `pkcs11:` URI of a key in a
    /// token (with `pin-source`).
    pub key: Option<PathBuf>,
    /// The PKCS#11 module for a `pkcs11:` key URI without `module-path`.
    pub pkcs11_module: Option<PathBuf>,
    /// Certificates `certctl renew` keeps fresh (`[[renew]]` tables).
    #[serde(default)]
    pub renew: Vec<RenewEntry>,
    /// The approver's Kubernetes API URL (`kube_listen`), for
    /// `certctl config kubeconfig`.
    pub kube_server: Option<String>,
}

/// One `[[renew]]` table: a certificate and its key that `certctl renew`
/// (oneshot or `--daemon`) renews, authenticating with the pair itself.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RenewEntry {
    /// The certificate (PEM; replaced on renewal).
    pub cert: PathBuf,
    /// Its private key (PEM; replaced on renewal).
    pub key: PathBuf,
    /// Command run (`sh -c`) after each renewal of this pair.
    pub exec: Option<String>,
    /// Renew when this much (humantime, e.g. `720h`) or this share (`33%`)
    /// of the lifetime is left; default: at two thirds of the lifetime,
    /// with jitter.
    pub renew_before: Option<String>,
    /// Signer name of the new request; default: the certificate's lineage.
    pub signer_name: Option<String>,
    /// Requested lifetime (humantime); default: the current one.
    pub expiration: Option<String>,
}

impl ConfigFile {
    /// Reads and checks a config file, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow!(
                "cannot read config {}: {}",
                path.display(),
                crate::output::io_reason(&e)
            )
        })?;
        // toml's message names the offending key (also for unknown keys).
        let mut cfg: ConfigFile = toml::from_str(&text).map_err(|e| {
            anyhow!(
                "invalid config {}: {}",
                path.display(),
                e.message().lines().next().unwrap_or("parse error")
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.ca,
            &mut cfg.cert,
            &mut cfg.key,
            &mut cfg.pkcs11_module,
        ]
        .into_iter()
        .flatten()
        .chain(cfg.renew.iter_mut().flat_map(|e| [&mut e.cert, &mut e.key]))
        {
            // A `pkcs11:` URI is not a path.
            if p.is_relative() && !crate::token::is_uri(p) {
                *p = dir.join(&*p);
            }
        }
        for (i, e) in cfg.renew.iter().enumerate() {
            let key = |k: &str| format!("invalid config {}: key `renew[{i}].{k}`", path.display());
            if let Some(t) = &e.renew_before {
                crate::cmd::Threshold::parse_as(t, "value").with_context(|| key("renew_before"))?;
            }
            if let Some(t) = &e.expiration {
                humantime::parse_duration(t)
                    .map_err(|err| anyhow!("{err}"))
                    .with_context(|| key("expiration"))?;
            }
            if matches!(&e.exec, Some(c) if c.trim().is_empty()) {
                bail!("{}: empty command", key("exec"));
            }
        }
        if let Some(server) = &cfg.server {
            Server::parse(server)
                .with_context(|| format!("invalid config {}: key `server`", path.display()))?;
        }
        if cfg.cert.is_some() != cfg.key.is_some() {
            bail!(
                "invalid config {}: `cert` and `key` must be set together",
                path.display()
            );
        }
        Ok(cfg)
    }
}

/// The default per-user config path, if one exists.
pub fn user_config_path(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    let path = base.join("certctl").join("config.toml");
    path.exists().then_some(path)
}

/// A parsed approver address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The URL as dialled (`https://host:port`).
    pub url: String,
    /// The host, used as the TLS server name (an IP or a DNS name).
    pub host: String,
}

impl Server {
    /// Accepts `https://host:port`, `host:port` (https implied) or `[v6]:port`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let rest = if let Some(r) = text.strip_prefix("https://") {
            r
        } else if text.starts_with("http://") {
            bail!("invalid server {text:?}: plain http is not supported, use https://");
        } else if text.contains("://") {
            bail!("invalid server {text:?}: scheme must be https");
        } else {
            text
        };
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() {
            bail!("invalid server {text:?}: no host");
        }
        let host = if let Some(v6) = authority.strip_prefix('[') {
            v6.split(']').next().unwrap_or("").to_string()
        } else {
            authority
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(authority)
                .to_string()
        };
        if host.is_empty() {
            bail!("invalid server {text:?}: no host");
        }
        if let Some((_, port)) = authority.rsplit_once(':')
            && !authority.ends_with(']')
            && port.parse::<u16>().is_err()
        {
            bail!("invalid server {text:?}: bad port {port:?}");
        }
        Ok(Self {
            url: format!("https://{authority}"),
            host,
        })
    }
}

/// Connection settings after merging the file and the flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The approver.
    pub server: Server,
    /// CA bundle path.
    pub ca: PathBuf,
    /// Client certificate and key paths, if any.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Bootstrap token `<id>.<secret>`, used instead of the certificate.
    pub token: Option<String>,
    /// The config file's `[[renew]]` entries.
    pub renew: Vec<RenewEntry>,
    /// The approver's Kubernetes API URL, if configured.
    pub kube_server: Option<String>,
}

/// The flags that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config` / `CERTCTL_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--server`.
    pub server: Option<String>,
    /// `--ca`.
    pub ca: Option<PathBuf>,
    /// `--cert`.
    pub cert: Option<PathBuf>,
    /// `--key`.
    pub key: Option<PathBuf>,
    /// `--token` / `CERTCTL_TOKEN`.
    pub token: Option<String>,
}

impl Overrides {
    /// Merges file and flags; `env` looks up XDG_CONFIG_HOME/HOME.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<OsString>) -> Result<Settings> {
        let file = match self.config.clone().or_else(|| user_config_path(env)) {
            Some(path) => ConfigFile::load(&path)?,
            None => ConfigFile::default(),
        };
        let server_text = self.server.clone().or(file.server).ok_or_else(|| {
            anyhow!("no server configured: pass --server or --config (or set CERTCTL_CONFIG)")
        })?;
        let server = Server::parse(&server_text)?;
        let ca =
            self.ca.clone().or(file.ca).ok_or_else(|| {
                anyhow!("no CA configured: pass --ca or set `ca` in the config file")
            })?;
        let cert = self.cert.clone().or(file.cert);
        let key = match (self.key.clone().or(file.key), &file.pkcs11_module) {
            (Some(k), Some(module)) => Some(crate::token::with_module(&k, module)),
            (k, _) => k,
        };
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                bail!("--cert needs a key: pass --key or set `key` in the config file")
            }
            (None, Some(_)) => {
                bail!("--key needs a certificate: pass --cert or set `cert` in the config file")
            }
        };
        let token = match &self.token {
            Some(t) if !t.is_empty() => {
                let ok = t.split_once('.').is_some_and(|(id, secret)| {
                    id.len() == 6
                        && secret.len() == 16
                        && t.bytes()
                            .all(|b| b == b'.' || b.is_ascii_lowercase() || b.is_ascii_digit())
                });
                if !ok {
                    bail!("invalid --token: expected <id>.<secret> ([a-z0-9]{{6}}.[a-z0-9]{{16}})");
                }
                Some(t.clone())
            }
            _ => None,
        };
        Ok(Settings {
            server,
            ca,
            identity,
            token,
            renew: file.renew,
            kube_server: file.kube_server,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_servers() {
        let s = Server::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(
            (s.url.as_str(), s.host.as_str()),
            ("https://127.0.0.1:8443", "127.0.0.1")
        );
        let s = Server::parse("approver.example:443").unwrap();
        assert_eq!(
            (s.url.as_str(), s.host.as_str()),
            ("https://approver.example:443", "approver.example")
        );
        let s = Server::parse("https://[::1]:8443").unwrap();
        assert_eq!(s.host, "::1");
        for bad in [
            "http://x:1",
            "ftp://x",
            "https://",
            "https://x:notaport",
            "",
        ] {
            assert!(Server::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loads_init_config_relative_to_its_dir() {
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("admin");
        std::fs::create_dir(&admin).unwrap();
        let path = admin.join("certctl.toml");
        std::fs::write(
            &path,
            "server = \"https://127.0.0.1:8443\"\nca = \"../ca.crt\"\ncert = \"admin.crt\"\nkey = \"admin.key\"\n",
        )
        .unwrap();
        let cfg = ConfigFile::load(&path).unwrap();
        assert_eq!(cfg.ca.unwrap(), admin.join("../ca.crt"));
        assert_eq!(cfg.cert.unwrap(), admin.join("admin.crt"));

        let o = Overrides {
            config: Some(path.clone()),
            server: Some("https://127.0.0.1:9999".into()),
            ..Default::default()
        };
        let s = o.resolve(|_| None).unwrap();
        assert_eq!(s.server.url, "https://127.0.0.1:9999");
        assert_eq!(s.identity.unwrap().1, admin.join("admin.key"));
    }

    #[test]
    fn rejects_unknown_keys_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "server = \"https://a:1\"\nsevrer = 1\n").unwrap();
        let err = ConfigFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("sevrer"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn renew_entries_resolve_paths_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let head = "server = \"https://a:1\"\nca = \"ca.crt\"\n";
        std::fs::write(
            &path,
            format!("{head}[[renew]]\ncert = \"a.crt\"\nkey = \"/k/a.key\"\nexec = \"true\"\nrenew_before = \"33%\"\n[[renew]]\ncert = \"b.crt\"\nkey = \"b.key\"\n"),
        )
        .unwrap();
        let cfg = ConfigFile::load(&path).unwrap();
        assert_eq!(cfg.renew.len(), 2);
        assert_eq!(cfg.renew[0].cert, dir.path().join("a.crt"));
        assert_eq!(cfg.renew[0].key, PathBuf::from("/k/a.key"));
        assert_eq!(cfg.renew[1].exec, None);
        for (entry, want) in [
            ("cert = \"a\"\nkey = \"b\"\nexce = \"x\"\n", "exce"),
            ("cert = \"a\"\n", "key"),
            (
                "cert = \"a\"\nkey = \"b\"\nrenew_before = \"soon\"\n",
                "key `renew[0].renew_before`",
            ),
            (
                "cert = \"a\"\nkey = \"b\"\nexpiration = \"1 fortnight\"\n",
                "key `renew[0].expiration`",
            ),
            (
                "cert = \"a\"\nkey = \"b\"\nexec = \" \"\n",
                "key `renew[0].exec`",
            ),
        ] {
            std::fs::write(&path, format!("{head}[[renew]]\n{entry}")).unwrap();
            let err = format!("{:#}", ConfigFile::load(&path).unwrap_err());
            assert!(err.contains(want), "{entry}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn a_pkcs11_key_is_no_path_and_gets_the_configured_module() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "server = \"https://a:1\"\nca = \"ca.crt\"\ncert = \"admin.crt\"\nkey = \"pkcs11:token=admin;object=admin?pin-source=env:PIN\"\npkcs11_module = \"/usr/lib/softhsm/libsofthsm2.so\"\n",
        )
        .unwrap();
        let o = Overrides {
            config: Some(path),
            ..Default::default()
        };
        let (_, key) = o.resolve(|_| None).unwrap().identity.unwrap();
        assert_eq!(
            key.to_str().unwrap(),
            "pkcs11:token=admin;object=admin?pin-source=env:PIN&module-path=/usr/lib/softhsm/libsofthsm2.so"
        );
    }

    #[test]
    fn finds_the_user_config() {
        let dir = tempfile::tempdir().unwrap();
        let xdg = dir.path().join("xdg");
        std::fs::create_dir_all(xdg.join("certctl")).unwrap();
        std::fs::write(
            xdg.join("certctl/config.toml"),
            "server = \"https://a:1\"\n",
        )
        .unwrap();
        let x = xdg.clone();
        let got =
            user_config_path(move |k| (k == "XDG_CONFIG_HOME").then(|| x.clone().into_os_string()));
        assert_eq!(got.unwrap(), xdg.join("certctl/config.toml"));
        let home = dir.path().to_path_buf();
        assert!(
            user_config_path(move |k| (k == "HOME").then(|| home.clone().into_os_string()))
                .is_none()
        );
    }

    #[test]
    fn checks_tokens() {
        let base = Overrides {
            server: Some("https://a:1".into()),
            ca: Some("ca.crt".into()),
            ..Default::default()
        };
        let ok = Overrides {
            token: Some("abcdef.0123456789abcdef".into()),
            ..base.clone()
        };
        assert!(ok.resolve(|_| None).unwrap().token.is_some());
        let bad = Overrides {
            token: Some("abc.def".into()),
            ..base
        };
        assert!(bad.resolve(|_| None).is_err());
    }
}

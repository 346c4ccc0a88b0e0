//! Configuration reload (SIGHUP): re-read `approver.toml` from the path the
//! process was started with, validate it with the same loader, and swap in
//! the parts that can change while serving (bootstrap tokens, signer names
//! with their approver groups, required approvals, approval modes and
//! renewal, auto-approval rules, statement freshness, limits).
//!
//! It must never half-apply: an invalid file changes nothing, and keys that
//! need a restart (listen, TLS material, store, signer connection,
//! retention, reflection) keep their running values, each named in a
//! warning. It does not touch the signer, whose own `signer.toml`
//! allow-lists still decide what gets signed.
//!
//! SIGHUP also reloads the serving TLS identity from `tls_cert` / `tls_key`
//! ([`crate::tls::Identity`]): new connections get the new certificate,
//! open ones keep theirs; a pair that does not load (or whose key is not
//! the certificate's) keeps the identity in use and is logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{Config, ConfigError, LiveConfig};
use crate::limits::Limiter;

/// What a successful reload put in force.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// The configuration now in force.
    pub config: Arc<Config>,
    /// Changed keys that were NOT applied (they need a restart).
    pub restart_required: Vec<&'static str>,
}

/// Reloads one running approver's configuration; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reloader {
    live: Arc<LiveConfig>,
    limiter: Arc<Limiter>,
    /// The transport's decoding cap, fixed when the server started.
    transport_max_message: usize,
    /// One reload at a time, so two signals cannot interleave their swaps.
    serial: Arc<Mutex<()>>,
    /// The serving identity a SIGHUP reloads too.
    identity: Option<Arc<crate::tls::Identity>>,
}

impl Reloader {
    pub fn new(live: Arc<LiveConfig>, limiter: Arc<Limiter>) -> Self {
        let transport_max_message = live.snapshot().transport_max_message();
        Self {
            live,
            limiter,
            transport_max_message,
            serial: Arc::new(Mutex::new(())),
            identity: None,
        }
    }

    /// Also reload `identity` (the serving TLS certificate) on SIGHUP.
    pub fn with_identity(mut self, identity: Arc<crate::tls::Identity>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Reload the serving TLS identity (if any) from its files, logging the
    /// outcome; on error the identity in use stays.
    pub fn reload_identity(&self) -> Result<(), crate::tls::TlsError> {
        let Some(identity) = &self.identity else {
            return Ok(());
        };
        let path = identity.cert_path().display().to_string();
        match identity.reload() {
            Ok(what) => {
                tracing::info!("TLS certificate reloaded from {path} ({what})");
                Ok(())
            }
            Err(e) => {
                tracing::error!("TLS reload from {path} failed; the certificate in use stays: {e}");
                Err(e)
            }
        }
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<Config> {
        self.live.snapshot()
    }

    /// Re-read `path` and apply it, logging the outcome: one info line on
    /// success, one warning per changed restart-only key, one error line
    /// (the loader's message, naming the key) when the file is refused, in
    /// which case the running configuration stays entirely in force.
    pub fn reload(&self, path: &Path) -> Result<Reloaded, ConfigError> {
        let _one_at_a_time = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        let new = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                // One line: the TOML parser's message spans several (a
                // snippet of the file); keep every part of it, joined.
                let message = e
                    .to_string()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                tracing::error!(
                    "config reload from {} refused; the running configuration stays in force: {message}",
                    path.display()
                );
                return Err(e);
            }
        };
        let running = self.live.snapshot();
        let mut restart_required = running.restart_only_changes(&new);
        if new.transport_max_message() > self.transport_max_message {
            // The limiter takes the new size at once, but the transport cap
            // was set when the server started: a request between the two
            // caps is cut off by the transport until a restart.
            restart_required.push("limits.max_request_bytes");
        }
        for key in &restart_required {
            tracing::warn!(
                "{key} changed in {}; restart to apply (the running value stays in force)",
                path.display()
            );
        }
        let merged = new.keeping_restart_only_from(&running);
        // The limiter first: it cannot fail, and a request that sees the new
        // configuration then never meets limits older than it.
        self.limiter.reconfigure(&merged.limits);
        let config = self.live.replace(merged);
        tracing::info!(
            "config reloaded from {}: {} bootstrap tokens, {} auto-approve rules, {} signer names",
            path.display(),
            config.bootstrap_tokens.len(),
            config.auto_approve.len(),
            config.signer_names.len()
        );
        Ok(Reloaded {
            config,
            restart_required,
        })
    }

    /// Reload from `path` on every SIGHUP, forever (spawn it). Installing
    /// the handler early matters: SIGHUP's default action ends the process.
    #[cfg(unix)]
    pub async fn on_sighup(
        self,
        path: PathBuf,
        mut hangups: tokio::signal::unix::Signal,
    ) -> std::convert::Infallible {
        loop {
            if hangups.recv().await.is_none() {
                // The signal driver is gone (runtime shutting down): wait
                // for the end without reloading.
                std::future::pending::<()>().await;
            }
            tracing::info!("SIGHUP: reloading config from {}", path.display());
            let this = self.clone();
            let p = path.clone();
            // File reads and parsing are blocking work.
            let reloaded = tokio::task::spawn_blocking(move || {
                let _ = this.reload(&p);
                let _ = this.reload_identity();
            });
            if let Err(e) = reloaded.await {
                tracing::error!("config reload failed to run: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::Limits;

    const BASE: &str = r#"
listen = "127.0.0.1:8443"
tls_cert = "tls.crt"
tls_key = "tls.key"
client_ca = "ca.crt"
trust_bundle = "ca.crt"
[signer]
endpoints = ["https://127.0.0.1:7443"]
ca = "ca.crt"
cert = "tls.crt"
key = "tls.key"
[[signer_names]]
name = "example.com/*"
approval = "approver"
approver_groups = ["admins"]
"#;

    fn token(id: &str) -> String {
        format!(
            "[[bootstrap_tokens]]\nid = \"{id}\"\nsecret_sha256 = \"{}\"\nexpires = \"2099-01-01T00:00:00Z\"\nsigner_names = [\"example.com/x\"]\nmax_uses = 5\n",
            "00".repeat(32)
        )
    }

    struct Setup {
        _dir: tempfile::TempDir,
        path: PathBuf,
        reloader: Reloader,
        limiter: Arc<Limiter>,
    }

    fn setup(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("approver.toml");
        std::fs::write(&path, format!("{BASE}{extra}")).unwrap();
        let config = Config::load(&path).unwrap();
        let limiter = Arc::new(Limiter::new(&config.limits));
        let reloader = Reloader::new(Arc::new(LiveConfig::new(config)), limiter.clone());
        Setup {
            _dir: dir,
            path,
            reloader,
            limiter,
        }
    }

    fn write(s: &Setup, text: &str) {
        std::fs::write(&s.path, text).unwrap();
    }

    #[test]
    fn reloadable_parts_are_applied() {
        let s = setup("");
        assert!(s.reloader.current().bootstrap_tokens.is_empty());
        write(
            &s,
            &format!(
                "statement_max_age = \"1h\"\n{}{}{}[[auto_approve]]\nsigner_names = [\"example.com/*\"]\n[limits]\nmax_request_bytes = 100\n",
                BASE.replace("[\"admins\"]", "[\"admins\", \"ops\"]"),
                token("aaaaaa"),
                token("bbbbbb")
            ),
        );
        let r = s.reloader.reload(&s.path).unwrap();
        assert!(r.restart_required.is_empty(), "{:?}", r.restart_required);
        let c = s.reloader.current();
        assert_eq!(c.bootstrap_tokens.len(), 2);
        assert_eq!(c.auto_approve.len(), 1);
        assert_eq!(c.approver_groups("example.com/x"), vec!["admins", "ops"]);
        assert_eq!(c.statement_max_age.as_secs(), 3600);
        assert_eq!(c.limits.max_request_bytes, 100);
        // The shared limiter took the new limits too.
        assert!(s.limiter.check_request_size(101).is_err());
        // And back: tokens removed again.
        write(&s, BASE);
        s.reloader.reload(&s.path).unwrap();
        assert!(s.reloader.current().bootstrap_tokens.is_empty());
        assert!(s.limiter.check_request_size(101).is_ok());
    }

    #[test]
    fn invalid_file_keeps_everything() {
        let s = setup(&token("aaaaaa"));
        let before = s.reloader.current();
        for bad in [
            format!("{BASE}bogus = 1\n{}", token("bbbbbb")),
            format!("{BASE}{}{}", token("bbbbbb"), token("bbbbbb")),
            format!(
                "{BASE}{}[limits]\nrequests_per_second = 0\n",
                token("bbbbbb")
            ),
            "listen = ".to_string(),
        ] {
            write(&s, &bad);
            let err = s.reloader.reload(&s.path).unwrap_err().to_string();
            let after = s.reloader.current();
            assert!(Arc::ptr_eq(&before, &after), "{err}");
            assert_eq!(after.bootstrap_tokens[0].id, "aaaaaa");
        }
        write(&s, &format!("{BASE}bogus = 1\n"));
        let err = s.reloader.reload(&s.path).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
        // A missing file is refused the same way.
        std::fs::remove_file(&s.path).unwrap();
        assert!(s.reloader.reload(&s.path).is_err());
        assert!(Arc::ptr_eq(&before, &s.reloader.current()));
    }

    #[test]
    fn restart_only_keys_are_named_and_keep_running_values() {
        let s = setup("");
        let changed = BASE
            .replace("127.0.0.1:8443", "127.0.0.1:9443")
            .replace("trust_bundle = \"ca.crt\"", "trust_bundle = \"other.crt\"")
            .replace("https://127.0.0.1:7443", "https://127.0.0.1:7444");
        write(
            &s,
            &format!(
                "database_url = \"sqlite://other.db\"\n{changed}{}[retention]\nissued = \"2h\"\n",
                token("aaaaaa")
            ),
        );
        let r = s.reloader.reload(&s.path).unwrap();
        assert_eq!(
            r.restart_required,
            vec![
                "listen",
                "trust_bundle",
                "database_url",
                "signer.endpoints",
                "retention"
            ]
        );
        let c = s.reloader.current();
        assert_eq!(c.listen, "127.0.0.1:8443");
        assert!(c.trust_bundle.ends_with("ca.crt"));
        assert!(c.database_url.ends_with("approver.db?mode=rwc"));
        assert_eq!(c.signer.endpoints, vec!["https://127.0.0.1:7443"]);
        assert_eq!(c.retention.issued.as_secs(), 3600);
        // The reloadable part of the same file was applied.
        assert_eq!(c.bootstrap_tokens.len(), 1);
        // Reloading the same file again: still named (the process still
        // runs with the old values), nothing else changes.
        let again = s.reloader.reload(&s.path).unwrap();
        assert_eq!(again.restart_required, r.restart_required);
    }

    #[test]
    fn a_larger_request_limit_than_the_transport_allows_is_named() {
        let s = setup("");
        let big = Limits::default().max_request_bytes * 64;
        write(&s, &format!("{BASE}[limits]\nmax_request_bytes = {big}\n"));
        let r = s.reloader.reload(&s.path).unwrap();
        assert_eq!(r.restart_required, vec!["limits.max_request_bytes"]);
        assert_eq!(s.reloader.current().limits.max_request_bytes, big);
    }
}

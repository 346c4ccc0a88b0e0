//! Shell completion: the value completers the command line names
//! (resource types, request names fetched from the approver) and the
//! registration scripts `certctl completion SHELL` prints.
//!
//! Completion runs the certctl binary itself (`_CERTCTL_COMPLETE=SHELL
//! certctl -- WORDS...`, clap_complete's dynamic engine), so request names
//! come from the server the words being completed point at: their
//! `--config`, `--server`, `--ca`, `--cert`, `--key`, `--token` (or the
//! environment and the default config file). A completion must never hang
//! the shell or print an error into it: the server is given [`timeout`]
//! in total, and any failure completes nothing.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

use certsign_proto::v1 as pb;
use clap_complete::engine::CompletionCandidate;
use clap_complete::env::EnvCompleter;

use crate::config::Overrides;
use crate::conn;

/// The environment variable the registration scripts set to ask for
/// completions.
pub const COMPLETE_VAR: &str = "_CERTCTL_COMPLETE";

/// Most names offered (a few pages).
const MAX_NAMES: usize = 2000;

/// How long a completion may wait for the server: 2 s, or
/// `CERTCTL_COMPLETION_TIMEOUT` (humantime, e.g. `500ms`).
pub fn timeout() -> Duration {
    std::env::var("CERTCTL_COMPLETION_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<humantime::Duration>().ok())
        .map(Into::into)
        .unwrap_or(Duration::from_secs(2))
}

/// Resource types after `get`.
pub fn get_resources() -> Vec<CompletionCandidate> {
    ["csr", "certificates", "crl", "trustbundle"]
        .into_iter()
        .map(CompletionCandidate::new)
        .collect()
}

/// Resource types after `describe`, `create` and `delete`.
pub fn csr_resource() -> Vec<CompletionCandidate> {
    vec![CompletionCandidate::new("csr")]
}

/// Request names starting with `current`, from the approver the command
/// line being completed points at. Nothing for `get certificates|crl`.
pub fn csr_names(current: &OsStr) -> Vec<CompletionCandidate> {
    let words: Vec<OsString> = std::env::args_os()
        .skip_while(|a| a != "--")
        .skip(1)
        .collect();
    let words: Vec<String> = words
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    if words.iter().any(|w| {
        matches!(
            w.as_str(),
            "certificates" | "certificate" | "certs" | "cert" | "crl" | "crls" | "trustbundle"
        ) && words.iter().any(|g| g == "get")
    }) {
        return Vec::new();
    }
    let prefix = current.to_string_lossy().into_owned();
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let names = runtime.block_on(async {
        tokio::time::timeout(timeout(), fetch_names(overrides(&words)))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    });
    names
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .map(CompletionCandidate::new)
        .collect()
}

/// The connection flags among the words being completed (the last of
/// each wins, as when running them), else the environment.
fn overrides(words: &[String]) -> Overrides {
    let mut o = Overrides {
        config: std::env::var_os("CERTCTL_CONFIG").map(PathBuf::from),
        server: None,
        ca: None,
        cert: None,
        key: None,
        token: std::env::var("CERTCTL_TOKEN").ok(),
    };
    let mut i = 0;
    while i < words.len() {
        let (flag, inline) = match words[i].split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (words[i].as_str(), None),
        };
        let value = match inline {
            Some(v) => Some(v),
            None => words.get(i + 1).cloned(),
        };
        let mut taken = true;
        match (flag, value) {
            ("--config", Some(v)) => o.config = Some(v.into()),
            ("--server", Some(v)) => o.server = Some(v),
            ("--ca", Some(v)) => o.ca = Some(v.into()),
            ("--cert", Some(v)) => o.cert = Some(v.into()),
            ("--key", Some(v)) => o.key = Some(v.into()),
            ("--token", Some(v)) => o.token = Some(v),
            _ => taken = false,
        }
        i += if taken && !words[i].contains('=') {
            2
        } else {
            1
        };
    }
    o
}

async fn fetch_names(o: Overrides) -> anyhow::Result<Vec<String>> {
    let settings = o.resolve(|k| std::env::var_os(k))?;
    let mut conn = conn::connect(&settings).await?;
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = conn
            .client
            .list_certificate_signing_requests(pb::ListCertificateSigningRequestsRequest {
                limit: 500,
                continue_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        names.extend(
            page.items
                .into_iter()
                .filter_map(|c| c.metadata.map(|m| m.name)),
        );
        if page.continue_token.is_empty()
            || page.continue_token == token
            || names.len() >= MAX_NAMES
        {
            return Ok(names);
        }
        token = page.continue_token;
    }
}

/// The script that registers dynamic completion for `shell`
/// (`bash`, `zsh`, `fish`, `powershell`), calling this binary.
pub fn registration(shell: &str) -> std::io::Result<String> {
    use clap_complete::env::{Bash, Fish, Powershell, Zsh};
    let completer: &dyn EnvCompleter = match shell {
        "zsh" => &Zsh,
        "fish" => &Fish,
        "powershell" => &Powershell,
        _ => &Bash,
    };
    let program = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .unwrap_or_else(|| "certctl".to_string());
    let mut buf = Vec::new();
    completer.write_registration(COMPLETE_VAR, "certctl", "certctl", &program, &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn connection_flags_from_the_words() {
        let w: Vec<String> = [
            "certctl",
            "--server",
            "https://a:1",
            "get",
            "csr",
            "--config=/x.toml",
            "--ca",
            "ca.crt",
            "--key",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = overrides(&w);
        assert_eq!(o.server.as_deref(), Some("https://a:1"));
        assert_eq!(o.config, Some(PathBuf::from("/x.toml")));
        assert_eq!(o.ca, Some(PathBuf::from("ca.crt")));
        assert_eq!(o.key, None);
    }

    #[test]
    fn every_shell_has_a_script_calling_certctl() {
        for shell in ["bash", "zsh", "fish", "powershell"] {
            let s = registration(shell).unwrap();
            assert!(s.contains(COMPLETE_VAR), "{shell}: {s}");
        }
    }
}

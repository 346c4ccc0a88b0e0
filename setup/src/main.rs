//! `certsign-signer`: thin entry point. Serving and auditing live in the
//! signer library (`certsign_signer::daemon`), set-up in this crate.
//!
//! Commands (hand-parsed, no clap: the signer keeps its dependency list short):
//!   init --dir DIR [--key-type p256|p384|ed25519|rsa|rsa2048|rsa4096] [--ca-key-uri pkcs11:…] [--signer-listen ADDR] [--approver-listen ADDR] [--kube-listen ADDR]
//!   serve --config FILE [--check-config]
//!   audit verify --config FILE
//!   issue --config FILE --csr CSR.pem --signer-name S --usages "u1,u2" [--expiration 24h] --out CERT.pem
//! Global flags: `--log-format text|json` (also `CERTSIGN_LOG_FORMAT`; the
//! flag wins), `--help`, `--version`.
//! Exit codes: 0 ok, 64 usage error or a configuration that does not load,
//! 1 any other failure. `serve` prints `listening on <addr>` on stdout once
//! it accepts connections; logs go to stderr. This binary never decides
//! anything about a request: it parses, sets up logging and calls.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use certsign_keys::Pkcs11Uri;
use certsign_setup::console::console_issue;
use certsign_setup::init::{InitOptions, KeyType, Listen, init};
use certsign_signer::authority::Authority;
use certsign_signer::config::Config;
use certsign_signer::daemon::{self, DaemonError};
use certsign_signer::harden;

const USAGE: &str = "usage: certsign-signer [--log-format text|json] [--help] [--version] COMMAND
  certsign-signer init --dir DIR [--key-type p256|p384|ed25519|rsa|rsa2048|rsa4096] [--ca-key-uri \"pkcs11:token=T;object=O?module-path=M&pin-source=file:/P\"] [--signer-listen ADDR] [--approver-listen ADDR] [--kube-listen ADDR]
  certsign-signer serve --config FILE [--check-config]
  certsign-signer audit verify --config FILE
  certsign-signer issue --config FILE --csr CSR.pem --signer-name S --usages \"client auth,digital signature\" [--expiration 24h] --out CERT.pem";

/// `--flag value` pairs; anything else is a usage error.
fn flags(args: &[String], known: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let name = a
            .strip_prefix("--")
            .filter(|n| known.contains(n))
            .ok_or_else(|| format!("unknown argument {a:?}"))?;
        let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        out.insert(name.to_string(), v.clone());
    }
    Ok(out)
}

fn required(f: &HashMap<String, String>, name: &str) -> Result<String, String> {
    f.get(name)
        .cloned()
        .ok_or_else(|| format!("--{name} is required"))
}

enum Cmd {
    Init(Box<InitOptions>),
    Serve(PathBuf),
    CheckConfig(PathBuf),
    AuditVerify(PathBuf),
    Issue {
        config: PathBuf,
        csr: PathBuf,
        signer_name: String,
        usages: Vec<String>,
        expiration: Option<i32>,
        out: PathBuf,
    },
}

fn parse(args: &[String]) -> Result<Cmd, String> {
    match args.first().map(String::as_str) {
        Some("init") => {
            let f = flags(
                &args[1..],
                &[
                    "dir",
                    "key-type",
                    "ca-key-uri",
                    "signer-listen",
                    "approver-listen",
                    "kube-listen",
                ],
            )?;
            let key_type = match f.get("key-type") {
                Some(k) => KeyType::parse(k)
                    .ok_or_else(|| format!("--key-type {k:?}: use p256, p384, ed25519, rsa (3072 bits), rsa2048 or rsa4096"))?,
                None => KeyType::P256,
            };
            Ok(Cmd::Init(Box::new(InitOptions {
                dir: PathBuf::from(required(&f, "dir")?),
                key_type,
                signer_listen: Listen::parse(
                    f.get("signer-listen")
                        .map_or("127.0.0.1:7443", String::as_str),
                )?,
                approver_listen: Listen::parse(
                    f.get("approver-listen")
                        .map_or("127.0.0.1:8443", String::as_str),
                )?,
                ca_key_uri: f
                    .get("ca-key-uri")
                    .map(|u| Pkcs11Uri::parse(u).map_err(|e| format!("--ca-key-uri: {e}")))
                    .transpose()?,
                kube_listen: f
                    .get("kube-listen")
                    .map(|a| Listen::parse(a).map_err(|e| format!("--kube-listen: {e}")))
                    .transpose()?,
            })))
        }
        Some("serve") => {
            // `--check-config`: load and validate, do not serve.
            let mut rest = args[1..].to_vec();
            let check = rest.iter().position(|a| a == "--check-config");
            if let Some(i) = check {
                rest.remove(i);
            }
            let config = PathBuf::from(required(&flags(&rest, &["config"])?, "config")?);
            Ok(match check {
                Some(_) => Cmd::CheckConfig(config),
                None => Cmd::Serve(config),
            })
        }
        Some("audit") if args.get(1).map(String::as_str) == Some("verify") => Ok(Cmd::AuditVerify(
            PathBuf::from(required(&flags(&args[2..], &["config"])?, "config")?),
        )),
        Some("issue") => {
            let f = flags(
                &args[1..],
                &[
                    "config",
                    "csr",
                    "signer-name",
                    "usages",
                    "expiration",
                    "out",
                ],
            )?;
            let expiration = match f.get("expiration") {
                Some(d) => {
                    let d = humantime::parse_duration(d)
                        .map_err(|e| format!("--expiration {d:?}: {e}"))?;
                    Some(i32::try_from(d.as_secs()).map_err(|_| "--expiration is too long")?)
                }
                None => None,
            };
            Ok(Cmd::Issue {
                config: PathBuf::from(required(&f, "config")?),
                csr: PathBuf::from(required(&f, "csr")?),
                signer_name: required(&f, "signer-name")?,
                usages: required(&f, "usages")?
                    .split(',')
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect(),
                expiration,
                out: PathBuf::from(required(&f, "out")?),
            })
        }
        _ => Err("expected a command".into()),
    }
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("--log-format {s:?}: use text or json")),
        }
    }
}

/// Takes `--log-format` (anywhere on the line) out of `args`.
fn log_format(args: &mut Vec<String>) -> Result<LogFormat, String> {
    let mut format = match std::env::var("CERTSIGN_LOG_FORMAT") {
        Ok(v) if !v.is_empty() => {
            LogFormat::parse(&v).map_err(|e| format!("CERTSIGN_LOG_FORMAT: {e}"))?
        }
        _ => LogFormat::Text,
    };
    while let Some(i) = args.iter().position(|a| a == "--log-format") {
        let v = args.get(i + 1).ok_or("--log-format needs a value")?;
        format = LogFormat::parse(v)?;
        args.drain(i..i + 2);
    }
    Ok(format)
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("--version" | "-V") => {
            println!("certsign-signer {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let parsed = log_format(&mut args).and_then(|f| Ok((f, parse(&args)?)));
    let (format, cmd) = match parsed {
        Ok(c) => c,
        Err(e) => {
            eprintln!("certsign-signer: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    if let Cmd::CheckConfig(path) = &cmd
        && let Err(e) = certsign_setup::serve::check_config(path)
    {
        eprintln!("certsign-signer: {e}");
        return ExitCode::from(64);
    }
    certsign_runtime::log::init(format == LogFormat::Json);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("certsign-signer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certsign-signer: {e}");
            match e {
                DaemonError::Config(_) => ExitCode::from(64),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn failed(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Failed(e.to_string())
}

async fn run(cmd: Cmd) -> Result<(), DaemonError> {
    match cmd {
        Cmd::Init(o) => {
            init(&o).await.map_err(failed)?;
            println!("initialized {}", o.dir.display());
            Ok(())
        }
        Cmd::Serve(path) => {
            let config = Config::load(&path)?;
            certsign_setup::metrics::start(&config).await;
            if let Some(addr) = config.health_listen {
                certsign_setup::health::start(addr).await.map_err(failed)?;
            }
            certsign_setup::serve::serve(&path).await
        }
        Cmd::CheckConfig(path) => {
            // Exits 64 on any problem (main); never here.
            println!("{}: configuration OK", path.display());
            Ok(())
        }
        Cmd::AuditVerify(path) => {
            println!("{}", daemon::audit_verify(&path)?);
            Ok(())
        }
        Cmd::Issue {
            config,
            csr,
            signer_name,
            usages,
            expiration,
            out,
        } => {
            harden::harden_process().map_err(|e| failed(format!("hardening failed: {e}")))?;
            let config = Config::load(&config)?;
            let authority = Authority::open(config).map_err(failed)?;
            let csr = std::fs::read(&csr).map_err(|e| failed(format!("{}: {e}", csr.display())))?;
            let cert = console_issue(&authority, csr, &signer_name, usages, expiration)
                .await
                .map_err(failed)?;
            std::fs::write(&out, cert).map_err(|e| failed(format!("{}: {e}", out.display())))?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}

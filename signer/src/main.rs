//! `certsign-signer`: thin entry point; all logic lives in the library.
//!
//! Commands (hand-parsed, no clap: the signer keeps its dependency list short):
//!   init --dir DIR [--key-type p256|p384|ed25519|rsa|rsa2048|rsa4096] [--ca-key-uri pkcs11:…] [--signer-listen ADDR] [--approver-listen ADDR]
//!   serve --config FILE
//!   audit verify --config FILE
//!   issue --config FILE --csr CSR.pem --signer-name S --usages "u1,u2" [--expiration 24h] --out CERT.pem
//! Exit codes: 0 ok, 64 usage error, 1 any other failure. `serve` prints
//! `listening on <addr>` on stdout once it accepts connections; logs go to
//! stderr (JSON when CERTSIGN_LOG_FORMAT=json).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use certsign_signer::authority::Authority;
use certsign_signer::config::Config;
use certsign_signer::init::{InitOptions, KeyType, Listen, console_issue, init};
use certsign_signer::pkcs11::Pkcs11Uri;
use certsign_signer::{harden, journal, service};

const USAGE: &str = "usage:
  certsign-signer init --dir DIR [--key-type p256|p384|ed25519|rsa|rsa2048|rsa4096] [--ca-key-uri \"pkcs11:token=T;object=O?module-path=M&pin-source=file:/P\"] [--signer-listen ADDR] [--approver-listen ADDR]
  certsign-signer serve --config FILE
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
    Init(InitOptions),
    Serve(PathBuf),
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
                ],
            )?;
            let key_type = match f.get("key-type") {
                Some(k) => KeyType::parse(k)
                    .ok_or_else(|| format!("--key-type {k:?}: use p256, p384, ed25519, rsa (3072 bits), rsa2048 or rsa4096"))?,
                None => KeyType::P256,
            };
            Ok(Cmd::Init(InitOptions {
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
            }))
        }
        Some("serve") => Ok(Cmd::Serve(PathBuf::from(required(
            &flags(&args[1..], &["config"])?,
            "config",
        )?))),
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("certsign-signer: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colour only for a person at a terminal: stderr is usually a file or
    // journald, where escape codes are noise in every line an operator greps.
    // A non-empty NO_COLOR turns it off there too (no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if std::env::var("CERTSIGN_LOG_FORMAT").as_deref() == Ok("json") {
        fmt.json().init();
    } else {
        fmt.init();
    }
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
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Cmd) -> Result<(), String> {
    match cmd {
        Cmd::Init(o) => {
            init(&o).await?;
            println!("initialized {}", o.dir.display());
            Ok(())
        }
        Cmd::Serve(path) => serve(&path).await,
        Cmd::AuditVerify(path) => {
            let config = Config::load(&path).map_err(|e| e.to_string())?;
            // A torn line after the sealed head is a write in progress (or a
            // crash before any answer), not tampering.
            let v = journal::verify(&config.journal, true).map_err(|e| e.to_string())?;
            println!(
                "journal {}: {} lines, chain and sealed head intact",
                config.journal.display(),
                v.lines
            );
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
            harden::harden_process().map_err(|e| format!("hardening failed: {e}"))?;
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            let authority = Authority::open(config).map_err(|e| e.to_string())?;
            let csr = std::fs::read(&csr).map_err(|e| format!("{}: {e}", csr.display()))?;
            let cert = console_issue(&authority, csr, &signer_name, usages, expiration).await?;
            std::fs::write(&out, cert).map_err(|e| format!("{}: {e}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}

async fn serve(path: &std::path::Path) -> Result<(), String> {
    harden::harden_process().map_err(|e| format!("hardening failed: {e}"))?;
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let listen = config.listen;
    let authority = Arc::new(Authority::open(config).map_err(|e| e.to_string())?);
    harden::lock_memory();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listen {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    service::serve(authority, listener, shutdown)
        .await
        .map_err(|e| e.to_string())
}

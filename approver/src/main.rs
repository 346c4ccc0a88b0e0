//! `certsign-approver`: thin entry point; all logic lives in the library.
//!
//! Parses arguments, loads the config, sets up logging (stderr; stdout
//! carries only the `listening on <addr>` line), starts the approver and
//! maps failures to exit codes (64 for usage or configuration errors).
//! `--log-format text|json` (or `CERTSIGN_LOG_FORMAT`) is the signer's switch too. On
//! SIGHUP it reloads the config file it was started with and its TLS
//! identity (see `reload`); SIGTERM drains (see `App::serve`).
//! `serve --check-config` loads and validates without serving (exit 0 or
//! 64); `backup --config F --out FILE` copies a live SQLite store.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

// mimalloc instead of glibc's malloc: the approver allocates and frees
// across its runtime's threads on every request (protobuf messages, TLS
// records, SQLite rows), where glibc's malloc costs ~8 % of the pipeline's
// CPU; with mimalloc the pipeline issues about 6 % more per second.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "certsign-approver",
    version,
    about = "The certsign approver: CSR queue, decisions, forwarding to the signer"
)]
struct Cli {
    /// Log lines as plain text or JSON (the signer takes the same switch).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "CERTSIGN_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the certsign.v1.Approver API over TLS.
    Serve {
        /// Path of approver.toml.
        #[arg(long)]
        config: PathBuf,
        /// Same as `--log-format json`.
        #[arg(long, hide = true)]
        log_json: bool,
        /// Load and validate the config and the TLS files it names, then
        /// exit (0: fine, 64: not) without serving.
        #[arg(long)]
        check_config: bool,
    },
    /// Copy the store (SQLite, while it serves) to a new file: a
    /// consistent backup. PostgreSQL stores are backed up with pg_dump.
    Backup {
        /// Path of approver.toml (names the store).
        #[arg(long)]
        config: PathBuf,
        /// The backup file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    // Usage errors exit 64 (EX_USAGE) like configuration errors, as the
    // signer's do; --help and --version print and exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let (config, log_json, check_config) = match cli.command {
        Command::Serve {
            config,
            log_json,
            check_config,
        } => (config, log_json, check_config),
        Command::Backup { config, out } => return backup(&config, &out),
    };
    let log_json = log_json || cli.log_format == LogFormat::Json;
    certsign_runtime::log::init(log_json);
    let config_path = config;
    let config = match certsign_approver::config::Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("certsign-approver: {e}");
            return ExitCode::from(64);
        }
    };
    if check_config {
        return match certsign_approver::tls::check_files(&config) {
            Ok(()) => {
                println!("{}: configuration OK", config_path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("certsign-approver: {}: {e}", config_path.display());
                ExitCode::from(64)
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("certsign-approver: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Before anything slow: SIGHUP's default action would end the
        // process; from here on it is queued until the reloader runs.
        #[cfg(unix)]
        let hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("certsign-approver: cannot handle SIGHUP: {e}");
                return ExitCode::FAILURE;
            }
        };
        let listen = config.listen.clone();
        let app = match certsign_approver::App::start(config).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("certsign-approver: {e}");
                return ExitCode::FAILURE;
            }
        };
        #[cfg(unix)]
        tokio::spawn(app.reloader().on_sighup(config_path, hangups));
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("certsign-approver: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(addr) => {
                println!("listening on {addr}");
                let _ = std::io::stdout().flush();
            }
            Err(e) => {
                eprintln!("certsign-approver: {e}");
                return ExitCode::FAILURE;
            }
        }
        match app.serve(listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("certsign-approver: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `backup`: 0 with one line naming the copy, 64 for a config that does not
/// load, 1 when the copy fails (or the store is PostgreSQL: pg_dump).
fn backup(config: &std::path::Path, out: &std::path::Path) -> ExitCode {
    let c = match certsign_approver::config::Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("certsign-approver: {e}");
            return ExitCode::from(64);
        }
    };
    match certsign_approver::store::backup(&c.database_url, out) {
        Ok(n) => {
            println!("backed up {n} requests to {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("certsign-approver: backup: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

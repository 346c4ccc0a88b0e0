//! certctl: the kubectl-shaped CLI for certsign users and admins.
//!
//! It talks to the approver over gRPC (mTLS, or a bootstrap token for a
//! first request), prints requests the way `kubectl get csr` does, signs
//! approvals and revocations with the admin's own key, rotates certificates
//! with a renewal proven by the current key, lists the issued certificates
//! and fetches the CRL.
//!
//! It must never write a partial file, never panic on bad input, and print
//! every error as one line (`error: ...`) with a non-zero exit code.
//!
//! Layout:
//! - [`cli`]: the clap command line.
//! - [`config`]: `certctl.toml` and flag overrides.
//! - [`conn`]: the tonic client and the gRPC status → message mapping.
//! - [`cmd`]: the commands.
//! - [`complete`]: shell completion (names from the server, with a timeout).
//! - [`kube`]: Kubernetes shapes and kubectl formatting (HumanDuration, table).
//! - [`manifest`]: `apply -f` manifest parsing and validation.
//! - [`describe`]: `describe csr` text.
//! - [`key`]: private keys (generate, load, sign).
//! - [`pkix`]: subjects, SANs, PKCS#10, PEM, usages.
//! - [`evidence`]: signed Approval/Renewal/Revocation statements.
//! - [`revocation`]: reason words, serial spellings, the RevocationStatement.
//! - [`inventory`]: the issued-certificate table and its JSON/YAML shape.
//! - [`files`]: atomic file writes.
//! - [`output`]: stdout, one-line errors and exit codes (imported by the
//!   modules above; it imports none of them).
#![forbid(unsafe_code)]

pub mod cli;
pub mod cmd;
pub mod complete;
pub mod config;
pub mod conn;
pub mod describe;
pub mod evidence;
pub mod files;
pub mod inventory;
pub mod key;
pub mod kube;
pub mod manifest;
pub mod output;
pub mod pkix;
pub mod revocation;

pub use output::{Failure, emit, io_reason, print_error};

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

/// Exit code of a command-line usage error (BSD `EX_USAGE`), distinct from
/// the codes `certificate wait` gives meaning to.
pub const EXIT_USAGE: u8 = 64;

/// clap's multi-line usage error as one line: the message and its details,
/// without the usage block.
fn usage_error_line(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
        .collect();
    let line = parts.join(" ");
    if line.starts_with("error:") {
        line
    } else {
        format!("error: {line}")
    }
}

/// The whole program: parse, run, print the error, pick the exit code.
/// Run by a shell's completion script ([`complete::COMPLETE_VAR`] set), it
/// prints completions instead and exits.
pub fn main_entry() -> ExitCode {
    clap_complete::CompleteEnv::with_factory(<cli::Cli as clap::CommandFactory>::command)
        .var(complete::COMPLETE_VAR)
        .complete();
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "{}",
                usage_error_line(&e.render().to_string())
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            print_error(&anyhow::anyhow!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e);
            let code = e.downcast_ref::<Failure>().map(|f| f.code).unwrap_or(1);
            ExitCode::from(code)
        }
    }
}

//! The commands, one module each: every command validates its input
//! completely before connecting, then makes its calls and prints kubectl's
//! lines.
//!
//! Commands never leave partial files: every file goes through
//! [`crate::files`]. Exit codes other than 1 are raised as [`crate::output::Failure`].
//! This module only dispatches; what several commands share is in `common`,
//! which imports no command module.

mod apply;
mod certificates;
mod common;
mod completion;
mod create;
mod crl;
mod decide;
mod delete;
mod describe;
mod get;
mod get_watch;
mod kubeconfig;
mod list;
mod renew;
mod renew_agent;
mod revoke;
mod trustbundle;
mod wait;
mod whoami;

use anyhow::Result;
use certsign_proto::v1 as pb;

use crate::cli::{self, AuthCommand, CertificateCommand, Command, ConfigCommand};
use crate::config::Overrides;
use common::{OtherResource, other_resource};

pub use crl::CRL_PEM_LABEL;
pub use renew::{EXIT_NOT_DUE, Renewal, Threshold, build_renewal};
pub use wait::{EXIT_DENIED, EXIT_FAILED, EXIT_TIMEOUT};

/// Runs a parsed command line.
pub async fn run(cli: cli::Cli) -> Result<()> {
    let g = cli.global;
    let overrides = Overrides {
        config: g.config,
        server: g.server,
        ca: g.ca,
        cert: g.cert,
        key: g.key,
        token: g.token,
    };
    let identity_flags = overrides.cert.is_some();
    let settings = || overrides.resolve(|k| std::env::var_os(k));
    let done = match cli.command {
        Command::Get(a) => match other_resource(&a.resource) {
            Some(OtherResource::Certificates) => {
                certificates::get_certificates(settings()?, a).await
            }
            Some(OtherResource::Crl) => crl::get_crl(settings()?, a).await,
            Some(OtherResource::TrustBundle) => trustbundle::get_trust_bundle(settings()?, a).await,
            None => get::get(settings()?, a).await,
        },
        Command::Describe(a) => describe::describe(settings()?, a).await,
        Command::Apply(a) => apply::apply(settings, a).await,
        Command::Create(a) => create::create(settings, a).await,
        Command::Certificate(CertificateCommand::Approve(a)) => {
            decide::decide(settings()?, a, pb::Decision::Approve).await
        }
        Command::Certificate(CertificateCommand::Deny(a)) => {
            decide::decide(settings()?, a, pb::Decision::Deny).await
        }
        Command::Certificate(CertificateCommand::Wait(a)) => wait::wait(settings()?, a).await,
        Command::Certificate(CertificateCommand::Revoke(a)) => {
            revoke::revoke(settings()?, a, identity_flags).await
        }
        Command::Renew(a) if a.daemon => renew_agent::run(settings()?, a, identity_flags).await,
        Command::Renew(a) => renew::renew(settings()?, a, identity_flags).await,
        Command::Delete(a) => delete::delete(settings()?, a).await,
        Command::Completion(a) => completion::completion(a),
        Command::Config(ConfigCommand::Kubeconfig(a)) => kubeconfig::kubeconfig(settings()?, a),
        Command::Auth(AuthCommand::Whoami(a)) => whoami::whoami(settings()?, a).await,
    };
    // An Unimplemented answer: say so plainly when the server is a signer.
    if let Err(e) = &done
        && let Some(n) = e.downcast_ref::<crate::conn::NotImplemented>()
        && let Ok(s) = settings()
        && crate::conn::is_signer(&s).await
    {
        anyhow::bail!(
            "the server at {} is a certsign signer, not the approver: point --server (or `server` in certctl.toml) at the approver",
            n.url
        );
    }
    done
}

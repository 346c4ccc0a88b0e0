//! `certctl completion SHELL`: the shell completion script, from clap's own
//! description of the command line.
//!
//! It reads no configuration and never connects.

use anyhow::Result;

use crate::cli;
use crate::output::emit;

/// Runs `completion`.
pub(super) fn completion(a: cli::CompletionArgs) -> Result<()> {
    use clap::CommandFactory as _;
    let shell = match a.shell {
        cli::Shell::Bash => clap_complete::Shell::Bash,
        cli::Shell::Zsh => clap_complete::Shell::Zsh,
        cli::Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cli::Cli::command(), "certctl", &mut buf);
    emit(&String::from_utf8_lossy(&buf));
    Ok(())
}

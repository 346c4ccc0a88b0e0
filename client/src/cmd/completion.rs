//! `certctl completion SHELL`: the script that registers certctl's dynamic
//! completion with the shell (bash, zsh, fish, PowerShell). The shell then
//! runs certctl itself to complete, so commands, flags, resource types and
//! request names (fetched from the server, [`crate::complete`]) all come
//! from one place.
//!
//! It reads no configuration and never connects.

use anyhow::{Result, anyhow};

use crate::cli;
use crate::complete;
use crate::output::emit;

/// Runs `completion`.
pub(super) fn completion(a: cli::CompletionArgs) -> Result<()> {
    let shell = match a.shell {
        cli::Shell::Bash => "bash",
        cli::Shell::Zsh => "zsh",
        cli::Shell::Fish => "fish",
        cli::Shell::Powershell => "powershell",
    };
    let script = complete::registration(shell)
        .map_err(|e| anyhow!("cannot write the {shell} completion script: {e}"))?;
    emit(&script);
    Ok(())
}

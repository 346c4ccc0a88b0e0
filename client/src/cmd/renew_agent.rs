//! `certctl renew --daemon`: the renewal agent. It keeps every target (the
//! `--cert`/`--key` pair, or each `[[renew]]` entry of the config) fresh:
//! each is renewed at two thirds of its lifetime (a random jitter earlier,
//! so a fleet does not renew in lockstep) or at its `renew_before`, its
//! `--exec` command runs after each renewal, and a failed attempt (approver
//! down or restarting, signer slow) is retried with exponential backoff,
//! resuming the same pending request.
//!
//! It never renews a certificate that is not due, never runs a hook without
//! a renewal, and never exits on a failed attempt; SIGTERM or SIGINT end it
//! between attempts (a kill at any other point leaves a whole pair, see
//! [`crate::pair`]).

use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::renew::{Done, Target, When, renew_once, run_hook, targets};
use crate::cli;
use crate::config::Settings;
use crate::output::{emit, print_error};

/// The first retry delay after a failed attempt; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The longest sleep: the files are looked at again at least this often
/// (a certificate replaced by hand, a clock that jumped).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// The shortest time between two renewals of one certificate, so a
/// `renew_before` longer than the lifetime cannot turn into a busy loop.
const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// A target and its schedule.
#[derive(Debug)]
struct Slot {
    target: Target,
    when: When,
    next: SystemTime,
    backoff: Duration,
}

/// Runs the agent until SIGTERM or SIGINT.
pub(super) async fn run(settings: Settings, a: cli::RenewArgs, cert_flag: bool) -> Result<()> {
    if settings.token.is_some() {
        anyhow::bail!("renew authenticates with the current certificate; do not pass --token");
    }
    let timeout: Duration = a.timeout.into();
    let now = SystemTime::now();
    let mut slots: Vec<Slot> = targets(&settings, &a, cert_flag)?
        .into_iter()
        .map(|target| Slot {
            when: match target.renew_before {
                Some(t) => When::Threshold(t),
                None => When::TwoThirds {
                    jitter: When::jitter(),
                },
            },
            target,
            next: now,
            backoff: Duration::ZERO,
        })
        .collect();
    emit(&format!(
        "certctl renew --daemon: keeping {} certificate(s) fresh\n",
        slots.len()
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        for slot in slots.iter_mut() {
            if slot.next <= SystemTime::now() {
                attempt(&settings, slot, timeout).await;
            }
        }
        let next = slots
            .iter()
            .map(|s| s.next)
            .min()
            .unwrap_or_else(SystemTime::now);
        let sleep = next
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(MAX_SLEEP);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// One attempt for one target, rescheduling it.
async fn attempt(settings: &Settings, slot: &mut Slot, timeout: Duration) {
    let t = &slot.target;
    match renew_once(settings, t, slot.when, timeout).await {
        Ok(Done::NotDue(due, _)) => {
            slot.backoff = Duration::ZERO;
            slot.next = due;
        }
        Ok(Done::Renewed(line)) => {
            emit(&line);
            slot.backoff = Duration::ZERO;
            slot.next = SystemTime::now() + MIN_INTERVAL;
            if let Err(e) = run_hook(t).await {
                print_error(&e.context(format!("renewing {}", t.cert.display())));
            }
        }
        Err(e) => {
            slot.backoff = (slot.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
            slot.next = SystemTime::now() + slot.backoff;
            print_error(&e.context(format!(
                "renewing {} (retrying in {}s)",
                t.cert.display(),
                slot.backoff.as_secs()
            )));
        }
    }
}

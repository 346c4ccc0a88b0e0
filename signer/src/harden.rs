//! Process hardening applied by `serve` before the CA key is loaded, plus
//! memory locking after.
//!
//! - `no_new_privs`: nothing this process execs can gain privileges.
//! - not dumpable + `RLIMIT_CORE` = 0: no core file can carry the key, and
//!   same-uid processes cannot ptrace us.
//! - `mlockall(MCL_CURRENT)` after the key is loaded keeps the key's pages
//!   out of swap. rustix exposes `mlockall` as a safe function, so the crate
//!   stays `#![forbid(unsafe_code)]`. `MCL_FUTURE` is deliberately not used:
//!   with a small `RLIMIT_MEMLOCK` it makes later allocations fail. Without
//!   `CAP_IPC_LOCK` (or enough `RLIMIT_MEMLOCK`) locking fails; we warn and go
//!   on, relying on no-dumps plus the systemd unit (`LimitMEMLOCK`,
//!   `LockPersonality`, `MemoryDenyWriteExecute`, no swap on the host).
//!
//! Failures of the first two are fatal: a signer that cannot protect its key
//! must not start.

use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};

/// Set no_new_privs, disable core dumps and ptrace by same-uid processes.
pub fn harden_process() -> std::io::Result<()> {
    rustix::thread::set_no_new_privs(true)?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    Ok(())
}

/// Lock the pages mapped now (the loaded key among them). Best effort.
pub fn lock_memory() {
    if let Err(e) = rustix::mm::mlockall(rustix::mm::MlockAllFlags::CURRENT) {
        tracing::warn!(error = %e, "could not lock memory (needs CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK); key pages may be swapped");
    }
}

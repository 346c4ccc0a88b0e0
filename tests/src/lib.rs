//! The one test harness of the certsign workspace: every crate's
//! integration tests start processes, make PKI, bring up stacks and wait
//! through it. It starts the real binaries on loopback with the PKI that
//! `certsign-signer init` makes, and hands tests the paths, addresses and
//! clients they need to drive them (with tonic, or with outside clients:
//! openssl, grpcurl, a Python gRPC client, pkilint, rustls-webpki).
//!
//! Modules by responsibility: [`process`] (binaries, commands, the daemon
//! spawner), [`config`] (TOML edits), [`pki`] (init directory, identities,
//! CSRs), [`evidence`] (signed statements), [`stack`] (a running
//! deployment), [`grpc`] (channels, requests), [`wait`] (until a request
//! is final), [`kube`] (the Kubernetes API face and its outside clients:
//! kubectl, curl, the Python `kubernetes` client), [`records`] (journal
//! and store readers), [`load`] (the load generator and judge of the fault
//! suites), [`hsm`] (SoftHSM2 tokens and keys generated in them),
//! [`metrics`] (scrapes judged by Python's prometheus_client).
//!
//! It must never be a dependency of a service crate, never depend on the
//! approver's library, and never fake a part that can run for real here.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // a harness: a failed setup step should fail the test loudly

pub mod config;
pub mod evidence;
pub mod grpc;
pub mod hsm;
pub mod kube;
pub mod load;
pub mod metrics;
pub mod pki;
pub mod process;
pub mod records;
pub mod stack;
pub mod wait;

pub use config::edit_toml;
pub use process::{
    Daemon, Spawn, bin, bin_dir, dead_addr, free_port, profile_dir, repo_root, require_tool, run,
    run_ok, serve, silent_listener, target_dir,
};
pub use stack::Stack;

//! End-to-end test harness for certsign: starts the real binaries on
//! loopback with certificates made by `certsign-signer init`, and drives
//! them with outside clients. Never a dependency of a service crate.
#![forbid(unsafe_code)]

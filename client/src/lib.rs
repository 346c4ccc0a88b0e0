//! certctl library: the kubectl-shaped CLI's commands.
#![forbid(unsafe_code)]

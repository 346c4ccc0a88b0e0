//! The `certsign.v1` protocol: generated message types, the `Signer` and
//! `Approver` service stubs, and the encoded descriptor set for reflection.
//!
//! This crate holds definitions only. It must never grow helpers or logic:
//! the signer's reviewed surface is `signer/` plus this crate, and keeping
//! it generated-only keeps that review small.

// Generated code: prost boxes nothing, so a oneof of a large message and an
// empty one trips `large_enum_variant`.
#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::unwrap_used,
    clippy::large_enum_variant
)]

/// Generated code for package `certsign.v1`.
pub mod v1 {
    tonic::include_proto!("certsign.v1");

    /// The encoded `FileDescriptorSet` of every certsign `.proto` file (with
    /// imports), for `tonic-reflection`.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("certsign_descriptor");
}

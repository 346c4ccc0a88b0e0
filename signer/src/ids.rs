//! The identifiers the signer records and indexes: a request's uid, a
//! certificate's serial, and how approval was proven. Their serde forms are
//! the journal's (plain strings), so existing journals read unchanged.
//!
//! This module never decides anything; it only names things.

use std::borrow::Borrow;

use serde::{Deserialize, Serialize};

/// A request's `metadata.uid`: the idempotency key, issued at most once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Uid(pub String);

/// A certificate serial number: lowercase hex, no leading zero bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Serial(pub String);

impl Serial {
    /// From the serial's big-endian bytes.
    pub fn from_bytes(b: &[u8]) -> Self {
        let zeros = b.iter().take_while(|x| **x == 0).count();
        Self(hex::encode(&b[zeros.min(b.len().saturating_sub(1))..]))
    }
}

macro_rules! string_newtype {
    ($t:ty) => {
        impl Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }
    };
}
string_newtype!(Uid);
string_newtype!(Serial);

/// How approval of an issued certificate was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceKind {
    /// Signed admin approval statements.
    Approvals,
    /// A renewal statement signed with the certificate being replaced.
    Renewal,
    /// The allow-listed approver's word (`approval = "approver"`).
    Approver,
    /// The operator at the signer's console.
    Console,
}

//! The store's public types (errors, events, filters, forwarding items,
//! create guards, writer statistics) and the object encoding every backend
//! shares: decoding a stored object or renewal statement, setting a
//! resource version.
//!
//! This module must never touch a database; it only names and converts.

use certsign_proto::v1::{CertificateSigningRequest, SignedStatement};
use prost::Message as _;

use crate::decision::State;
pub(super) use certsign_runtime::unix_now;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The PostgreSQL database could not be reached or a query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// An SQLite statement failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The write's transaction did not commit (or the writer is gone):
    /// nothing of it was stored.
    #[error("database error: the write was not stored: {0}")]
    NotStored(String),
    /// A read run off the async threads did not finish (it panicked, was
    /// cancelled or timed out); nothing was changed.
    #[error("database error: the read did not complete: {0}")]
    ReadFailed(String),
    /// A stored object could not be decoded (database corruption).
    #[error("stored object {name:?} is corrupt: {message}")]
    Corrupt { name: String, message: String },
    /// No object with that name.
    #[error("certificatesigningrequests.certificates.k8s.io {0:?} not found")]
    NotFound(String),
    /// An object with that name exists.
    #[error("certificatesigningrequests.certificates.k8s.io {0:?} already exists")]
    AlreadyExists(String),
    /// The requestor has too many pending requests.
    #[error(
        "user {username:?} already has {max} pending certificate signing requests; the limit is {max}"
    )]
    PendingLimit { username: String, max: u32 },
    /// A bootstrap token has been used up.
    #[error("bootstrap token {id:?} has reached its use limit of {max}")]
    TokenExhausted { id: String, max: u32 },
    /// The database URL is not supported.
    #[error("unsupported database URL (use sqlite:// or postgres://)")]
    UnsupportedUrl,
    /// `backup` of a PostgreSQL store: that is pg_dump's job.
    #[error(
        "the store is PostgreSQL: back it up with pg_dump (pg_dump --format=custom --file=FILE URL; deploy/README.md, \"Back up\"); certsign-approver backup copies SQLite stores"
    )]
    BackupWithPgDump,
}

/// The outcome of a conditional update.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The update function refused the change.
    #[error("{0}")]
    Rejected(E),
}

/// A watch event as stored.
#[derive(Debug, Clone)]
pub struct Event {
    pub resource_version: i64,
    /// "ADDED", "MODIFIED" or "DELETED".
    pub event_type: String,
    pub object: CertificateSigningRequest,
}

/// List filters (all optional).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub signer_name: Option<String>,
    /// A CONDITION column value ("Approved,Issued") or one of its parts
    /// ("Issued").
    pub condition: Option<String>,
    pub username: Option<String>,
}

/// What a list keeps of the rows its SQL filter selects (a label
/// selector: labels live in the encoded object, not in indexed columns).
pub type Keep = std::sync::Arc<dyn Fn(&CertificateSigningRequest) -> bool + Send + Sync>;

/// One page of a list read in one snapshot with the store's resource
/// version: a watch from `resource_version` misses nothing the page lacks.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub items: Vec<CertificateSigningRequest>,
    pub resource_version: i64,
}

/// An approved request claimed for forwarding to the signer.
#[derive(Debug, Clone)]
pub struct ForwardItem {
    pub object: CertificateSigningRequest,
    pub renewal: Option<SignedStatement>,
    /// How many times it has been claimed, including this one.
    pub attempts: i64,
}

/// The indexed column a cleaner page is ranged over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageBy {
    /// `created` (unix seconds).
    Created,
    /// `expires`: the certificate's notAfter (unix seconds); 0 when there is
    /// no readable certificate, -1 when not computed yet (older rows).
    Expires,
}

impl PageBy {
    /// The column's name (a fixed identifier, safe to format into SQL).
    pub(super) fn column(self) -> &'static str {
        match self {
            PageBy::Created => "created",
            PageBy::Expires => "expires",
        }
    }
}

/// Counting limits applied atomically with a create.
#[derive(Debug, Clone)]
pub struct CreateGuard {
    pub max_pending_per_requestor: u32,
    /// Bootstrap token id and its use limit, when the requestor used one.
    pub token: Option<(String, u32)>,
}

impl CreateGuard {
    /// A create's refusal, if any, from what its transaction read: `taken`
    /// rows with its name, `pending` requests of its requestor. Both
    /// backends use it.
    pub(super) fn admit(
        &self,
        name: &str,
        state: State,
        username: &str,
        taken: i64,
        pending: i64,
    ) -> Result<(), StoreError> {
        if taken > 0 {
            return Err(StoreError::AlreadyExists(name.to_string()));
        }
        if state == State::Pending && pending >= i64::from(self.max_pending_per_requestor) {
            return Err(StoreError::PendingLimit {
                username: username.to_string(),
                max: self.max_pending_per_requestor,
            });
        }
        Ok(())
    }
}

/// The refusal when a token's use was not counted (`counted` rows changed
/// by the schema's `count_token_use!`; a limit of 0 admits nothing).
pub(super) fn token_counted(id: &str, max: u32, counted: u64) -> Result<(), StoreError> {
    if counted == 0 || max == 0 {
        return Err(StoreError::TokenExhausted {
            id: id.to_string(),
            max,
        });
    }
    Ok(())
}

/// What the group-commit writer has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (each one fsync).
    pub commits: u64,
    /// Write operations carried by those transactions.
    pub ops: u64,
}

pub(super) fn decode(name: &str, bytes: &[u8]) -> Result<CertificateSigningRequest, StoreError> {
    CertificateSigningRequest::decode(bytes).map_err(|e| StoreError::Corrupt {
        name: name.to_string(),
        message: e.to_string(),
    })
}

/// Decodes a row's object read through the schema's `object_of_row!`; a
/// missing current event is corruption, named.
pub(super) fn decode_stored(
    name: &str,
    bytes: Option<Vec<u8>>,
) -> Result<CertificateSigningRequest, StoreError> {
    match bytes {
        Some(b) => decode(name, &b),
        None => Err(StoreError::Corrupt {
            name: name.to_string(),
            message: "the event holding its current version is missing".into(),
        }),
    }
}

/// Decodes a stored renewal statement (empty: none).
pub(super) fn decode_renewal(
    name: &str,
    bytes: Option<Vec<u8>>,
) -> Result<Option<SignedStatement>, StoreError> {
    match bytes {
        Some(b) if !b.is_empty() => SignedStatement::decode(b.as_slice())
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                name: name.to_string(),
                message: format!("renewal: {e}"),
            }),
        _ => Ok(None),
    }
}

pub(super) fn name_of(csr: &CertificateSigningRequest) -> &str {
    csr.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
}

pub(super) fn set_rv(csr: &mut CertificateSigningRequest, rv: i64) {
    csr.metadata
        .get_or_insert_with(Default::default)
        .resource_version = rv.to_string();
}

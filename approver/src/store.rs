//! The durable store: CSR objects, their change events, bootstrap token use
//! counts, on SQLite (default) or PostgreSQL. sqlx's `Any` driver serves
//! PostgreSQL, migrations and SQLite's lists; rusqlite serves SQLite's
//! writer thread (`sqlite_writer`) and point reads (`sqlite_reader`).
//!
//! A request is a row of indexed columns in `csrs` (name, uid, signer
//! name, username, state, CONDITION column, created, resource_version,
//! certificate expiry, forwarding schedule and lease); its encoded object
//! is stored once per version, in the `csr_events` row of that version,
//! and read through the row's `resource_version` ([`object_of_row!`]).
//! Keeping the 1-3 KiB object out of the row keeps the rows small and
//! densely packed, so a state change rewrites a small row instead of a
//! page-sized one and writes the object once instead of twice (about a
//! quarter fewer SQLite WAL bytes per issued certificate).
//! Pruning old events keeps every event a row still points at.
//! SQLite runs in WAL mode with `synchronous = FULL`, so an acknowledged
//! write survives kill -9 and power loss.
//!
//! **Group commit.** Every write (create, update, delete, forwarding claims
//! and reschedules, event pruning) is queued to one writer per store: on
//! SQLite a thread with its own connection (`sqlite_writer`), on PostgreSQL
//! a task on sqlx's pool.
//! The writer takes everything queued (up to [`MAX_BATCH`] operations), runs
//! it in ONE transaction, each operation inside its own SAVEPOINT (so one
//! operation's refusal or failure rolls back only that operation; on SQLite
//! an update, which writes only after everything that can refuse it, runs
//! without one, and a failure of its writes fails the batch), commits
//! once (one fsync for the whole batch) and only then answers each caller:
//! nothing is acknowledged before it is durable, and a failed commit
//! answers every operation of the batch with an error. Each batch starts by
//! locking the single resource-version counter row (serialising writers of
//! other replicas on PostgreSQL; on SQLite it takes the write lock first, so
//! no upgrade deadlock), hands out resource versions in queue order and
//! stores the last one at the end, so resource versions increase strictly
//! in commit order, and every change is appended to `csr_events` for
//! watchers in the same transaction.
//!
//! Several processes (approver replicas) may share one PostgreSQL store:
//! every batch that changes objects also issues `NOTIFY certsign_csr_events`
//! (delivered at commit, dropped on rollback) so their watch hubs wake at
//! once ([`ChangeListener`]); the events table stays the source of truth.
//! Forwarding work is claimed with a lease (`lease_owner`, `lease_until`)
//! kept apart from the backoff schedule (`next_attempt`): a row is claimed
//! by one store handle at a time, only expired leases are taken over, and
//! only the owner releases its lease. On PostgreSQL the claim skips rows
//! other transactions hold (`FOR UPDATE SKIP LOCKED`). Among requests due
//! at the same time the oldest is claimed first (SQLite: insertion order,
//! read straight off the `(state, next_attempt)` index; PostgreSQL:
//! `created`, then name), so a backlog drains in order: ordering by name
//! alone let a request whose name sorts late wait as long as newer
//! requests kept arriving.
//!
//! This module must never decide policy; it only enforces the counting
//! limits it is given, atomically. It must never answer a write before its
//! transaction has committed.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use certsign_proto::v1::{CertificateSigningRequest, SignedStatement};
use prost::Message as _;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, Row as _};
use tokio::sync::{mpsc, oneshot};

use crate::cleaner::expiry_column;
use crate::decision::{State, condition_column, state_of};

mod sqlite_reader;
mod sqlite_writer;

/// The most write operations one transaction (one fsync) carries.
pub const MAX_BATCH: usize = 512;

/// Write operations that may wait for the writer before callers are slowed
/// down (back-pressure, not a limit on anything a client can see).
const QUEUE: usize = 8192;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached or a query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A statement of the SQLite writer failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The write's transaction did not commit (or the writer is gone):
    /// nothing of it was stored.
    #[error("database error: the write was not stored: {0}")]
    NotStored(String),
    /// A read run off the async threads did not finish (it panicked or
    /// was cancelled); nothing was changed.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
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
    /// writers use it.
    fn admit(
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

/// Counts a bootstrap token's use only while it is under its limit: `$1`
/// the token id, `$2` the limit (`?1`/`?2` on the SQLite writer).
macro_rules! count_token_use {
    ($p:literal) => {
        concat!(
            "INSERT INTO bootstrap_token_uses (id, uses) VALUES (",
            $p,
            "1, 1) ON CONFLICT (id) DO UPDATE SET uses = bootstrap_token_uses.uses + 1 \
             WHERE bootstrap_token_uses.uses < ",
            $p,
            "2"
        )
    };
}
use count_token_use;

/// The refusal when a token's use was not counted (`counted` rows changed
/// by [`count_token_use!`]; a limit of 0 admits nothing).
fn token_counted(id: &str, max: u32, counted: u64) -> Result<(), StoreError> {
    if counted == 0 || max == 0 {
        return Err(StoreError::TokenExhausted {
            id: id.to_string(),
            max,
        });
    }
    Ok(())
}

/// Counts of the writer's work since the store was opened.
#[derive(Debug, Default)]
struct Counts {
    /// Transactions committed.
    commits: AtomicU64,
    /// Operations answered from committed transactions.
    ops: AtomicU64,
}

/// What the group-commit writer has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (each one fsync).
    pub commits: u64,
    /// Write operations carried by those transactions.
    pub ops: u64,
}

/// The store handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct Store {
    /// Reads.
    pool: AnyPool,
    /// The writer's single connection (and migrations).
    write_pool: AnyPool,
    backend: Backend,
    url: Arc<str>,
    /// Who holds the forwarding leases this handle takes: unique per
    /// [`Store::open`], so two processes (or two handles in a test) never
    /// mistake each other's leases for their own.
    owner: Arc<str>,
    writer: mpsc::Sender<Op>,
    counts: Arc<Counts>,
    /// SQLite only: point reads on the caller's thread (`sqlite_reader`).
    readers: Option<Arc<sqlite_reader::Readers>>,
}

/// Holds the writer between batches while alive (see
/// [`Store::pause_writes`]); dropping it lets the writer go on.
#[derive(Debug)]
pub struct WritePause {
    _release: oneshot::Sender<()>,
}

/// The PostgreSQL notification channel every write transaction signals.
macro_rules! change_channel {
    () => {
        "certsign_csr_events"
    };
}
const CHANGE_CHANNEL: &str = change_channel!();

/// Wake-ups for changes committed by any process sharing a PostgreSQL
/// store. Only a hint: the reader re-reads the events table after each.
#[derive(Debug)]
pub struct ChangeListener {
    inner: sqlx::postgres::PgListener,
    /// The last call failed: reconnect before waiting again.
    lost: bool,
}

impl ChangeListener {
    /// Wait for the next change. Also returns (with `Ok`) once a lost
    /// connection is re-established and listening again, since
    /// notifications may have been missed meanwhile: the caller re-reads
    /// from its last seen resource version either way. An error means the
    /// reconnection failed; the next call tries again.
    pub async fn changed(&mut self) -> Result<(), StoreError> {
        if self.lost {
            // Any statement through the listener reconnects it and
            // re-issues its LISTEN first; report the reconnection so the
            // caller reads what was committed while it was away.
            sqlx::query("SELECT 1").execute(&mut self.inner).await?;
            self.lost = false;
            return Ok(());
        }
        match self.inner.try_recv().await {
            // A notification, or a lost connection re-established
            // (sqlx reconnects eagerly before returning None).
            Ok(_) => Ok(()),
            Err(e) => {
                self.lost = true;
                Err(e.into())
            }
        }
    }
}

struct Migration {
    version: i64,
    sqlite: &'static [&'static str],
    postgres: &'static [&'static str],
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: &[
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            "INSERT INTO counters (name, value) VALUES ('resource_version', 0)",
            "CREATE TABLE csrs (name TEXT PRIMARY KEY, uid TEXT NOT NULL UNIQUE, signer_name TEXT NOT NULL, username TEXT NOT NULL, state TEXT NOT NULL, cond TEXT NOT NULL, created BIGINT NOT NULL, resource_version BIGINT NOT NULL, next_attempt BIGINT NOT NULL DEFAULT 0, attempts BIGINT NOT NULL DEFAULT 0, object BLOB NOT NULL, renewal BLOB NOT NULL)",
            "CREATE INDEX csrs_state ON csrs (state, next_attempt)",
            "CREATE INDEX csrs_username ON csrs (username, state)",
            "CREATE INDEX csrs_signer ON csrs (signer_name)",
            "CREATE TABLE csr_events (resource_version BIGINT PRIMARY KEY, event_type TEXT NOT NULL, name TEXT NOT NULL, created BIGINT NOT NULL, object BLOB NOT NULL)",
            "CREATE TABLE bootstrap_token_uses (id TEXT PRIMARY KEY, uses BIGINT NOT NULL)",
        ],
        postgres: &[
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            "INSERT INTO counters (name, value) VALUES ('resource_version', 0)",
            "CREATE TABLE csrs (name TEXT PRIMARY KEY, uid TEXT NOT NULL UNIQUE, signer_name TEXT NOT NULL, username TEXT NOT NULL, state TEXT NOT NULL, cond TEXT NOT NULL, created BIGINT NOT NULL, resource_version BIGINT NOT NULL, next_attempt BIGINT NOT NULL DEFAULT 0, attempts BIGINT NOT NULL DEFAULT 0, object BYTEA NOT NULL, renewal BYTEA NOT NULL)",
            "CREATE INDEX csrs_state ON csrs (state, next_attempt)",
            "CREATE INDEX csrs_username ON csrs (username, state)",
            "CREATE INDEX csrs_signer ON csrs (signer_name)",
            "CREATE TABLE csr_events (resource_version BIGINT PRIMARY KEY, event_type TEXT NOT NULL, name TEXT NOT NULL, created BIGINT NOT NULL, object BYTEA NOT NULL)",
            "CREATE TABLE bootstrap_token_uses (id TEXT PRIMARY KEY, uses BIGINT NOT NULL)",
        ],
    },
    // Forwarding leases apart from the backoff schedule, so that making the
    // queue due never voids a lease another worker or replica holds.
    Migration {
        version: 2,
        sqlite: &[
            "ALTER TABLE csrs ADD COLUMN lease_owner TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE csrs ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0",
        ],
        postgres: &[
            "ALTER TABLE csrs ADD COLUMN lease_owner TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE csrs ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0",
        ],
    },
    // The cleaner reads only candidates, by indexed ranges, instead of
    // every row: per state by creation time, and issued requests by their
    // certificate's expiry (`expires`: notAfter in unix seconds; 0 = no
    // readable certificate; -1 = not computed yet, rows written before
    // this version). A signer-name list reads its page straight from an
    // index in name order instead of filtering the name-ordered table.
    Migration {
        version: 3,
        sqlite: &[
            "ALTER TABLE csrs ADD COLUMN expires BIGINT NOT NULL DEFAULT -1",
            "CREATE INDEX csrs_state_created ON csrs (state, created, name)",
            "CREATE INDEX csrs_state_expires ON csrs (state, expires, name)",
            "CREATE INDEX csrs_signer_name ON csrs (signer_name, name)",
            "DROP INDEX csrs_signer",
        ],
        postgres: &[
            "ALTER TABLE csrs ADD COLUMN expires BIGINT NOT NULL DEFAULT -1",
            "CREATE INDEX csrs_state_created ON csrs (state, created, name)",
            "CREATE INDEX csrs_state_expires ON csrs (state, expires, name)",
            "CREATE INDEX csrs_signer_name ON csrs (signer_name, name)",
            "DROP INDEX csrs_signer",
        ],
    },
    // Objects live only in `csr_events` (see the module header): the
    // current object of every row whose event was pruned is put back as
    // that version's event, then the row's copy is dropped. SQLite also
    // rebuilds `csr_events` keyed by its rowid (`INTEGER PRIMARY KEY`), so
    // reading an object by version is one B-tree lookup, not two.
    Migration {
        version: 4,
        sqlite: &[
            "CREATE TABLE csr_events_v4 (resource_version INTEGER PRIMARY KEY, event_type TEXT NOT NULL, name TEXT NOT NULL, created BIGINT NOT NULL, object BLOB NOT NULL)",
            "INSERT INTO csr_events_v4 (resource_version, event_type, name, created, object) \
             SELECT resource_version, event_type, name, created, object FROM csr_events",
            "INSERT INTO csr_events_v4 (resource_version, event_type, name, created, object) \
             SELECT resource_version, 'MODIFIED', name, created, object FROM csrs \
             WHERE resource_version NOT IN (SELECT resource_version FROM csr_events_v4)",
            "DROP TABLE csr_events",
            "ALTER TABLE csr_events_v4 RENAME TO csr_events",
            "ALTER TABLE csrs DROP COLUMN object",
        ],
        postgres: &[
            "INSERT INTO csr_events (resource_version, event_type, name, created, object) \
             SELECT c.resource_version, 'MODIFIED', c.name, c.created, c.object FROM csrs c \
             WHERE NOT EXISTS (SELECT 1 FROM csr_events e WHERE e.resource_version = c.resource_version)",
            "ALTER TABLE csrs DROP COLUMN object",
        ],
    },
];

/// The encoded object of a `csrs` row, as an SQL expression over the row:
/// its current version's event (see the module header). NULL only if that
/// event is missing, which [`row_object`] reports as corruption.
macro_rules! object_of_row {
    () => {
        "(SELECT csr_events.object FROM csr_events \
         WHERE csr_events.resource_version = csrs.resource_version)"
    };
}
use object_of_row;

/// Deletes events older than `?1`/`$1` except those a row still reads its
/// object from (both backends; the placeholder is the argument).
macro_rules! prune_events {
    ($p:literal) => {
        concat!(
            "DELETE FROM csr_events WHERE created < ",
            $p,
            " AND NOT EXISTS (SELECT 1 FROM csrs WHERE csrs.name = csr_events.name \
             AND csrs.resource_version = csr_events.resource_version)"
        )
    };
}
use prune_events;

/// One row's object by name, for rusqlite (SQLite's writer and readers).
const SQLITE_OBJECT_BY_NAME: &str =
    concat!("SELECT ", object_of_row!(), " FROM csrs WHERE name = ?1");

/// One row's name and object by name, for sqlx ([`row_object`]).
const NAME_AND_OBJECT_BY_NAME: &str = concat!(
    "SELECT name, ",
    object_of_row!(),
    " AS object FROM csrs WHERE name = $1"
);

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn decode(name: &str, bytes: &[u8]) -> Result<CertificateSigningRequest, StoreError> {
    CertificateSigningRequest::decode(bytes).map_err(|e| StoreError::Corrupt {
        name: name.to_string(),
        message: e.to_string(),
    })
}

fn row_object(row: &AnyRow) -> Result<CertificateSigningRequest, StoreError> {
    let name: String = row.try_get("name")?;
    let bytes: Option<Vec<u8>> = row.try_get("object")?;
    decode_stored(&name, bytes)
}

/// Decodes a row's object read through [`object_of_row!`]; a missing
/// current event is corruption, named.
fn decode_stored(
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

fn name_of(csr: &CertificateSigningRequest) -> &str {
    csr.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
}

fn set_rv(csr: &mut CertificateSigningRequest, rv: i64) {
    csr.metadata
        .get_or_insert_with(Default::default)
        .resource_version = rv.to_string();
}

fn writer_gone() -> StoreError {
    StoreError::NotStored("the store's writer stopped or failed before answering".into())
}

// === the writer's operations ===

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What an update function did with the object.
enum Applied {
    Changed,
    Unchanged,
    Refused,
    Panicked,
}

/// An update function with its caller's typed answer channel, so the writer
/// can run functions of any refusal type.
trait UpdateFn: Send {
    fn apply(&mut self, obj: &mut CertificateSigningRequest) -> Applied;
    fn answer(self: Box<Self>, r: Result<CertificateSigningRequest, StoreError>);
}

struct TypedUpdate<F, E> {
    f: Option<F>,
    refused: Option<E>,
    reply: oneshot::Sender<Result<CertificateSigningRequest, UpdateError<E>>>,
}

impl<F, E> UpdateFn for TypedUpdate<F, E>
where
    F: FnOnce(&mut CertificateSigningRequest) -> Result<bool, E> + Send,
    E: Send,
{
    fn apply(&mut self, obj: &mut CertificateSigningRequest) -> Applied {
        let Some(f) = self.f.take() else {
            return Applied::Unchanged;
        };
        // A panicking update function must not take the writer (and every
        // other caller's write) down with it.
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(obj))) {
            Ok(Ok(true)) => Applied::Changed,
            Ok(Ok(false)) => Applied::Unchanged,
            Ok(Err(e)) => {
                self.refused = Some(e);
                Applied::Refused
            }
            Err(_) => Applied::Panicked,
        }
    }

    fn answer(self: Box<Self>, r: Result<CertificateSigningRequest, StoreError>) {
        let out = match (r, self.refused) {
            (Err(e), _) => Err(UpdateError::Store(e)),
            (Ok(_), Some(e)) => Err(UpdateError::Rejected(e)),
            (Ok(obj), None) => Ok(obj),
        };
        let _ = self.reply.send(out);
    }
}

/// Statements without an object result.
enum Exec {
    /// Release `owner`'s lease and schedule the next attempt.
    RetryAt {
        name: String,
        at: i64,
        owner: Arc<str>,
    },
    /// Make unleased approved requests due at `at`.
    RetryAll {
        now: i64,
        at: i64,
    },
    /// SQLite start-up: make the queue due and void old leases.
    ResumeAll,
    /// Fill in a row's `expires` column where it was not computed yet.
    SetExpires {
        name: String,
        expires: i64,
    },
    Prune {
        cutoff: i64,
    },
}

enum Op {
    Create {
        obj: Box<CertificateSigningRequest>,
        renewal: Vec<u8>,
        guard: CreateGuard,
        reply: Reply<CertificateSigningRequest>,
    },
    Update {
        name: String,
        f: Box<dyn UpdateFn>,
    },
    Delete {
        name: String,
        expected_rv: Option<i64>,
        reply: Reply<Option<CertificateSigningRequest>>,
    },
    Claim {
        now: i64,
        lease_until: i64,
        limit: u32,
        owner: Arc<str>,
        reply: Reply<Vec<ForwardItem>>,
    },
    Exec {
        what: Exec,
        reply: Reply<u64>,
    },
    /// Not a write: hold the writer until released (tests use it to make a
    /// batch of known content).
    Pause {
        started: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    },
}

/// An operation's answer, sent once its transaction's fate is known:
/// `None` = committed (send the operation's own result), `Some(msg)` = not
/// committed (send an error).
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

fn answer<T: Send + 'static>(reply: Reply<T>, r: Result<T, StoreError>) -> Answer {
    Box::new(move |failed| {
        let _ = reply.send(match failed {
            Some(m) => Err(StoreError::NotStored(m.to_string())),
            None => r,
        });
    })
}

impl Op {
    /// The answer of an operation that never ran (its batch failed first).
    fn unrun(self) -> Answer {
        match self {
            Op::Create { reply, .. } => answer(reply, Err(StoreError::NotStored(String::new()))),
            Op::Update { f, .. } => Box::new(move |m| {
                f.answer(Err(StoreError::NotStored(
                    m.unwrap_or_default().to_string(),
                )))
            }),
            Op::Delete { reply, .. } => answer(reply, Err(StoreError::NotStored(String::new()))),
            Op::Claim { reply, .. } => answer(reply, Err(StoreError::NotStored(String::new()))),
            Op::Exec { reply, .. } => answer(reply, Err(StoreError::NotStored(String::new()))),
            Op::Pause { .. } => Box::new(|_| {}),
        }
    }
}

/// PostgreSQL's group-commit loop: one batch per transaction, until every
/// `Store` handle is gone. (SQLite's writer is `sqlite_writer`'s thread.)
async fn writer_loop(pool: AnyPool, counts: Arc<Counts>, mut rx: mpsc::Receiver<Op>) {
    let mut queued: Vec<Op> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
        let mut batch: Vec<Op> = Vec::with_capacity(queued.len());
        for op in queued.drain(..) {
            if let Op::Pause { started, release } = op {
                if !batch.is_empty() {
                    guarded_batch(&pool, &counts, std::mem::take(&mut batch)).await;
                }
                let _ = started.send(());
                // Released when the `WritePause` is dropped.
                let _ = release.await;
            } else {
                batch.push(op);
            }
        }
        if !batch.is_empty() {
            guarded_batch(&pool, &counts, batch).await;
        }
    }
}

/// Runs one batch as a task of its own: should anything in it panic, its
/// callers get an error (their answer channels close unanswered, and no
/// commit happened after the panic) and the writer goes on with the next.
async fn guarded_batch(pool: &AnyPool, counts: &Arc<Counts>, ops: Vec<Op>) {
    let (pool, counts) = (pool.clone(), counts.clone());
    let task = tokio::spawn(async move { write_batch(&pool, &counts, ops).await });
    if let Err(e) = task.await {
        tracing::error!(error = %e, "store: a write batch failed unexpectedly; its writes were answered with errors");
    }
}

/// Runs `ops` in one transaction and answers each of them after the
/// commit (or with an error when the transaction did not commit).
async fn write_batch(pool: &AnyPool, counts: &Counts, ops: Vec<Op>) {
    let n = ops.len();
    let mut answers: Vec<Answer> = Vec::with_capacity(n);
    let mut ops = ops.into_iter();
    let result = run_batch(pool, &mut ops, &mut answers).await;
    settle(counts, ops, answers, result);
}

/// Answers a batch's operations once its transaction's fate is known:
/// each its own result after a commit, every one an error otherwise
/// (`ops`: those the batch did not reach, which fail with it). Both writers
/// use it.
fn settle(
    counts: &Counts,
    ops: std::vec::IntoIter<Op>,
    mut answers: Vec<Answer>,
    result: Result<(), StoreError>,
) {
    answers.extend(ops.map(Op::unrun));
    let n = answers.len();
    let failed = match result {
        Ok(()) => {
            counts.commits.fetch_add(1, Ordering::Relaxed);
            counts.ops.fetch_add(n as u64, Ordering::Relaxed);
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, operations = n, "store: a write transaction failed; none of its writes were stored");
            Some(e.to_string())
        }
    };
    for a in answers {
        a(failed.as_deref());
    }
}

/// A failed statement aborts a PostgreSQL transaction, so every operation
/// runs between its own SAVEPOINT and RELEASE statements.
async fn run_batch(
    pool: &AnyPool,
    ops: &mut std::vec::IntoIter<Op>,
    answers: &mut Vec<Answer>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // Lock the counter row first: other replicas' writers wait here until
    // this commits.
    let first: i64 = sqlx::query_scalar(
        "UPDATE counters SET value = value WHERE name = 'resource_version' RETURNING value",
    )
    .fetch_one(&mut *tx)
    .await?;
    let mut rv = first;
    for op in ops.by_ref() {
        if let Err(e) = sqlx::raw_sql("SAVEPOINT op").execute(&mut *tx).await {
            answers.push(op.unrun());
            return Err(e.into());
        }
        let (a, undo) = run_op(&mut tx, &mut rv, op).await;
        answers.push(a);
        sqlx::raw_sql(if undo {
            "ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op"
        } else {
            "RELEASE SAVEPOINT op"
        })
        .execute(&mut *tx)
        .await?;
    }
    if rv != first {
        sqlx::query("UPDATE counters SET value = $1 WHERE name = 'resource_version'")
            .bind(rv)
            .execute(&mut *tx)
            .await?;
        // Other replicas' watch hubs wake at commit (never on rollback).
        sqlx::raw_sql(concat!("NOTIFY ", change_channel!()))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Runs one operation; returns its answer and whether its savepoint must
/// be rolled back. `rv` is advanced only by operations whose writes stand.
async fn run_op(conn: &mut AnyConnection, rv: &mut i64, op: Op) -> (Answer, bool) {
    let next = *rv + 1;
    match op {
        Op::Create {
            obj,
            renewal,
            guard,
            reply,
        } => {
            let r = create_in(conn, next, *obj, renewal, &guard).await;
            outcome(reply, r, |_| true, rv, next)
        }
        Op::Update { name, mut f } => {
            let r = update_in(conn, next, &name, f.as_mut()).await;
            update_outcome(f, r, rv, next)
        }
        Op::Delete {
            name,
            expected_rv,
            reply,
        } => {
            let r = delete_in(conn, next, &name, expected_rv).await;
            outcome(reply, r, Option::is_some, rv, next)
        }
        Op::Claim {
            now,
            lease_until,
            limit,
            owner,
            reply,
        } => {
            let r = claim_in(conn, &owner, now, lease_until, limit).await;
            outcome(reply, r, |_| false, rv, next)
        }
        Op::Exec { what, reply } => outcome(reply, exec_in(conn, what).await, |_| false, rv, next),
        Op::Pause { .. } => (Box::new(|_| {}), false),
    }
}

/// An operation's answer and whether its savepoint must be rolled back;
/// `rv` advances to `next` when `wrote` says its result was written. Both
/// writers use it (updates: [`update_outcome`]).
fn outcome<T: Send + 'static>(
    reply: Reply<T>,
    r: Result<T, StoreError>,
    wrote: impl FnOnce(&T) -> bool,
    rv: &mut i64,
    next: i64,
) -> (Answer, bool) {
    let undo = match &r {
        Ok(v) => {
            if wrote(v) {
                *rv = next;
            }
            false
        }
        Err(_) => true,
    };
    (answer(reply, r), undo)
}

/// An update's answer and whether its savepoint must be rolled back; `rv`
/// advances to `next` when it wrote. Both writers use it.
fn update_outcome(
    f: Box<dyn UpdateFn>,
    r: Result<(CertificateSigningRequest, bool), StoreError>,
    rv: &mut i64,
    next: i64,
) -> (Answer, bool) {
    match r {
        Ok((obj, wrote)) => {
            if wrote {
                *rv = next;
            }
            let answer: Answer = Box::new(move |failed| match failed {
                Some(m) => f.answer(Err(StoreError::NotStored(m.to_string()))),
                None => f.answer(Ok(obj)),
            });
            (answer, false)
        }
        Err(e) => (
            Box::new(move |m| match m {
                Some(m) => f.answer(Err(StoreError::NotStored(m.to_string()))),
                None => f.answer(Err(e)),
            }),
            true,
        ),
    }
}

/// Runs an update function on the stored object. `Ok(None)`: nothing to
/// write (unchanged, or refused: the answer carries the refusal).
/// `Ok(Some(moved))`: write it, at version `rv`; `moved` says its state
/// changed (a request that has just become approved is due for
/// forwarding now). Both writers use it.
fn apply_update(
    name: &str,
    obj: &mut CertificateSigningRequest,
    f: &mut dyn UpdateFn,
    rv: i64,
) -> Result<Option<bool>, StoreError> {
    let before = state_of(obj);
    match f.apply(obj) {
        Applied::Changed => {}
        Applied::Unchanged | Applied::Refused => return Ok(None),
        Applied::Panicked => {
            return Err(StoreError::NotStored(format!(
                "the update of {name:?} panicked"
            )));
        }
    }
    set_rv(obj, rv);
    Ok(Some(before != state_of(obj)))
}

/// A row write and its `csr_events` row in one statement (a data-modifying
/// WITH), atomic by itself.
macro_rules! with_event {
    ($write:literal, $event:literal) => {
        concat!("WITH w AS (", $write, " RETURNING 1) ", $event)
    };
}

async fn create_in(
    conn: &mut AnyConnection,
    rv: i64,
    mut obj: CertificateSigningRequest,
    renewal: Vec<u8>,
    guard: &CreateGuard,
) -> Result<CertificateSigningRequest, StoreError> {
    let name = name_of(&obj).to_string();
    let spec = obj.spec.clone().unwrap_or_default();
    let state = state_of(&obj);
    // One read for both checks.
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM csrs WHERE name = $1) AS taken, \
         (SELECT COUNT(*) FROM csrs WHERE username = $2 AND state = 'pending') AS pending",
    )
    .bind(&name)
    .bind(&spec.username)
    .fetch_one(&mut *conn)
    .await?;
    let (taken, pending): (i64, i64) = (row.try_get("taken")?, row.try_get("pending")?);
    guard.admit(&name, state, &spec.username, taken, pending)?;
    if let Some((id, max)) = &guard.token {
        let done = sqlx::query(count_token_use!("$"))
            .bind(id)
            .bind(i64::from(*max))
            .execute(&mut *conn)
            .await?;
        token_counted(id, *max, done.rows_affected())?;
    }
    set_rv(&mut obj, rv);
    let meta = obj.metadata.clone().unwrap_or_default();
    let created = meta
        .creation_timestamp
        .map(|t| t.seconds)
        .unwrap_or_else(unix_now);
    sqlx::query(with_event!(
        "INSERT INTO csrs (name, uid, signer_name, username, state, cond, created, resource_version, next_attempt, attempts, renewal, expires) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, $10, $12)",
        "INSERT INTO csr_events (resource_version, event_type, name, created, object) \
         VALUES ($8, 'ADDED', $1, $11, $9)"
    ))
    .bind(&name)
    .bind(&meta.uid)
    .bind(&spec.signer_name)
    .bind(&spec.username)
    .bind(state.as_str())
    .bind(condition_column(&obj))
    .bind(created)
    .bind(rv)
    .bind(obj.encode_to_vec())
    .bind(renewal)
    .bind(unix_now())
    .bind(expiry_column(&obj))
    .execute(&mut *conn)
    .await?;
    Ok(obj)
}

/// Returns the object (changed or not) and whether it was written.
async fn update_in(
    conn: &mut AnyConnection,
    rv: i64,
    name: &str,
    f: &mut dyn UpdateFn,
) -> Result<(CertificateSigningRequest, bool), StoreError> {
    let row = sqlx::query(NAME_AND_OBJECT_BY_NAME)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Err(StoreError::NotFound(name.to_string()));
    };
    let mut obj = row_object(&row)?;
    let Some(reset_attempts) = apply_update(name, &mut obj, f, rv)? else {
        return Ok((obj, false));
    };
    let state = state_of(&obj);
    sqlx::query(with_event!(
        "UPDATE csrs SET state = $1, cond = $2, resource_version = $3, \
         next_attempt = CASE WHEN $5 = 1 THEN 0 ELSE next_attempt END, expires = $8 WHERE name = $6",
        "INSERT INTO csr_events (resource_version, event_type, name, created, object) \
         VALUES ($3, 'MODIFIED', $6, $7, $4)"
    ))
    .bind(state.as_str())
    .bind(condition_column(&obj))
    .bind(rv)
    .bind(obj.encode_to_vec())
    .bind(i64::from(reset_attempts))
    .bind(name)
    .bind(unix_now())
    .bind(expiry_column(&obj))
    .execute(&mut *conn)
    .await?;
    Ok((obj, true))
}

async fn delete_in(
    conn: &mut AnyConnection,
    rv: i64,
    name: &str,
    expected_rv: Option<i64>,
) -> Result<Option<CertificateSigningRequest>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT name, ",
        object_of_row!(),
        " AS object, resource_version FROM csrs WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let current_rv: i64 = row.try_get("resource_version")?;
    if expected_rv.is_some_and(|e| e != current_rv) {
        return Ok(None);
    }
    let mut obj = row_object(&row)?;
    set_rv(&mut obj, rv);
    sqlx::query(with_event!(
        "DELETE FROM csrs WHERE name = $1",
        "INSERT INTO csr_events (resource_version, event_type, name, created, object) \
         VALUES ($2, 'DELETED', $1, $3, $4)"
    ))
    .bind(name)
    .bind(rv)
    .bind(unix_now())
    .bind(obj.encode_to_vec())
    .execute(&mut *conn)
    .await?;
    Ok(Some(obj))
}

/// Claims due, unleased (or expired-lease) approved requests for `owner`.
/// Rows being claimed or written by other transactions are skipped instead of
/// waited for (a blocked conditional UPDATE would re-check its row after
/// the other claim and come back empty-handed although other work is due).
async fn claim_in(
    conn: &mut AnyConnection,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: u32,
) -> Result<Vec<ForwardItem>, StoreError> {
    // PostgreSQL may re-run an IN subquery per outer row, and with SKIP
    // LOCKED each run can pick other rows (more than LIMIT in all): the
    // picked names are materialised once.
    let sql = concat!(
        "WITH picked AS MATERIALIZED (SELECT name FROM csrs WHERE state = 'approved' \
         AND next_attempt <= $3 AND lease_until <= $3 ORDER BY next_attempt, created, name LIMIT $4 \
         FOR UPDATE SKIP LOCKED) \
         UPDATE csrs SET lease_owner = $1, lease_until = $2, attempts = csrs.attempts + 1 \
         FROM picked WHERE csrs.name = picked.name \
         RETURNING csrs.name, ",
        object_of_row!(),
        " AS object, csrs.renewal, csrs.attempts"
    );
    let rows = sqlx::query(sql)
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(limit.max(1)))
        .fetch_all(&mut *conn)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: String = row.try_get("name")?;
        let object = row_object(row)?;
        let renewal: Vec<u8> = row.try_get("renewal")?;
        let attempts: i64 = row.try_get("attempts")?;
        items.push(ForwardItem {
            object,
            renewal: decode_renewal(&name, Some(renewal))?,
            attempts,
        });
    }
    Ok(items)
}

async fn exec_in(conn: &mut AnyConnection, what: Exec) -> Result<u64, StoreError> {
    let r = match what {
        Exec::RetryAt { name, at, owner } => {
            // A lease taken over by someone else meanwhile is left alone.
            sqlx::query(
                "UPDATE csrs SET next_attempt = $1, lease_owner = '', lease_until = 0 \
                 WHERE name = $2 AND state = 'approved' AND lease_owner = $3",
            )
            .bind(at)
            .bind(name)
            .bind(&*owner)
            .execute(&mut *conn)
            .await?
        }
        Exec::RetryAll { now, at } => {
            sqlx::query(
                "UPDATE csrs SET next_attempt = $1 \
                 WHERE state = 'approved' AND lease_until <= $2 AND next_attempt > $1",
            )
            .bind(at)
            .bind(now)
            .execute(&mut *conn)
            .await?
        }
        Exec::ResumeAll => {
            sqlx::query(
                "UPDATE csrs SET next_attempt = 0, lease_owner = '', lease_until = 0 \
                 WHERE state = 'approved'",
            )
            .execute(&mut *conn)
            .await?
        }
        Exec::SetExpires { name, expires } => {
            sqlx::query("UPDATE csrs SET expires = $1 WHERE name = $2 AND expires = -1")
                .bind(expires)
                .bind(name)
                .execute(&mut *conn)
                .await?
        }
        Exec::Prune { cutoff } => {
            sqlx::query(prune_events!("$1"))
                .bind(cutoff)
                .execute(&mut *conn)
                .await?
        }
    };
    Ok(r.rows_affected())
}

/// The earliest time an approved request becomes claimable (both backends).
const NEXT_FORWARD_TIME: &str = "SELECT MIN(CASE WHEN lease_until > next_attempt THEN lease_until ELSE next_attempt END) \
     FROM csrs WHERE state = 'approved'";

/// SQLite's per-connection settings, in order.
const SQLITE_PRAGMAS: [&str; 4] = [
    // WAL + FULL: every commit is fsynced to the WAL before it is
    // acknowledged, so it survives kill -9 and power loss.
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    // A second process's writer queues instead of failing with SQLITE_BUSY.
    "PRAGMA busy_timeout = 30000",
    // Writes of a batch run in savepoints, which make SQLite keep a
    // statement journal of the pages it touches: in memory, not a temp file
    // written per page. It only serves rollbacks inside an open transaction
    // (a crash rolls the whole transaction back through the WAL), so
    // durability is unchanged.
    SQLITE_TEMP_STORE,
];

/// The statement journal's place in normal operation (see
/// [`SQLITE_PRAGMAS`]); migrations switch to a file and back to this.
const SQLITE_TEMP_STORE: &str = "PRAGMA temp_store = MEMORY";

/// Pool options with SQLite's per-connection settings.
fn pool_options(backend: Backend, connections: u32) -> AnyPoolOptions {
    let opts = AnyPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(30));
    if backend != Backend::Sqlite {
        return opts;
    }
    // A connection to a local file does not go stale the way a network
    // connection can: no test query (another round trip to sqlx's worker
    // thread) before every use.
    opts.test_before_acquire(false)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                for pragma in SQLITE_PRAGMAS {
                    sqlx::query(pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
}

impl Store {
    /// Connect, configure durability, run migrations and start the
    /// group-commit writer (needs a Tokio runtime).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        // Readers share a small pool; the writer has one connection of its
        // own, so a batch never waits behind reads for a connection.
        let readers = pool_options(backend, if backend == Backend::Sqlite { 4 } else { 10 });
        let pool = readers.connect(url).await?;
        let mut writer_opts = pool_options(backend, 1);
        if backend == Backend::Sqlite {
            // (On SQLite this connection only runs the migrations; the
            // writer thread has its own and the same guard.)
            // A write that fails with SQLITE_FULL (disk full) can leave the
            // connection inside a transaction that sqlx no longer tracks;
            // it would keep the write lock and fail every later batch
            // ("database is locked") even after space returns. End any such
            // transaction before the connection is used again. (Readers
            // never write, so only the writer's connection needs this.)
            writer_opts = writer_opts.after_release(|conn, _meta| {
                Box::pin(async move {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    Ok(true)
                })
            });
        }
        let write_pool = writer_opts.connect(url).await?;
        let (writer, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        let readers = match backend {
            Backend::Sqlite => Some(Arc::new(sqlite_reader::Readers::new(
                &sqlite_writer::path_of(url)?,
            ))),
            Backend::Postgres => None,
        };
        let store = Self {
            pool,
            write_pool: write_pool.clone(),
            backend,
            url: url.into(),
            owner: owner.into(),
            writer,
            counts: counts.clone(),
            readers,
        };
        store.migrate().await?;
        match backend {
            Backend::Sqlite => sqlite_writer::spawn(&sqlite_writer::path_of(url)?, counts, rx)?,
            Backend::Postgres => {
                tokio::spawn(writer_loop(write_pool, counts, rx));
            }
        }
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.write_pool.acquire().await?;
        let sqlite = self.backend == Backend::Sqlite;
        if sqlite {
            // A migration that rewrites a table (4 rewrites `csrs` and
            // `csr_events`) keeps a statement journal of every page it
            // changes; with the connection's in-memory temp store that was
            // the whole table in RAM (1.3 GiB at a million requests, and
            // kept by the allocator afterwards). On a temp file the
            // approver stays at ~15 MiB while migrating.
            sqlx::query("PRAGMA temp_store = FILE")
                .execute(&mut *conn)
                .await?;
        }
        let applied = self.migrate_on(&mut conn).await;
        if sqlite {
            let restored = sqlx::query(SQLITE_TEMP_STORE).execute(&mut *conn).await;
            // A failed migration is the error to report, not the restore.
            let applied = applied?;
            restored?;
            // A rewrite leaves a WAL the size of the rewritten tables:
            // copy it into the database and give the space back.
            if applied {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut *conn)
                    .await?;
            }
            return Ok(());
        }
        applied.map(|_| ())
    }

    /// Applies every migration not yet applied, in one transaction on
    /// `conn`; returns whether any was.
    async fn migrate_on(&self, conn: &mut AnyConnection) -> Result<bool, StoreError> {
        let mut tx = sqlx::Connection::begin(conn).await?;
        if self.backend == Backend::Postgres {
            // Several replicas may start at once: one migrates, the others
            // wait and then find the work done.
            sqlx::query("SELECT pg_advisory_xact_lock(7426720001)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(&mut *tx)
            .await?;
        let done: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
            .fetch_all(&mut *tx)
            .await?;
        // Every migration not yet applied, in order (not only those above
        // the highest applied: versions may land out of order).
        let mut applied = false;
        for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
            applied = true;
            let stmts = match self.backend {
                Backend::Sqlite => m.sqlite,
                Backend::Postgres => m.postgres,
            };
            for s in stmts {
                sqlx::query(*s).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                .bind(m.version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Queue a write and wait for its committed answer.
    async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(make(tx))
            .await
            .map_err(|_| writer_gone())?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Store a new object (its name, uid, spec and status already final).
    /// Applies the pending-per-requestor and bootstrap-token limits in the
    /// same transaction. Returns the object with its resource version.
    pub async fn create(
        &self,
        obj: CertificateSigningRequest,
        renewal: Option<&SignedStatement>,
        guard: &CreateGuard,
    ) -> Result<CertificateSigningRequest, StoreError> {
        let renewal = renewal.map(|r| r.encode_to_vec()).unwrap_or_default();
        let guard = guard.clone();
        self.submit(|reply| Op::Create {
            obj: Box::new(obj),
            renewal,
            guard,
            reply,
        })
        .await
    }

    /// Read one object.
    pub async fn get(&self, name: &str) -> Result<Option<CertificateSigningRequest>, StoreError> {
        if let Some(r) = &self.readers {
            return r.get(name);
        }
        let row = sqlx::query(NAME_AND_OBJECT_BY_NAME)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_object).transpose()
    }

    /// The renewal statement stored with a request, if any.
    pub async fn renewal(&self, name: &str) -> Result<Option<SignedStatement>, StoreError> {
        let bytes: Option<Vec<u8>> = sqlx::query_scalar("SELECT renewal FROM csrs WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        decode_renewal(name, bytes)
    }

    /// One page of objects ordered by name, strictly after `after`.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CertificateSigningRequest>, StoreError> {
        let mut sql = String::from(concat!(
            "SELECT name, ",
            object_of_row!(),
            " AS object FROM csrs WHERE 1 = 1"
        ));
        let mut binds: Vec<String> = Vec::new();
        let mut add = |clause: &str, v: String, binds: &mut Vec<String>| {
            binds.push(v);
            sql.push_str(&clause.replace("$?", &format!("${}", binds.len())));
        };
        if let Some(s) = &filter.signer_name {
            add(" AND signer_name = $?", s.clone(), &mut binds);
        }
        if let Some(u) = &filter.username {
            add(" AND username = $?", u.clone(), &mut binds);
        }
        if let Some(c) = &filter.condition {
            if c.contains(',') {
                add(" AND cond = $?", c.clone(), &mut binds);
            } else {
                add(
                    " AND (',' || cond || ',') LIKE $?",
                    format!("%,{c},%"),
                    &mut binds,
                );
            }
        }
        if let Some(a) = after {
            add(" AND name > $?", a.to_string(), &mut binds);
        }
        sql.push_str(&format!(" ORDER BY name LIMIT {}", limit.max(1)));
        // Built only from fixed clauses and numbered placeholders; every
        // value is bound, never interpolated.
        if let Some(r) = &self.readers {
            // SQLite: the page is read on a reader connection in Tokio's
            // blocking pool (a list can scan far), handed over once. Through
            // sqlx each row would cross from its worker thread on its own
            // and be converted twice (`AnyRow`, then the blob): 17 % of the
            // approver's CPU during 500-object lists.
            return r.list(sql, binds).await;
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(row_object).collect()
    }

    /// One page of the objects in `state` whose `by` column lies in
    /// `from..to`, with that column's value, ordered by (column, name),
    /// strictly after the `after` key (the last page's last). An indexed
    /// range read: the cleaner's candidates.
    pub async fn page_by_state(
        &self,
        state: State,
        by: PageBy,
        range: std::ops::Range<i64>,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<(i64, CertificateSigningRequest)>, StoreError> {
        let (after_key, after_name) = after.unwrap_or((i64::MIN, ""));
        let column = match by {
            PageBy::Created => "created",
            PageBy::Expires => "expires",
        };
        // Only a fixed column name and an integer are formatted in.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT name, {column} AS k, {object} AS object FROM csrs WHERE state = $1 \
             AND {column} >= $2 AND {column} < $3 \
             AND ({column}, name) > ($4, $5) ORDER BY {column}, name LIMIT {}",
            limit.max(1),
            object = object_of_row!(),
        )))
        .bind(state.as_str())
        .bind(range.start)
        .bind(range.end)
        .bind(after_key)
        .bind(after_name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("k")?, row_object(r)?)))
            .collect()
    }

    /// Fill in the `expires` column of a row stored before it existed
    /// (only where it is still "not computed"; the object is unchanged, so
    /// no resource version or event).
    pub async fn set_expiry(&self, name: &str, expires: i64) -> Result<(), StoreError> {
        let name = name.to_string();
        self.submit(|reply| Op::Exec {
            what: Exec::SetExpires { name, expires },
            reply,
        })
        .await
        .map(|_| ())
    }

    /// Read-modify-write one object. `f` returns `Ok(true)` to store the
    /// change, `Ok(false)` for no change (the current object is returned),
    /// or an error to refuse. `f` runs on the store's writer, inside the
    /// write transaction, so it must be quick and must not block.
    pub async fn update<E, F>(
        &self,
        name: &str,
        f: F,
    ) -> Result<CertificateSigningRequest, UpdateError<E>>
    where
        F: FnOnce(&mut CertificateSigningRequest) -> Result<bool, E> + Send + 'static,
        E: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op = Op::Update {
            name: name.to_string(),
            f: Box::new(TypedUpdate {
                f: Some(f),
                refused: None,
                reply: tx,
            }),
        };
        self.writer.send(op).await.map_err(|_| writer_gone())?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Delete an object; with `expected_rv`, only if it has not changed
    /// since (the cleaner's guard). Returns the deleted object.
    pub async fn delete(
        &self,
        name: &str,
        expected_rv: Option<i64>,
    ) -> Result<Option<CertificateSigningRequest>, StoreError> {
        let name = name.to_string();
        self.submit(|reply| Op::Delete {
            name,
            expected_rv,
            reply,
        })
        .await
    }

    /// Claim the next approved request due for forwarding, leasing it until
    /// `lease_until` so other workers (or replicas) skip it meanwhile.
    pub async fn claim_forward(
        &self,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<ForwardItem>, StoreError> {
        Ok(self
            .claim_forward_batch(now, lease_until, 1)
            .await?
            .into_iter()
            .next())
    }

    /// Claim up to `limit` approved requests due for forwarding, in one
    /// write, leased until `lease_until`.
    pub async fn claim_forward_batch(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<ForwardItem>, StoreError> {
        let owner = self.owner.clone();
        self.submit(|reply| Op::Claim {
            now,
            lease_until,
            limit,
            owner,
            reply,
        })
        .await
    }

    /// Release this handle's lease on a still-approved request and
    /// schedule its next attempt at `at`. A lease taken over by someone
    /// else meanwhile is left alone.
    pub async fn retry_forward_at(&self, name: &str, at: i64) -> Result<(), StoreError> {
        let (name, owner) = (name.to_string(), self.owner.clone());
        self.submit(|reply| Op::Exec {
            what: Exec::RetryAt { name, at, owner },
            reply,
        })
        .await
        .map(|_| ())
    }

    /// Make every approved request that nobody holds a live lease on (at
    /// wall-clock `now`) due at `at`: the signer is back, stop waiting out
    /// backoffs. Leased rows are untouched; their holders schedule them.
    pub async fn retry_forward_at_all(&self, now: i64, at: i64) -> Result<(), StoreError> {
        self.submit(|reply| Op::Exec {
            what: Exec::RetryAll { now, at },
            reply,
        })
        .await
        .map(|_| ())
    }

    /// At forwarder start-up: make the queue due now. On SQLite (one
    /// process by design) leases left by a previous run of this process are
    /// void too, so its in-flight work resumes at once. On PostgreSQL the
    /// leases may belong to live replicas: they are left to expire (the
    /// lease timeout is the takeover time for a dead replica's claims).
    pub async fn resume_forwarding(&self, now: i64) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => self
                .submit(|reply| Op::Exec {
                    what: Exec::ResumeAll,
                    reply,
                })
                .await
                .map(|_| ()),
            Backend::Postgres => self.retry_forward_at_all(now, 0).await,
        }
    }

    /// The earliest time an approved request becomes claimable (its
    /// backoff over and its lease, if any, expired); `None` when nothing is
    /// approved.
    pub async fn next_forward_time(&self) -> Result<Option<i64>, StoreError> {
        if let Some(r) = &self.readers {
            return r.next_forward_time();
        }
        let t: Option<i64> = sqlx::query_scalar(NEXT_FORWARD_TIME)
            .fetch_one(&self.pool)
            .await?;
        Ok(t)
    }

    /// A listener for changes committed by any process sharing this store,
    /// or `None` on SQLite (one process; local writes wake the hub).
    /// Listening starts before this returns, so a change committed after
    /// it is never missed.
    pub async fn change_listener(&self) -> Result<Option<ChangeListener>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut inner = sqlx::postgres::PgListener::connect(&self.url).await?;
        inner.listen(CHANGE_CHANNEL).await?;
        Ok(Some(ChangeListener { inner, lost: false }))
    }

    /// Events with a resource version greater than `after`, oldest first.
    pub async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        if let Some(r) = &self.readers {
            return r.events_after(after, limit);
        }
        // Only an integer is formatted in.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT resource_version, event_type, name, object FROM csr_events WHERE resource_version > $1 ORDER BY resource_version LIMIT {}",
            limit.max(1)
        )))
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    resource_version: r.try_get("resource_version")?,
                    event_type: r.try_get("event_type")?,
                    object: row_object(r)?,
                })
            })
            .collect()
    }

    /// The newest resource version handed out (0 on an empty store).
    pub async fn latest_resource_version(&self) -> Result<i64, StoreError> {
        let v: i64 =
            sqlx::query_scalar("SELECT value FROM counters WHERE name = 'resource_version'")
                .fetch_one(&self.pool)
                .await?;
        Ok(v)
    }

    /// Drop change events older than `cutoff` (unix seconds).
    pub async fn prune_events(&self, cutoff: i64) -> Result<u64, StoreError> {
        self.submit(|reply| Op::Exec {
            what: Exec::Prune { cutoff },
            reply,
        })
        .await
    }

    /// Pending requests of one requestor.
    pub async fn count_pending(&self, username: &str) -> Result<i64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM csrs WHERE username = $1 AND state = 'pending'",
        )
        .bind(username)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// How many transactions the writer has committed and how many write
    /// operations they carried (operations per commit = the batching).
    pub fn writer_stats(&self) -> WriterStats {
        WriterStats {
            commits: self.counts.commits.load(Ordering::Relaxed),
            ops: self.counts.ops.load(Ordering::Relaxed),
        }
    }

    /// Write operations waiting for the writer.
    pub fn queued_writes(&self) -> usize {
        self.writer.max_capacity() - self.writer.capacity()
    }

    /// Hold the writer after its current batch until the returned guard is
    /// dropped; writes queued meanwhile then go in one transaction (up to
    /// [`MAX_BATCH`]). For tests of the batching; reads are not affected.
    pub async fn pause_writes(&self) -> Result<WritePause, StoreError> {
        let (started, started_rx) = oneshot::channel();
        let (release_tx, release) = oneshot::channel();
        self.writer
            .send(Op::Pause { started, release })
            .await
            .map_err(|_| writer_gone())?;
        started_rx.await.map_err(|_| writer_gone())?;
        Ok(WritePause {
            _release: release_tx,
        })
    }

    /// Whether the database answers a trivial query within `limit` (the
    /// health check's probe; a replica that cannot reach the shared store
    /// must stop attracting traffic).
    pub async fn ping(&self, limit: Duration) -> Result<(), StoreError> {
        match tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&self.pool)).await {
            Ok(r) => r.map(|_| ()).map_err(StoreError::from),
            Err(_) => Err(StoreError::Database(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Close the pools (tests and shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
        self.write_pool.close().await;
    }
}

fn decode_renewal(
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

//! The durable store: CSR objects, their change events, bootstrap token use
//! counts, on SQLite (default) or PostgreSQL, one driver per backend:
//! rusqlite for SQLite (`sqlite`: its writer thread, reads and migrations),
//! sqlx's postgres driver for PostgreSQL (`postgres`).
//!
//! Layout: this module is the API ([`Store`]) and re-exports the types
//! (`types`); `schema` holds the migrations and the SQL both backends
//! share; `batch` the group-commit operations and their answers; `sqlite`
//! and `postgres` one backend each (`pg_bulk`: PostgreSQL's multi-row
//! writes; `pg_certs`: its inventory). Writes go through the writer queue;
//! reads go straight to the backend.
//!
//! A request is a row of indexed columns in `csrs` (name, uid, signer
//! name, username, state, CONDITION column, created, resource_version,
//! certificate expiry, forwarding schedule and lease); its encoded object
//! is stored once per version, in the `csr_events` row of that version,
//! and read through the row's `resource_version` (`schema::object_of_row!`).
//! Keeping the 1-3 KiB object out of the row keeps the rows small and
//! densely packed, so a state change rewrites a small row instead of a
//! page-sized one and writes the object once instead of twice
//! (SQLite WAL bytes per issued certificate -27 %: docs/BENCHMARKS.md).
//! Pruning old events keeps every event a row still points at.
//! SQLite runs in WAL mode with `synchronous = FULL`, so an acknowledged
//! write survives kill -9 and power loss.
//!
//! **Group commit.** Every write (create, update, delete, forwarding claims
//! and reschedules, event pruning) is queued to one writer per store: on
//! SQLite a thread with its own connection (`sqlite`), on PostgreSQL a task
//! with a connection of its own (`postgres`).
//! The writer takes everything queued (up to [`MAX_BATCH`] operations), runs
//! it in ONE transaction, each operation inside its own SAVEPOINT (so one
//! operation's refusal or failure rolls back only that operation; on SQLite
//! an update, which writes only after everything that can refuse it, runs
//! without one, and a failure of its writes fails the batch; on PostgreSQL
//! a run of consecutive creates and updates is decided in memory and
//! written with a few multi-row statements, `pg_bulk`, so a round trip is
//! paid per batch, not per operation), commits
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

use std::sync::Arc;
use std::time::Duration;

use certsign_proto::v1::{CertificateSigningRequest, SignedStatement};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use crate::decision::State;
use crate::issued::IssuedRecord;
use batch::{Counts, Exec, Op, QUEUE, Reply, TypedUpdate, writer_gone};
use certs::CertWrite;

mod batch;
mod certs;
mod pg_bulk;
mod pg_certs;
mod pg_snapshot;
mod postgres;
mod schema;
mod sqlite;
mod types;

pub use batch::{MAX_BATCH, WritePause};
pub use certs::{
    CertFilter, CertificateRecord, RevocationState, StoredCrl, StoredRevocation, Undelivered,
};
pub use postgres::ChangeListener;
pub use types::{
    CreateGuard, Event, ForwardItem, Keep, ListFilter, ListPage, PageBy, StoreError, UpdateError,
    WriterStats,
};

/// The backend of a store handle: where its reads go.
#[derive(Debug, Clone)]
enum Backend {
    Sqlite(Arc<sqlite::Readers>),
    Postgres(postgres::Postgres),
}

/// The store handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// Who holds the forwarding leases this handle takes: unique per
    /// [`Store::open`], so two processes (or two handles in a test) never
    /// mistake each other's leases for their own.
    owner: Arc<str>,
    writer: mpsc::Sender<Op>,
    counts: Arc<Counts>,
    /// Seconds from queueing a write to its committed answer (the metrics
    /// register it).
    write_seconds: Histogram,
}

/// `certsign-approver backup`: a consistent copy of the SQLite store at
/// `url` in the new file `out` (the store may be serving); returns how many
/// requests it holds. A PostgreSQL store is backed up with `pg_dump`
/// ([`StoreError::BackupWithPgDump`]). Blocking.
pub fn backup(url: &str, out: &std::path::Path) -> Result<u64, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(StoreError::BackupWithPgDump);
    }
    sqlite::vacuum_into(url, out)
}

impl Store {
    /// Connect, configure durability, run migrations and start the
    /// group-commit writer (needs a Tokio runtime).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let (writer, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let backend = if url.starts_with("sqlite:") {
            let (url, counts) = (url.to_string(), counts.clone());
            // Opening and migrating block (a migration may rewrite tables).
            let readers = tokio::task::spawn_blocking(move || sqlite::open(&url, counts, rx))
                .await
                .map_err(|e| StoreError::NotStored(format!("the store did not open: {e}")))??;
            Backend::Sqlite(readers)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(postgres::Postgres::open(url, counts.clone(), rx).await?)
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        Ok(Self {
            backend,
            owner: owner.into(),
            writer,
            counts,
            write_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
        })
    }

    /// The histogram of write latencies (queue to committed answer).
    pub fn write_latency(&self) -> Histogram {
        self.write_seconds.clone()
    }

    /// Queue a write and wait for its committed answer.
    async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(make(tx))
            .await
            .map_err(|_| writer_gone())?;
        let answer = rx.await.map_err(|_| writer_gone())?;
        self.write_seconds.observe(started.elapsed().as_secs_f64());
        answer
    }

    /// Queue a statement without an object result.
    async fn exec(&self, what: Exec) -> Result<u64, StoreError> {
        self.submit(|reply| Op::Exec { what, reply }).await
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
        match &self.backend {
            Backend::Sqlite(r) => r.get(name),
            Backend::Postgres(pg) => pg.get(name).await,
        }
    }

    /// The renewal statement stored with a request, if any.
    pub async fn renewal(&self, name: &str) -> Result<Option<SignedStatement>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.renewal(name),
            Backend::Postgres(pg) => pg.renewal(name).await,
        }
    }

    /// One page of objects ordered by name, strictly after `after`.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CertificateSigningRequest>, StoreError> {
        let (sql, binds) = schema::list_query(filter, after, limit);
        match &self.backend {
            // SQLite: the page is read on a reader connection in Tokio's
            // blocking pool (a list can scan far), handed over once.
            Backend::Sqlite(r) => r.list(sql, binds).await,
            Backend::Postgres(pg) => pg.list(sql, binds).await,
        }
    }

    /// Up to `limit` objects that `filter` selects and `keep` keeps,
    /// ordered by name, strictly after `after`, read in one snapshot
    /// together with the store's resource version at that snapshot.
    pub async fn list_snapshot(
        &self,
        filter: &ListFilter,
        after: Option<&str>,
        limit: u32,
        keep: Keep,
    ) -> Result<ListPage, StoreError> {
        let (filter, after) = (filter.clone(), after.map(str::to_string));
        match &self.backend {
            Backend::Sqlite(r) => r.list_snapshot(filter, after, limit, keep).await,
            Backend::Postgres(pg) => {
                pg_snapshot::list(pg.pool(), &filter, after, limit, &keep).await
            }
        }
    }

    /// Every event after `after` is still stored when `after` is at least
    /// this version: pruning recorded the newest version it removed.
    pub async fn pruned_through(&self) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.pruned_through(),
            Backend::Postgres(pg) => pg_snapshot::pruned_through(pg.pool()).await,
        }
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
        let (key, name) = after.unwrap_or((i64::MIN, ""));
        let after = (key, name.to_string());
        match &self.backend {
            Backend::Sqlite(r) => r.page_by_state(state, by, range, after, limit).await,
            Backend::Postgres(pg) => pg.page_by_state(state, by, range, after, limit).await,
        }
    }

    /// Fill in the `expires` column of a row stored before it existed
    /// (only where it is still "not computed"; the object is unchanged, so
    /// no resource version or event).
    pub async fn set_expiry(&self, name: &str, expires: i64) -> Result<(), StoreError> {
        let name = name.to_string();
        self.exec(Exec::SetExpires { name, expires })
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
        let started = std::time::Instant::now();
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
        let answer = rx.await.map_err(|_| writer_gone())?;
        self.write_seconds.observe(started.elapsed().as_secs_f64());
        answer
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
        self.exec(Exec::RetryAt { name, at, owner })
            .await
            .map(|_| ())
    }

    /// Make every approved request that nobody holds a live lease on (at
    /// wall-clock `now`) due at `at`: the signer is back, stop waiting out
    /// backoffs. Leased rows are untouched; their holders schedule them.
    pub async fn retry_forward_at_all(&self, now: i64, at: i64) -> Result<(), StoreError> {
        self.exec(Exec::RetryAll { now, at }).await.map(|_| ())
    }

    /// At forwarder start-up: make the queue due now. On SQLite (one
    /// process by design) leases left by a previous run of this process are
    /// void too, so its in-flight work resumes at once. On PostgreSQL the
    /// leases may belong to live replicas: they are left to expire (the
    /// lease timeout is the takeover time for a dead replica's claims).
    pub async fn resume_forwarding(&self, now: i64) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite(_) => self.exec(Exec::ResumeAll).await.map(|_| ()),
            Backend::Postgres(_) => self.retry_forward_at_all(now, 0).await,
        }
    }

    /// The earliest time an approved request becomes claimable (its
    /// backoff over and its lease, if any, expired); `None` when nothing is
    /// approved.
    pub async fn next_forward_time(&self) -> Result<Option<i64>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.next_forward_time(),
            Backend::Postgres(pg) => pg.next_forward_time().await,
        }
    }

    /// A listener for changes committed by any process sharing this store,
    /// or `None` on SQLite (one process; local writes wake the hub).
    /// Listening starts before this returns, so a change committed after
    /// it is never missed.
    pub async fn change_listener(&self) -> Result<Option<ChangeListener>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(pg) => pg.change_listener().await.map(Some),
        }
    }

    /// Events with a resource version greater than `after`, oldest first.
    pub async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.events_after(after, limit),
            Backend::Postgres(pg) => pg.events_after(after, limit).await,
        }
    }

    /// The newest resource version handed out (0 on an empty store).
    pub async fn latest_resource_version(&self) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.latest_resource_version(),
            Backend::Postgres(pg) => pg.latest_resource_version().await,
        }
    }

    /// Drop change events older than `cutoff` (unix seconds).
    pub async fn prune_events(&self, cutoff: i64) -> Result<u64, StoreError> {
        self.exec(Exec::Prune { cutoff }).await
    }

    /// Pending requests of one requestor.
    pub async fn count_pending(&self, username: &str) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.count_pending(username),
            Backend::Postgres(pg) => pg.count_pending(username).await,
        }
    }

    /// How many requests are stored per (state, signer name as stored).
    pub async fn count_by_state(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.count_by_state().await,
            Backend::Postgres(pg) => Ok(sqlx::query_as(schema::COUNT_BY_STATE)
                .fetch_all(pg.pool())
                .await?),
        }
    }

    /// How many transactions the writer has committed and how many write
    /// operations they carried (operations per commit = the batching).
    pub fn writer_stats(&self) -> WriterStats {
        self.counts.stats()
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
        match &self.backend {
            Backend::Sqlite(r) => r.ping(limit).await,
            Backend::Postgres(pg) => pg.ping(limit).await,
        }
    }

    /// Record an issued certificate in the inventory (kept if its serial
    /// is there already). Issuance records it by itself (in the update that
    /// stores the certificate); this is for certificates issued before the
    /// inventory existed.
    pub async fn record_issued(&self, record: IssuedRecord) -> Result<bool, StoreError> {
        let n = self
            .exec(Exec::Certs(CertWrite::Issued(Box::new(record))))
            .await?;
        Ok(n > 0)
    }

    /// Record every issued request still stored that the inventory lacks,
    /// once per store (the first start on the inventory's schema). Returns
    /// how many.
    pub async fn backfill_inventory(&self) -> Result<u64, StoreError> {
        let pending = match &self.backend {
            Backend::Sqlite(r) => r.backfill_pending()?,
            Backend::Postgres(pg) => pg_certs::backfill_pending(pg.pool()).await?,
        };
        if !pending {
            return Ok(0);
        }
        let added = self.record_stored_certificates().await?;
        self.exec(Exec::Certs(CertWrite::BackfillDone)).await?;
        Ok(added)
    }

    async fn record_stored_certificates(&self) -> Result<u64, StoreError> {
        let mut added = 0;
        let mut after: Option<(i64, String)> = None;
        loop {
            let page = self
                .page_by_state(
                    State::Issued,
                    PageBy::Created,
                    i64::MIN..i64::MAX,
                    after.as_ref().map(|(k, n)| (*k, n.as_str())),
                    500,
                )
                .await?;
            let Some((key, last)) = page.last() else {
                return Ok(added);
            };
            after = Some((*key, types::name_of(last).to_string()));
            for (_, csr) in &page {
                if let Some(record) = IssuedRecord::of(csr)
                    && self.certificate(&record.serial).await?.is_none()
                    && self.record_issued(record).await?
                {
                    added += 1;
                }
            }
        }
    }

    /// One inventory row by serial (lowercase hex).
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.certificate(serial),
            Backend::Postgres(pg) => pg_certs::certificate(pg.pool(), serial).await,
        }
    }

    /// One page of the inventory ordered by serial, strictly after `after`.
    pub async fn list_certificates(
        &self,
        filter: &CertFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => {
                r.list_certificates(filter.clone(), after.map(str::to_string), limit)
                    .await
            }
            Backend::Postgres(pg) => pg_certs::list(pg.pool(), filter, after, limit).await,
        }
    }

    /// Store a revocation of `serial` (an encoded SignedStatement) unless
    /// one is held already (a refused one is replaced). Returns whether it
    /// was stored now.
    pub async fn store_revocation(
        &self,
        serial: &str,
        statement: Vec<u8>,
        reason: i32,
        at: i64,
    ) -> Result<bool, StoreError> {
        let w = CertWrite::Revoke {
            serial: serial.to_string(),
            statement,
            reason,
            at,
        };
        Ok(self.exec(Exec::Certs(w)).await? > 0)
    }

    /// `endpoint` journaled the revocation of `serial`, dated `at`.
    pub async fn revocation_delivered(
        &self,
        serial: &str,
        endpoint: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let w = CertWrite::Delivered {
            serial: serial.to_string(),
            endpoint: endpoint.to_string(),
            at,
        };
        self.exec(Exec::Certs(w)).await.map(|_| ())
    }

    /// A signer refused the pending revocation of `serial`: it is no longer
    /// held (nor retried).
    pub async fn revocation_refused(
        &self,
        serial: &str,
        statement: &[u8],
        message: &str,
    ) -> Result<(), StoreError> {
        let w = CertWrite::Refused {
            serial: serial.to_string(),
            statement: statement.to_vec(),
            message: message.to_string(),
        };
        self.exec(Exec::Certs(w)).await.map(|_| ())
    }

    /// Up to `limit` held revocations `endpoint` has not journaled.
    pub async fn undelivered(
        &self,
        endpoint: &str,
        limit: u32,
    ) -> Result<Vec<Undelivered>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.undelivered(endpoint, limit),
            Backend::Postgres(pg) => pg_certs::undelivered(pg.pool(), endpoint, limit).await,
        }
    }

    /// Serials of the held revocations of certificates unexpired at `now`:
    /// what every published CRL must list.
    pub async fn held_unexpired(&self, now: i64) -> Result<Vec<String>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.held_unexpired(now),
            Backend::Postgres(pg) => pg_certs::held_unexpired(pg.pool(), now).await,
        }
    }

    /// The endpoints that journaled the revocation of `serial`.
    pub async fn delivered_to(&self, serial: &str) -> Result<Vec<String>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.delivered_to(serial),
            Backend::Postgres(pg) => pg_certs::delivered_to(pg.pool(), serial).await,
        }
    }

    /// Publish `crl` unless one with a number at least as high is
    /// published (another replica's). Returns whether it replaced it.
    pub async fn publish_crl(&self, crl: StoredCrl) -> Result<bool, StoreError> {
        Ok(self.exec(Exec::Certs(CertWrite::PublishCrl(crl))).await? > 0)
    }

    /// The published CRL, if any.
    pub async fn latest_crl(&self) -> Result<Option<StoredCrl>, StoreError> {
        match &self.backend {
            Backend::Sqlite(r) => r.latest_crl(),
            Backend::Postgres(pg) => pg_certs::latest_crl(pg.pool()).await,
        }
    }

    /// Close the PostgreSQL pools (tests and shutdown); SQLite's reader
    /// connections close with the last handle.
    pub async fn close(&self) {
        if let Backend::Postgres(pg) = &self.backend {
            pg.close().await;
        }
    }
}

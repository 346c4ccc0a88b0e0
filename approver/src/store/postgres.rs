//! The PostgreSQL backend, entirely through sqlx's postgres driver: the
//! migrations, the group-commit writer (a task on a one-connection pool),
//! reads on a pool of their own, and the change listener that wakes the
//! watch hubs of every replica sharing the database.
//!
//! Several approver replicas may share one database: each batch locks the
//! resource-version counter row first (so batches of different replicas
//! commit one after the other, and resource versions follow commit order),
//! claims skip rows other transactions hold (`FOR UPDATE SKIP LOCKED`),
//! and every batch that changes objects issues `NOTIFY` (delivered at
//! commit, dropped on rollback).
//!
//! Creates and updates run on the bulk path (`pg_bulk`: refusals decided
//! before anything is written, multi-row writes); the other operations one
//! by one, each in its own SAVEPOINT.
//!
//! This module must never answer a write before its transaction has
//! committed, and never run an operation that may fail after writing
//! outside its own SAVEPOINT (a failed statement aborts a PostgreSQL
//! transaction).

use std::sync::Arc;
use std::time::Duration;

use certsign_proto::v1::{CertificateSigningRequest, SignedStatement};
use prost::Message as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Acquire as _, Row as _};
use tokio::sync::mpsc;

use crate::decision::{State, condition_column, state_of};
use crate::expiry::expiry_column;
use crate::issued::IssuedRecord;
use crate::store::batch::{
    Answer, Counts, Exec, MAX_BATCH, Op, UpdateFn, apply_update, outcome, settle, update_outcome,
};
use crate::store::pg_bulk;
use crate::store::schema::{
    CHANGE_CHANNEL, COUNT_PENDING, EVENTS_AFTER, LATEST_RV, MIGRATIONS, NEXT_FORWARD_TIME,
    RENEWAL_BY_NAME, SCHEMA_MIGRATIONS, change_channel, count_token_use, object_of_row, page_query,
    prune_events, prune_watermark,
};
use crate::store::types::{
    CreateGuard, Event, ForwardItem, PageBy, StoreError, decode_renewal, decode_stored, name_of,
    set_rv, token_counted, unix_now,
};

/// Connections for reads; the writer has one of its own, so a batch never
/// waits behind reads for a connection.
const READ_CONNECTIONS: u32 = 10;

/// The PostgreSQL side of a store handle (cheap to clone).
#[derive(Debug, Clone)]
pub(super) struct Postgres {
    /// Reads.
    pool: PgPool,
    /// The writer's single connection (and migrations).
    write_pool: PgPool,
    url: Arc<str>,
}

fn pool_options(connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(30))
}

impl Postgres {
    /// Connects, applies the migrations and starts the writer task, which
    /// serves `rx` (needs a Tokio runtime).
    pub(super) async fn open(
        url: &str,
        counts: Arc<Counts>,
        rx: mpsc::Receiver<Op>,
    ) -> Result<Self, StoreError> {
        // Reads are short, paged, index-ordered lookups: starting parallel
        // workers only adds latency to them.
        let read = url
            .parse::<PgConnectOptions>()?
            .options([("max_parallel_workers_per_gather", "0")]);
        let pool = pool_options(READ_CONNECTIONS).connect_with(read).await?;
        let write_pool = pool_options(1).connect(url).await?;
        let pg = Self {
            pool,
            write_pool: write_pool.clone(),
            url: url.into(),
        };
        pg.migrate().await?;
        tokio::spawn(writer_loop(write_pool, counts, rx));
        Ok(pg)
    }

    /// Applies every migration not yet applied, in one transaction.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.write_pool.acquire().await?;
        let mut tx = conn.begin().await?;
        // Several replicas may start at once: one migrates, the others
        // wait and then find the work done.
        sqlx::query("SELECT pg_advisory_xact_lock(7426720001)")
            .execute(&mut *tx)
            .await?;
        sqlx::query(SCHEMA_MIGRATIONS).execute(&mut *tx).await?;
        let done: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
            .fetch_all(&mut *tx)
            .await?;
        // Every migration not yet applied, in order (not only those above
        // the highest applied: versions may land out of order).
        for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
            for s in m.postgres {
                sqlx::query(*s).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                .bind(m.version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn get(
        &self,
        name: &str,
    ) -> Result<Option<CertificateSigningRequest>, StoreError> {
        let row = sqlx::query(NAME_AND_OBJECT_BY_NAME)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_object).transpose()
    }

    pub(super) async fn renewal(&self, name: &str) -> Result<Option<SignedStatement>, StoreError> {
        let bytes: Option<Vec<u8>> = sqlx::query_scalar(RENEWAL_BY_NAME)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        decode_renewal(name, bytes)
    }

    /// One page of a list built by the schema's `list_query`.
    pub(super) async fn list(
        &self,
        sql: String,
        binds: Vec<String>,
    ) -> Result<Vec<CertificateSigningRequest>, StoreError> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(row_object).collect()
    }

    pub(super) async fn page_by_state(
        &self,
        state: State,
        by: PageBy,
        range: std::ops::Range<i64>,
        after: (i64, String),
        limit: u32,
    ) -> Result<Vec<(i64, CertificateSigningRequest)>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(page_query(by, limit)))
            .bind(state.as_str())
            .bind(range.start)
            .bind(range.end)
            .bind(after.0)
            .bind(after.1)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("k")?, row_object(r)?)))
            .collect()
    }

    pub(super) async fn next_forward_time(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(NEXT_FORWARD_TIME)
            .fetch_one(&self.pool)
            .await?)
    }

    pub(super) async fn change_listener(&self) -> Result<ChangeListener, StoreError> {
        let mut inner = sqlx::postgres::PgListener::connect(&self.url).await?;
        inner.listen(CHANGE_CHANNEL).await?;
        Ok(ChangeListener { inner, lost: false })
    }

    pub(super) async fn events_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(EVENTS_AFTER)
            .bind(after)
            .bind(i64::from(limit.max(1)))
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

    pub(super) async fn latest_resource_version(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(LATEST_RV).fetch_one(&self.pool).await?)
    }

    pub(super) async fn count_pending(&self, username: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(COUNT_PENDING)
            .bind(username)
            .fetch_one(&self.pool)
            .await?)
    }

    pub(super) async fn ping(&self, limit: Duration) -> Result<(), StoreError> {
        match tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&self.pool)).await {
            Ok(r) => r.map(|_| ()).map_err(StoreError::from),
            Err(_) => Err(StoreError::Database(sqlx::Error::PoolTimedOut)),
        }
    }

    /// The read pool (the inventory's reads, `pg_certs`).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
        self.write_pool.close().await;
    }
}

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

/// One row's name and object by name, read by [`row_object`].
const NAME_AND_OBJECT_BY_NAME: &str = concat!(
    "SELECT name, ",
    object_of_row!(),
    " AS object FROM csrs WHERE name = $1"
);

fn row_object(row: &PgRow) -> Result<CertificateSigningRequest, StoreError> {
    let name: String = row.try_get("name")?;
    let bytes: Option<Vec<u8>> = row.try_get("object")?;
    decode_stored(&name, bytes)
}

/// PostgreSQL's group-commit loop: one batch per transaction, until every
/// `Store` handle is gone.
async fn writer_loop(pool: PgPool, counts: Arc<Counts>, mut rx: mpsc::Receiver<Op>) {
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
async fn guarded_batch(pool: &PgPool, counts: &Arc<Counts>, ops: Vec<Op>) {
    let (pool, counts) = (pool.clone(), counts.clone());
    let task = tokio::spawn(async move { write_batch(&pool, &counts, ops).await });
    if let Err(e) = task.await {
        tracing::error!(error = %e, "store: a write batch failed unexpectedly; its writes were answered with errors");
    }
}

/// Runs `ops` in one transaction and answers each of them after the
/// commit (or with an error when the transaction did not commit).
async fn write_batch(pool: &PgPool, counts: &Counts, ops: Vec<Op>) {
    let n = ops.len();
    let mut answers: Vec<Answer> = Vec::with_capacity(n);
    let mut ops = ops.into_iter();
    let result = run_batch(pool, &mut ops, &mut answers).await;
    settle(counts, ops, answers, result);
}

/// Runs the batch's operations in queue order inside one transaction.
async fn run_batch(
    pool: &PgPool,
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
    // Consecutive creates and updates run on the bulk path; the other
    // operations one by one, each in its own savepoint.
    let mut run: Vec<Op> = Vec::new();
    while let Some(op) = ops.next() {
        if pg_bulk::bulkable(&op) {
            run.push(op);
            if ops.as_slice().first().is_some_and(pg_bulk::bulkable) {
                continue;
            }
            let alone = pg_bulk::run(&mut tx, &mut rv, std::mem::take(&mut run), answers).await?;
            let mut alone = alone.into_iter();
            let r = run_alone(&mut tx, &mut rv, &mut alone, answers).await;
            answers.extend(alone.map(Op::unrun));
            r?;
        } else {
            run_alone(&mut tx, &mut rv, &mut std::iter::once(op), answers).await?;
        }
    }
    if rv != first {
        // The counter's new value, and a NOTIFY so other replicas' watch
        // hubs wake at commit (never on rollback), in one round trip; `rv`
        // is a number this process computed.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            concat!(
                "UPDATE counters SET value = {} WHERE name = 'resource_version'; NOTIFY ",
                change_channel!()
            ),
            rv
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Runs `ops` one at a time, each between its own SAVEPOINT and RELEASE
/// (a failed statement aborts a PostgreSQL transaction).
async fn run_alone(
    conn: &mut PgConnection,
    rv: &mut i64,
    ops: &mut impl Iterator<Item = Op>,
    answers: &mut Vec<Answer>,
) -> Result<(), StoreError> {
    for op in ops {
        if let Err(e) = sqlx::raw_sql("SAVEPOINT op").execute(&mut *conn).await {
            answers.push(op.unrun());
            return Err(e.into());
        }
        let (a, undo) = run_op(conn, rv, op).await;
        answers.push(a);
        sqlx::raw_sql(if undo {
            "ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op"
        } else {
            "RELEASE SAVEPOINT op"
        })
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Runs one operation; returns its answer and whether its savepoint must
/// be rolled back. `rv` is advanced only by operations whose writes stand.
async fn run_op(conn: &mut PgConnection, rv: &mut i64, op: Op) -> (Answer, bool) {
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

/// A row write and its `csr_events` row in one statement (a data-modifying
/// WITH), atomic by itself.
macro_rules! with_event {
    ($write:literal, $event:literal) => {
        concat!("WITH w AS (", $write, " RETURNING 1) ", $event)
    };
}

async fn create_in(
    conn: &mut PgConnection,
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
    conn: &mut PgConnection,
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
    // The inventory row of a certificate is written with its issuance.
    if reset_attempts
        && state == State::Issued
        && let Some(record) = IssuedRecord::of(&obj)
    {
        super::pg_certs::insert_issued(conn, &record).await?;
    }
    Ok((obj, true))
}

async fn delete_in(
    conn: &mut PgConnection,
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
    conn: &mut PgConnection,
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

async fn exec_in(conn: &mut PgConnection, what: Exec) -> Result<u64, StoreError> {
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
            sqlx::query(prune_watermark!("$1"))
                .bind(cutoff)
                .execute(&mut *conn)
                .await?;
            sqlx::query(prune_events!("$1"))
                .bind(cutoff)
                .execute(&mut *conn)
                .await?
        }
        Exec::Certs(w) => return super::pg_certs::write(conn, w).await,
    };
    Ok(r.rows_affected())
}

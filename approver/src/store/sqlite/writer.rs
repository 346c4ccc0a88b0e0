//! The SQLite group-commit writer: one OS thread with its own connection
//! that runs each batch of queued writes synchronously, in one transaction.
//!
//! Why a thread of its own: through sqlx every statement is a hand-off to
//! sqlx's worker thread and back (two thread wake-ups); a batch of a few
//! hundred operations makes thousands of them per second, and on a 2-core
//! machine the context switches cost more CPU than SQLite itself. Here a
//! batch is one hand-off in (the queue) and one answer per caller out,
//! after the commit.
//!
//! Semantics are the store's (see the parent module): one transaction per
//! batch, each operation but an update in its own SAVEPOINT (an update
//! writes last, and a failed write of it fails the batch), resource
//! versions handed out in queue order, `synchronous = FULL`, and no answer
//! before the commit. A batch that drained the queue under load waits 2 ms
//! once for more. Reads run beside this connection (WAL), on the reader
//! connections (`reader`).
//!
//! WAL checkpoints run beside the writer, on a connection and thread of
//! their own ("store-checkpoint"), not inside a commit: SQLite's automatic
//! checkpoint makes the commit that crosses 1,000 WAL pages copy them to
//! the database file and fsync it while every queued write waits (3–4 % of
//! the machine idle in the pipeline benchmark). A passive checkpoint waits
//! for nobody; durability is
//! unchanged, since a commit is durable once its WAL frames are fsynced.
//!
//! This module must never answer a write before its transaction committed,
//! and never decide policy (update functions and guards come from callers).

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use certsign_proto::v1::CertificateSigningRequest;
use prost::Message as _;
use rusqlite::{Connection, OptionalExtension as _, params};
use tokio::sync::mpsc;

use super::conn;
use crate::decision::{State, condition_column, state_of};
use crate::expiry::expiry_column;
use crate::issued::IssuedRecord;
use crate::store::batch::{
    Answer, Counts, Exec, MAX_BATCH, Op, UpdateFn, apply_update, outcome, settle, update_outcome,
};
use crate::store::schema::{
    OBJECT_AND_RV_BY_NAME, OBJECT_BY_NAME, count_token_use, object_of_row, prune_events,
    prune_watermark,
};
use crate::store::types::{
    CreateGuard, ForwardItem, StoreError, decode_renewal, decode_stored, name_of, set_rv,
    token_counted, unix_now,
};

/// Starts the writer's thread on `conn` (its schema already migrated),
/// and the checkpointer's on a connection of its own to `path`; both run
/// until every sender of `rx` is gone.
pub(super) fn spawn(
    conn: Connection,
    path: &Path,
    counts: Arc<Counts>,
    rx: mpsc::Receiver<Op>,
) -> Result<(), StoreError> {
    // Commits never checkpoint; the checkpointer does (module header).
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
    let checkpoint_conn = conn::open(path, false)?;
    // One pending tick is enough: the checkpointer reads the whole WAL.
    let (tick, ticks) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || checkpointer(&checkpoint_conn, &ticks))
        .map_err(|e| StoreError::NotStored(format!("cannot start the store checkpointer: {e}")))?;
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || writer_loop(conn, &counts, rx, &tick))
        .map_err(|e| StoreError::NotStored(format!("cannot start the store writer: {e}")))?;
    Ok(())
}

/// How often at most the checkpointer runs while commits go on: about the
/// WAL pages SQLite's automatic checkpoint would wait for (1,000) at the
/// pipeline benchmark's rate.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// WAL size (pages) from which the next checkpoint is a RESTART: it holds
/// new writes while it copies what the passive ones have not (about one
/// interval's pages) so that the next commit starts the WAL from its
/// beginning. Passive checkpoints alone never let the WAL restart while
/// commits keep coming: it grew past 300 MB in a 12 s benchmark run. 16,384
/// pages (64 MiB) make that short hold about once a second at 2,400
/// certificates per second, where SQLite's own checkpoint held every
/// commit crossing 1,000 pages for all 1,000.
const CHECKPOINT_RESTART_PAGES: i64 = 16 * 1024;

/// Checkpoints after commits (one tick per committed batch), at most every
/// [`CHECKPOINT_INTERVAL`]; ends when the writer does.
fn checkpointer(conn: &Connection, ticks: &std::sync::mpsc::Receiver<()>) {
    let mut mode = "PASSIVE";
    while ticks.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_INTERVAL);
        let _ = ticks.try_recv();
        // Columns: busy, pages in the WAL, pages copied to the database.
        let r = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            r.get::<_, i64>(1)
        });
        match r {
            Ok(wal) => {
                mode = if wal >= CHECKPOINT_RESTART_PAGES {
                    "RESTART"
                } else {
                    "PASSIVE"
                };
            }
            Err(e) => {
                tracing::warn!(error = %e, "store: WAL checkpoint failed; retrying after the next commit")
            }
        }
    }
}

/// A batch that drained the queue with at least this many operations in
/// hand shows concurrent writers: it waits [`COALESCE_WAIT`] once for more
/// before committing. A lone write (no concurrency) commits at once.
const COALESCE_MIN: usize = 2;

/// How long such a batch waits for more operations. Under load a bigger
/// batch shares its index pages and its fsync among more writes (fewer WAL
/// bytes per request), for 2 ms of
/// latency on each write of the batch. Durability is unchanged: nothing is
/// answered before the commit.
const COALESCE_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

fn writer_loop(
    mut conn: Connection,
    counts: &Counts,
    mut rx: mpsc::Receiver<Op>,
    tick: &std::sync::mpsc::SyncSender<()>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch: Vec<Op> = Vec::with_capacity(MAX_BATCH);
        let mut next = Some(first);
        let mut waited = false;
        while let Some(op) = next.take() {
            if let Op::Pause { started, release } = op {
                if !batch.is_empty() {
                    write_batch(&mut conn, counts, std::mem::take(&mut batch));
                    let _ = tick.try_send(());
                }
                let _ = started.send(());
                // Released when the `WritePause` is dropped.
                let _ = release.blocking_recv();
            } else {
                batch.push(op);
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
                if next.is_none() && !waited && batch.len() >= COALESCE_MIN {
                    waited = true;
                    std::thread::sleep(COALESCE_WAIT);
                    next = rx.try_recv().ok();
                }
            }
        }
        if !batch.is_empty() {
            write_batch(&mut conn, counts, batch);
            // Full: a checkpoint is already due; it will see this commit too.
            let _ = tick.try_send(());
        }
    }
}

/// Runs `ops` in one transaction and answers each after the commit (or
/// with an error when it did not commit). Should anything panic, the
/// transaction is rolled back and the batch's callers get an error (their
/// answer channels close unanswered); the writer goes on with the next.
fn write_batch(conn: &mut Connection, counts: &Counts, ops: Vec<Op>) {
    let n = ops.len();
    let mut answers: Vec<Answer> = Vec::with_capacity(n);
    let mut ops = ops.into_iter();
    let result =
        std::panic::catch_unwind(AssertUnwindSafe(|| run_batch(conn, &mut ops, &mut answers)));
    let Ok(result) = result else {
        tracing::error!(
            operations = n,
            "store: a write batch failed unexpectedly; its writes were answered with errors"
        );
        end_transaction(conn);
        return;
    };
    if result.is_err() {
        end_transaction(conn);
    }
    settle(counts, ops, answers, result);
}

/// Leaves no transaction open: a failed COMMIT (SQLITE_FULL, say) can keep
/// one, and with it the write lock, failing every later batch even after
/// the cause is gone.
fn end_transaction(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

fn run_batch(
    conn: &Connection,
    ops: &mut std::vec::IntoIter<Op>,
    answers: &mut Vec<Answer>,
) -> Result<(), StoreError> {
    end_transaction(conn);
    // IMMEDIATE: take the write lock first (another process's writer queues
    // behind busy_timeout instead of deadlocking on an upgrade).
    run(conn, "BEGIN IMMEDIATE")?;
    let first: i64 = conn
        .prepare_cached("SELECT value FROM counters WHERE name = 'resource_version'")?
        .query_row([], |r| r.get(0))?;
    let mut rv = first;
    for op in ops.by_ref() {
        // An update runs everything that can refuse it before its first
        // write, and a failed write fails the whole batch: it needs no
        // savepoint. That saves two statements per update and the copies
        // of every page it touches that a savepoint keeps for a rollback
        // (about 3 % of the store writer's CPU per certificate).
        let guarded = !matches!(op, Op::Update { .. });
        if guarded && let Err(e) = run(conn, "SAVEPOINT op") {
            answers.push(op.unrun());
            return Err(e);
        }
        let (a, undo) = run_op(conn, &mut rv, op);
        answers.push(a);
        match undo {
            Undo::Nothing => {}
            Undo::Savepoint => run(conn, "ROLLBACK TO SAVEPOINT op")?,
            Undo::Batch(e) => return Err(e),
        }
        if guarded {
            run(conn, "RELEASE SAVEPOINT op")?;
        }
    }
    if rv != first {
        conn.prepare_cached("UPDATE counters SET value = ?1 WHERE name = 'resource_version'")?
            .execute(params![rv])?;
    }
    run(conn, "COMMIT")?;
    Ok(())
}

/// A statement without parameters, prepared once per connection (these
/// run several times per operation; parsing them each time showed in the
/// profile).
fn run(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// What a failed operation leaves to undo.
enum Undo {
    Nothing,
    /// Roll back the operation's savepoint.
    Savepoint,
    /// A write of an operation without a savepoint failed: the batch fails.
    Batch(StoreError),
}

impl From<bool> for Undo {
    fn from(rollback: bool) -> Self {
        if rollback {
            Undo::Savepoint
        } else {
            Undo::Nothing
        }
    }
}

/// Runs one operation; returns its answer and what must be undone. `rv` is
/// advanced only by operations whose writes stand.
fn run_op(conn: &Connection, rv: &mut i64, op: Op) -> (Answer, Undo) {
    let next = *rv + 1;
    let (answer, rollback): (Answer, bool) = match op {
        Op::Create {
            obj,
            renewal,
            guard,
            reply,
        } => {
            let r = create(conn, next, *obj, &renewal, &guard);
            outcome(reply, r, |_| true, rv, next)
        }
        Op::Update { name, mut f } => {
            return match update(conn, next, &name, f.as_mut()) {
                // Nothing was written: a refusal is just this update's answer.
                Ok(r) => (update_outcome(f, r, rv, next).0, Undo::Nothing),
                Err(e) => {
                    let unstored = Err(StoreError::NotStored(String::new()));
                    (update_outcome(f, unstored, rv, next).0, Undo::Batch(e))
                }
            };
        }
        Op::Delete {
            name,
            expected_rv,
            reply,
        } => {
            let r = delete(conn, next, &name, expected_rv);
            outcome(reply, r, Option::is_some, rv, next)
        }
        Op::Claim {
            now,
            lease_until,
            limit,
            owner,
            reply,
        } => {
            let r = claim(conn, &owner, now, lease_until, limit);
            outcome(reply, r, |_| false, rv, next)
        }
        Op::Exec { what, reply } => outcome(reply, exec(conn, what), |_| false, rv, next),
        Op::Pause { .. } => (Box::new(|_| {}), false),
    };
    (answer, rollback.into())
}

const INSERT_EVENT: &str = "INSERT INTO csr_events (resource_version, event_type, name, created, object) \
     VALUES (?1, ?2, ?3, ?4, ?5)";

fn event(
    conn: &Connection,
    rv: i64,
    kind: &str,
    name: &str,
    object: &[u8],
) -> Result<(), StoreError> {
    conn.prepare_cached(INSERT_EVENT)?
        .execute(params![rv, kind, name, unix_now(), object])?;
    Ok(())
}

fn create(
    conn: &Connection,
    rv: i64,
    mut obj: CertificateSigningRequest,
    renewal: &[u8],
    guard: &CreateGuard,
) -> Result<CertificateSigningRequest, StoreError> {
    let name = name_of(&obj).to_string();
    let state = state_of(&obj);
    let username = obj
        .spec
        .as_ref()
        .map(|s| s.username.clone())
        .unwrap_or_default();
    let (taken, pending): (i64, i64) = conn
        .prepare_cached(
            "SELECT (SELECT COUNT(*) FROM csrs WHERE name = ?1), \
             (SELECT COUNT(*) FROM csrs WHERE username = ?2 AND state = 'pending')",
        )?
        .query_row(params![name, username], |r| Ok((r.get(0)?, r.get(1)?)))?;
    guard.admit(&name, state, &username, taken, pending)?;
    if let Some((id, max)) = &guard.token {
        let done = conn
            .prepare_cached(count_token_use!("?"))?
            .execute(params![id, i64::from(*max)])?;
        token_counted(id, *max, done as u64)?;
    }
    set_rv(&mut obj, rv);
    let (uid, created) = obj.metadata.as_ref().map_or((String::new(), None), |m| {
        (m.uid.clone(), m.creation_timestamp.map(|t| t.seconds))
    });
    let signer_name = obj
        .spec
        .as_ref()
        .map(|s| s.signer_name.as_str())
        .unwrap_or("");
    let bytes = obj.encode_to_vec();
    conn.prepare_cached(
        "INSERT INTO csrs (name, uid, signer_name, username, state, cond, created, \
         resource_version, next_attempt, attempts, renewal, expires) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0, ?9, ?10)",
    )?
    .execute(params![
        name,
        uid,
        signer_name,
        username,
        state.as_str(),
        condition_column(&obj),
        created.unwrap_or_else(unix_now),
        rv,
        renewal,
        expiry_column(&obj),
    ])?;
    event(conn, rv, "ADDED", &name, &bytes)?;
    Ok(obj)
}

/// Reads, decides, then writes. `Ok` carries the update's own outcome:
/// the object (changed or not) and whether it was written, or why it was
/// refused before anything was written. `Err` is a failed write, which
/// fails the batch (there is no savepoint to take it back alone).
fn update(
    conn: &Connection,
    rv: i64,
    name: &str,
    f: &mut dyn UpdateFn,
) -> Result<Result<(CertificateSigningRequest, bool), StoreError>, StoreError> {
    let decided = (|| {
        let bytes: Option<Option<Vec<u8>>> = conn
            .prepare_cached(OBJECT_BY_NAME)?
            .query_row(params![name], |r| r.get(0))
            .optional()?;
        let Some(bytes) = bytes else {
            return Err(StoreError::NotFound(name.to_string()));
        };
        let mut obj = decode_stored(name, bytes)?;
        let reset = apply_update(name, &mut obj, f, rv)?;
        Ok((obj, reset))
    })();
    let (obj, reset_attempts) = match decided {
        Ok((obj, Some(reset))) => (obj, reset),
        Ok((obj, None)) => return Ok(Ok((obj, false))),
        Err(e) => return Ok(Err(e)),
    };
    let state = state_of(&obj);
    let bytes = obj.encode_to_vec();
    conn.prepare_cached(
        "UPDATE csrs SET state = ?1, cond = ?2, resource_version = ?3, \
         next_attempt = CASE WHEN ?4 = 1 THEN 0 ELSE next_attempt END, expires = ?5 \
         WHERE name = ?6",
    )?
    .execute(params![
        state.as_str(),
        condition_column(&obj),
        rv,
        i64::from(reset_attempts),
        expiry_column(&obj),
        name,
    ])?;
    event(conn, rv, "MODIFIED", name, &bytes)?;
    // The inventory row of a certificate is written with its issuance.
    if reset_attempts
        && state == State::Issued
        && let Some(record) = IssuedRecord::of(&obj)
    {
        super::certs::insert_issued(conn, &record)?;
    }
    Ok(Ok((obj, true)))
}

fn delete(
    conn: &Connection,
    rv: i64,
    name: &str,
    expected_rv: Option<i64>,
) -> Result<Option<CertificateSigningRequest>, StoreError> {
    let row: Option<(Option<Vec<u8>>, i64)> = conn
        .prepare_cached(OBJECT_AND_RV_BY_NAME)?
        .query_row(params![name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((bytes, current_rv)) = row else {
        return Ok(None);
    };
    if expected_rv.is_some_and(|e| e != current_rv) {
        return Ok(None);
    }
    let mut obj = decode_stored(name, bytes)?;
    set_rv(&mut obj, rv);
    conn.prepare_cached("DELETE FROM csrs WHERE name = ?1")?
        .execute(params![name])?;
    event(conn, rv, "DELETED", name, &obj.encode_to_vec())?;
    Ok(Some(obj))
}

/// Claims due, unleased (or expired-lease) approved requests for `owner`.
/// SQLite has one writer at a time, so there is nothing to skip.
fn claim(
    conn: &Connection,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: u32,
) -> Result<Vec<ForwardItem>, StoreError> {
    // SQLite evaluates the IN subquery once. Oldest first among equally due
    // rows: the `(state, next_attempt)` index holds rowids (insertion order)
    // after `next_attempt`, so this order is read off the index and the scan
    // stops at the limit, where ordering by name sorted every due row.
    let mut stmt = conn.prepare_cached(concat!(
        "UPDATE csrs SET lease_owner = ?1, lease_until = ?2, attempts = attempts + 1 \
         WHERE name IN (SELECT name FROM csrs WHERE state = 'approved' \
         AND next_attempt <= ?3 AND lease_until <= ?3 ORDER BY next_attempt, rowid LIMIT ?4) \
         AND state = 'approved' AND next_attempt <= ?3 AND lease_until <= ?3 \
         RETURNING name, ",
        object_of_row!(),
        ", renewal, attempts"
    ))?;
    let rows = stmt.query_map(
        params![owner, lease_until, now, i64::from(limit.max(1))],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<Vec<u8>>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        },
    )?;
    let mut items = Vec::new();
    for row in rows {
        let (name, object, renewal, attempts) = row?;
        items.push(ForwardItem {
            object: decode_stored(&name, object)?,
            renewal: decode_renewal(&name, Some(renewal))?,
            attempts,
        });
    }
    Ok(items)
}

fn exec(conn: &Connection, what: Exec) -> Result<u64, StoreError> {
    let n = match what {
        Exec::RetryAt { name, at, owner } => {
            // A lease taken over by someone else meanwhile is left alone.
            conn.prepare_cached(
                "UPDATE csrs SET next_attempt = ?1, lease_owner = '', lease_until = 0 \
                 WHERE name = ?2 AND state = 'approved' AND lease_owner = ?3",
            )?
            .execute(params![at, name, &*owner])?
        }
        Exec::RetryAll { now, at } => conn
            .prepare_cached(
                "UPDATE csrs SET next_attempt = ?1 \
                 WHERE state = 'approved' AND lease_until <= ?2 AND next_attempt > ?1",
            )?
            .execute(params![at, now])?,
        Exec::ResumeAll => conn
            .prepare_cached(
                "UPDATE csrs SET next_attempt = 0, lease_owner = '', lease_until = 0 \
                 WHERE state = 'approved'",
            )?
            .execute([])?,
        Exec::SetExpires { name, expires } => conn
            .prepare_cached("UPDATE csrs SET expires = ?1 WHERE name = ?2 AND expires = -1")?
            .execute(params![expires, name])?,
        Exec::Prune { cutoff } => {
            conn.prepare_cached(prune_watermark!("?1"))?
                .execute(params![cutoff])?;
            conn.prepare_cached(prune_events!("?1"))?
                .execute(params![cutoff])?
        }
        Exec::Certs(w) => return super::certs::write(conn, w),
    };
    Ok(n as u64)
}

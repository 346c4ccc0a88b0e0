//! The SQLite backend, entirely through rusqlite: the migrations, the
//! group-commit writer thread (`writer`), point reads and pages on
//! read-only connections (`reader`), and the connection settings
//! (`conn`: WAL, `synchronous = FULL`), and online backups (`backup`).
//!
//! One process owns an SQLite store: change events reach its watch hub
//! from its own writes, so there is no change listener here.
//!
//! This module must never open a connection without [`conn::open`]'s
//! durability settings for writing, and never answer a write before its
//! transaction has committed (the writer's rule).

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::mpsc;

use crate::store::batch::{Counts, Op};
use crate::store::schema::{MIGRATIONS, SCHEMA_MIGRATIONS};
use crate::store::types::StoreError;

mod backup;
mod certs;
mod conn;
mod reader;
mod writer;

pub(super) use backup::vacuum_into;
pub(super) use reader::Readers;

/// Opens (and, with `mode=rwc`, creates) the database `url` names, applies
/// the migrations and starts the writer thread, which serves `rx`. Returns
/// the readers. Blocking: call it off the async threads.
pub(super) fn open(
    url: &str,
    counts: Arc<Counts>,
    rx: mpsc::Receiver<Op>,
) -> Result<Arc<Readers>, StoreError> {
    let target = conn::parse_url(url)?;
    let mut conn = conn::open(&target.path, target.create)?;
    migrate(&mut conn)?;
    // Commits never checkpoint; the writer's checkpointer does.
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
    writer::spawn(conn, &target.path, counts, rx)?;
    Ok(Arc::new(Readers::new(&target.path)))
}

/// Applies the migrations not yet applied, with the statement journal in
/// a temp file meanwhile: a migration that rewrites a table (4 rewrites
/// `csrs` and `csr_events`) keeps a statement journal of every page it
/// changes, and in memory that was the whole table in RAM (1.3 GiB at a
/// million requests, kept by the allocator afterwards); on a temp file the
/// approver stays at ~15 MiB while migrating.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch("PRAGMA temp_store = FILE")?;
    let applied = migrate_on(conn);
    let restored = conn.execute_batch(conn::SQLITE_TEMP_STORE);
    // A failed migration is the error to report, not the restore.
    let applied = applied?;
    restored?;
    // A rewrite leaves a WAL the size of the rewritten tables: copy it into
    // the database and give the space back.
    if applied {
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    }
    Ok(())
}

/// Applies every migration not yet applied, in one transaction; returns
/// whether any was.
fn migrate_on(conn: &mut Connection) -> Result<bool, StoreError> {
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA_MIGRATIONS)?;
    let done = tx
        .prepare("SELECT version FROM schema_migrations")?
        .query_map([], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    // Every migration not yet applied, in order (not only those above the
    // highest applied: versions may land out of order).
    let mut applied = false;
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        applied = true;
        for s in m.sqlite {
            tx.execute_batch(s)?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES (?1)",
            [m.version],
        )?;
    }
    tx.commit()?;
    Ok(applied)
}

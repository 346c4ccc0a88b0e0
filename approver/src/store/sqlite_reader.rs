//! SQLite reads through rusqlite: point reads on the caller's own thread
//! (one object by name, the change events after a resource version, the
//! next forwarding time) and pages of lists, which the store runs in
//! Tokio's blocking pool.
//!
//! Why not through sqlx's pool: every sqlx SQLite statement is a hand-off to
//! a worker thread and back, and on a 2-core VM those wake-ups are most of
//! what sqlx reader threads spend (the pipeline issues about 8 % more per
//! second without them). These reads are
//! short (an index lookup, or one page of events) and WAL lets them run
//! beside the writer without waiting for it, so they run inline on the
//! async task that asks. A list can scan far, so it never runs inline: the
//! store hands it to the blocking pool, one hand-off per page.
//!
//! Connections are opened `query_only`: this module must never write, and
//! never hold a connection across an await (a list takes its connection
//! inside the blocking task).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use certsign_proto::v1::CertificateSigningRequest;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};
use tokio::sync::Semaphore;

use super::{Event, SQLITE_OBJECT_BY_NAME, StoreError, decode, decode_stored};

/// Idle connections kept for reuse; a burst beyond this opens more and
/// closes the extra ones afterwards.
const MAX_IDLE: usize = 4;

/// Lists reading at once (as many as sqlx's SQLite pool for lists had):
/// more wait their turn instead of each taking a blocking thread and a
/// connection of its own.
const LIST_SLOTS: usize = 4;

/// A small pool of read-only connections to one SQLite file.
#[derive(Debug)]
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    list_slots: Arc<Semaphore>,
    /// Lists reading right now, and the most ever at once: the bound
    /// [`LIST_SLOTS`] made observable (a test holds the store to it).
    reading: AtomicUsize,
    most_reading: AtomicUsize,
}

impl Readers {
    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            list_slots: Arc::new(Semaphore::new(LIST_SLOTS)),
            reading: AtomicUsize::new(0),
            most_reading: AtomicUsize::new(0),
        }
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        // Read-write open (WAL readers need the -shm file writable), but
        // refusing every write.
        conn.execute_batch("PRAGMA query_only = 1; PRAGMA busy_timeout = 30000")?;
        Ok(conn)
    }

    /// Runs `f` on an idle connection (or a new one) and returns it to the
    /// pool. A connection whose read failed is dropped, not reused.
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let taken = self.idle.lock().ok().and_then(|mut v| v.pop());
        let conn = match taken {
            Some(c) => c,
            None => self.open()?,
        };
        let r = f(&conn);
        if r.is_ok()
            && let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
        r
    }

    /// One object by name.
    pub(super) fn get(&self, name: &str) -> Result<Option<CertificateSigningRequest>, StoreError> {
        self.with(|c| {
            let bytes: Option<Option<Vec<u8>>> = c
                .prepare_cached(SQLITE_OBJECT_BY_NAME)?
                .query_row(params![name], |r| r.get(0))
                .optional()?;
            bytes.map(|b| decode_stored(name, b)).transpose()
        })
    }

    /// Up to `limit` events after resource version `after`, oldest first.
    pub(super) fn events_after(&self, after: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT resource_version, event_type, name, object FROM csr_events \
                 WHERE resource_version > ?1 ORDER BY resource_version LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, i64::from(limit.max(1))], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })?;
            let mut events = Vec::new();
            for row in rows {
                let (resource_version, event_type, name, object) = row?;
                events.push(Event {
                    resource_version,
                    event_type,
                    object: decode(&name, &object)?,
                });
            }
            Ok(events)
        })
    }

    /// One page of a list the store built: `sql` selects the name, then
    /// the object; `binds` fill its `$1`, `$2`, ... in order. Read in
    /// Tokio's blocking pool, at most [`LIST_SLOTS`] at once.
    pub(super) async fn list(
        self: &Arc<Self>,
        sql: String,
        binds: Vec<String>,
    ) -> Result<Vec<CertificateSigningRequest>, StoreError> {
        let failed = |e: &dyn std::fmt::Display| StoreError::ReadFailed(e.to_string());
        let slot = Arc::clone(&self.list_slots)
            .acquire_owned()
            .await
            .map_err(|e| failed(&e))?;
        let readers = Arc::clone(self);
        // The slot goes with the read: a caller that gives up does not free
        // it while the read still runs.
        tokio::task::spawn_blocking(move || {
            let reading = Reading::start(&readers);
            let page = readers.list_page(&sql, &binds);
            drop(reading);
            drop(slot);
            page
        })
        .await
        .map_err(|e| failed(&e))?
    }

    fn list_page(
        &self,
        sql: &str,
        binds: &[String],
    ) -> Result<Vec<CertificateSigningRequest>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(binds), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
            })?;
            let mut page = Vec::new();
            for row in rows {
                let (name, bytes) = row?;
                page.push(decode_stored(&name, bytes)?);
            }
            Ok(page)
        })
    }

    /// See [`super::Store::next_forward_time`].
    pub(super) fn next_forward_time(&self) -> Result<Option<i64>, StoreError> {
        self.with(|c| {
            Ok(c.prepare_cached(super::NEXT_FORWARD_TIME)?
                .query_row([], |r| r.get(0))?)
        })
    }
}

/// One list read in progress, counted out when it ends, even by a panic.
struct Reading<'a>(&'a AtomicUsize);

impl<'a> Reading<'a> {
    fn start(readers: &'a Readers) -> Self {
        let now = readers.reading.fetch_add(1, Ordering::AcqRel) + 1;
        readers.most_reading.fetch_max(now, Ordering::AcqRel);
        Reading(&readers.reading)
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lists_read_at_most_list_slots_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lists.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (name TEXT, object BLOB);")
            .unwrap();
        let readers = Arc::new(Readers::new(&path));
        // A read that takes a while (counting in SQL), then finds no row.
        let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                    WHERE x < 400000) \
                    SELECT CAST(x AS TEXT), NULL FROM c WHERE x < 0";
        let lists: Vec<_> = (0..3 * LIST_SLOTS)
            .map(|_| {
                let r = Arc::clone(&readers);
                tokio::spawn(async move { r.list(slow.to_string(), Vec::new()).await })
            })
            .collect();
        for l in lists {
            assert!(l.await.unwrap().unwrap().is_empty());
        }
        // At least two at once, or the test proved nothing; never more
        // than the slots.
        let most = readers.most_reading.load(Ordering::Acquire);
        assert!(
            (2..=LIST_SLOTS).contains(&most),
            "{} lists at once read {most} at a time (slots: {LIST_SLOTS})",
            3 * LIST_SLOTS
        );
        assert_eq!(readers.reading.load(Ordering::Acquire), 0);
        assert_eq!(readers.list_slots.available_permits(), LIST_SLOTS);
    }
}

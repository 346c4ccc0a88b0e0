//! SQLite reads: point reads on the caller's own thread (one object or
//! renewal by name, the change events after a resource version, the next
//! forwarding time, counters) and pages (lists, cleaner pages), which run
//! in Tokio's blocking pool.
//!
//! Why inline: a hand-off to a worker thread and back per statement cost
//! more than the reads themselves on a 2-core VM (+8 % issued/s without
//! them, docs/BENCHMARKS.md). These reads are short (an index lookup, or
//! one page of events) and WAL lets them run beside the writer without
//! waiting for it. A page can scan far, so it never runs inline: it goes
//! to the blocking pool, one hand-off per page.
//!
//! Connections are opened `query_only`: this module must never write, and
//! never hold a connection across an await (a list takes its connection
//! inside the blocking task).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use certsign_proto::v1::{CertificateSigningRequest, SignedStatement};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};
use tokio::sync::Semaphore;

use crate::decision::State;
use crate::store::schema::{
    COUNT_BY_STATE, COUNT_PENDING, EVENTS_AFTER, LATEST_RV, NEXT_FORWARD_TIME, OBJECT_BY_NAME,
    PRUNED_THROUGH, RENEWAL_BY_NAME, list_query, page_query,
};
use crate::store::types::{
    Event, Keep, ListFilter, ListPage, PageBy, StoreError, decode, decode_renewal, decode_stored,
};

/// Idle connections kept for reuse; a burst beyond this opens more and
/// closes the extra ones afterwards.
const MAX_IDLE: usize = 4;

/// Pages reading at once:
/// more wait their turn instead of each taking a blocking thread and a
/// connection of its own.
const LIST_SLOTS: usize = 4;

/// A small pool of read-only connections to one SQLite file.
#[derive(Debug)]
pub(in crate::store) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    list_slots: Arc<Semaphore>,
    /// Lists reading right now, and the most ever at once: the bound
    /// [`LIST_SLOTS`] made observable (a test holds the store to it).
    reading: AtomicUsize,
    most_reading: AtomicUsize,
}

impl Readers {
    pub(in crate::store) fn new(path: &Path) -> Self {
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
    pub(super) fn with<T>(
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
    pub(in crate::store) fn get(
        &self,
        name: &str,
    ) -> Result<Option<CertificateSigningRequest>, StoreError> {
        self.with(|c| {
            let bytes: Option<Option<Vec<u8>>> = c
                .prepare_cached(OBJECT_BY_NAME)?
                .query_row(params![name], |r| r.get(0))
                .optional()?;
            bytes.map(|b| decode_stored(name, b)).transpose()
        })
    }

    /// Up to `limit` events after resource version `after`, oldest first.
    pub(in crate::store) fn events_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(EVENTS_AFTER)?;
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
    /// Tokio's blocking pool, at most [`LIST_SLOTS`] pages at once.
    pub(in crate::store) async fn list(
        self: &Arc<Self>,
        sql: String,
        binds: Vec<String>,
    ) -> Result<Vec<CertificateSigningRequest>, StoreError> {
        self.paged(move |r| r.list_page(&sql, &binds)).await
    }

    /// See [`crate::store::Store::list_snapshot`]: one read transaction
    /// (one WAL snapshot) for the counter and every page it reads.
    pub(in crate::store) async fn list_snapshot(
        self: &Arc<Self>,
        filter: ListFilter,
        after: Option<String>,
        limit: u32,
        keep: Keep,
    ) -> Result<ListPage, StoreError> {
        let want = limit.max(1) as usize;
        self.paged(move |r| {
            r.with(|c| {
                let tx = c.unchecked_transaction()?;
                let resource_version: i64 =
                    tx.prepare_cached(LATEST_RV)?.query_row([], |r| r.get(0))?;
                let mut items = Vec::new();
                let mut after = after;
                loop {
                    let (sql, binds) = list_query(&filter, after.as_deref(), limit);
                    let mut stmt = tx.prepare_cached(&sql)?;
                    let mut rows = stmt.query(rusqlite::params_from_iter(binds.iter()))?;
                    let mut read = 0;
                    while let Some(row) = rows.next()? {
                        let name: String = row.get(0)?;
                        let obj = decode_stored(&name, row.get(1)?)?;
                        read += 1;
                        after = Some(name);
                        if keep(&obj) {
                            items.push(obj);
                            if items.len() >= want {
                                break;
                            }
                        }
                    }
                    if items.len() >= want || read < want {
                        break;
                    }
                }
                tx.commit()?;
                Ok(ListPage {
                    items,
                    resource_version,
                })
            })
        })
        .await
    }

    /// See [`crate::store::Store::pruned_through`].
    pub(in crate::store) fn pruned_through(&self) -> Result<i64, StoreError> {
        self.with(|c| {
            Ok(c.prepare_cached(PRUNED_THROUGH)?
                .query_row([], |r| r.get(0))?)
        })
    }

    /// One page of the rows in `state` whose `by` column lies in `range`,
    /// after the key `after`, with that column's value (the cleaner's
    /// candidates, see [`page_query`]).
    pub(in crate::store) async fn page_by_state(
        self: &Arc<Self>,
        state: State,
        by: PageBy,
        range: std::ops::Range<i64>,
        after: (i64, String),
        limit: u32,
    ) -> Result<Vec<(i64, CertificateSigningRequest)>, StoreError> {
        self.paged(move |r| {
            r.with(|c| {
                let mut stmt = c.prepare_cached(&page_query(by, limit))?;
                let rows = stmt.query_map(
                    params![state.as_str(), range.start, range.end, after.0, after.1],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, Option<Vec<u8>>>(2)?,
                        ))
                    },
                )?;
                let mut page = Vec::new();
                for row in rows {
                    let (name, key, bytes) = row?;
                    page.push((key, decode_stored(&name, bytes)?));
                }
                Ok(page)
            })
        })
        .await
    }

    /// Runs a page read in Tokio's blocking pool, at most [`LIST_SLOTS`]
    /// at once.
    pub(super) async fn paged<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Self) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
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
            let page = read(&readers);
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

    /// See [`crate::store::Store::next_forward_time`].
    pub(in crate::store) fn next_forward_time(&self) -> Result<Option<i64>, StoreError> {
        self.with(|c| {
            Ok(c.prepare_cached(NEXT_FORWARD_TIME)?
                .query_row([], |r| r.get(0))?)
        })
    }

    /// The renewal statement stored with a request, if any.
    pub(in crate::store) fn renewal(
        &self,
        name: &str,
    ) -> Result<Option<SignedStatement>, StoreError> {
        let bytes: Option<Vec<u8>> = self.with(|c| {
            Ok(c.prepare_cached(RENEWAL_BY_NAME)?
                .query_row(params![name], |r| r.get(0))
                .optional()?)
        })?;
        decode_renewal(name, bytes)
    }

    /// The newest resource version handed out.
    pub(in crate::store) fn latest_resource_version(&self) -> Result<i64, StoreError> {
        self.with(|c| Ok(c.prepare_cached(LATEST_RV)?.query_row([], |r| r.get(0))?))
    }

    /// Pending requests of one requestor.
    pub(in crate::store) fn count_pending(&self, username: &str) -> Result<i64, StoreError> {
        self.with(|c| {
            Ok(c.prepare_cached(COUNT_PENDING)?
                .query_row(params![username], |r| r.get(0))?)
        })
    }

    /// Requests per (state, signer name), read in the blocking pool (a
    /// scan of the table).
    pub(in crate::store) async fn count_by_state(
        self: &Arc<Self>,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.paged(|r| {
            r.with(|c| {
                let mut st = c.prepare_cached(COUNT_BY_STATE)?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
        })
        .await
    }

    /// A trivial query, in the blocking pool, answered within `limit` (the
    /// health check's probe).
    pub(in crate::store) async fn ping(
        self: &Arc<Self>,
        limit: std::time::Duration,
    ) -> Result<(), StoreError> {
        let readers = Arc::clone(self);
        let probe = tokio::task::spawn_blocking(move || {
            readers.with(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
        });
        match tokio::time::timeout(limit, probe).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(StoreError::ReadFailed(e.to_string())),
            Err(_) => Err(StoreError::ReadFailed(format!(
                "no answer within {limit:?}"
            ))),
        }
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

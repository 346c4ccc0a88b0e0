//! SQLite connections: the file a `sqlite:` URL names, and the settings
//! every read-write connection runs with (WAL, `synchronous = FULL`, a
//! busy timeout, the statement journal in memory).
//!
//! This module must never weaken those settings: with them an
//! acknowledged write survives kill -9 and power loss.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::store::types::StoreError;

/// SQLite's per-connection settings, in order.
pub(super) const SQLITE_PRAGMAS: [&str; 4] = [
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
pub(super) const SQLITE_TEMP_STORE: &str = "PRAGMA temp_store = MEMORY";

/// The database a `sqlite:` URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) path: PathBuf,
    /// `mode=rwc`: create the file when it is missing (`rw`, the default,
    /// does not).
    pub(super) create: bool,
}

/// Parses `sqlite://PATH[?mode=rw|rwc]` (also `sqlite:PATH`); the path is
/// percent-decoded, so `?` or `#` can be part of a file name. In-memory
/// databases and read-only mode are refused: the store must keep what it
/// acknowledged, and it writes.
pub(super) fn parse_url(url: &str) -> Result<Target, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or(StoreError::UnsupportedUrl)?;
    let (file, query) = match rest.split_once('?') {
        Some((f, q)) => (f, Some(q)),
        None => (rest, None),
    };
    let file = percent_encoding::percent_decode_str(file)
        .decode_utf8()
        .map_err(|_| StoreError::UnsupportedUrl)?;
    if file.is_empty() || file == ":memory:" {
        return Err(StoreError::UnsupportedUrl);
    }
    let mut create = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("mode", "rwc") => create = true,
            ("mode", "rw") | ("cache", "private" | "shared") => {}
            _ => return Err(StoreError::UnsupportedUrl),
        }
    }
    Ok(Target {
        path: PathBuf::from(&*file),
        create,
    })
}

/// A read-write connection with [`SQLITE_PRAGMAS`] applied.
pub(super) fn open(path: &Path, create: bool) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    for pragma in SQLITE_PRAGMAS {
        conn.execute_batch(pragma)?;
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_name_their_file_and_mode() {
        let t = parse_url("sqlite:///var/lib/a.db?mode=rwc").unwrap();
        assert_eq!(t.path, PathBuf::from("/var/lib/a.db"));
        assert!(t.create);
        let t = parse_url("sqlite:rel/a%3Fb.db").unwrap();
        assert_eq!(t.path, PathBuf::from("rel/a?b.db"));
        assert!(!t.create);
        for bad in [
            "sqlite::memory:",
            "sqlite://",
            "sqlite://a.db?mode=memory",
            "sqlite://a.db?mode=ro",
            "sqlite://a.db?vfs=x",
            "postgres://x",
        ] {
            assert!(
                matches!(parse_url(bad), Err(StoreError::UnsupportedUrl)),
                "{bad}"
            );
        }
    }
}

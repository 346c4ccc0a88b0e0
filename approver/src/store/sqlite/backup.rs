//! `certsign-approver backup` on SQLite: a consistent copy of a live store
//! with `VACUUM INTO` (one read transaction, so the copy is one committed
//! state even while the approver writes), written under a temporary name,
//! checked (`PRAGMA integrity_check`), fsynced and only then renamed to the
//! name asked for.
//!
//! It must never write to the live store and never leave a half-written
//! file under the name asked for, nor overwrite an existing file.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};

use crate::store::types::StoreError;

fn failed(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::NotStored(format!("{what} {}: {e}", path.display()))
}

/// Copy the store at `url` to the new file `out`; returns how many requests
/// the copy holds.
pub(in crate::store) fn vacuum_into(url: &str, out: &Path) -> Result<u64, StoreError> {
    let target = super::conn::parse_url(url)?;
    if out.exists() {
        return Err(failed("backup: refusing to overwrite", out, "it exists"));
    }
    let name = out
        .file_name()
        .ok_or_else(|| failed("backup:", out, "not a file name"))?;
    let tmp = out.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let _ = std::fs::remove_file(&tmp);
    // Read-write without create (a WAL reader needs the -shm file), but
    // it only reads: the copy is a read transaction.
    let live = Connection::open_with_flags(
        &target.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    live.busy_timeout(std::time::Duration::from_secs(30))?;
    let copied = live
        .execute("VACUUM INTO ?1", params![tmp.to_string_lossy()])
        .map_err(StoreError::from)
        .and_then(|_| check(&tmp));
    let requests = match copied {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| failed("backup: fsync", &tmp, e))?;
    std::fs::rename(&tmp, out).map_err(|e| failed("backup: rename to", out, e))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(requests)
}

/// The copy passes SQLite's integrity check; its request count.
fn check(copy: &Path) -> Result<u64, StoreError> {
    let c = Connection::open_with_flags(copy, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let verdict: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(failed("backup: the copy", copy, verdict));
    }
    let n: i64 = c.query_row("SELECT count(*) FROM csrs", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

//! Writing a renewed certificate or key in place: whole or not at all (a
//! temporary file beside it with the final mode, fsynced, renamed over it,
//! the directory fsynced), and checking first that it can be written, so a
//! read-only place is found before anything is issued.
//!
//! It must never leave a half-written file at the target path.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// `.NAME.new` beside `path`.
fn beside(path: &Path) -> Result<PathBuf, FileError> {
    let name = path.file_name().ok_or_else(|| FileError {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    Ok(path.with_file_name(format!(".{}.new", name.to_string_lossy())))
}

/// A new file can be made beside `path` (the error names the probe file).
pub fn writable(path: &Path) -> Result<(), FileError> {
    let probe = beside(path)?;
    std::fs::File::create(&probe).map_err(|source| FileError {
        path: probe.clone(),
        source,
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Write `data` to `path` with `mode`, whole or not at all.
pub fn write_atomically(path: &Path, data: &[u8], mode: u32) -> Result<(), FileError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let at = |source| FileError {
        path: path.to_path_buf(),
        source,
    };
    let tmp = beside(path)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(at)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(at)?;
    std::fs::rename(&tmp, path).map_err(at)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn replaces_whole_with_the_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls.key");
        std::fs::write(&path, b"old").unwrap();
        writable(&path).unwrap();
        write_atomically(&path, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "a temporary file was left behind");
    }

    #[test]
    fn a_read_only_place_is_an_error_naming_the_file() {
        let e = writable(Path::new("/proc/version")).unwrap_err();
        assert!(e.to_string().starts_with("/proc/.version.new: "), "{e}");
    }
}

//! Atomic file output: a temp file in the target's directory (created 0600),
//! written and fsynced, then renamed over the target. A reader never sees a
//! partial file, and a failed command leaves no file behind.
//!
//! Key files are *staged* before a request is sent and *committed* only after
//! the server accepted it: the key is on disk (as `.NAME.XXXX.tmp`) before
//! anyone could issue a certificate for it, so it can never be lost, and the
//! real path is never clobbered by a request that failed.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};

/// A written, fsynced temp file waiting to be renamed into place.
#[derive(Debug)]
pub struct Staged {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

/// Refuses an existing target unless `force`.
pub fn check_target(path: &Path, force: bool) -> Result<()> {
    if !force && std::fs::symlink_metadata(path).is_ok() {
        bail!(
            "{} already exists (use --force to overwrite)",
            path.display()
        );
    }
    Ok(())
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `contents` to a temp file next to `path` with `mode`.
pub fn stage(path: &Path, contents: &[u8], mode: u32) -> Result<Staged> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = dir_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{} is not a file path", path.display()))?;
    // tempfile creates the file 0600 (O_EXCL), so a key is never readable by others.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| {
            anyhow!(
                "cannot write {}: {}",
                path.display(),
                crate::output::io_reason(&e)
            )
        })?;
    let write = |tmp: &mut tempfile::NamedTempFile| -> std::io::Result<()> {
        tmp.write_all(contents)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        tmp.as_file().sync_all()
    };
    write(&mut tmp).map_err(|e| {
        anyhow!(
            "cannot write {}: {}",
            path.display(),
            crate::output::io_reason(&e)
        )
    })?;
    Ok(Staged {
        tmp,
        target: path.to_path_buf(),
    })
}

impl Staged {
    /// Renames into place (refusing to replace an existing file unless
    /// `force`). On failure the temp file is kept and named in the error, so
    /// a key that a server already knows about is not lost.
    pub fn commit(self, force: bool) -> Result<()> {
        let target = self.target.clone();
        let result = if force {
            self.tmp.persist(&target)
        } else {
            self.tmp.persist_noclobber(&target)
        };
        match result {
            Ok(_) => {
                // Make the rename durable.
                if let Ok(d) = File::open(dir_of(&target)) {
                    let _ = d.sync_all();
                }
                Ok(())
            }
            Err(e) => {
                let reason = crate::output::io_reason(&e.error);
                match e.file.keep() {
                    Ok((_, kept)) => Err(anyhow!(
                        "cannot write {}: {reason} (the new content was kept in {})",
                        target.display(),
                        kept.display()
                    )),
                    Err(_) => Err(anyhow!("cannot write {}: {reason}", target.display())),
                }
            }
        }
    }

    /// Renames into `other` instead of the original target (replacing it).
    pub fn commit_to(mut self, other: &Path) -> Result<()> {
        self.target = other.to_path_buf();
        self.commit(true)
    }

    /// The temp file's path.
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }
}

/// Stages and commits in one step.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<()> {
    check_target(path, force)?;
    stage(path, contents, mode)?.commit(force)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn writes_with_mode_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        write_atomic(&p, b"one", 0o600, false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let err = write_atomic(&p, b"two", 0o600, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists"), "{err}");
        write_atomic(&p, b"two", 0o644, true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp files left"
        );
    }

    #[test]
    fn dropped_stage_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        let staged = stage(&p, b"secret", 0o600).unwrap();
        assert!(staged.temp_path().exists());
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_race_keeps_the_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        let staged = stage(&p, b"secret", 0o600).unwrap();
        std::fs::write(&p, b"other").unwrap();
        let err = staged.commit(false).unwrap_err().to_string();
        assert!(err.contains("kept in"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"other");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}

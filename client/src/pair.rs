//! A certificate and its key on disk, replaced as a pair: the two paths
//! never name a half-written file, a crash at any point leaves a whole pair
//! in place, and a renewal in flight survives the crash.
//!
//! Layout when the certificate and the key share a directory (the usual
//! case): CERT and KEY are symlinks to `.certctl-<CERT name>/current/<name>`,
//! and `current` is a symlink to one generation directory holding both
//! files. Installing a pair writes a new generation (every file fsynced)
//! and then renames a new `current` symlink over the old one: one rename
//! switches both files, so a reader resolving the paths sees the old pair
//! or the new one, never one of each. The first installation turns plain
//! files into this layout, every step pointing at a copy of the same old
//! pair. The previous generation is kept (and `.bak` copies next to the
//! files); older ones are removed.
//!
//! When the two files live in different directories (or are symlinks that
//! certctl did not make), the new certificate is first written as
//! `CERT.new`, then the key is replaced, then `CERT.new` is renamed over the
//! certificate. A crash between the last two steps leaves the new key with
//! the old certificate for a moment; [`recover`] finishes the installation
//! from `KEY.new` and `CERT.new` on the next run, before anything else.
//!
//! Pending renewal: before a request is sent, the new key is written to
//! `KEY.new` and the request's name to `KEY.new.name`, so a later run
//! resumes that request rather than asking again (the signer renews a
//! certificate once).
//!
//! This module never writes a file in place, never removes the live pair or
//! the previous one, and never talks to the network.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use zeroize::Zeroizing;

use crate::files;
use crate::pkix::{self, PrivateKey};

/// Test hook: with this set to N, installation prints each step on stderr
/// and pauses N milliseconds after it, so a test can kill certctl there.
pub const PAUSE_ENV: &str = "CERTCTL_TEST_INSTALL_PAUSE_MS";

/// `path` with `suffix` appended to the file name (`.bak`, `.new`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn io_err(what: &str, path: &Path, e: &std::io::Error) -> anyhow::Error {
    anyhow!(
        "cannot {what} {}: {}",
        path.display(),
        crate::output::io_reason(e)
    )
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{} is not a file path", path.display()))
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Prints and pauses at a step of a renewal when [`PAUSE_ENV`] is set.
pub fn step(what: &str) {
    if let Some(ms) = std::env::var(PAUSE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        eprintln!("certctl: install step: {what}");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// A renewal whose request was (or is about to be) sent.
#[derive(Debug)]
pub struct Pending {
    /// The request name.
    pub name: String,
    /// The new key.
    pub key: PrivateKey,
}

/// `KEY.new` and `KEY.new.name`.
fn pending_paths(key_path: &Path) -> (PathBuf, PathBuf) {
    (
        with_suffix(key_path, ".new"),
        with_suffix(key_path, ".new.name"),
    )
}

/// The pending renewal of the pair at `key_path`, if one was started.
pub fn read_pending(key_path: &Path) -> Result<Option<Pending>> {
    let (new_key, name_path) = pending_paths(key_path);
    let name = match std::fs::read_to_string(&name_path) {
        Ok(n) => n.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &name_path, &e)),
    };
    let pem = match std::fs::read(&new_key) {
        Ok(p) => Zeroizing::new(p),
        // The name without its key: the key was never written.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = std::fs::remove_file(&name_path);
            return Ok(None);
        }
        Err(e) => return Err(io_err("read", &new_key, &e)),
    };
    let key = PrivateKey::from_pem(&pem)
        .map_err(|e| anyhow!("cannot read key {}: {e}", new_key.display()))?;
    Ok(Some(Pending { name, key }))
}

/// Records a renewal about to be sent: the key first, then the name (each
/// durable), so a name on disk always has its key.
pub fn write_pending(key_path: &Path, name: &str, key: &PrivateKey) -> Result<PathBuf> {
    let (new_key, name_path) = pending_paths(key_path);
    files::write_atomic(&new_key, key.pkcs8_pem()?.as_bytes(), 0o600, true)?;
    files::write_atomic(&name_path, format!("{name}\n").as_bytes(), 0o600, true)?;
    Ok(new_key)
}

/// Forgets the pending renewal (the name first: a key without a name is
/// never resumed).
pub fn clear_pending(cert_path: &Path, key_path: &Path) {
    let (new_key, name_path) = pending_paths(key_path);
    let _ = std::fs::remove_file(name_path);
    let _ = std::fs::remove_file(new_key);
    let _ = std::fs::remove_file(with_suffix(cert_path, ".new"));
    sync_dir(&dir_of(key_path));
}

/// The public key of the first certificate in a PEM file's bytes.
fn cert_public_key(pem: &[u8]) -> Option<Vec<u8>> {
    let der = pkix::certs_der_from_pem(pem).into_iter().next()?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(c.public_key().subject_public_key.data.to_vec())
}

/// Finishes an installation a crash interrupted (the split-directory way):
/// `CERT.new` and `KEY.new` that belong together are put in place. Returns
/// whether it did.
pub fn recover(cert_path: &Path, key_path: &Path) -> Result<bool> {
    let cert_new = with_suffix(cert_path, ".new");
    let Ok(cert_pem) = std::fs::read(&cert_new) else {
        return Ok(false);
    };
    let (new_key, _) = pending_paths(key_path);
    let Ok(key_pem) = std::fs::read(&new_key).map(Zeroizing::new) else {
        let _ = std::fs::remove_file(&cert_new);
        return Ok(false);
    };
    let key = PrivateKey::from_pem(&key_pem)
        .map_err(|e| anyhow!("cannot read key {}: {e}", new_key.display()))?;
    if cert_public_key(&cert_pem).as_deref() != Some(key.public_key_raw().as_slice()) {
        let _ = std::fs::remove_file(&cert_new);
        return Ok(false);
    }
    split_install(cert_path, key_path, &cert_pem, &key_pem)?;
    clear_pending(cert_path, key_path);
    Ok(true)
}

/// The generation layout of a pair in one directory.
#[derive(Debug)]
struct Layout {
    dir: PathBuf,
    /// `.certctl-<cert name>`, relative to `dir`.
    store: String,
    cert_name: String,
    key_name: String,
}

impl Layout {
    /// The layout for the pair, or None when it cannot have one (different
    /// directories, or symlinks certctl did not make).
    fn of(cert_path: &Path, key_path: &Path) -> Result<Option<Self>> {
        let dir = dir_of(cert_path);
        if dir != dir_of(key_path) {
            return Ok(None);
        }
        let cert_name = file_name(cert_path)?;
        let l = Self {
            store: format!(".certctl-{cert_name}"),
            key_name: file_name(key_path)?,
            cert_name,
            dir,
        };
        let ok = |path: &Path, name: &str| match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() => true,
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::read_link(path).ok() == Some(l.link_target(name))
            }
            _ => false,
        };
        Ok((ok(cert_path, &l.cert_name) && ok(key_path, &l.key_name)).then_some(l))
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.join(&self.store)
    }

    /// What CERT and KEY point at.
    fn link_target(&self, name: &str) -> PathBuf {
        Path::new(&self.store).join("current").join(name)
    }

    /// Writes a generation holding the pair and returns its name.
    fn write_generation(&self, cert_pem: &[u8], cert_mode: u32, key_pem: &[u8]) -> Result<String> {
        let store = self.store_dir();
        std::fs::create_dir_all(&store).map_err(|e| io_err("create", &store, &e))?;
        let _ = std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755));
        let mut rand = [0u8; 4];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut rand);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("g-{nanos}-{}", hex::encode(rand));
        let gen_dir = store.join(&name);
        std::fs::create_dir(&gen_dir).map_err(|e| io_err("create", &gen_dir, &e))?;
        let _ = std::fs::set_permissions(&gen_dir, std::fs::Permissions::from_mode(0o755));
        files::write_atomic(&gen_dir.join(&self.key_name), key_pem, 0o600, true)?;
        files::write_atomic(&gen_dir.join(&self.cert_name), cert_pem, cert_mode, true)?;
        sync_dir(&store);
        Ok(name)
    }

    /// Points `current` at generation `name` with one rename; returns the
    /// generation it pointed at before.
    fn switch(&self, name: &str) -> Result<Option<String>> {
        let store = self.store_dir();
        let current = store.join("current");
        let before = std::fs::read_link(&current)
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        replace_with_symlink(&current, Path::new(name))?;
        Ok(before)
    }

    /// Makes CERT and KEY symlinks through `current` (a no-op once they are).
    fn link(&self, path: &Path, name: &str) -> Result<()> {
        let target = self.link_target(name);
        if std::fs::read_link(path).ok().as_deref() == Some(target.as_path()) {
            return Ok(());
        }
        replace_with_symlink(path, &target)
    }

    /// Removes generations other than `keep` (and stray temp links).
    fn prune(&self, keep: &[&str]) {
        let Ok(entries) = std::fs::read_dir(self.store_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "current" || keep.contains(&name.as_str()) {
                continue;
            }
            let p = e.path();
            let _ = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Creates a symlink at a temp name and renames it over `path`, durably.
fn replace_with_symlink(path: &Path, target: &Path) -> Result<()> {
    let dir = dir_of(path);
    let mut rand = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut rand);
    let tmp = dir.join(format!(".{}.{}.link", file_name(path)?, hex::encode(rand)));
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| io_err("create", &tmp, &e))?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("replace", path, &e));
    }
    sync_dir(&dir);
    Ok(())
}

/// The split-directory installation: `CERT.new`, then the key, then the
/// certificate (see the module text).
fn split_install(cert_path: &Path, key_path: &Path, cert_pem: &[u8], key_pem: &[u8]) -> Result<()> {
    let cert_new = with_suffix(cert_path, ".new");
    let mode = mode_of(cert_path);
    files::write_atomic(&cert_new, cert_pem, mode, true)?;
    step("certificate written as CERT.new");
    files::write_atomic(key_path, key_pem, 0o600, true)?;
    step("key replaced");
    std::fs::rename(&cert_new, cert_path).map_err(|e| io_err("replace", cert_path, &e))?;
    sync_dir(&dir_of(cert_path));
    Ok(())
}

/// The certificate file's mode (0644 when unknown).
fn mode_of(cert_path: &Path) -> u32 {
    std::fs::metadata(cert_path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o644)
}

/// Replaces the pair at (`cert_path`, `key_path`), currently
/// (`old_cert`, `old_key`), with (`cert_pem`, the key in `key_pem`),
/// keeping the old pair as `.bak` files first.
pub fn install(
    cert_path: &Path,
    key_path: &Path,
    old: (&[u8], &[u8]),
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(PathBuf, PathBuf)> {
    let cert_bak = with_suffix(cert_path, ".bak");
    let key_bak = with_suffix(key_path, ".bak");
    files::write_atomic(&cert_bak, old.0, 0o644, true)?;
    files::write_atomic(&key_bak, old.1, 0o600, true)?;
    step("backups written");
    let cert_mode = mode_of(cert_path);
    match Layout::of(cert_path, key_path)? {
        Some(l) => {
            if std::fs::read_link(cert_path).is_err() || std::fs::read_link(key_path).is_err() {
                // Plain files: first a generation holding a copy of the old pair.
                let first = l.write_generation(old.0, cert_mode, old.1)?;
                step("old pair copied into a generation");
                l.switch(&first)?;
                l.link(cert_path, &l.cert_name)?;
                step("certificate linked");
                l.link(key_path, &l.key_name)?;
                step("key linked");
            }
            let name = l.write_generation(cert_pem, cert_mode, key_pem)?;
            step("new generation written");
            let previous = l.switch(&name)?;
            step("switched to the new pair");
            let keep: Vec<&str> = std::iter::once(name.as_str())
                .chain(previous.as_deref())
                .collect();
            l.prune(&keep);
        }
        None => split_install(cert_path, key_path, cert_pem, key_pem)?,
    }
    Ok((cert_bak, key_bak))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pair(dir: &Path, cn: &str) -> (Vec<u8>, Zeroizing<String>) {
        let key = PrivateKey::generate(pkix::KeyType::P256).unwrap();
        let pem = key.pkcs8_pem().unwrap();
        let kp = rcgen::KeyPair::from_pem(&pem).unwrap();
        let cert = rcgen::CertificateParams::new(vec![cn.into()])
            .unwrap()
            .self_signed(&kp)
            .unwrap()
            .pem();
        let _ = dir;
        (cert.into_bytes(), pem)
    }

    fn matches(cert: &Path, key: &Path) -> bool {
        let k = PrivateKey::from_pem(&std::fs::read(key).unwrap()).unwrap();
        cert_public_key(&std::fs::read(cert).unwrap()).unwrap() == k.public_key_raw()
    }

    #[test]
    fn same_directory_pairs_switch_with_one_rename_and_keep_one_previous_generation() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = (d.path().join("tls.crt"), d.path().join("tls.key"));
        let (c0, k0) = pair(d.path(), "a");
        std::fs::write(&c, &c0).unwrap();
        std::fs::write(&k, k0.as_bytes()).unwrap();
        let mut old = (c0, k0);
        for round in 0..3 {
            let new = pair(d.path(), "a");
            install(&c, &k, (&old.0, old.1.as_bytes()), &new.0, new.1.as_bytes()).unwrap();
            assert!(matches(&c, &k), "round {round}");
            assert_eq!(std::fs::read(&c).unwrap(), new.0);
            assert_eq!(
                std::fs::read_link(&c).unwrap(),
                Path::new(".certctl-tls.crt/current/tls.crt")
            );
            assert_eq!(
                std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
                0o600
            );
            // `current` plus this generation and the previous one.
            let n = std::fs::read_dir(d.path().join(".certctl-tls.crt"))
                .unwrap()
                .count();
            assert_eq!(n, 3, "round {round}");
            old = new;
        }
    }

    #[test]
    fn split_directories_recover_an_interrupted_install() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("certs")).unwrap();
        std::fs::create_dir(d.path().join("private")).unwrap();
        let (c, k) = (
            d.path().join("certs/tls.crt"),
            d.path().join("private/tls.key"),
        );
        let (c0, k0) = pair(d.path(), "a");
        std::fs::write(&c, &c0).unwrap();
        std::fs::write(&k, k0.as_bytes()).unwrap();
        // A renewal was pending and crashed after the key was replaced.
        let new_key = PrivateKey::generate(pkix::KeyType::P256).unwrap();
        write_pending(&k, "r", &new_key).unwrap();
        let kp = rcgen::KeyPair::from_pem(&new_key.pkcs8_pem().unwrap()).unwrap();
        let c1 = rcgen::CertificateParams::new(vec!["a".into()])
            .unwrap()
            .self_signed(&kp)
            .unwrap()
            .pem();
        std::fs::write(with_suffix(&c, ".new"), &c1).unwrap();
        std::fs::write(&k, new_key.pkcs8_pem().unwrap().as_bytes()).unwrap();
        assert!(!matches(&c, &k));
        assert_eq!(read_pending(&k).unwrap().unwrap().name, "r");
        assert!(recover(&c, &k).unwrap());
        assert!(matches(&c, &k));
        assert_eq!(std::fs::read(&c).unwrap(), c1.as_bytes());
        assert!(read_pending(&k).unwrap().is_none());
        assert!(!recover(&c, &k).unwrap());
    }
}

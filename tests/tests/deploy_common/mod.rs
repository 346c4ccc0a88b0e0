//! Shared helpers for the `deploy_*` integration tests: where the repository
//! and the built binaries are, required outside tools, free ports, and child
//! processes that die with the test. Never starts anything it cannot stop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// The repository root (the workspace this test crate belongs to).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The profile directory the test executable was built into
/// (`<target>/<profile>`), where `cargo build --bins` puts the binaries.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// The cargo target directory the tests were built with.
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("<target>/<profile> has a parent")
        .to_path_buf()
}

/// A workspace binary built next to this test; fails loudly when missing.
pub fn bin(name: &str) -> PathBuf {
    let p = profile_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before the deploy tests",
        p.display()
    );
    p
}

/// Fails loudly if an outside tool the test relies on is not installed.
pub fn require_tool(tool: &str, install_hint: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "required tool `{tool}` is not installed ({install_hint})"
    );
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for components whose
/// listen address is fixed in a config written before they start).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Runs a command to completion, capturing output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and panics with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A child process killed (and reaped) when the guard drops, so a failing
/// assertion never leaves a daemon behind.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `BIN serve --config CONFIG` with stdout/stderr in `log` and waits
/// until the log shows its `listening on <addr>` line; returns the guard and
/// the address.
pub fn serve(binary: &Path, config: &Path, log: &Path) -> (KillOnDrop, String) {
    let out = std::fs::File::create(log).expect("create log");
    let err = out.try_clone().expect("clone log handle");
    let child = Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let mut guard = KillOnDrop(child);
    // A bound on how long we wait, not an assertion about speed: a daemon
    // that never listens fails the test instead of hanging it.
    for _ in 0..600 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("listening on")) {
            let addr = line
                .split("listening on")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_default()
                .trim_matches(|c| c == '"' || c == '\'')
                .trim_start_matches("https://")
                .to_string();
            return (guard, addr);
        }
        if let Ok(Some(status)) = guard.0.try_wait() {
            panic!(
                "{} serve --config {} exited with {status}:\n{text}",
                binary.display(),
                config.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "{} did not print `listening on` within 60s:\n{}",
        binary.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Appends a bootstrap token for `kubernetes.io/kube-apiserver-client` to an
/// approver config (before the approver starts) and returns `<id>.<secret>`:
/// the way a user without a certificate submits a request that an admin
/// (never the requestor) then approves.
pub fn add_bootstrap_token(approver_toml: &Path) -> String {
    use std::io::{Read, Write};
    let mut raw = [0u8; 11];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .expect("read /dev/urandom");
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let (id, secret) = (&hex[..6], &hex[6..22]);
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(secret.as_bytes())
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    let digest = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(approver_toml)
        .expect("open approver.toml");
    write!(
        f,
        "\n[[bootstrap_tokens]]\nid = \"{id}\"\nsecret_sha256 = \"{digest}\"\n\
         expires = \"2099-01-01T00:00:00Z\"\n\
         signer_names = [\"kubernetes.io/kube-apiserver-client\"]\nmax_uses = 10\n"
    )
    .expect("append token");
    format!("{id}.{secret}")
}

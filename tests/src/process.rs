//! Processes under test: where the built binaries are, running a command to
//! completion, and the one spawner of long-running daemons (start, wait
//! for the `listening on <addr>` line, logs, signals, restart, kill on
//! drop).
//!
//! It must never leave a process behind: every daemon it starts is killed
//! and reaped when its handle drops, and a daemon that never listens fails
//! the test instead of hanging it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a daemon may take to print its `listening on` line: a bound on
/// the wait, not an assertion about speed.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);

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

/// The directory holding the workspace's built binaries (target/debug).
pub fn bin_dir() -> PathBuf {
    profile_dir()
}

/// The cargo target directory the tests were built with.
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("<target>/<profile> has a parent")
        .to_path_buf()
}

/// Path of a workspace binary; panics with the fix when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --workspace --bins` first (tests/run.sh does)",
        p.display()
    );
    p
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs a command, returning its output; panics naming the command if it
/// cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and panics with its stdout and stderr unless it succeeds;
/// returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
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
/// listen address is fixed in a config written before they start, or as an
/// address nothing listens on).
///
/// It comes from below the kernel's ephemeral range
/// (`ip_local_port_range`): a port from inside it can be handed to another
/// socket's `bind(0)` or outgoing `connect()` in the moment between this
/// check and the daemon's own bind ("Address already in use"). Each test
/// process starts at its own place in the range and takes the next port
/// that binds.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let span = 8000.min(ephemeral_low.saturating_sub(1024));
    if span < 100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        return l.local_addr().expect("local_addr").port();
    }
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = ephemeral_low - span + (start + n) % span;
        let port = u16::try_from(port).expect("a port number");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {ephemeral_low}")
}

/// A loopback address nothing listens on (a daemon that is down).
pub fn dead_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A loopback address that accepts TCP connections and then says nothing
/// (a hung server: TLS handshakes never finish). Keep the listener alive
/// for as long as the address must hang.
pub fn silent_listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = l.local_addr().expect("local_addr").to_string();
    (l, addr)
}

/// Where a daemon's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logging {
    /// stdout is read for the address; stderr appends to the log.
    StderrAppend,
    /// stdout is read for the address; stderr replaces the log.
    StderrCreate,
    /// stdout is read for the address; stderr is dropped.
    StderrNull,
    /// stdout and stderr both replace the log, which is read for the
    /// address (the way an operator would see it).
    Combined,
}

/// How to start a daemon: program, arguments, environment and log.
#[derive(Debug, Clone)]
pub struct Spawn {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    log: PathBuf,
    logging: Logging,
}

impl Spawn {
    /// `program` with no arguments; stderr appends to `log`.
    pub fn new(program: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Spawn {
        Spawn {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            log: log.into(),
            logging: Logging::StderrAppend,
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Spawn
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds environment variables.
    pub fn envs<I, K, V>(mut self, envs: I) -> Spawn
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.envs
            .extend(envs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// stderr replaces the log instead of appending to it.
    pub fn fresh_log(mut self) -> Spawn {
        self.logging = Logging::StderrCreate;
        self
    }

    /// stderr is dropped (the log path is unused).
    pub fn quiet(mut self) -> Spawn {
        self.logging = Logging::StderrNull;
        self
    }

    /// stdout and stderr both go to a fresh log, which is read for the
    /// `listening on` line.
    pub fn combined_log(mut self) -> Spawn {
        self.logging = Logging::Combined;
        self
    }

    /// Starts the daemon and waits for its `listening on <addr>` line.
    pub fn start(self) -> Daemon {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        match self.logging {
            Logging::Combined => {
                let out = std::fs::File::create(&self.log).expect("create log");
                let err = out.try_clone().expect("clone log handle");
                cmd.stdout(out).stderr(err);
            }
            Logging::StderrAppend => {
                // Appending: a restarted daemon's log follows its previous life's.
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .expect("open log");
                cmd.stdout(Stdio::piped()).stderr(f);
            }
            Logging::StderrCreate => {
                let f = std::fs::File::create(&self.log).expect("create log");
                cmd.stdout(Stdio::piped()).stderr(f);
            }
            Logging::StderrNull => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        let mut daemon = Daemon {
            child,
            addr: String::new(),
            spawn: self,
        };
        daemon.addr = if daemon.spawn.logging == Logging::Combined {
            daemon.wait_listening_in_log()
        } else {
            daemon.wait_listening_on_stdout()
        };
        daemon
    }
}

/// A running daemon, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// The address it printed in its `listening on <addr>` line.
    pub addr: String,
    spawn: Spawn,
}

impl Daemon {
    /// Starts `program args...` (stderr appended to `log`) and waits for its
    /// `listening on <addr>` line.
    pub fn start(program: &Path, args: &[&str], log: &Path) -> Daemon {
        Spawn::new(program, log).args(args).start()
    }

    /// Starts `program serve --config CONFIG` with stdout and stderr in a
    /// fresh `log`, and waits until the log shows its `listening on` line.
    pub fn serve(program: &Path, config: &Path, log: &Path) -> Daemon {
        Spawn::new(program, log)
            .args([OsString::from("serve"), "--config".into(), config.into()])
            .combined_log()
            .start()
    }

    fn wait_listening_on_stdout(&mut self) -> String {
        let stdout = self.child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(addr) = line.trim().strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                    sent = true;
                }
            }
        });
        match rx.recv_timeout(LISTEN_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                self.kill();
                panic!(
                    "{} did not print `listening on`; its log:\n{}",
                    self.spawn.program.display(),
                    self.log()
                );
            }
        }
    }

    fn wait_listening_in_log(&mut self) -> String {
        let tries = LISTEN_TIMEOUT.as_millis() / 100;
        for _ in 0..tries {
            let text = self.log();
            if let Some(line) = text.lines().find(|l| l.contains("listening on")) {
                return line
                    .split("listening on")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .unwrap_or_default()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .trim_start_matches("https://")
                    .to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} {:?} exited with {status}:\n{text}",
                    self.spawn.program.display(),
                    self.spawn.args
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{} did not print `listening on` within {}s:\n{}",
            self.spawn.program.display(),
            LISTEN_TIMEOUT.as_secs(),
            self.log()
        );
    }

    /// Kills the daemon (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit on its own (after a signal).
    pub fn wait(&mut self) {
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        run_ok(
            Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(self.pid().to_string()),
        );
    }

    /// The log file's path.
    pub fn log_path(&self) -> &Path {
        &self.spawn.log
    }

    /// The daemon's log (stderr of every life; stdout too with
    /// [`Spawn::combined_log`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.spawn.log).unwrap_or_default()
    }

    /// Starts the same command again (after [`Daemon::kill`]), appending to
    /// the same log; the address is whatever the new process prints.
    pub fn restart(&mut self) {
        self.kill();
        let mut spawn = self.spawn.clone();
        if spawn.logging == Logging::StderrCreate {
            spawn.logging = Logging::StderrAppend;
        }
        let fresh = spawn.start();
        let old = std::mem::replace(self, fresh);
        // The old child has been reaped; dropping it kills nothing alive.
        drop(old);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// [`Daemon::serve`], returning the daemon and its address.
pub fn serve(binary: &Path, config: &Path, log: &Path) -> (Daemon, String) {
    let daemon = Daemon::serve(binary, config, log);
    let addr = daemon.addr.clone();
    (daemon, addr)
}

//! End-to-end test harness for certsign: starts the real binaries on
//! loopback with the PKI that `certsign-signer init` makes, and hands tests
//! the paths and addresses they need to drive them with outside clients
//! (openssl, grpcurl, a Python gRPC client, pkilint, rustls-webpki).
//!
//! It must never be a dependency of a service crate, and never fake a part
//! that can run for real here.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // a harness: a failed setup step should fail the test loudly

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub mod grpc;
pub mod load;

/// The directory holding the workspace's built binaries (target/debug),
/// found next to the running test executable.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test> -> target/debug
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// Path of a workspace binary; panics with the fix when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace --bins` first (tests/run.sh does)",
        p.display()
    );
    p
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a command, returning its output; panics naming the command if it
/// cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and panics with its stderr unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running daemon, killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// The address it printed in its `listening on <addr>` line.
    pub addr: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `program args...` and waits for its `listening on <addr>` line.
    pub fn start(program: &Path, args: &[&str], log: &Path) -> Daemon {
        // Appending: a restarted daemon's log follows its previous life's.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stdout = child.stdout.take().unwrap();
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
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => Daemon {
                child,
                addr,
                program: program.to_path_buf(),
                args: args.iter().map(|a| a.to_string()).collect(),
                log: log.to_path_buf(),
            },
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "{} did not print `listening on`; its log:\n{}",
                    program.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
    }

    /// Kills the daemon (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
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

    /// The daemon's log (stderr of every life).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the same command again (after [`Daemon::kill`]); the address
    /// is whatever the new process prints.
    pub fn restart(&mut self) {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let fresh = Daemon::start(&self.program, &args, &self.log);
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

/// A whole local deployment: `init` output in a temp dir, the signer and the
/// approver running on loopback ports chosen by the kernel.
#[derive(Debug)]
pub struct Stack {
    /// The `init` directory.
    pub dir: PathBuf,
    /// The signer process.
    pub signer: Daemon,
    /// The approver process.
    pub approver: Daemon,
    _tmp: tempfile::TempDir,
}

impl Stack {
    /// `init` with the default key type, then start both daemons.
    pub fn start() -> Stack {
        Stack::start_with(&[])
    }

    /// `init` with extra arguments (e.g. `["--key-type", "ed25519"]`), then
    /// start both daemons.
    pub fn start_with(init_args: &[&str]) -> Stack {
        Stack::start_configured(init_args, |_| {}, |_| {})
    }

    /// `init` with `init_args`, then `signer_cfg` and `approver_cfg` may
    /// edit `signer.toml` and `approver.toml` (after the harness set the
    /// listen addresses and the signer endpoint) before both daemons start.
    pub fn start_configured(
        init_args: &[&str],
        signer_cfg: impl FnOnce(&mut toml::Table),
        approver_cfg: impl FnOnce(&mut toml::Table),
    ) -> Stack {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        let mut init = Command::new(bin("certsign-signer"));
        init.arg("init").arg("--dir").arg(&dir).args(init_args);
        run_ok(&mut init);

        let signer_toml = dir.join("signer/signer.toml");
        edit_toml(&signer_toml, |t| {
            t.insert("listen".into(), "127.0.0.1:0".into());
            signer_cfg(t);
        });
        let signer = Daemon::start(
            &bin("certsign-signer"),
            &["serve", "--config", signer_toml.to_str().unwrap()],
            &dir.join("signer.log"),
        );

        let approver_toml = dir.join("approver/approver.toml");
        let endpoint = format!("https://{}", signer.addr);
        edit_toml(&approver_toml, |t| {
            t.insert("listen".into(), "127.0.0.1:0".into());
            let s = t.get_mut("signer").unwrap().as_table_mut().unwrap();
            s.insert(
                "endpoints".into(),
                toml::Value::Array(vec![endpoint.clone().into()]),
            );
            approver_cfg(t);
        });
        let approver = Daemon::start(
            &bin("certsign-approver"),
            &["serve", "--config", approver_toml.to_str().unwrap()],
            &dir.join("approver.log"),
        );
        Stack {
            dir,
            signer,
            approver,
            _tmp: tmp,
        }
    }

    /// Pins both daemons' listen addresses in their configs to the ports
    /// they got, so [`Daemon::restart`] brings them back where clients and
    /// the approver's signer endpoint expect them.
    pub fn pin_ports(&self) {
        let signer = self.signer.addr.clone();
        edit_toml(&self.dir.join("signer/signer.toml"), |t| {
            t.insert("listen".into(), signer.into());
        });
        let approver = self.approver.addr.clone();
        edit_toml(&self.dir.join("approver/approver.toml"), |t| {
            t.insert("listen".into(), approver.into());
        });
    }

    /// `DIR/ca.crt`.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The admin's certificate and key.
    pub fn admin(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.join("admin/admin.crt"),
            self.dir.join("admin/admin.key"),
        )
    }

    /// A `certctl` command configured as the admin against this stack.
    pub fn certctl(&self) -> Command {
        let mut c = Command::new(bin("certctl"));
        c.arg("--config")
            .arg(self.dir.join("admin/certctl.toml"))
            .arg("--server")
            .arg(format!("https://{}", self.approver.addr));
        c
    }

    /// The whole user-and-admin flow with `certctl`: `user` (cert, key)
    /// applies the manifest file `manifest`, the admin approves `name`,
    /// and `certctl certificate wait` writes the issued chain to `out`.
    pub fn apply_approve_wait(
        &self,
        user: &(PathBuf, PathBuf),
        manifest: &Path,
        name: &str,
        out: &Path,
    ) {
        run_ok(
            self.certctl()
                .arg("--cert")
                .arg(&user.0)
                .arg("--key")
                .arg(&user.1)
                .args(["apply", "-f"])
                .arg(manifest),
        );
        run_ok(self.certctl().args(["certificate", "approve", name]));
        run_ok(
            self.certctl()
                .args(["certificate", "wait", name, "--timeout", "60s", "--out"])
                .arg(out),
        );
    }

    /// Makes a user identity `cn` (groups `orgs`) signed by the CA with
    /// `openssl` (setup only: the CA key is read from the init directory),
    /// returning (cert, key).
    pub fn user(&self, cn: &str, orgs: &[&str]) -> (PathBuf, PathBuf) {
        let key = self.dir.join(format!("{cn}.key"));
        let csr = self.dir.join(format!("{cn}.csr"));
        let crt = self.dir.join(format!("{cn}.crt"));
        let ext = self.dir.join(format!("{cn}.ext"));
        let mut subj = format!("/CN={cn}");
        for o in orgs {
            subj.push_str(&format!("/O={o}"));
        }
        run_ok(
            Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args([
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-subj",
                    &subj,
                    "-keyout",
                    key.to_str().unwrap(),
                    "-out",
                    csr.to_str().unwrap(),
                ]),
        );
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        )
        .unwrap();
        run_ok(Command::new("openssl").args([
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            self.ca().to_str().unwrap(),
            "-CAkey",
            self.dir.join("signer/ca.key").to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
        ]));
        (crt, key)
    }
}

/// Rewrites a TOML file through `f`.
pub fn edit_toml(path: &Path, f: impl FnOnce(&mut toml::Table)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f(&mut table);
    std::fs::write(path, toml::to_string(&table).unwrap()).unwrap();
}

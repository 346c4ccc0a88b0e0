//! deploy/quickstart.sh, run the way a new user runs it: in a fresh clone of
//! this repository (HEAD; uncommitted changes are deliberately not in it),
//! `up` builds, creates the CA, starts both daemons and walks the story; then
//! `status`, `down`, and `up` again reusing the same CA and state.
//! The release build shares this workspace's target dir.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use certsign_tests::{free_port, repo_root, require_tool, run, run_ok, target_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A cloned checkout with the stack possibly running; `down` (and, should
/// that fail, a kill of the recorded pids) when dropped.
struct Quickstart {
    _tmp: tempfile::TempDir,
    clone: PathBuf,
    signer_port: u16,
    approver_port: u16,
    kube_port: u16,
}

impl Quickstart {
    fn script(&self, verb: &str) -> Output {
        run(Command::new("bash")
            .arg(self.clone.join("deploy/quickstart.sh"))
            .arg(verb)
            .current_dir(&self.clone)
            .env("CARGO_TARGET_DIR", target_dir())
            .env(
                "CERTSIGN_SIGNER_ADDR",
                format!("127.0.0.1:{}", self.signer_port),
            )
            .env(
                "CERTSIGN_APPROVER_ADDR",
                format!("127.0.0.1:{}", self.approver_port),
            )
            .env(
                "CERTSIGN_KUBE_ADDR",
                format!("127.0.0.1:{}", self.kube_port),
            )
            .env_remove("CERTSIGN_STATE")
            .env_remove("CERTCTL_CONFIG"))
    }

    fn state(&self) -> PathBuf {
        self.clone.join(".quickstart")
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.script("down");
        for d in ["signer", "approver"] {
            if let Ok(pid) = std::fs::read_to_string(self.state().join(format!("{d}.pid"))) {
                let _ = Command::new("kill").arg("-KILL").arg(pid.trim()).status();
            }
        }
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_ok(what: &str, out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(
        out.status.success(),
        "quickstart {what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

/// Lines of `out` in order: each expected fragment must appear after the
/// previous one.
fn assert_in_order(out: &str, fragments: &[&str]) {
    let mut from = 0;
    for f in fragments {
        match out[from..].find(f) {
            Some(i) => from += i + f.len(),
            None => panic!("quickstart output lacks {f:?} (in order):\n{out}"),
        }
    }
}

fn story(user: &str) -> Vec<String> {
    vec![
        "$ TOKEN=$(cat ../onboarding.token)".to_string(),
        format!("$ openssl genrsa -out {user}.key 3072"),
        format!("$ openssl req -new -key {user}.key -out {user}.csr -subj \"/CN={user}/O=dev\""),
        "$ cat <<EOF | certctl --token \"$TOKEN\" apply -f -".to_string(),
        "kind: CertificateSigningRequest".to_string(),
        "signerName: kubernetes.io/kube-apiserver-client".to_string(),
        "expirationSeconds: 86400".to_string(),
        format!("certificatesigningrequest.certificates.k8s.io/{user} created"),
        format!("$ certctl get csr {user}"),
        "Pending".to_string(),
        format!("$ certctl certificate approve {user}"),
        format!("$ certctl --token \"$TOKEN\" certificate wait {user}"),
        format!("$ certctl get csr {user}"),
        "Approved,Issued".to_string(),
        format!("get csr {user} -o json"),
        format!("base64 -d > {user}.crt"),
        format!("$ openssl verify -CAfile ../ca.crt {user}.crt"),
        format!("{user}.crt: OK"),
        format!("$ certctl --cert {user}.crt --key {user}.key create csr {user}-laptop"),
        format!("$ certctl --cert {user}.crt --key {user}.key get csr"),
        "$ certctl get csr".to_string(),
        "export CERTCTL_CONFIG=".to_string(),
    ]
}

/// The rows (without header) a `get csr` listing printed after `command`.
fn listing_after<'a>(out: &'a str, command: &str) -> Vec<&'a str> {
    let tail = out
        .rsplit(command)
        .next()
        .unwrap_or_else(|| panic!("no {command:?} in:\n{out}"));
    tail.lines()
        .skip(1)
        .take_while(|l| !l.starts_with('$') && !l.starts_with('#') && !l.trim().is_empty())
        .filter(|l| !l.starts_with("NAME "))
        .collect()
}

/// The member's own listing shows exactly her own request; the admin's
/// shows hers and the token-submitted one.
fn assert_member_sees_only_her_own(out: &str, user: &str) {
    let own = listing_after(
        out,
        &format!("$ certctl --cert {user}.crt --key {user}.key get csr\n"),
    );
    assert!(!own.is_empty(), "{user}'s listing is empty:\n{out}");
    for row in &own {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols.get(3),
            Some(&user),
            "{user} sees someone else's request: {row}"
        );
    }
    assert!(
        own.iter()
            .any(|r| r.starts_with(&format!("{user}-laptop ")))
    );
    let all = listing_after(out, "$ certctl get csr\n");
    assert!(
        all.iter().any(|r| r.starts_with(&format!("{user} "))),
        "admin listing:\n{out}"
    );
    assert!(
        all.iter()
            .any(|r| r.starts_with(&format!("{user}-laptop ")))
    );
    assert!(all.len() > own.len(), "the admin sees more than the member");
}

fn clone_repo(dest: &Path) {
    require_tool("git", "apt-get install git");
    run_ok(
        Command::new("git")
            .args(["clone", "--quiet", "--no-hardlinks"])
            .arg(repo_root())
            .arg(dest),
    );
}

#[test]
fn quickstart_up_status_down_up_on_a_fresh_clone() {
    require_tool("openssl", "apt-get install openssl");
    require_tool("cargo", "install the Rust toolchain");
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("clone");
    clone_repo(&clone);
    let qs = Quickstart {
        _tmp: tmp,
        clone,
        signer_port: free_port(),
        approver_port: free_port(),
        kube_port: free_port(),
    };

    // First `up`: builds, creates the CA, starts, walks the story.
    let out = assert_ok("up", &qs.script("up"));
    assert_in_order(
        &out,
        &[
            "$ cargo build --release --bins",
            "$ certsign-signer init --dir",
            &format!("--signer-listen 127.0.0.1:{}", qs.signer_port),
            &format!("--kube-listen 127.0.0.1:{}", qs.kube_port),
            "listening on",
            "listening on",
        ],
    );
    // The real kubectl reads the same requests through the Kubernetes API.
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok()
    {
        assert_in_order(
            &out,
            &[
                "kubectl get csr",
                "NAME",
                "SIGNERNAME",
                "REQUESTOR",
                "export KUBECONFIG=",
            ],
        );
    }
    let story1: Vec<String> = story("jane");
    assert_in_order(&out, &story1.iter().map(String::as_str).collect::<Vec<_>>());
    let ca = std::fs::read(qs.state().join("ca.crt")).expect("ca.crt in the state dir");
    assert_member_sees_only_her_own(&out, "jane");

    // An independent judge: the issued certificate chains to the CA.
    let verify = run_ok(
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(qs.state().join("ca.crt"))
            .arg(qs.state().join("users/jane.crt")),
    );
    assert!(verify.contains(": OK"), "{verify}");

    // status: both alive and answering.
    let st = assert_ok("status", &qs.script("status"));
    assert!(
        st.contains("certsign-signer: running") && st.contains("certsign-approver: running"),
        "{st}"
    );
    assert_eq!(st.matches("healthy").count(), 2, "{st}");

    // down: both stopped, status now says so and fails.
    let down = assert_ok("down", &qs.script("down"));
    assert!(
        down.contains("certsign-signer: stopped") && down.contains("certsign-approver: stopped"),
        "{down}"
    );
    let st = qs.script("status");
    assert!(!st.status.success(), "status must fail with the stack down");
    assert!(text(&st).0.contains("not running"));

    // `up` again: same CA, a new user name, the whole story again.
    let again = assert_ok("up (again)", &qs.script("up"));
    assert!(again.contains("Reusing the existing CA"), "{again}");
    assert!(
        !again.contains("certsign-signer init"),
        "re-up must not init again:\n{again}"
    );
    let story2 = story("jane-2");
    assert_in_order(
        &again,
        &story2.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_member_sees_only_her_own(&again, "jane-2");
    assert_eq!(
        std::fs::read(qs.state().join("ca.crt")).unwrap(),
        ca,
        "the CA changed"
    );

    // `up` while running: reuses the running daemons, busy ports are ours.
    let third = assert_ok("up (running)", &qs.script("up"));
    assert_eq!(third.matches("already running").count(), 2, "{third}");
    assert_in_order(
        &third,
        &["$ openssl genrsa -out jane-3.key 3072", "jane-3.crt: OK"],
    );
}

#[test]
fn quickstart_refuses_a_busy_port_in_one_line() {
    require_tool("openssl", "apt-get install openssl");
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("clone");
    clone_repo(&clone);
    // Something else holds the signer's port.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let qs = Quickstart {
        _tmp: tmp,
        clone,
        signer_port: squatter.local_addr().unwrap().port(),
        approver_port: free_port(),
        kube_port: free_port(),
    };
    let out = qs.script("up");
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "up must fail on a busy port:\n{stdout}"
    );
    let msg: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("quickstart:"))
        .collect();
    assert_eq!(msg.len(), 1, "one clear line expected:\n{stderr}");
    assert!(
        msg[0].contains(&format!(
            "port {} on 127.0.0.1 is already in use",
            qs.signer_port
        )),
        "{}",
        msg[0]
    );
    assert!(!qs.state().join("signer.pid").exists(), "no daemon started");
    drop(squatter);
}

#[test]
fn quickstart_names_a_missing_tool_in_one_line() {
    // A PATH with bash and coreutils but no openssl.
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in [
        "bash", "dirname", "cat", "sed", "head", "grep", "tr", "setsid", "base64",
    ] {
        let found = run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}")),
        );
        std::os::unix::fs::symlink(found.trim(), bin.join(tool)).unwrap();
    }
    let out = run(Command::new(bin.join("bash"))
        .arg(repo_root().join("deploy/quickstart.sh"))
        .arg("up")
        .env("PATH", &bin)
        .env("CERTSIGN_STATE", tmp.path().join("state")));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert_eq!(
        stderr.trim(),
        "quickstart: openssl is required but not installed (apt-get install openssl)"
    );
}

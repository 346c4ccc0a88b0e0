//! The renewal agent through the real `certctl` against a real stack:
//! `certctl renew --daemon` with two `[[renew]]` entries renews each
//! 10-minute certificate twice (at its `renew_before`), runs each entry's
//! hook exactly once per renewal, keeps going while the approver is down
//! and after it restarts, and takes the signer name from the certificate.
//! And kill -9 of certctl at every step of a renewal leaves a whole pair:
//! the old one until the switch, the new one after it, and the next run
//! resumes the same request instead of asking again.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certsign_tests::pki::cert_matches_key;
use certsign_tests::{Stack, bin, run_ok};

/// The number of lines of a file (0 when it does not exist).
fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Waits until `f` holds, failing with `what` and the agent's log after `timeout`.
fn wait_for(timeout: Duration, what: &str, log: &Path, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}; agent log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The serial of the first certificate of a PEM file.
fn serial(cert: &Path) -> String {
    let pem = std::fs::read(cert).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    pem.parse_x509().unwrap().raw_serial_as_string()
}

fn openssl_verify(ca: &Path, cert: &Path) {
    let out = run_ok(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(ca)
            .arg(cert),
    );
    assert!(out.contains(": OK"), "{out}");
}

/// A certctl.toml for the agent: the stack's approver and CA, plus `entries`.
fn agent_config(stack: &Stack, path: &Path, entries: &str) {
    std::fs::write(
        path,
        format!(
            "server = \"https://{}\"\nca = \"{}\"\n{entries}",
            stack.approver.addr,
            stack.ca().display()
        ),
    )
    .unwrap();
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn agent_renews_two_certificates_twice_runs_each_hook_twice_and_survives_the_approver_going_away() {
    let mut stack = Stack::start();
    stack.pin_ports();
    let dir = stack.dir.join("agent");
    std::fs::create_dir(&dir).unwrap();
    // One certificate under the default signer name, one under another
    // one: the agent is given neither, it reads them from the certificates.
    let a = stack.issue_with_certctl(
        "svc-a",
        "/CN=svc-a/O=team-a",
        "kubernetes.io/kube-apiserver-client",
        "10m",
    );
    let b = stack.issue_with_certctl(
        "node-b",
        "/CN=system:node:worker-b/O=system:nodes",
        "kubernetes.io/kube-apiserver-client-kubelet",
        "10m",
    );
    let first = [serial(&a.0), serial(&b.0)];
    // Ten minutes left when issued; renew with 585s left: 15 seconds after each issuance.
    let hooks = [dir.join("hook-a.log"), dir.join("hook-b.log")];
    let mut entries = String::new();
    for ((cert, key), hook) in [&a, &b].into_iter().zip(&hooks) {
        entries.push_str(&format!(
            "\n[[renew]]\ncert = \"{}\"\nkey = \"{}\"\nrenew_before = \"585s\"\nexec = \"printf '%s\\\\n' \\\"$CERTCTL_CERT\\\" >> {}\"\n",
            cert.display(),
            key.display(),
            hook.display()
        ));
    }
    let config = dir.join("certctl.toml");
    agent_config(&stack, &config, &entries);
    let log = dir.join("agent.log");
    let out = std::fs::File::create(&log).unwrap();
    let agent = Agent(
        Command::new(bin("certctl"))
            .arg("--config")
            .arg(&config)
            .args(["renew", "--daemon"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );

    // Nothing is due at the start: no renewal, no hook.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!((lines(&hooks[0]), lines(&hooks[1])), (0, 0));
    let limit = Duration::from_secs(120);
    wait_for(limit, "the first renewals", &log, || {
        lines(&hooks[0]) >= 1 && lines(&hooks[1]) >= 1
    });
    let second = [serial(&a.0), serial(&b.0)];
    assert_ne!(second, first, "renewed certificates carry new serials");

    // The approver goes away across the next renewal point, then comes back.
    stack.approver.kill();
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(
        (lines(&hooks[0]), lines(&hooks[1])),
        (1, 1),
        "no renewal and no hook without an approver"
    );
    stack.approver.restart();
    wait_for(limit, "the second renewals", &log, || {
        lines(&hooks[0]) >= 2 && lines(&hooks[1]) >= 2
    });
    // SIGTERM ends the agent between attempts with exit 0.
    let mut agent = agent;
    run_ok(
        Command::new("kill")
            .arg("-TERM")
            .arg(agent.0.id().to_string()),
    );
    let status = agent.0.wait().unwrap();
    assert!(status.success(), "agent exit: {status}");

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("retrying in"),
        "the approver's absence was retried: {text}"
    );
    for (i, (cert, key)) in [&a, &b].into_iter().enumerate() {
        let hook_lines: Vec<String> = std::fs::read_to_string(&hooks[i])
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(
            hook_lines,
            vec![cert.display().to_string(); 2],
            "the hook ran once per renewal, told which certificate"
        );
        assert_eq!(
            text.matches(&format!("certificate {} renewed by", cert.display()))
                .count(),
            2,
            "{text}"
        );
        assert!(cert_matches_key(cert, key));
        openssl_verify(&stack.ca(), cert);
        let now = serial(cert);
        assert!(now != first[i] && now != second[i]);
    }
}

/// Runs a plain `certctl renew` of (cert, key) with a pause after every
/// step, and kills it (SIGKILL) when it reports `kill_at`. Returns whether
/// it was killed (false: it finished first) and its exit status.
fn renew_killed_at(
    stack: &Stack,
    cert: &Path,
    key: &Path,
    kill_at: Option<&str>,
) -> (bool, std::process::ExitStatus) {
    let mut child = stack
        .certctl()
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(["renew", "--timeout", "60s"])
        .env("CERTCTL_TEST_INSTALL_PAUSE_MS", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut killed = false;
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if let Some(step) = kill_at
            && line == format!("certctl: install step: {step}")
        {
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed || status.success(),
        "renew failed ({status}): {seen:?}"
    );
    (killed, status)
}

#[test]
fn kill_9_at_every_step_of_a_renewal_leaves_a_whole_pair_and_the_next_run_resumes() {
    let stack = Stack::start();
    let (cert, key): (PathBuf, PathBuf) = stack.issue_with_certctl(
        "svc",
        "/CN=svc/O=team-a",
        "kubernetes.io/kube-apiserver-client",
        "10m",
    );
    let old = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    let pending_name = {
        let mut p = key.clone().into_os_string();
        p.push(".new.name");
        PathBuf::from(p)
    };
    // Every step of the first renewal, in order (the first one turns the
    // plain files into the generation layout).
    let steps = [
        "request sent",
        "backups written",
        "old pair copied into a generation",
        "certificate linked",
        "key linked",
        "new generation written",
        "switched to the new pair",
    ];
    let mut request = None;
    for step in steps {
        let (killed, _) = renew_killed_at(&stack, &cert, &key, Some(step));
        assert!(killed, "certctl never reached {step:?}");
        assert!(
            cert_matches_key(&cert, &key),
            "killed at {step:?}: the certificate and key do not match"
        );
        if step == "switched to the new pair" {
            assert_ne!(
                std::fs::read(&cert).unwrap(),
                old.0,
                "killed after the switch"
            );
        } else {
            assert_eq!(
                (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()),
                old,
                "killed at {step:?}: the old pair must be intact"
            );
            // One request for the whole sequence: every run resumes it.
            let name = std::fs::read_to_string(&pending_name).unwrap();
            assert_eq!(request.get_or_insert(name.clone()), &name, "at {step:?}");
        }
        openssl_verify(&stack.ca(), &cert);
    }
    let renewed = std::fs::read(&cert).unwrap();
    // The next run finds the renewal done and renews once more, unhindered.
    let (killed, status) = renew_killed_at(&stack, &cert, &key, None);
    assert!(!killed && status.success());
    assert_ne!(std::fs::read(&cert).unwrap(), renewed);
    assert!(cert_matches_key(&cert, &key));
    openssl_verify(&stack.ca(), &cert);
    assert!(!pending_name.exists());
    // The live paths are links into the current generation; the backups
    // are the pair before the last renewal.
    assert!(
        std::fs::symlink_metadata(&cert)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let bak = |p: &Path| {
        let mut s = p.as_os_str().to_owned();
        s.push(".bak");
        PathBuf::from(s)
    };
    assert_eq!(std::fs::read(bak(&cert)).unwrap(), renewed);
    assert!(cert_matches_key(&bak(&cert), &bak(&key)));
}

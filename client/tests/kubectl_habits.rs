//! What kubectl users type every day, through the built `certctl` against a
//! real stack (`certsign-tests`): `get csr -w` seeing create → approve →
//! issued in order and resuming across an approver restart without a
//! repeated or missed row, `--no-headers`, `-l`, kubectl's NotFound and
//! Invalid lines, `approve -f` with YAML streams and JSON lists, completion
//! of request names from a live server (real bash) and from a hung one
//! within its timeout, and `status.certificate` holding the leaf alone
//! (openssl counts), with the CA from `get trustbundle` / `--ca-out`.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use certsign_tests::{Stack, run_ok, silent_listener};

/// certctl as the admin, with a clean environment.
fn admin(stack: &Stack) -> Command {
    let mut c = stack.certctl();
    c.env_remove("CERTCTL_CONFIG")
        .env_remove("CERTCTL_TOKEN")
        .env("HOME", &stack.dir)
        .env("XDG_CONFIG_HOME", stack.dir.join("no-xdg"));
    c
}

/// certctl as `who` (its certificate and key).
fn as_user(stack: &Stack, who: &(PathBuf, PathBuf)) -> Command {
    let mut c = admin(stack);
    c.arg("--cert").arg(&who.0).arg("--key").arg(&who.1);
    c
}

fn out(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn stdout_ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed ({}): {} {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `user` asks for a client certificate named `name`.
fn create(stack: &Stack, user: &(PathBuf, PathBuf), name: &str) {
    let key = stack.dir.join(format!("{name}.key"));
    stdout_ok(out(as_user(stack, user)
        .args(["create", "csr", name, "--subject", "/CN=requestor/O=dev"])
        .arg("--key-out")
        .arg(&key)));
}

/// A CSR manifest (YAML) named `name` with `labels`, for `apply -f`.
fn manifest(stack: &Stack, name: &str, labels: &[(&str, &str)]) -> String {
    use base64::Engine as _;
    let key = stack.dir.join(format!("{name}.m.key"));
    let csr = stack.dir.join(format!("{name}.m.csr"));
    run_ok(
        Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .args([
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=requestor/O=dev",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&csr).unwrap());
    let mut labels_yaml = String::new();
    if !labels.is_empty() {
        labels_yaml.push_str("  labels:\n");
        for (k, v) in labels {
            labels_yaml.push_str(&format!("    {k}: {v}\n"));
        }
    }
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\n{labels_yaml}spec:\n  request: {b64}\n  signerName: kubernetes.io/kube-apiserver-client\n  usages:\n  - client auth\n"
    )
}

fn apply(stack: &Stack, user: &(PathBuf, PathBuf), doc: &str) {
    stdout_ok(
        as_user(stack, user)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(doc.as_bytes()).unwrap();
                c.wait_with_output().unwrap()
            })
            .unwrap(),
    );
}

/// A running `certctl get csr -w`: its stdout lines as they come.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(mut cmd: Command) -> Watch {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watch { child, lines }
    }

    /// Lines until one satisfies `done` (all of them, that one included).
    fn until(&self, what: &str, done: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let stop = done(&l);
                    got.push(l);
                    if stop {
                        return got;
                    }
                }
                Err(_) => panic!("watch: no {what} within 60 s; got {got:?}"),
            }
        }
    }

    /// Lines that arrive within `d`.
    fn drain(&self, d: Duration) -> Vec<String> {
        let deadline = Instant::now() + d;
        let mut got = Vec::new();
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            got.push(l);
        }
        got
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (NAME, CONDITION) of a table row.
fn name_and_condition(row: &str) -> (String, String) {
    let cells: Vec<&str> = row.split_whitespace().collect();
    (cells[0].to_string(), cells.last().unwrap().to_string())
}

#[test]
fn watch_sees_create_approve_issued_in_order_and_resumes_after_a_restart() {
    let mut stack = Stack::start();
    let user = stack.user("requestor", &["dev"]);
    create(&stack, &user, "before");
    let mut cmd = admin(&stack);
    cmd.args(["get", "csr", "-w"]);
    let w = Watch::start(cmd);
    // The list first: the header once, then the existing request.
    let first = w.until("the listed row", |l| l.starts_with("before "));
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first[0].starts_with("NAME "), "{first:?}");
    assert!(first[0].ends_with("CONDITION"), "{first:?}");

    create(&stack, &user, "w1");
    stdout_ok(out(admin(&stack).args(["certificate", "approve", "w1"])));
    let rows = w.until("w1 issued", |l| {
        l.starts_with("w1 ") && l.ends_with("Approved,Issued")
    });
    let seen: Vec<(String, String)> = rows.iter().map(|r| name_and_condition(r)).collect();
    assert_eq!(
        seen,
        vec![
            ("w1".to_string(), "Pending".to_string()),
            ("w1".to_string(), "Approved".to_string()),
            ("w1".to_string(), "Approved,Issued".to_string()),
        ],
        "{rows:?}"
    );
    assert!(
        !rows.iter().any(|r| r.starts_with("NAME")),
        "one header only: {rows:?}"
    );

    // The approver restarts mid-watch; a change made before certctl is
    // back is still shown, once, and nothing before it again.
    stack.restart_approver();
    create(&stack, &user, "w2");
    stdout_ok(out(admin(&stack).args(["certificate", "deny", "w2"])));
    let rows = w.until("w2 denied", |l| {
        l.starts_with("w2 ") && l.ends_with("Denied")
    });
    let seen: Vec<(String, String)> = rows.iter().map(|r| name_and_condition(r)).collect();
    assert_eq!(
        seen,
        vec![
            ("w2".to_string(), "Pending".to_string()),
            ("w2".to_string(), "Denied".to_string()),
        ],
        "no repeated or missed row across the restart: {rows:?}"
    );
    let extra = w.drain(Duration::from_millis(1500));
    assert!(extra.is_empty(), "nothing more: {extra:?}");

    // --watch-only with --no-headers: no list, no header, rows only.
    let mut cmd = admin(&stack);
    cmd.args(["get", "csr", "--watch-only", "--no-headers"]);
    let wo = Watch::start(cmd);
    std::thread::sleep(Duration::from_millis(500));
    stdout_ok(out(admin(&stack).args(["delete", "csr", "before"])));
    let rows = wo.until("the deletion", |l| l.starts_with("before "));
    assert_eq!(rows.len(), 1, "{rows:?}");
}

#[test]
fn no_headers_selector_not_found_and_invalid_lines() {
    let stack = Stack::start();
    let user = stack.user("requestor", &["dev"]);
    let doc = format!(
        "{}---\n{}---\n{}",
        manifest(&stack, "web-1", &[("app", "web"), ("env", "a")]),
        manifest(&stack, "web-2", &[("app", "web"), ("env", "b")]),
        manifest(&stack, "db-1", &[("app", "db")]),
    );
    apply(&stack, &user, &doc);

    // --no-headers: the rows alone, kubectl's idiom for awk.
    let table = stdout_ok(out(admin(&stack).args(["get", "csr", "--no-headers"])));
    let names: Vec<&str> = table
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["db-1", "web-1", "web-2"], "{table}");
    let with = stdout_ok(out(admin(&stack).args(["get", "csr"])));
    assert!(with.starts_with("NAME "), "{with}");

    // -l / --selector, on the server.
    let sel = |s: &str| {
        stdout_ok(out(
            admin(&stack).args(["get", "csr", "-o", "name", "-l", s])
        ))
    };
    let prefix = "certificatesigningrequest.certificates.k8s.io/";
    assert_eq!(sel("app=web"), format!("{prefix}web-1\n{prefix}web-2\n"));
    assert_eq!(sel("env in (b),app"), format!("{prefix}web-2\n"));
    assert_eq!(sel("app!=web"), format!("{prefix}db-1\n"));
    assert_eq!(
        stdout_ok(out(admin(&stack).args([
            "get",
            "csr",
            "--selector",
            "!env",
            "-o",
            "name"
        ]))),
        format!("{prefix}db-1\n")
    );
    let bad = out(admin(&stack).args(["get", "csr", "-l", "env in b"]));
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "error: unable to parse requirement: found 'b' expected: '('\n"
    );

    // kubectl's NotFound line and exit code, for every command by name.
    let not_found = "Error from server (NotFound): certificatesigningrequests.certificates.k8s.io \"nope\" not found\n";
    for args in [
        &["get", "csr", "nope"][..],
        &["describe", "csr", "nope"],
        &["certificate", "approve", "nope"],
        &["delete", "csr", "nope"],
    ] {
        let o = out(admin(&stack).args(args));
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&o.stderr), not_found, "{args:?}");
    }
    // Found ones are still printed, the missing one after them.
    let o = out(admin(&stack).args(["get", "csr", "web-1", "nope", "--no-headers"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("web-1 "));
    assert_eq!(String::from_utf8_lossy(&o.stderr), not_found);

    // The server's Invalid answer, every field error, as kubectl prints it.
    let invalid = "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: bad\nspec:\n  request: ''\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [bogus, bogus]\n";
    let o = as_user(&stack, &user)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(|mut c| {
            use std::io::Write as _;
            c.stdin
                .take()
                .unwrap()
                .write_all(invalid.as_bytes())
                .unwrap();
            c.wait_with_output().unwrap()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("The CertificateSigningRequest \"bad\" is invalid: ["),
        "{err}"
    );
    for want in [
        "spec.request: Invalid value: \"<request data>\": PEM block type must be CERTIFICATE REQUEST",
        "spec.usages[0]: Unsupported value: \"bogus\": supported values: \"any\", \"cert sign\", \"client auth\"",
        "spec.usages[1]: Duplicate value: \"bogus\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
}

/// A CSR that is not a CSR: the server names every problem (was checked
/// by certctl itself before; the server's words are kubectl's).
#[test]
fn apply_from_stdin_rejects_a_non_csr_pem() {
    use base64::Engine as _;
    let stack = Stack::start();
    let user = stack.user("requestor", &["dev"]);
    let ca_b64 =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(stack.ca()).unwrap());
    let doc = format!(
        "{{\"apiVersion\":\"certificates.k8s.io/v1\",\"kind\":\"CertificateSigningRequest\",\"metadata\":{{\"name\":\"x\"}},\"spec\":{{\"request\":\"{ca_b64}\",\"usages\":[]}}}}"
    );
    let o = as_user(&stack, &user)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(doc.as_bytes()).unwrap();
            c.wait_with_output().unwrap()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    for want in [
        "The CertificateSigningRequest \"x\" is invalid: ",
        "spec.request: Invalid value: \"<request data>\": PEM block type must be CERTIFICATE REQUEST",
        "spec.signerName: Required value",
        "spec.usages: Required value",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
}

#[test]
fn approve_and_deny_from_yaml_streams_and_json_lists() {
    let stack = Stack::start();
    let user = stack.user("requestor", &["dev"]);
    for n in ["f1", "f2", "f3", "f4"] {
        create(&stack, &user, n);
    }
    let obj = |n: &str| {
        format!(
            "{{\"apiVersion\":\"certificates.k8s.io/v1\",\"kind\":\"CertificateSigningRequest\",\"metadata\":{{\"name\":\"{n}\"}}}}"
        )
    };
    let stream = stack.dir.join("stream.yaml");
    std::fs::write(
        &stream,
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: f1\n---\napiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: f2\n",
    )
    .unwrap();
    let approved = stdout_ok(out(admin(&stack)
        .args(["certificate", "approve", "-f"])
        .arg(&stream)));
    assert_eq!(
        approved,
        "certificatesigningrequest.certificates.k8s.io/f1 approved\ncertificatesigningrequest.certificates.k8s.io/f2 approved\n"
    );
    let list = stack.dir.join("list.json");
    std::fs::write(&list, format!("[{}, {}]", obj("f3"), obj("f4"))).unwrap();
    let denied = stdout_ok(out(admin(&stack)
        .args(["certificate", "deny", "-f"])
        .arg(&list)));
    assert_eq!(
        denied,
        "certificatesigningrequest.certificates.k8s.io/f3 denied\ncertificatesigningrequest.certificates.k8s.io/f4 denied\n"
    );
    let kube_list = stack.dir.join("kind-list.json");
    std::fs::write(
        &kube_list,
        format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[{}]}}",
            obj("f1")
        ),
    )
    .unwrap();
    let again = stdout_ok(out(admin(&stack)
        .args(["certificate", "approve", "-f"])
        .arg(&kube_list)));
    assert!(again.contains("f1"), "{again}");
    let table = stdout_ok(out(admin(&stack).args(["get", "csr", "--no-headers"])));
    for (n, want) in [("f3", "Denied"), ("f4", "Denied")] {
        let row = table.lines().find(|l| l.starts_with(n)).unwrap();
        assert!(row.ends_with(want), "{row}");
    }
}

/// Completion words of `certctl <words>` through bash and the script
/// `certctl completion bash` prints; `cword` is the index completed.
fn bash_complete(stack: &Stack, script: &Path, words: &[&str]) -> (Vec<String>, Duration) {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\n_clap_complete_certctl certctl '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        words.last().unwrap(),
        words[words.len() - 2],
    );
    let started = Instant::now();
    let o = Command::new("bash")
        .arg("-c")
        .arg(program)
        .env_remove("CERTCTL_CONFIG")
        .env("HOME", &stack.dir)
        .env("XDG_CONFIG_HOME", stack.dir.join("no-xdg"))
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let words = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    (words, took)
}

#[test]
fn completion_of_names_from_a_live_server_and_a_hung_one() {
    let stack = Stack::start();
    let user = stack.user("requestor", &["dev"]);
    for n in ["alpha-1", "alpha-2", "beta-1"] {
        create(&stack, &user, n);
    }
    let script = stack.dir.join("certctl.bash");
    let text = stdout_ok(out(admin(&stack).args(["completion", "bash"])));
    std::fs::write(&script, text).unwrap();
    let config = stack.dir.join("admin/certctl.toml");
    let config = config.to_str().unwrap();
    let server = format!("https://{}", stack.approver.addr);

    // `csr` is offered after `get`.
    let (words, _) = bash_complete(&stack, &script, &["certctl", "get", ""]);
    assert!(words.contains(&"csr".to_string()), "{words:?}");
    assert!(words.contains(&"trustbundle".to_string()), "{words:?}");
    // Names from the server, for every command that takes them.
    for cmd in [
        &["get", "csr"][..],
        &["describe", "csr"],
        &["certificate", "approve"],
        &["delete", "csr"],
    ] {
        let mut w = vec!["certctl", "--config", config, "--server", &server];
        w.extend_from_slice(cmd);
        w.push("al");
        let (words, _) = bash_complete(&stack, &script, &w);
        assert_eq!(words, ["alpha-1", "alpha-2"], "{cmd:?}");
    }
    // The other shells' protocol, same engine.
    for shell in ["zsh", "fish", "powershell"] {
        let o = Command::new(certsign_tests::bin("certctl"))
            .env("_CERTCTL_COMPLETE", shell)
            .env("_CLAP_COMPLETE_INDEX", "7")
            .env_remove("CERTCTL_CONFIG")
            .env("HOME", &stack.dir)
            .args(["--", "certctl", "--config", config, "--server", &server])
            .args(["get", "csr", "be"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("beta-1"), "{shell}: {text}");
        assert!(!text.contains("alpha"), "{shell}: {text}");
        let script = stdout_ok(out(admin(&stack).args(["completion", shell])));
        assert!(script.contains("_CERTCTL_COMPLETE"), "{shell}: {script}");
    }

    // A hung server: nothing offered, no error printed, back within the
    // timeout (2 s by default).
    let (_hold, hung) = silent_listener();
    let hung = format!("https://{hung}");
    let w = [
        "certctl", "--config", config, "--server", &hung, "get", "csr", "",
    ];
    let (words, took) = bash_complete(&stack, &script, &w);
    assert!(
        !words
            .iter()
            .any(|w| w.starts_with("alpha") || w.starts_with("beta")),
        "{words:?}"
    );
    assert!(took < Duration::from_secs(4), "completion took {took:?}");
    assert!(
        took >= Duration::from_millis(1900),
        "the server was given its time: {took:?}"
    );
}

/// The number of certificates in a PEM file, as openssl reads them.
fn openssl_cert_count(path: &Path) -> usize {
    let p7 = path.with_extension("p7");
    run_ok(
        Command::new("openssl")
            .args(["crl2pkcs7", "-nocrl", "-certfile"])
            .arg(path)
            .arg("-out")
            .arg(&p7),
    );
    run_ok(
        Command::new("openssl")
            .args(["pkcs7", "-print_certs", "-noout", "-in"])
            .arg(&p7),
    )
    .lines()
    .filter(|l| l.starts_with("subject="))
    .count()
}

#[test]
fn status_certificate_is_the_leaf_and_the_ca_comes_from_the_trust_bundle() {
    use base64::Engine as _;
    let stack = Stack::start();
    let user = stack.user("requestor", &["dev"]);
    create(&stack, &user, "leaf");
    stdout_ok(out(admin(&stack).args(["certificate", "approve", "leaf"])));
    let crt = stack.dir.join("leaf.crt");
    let ca = stack.dir.join("leaf-ca.pem");
    stdout_ok(out(admin(&stack)
        .args(["certificate", "wait", "leaf", "--timeout", "60s", "--out"])
        .arg(&crt)
        .arg("--ca-out")
        .arg(&ca)));
    assert_eq!(openssl_cert_count(&crt), 1);
    assert_eq!(
        std::fs::read(&ca).unwrap(),
        std::fs::read(stack.ca()).unwrap()
    );
    let verify = run_ok(
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(&ca)
            .arg(&crt),
    );
    assert!(verify.trim_end().ends_with("OK"), "{verify}");
    // As in the Kubernetes tutorial: base64 -d of status.certificate.
    let json = stdout_ok(out(admin(&stack).args(["get", "csr", "leaf", "-o", "json"])));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(v["status"]["certificate"].as_str().unwrap())
        .unwrap();
    let from_json = stack.dir.join("from-json.crt");
    std::fs::write(&from_json, &pem).unwrap();
    assert_eq!(openssl_cert_count(&from_json), 1);
    let subject = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(&from_json),
    );
    assert!(subject.contains("requestor"), "{subject}");
    // get trustbundle: the CA, to stdout or --out.
    let bundle = stdout_ok(out(admin(&stack).args(["get", "trustbundle"])));
    assert_eq!(bundle.as_bytes(), std::fs::read(stack.ca()).unwrap());
    let file = stack.dir.join("bundle.pem");
    stdout_ok(out(admin(&stack)
        .args(["get", "trustbundle", "--out"])
        .arg(&file)));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(stack.ca()).unwrap()
    );
    let o = out(admin(&stack).args(["get", "trustbundle", "--signer-name", "example.com/none"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("signer_name"),
        "{o:?}"
    );
}

//! `certctl` against the real local stack: `certsign-signer init`, then
//! `certsign-signer serve` and `certsign-approver serve` as processes on
//! loopback port 0, driven through the built `certctl` binary. `openssl`
//! judges the certificates.
//!
//! Each test starts its own stack in a temp dir, so tests run in parallel.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output};

use assert_cmd::Command;
use base64::Engine as _;
use certsign_tests::{Stack, run_ok};

/// certctl as the admin of `stack` (config from init, server from the
/// running approver: the flag overrides the file).
fn admin(stack: &Stack) -> Command {
    let mut c = Command::cargo_bin("certctl").unwrap();
    c.env_remove("CERTCTL_CONFIG")
        .env_remove("CERTCTL_TOKEN")
        .env("HOME", &stack.dir)
        .env("XDG_CONFIG_HOME", stack.dir.join("no-xdg"))
        .arg("--config")
        .arg(stack.dir.join("admin/certctl.toml"))
        .arg("--server")
        .arg(format!("https://{}", stack.approver.addr));
    c
}

/// certctl as a user (same CA and server, the user's own certificate).
fn user(stack: &Stack, who: &(PathBuf, PathBuf)) -> Command {
    let mut c = admin(stack);
    c.arg("--cert").arg(&who.0).arg("--key").arg(&who.1);
    c
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed ({}): stdout: {} stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(out: Output, code: i32, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(want),
        "missing {want:?} in {stderr:?}"
    );
}

/// kubectl's NotFound line for `name`, alone on stderr, exit code 1.
fn not_found(out: Output, name: &str) {
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "Error from server (NotFound): certificatesigningrequests.certificates.k8s.io {name:?} not found\n"
        )
    );
}

fn openssl_verify(ca: &Path, cert: &Path) {
    let out = run_ok(
        StdCommand::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(ca)
            .arg(cert),
    );
    assert!(out.trim_end().ends_with("OK"), "{out}");
}

fn pubkey_of_cert(cert: &Path) -> String {
    run_ok(
        StdCommand::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(cert),
    )
}

fn pubkey_of_key(key: &Path) -> String {
    run_ok(
        StdCommand::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(key),
    )
}

/// Only the first certificate of a PEM chain.
fn leaf_only(chain_path: &Path, out: &Path) {
    let chain = std::fs::read_to_string(chain_path).unwrap();
    let end = "-----END CERTIFICATE-----";
    let leaf = &chain[..chain.find(end).unwrap() + end.len()];
    std::fs::write(out, format!("{leaf}\n")).unwrap();
}

#[test]
fn seed_scenario_apply_list_approve_extract_and_round_trip() {
    let stack = Stack::start();
    let dir = stack.dir.clone();
    let requestor = stack.user("requestor", &["dev"]);

    // As in the Kubernetes docs: a key and CSR made with openssl.
    let key = dir.join("myuser.key");
    let csr = dir.join("myuser.csr");
    run_ok(
        StdCommand::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("3072"),
    );
    run_ok(
        StdCommand::new("openssl")
            .args(["req", "-new", "-key"])
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .args(["-subj", "/CN=myuser"]),
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&csr).unwrap());
    let manifest = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: myuser\nspec:\n  request: {b64}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 86400  # one day\n  usages:\n  - client auth\n"
    );
    let out = ok(user(&stack, &requestor)
        .args(["apply", "-f", "-"])
        .write_stdin(manifest.clone())
        .output()
        .unwrap());
    assert_eq!(
        out,
        "certificatesigningrequest.certificates.k8s.io/myuser created\n"
    );

    // Listed Pending, in kubectl's layout.
    let table = ok(admin(&stack).args(["get", "csr"]).output().unwrap());
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header = lines[0];
    assert!(header.starts_with("NAME     AGE   SIGNERNAME                            REQUESTOR   REQUESTEDDURATION   CONDITION"), "{table}");
    let row = lines[1];
    assert!(row.starts_with("myuser   "), "{table}");
    let col = |s: &str, name: &str| s.find(name).unwrap();
    assert_eq!(
        &row[col(header, "SIGNERNAME")..col(header, "REQUESTOR")].trim_end(),
        &"kubernetes.io/kube-apiserver-client"
    );
    assert_eq!(
        &row[col(header, "REQUESTOR")..col(header, "REQUESTEDDURATION")].trim_end(),
        &"requestor"
    );
    assert_eq!(
        &row[col(header, "REQUESTEDDURATION")..col(header, "CONDITION")].trim_end(),
        &"24h"
    );
    assert_eq!(&row[col(header, "CONDITION")..], "Pending");
    let filtered = ok(admin(&stack)
        .args(["get", "csr", "--condition", "Approved", "-o", "json"])
        .output()
        .unwrap());
    let list: serde_json::Value = serde_json::from_str(&filtered).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().unwrap().len(), 0);

    // Approve, wait for issuance, extract the certificate as the docs do.
    let out = ok(admin(&stack)
        .args(["certificate", "approve", "myuser"])
        .output()
        .unwrap());
    assert_eq!(
        out,
        "certificatesigningrequest.certificates.k8s.io/myuser approved\n"
    );
    ok(admin(&stack)
        .args(["certificate", "wait", "myuser", "--timeout", "60s", "--out"])
        .arg(dir.join("chain.pem"))
        .output()
        .unwrap());
    let json = ok(admin(&stack)
        .args(["get", "csr", "myuser", "-o", "json"])
        .output()
        .unwrap());
    let obj: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(obj["apiVersion"], "certificates.k8s.io/v1");
    assert_eq!(obj["kind"], "CertificateSigningRequest");
    assert_eq!(obj["metadata"]["name"], "myuser");
    assert!(
        obj["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    assert!(
        obj["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(obj["spec"]["request"], b64.as_str());
    assert_eq!(obj["spec"]["username"], "requestor");
    assert_eq!(obj["spec"]["groups"][0], "dev");
    assert_eq!(obj["status"]["conditions"][0]["type"], "Approved");
    assert_eq!(obj["status"]["conditions"][0]["reason"], "KubectlApprove");
    let pem = base64::engine::general_purpose::STANDARD
        .decode(obj["status"]["certificate"].as_str().unwrap())
        .unwrap();
    let crt = dir.join("myuser.crt");
    std::fs::write(&crt, &pem).unwrap();
    let leaf = dir.join("myuser.leaf.crt");
    leaf_only(&crt, &leaf);
    openssl_verify(&stack.ca(), &leaf);
    assert_eq!(pubkey_of_cert(&leaf), pubkey_of_key(&key));
    let table = ok(admin(&stack).args(["get", "csr/myuser"]).output().unwrap());
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("   Approved,Issued"),
        "{table}"
    );

    // Describe decodes the request and who approved.
    let text = ok(admin(&stack)
        .args(["describe", "csr", "myuser"])
        .output()
        .unwrap());
    for want in [
        "CN=myuser",
        "RSA 3072 bits",
        "Approve by admin",
        "Requested Duration: 24h",
        "Serial:",
        "Issuer:",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }

    // -o yaml parses back to the same object; re-applying it is a no-op.
    let yaml = ok(admin(&stack)
        .args(["get", "csr", "myuser", "-o", "yaml"])
        .output()
        .unwrap());
    let back: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(back, obj);
    let out = ok(user(&stack, &requestor)
        .args(["apply", "-f", "-"])
        .write_stdin(yaml.clone())
        .output()
        .unwrap());
    assert_eq!(
        out,
        "certificatesigningrequest.certificates.k8s.io/myuser unchanged\n"
    );

    // Delete, then the JSON output re-applies as a new request.
    let out = ok(admin(&stack)
        .args(["delete", "csr", "myuser"])
        .output()
        .unwrap());
    assert_eq!(
        out,
        "certificatesigningrequest.certificates.k8s.io \"myuser\" deleted\n"
    );
    not_found(
        admin(&stack)
            .args(["get", "csr", "myuser"])
            .output()
            .unwrap(),
        "myuser",
    );
    let out = ok(user(&stack, &requestor)
        .args(["apply", "-f", "-"])
        .write_stdin(json)
        .output()
        .unwrap());
    assert_eq!(
        out,
        "certificatesigningrequest.certificates.k8s.io/myuser created\n"
    );
    let list = ok(admin(&stack)
        .args(["get", "csr", "-o", "json"])
        .output()
        .unwrap());
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["items"][0]["status"], serde_json::json!({}));
}

#[test]
fn create_approve_wait_then_renew_in_place() {
    let stack = Stack::start();
    let dir = stack.dir.clone();
    let requestor = stack.user("requestor", &["dev"]);
    let key = dir.join("svc.key");
    let out = ok(user(&stack, &requestor)
        .args([
            "create",
            "csr",
            "svc",
            "--subject",
            "/CN=svc/O=team-a",
            "--expiration",
            "24h",
            "--key-out",
        ])
        .arg(&key)
        .output()
        .unwrap());
    assert_eq!(
        out,
        "certificatesigningrequest.certificates.k8s.io/svc created\n"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The same name again: refused by the server, the key is kept, no new file.
    let again = dir.join("svc2.key");
    let out = user(&stack, &requestor)
        .args(["create", "csr", "svc", "--subject", "/CN=svc", "--key-out"])
        .arg(&again)
        .output()
        .unwrap();
    fails(out, 1, "already exists");
    assert!(!again.exists());

    ok(admin(&stack)
        .args(["certificate", "approve", "svc"])
        .output()
        .unwrap());
    let crt = dir.join("svc.crt");
    let out = ok(user(&stack, &requestor)
        .args(["certificate", "wait", "svc", "--timeout", "60s", "--out"])
        .arg(&crt)
        .output()
        .unwrap());
    assert_eq!(out, "", "nothing extra when piped");
    let leaf = dir.join("svc.leaf.crt");
    leaf_only(&crt, &leaf);
    openssl_verify(&stack.ca(), &leaf);
    assert_eq!(pubkey_of_cert(&leaf), pubkey_of_key(&key));
    let subject = run_ok(
        StdCommand::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(&leaf),
    );
    assert!(subject.contains("CN = svc, O = team-a"), "{subject}");

    // Young certificate: nothing to do.
    let svc = (crt.clone(), key.clone());
    let out = ok(user(&stack, &svc)
        .args(["renew", "--if-expires-within", "1h"])
        .output()
        .unwrap());
    assert!(out.contains("not due for renewal"), "{out}");
    assert!(!dir.join("svc.crt.bak").exists());

    // Renew as the certificate itself: new key, same subject, old pair kept.
    let old_key_pub = pubkey_of_key(&key);
    let out = ok(user(&stack, &svc)
        .args(["renew", "--if-expires-within", "100%", "--timeout", "60s"])
        .output()
        .unwrap());
    assert!(out.contains("renewed"), "{out}");
    let new_leaf = dir.join("svc.new.leaf.crt");
    leaf_only(&crt, &new_leaf);
    openssl_verify(&stack.ca(), &new_leaf);
    // Without --expiration it asks for the current lifetime (24h), and the
    // signer grants no more: not the profile's year.
    let lifetime = |p: &Path| {
        let pem = std::fs::read(p).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let v = pem.parse_x509().unwrap().validity().clone();
        v.not_after.timestamp() - v.not_before.timestamp()
    };
    assert_eq!(lifetime(&new_leaf), 24 * 3600);
    assert_eq!(lifetime(&new_leaf), lifetime(&leaf));
    assert_eq!(pubkey_of_cert(&new_leaf), pubkey_of_key(&key));
    assert_ne!(pubkey_of_key(&key), old_key_pub, "a new key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let new_subject = run_ok(
        StdCommand::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(&new_leaf),
    );
    assert_eq!(new_subject, subject);
    // The old pair is kept and its certificate is still valid until its end.
    assert_eq!(pubkey_of_key(&dir.join("svc.key.bak")), old_key_pub);
    let old_leaf = dir.join("svc.old.leaf.crt");
    leaf_only(&dir.join("svc.crt.bak"), &old_leaf);
    openssl_verify(&stack.ca(), &old_leaf);
    assert_eq!(
        std::fs::read(&old_leaf).unwrap(),
        std::fs::read(&leaf).unwrap()
    );
    // The renewed certificate authenticates.
    let list = ok(user(&stack, &svc)
        .args(["get", "csr", "-o", "json"])
        .output()
        .unwrap());
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("svc-renew-")),
        "{names:?}"
    );
}

#[test]
fn approve_deny_conflicts_and_wait_exit_codes() {
    let stack = Stack::start();
    let dir = stack.dir.clone();
    let requestor = stack.user("requestor", &["dev"]);
    for name in ["a", "b", "c"] {
        ok(user(&stack, &requestor)
            .args([
                "create",
                "csr",
                name,
                "--subject",
                &format!("/CN={name}"),
                "--key-out",
            ])
            .arg(dir.join(format!("{name}.key")))
            .output()
            .unwrap());
    }
    // Deny a: approve is then refused with kubectl's text; deny again is a no-op success.
    assert_eq!(
        ok(admin(&stack)
            .args([
                "certificate",
                "deny",
                "a",
                "--reason",
                "NotToday",
                "--message",
                "no"
            ])
            .output()
            .unwrap()),
        "certificatesigningrequest.certificates.k8s.io/a denied\n"
    );
    fails(
        admin(&stack)
            .args(["certificate", "approve", "a"])
            .output()
            .unwrap(),
        1,
        "certificate signing request \"a\" is already Denied",
    );
    assert_eq!(
        ok(admin(&stack)
            .args(["certificate", "deny", "a"])
            .output()
            .unwrap()),
        "certificatesigningrequest.certificates.k8s.io/a denied\n"
    );
    let out = admin(&stack)
        .args(["certificate", "wait", "a", "--timeout", "30s"])
        .output()
        .unwrap();
    fails(
        out,
        2,
        "certificatesigningrequest \"a\" was denied: NotToday: no",
    );

    // Approve b twice: the second time prints the same line without re-sending.
    ok(admin(&stack)
        .args(["certificate", "approve", "b"])
        .output()
        .unwrap());
    assert_eq!(
        ok(admin(&stack)
            .args(["certificate", "approve", "b"])
            .output()
            .unwrap()),
        "certificatesigningrequest.certificates.k8s.io/b approved\n"
    );
    fails(
        admin(&stack)
            .args(["certificate", "deny", "b"])
            .output()
            .unwrap(),
        1,
        "certificate signing request \"b\" is already Approved",
    );

    // c stays pending: wait times out with exit 4.
    let out = admin(&stack)
        .args(["certificate", "wait", "c", "--timeout", "1s"])
        .output()
        .unwrap();
    fails(out, 4, "timed out");
    // A missing name: kubectl's not-found line.
    not_found(
        admin(&stack)
            .args(["certificate", "approve", "nope"])
            .output()
            .unwrap(),
        "nope",
    );
    // Paging: one request per page still lists all three.
    let names = ok(admin(&stack)
        .args(["get", "csr", "--chunk-size", "1", "-o", "name"])
        .output()
        .unwrap());
    assert_eq!(
        names,
        "certificatesigningrequest.certificates.k8s.io/a\ncertificatesigningrequest.certificates.k8s.io/b\ncertificatesigningrequest.certificates.k8s.io/c\n"
    );
    // --condition and --requestor go to the server.
    let denied = ok(admin(&stack)
        .args(["get", "csr", "--condition", "Denied", "-o", "name"])
        .output()
        .unwrap());
    assert_eq!(denied, "certificatesigningrequest.certificates.k8s.io/a\n");
    let none = admin(&stack)
        .args(["get", "csr", "--requestor", "nobody"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&none.stderr),
        "No resources found\n"
    );
    assert!(none.status.success());

    // Accepted, approved, then refused by the signer's policy (server auth is
    // not a kube-apiserver-client usage): wait exits 3.
    ok(user(&stack, &requestor)
        .args([
            "create",
            "csr",
            "f",
            "--subject",
            "/CN=f",
            "--usages",
            "digital signature,server auth",
            "--key-out",
        ])
        .arg(dir.join("f.key"))
        .output()
        .unwrap());
    ok(admin(&stack)
        .args(["certificate", "approve", "f"])
        .output()
        .unwrap());
    let out = admin(&stack)
        .args(["certificate", "wait", "f", "--timeout", "60s"])
        .output()
        .unwrap();
    fails(out, 3, "certificatesigningrequest \"f\" failed");
    let table = ok(admin(&stack).args(["get", "csr", "f"]).output().unwrap());
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("   Approved,Failed"),
        "{table}"
    );

    // Users may not approve.
    let out = user(&stack, &requestor)
        .args(["certificate", "approve", "c"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

const TOKEN: &str = "abcdef.0123456789abcdef";

/// A stack whose approver also accepts one bootstrap token (`TOKEN`) for
/// the kubelet client signer.
fn token_stack() -> Stack {
    let secret_sha256 = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        b"0123456789abcdef",
    ));
    Stack::start_configured(
        &[],
        |_| {},
        |t| {
            let mut tok = toml::Table::new();
            tok.insert("id".into(), "abcdef".into());
            tok.insert("secret_sha256".into(), secret_sha256.into());
            tok.insert("expires".into(), "2099-01-01T00:00:00Z".into());
            tok.insert(
                "signer_names".into(),
                toml::Value::Array(vec!["kubernetes.io/kube-apiserver-client-kubelet".into()]),
            );
            tok.insert("max_uses".into(), 10.into());
            t.insert(
                "bootstrap_tokens".into(),
                toml::Value::Array(vec![tok.into()]),
            );
        },
    )
}

#[test]
fn bootstrap_token_creates_a_request_instead_of_a_certificate() {
    let stack = token_stack();
    let ctl = || {
        let mut c = Command::cargo_bin("certctl").unwrap();
        c.env_remove("CERTCTL_CONFIG")
            .env_remove("CERTCTL_TOKEN")
            .env("HOME", &stack.dir)
            .env("XDG_CONFIG_HOME", stack.dir.join("no-xdg"))
            .env("CERTCTL_CONFIG", stack.dir.join("admin/certctl.toml"))
            .arg("--server")
            .arg(format!("https://{}", stack.approver.addr));
        c
    };
    let key = stack.dir.join("node1.key");
    let out = ok(ctl()
        .env("CERTCTL_TOKEN", TOKEN)
        .args([
            "create",
            "csr",
            "node1",
            "--subject",
            "/CN=system:node:node1/O=system:nodes",
        ])
        .args([
            "--signer-name",
            "kubernetes.io/kube-apiserver-client-kubelet",
            "--key-out",
        ])
        .arg(&key)
        .output()
        .unwrap());
    assert_eq!(
        out,
        "certificatesigningrequest.certificates.k8s.io/node1 created\n"
    );
    let json = ok(ctl()
        .args(["get", "csr", "node1", "-o", "json"])
        .output()
        .unwrap());
    let obj: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(obj["spec"]["username"], "system:bootstrap:abcdef");
    assert!(
        obj["spec"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "system:bootstrappers")
    );
    ok(ctl()
        .args(["certificate", "approve", "node1"])
        .output()
        .unwrap());
    // The token may wait for its own request and fetch the certificate.
    let crt = stack.dir.join("node1.crt");
    ok(ctl()
        .args([
            "--token",
            TOKEN,
            "certificate",
            "wait",
            "node1",
            "--timeout",
            "60s",
            "--out",
        ])
        .arg(&crt)
        .output()
        .unwrap());
    let leaf = stack.dir.join("node1.leaf.crt");
    leaf_only(&crt, &leaf);
    openssl_verify(&stack.dir.join("ca.crt"), &leaf);
    assert_eq!(pubkey_of_cert(&leaf), pubkey_of_key(&key));
    // A wrong token is refused with one line.
    let out = ctl()
        .args(["--token", "abcdef.ffffffffffffffff", "get", "csr"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: unauthorized: ") && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[test]
fn renewal_that_times_out_keeps_the_new_key_and_changes_nothing() {
    let mut stack = Stack::start();
    let dir = stack.dir.clone();
    let requestor = stack.user("requestor", &["dev"]);
    let key = dir.join("t.key");
    let crt = dir.join("t.crt");
    ok(user(&stack, &requestor)
        .args(["create", "csr", "t", "--subject", "/CN=t", "--key-out"])
        .arg(&key)
        .output()
        .unwrap());
    ok(admin(&stack)
        .args(["certificate", "approve", "t"])
        .output()
        .unwrap());
    ok(user(&stack, &requestor)
        .args(["certificate", "wait", "t", "--timeout", "60s", "--out"])
        .arg(&crt)
        .output()
        .unwrap());
    let (old_crt, old_key) = (std::fs::read(&crt).unwrap(), std::fs::read(&key).unwrap());

    // Without a signer the renewal is accepted but never issued.
    stack.signer.kill();
    let out = user(&stack, &(crt.clone(), key.clone()))
        .args(["renew", "--name", "t-renew", "--timeout", "2s"])
        .output()
        .unwrap();
    fails(out, 4, "the new key is kept in");
    assert_eq!(std::fs::read(&crt).unwrap(), old_crt);
    assert_eq!(std::fs::read(&key).unwrap(), old_key);
    let kept = dir.join("t.key.new");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_ne!(pubkey_of_key(&kept), pubkey_of_key(&key));
    assert!(!dir.join("t.crt.bak").exists());
    let json = ok(admin(&stack)
        .args(["get", "csr", "t-renew", "-o", "json"])
        .output()
        .unwrap());
    let obj: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(obj["spec"]["username"], "t");
}

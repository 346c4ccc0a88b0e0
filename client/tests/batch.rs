//! Batch decisions with `certctl` against the real local stack (signer and
//! approver processes, mTLS on loopback): `certificate approve NAME...`,
//! `-f FILE` with several objects, `--all-pending [--signer-name]` and a
//! batch deny each sign ONE statement for all their requests, print
//! kubectl's line for each, and end in issued certificates `openssl`
//! verifies. The approver's records show one shared signature.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output};

use assert_cmd::Command;
use certsign_proto::v1 as pb;
use certsign_tests::wait::block_on;
use certsign_tests::{Stack, run_ok};

fn certctl(stack: &Stack, who: Option<&(PathBuf, PathBuf)>) -> Command {
    let mut c = Command::cargo_bin("certctl").unwrap();
    c.env_remove("CERTCTL_CONFIG")
        .env_remove("CERTCTL_TOKEN")
        .env("HOME", &stack.dir)
        .env("XDG_CONFIG_HOME", stack.dir.join("no-xdg"))
        .arg("--config")
        .arg(stack.dir.join("admin/certctl.toml"))
        .arg("--server")
        .arg(format!("https://{}", stack.approver.addr));
    if let Some(w) = who {
        c.arg("--cert").arg(&w.0).arg("--key").arg(&w.1);
    }
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

fn lines(verb: &str, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("certificatesigningrequest.certificates.k8s.io/{n} {verb}\n"))
        .collect()
}

/// `who` creates a request `name` (signer `signer`, subject CN = name).
fn create(stack: &Stack, who: &(PathBuf, PathBuf), name: &str, signer: &str) {
    ok(certctl(stack, Some(who))
        .args(["create", "csr", name, "--subject", &format!("/CN={name}")])
        .args(["--signer-name", signer, "--key-out"])
        .arg(stack.dir.join(format!("{name}.key")))
        .output()
        .unwrap());
}

/// Waits for `name`'s certificate and has openssl verify it.
fn issued(stack: &Stack, name: &str) {
    let out = stack.dir.join(format!("{name}.chain.pem"));
    ok(certctl(stack, None)
        .args(["certificate", "wait", name, "--timeout", "60s", "--out"])
        .arg(&out)
        .output()
        .unwrap());
    let v = run_ok(
        StdCommand::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(stack.ca())
            .arg(&out),
    );
    assert!(v.trim_end().ends_with("OK"), "{v}");
}

/// The signed statements the approver recorded for each request.
fn recorded(stack: &Stack, names: &[&str]) -> Vec<pb::SignedStatement> {
    let admin = stack.admin_ident();
    block_on(async {
        let mut c = stack.approver_client(Some(&admin));
        let mut out = Vec::new();
        for n in names {
            let csr = c
                .get_certificate_signing_request(pb::GetCertificateSigningRequestRequest {
                    name: n.to_string(),
                })
                .await
                .unwrap()
                .into_inner();
            let d = csr.status.unwrap().decisions;
            assert_eq!(d.len(), 1, "{n}");
            out.push(d[0].statement.clone().unwrap());
        }
        out
    })
}

/// Every statement is the one batch statement (same bytes and signature),
/// each with its own entry.
fn one_batch(statements: &[pb::SignedStatement]) {
    let first = &statements[0];
    for s in statements {
        assert_eq!(s.statement, first.statement);
        assert_eq!(s.signature, first.signature);
        assert!(s.batch.is_some());
    }
    let mut entries: Vec<_> = statements
        .iter()
        .map(|s| s.batch.clone().unwrap().entry)
        .collect();
    entries.dedup();
    assert_eq!(entries.len(), statements.len());
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

#[test]
fn approve_names_file_and_all_pending_with_one_signature_each() {
    let stack = Stack::start();
    let requestor = stack.user("requestor", &["dev"]);
    let client = "kubernetes.io/kube-apiserver-client";
    let all = ["n1", "n2", "n3", "f1", "f2", "p1", "p2", "d1", "d2"];
    for name in all {
        create(&stack, &requestor, name, client);
    }
    // A pending request for another signer name, untouched by
    // `--all-pending --signer-name kubernetes.io/kube-apiserver-client`.
    create(&stack, &requestor, "other", "certsign.io/identity");

    // Three names.
    let out = ok(certctl(&stack, None)
        .args(["certificate", "approve", "n1", "n2", "n3"])
        .output()
        .unwrap());
    assert_eq!(out, lines("approved", &["n1", "n2", "n3"]));
    one_batch(&recorded(&stack, &["n1", "n2", "n3"]));

    // A manifest with two objects (a YAML stream).
    let file = write(
        &stack.dir.join("two.yaml"),
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: f1\n---\napiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: f2\n",
    );
    let out = ok(certctl(&stack, None)
        .args(["certificate", "approve", "-f"])
        .arg(&file)
        .output()
        .unwrap());
    assert_eq!(out, lines("approved", &["f1", "f2"]));
    one_batch(&recorded(&stack, &["f1", "f2"]));

    // Deny two at once (one signed denial statement).
    let out = ok(certctl(&stack, None)
        .args(["certificate", "deny", "d1", "d2"])
        .output()
        .unwrap());
    assert_eq!(out, lines("denied", &["d1", "d2"]));
    one_batch(&recorded(&stack, &["d1", "d2"]));

    // Every pending request of one signer name: p1 and p2 only.
    let out = ok(certctl(&stack, None)
        .args([
            "certificate",
            "approve",
            "--all-pending",
            "--signer-name",
            client,
        ])
        .output()
        .unwrap());
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    assert_eq!(
        got.concat(),
        lines("approved", &["p1", "p2"]).replace('\n', "")
    );
    one_batch(&recorded(&stack, &["p1", "p2"]));
    let other = recorded_condition(&stack, "other");
    assert_eq!(other, "Pending");

    for name in ["n1", "n2", "n3", "f1", "f2", "p1", "p2"] {
        issued(&stack, name);
    }
    for name in ["d1", "d2"] {
        assert_eq!(recorded_condition(&stack, name), "Denied");
    }
}

/// kubectl's CONDITION column for `name`.
fn recorded_condition(stack: &Stack, name: &str) -> String {
    let out = ok(certctl(stack, None)
        .args(["get", "csr", name, "-o", "json"])
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let conds = v["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match conds.first().and_then(|c| c["type"].as_str()) {
        Some(t) => t.to_string(),
        None => "Pending".into(),
    }
}

#[test]
fn all_pending_skips_your_own_and_one_name_is_a_single_statement() {
    let stack = Stack::start();
    let requestor = stack.user("requestor", &["dev"]);
    let admin = stack.admin();
    create(
        &stack,
        &requestor,
        "solo",
        "kubernetes.io/kube-apiserver-client",
    );
    create(
        &stack,
        &admin,
        "mine",
        "kubernetes.io/kube-apiserver-client",
    );
    // One request: a plain ApprovalStatement, as before batches existed.
    let out = ok(certctl(&stack, None)
        .args(["certificate", "approve", "--all-pending"])
        .output()
        .unwrap());
    assert_eq!(out, lines("approved", &["solo"]));
    let s = recorded(&stack, &["solo"]);
    assert!(s[0].batch.is_none());
    issued(&stack, "solo");
    assert_eq!(recorded_condition(&stack, "mine"), "Pending");
    // Nothing named: a usage error naming the choices.
    let out = certctl(&stack, None)
        .args(["certificate", "approve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--all-pending"), "{err}");
}

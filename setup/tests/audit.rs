//! `audit verify` detects an edited, dropped or reordered line and a
//! truncated tail, naming the first bad line; it passes an intact log.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// A journal with a few lines: init's three issuances plus console issues.
fn journal_pki() -> (Pki, Vec<String>) {
    let pki = init(&[]);
    for i in 0..3 {
        let (_, _) = openssl_csr(&pki, &format!("svc{i}"), P256, &format!("/CN=svc{i}"), &[]);
        let out = run(&[
            "issue",
            "--config",
            pki.config().to_str().unwrap(),
            "--csr",
            pki.p(&format!("svc{i}.csr")).to_str().unwrap(),
            "--signer-name",
            "certsign.io/identity",
            "--usages",
            "digital signature,client auth",
            "--expiration",
            "24h",
            "--out",
            pki.p(&format!("svc{i}.crt")).to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lines = std::fs::read_to_string(pki.p("signer/journal.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    (pki, lines)
}

fn verify(pki: &Pki) -> (bool, String) {
    let out = run(&[
        "audit",
        "verify",
        "--config",
        pki.config().to_str().unwrap(),
    ]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn write(pki: &Pki, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(pki.p("signer/journal.jsonl"), s).unwrap();
}

#[test]
fn intact_log_verifies_and_console_issues_are_journaled() {
    let (pki, lines) = journal_pki();
    assert_eq!(lines.len(), 6);
    assert!(lines[5].contains("\"evidence\":\"console\""));
    let (ok, out) = verify(&pki);
    assert!(ok, "{out}");
    assert!(out.contains("6 lines"), "{out}");
    let v = openssl_verify(&pki, "sslclient", &pki.p("svc0.crt"));
    assert!(v.contains(": OK"), "{v}");
}

#[test]
fn edited_line_is_detected() {
    let (pki, mut lines) = journal_pki();
    lines[1] = lines[1].replace("\"evidence\":\"console\"", "\"evidence\":\"approvals\"");
    write(&pki, &lines);
    let (ok, out) = verify(&pki);
    assert!(!ok);
    assert!(
        out.contains("line 3") && out.contains("does not match line 2"),
        "{out}"
    );
}

#[test]
fn edited_last_line_is_detected_by_the_sealed_head() {
    let (pki, mut lines) = journal_pki();
    lines[5] = lines[5].replace("console", "consolf");
    write(&pki, &lines);
    let (ok, out) = verify(&pki);
    assert!(!ok);
    assert!(out.contains("line 6"), "{out}");
}

#[test]
fn dropped_line_is_detected() {
    let (pki, mut lines) = journal_pki();
    lines.remove(2);
    write(&pki, &lines);
    let (ok, out) = verify(&pki);
    assert!(!ok);
    assert!(
        out.contains("line 3") && out.contains("expected 3"),
        "{out}"
    );
}

#[test]
fn reordered_lines_are_detected() {
    let (pki, mut lines) = journal_pki();
    lines.swap(3, 4);
    write(&pki, &lines);
    let (ok, out) = verify(&pki);
    assert!(!ok);
    assert!(out.contains("line 4"), "{out}");
}

#[test]
fn truncated_tail_is_detected() {
    let (pki, mut lines) = journal_pki();
    lines.truncate(4);
    write(&pki, &lines);
    let (ok, out) = verify(&pki);
    assert!(!ok);
    assert!(
        out.contains("line 5") && out.contains("tail truncated"),
        "{out}"
    );
    // A half-written last line is also caught.
    let (pki, lines) = journal_pki();
    let mut s = lines.join("\n");
    s.truncate(s.len() - 10);
    std::fs::write(pki.p("signer/journal.jsonl"), s).unwrap();
    let (ok, out) = verify(&pki);
    assert!(!ok);
    assert!(out.contains("line 6"), "{out}");
}

#[test]
fn deleting_the_sealed_head_is_detected() {
    let (pki, _) = journal_pki();
    std::fs::remove_file(pki.p("signer/journal.jsonl.head")).unwrap();
    let (ok, out) = verify(&pki);
    assert!(!ok);
    assert!(out.contains("journal.jsonl.head is missing"), "{out}");
}

#[test]
fn issue_refuses_while_serve_holds_the_journal() {
    let pki = init(&[]);
    let _server = serve(&pki);
    let _ = openssl_csr(&pki, "svc", P256, "/CN=svc", &[]);
    let out = run(&[
        "issue",
        "--config",
        pki.config().to_str().unwrap(),
        "--csr",
        pki.p("svc.csr").to_str().unwrap(),
        "--signer-name",
        "certsign.io/identity",
        "--usages",
        "client auth",
        "--out",
        pki.p("svc.crt").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by another certsign-signer process")
    );
}

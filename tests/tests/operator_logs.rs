//! What an operator reads in the daemons' logs.
//!
//! The daemons log to stderr, which in production is a file or journald,
//! never a terminal. Each issuance must leave one plain-text line in the
//! signer's log that names the certificate's serial (as `openssl x509
//! -serial` prints it), the request's name and uid, and the caller, so
//! `grep` on a serial finds it and leads to the object.
//! Neither log may carry terminal escape codes.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use base64::Engine as _;
use certsign_tests::{Stack, run_ok};

/// The serial as `openssl x509 -serial` prints it, lowercased: the log
/// must carry exactly these digits, so `grep -i` on openssl's output finds
/// the line (deploy/README.md, "Logs").
fn openssl_serial(pem: &std::path::Path) -> String {
    let out = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(pem),
    );
    let hex = out
        .trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("openssl printed {out:?}"));
    hex.to_ascii_lowercase()
}

#[test]
fn each_issuance_is_one_plain_line_naming_its_serial() {
    let stack = Stack::start();
    let user = stack.user("log-reader", &["team-a"]);
    let dir = stack.dir.join("logs");
    std::fs::create_dir_all(&dir).unwrap();

    let mut serials = Vec::new();
    for n in 0..2 {
        let name = format!("log-reader-{n}");
        let key = dir.join(format!("{name}.key"));
        let csr = dir.join(format!("{name}.csr"));
        run_ok(
            Command::new("openssl")
                .args(["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-subj", "/CN=log-reader"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr),
        );
        let manifest = serde_json::json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "request": base64::engine::general_purpose::STANDARD
                    .encode(std::fs::read(&csr).unwrap()),
                "signerName": "kubernetes.io/kube-apiserver-client",
                "expirationSeconds": 3600,
                "usages": ["client auth"],
            }
        });
        let manifest_path = dir.join(format!("{name}.json"));
        std::fs::write(&manifest_path, manifest.to_string()).unwrap();
        let crt = dir.join(format!("{name}.crt"));
        stack.apply_approve_wait(&user, &manifest_path, &name, &crt);
        serials.push((openssl_serial(&crt), name));
    }
    assert_ne!(serials[0].0, serials[1].0, "two issuances, one serial");

    let signer_log = stack.signer.log();
    let approver_log = stack.approver.log();
    for (who, log) in [("signer", &signer_log), ("approver", &approver_log)] {
        assert!(
            !log.contains('\u{1b}'),
            "the {who}'s log, written to a file, has terminal escape codes:\n{log}"
        );
    }
    for (serial, name) in &serials {
        let lines: Vec<&str> = signer_log
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .any(|w| w.strip_prefix("serial=") == Some(serial.as_str()))
            })
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "serial {serial}: expected one line in the signer's log:\n{signer_log}"
        );
        let line = lines[0];
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains("issued"), "{line}");
        assert!(line.contains("caller=\"certsign-approver\""), "{line}");
        // From the serial to the object: its name and uid are on the line.
        assert!(line.contains(&format!("name=\"{name}\"")), "{line}");
        let uid = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("uid=\""))
            .unwrap_or_else(|| panic!("no uid in {line}"));
        assert!(uid.trim_end_matches('"').len() >= 16, "{line}");
    }
}

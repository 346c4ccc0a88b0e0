//! `init`: every key type, file modes, refusal to overwrite, and `serve`
//! refusing a CA key readable by others.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn each_key_type_gives_a_working_deployment() {
    for (kt, openssl_name) in [
        ("p256", "prime256v1"),
        ("p384", "secp384r1"),
        ("ed25519", "ED25519"),
        ("rsa", "3072 bit"),
        ("rsa2048", "2048 bit"),
    ] {
        let pki = init(&["--key-type", kt]);
        let key_text = Command::new("openssl")
            .args(["pkey", "-noout", "-text", "-in"])
            .arg(pki.p("signer/ca.key"))
            .output()
            .unwrap();
        let key_text = String::from_utf8_lossy(&key_text.stdout).to_string();
        assert!(key_text.contains(openssl_name), "{kt}: {key_text}");
        for (cert, purpose) in [
            ("admin/admin.crt", "sslclient"),
            ("approver/tls.crt", "sslclient"),
            ("approver/tls.crt", "sslserver"),
            ("signer/tls.crt", "sslserver"),
        ] {
            let v = openssl_verify(&pki, purpose, &pki.p(cert));
            assert!(v.contains(": OK"), "{kt} {cert}: {v}");
        }
        for key in [
            "signer/ca.key",
            "signer/tls.key",
            "approver/tls.key",
            "admin/admin.key",
        ] {
            assert_eq!(mode(&pki.p(key)), 0o600, "{kt} {key}");
        }
        for f in [
            "signer/signer.toml",
            "approver/approver.toml",
            "admin/certctl.toml",
            "ca.crt",
        ] {
            assert!(pki.p(f).exists(), "{f}");
        }
        // init's own issuances are the journal's first lines.
        let j = std::fs::read_to_string(pki.p("signer/journal.jsonl")).unwrap();
        assert_eq!(j.lines().count(), 3);
        let out = run(&[
            "audit",
            "verify",
            "--config",
            pki.config().to_str().unwrap(),
        ]);
        assert!(out.status.success());
    }
}

#[test]
fn configs_have_the_documented_shapes() {
    let pki = init(&[
        "--signer-listen",
        "127.0.0.1:17443",
        "--approver-listen",
        "127.0.0.1:18443",
    ]);
    let approver = std::fs::read_to_string(pki.p("approver/approver.toml")).unwrap();
    assert!(approver.contains("listen = \"127.0.0.1:18443\""));
    assert!(approver.contains("endpoints = [\"https://127.0.0.1:17443\"]"));
    let certctl = std::fs::read_to_string(pki.p("admin/certctl.toml")).unwrap();
    assert_eq!(
        certctl,
        "server = \"https://127.0.0.1:18443\"\nca = \"../ca.crt\"\ncert = \"admin.crt\"\nkey = \"admin.key\"\n"
    );
    let cfg = certsign_signer::config::Config::load(&pki.config()).unwrap();
    assert_eq!(cfg.profiles.len(), 4);
    let t = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(pki.p("signer/tls.crt"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&t.stdout).contains("IP Address:127.0.0.1"));
}

#[test]
fn refuses_to_overwrite_an_existing_ca() {
    let pki = init(&[]);
    let before = std::fs::read(pki.p("ca.crt")).unwrap();
    let out = run(&["init", "--dir", pki.dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(pki.p("ca.crt")).unwrap(), before);
}

#[test]
fn serve_refuses_a_ca_key_readable_by_others() {
    let pki = init(&[]);
    std::fs::set_permissions(
        pki.p("signer/ca.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = run(&["serve", "--config", pki.config().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600") && err.contains("ca.key"), "{err}");
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        &["bogus"][..],
        &["init"],
        &["serve", "--nope", "x"],
        &["init", "--dir", "/tmp/x", "--key-type", "dsa"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
    }
}

#[test]
fn dns_listen_hosts_are_named_in_certificates() {
    let pki = init(&["--signer-listen", "signer.example.internal:7443"]);
    let t = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(pki.p("signer/tls.crt"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&t.stdout).contains("DNS:signer.example.internal"));
    let approver = std::fs::read_to_string(pki.p("approver/approver.toml")).unwrap();
    assert!(approver.contains("endpoints = [\"https://signer.example.internal:7443\"]"));
}

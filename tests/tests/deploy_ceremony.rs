//! The production key ceremony of deploy/README.md, run for real: the CA is
//! made by `certsign-signer init`, the development approver and admin keys
//! init also makes are destroyed, the approver and an admin make their own
//! keys and CSRs with openssl, the signer host signs each once with
//! `certsign-signer issue` under `certsign.io/identity`, and the stack then
//! works with only those identities: a user's request approved by the new
//! admin is issued and verified by openssl, and the audit log verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use certsign_tests::pki::add_bootstrap_token;
use certsign_tests::{bin, free_port, require_tool, run, run_ok, serve};
use std::path::Path;
use std::process::Command;

/// `openssl` key + CSR for `subject` (and an optional SAN), like the README.
fn key_and_csr(dir: &Path, stem: &str, subject: &str, san: Option<&str>) {
    run_ok(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(dir.join(format!("{stem}.key"))),
    );
    let mut req = Command::new("openssl");
    req.args(["req", "-new", "-key"])
        .arg(dir.join(format!("{stem}.key")))
        .arg("-out")
        .arg(dir.join(format!("{stem}.csr")))
        .args(["-subj", subject]);
    if let Some(san) = san {
        req.args(["-addext", &format!("subjectAltName={san}")]);
    }
    run_ok(&mut req);
}

fn issue(signer_toml: &Path, dir: &Path, stem: &str, usages: &str) {
    run_ok(
        Command::new(bin("certsign-signer"))
            .args(["issue", "--config"])
            .arg(signer_toml)
            .arg("--csr")
            .arg(dir.join(format!("{stem}.csr")))
            .args([
                "--signer-name",
                "certsign.io/identity",
                "--usages",
                usages,
                "--out",
            ])
            .arg(dir.join(format!("{stem}.crt"))),
    );
}

#[test]
fn ceremony_identities_run_the_stack_without_inits_dev_keys() {
    require_tool("openssl", "apt-get install openssl");
    let tmp = tempfile::tempdir().unwrap();
    let ceremony = tmp.path().join("ceremony");
    let approver_host = tmp.path().join("approver-host");
    let alice_host = tmp.path().join("alice");
    let user = tmp.path().join("user");
    for d in [&approver_host, &alice_host, &user] {
        std::fs::create_dir_all(d).unwrap();
    }
    let sp = free_port();
    let ap = free_port();

    // 1. The signer host makes the CA.
    run_ok(
        Command::new(bin("certsign-signer"))
            .arg("init")
            .arg("--dir")
            .arg(&ceremony)
            .args(["--signer-listen", &format!("127.0.0.1:{sp}")])
            .args(["--approver-listen", &format!("127.0.0.1:{ap}")]),
    );
    // init's development approver and admin identities are destroyed.
    std::fs::remove_file(ceremony.join("approver/tls.key")).unwrap();
    std::fs::remove_file(ceremony.join("admin/admin.key")).unwrap();

    // 2./3. The approver and an admin make their own keys and CSRs.
    key_and_csr(
        &approver_host,
        "approver",
        "/CN=certsign-approver",
        Some("IP:127.0.0.1"),
    );
    key_and_csr(&alice_host, "alice", "/CN=alice/O=system:masters", None);

    // 4. The signer host signs each once; only certificates leave it.
    let signer_toml = ceremony.join("signer/signer.toml");
    issue(
        &signer_toml,
        &approver_host,
        "approver",
        "digital signature,server auth,client auth",
    );
    issue(
        &signer_toml,
        &alice_host,
        "alice",
        "digital signature,client auth",
    );
    for (dir, stem) in [(&approver_host, "approver"), (&alice_host, "alice")] {
        let v = run_ok(
            Command::new("openssl")
                .args(["verify", "-CAfile"])
                .arg(ceremony.join("ca.crt"))
                .arg(dir.join(format!("{stem}.crt"))),
        );
        assert!(v.contains(": OK"), "{v}");
    }
    let text = run_ok(
        Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-ext",
                "extendedKeyUsage,subjectAltName",
                "-in",
            ])
            .arg(approver_host.join("approver.crt")),
    );
    assert!(
        text.contains("TLS Web Server Authentication")
            && text.contains("TLS Web Client Authentication"),
        "approver certificate lacks serverAuth/clientAuth:\n{text}"
    );
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");

    // 5. The approver host: its own identity, for callers and towards the signer.
    let approver_toml = approver_host.join("approver.toml");
    let mut cfg: toml::Table =
        toml::from_str(&std::fs::read_to_string(ceremony.join("approver/approver.toml")).unwrap())
            .unwrap();
    let abs = |p: &Path| toml::Value::String(p.display().to_string());
    let ca = ceremony.join("ca.crt");
    cfg.insert("tls_cert".into(), abs(&approver_host.join("approver.crt")));
    cfg.insert("tls_key".into(), abs(&approver_host.join("approver.key")));
    cfg.insert("client_ca".into(), abs(&ca));
    cfg.insert("trust_bundle".into(), abs(&ca));
    cfg.insert(
        "database_url".into(),
        toml::Value::String(format!(
            "sqlite://{}",
            approver_host.join("approver.db").display()
        )),
    );
    let signer = cfg["signer"].as_table().unwrap().clone();
    let mut signer = signer;
    signer.insert("ca".into(), abs(&ca));
    signer.insert("cert".into(), abs(&approver_host.join("approver.crt")));
    signer.insert("key".into(), abs(&approver_host.join("approver.key")));
    cfg.insert("signer".into(), toml::Value::Table(signer));
    std::fs::write(&approver_toml, toml::to_string(&cfg).unwrap()).unwrap();
    let token = add_bootstrap_token(&approver_toml);

    let (_signer, _) = serve(
        &bin("certsign-signer"),
        &signer_toml,
        &tmp.path().join("signer.log"),
    );
    let (_approver, _) = serve(
        &bin("certsign-approver"),
        &approver_toml,
        &tmp.path().join("approver.log"),
    );

    // 6. A user asks (token), the ceremony's admin approves with her own key.
    let certctl = |args: &[&str]| {
        let mut c = Command::new(bin("certctl"));
        c.args(["--server", &format!("https://127.0.0.1:{ap}"), "--ca"])
            .arg(&ca)
            .args(args)
            .current_dir(&user)
            .env_remove("CERTCTL_CONFIG");
        c
    };
    run_ok(&mut certctl(&[
        "--token",
        &token,
        "create",
        "csr",
        "bob",
        "--subject",
        "/CN=bob/O=dev",
        "--key-out",
        "bob.key",
    ]));
    let alice_crt = alice_host.join("alice.crt");
    let alice_key = alice_host.join("alice.key");
    let alice = |args: &[&str]| {
        let mut c = certctl(&[]);
        c.arg("--cert")
            .arg(&alice_crt)
            .arg("--key")
            .arg(&alice_key)
            .args(args);
        c
    };
    run_ok(&mut alice(&["certificate", "approve", "bob"]));
    run_ok(&mut certctl(&[
        "--token",
        &token,
        "certificate",
        "wait",
        "bob",
        "--timeout",
        "2m",
        "--out",
        "bob.crt",
    ]));
    let listing = run_ok(&mut alice(&["get", "csr", "bob"]));
    assert!(listing.contains("Approved,Issued"), "{listing}");
    let v = run_ok(
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(&ca)
            .arg(user.join("bob.crt")),
    );
    assert!(v.contains(": OK"), "{v}");

    // init's destroyed admin cannot act any more (its key is gone), and the
    // journal, console issuances included, verifies.
    let gone = run(&mut certctl(&[
        "--cert",
        ceremony.join("admin/admin.crt").to_str().unwrap(),
        "--key",
        ceremony.join("admin/admin.key").to_str().unwrap(),
        "get",
        "csr",
    ]));
    assert!(
        !gone.status.success(),
        "the destroyed admin key still works?"
    );
    run_ok(
        Command::new(bin("certsign-signer"))
            .args(["audit", "verify", "--config"])
            .arg(&signer_toml),
    );
}

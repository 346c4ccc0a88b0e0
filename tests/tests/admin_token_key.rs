//! An admin whose key was generated in a PKCS#11 token (SoftHSM2) drives
//! the real `certctl` against a real stack with `key = "pkcs11:..."`: the
//! token key authenticates the TLS connection and signs the approval
//! (single and batch), the denial and the revocation, and the signer
//! issues and revokes on that evidence. A wrong PIN and a URI naming no
//! key each give one clear error line and change nothing.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use certsign_tests::hsm::{SOFTHSM_MODULE, SoftHsm};
use certsign_tests::pki::MintSpec;
use certsign_tests::{Stack, bin, run, run_ok};

/// A certctl.toml for the token admin: `key` is the URI, and the module
/// comes from `pkcs11_module` when the URI names none.
fn token_config(stack: &Stack, dir: &Path, name: &str, cert: &Path, uri: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "server = \"https://{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{uri}\"\npkcs11_module = \"{SOFTHSM_MODULE}\"\n",
            stack.approver.addr,
            stack.ca().display(),
            cert.display(),
        ),
    )
    .unwrap();
    path
}

fn certctl(config: &Path, hsm: &SoftHsm) -> Command {
    let mut c = Command::new(bin("certctl"));
    let (k, v) = hsm.env();
    c.env(k, v).arg("--config").arg(config);
    c
}

/// A request `name` by a fresh user, pending.
fn request(stack: &Stack, user: &(PathBuf, PathBuf), name: &str) {
    run_ok(
        stack
            .certctl()
            .arg("--cert")
            .arg(&user.0)
            .arg("--key")
            .arg(&user.1)
            .args([
                "create",
                "csr",
                name,
                "--subject",
                &format!("/CN={name}/O=dev"),
            ])
            .arg("--key-out")
            .arg(stack.dir.join(format!("{name}.key"))),
    );
}

fn condition(stack: &Stack, name: &str) -> String {
    let json = run_ok(stack.certctl().args(["get", "csr", name, "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let conds = v["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conds
        .iter()
        .filter_map(|c| c["type"].as_str().map(String::from))
        .collect::<Vec<_>>()
        .join(",")
}

fn one_line_error(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(want),
        "wanted {want:?}: {stderr}"
    );
}

#[test]
fn a_token_admin_key_approves_denies_and_revokes_through_certctl() {
    let stack = Stack::start();
    let hsm = SoftHsm::new("admins", "1234");
    let spki = hsm.generate_ec_p256("alice");
    let dir = stack.dir.clone();
    let cert = dir.join("alice.crt");
    std::fs::write(
        &cert,
        stack
            .pki
            .mint_for_public_key(&MintSpec::client("alice", &["system:masters"]), &spki),
    )
    .unwrap();
    // No private key file for alice anywhere: only the token has it.
    let uri = hsm.uri("alice", &hsm.pin_file(), false);
    let config = token_config(&stack, &dir, "alice", &cert, &uri);
    let user = stack.user("requestor", &["dev"]);

    // One approval, signed in the token; the signer issues on it.
    request(&stack, &user, "svc");
    let out = run_ok(certctl(&config, &hsm).args(["certificate", "approve", "svc"]));
    assert!(out.contains("approved"), "{out}");
    let crt = dir.join("svc.crt");
    run_ok(
        stack
            .certctl()
            .args(["certificate", "wait", "svc", "--timeout", "60s", "--out"])
            .arg(&crt),
    );
    let verified = run_ok(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(stack.ca())
            .arg(&crt),
    );
    assert!(verified.contains(": OK"), "{verified}");
    let json = run_ok(stack.certctl().args(["get", "csr", "svc", "-o", "json"]));
    assert!(
        json.contains("alice"),
        "the decision names the token admin: {json}"
    );

    // A batch: one statement signed once in the token for two requests.
    request(&stack, &user, "svc-2");
    request(&stack, &user, "svc-3");
    run_ok(certctl(&config, &hsm).args(["certificate", "approve", "svc-2", "svc-3"]));
    for name in ["svc-2", "svc-3"] {
        run_ok(
            stack
                .certctl()
                .args(["certificate", "wait", name, "--timeout", "60s"]),
        );
    }

    // A denial.
    request(&stack, &user, "svc-4");
    run_ok(certctl(&config, &hsm).args(["certificate", "deny", "svc-4"]));
    assert!(condition(&stack, "svc-4").contains("Denied"));

    // A revocation: the CRL the signer signs lists the serial.
    let out = run_ok(certctl(&config, &hsm).args(["certificate", "revoke", "svc"]));
    assert!(out.contains("revoked"), "{out}");
    let serial = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(&crt),
    );
    let serial = serial.trim().trim_start_matches("serial=").to_uppercase();
    let crl = dir.join("crl.pem");
    run_ok(stack.certctl().args(["get", "crl", "--out"]).arg(&crl));
    let text = run_ok(
        Command::new("openssl")
            .args(["crl", "-noout", "-text", "-in"])
            .arg(&crl),
    );
    assert!(
        text.contains(&serial),
        "serial {serial} not on the CRL:\n{text}"
    );

    // A wrong PIN: one line, nothing decided.
    request(&stack, &user, "svc-5");
    let wrong = hsm.write_pin_file("wrong-pin", "9999");
    let bad = token_config(
        &stack,
        &dir,
        "wrong-pin",
        &cert,
        &hsm.uri("alice", &wrong, true),
    );
    let out = run(certctl(&bad, &hsm).args(["certificate", "approve", "svc-5"]));
    one_line_error(&out, "the PIN is incorrect");
    // A URI naming no key in the token: one line, nothing decided.
    let none = token_config(
        &stack,
        &dir,
        "no-key",
        &cert,
        &hsm.uri("nobody", &hsm.pin_file(), true),
    );
    let out = run(certctl(&none, &hsm).args(["certificate", "approve", "svc-5"]));
    one_line_error(&out, "no such private key in the token");
    assert_eq!(condition(&stack, "svc-5"), "", "svc-5 is still pending");
}

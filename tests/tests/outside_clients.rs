//! Clients no one here wrote: grpcurl (through reflection only, no .proto
//! files) and a Python client generated from our .proto files, each driving
//! a real stack over mTLS. The grpcurl commands are the ones the README
//! documents for operators.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use base64::Engine as _;
use certsign_tests::{Stack, repo_root, run, run_ok};

/// A CSR made by `openssl`, PEM.
fn openssl_csr(dir: &std::path::Path, cn: &str) -> Vec<u8> {
    let key = dir.join(format!("{cn}-req.key"));
    let csr = dir.join(format!("{cn}-req.csr"));
    run_ok(Command::new("openssl").args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
    ]));
    std::fs::read(csr).unwrap()
}

struct Grpcurl<'a> {
    stack: &'a Stack,
}

impl Grpcurl<'_> {
    fn cmd(&self) -> Command {
        let (cert, key) = self.stack.admin();
        let mut c = Command::new("grpcurl");
        c.arg("-cacert")
            .arg(self.stack.ca())
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key);
        c
    }

    fn call(&self, method: &str, body: &serde_json::Value) -> serde_json::Value {
        let out = run_ok(
            self.cmd()
                .arg("-d")
                .arg(body.to_string())
                .arg(&self.stack.approver.addr)
                .arg(method),
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {out}"))
    }
}

#[test]
fn grpcurl_lists_describes_creates_reads_and_watches() {
    let stack = Stack::start();
    let g = Grpcurl { stack: &stack };
    let addr = stack.approver.addr.clone();

    // Reflection: the services are listed and described without .proto files.
    let list = run_ok(g.cmd().arg(&addr).arg("list"));
    assert!(list.contains("certsign.v1.Approver"), "{list}");
    assert!(list.contains("grpc.health.v1.Health"), "{list}");
    let describe = run_ok(
        g.cmd()
            .arg(&addr)
            .args(["describe", "certsign.v1.Approver"]),
    );
    for rpc in [
        "CreateCertificateSigningRequest",
        "GetCertificateSigningRequest",
        "ListCertificateSigningRequests",
        "WatchCertificateSigningRequests",
        "ApproveCertificateSigningRequest",
        "DenyCertificateSigningRequest",
        "DeleteCertificateSigningRequest",
        "GetTrustBundle",
        "CreateSelfSubjectReview",
    ] {
        assert!(describe.contains(rpc), "describe lacks {rpc}: {describe}");
    }

    // Health answers.
    let health = g.call("grpc.health.v1.Health/Check", &serde_json::json!({}));
    assert_eq!(health["status"], "SERVING", "{health}");

    // Who the approver takes the caller to be.
    let me = g.call(
        "certsign.v1.Approver/CreateSelfSubjectReview",
        &serde_json::json!({}),
    );
    assert_eq!(
        me,
        serde_json::json!({"userInfo": {"username": "admin", "groups": ["system:masters", "system:authenticated"]}})
    );

    // Create with a JSON body shaped like `kubectl get csr -o json`.
    let csr = openssl_csr(&stack.dir, "ops-made");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&csr);
    let created = g.call(
        "certsign.v1.Approver/CreateCertificateSigningRequest",
        &serde_json::json!({
            "certificateSigningRequest": {
                "apiVersion": "certificates.k8s.io/v1",
                "kind": "CertificateSigningRequest",
                "metadata": {"name": "ops-made"},
                "spec": {
                    "request": b64,
                    "signerName": "kubernetes.io/kube-apiserver-client",
                    "expirationSeconds": 86400,
                    "usages": ["client auth"],
                    // Identity in the body is ignored: it comes from the certificate.
                    "username": "mallory",
                    "groups": ["system:masters"]
                },
                "status": {"conditions": [{"type": "Approved", "status": "True"}]}
            }
        }),
    );
    assert_eq!(created["apiVersion"], "certificates.k8s.io/v1", "{created}");
    assert_eq!(created["kind"], "CertificateSigningRequest");
    assert_eq!(created["metadata"]["name"], "ops-made");
    assert!(created["metadata"]["uid"].as_str().unwrap().len() >= 16);
    assert_eq!(
        created["spec"]["username"], "admin",
        "identity from the body was used"
    );
    assert_eq!(
        created["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client"
    );
    assert_eq!(created["spec"]["expirationSeconds"], 86400);
    assert_eq!(created["spec"]["request"], b64);
    assert!(
        created["status"]["conditions"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "status from the body was kept: {created}"
    );

    // Get and List.
    let got = g.call(
        "certsign.v1.Approver/GetCertificateSigningRequest",
        &serde_json::json!({"name": "ops-made"}),
    );
    assert_eq!(got["metadata"]["uid"], created["metadata"]["uid"]);
    let listed = g.call(
        "certsign.v1.Approver/ListCertificateSigningRequests",
        &serde_json::json!({"signerName": "kubernetes.io/kube-apiserver-client"}),
    );
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"ops-made"), "{listed}");

    // Watch: the initial event for the request arrives (grpcurl then hits
    // its own -max-time, which is how an operator ends a watch).
    let out = run(g
        .cmd()
        .args(["-max-time", "3", "-d"])
        .arg(r#"{"name":"ops-made","sendInitialEvents":true}"#)
        .arg(&addr)
        .arg("certsign.v1.Approver/WatchCertificateSigningRequests"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"ADDED\""), "watch printed: {stdout}");
    assert!(stdout.contains("ops-made"), "watch printed: {stdout}");

    // Trust bundle.
    let bundle = g.call(
        "certsign.v1.Approver/GetTrustBundle",
        &serde_json::json!({}),
    );
    let pem = base64::engine::general_purpose::STANDARD
        .decode(bundle["trustBundle"].as_str().unwrap())
        .unwrap();
    assert_eq!(pem, std::fs::read(stack.ca()).unwrap());
}

#[test]
fn grpcurl_cannot_reach_signer_reflection_and_unknown_clients_are_refused() {
    let stack = Stack::start();
    let (cert, key) = stack.admin();
    // The admin is trusted by the CA but not allow-listed on the signer.
    let out = run(Command::new("grpcurl")
        .arg("-cacert")
        .arg(stack.ca())
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .arg("-import-path")
        .arg(repo_root().join("proto/proto"))
        .arg("-proto")
        .arg("certsign/v1/signer.proto")
        .arg("-d")
        .arg("{}")
        .arg(&stack.signer.addr)
        .arg("certsign.v1.Signer/Sign"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(
        err.contains("admin"),
        "message should name the identity: {err}"
    );

    // No reflection on the signer by default.
    let out = run(Command::new("grpcurl")
        .arg("-cacert")
        .arg(stack.ca())
        .arg("-cert")
        .arg(stack.dir.join("approver/tls.crt"))
        .arg("-key")
        .arg(stack.dir.join("approver/tls.key"))
        .arg(&stack.signer.addr)
        .arg("list"));
    assert!(!out.status.success(), "signer served reflection");
}

#[test]
fn python_client_from_proto_files_runs_the_whole_flow() {
    let stack = Stack::start();
    let (user_cert, user_key) = stack.user("pyuser", &["dev"]);
    let (admin_cert, admin_key) = stack.admin();
    let out = run_ok(
        Command::new("python3")
            .arg(repo_root().join("tests/python/csr_flow.py"))
            .arg("--approver")
            .arg(&stack.approver.addr)
            .arg("--proto")
            .arg(repo_root().join("proto/proto"))
            .arg("--ca")
            .arg(stack.ca())
            .arg("--admin-cert")
            .arg(admin_cert)
            .arg("--admin-key")
            .arg(admin_key)
            .arg("--user-cert")
            .arg(user_cert)
            .arg("--user-key")
            .arg(user_key),
    );
    assert!(out.contains("python client: OK"), "{out}");
    assert!(out.contains("requestor=pyuser"), "{out}");
}

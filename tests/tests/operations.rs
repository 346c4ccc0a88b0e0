//! Operating the daemons (issue 30): signals that never kill (SIGHUP reloads
//! the TLS identity of the signer and the approver; a bad pair keeps the old
//! one), SIGTERM that drains (an open watch ends with UNAVAILABLE and the
//! process exits within `shutdown_grace`), `--check-config`, and the
//! approver's backup and restore with the signer's journal as the authority
//! for what was issued.
//!
//! Real processes, real mTLS, real signals with kill(1); which certificate a
//! daemon serves is judged by `openssl s_client`, an outside client.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use certsign_proto::v1::{
    GetCertificateSigningRequestRequest, WatchCertificateSigningRequestsRequest,
};
use certsign_tests::grpc::{approve_request, create_request};
use certsign_tests::pki::{MintSpec, csr, mint_with, rogue_ca};
use certsign_tests::wait::wait_issued;
use certsign_tests::{Stack, bin, edit_toml, run};
use tonic::Code;

/// Polls `log` until it contains `needle` (30 s at most).
async fn wait_log(log: impl Fn() -> String, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = log();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The serial (hex, as openssl prints it) of the certificate a daemon at
/// `addr` serves to a new connection, as `openssl s_client` sees it.
fn served_serial(stack: &Stack, addr: &str) -> String {
    let (cert, key) = stack.admin();
    let approver = stack.dir.join("approver");
    // The signer only finishes handshakes with its allow-listed client.
    let (cert, key) = if addr == stack.signer.addr {
        (approver.join("tls.crt"), approver.join("tls.key"))
    } else {
        (cert, key)
    };
    certsign_tests::pki::served_serial(addr, &stack.ca(), &cert, &key)
}

/// Replaces `dir/tls.{crt,key}` with a fresh loopback identity `cn`
/// minted by the stack's CA (setup only).
fn new_tls_identity(stack: &Stack, dir: &str, cn: &str) {
    let id = stack.mint(&MintSpec::new(cn, &[]));
    std::fs::write(stack.dir.join(dir).join("tls.crt"), &id.cert_pem).unwrap();
    std::fs::write(stack.dir.join(dir).join("tls.key"), &id.key_pem).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_signer_tls_certificate_and_keeps_serving() {
    let stack = Stack::start();
    let signer = stack.signer.addr.clone();
    let first = served_serial(&stack, &signer);
    assert_eq!(
        first,
        certsign_tests::pki::openssl_serial(&stack.dir.join("signer/tls.crt"))
    );
    // A connection opened before the reload.
    let mut old = stack.signer_client(Some(&stack.approver_ident()));
    let crl = || certsign_proto::v1::SignRequest {
        request: Some(certsign_proto::v1::sign_request::Request::Crl(
            Default::default(),
        )),
        ..Default::default()
    };
    old.sign(crl()).await.unwrap();

    new_tls_identity(&stack, "signer", "certsign-signer");
    stack.signer.signal("HUP");
    wait_log(
        || stack.signer.log(),
        "SIGHUP: reloaded the TLS certificate",
    )
    .await;
    let second = served_serial(&stack, &signer);
    assert_ne!(
        second, first,
        "a new connection still sees the old certificate"
    );
    assert_eq!(
        second,
        certsign_tests::pki::openssl_serial(&stack.dir.join("signer/tls.crt"))
    );
    // The old connection keeps working, and the approver still gets
    // certificates signed through its own (older) connection.
    old.sign(crl()).await.unwrap();
    let (_key, pem) = csr("hup-user", &[]);
    let user = stack.mint(&MintSpec::client("hup-user", &[]));
    let created = stack
        .approver_client(Some(&user))
        .create_certificate_signing_request(create_request("after-hup", &pem))
        .await
        .unwrap()
        .into_inner();
    let mut a = stack.approver_client(Some(&stack.admin_ident()));
    a.approve_certificate_signing_request(approve_request(&created, &stack.admin_ident()))
        .await
        .unwrap();
    wait_issued(&mut a, "after-hup").await;

    // A key that is not the certificate's: refused, the identity in use
    // stays, the process lives.
    let other = stack.mint(&MintSpec::new("certsign-signer", &[]));
    std::fs::write(stack.dir.join("signer/tls.key"), &other.key_pem).unwrap();
    stack.signer.signal("HUP");
    let log = wait_log(|| stack.signer.log(), "TLS reload from").await;
    assert!(log.contains("the certificate in use stays"), "{log}");
    assert_eq!(served_serial(&stack, &signer), second);
    let mut signer_proc = stack.signer;
    assert!(signer_proc.is_running(), "SIGHUP ended the signer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_approver_tls_certificate() {
    let stack = Stack::start();
    let approver = stack.approver.addr.clone();
    let first = served_serial(&stack, &approver);
    let mut old = stack.approver_client(Some(&stack.admin_ident()));
    let get = || GetCertificateSigningRequestRequest { name: "x".into() };
    assert_eq!(
        old.get_certificate_signing_request(get())
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    new_tls_identity(&stack, "approver", "certsign-approver");
    stack.approver.signal("HUP");
    wait_log(|| stack.approver.log(), "TLS certificate reloaded from").await;
    let second = served_serial(&stack, &approver);
    assert_ne!(second, first);
    assert_eq!(
        second,
        certsign_tests::pki::openssl_serial(&stack.dir.join("approver/tls.crt"))
    );
    assert_eq!(
        old.get_certificate_signing_request(get())
            .await
            .unwrap_err()
            .code(),
        Code::NotFound,
        "the connection opened before the reload stopped working"
    );
    let mut approver_proc = stack.approver;
    assert!(approver_proc.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_an_open_watch_and_exits_within_the_grace() {
    let grace = 5;
    let mut stack = Stack::start_configured(
        &[],
        |_| {},
        |t| {
            t.insert("shutdown_grace".into(), format!("{grace}s").into());
        },
    );
    let mut c = stack.approver_client(Some(&stack.admin_ident()));
    let mut watch = c
        .watch_certificate_signing_requests(WatchCertificateSigningRequestsRequest {
            send_initial_events: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The watch is open and live: an event arrives.
    let (_key, pem) = csr("watched", &[]);
    c.create_certificate_signing_request(create_request("watched", &pem))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), watch.message())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_some());

    // A health watch on the same connection sees NOT_SERVING at once.
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(certsign_tests::grpc::channel(
            &stack.approver.addr,
            &stack.ca_pem(),
            Some(&stack.admin_ident()),
        ))
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(health.message().await.unwrap().unwrap().status, serving);

    let sent = Instant::now();
    stack.approver.signal("TERM");
    let not_serving = tokio::time::timeout(Duration::from_secs(5), health.message())
        .await
        .expect("no health update after SIGTERM")
        .unwrap()
        .unwrap();
    assert_eq!(
        not_serving.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    let ended = tokio::time::timeout(Duration::from_secs(grace + 5), watch.message())
        .await
        .expect("the watch was not ended by SIGTERM");
    let status = ended.expect_err("the watch ended without a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("the approver is shutting down"),
        "{status:?}"
    );
    // The process is gone within the grace (a little slack for the OS).
    while stack.approver.is_running() {
        assert!(
            sent.elapsed() < Duration::from_secs(grace + 2),
            "still running {:?} after SIGTERM:\n{}",
            sent.elapsed(),
            stack.approver.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = stack.approver.log();
    assert!(log.contains("stopping: NOT_SERVING"), "{log}");
}

#[test]
fn check_config_loads_and_validates_without_serving() {
    let stack = Stack::start();
    let signer_toml = stack.dir.join("signer/signer.toml");
    let approver_toml = stack.dir.join("approver/approver.toml");
    let check = |binary: &str, config: &Path| {
        let out = run(Command::new(bin(binary))
            .args(["serve", "--check-config", "--config"])
            .arg(config));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // Fine while both daemons run (no journal lock, no port taken).
    for (b, c) in [
        ("certsign-signer", &signer_toml),
        ("certsign-approver", &approver_toml),
    ] {
        let (code, out, err) = check(b, c);
        assert_eq!(code, Some(0), "{b}: {out}{err}");
        assert!(out.contains("configuration OK"), "{b}: {out}");
    }
    // An unknown key: 64, naming it.
    for (b, c) in [
        ("certsign-signer", &signer_toml),
        ("certsign-approver", &approver_toml),
    ] {
        let bad = c.with_file_name("bad.toml");
        let text = std::fs::read_to_string(c).unwrap();
        std::fs::write(&bad, format!("bogus_key = 1\n{text}")).unwrap();
        let (code, _, err) = check(b, &bad);
        assert_eq!(code, Some(64), "{b}: {err}");
        assert!(err.contains("bogus_key"), "{b}: {err}");
    }
    // A TLS key that is not the certificate's: 64, naming the files.
    let other = stack.mint(&MintSpec::new("other", &[]));
    for (b, c, dir) in [
        ("certsign-signer", &signer_toml, "signer"),
        ("certsign-approver", &approver_toml, "approver"),
    ] {
        std::fs::write(stack.dir.join(dir).join("other.key"), &other.key_pem).unwrap();
        edit_toml(c, |t| {
            t.insert("tls_key".into(), "other.key".into());
        });
        let (code, _, err) = check(b, c);
        assert_eq!(code, Some(64), "{b}: {err}");
        assert!(err.contains("other.key"), "{b}: {err}");
    }
}

/// certctl's one error line (stderr) and exit code.
fn certctl_line(cmd: &mut Command) -> (Option<i32>, String) {
    let out = run(cmd);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    (out.status.code(), err)
}

#[test]
fn a_refused_client_certificate_is_one_line_naming_the_cause_on_both_sides() {
    let stack = Stack::start();
    let (rogue_cert, rogue_key) = rogue_ca("rogue CA");
    let cases = [
        (
            "unknown",
            mint_with(&MintSpec::client("mallory", &[]), &rogue_cert, &rogue_key),
            "unknown certificate authority",
        ),
        (
            "expired",
            stack.mint(&MintSpec::client_days(
                "old-admin",
                &["system:masters"],
                -10,
                -1,
            )),
            "certificate expired or not yet valid",
        ),
    ];
    for (name, ident, cause) in cases {
        let cert = stack.dir.join(format!("{name}.crt"));
        let key = stack.dir.join(format!("{name}.key"));
        std::fs::write(&cert, &ident.cert_pem).unwrap();
        std::fs::write(&key, &ident.key_pem).unwrap();
        let (code, err) = certctl_line(
            stack
                .certctl()
                .arg("--cert")
                .arg(&cert)
                .arg("--key")
                .arg(&key)
                .args(["get", "csr"]),
        );
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(
            err,
            format!("error: the approver refused this client certificate ({cause})"),
            "{name}"
        );
    }
    // The approver's info line names the peer and rustls' reason.
    let log = stack.approver.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TLS handshake refused"))
        .collect();
    assert!(refused.len() >= 2, "{log}");
    assert!(
        refused
            .iter()
            .all(|l| l.contains(" INFO ") && l.contains("peer=127.0.0.1:")),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|l| l.contains("UnknownIssuer")),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|l| l.contains("certificate expired")),
        "{refused:?}"
    );
}

#[test]
fn certctl_aimed_at_the_signer_says_it_is_a_signer() {
    let stack = Stack::start();
    let (code, err) = certctl_line(
        Command::new(bin("certctl"))
            .arg("--config")
            .arg(stack.dir.join("admin/certctl.toml"))
            .arg("--server")
            .arg(format!("https://{}", stack.signer.addr))
            .args(["get", "csr"]),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with("error: the server at https://")
            && err.contains("is a certsign signer, not the approver"),
        "{err}"
    );
}

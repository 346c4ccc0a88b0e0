//! Prometheus metrics of both daemons, scraped over `metrics_listen` and read
//! with Python's prometheus_client parsers (the outside judge): the families
//! exist, the counters move with real traffic (create, approve, issue,
//! deny, a refusal at the signer, a bad bootstrap token), label values stay
//! within the configured signer names and fixed lists whatever a peer
//! sends, and the expiry gauges and 30-day warnings see the certificates
//! the daemons run on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use certsign_proto::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec, ObjectMeta, SignRequest, sign_request,
};
use certsign_tests::grpc::create_request;
use certsign_tests::metrics::{Scrape, scrape};
use certsign_tests::pki::{MintSpec, Pki};
use certsign_tests::stack::{approver_spawn, signer_spawn};
use certsign_tests::wait::block_on;
use certsign_tests::{Stack, bin, free_port, run, run_ok};

const CLIENT: &str = "kubernetes.io/kube-apiserver-client";
const DAY: f64 = 86400.0;

/// A key and CSR for `cn` made with openssl, and a manifest for it.
fn manifest(dir: &Path, name: &str) -> std::path::PathBuf {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    run_ok(
        Command::new("openssl")
            .args(["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-subj", "/CN=metrics-user"])
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
            "signerName": CLIENT,
            "expirationSeconds": 3600,
            "usages": ["client auth"],
        }
    });
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, manifest.to_string()).unwrap();
    path
}

/// Scrape `addr` until `ok` holds (the store counts refresh every few
/// seconds), or fail with the last scrape.
fn scrape_until(addr: &str, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = scrape(addr);
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{addr}: {what} did not hold within 30s; last scrape:\n{:#?}",
            s.samples
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A certificate Sign straight to the signer (as the approver) that it
/// refuses: no uid.
fn refused_sign(stack: &Stack, signer_name: &str) {
    let req = SignRequest {
        request: Some(sign_request::Request::CertificateSigningRequest(
            CertificateSigningRequest {
                metadata: Some(ObjectMeta {
                    name: "no-uid".into(),
                    ..Default::default()
                }),
                spec: Some(CertificateSigningRequestSpec {
                    signer_name: signer_name.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let ident = stack.approver_ident();
    let err = block_on(async { stack.signer_client(Some(&ident)).sign(req).await })
        .expect_err("a Sign without uid is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}

#[test]
fn both_daemons_export_metrics_that_move_with_traffic() {
    let (am, sm) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let stack = Stack::start_configured(
        &[],
        |s| {
            s.insert("metrics_listen".into(), sm.clone().into());
        },
        |a| {
            a.insert("metrics_listen".into(), am.clone().into());
        },
    );

    // Before any traffic: every family is there, nothing issued yet.
    let before = scrape(&am);
    assert!(
        before
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        before.content_type
    );
    for family in [
        "certsign_approver_requests",
        "certsign_approver_pending_requests",
        "certsign_approver_forwarder_in_flight",
        "certsign_approver_sign_duration_seconds",
        "certsign_approver_store_write_duration_seconds",
        "certsign_approver_certificate_expiry_seconds",
        "certsign_approver_crl_expiry_seconds",
    ] {
        assert!(
            before.families().contains(&family.to_string()),
            "approver: no {family} in {:?}",
            before.families()
        );
    }
    assert_eq!(
        before.value("certsign_approver_forwarder_attempts_total", &[]),
        0.0
    );
    let signer_before = scrape(&sm);
    assert_eq!(signer_before.value("certsign_signer_signs_total", &[]), 0.0);

    // Traffic: one request issued, one denied, two refused at the signer
    // (one for a signer name no profile has), one bad bootstrap token.
    let user = stack.user("metrics-user", &["team-a"]);
    let dir = stack.dir.join("metrics");
    std::fs::create_dir_all(&dir).unwrap();
    let issued = manifest(&dir, "metrics-issued");
    stack.apply_approve_wait(&user, &issued, "metrics-issued", &dir.join("issued.crt"));
    let denied = manifest(&dir, "metrics-denied");
    let apply = |m: &Path| {
        run_ok(
            stack
                .certctl()
                .arg("--cert")
                .arg(&user.0)
                .arg("--key")
                .arg(&user.1)
                .args(["apply", "-f"])
                .arg(m),
        )
    };
    apply(&denied);
    run_ok(
        stack
            .certctl()
            .args(["certificate", "deny", "metrics-denied"]),
    );
    refused_sign(&stack, CLIENT);
    let hostile = "attacker.example/\"} evil{x=\"";
    refused_sign(&stack, hostile);
    let (_, csr_pem) = certsign_tests::pki::csr("metrics-token", &[]);
    let mut req = tonic::Request::new(create_request("metrics-token", &csr_pem));
    req.metadata_mut().insert(
        "authorization",
        "Bearer abcdef.0123456789abcdef".parse().unwrap(),
    );
    let err = block_on(async {
        stack
            .approver_client(None)
            .create_certificate_signing_request(req)
            .await
    })
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // The approver's view.
    let client = [("signer_name", CLIENT)];
    let a = scrape_until(&am, "issued and denied counted", |s| {
        s.value(
            "certsign_approver_requests",
            &[("state", "issued"), ("signer_name", CLIENT)],
        ) >= 1.0
            && s.value(
                "certsign_approver_requests",
                &[("state", "denied"), ("signer_name", CLIENT)],
            ) >= 1.0
    });
    assert_eq!(a.value("certsign_approver_pending_requests", &client), 0.0);
    assert!(a.has("certsign_approver_pending_requests", &client));
    assert!(
        a.value(
            "certsign_approver_forwarder_attempts_total",
            &[("outcome", "issued")]
        ) >= 1.0
    );
    assert_eq!(a.value("certsign_approver_forwarder_in_flight", &[]), 0.0);
    assert!(a.value("certsign_approver_sign_duration_seconds_count", &[]) >= 1.0);
    assert!(a.value("certsign_approver_store_write_duration_seconds_count", &[]) >= 3.0);
    for decision in ["approve", "deny"] {
        assert!(
            a.value(
                "certsign_approver_decisions_total",
                &[("decision", decision), ("by", "admin")]
            ) >= 1.0,
            "{decision}"
        );
    }
    assert!(
        a.value(
            "certsign_approver_token_logins_total",
            &[("outcome", "invalid")]
        ) >= 1.0
    );
    assert!(
        a.value(
            "certsign_approver_rejected_total",
            &[("rpc", "create"), ("reason", "unauthenticated")]
        ) >= 1.0
    );
    // Signer names: the configured ones and `other`, nothing else.
    let config: toml::Table =
        toml::from_str(&std::fs::read_to_string(stack.pki.approver_toml()).unwrap()).unwrap();
    let mut allowed: Vec<String> = config["signer_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    allowed.push("other".into());
    for name in a.label_values("certsign_approver_requests", "signer_name") {
        assert!(allowed.contains(&name), "unexpected signer_name {name:?}");
    }
    // Init's certificates last a year; the CRL a day.
    for cert in ["tls", "ca"] {
        let left = a.value(
            "certsign_approver_certificate_expiry_seconds",
            &[("certificate", cert)],
        );
        assert!(left > 300.0 * DAY && left < 3700.0 * DAY, "{cert}: {left}");
    }
    let a = scrape_until(&am, "a CRL published", |s| {
        s.value("certsign_approver_crl_expiry_seconds", &[]) > 0.0
    });
    assert!(a.value("certsign_approver_crl_expiry_seconds", &[]) <= DAY + 60.0);

    // The signer's view.
    let s = scrape(&sm);
    assert!(
        s.value(
            "certsign_signer_signs_total",
            &[("signer_name", CLIENT), ("outcome", "issued")]
        ) >= 1.0
    );
    assert!(
        s.value(
            "certsign_signer_refusals_total",
            &[("signer_name", CLIENT), ("rule", "invalid_request")]
        ) >= 1.0
    );
    assert!(
        s.value(
            "certsign_signer_refusals_total",
            &[("signer_name", "other"), ("rule", "invalid_request")]
        ) >= 1.0
    );
    assert!(s.value("certsign_signer_sign_duration_seconds_count", &[]) >= 3.0);
    for sample in &s.samples {
        for v in sample.labels.values() {
            assert!(
                !v.contains("attacker"),
                "a peer's string in a label: {sample:?}"
            );
        }
    }
    for cert in ["tls", "ca"] {
        let left = s.value(
            "certsign_signer_certificate_expiry_seconds",
            &[("certificate", cert)],
        );
        assert!(left > 300.0 * DAY, "{cert}: {left}");
    }
    // Nothing close to expiry, so no warning.
    for log in [stack.signer.log(), stack.approver.log()] {
        assert!(!log.contains("certificate expires in"), "{log}");
    }
}

/// Writes `ident` as `name.crt` / `name.key` (0600) under `dir`.
fn write_ident(dir: &Path, name: &str, ident: &certsign_tests::pki::Ident) -> (String, String) {
    use std::os::unix::fs::PermissionsExt as _;
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&crt, &ident.cert_pem).unwrap();
    std::fs::write(&key, &ident.key_pem).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (
        crt.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    )
}

fn ten_days(cn: &str) -> MintSpec<'_> {
    MintSpec {
        // Half a day past 10 days: 10 whole days left when checked.
        not_after: time::Duration::days(10) + time::Duration::hours(12),
        ..MintSpec::new(cn, &[])
    }
}

/// Waits for a warn line naming `certificate` with `days_left`.
fn wait_for_warning(who: &str, log: impl Fn() -> String, certificate: &str, days_left: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = log();
        let found = text.lines().any(|l| {
            l.contains("WARN")
                && l.contains(&format!("certificate=\"{certificate}\""))
                && l.contains(&format!("days_left={days_left}"))
                && l.contains(&format!("certificate expires in {days_left} days"))
        });
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{who}: no expiry warning for {certificate} ({days_left} days):\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn service_certificates_expiring_within_30_days_are_warned_about() {
    let pki = Pki::init();
    let dir = pki.p("short");
    std::fs::create_dir_all(&dir).unwrap();
    let (scrt, skey) = write_ident(&dir, "signer", &pki.mint(&ten_days("certsign-signer")));
    let (acrt, akey) = write_ident(&dir, "approver", &pki.mint(&ten_days("certsign-approver")));
    let am = format!("127.0.0.1:{}", free_port());
    let signer = signer_spawn(&pki, "127.0.0.1:0", |t| {
        t.insert("tls_cert".into(), scrt.clone().into());
        t.insert("tls_key".into(), skey.clone().into());
    })
    .start();
    let approver = approver_spawn(&pki, &signer.addr, |t| {
        t.insert("tls_cert".into(), acrt.clone().into());
        t.insert("tls_key".into(), akey.clone().into());
        t.insert("metrics_listen".into(), am.clone().into());
        let s = t.get_mut("signer").unwrap().as_table_mut().unwrap();
        s.insert("cert".into(), acrt.clone().into());
        s.insert("key".into(), akey.clone().into());
    })
    .start();

    wait_for_warning("signer", || signer.log(), "tls", 10);
    wait_for_warning("approver", || approver.log(), "tls", 10);
    // The CA (a year) is not warned about.
    for log in [signer.log(), approver.log()] {
        assert!(!log.contains("certificate=\"ca\""), "{log}");
    }
    let a = scrape(&am);
    let left = a.value(
        "certsign_approver_certificate_expiry_seconds",
        &[("certificate", "tls")],
    );
    assert!(left > 10.0 * DAY && left <= 10.5 * DAY, "{left}");
    assert!(
        a.value(
            "certsign_approver_certificate_expiry_seconds",
            &[("certificate", "ca")]
        ) > 300.0 * DAY
    );
}

#[test]
fn signer_refuses_metrics_on_its_mtls_port() {
    let pki = Pki::init();
    let port = free_port();
    let config = pki.signer_toml();
    certsign_tests::edit_toml(&config, |t| {
        t.insert("listen".into(), format!("127.0.0.1:{port}").into());
        t.insert("metrics_listen".into(), format!("0.0.0.0:{port}").into());
    });
    let out = run(Command::new(bin("certsign-signer"))
        .args(["serve", "--config"])
        .arg(&config));
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics_listen"), "{err}");
}

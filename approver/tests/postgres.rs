//! Two approver replicas sharing one PostgreSQL store: a request created on
//! one is decided on the other, issued once, and both watches see it.
//! Needs `CERTSIGN_TEST_DATABASE_URL` (tests/run.sh sets it); FAILS without
//! it unless `CERTSIGN_SKIP_PG=1`.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

async fn fresh_schema_url() -> Option<String> {
    let Ok(base) = std::env::var("CERTSIGN_TEST_DATABASE_URL") else {
        if std::env::var("CERTSIGN_SKIP_PG").as_deref() == Ok("1") {
            eprintln!("CERTSIGN_SKIP_PG=1: skipping the PostgreSQL replica test");
            return None;
        }
        panic!(
            "CERTSIGN_TEST_DATABASE_URL is not set (tests/run.sh starts PostgreSQL); \
             set CERTSIGN_SKIP_PG=1 to skip explicitly"
        );
    };
    let schema = format!("r_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options[search_path]={schema}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_one_postgres_store() {
    let Some(url) = fresh_schema_url().await else {
        return;
    };
    let pki = Pki::init();
    pki.edit_approver(|t| {
        t.insert("database_url".into(), url.clone().into());
    });
    let signer = start_signer(&pki, "127.0.0.1:0");
    let a = start_approver(&pki, &signer.addr);
    std::fs::rename(pki.dir.join("approver.log"), pki.dir.join("approver-a.log")).unwrap();
    let b = start_approver(&pki, &signer.addr);
    let admin = pki.admin();
    let alice = pki.user("alice", &[]);
    let mut on_a = client(&pki, &a.addr, Some(&alice)).await;
    let mut adm_b = client(&pki, &b.addr, Some(&admin)).await;

    let (pem, _) = make_csr("alice", &[], &[]);
    let r = on_a
        .create_certificate_signing_request(new_csr(
            "shared",
            &pem,
            APISERVER_CLIENT,
            &["client auth"],
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    // Replica B sees it and records the decision.
    let seen = get(&mut adm_b, "shared").await.unwrap();
    assert_eq!(
        seen.metadata.as_ref().unwrap().uid,
        r.metadata.as_ref().unwrap().uid
    );
    approve(&mut adm_b, &admin, &seen).await.unwrap();
    // Replica A's watch reports the issuance.
    let done = wait_done(&mut on_a, "shared").await;
    let cert = done.status.unwrap().certificate;
    assert!(!cert.is_empty());
    openssl_verify(&pki, leaf_pem(&cert).as_bytes());
    let from_b = get(&mut adm_b, "shared").await.unwrap();
    assert_eq!(from_b.status.unwrap().certificate, cert);
}

/// Revocations and the CRL live in the shared store: a certificate issued
/// through one replica is in the other's inventory, a revocation made on
/// one shows on the other, and the CRL one publishes is served by the other
/// (gRPC and plain HTTP).
#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_the_inventory_revocations_and_the_crl() {
    use certsign_proto::v1::{
        GetCertificateRevocationListRequest, ListCertificatesRequest, RevokeCertificateRequest,
    };
    let Some(url) = fresh_schema_url().await else {
        return;
    };
    let pki = Pki::init();
    pki.edit_approver(|t| {
        t.insert("database_url".into(), url.clone().into());
    });
    let signer = start_signer(&pki, "127.0.0.1:0");
    let a = start_approver(&pki, &signer.addr);
    std::fs::rename(pki.dir.join("approver.log"), pki.dir.join("approver-a.log")).unwrap();
    let crl_addr = format!("127.0.0.1:{}", certsign_tests::process::free_port());
    let b_crl = crl_addr.clone();
    let b = certsign_tests::stack::approver_spawn(&pki, &signer.addr, move |t| {
        t.insert("crl_listen".into(), b_crl.into());
    })
    .fresh_log()
    .start();
    let admin = pki.admin();
    let alice = issued_to(&pki, &a.addr, &admin, &pki.user("alice", &[]), "alice-1").await;
    let serial = serial_of(&alice.cert_der);
    let mut on_b = client(&pki, &b.addr, Some(&admin)).await;
    let one = ListCertificatesRequest {
        serial_number: serial.clone(),
        ..Default::default()
    };
    let items = on_b
        .list_certificates(one.clone())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items[0].request_name, "alice-1");
    assert_eq!(items[0].status, "Valid");

    let mut on_a = client(&pki, &a.addr, Some(&admin)).await;
    let revoked = on_a
        .revoke_certificate(RevokeCertificateRequest {
            revocation: Some(revocation(&alice, &admin)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.status, "Revoked");
    let items = on_b
        .list_certificates(one)
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items[0].status, "Revoked");
    // B serves a CRL listing it (its own refresh or A's, from the store).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(r) = on_b
            .get_certificate_revocation_list(GetCertificateRevocationListRequest {})
            .await
            && crl_serials(&r.into_inner().crl).contains(&serial)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica B never served the CRL"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let out = pki.dir.join("b.crl");
    let status = certsign_tests::process::run_ok(
        std::process::Command::new("curl")
            .args(["-s", "-o"])
            .arg(&out)
            .args(["-w", "%{http_code}"])
            .arg(format!("http://{crl_addr}/crl")),
    );
    assert_eq!(status.trim(), "200");
    assert!(crl_serials(&std::fs::read(&out).unwrap()).contains(&serial));
}

/// The gRPC health status the approver at `addr` reports for `service`.
async fn health_status(pki: &Pki, addr: &str, service: &str) -> Option<i32> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.ca_pem()));
    let ch = Endpoint::from_shared(format!("https://{addr}"))
        .ok()?
        .tls_config(tls)
        .ok()?
        .connect()
        .await
        .ok()?;
    let r = HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .ok()?;
    Some(r.into_inner().status)
}

/// Polls until both the overall and the Approver health status are `want`
/// (generous limit: this waits for probes, it does not time them).
async fn wait_health(
    pki: &Pki,
    addr: &str,
    want: tonic_health::pb::health_check_response::ServingStatus,
) {
    let want = want as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let overall = health_status(pki, addr, "").await;
        let approver = health_status(pki, addr, "certsign.v1.Approver").await;
        if overall == Some(want) && approver == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never became {want}: overall {overall:?}, approver {approver:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_follows_the_database() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Ok(base) = std::env::var("CERTSIGN_TEST_DATABASE_URL") else {
        if std::env::var("CERTSIGN_SKIP_PG").as_deref() == Ok("1") {
            eprintln!("CERTSIGN_SKIP_PG=1: skipping the PostgreSQL health test");
            return;
        }
        panic!("CERTSIGN_TEST_DATABASE_URL is not set (tests/run.sh starts PostgreSQL)");
    };
    // A database of its own, so that refusing its connections touches
    // nothing else.
    let db = format!("h_{}", uuid::Uuid::new_v4().simple());
    let admin_pool = sqlx::PgPool::connect(&base).await.unwrap();
    let exec = |sql: String| {
        let pool = admin_pool.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    exec(format!("CREATE DATABASE {db}")).await;
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let url = format!("{prefix}/{db}");

    let pki = Pki::init();
    pki.edit_approver(|t| {
        t.insert("database_url".into(), url.clone().into());
    });
    let signer = start_signer(&pki, "127.0.0.1:0");
    let approver = start_approver(&pki, &signer.addr);
    wait_health(&pki, &approver.addr, ServingStatus::Serving).await;

    // The database goes away: no new connections, the open ones cut.
    exec(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false")).await;
    exec(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
    ))
    .await;
    wait_health(&pki, &approver.addr, ServingStatus::NotServing).await;

    // It comes back: SERVING again, and the approver works.
    exec(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true")).await;
    wait_health(&pki, &approver.addr, ServingStatus::Serving).await;
    let alice = pki.user("alice", &[]);
    let mut c = client(&pki, &approver.addr, Some(&alice)).await;
    let (pem, _) = make_csr("alice", &[], &[]);
    c.create_certificate_signing_request(new_csr(
        "after-outage",
        &pem,
        APISERVER_CLIENT,
        &["client auth"],
        None,
    ))
    .await
    .unwrap();

    drop(c);
    drop(approver);
    drop(signer);
    exec(format!("DROP DATABASE {db} WITH (FORCE)")).await;
    admin_pool.close().await;
}

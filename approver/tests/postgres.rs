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
    sqlx::any::install_default_drivers();
    let schema = format!("r_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::AnyPool::connect(&base).await.unwrap();
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

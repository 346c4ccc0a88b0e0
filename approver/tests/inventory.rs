//! The inventory's store suite, on SQLite files and the real PostgreSQL
//! alike: a certificate is recorded in the update that stores it, outlives
//! its request (the cleaner), lists by filter and page; revocations are
//! held, delivered per endpoint, refused; the published CRL only moves
//! forward; and a store from before the inventory upgrades in place.
//!
//! PostgreSQL comes from `CERTSIGN_TEST_DATABASE_URL` (tests/run.sh starts
//! one); each test works in a fresh schema. Without it these tests FAIL
//! unless `CERTSIGN_SKIP_PG=1` says to skip them.

#![allow(clippy::unwrap_used)]

mod store_kit;

use std::convert::Infallible;
use store_kit::{S1, S2, both, by, csr};

use certsign_approver::decision;
use certsign_approver::store::{CertFilter, CreateGuard, RevocationState, Store, StoredCrl};

/// A chain PEM (leaf, then a second block standing for the CA) whose leaf
/// has serial `serial`, subject CN=`cn` then O=dev, and the given notAfter.
fn chain_pem(serial: u64, cn: &str, not_after: i64) -> (String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "dev");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    let t = |s: i64| time::OffsetDateTime::from_unix_timestamp(s).unwrap();
    params.not_before = t(not_after - 86400);
    params.not_after = t(not_after);
    let leaf = params.self_signed(&key).unwrap();
    let ca = rcgen::CertificateParams::new(vec!["ca.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (
        leaf.pem(),
        format!("{}{}", leaf.pem(), ca.pem()).into_bytes(),
    )
}

async fn issue(store: &Store, name: &str, user: &str, signer: &str, chain: Vec<u8>) {
    store
        .create(
            csr(name, user, signer),
            None,
            &CreateGuard {
                max_pending_per_requestor: 100,
                token: None,
            },
        )
        .await
        .unwrap();
    store
        .update(name, |c| decision::approve(c, by("admin"), 1))
        .await
        .unwrap();
    store
        .update(name, move |c| {
            Ok::<_, Infallible>(decision::issue(c, chain))
        })
        .await
        .unwrap();
}

fn now() -> i64 {
    decision::now().seconds
}

fn serials(rows: &[certsign_approver::store::CertificateRecord]) -> Vec<String> {
    rows.iter().map(|r| r.issued.serial.clone()).collect()
}

async fn suite_issuance_is_recorded_and_outlives_the_request(store: Store) {
    let not_after = now() + 3600;
    let (leaf, chain) = chain_pem(0x0a, "alice", not_after);
    issue(&store, "alice-1", "alice", S1, chain).await;
    let row = store.certificate("0a").await.unwrap().unwrap();
    assert_eq!(row.issued.serial, "0a");
    // RFC 4514: the last RDN first (rcgen writes CN, then O).
    assert_eq!(row.issued.subject, "O=dev,CN=alice");
    assert_eq!(row.issued.signer_name, S1);
    assert_eq!(row.issued.requestor, "alice");
    assert_eq!(row.issued.request_name, "alice-1");
    assert_eq!(row.issued.request_uid, "uid-alice-1");
    assert_eq!(row.issued.not_after, not_after);
    assert_eq!(row.issued.not_before, row.issued.not_after - 86400);
    // The certificate alone, not the chain.
    assert_eq!(String::from_utf8(row.issued.certificate_pem).unwrap(), leaf);
    assert!(row.revocation.is_none());

    // Expired: the cleaner deletes the request; the inventory keeps it.
    let (_, old) = chain_pem(0x0b, "bob", now() - 10);
    issue(&store, "bob-1", "bob", S2, old).await;
    let deleted = certsign_approver::cleaner::sweep(&store, &Default::default())
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert!(store.get("bob-1").await.unwrap().is_none());
    let kept = store.certificate("0b").await.unwrap().unwrap();
    assert_eq!(kept.issued.request_name, "bob-1");
    // Recording again (a backfill) keeps the one row.
    assert!(!store.record_issued(kept.issued.clone()).await.unwrap());
}

async fn suite_list_filters_and_pages(store: Store) {
    for (i, (user, signer)) in [
        ("alice", S1),
        ("alice", S2),
        ("bob", S1),
        ("alice", S1),
        ("carol", S2),
    ]
    .into_iter()
    .enumerate()
    {
        let serial = 0x10 + i as u64;
        let (_, chain) = chain_pem(serial, user, now() + 3600);
        issue(&store, &format!("r{i}"), user, signer, chain).await;
    }
    let all = store
        .list_certificates(&CertFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(serials(&all), vec!["10", "11", "12", "13", "14"]);
    let alice = CertFilter {
        requestor: Some("alice".into()),
        ..Default::default()
    };
    let page1 = store.list_certificates(&alice, None, 2).await.unwrap();
    assert_eq!(serials(&page1), vec!["10", "11"]);
    let page2 = store
        .list_certificates(&alice, Some("11"), 2)
        .await
        .unwrap();
    assert_eq!(serials(&page2), vec!["13"]);
    let s2 = CertFilter {
        signer_name: Some(S2.into()),
        ..Default::default()
    };
    assert_eq!(
        serials(&store.list_certificates(&s2, None, 10).await.unwrap()),
        vec!["11", "14"]
    );
    let one = CertFilter {
        serial: Some("12".into()),
        request_name: Some("r2".into()),
        ..Default::default()
    };
    assert_eq!(
        serials(&store.list_certificates(&one, None, 10).await.unwrap()),
        vec!["12"]
    );
    let none = CertFilter {
        serial: Some("12".into()),
        request_name: Some("r3".into()),
        ..Default::default()
    };
    assert!(
        store
            .list_certificates(&none, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn suite_revocations_are_held_and_delivered_per_endpoint(store: Store) {
    let (_, a) = chain_pem(0x20, "a", now() + 3600);
    let (_, b) = chain_pem(0x21, "b", now() + 3600);
    let (_, old) = chain_pem(0x22, "c", now() - 10);
    issue(&store, "a", "a", S1, a).await;
    issue(&store, "b", "b", S1, b).await;
    issue(&store, "c", "c", S1, old).await;
    let (e1, e2) = ("https://127.0.0.1:1", "https://127.0.0.1:2");
    assert!(
        store
            .store_revocation("20", b"st-a".to_vec(), 1, 100)
            .await
            .unwrap()
    );
    // One held revocation per serial: a second is not stored.
    assert!(
        !store
            .store_revocation("20", b"other".to_vec(), 4, 101)
            .await
            .unwrap()
    );
    assert!(
        store
            .store_revocation("22", b"st-c".to_vec(), 4, 100)
            .await
            .unwrap()
    );
    assert!(
        !store
            .store_revocation("ff", b"x".to_vec(), 1, 100)
            .await
            .unwrap()
    );
    let held = store
        .certificate("20")
        .await
        .unwrap()
        .unwrap()
        .revocation
        .unwrap();
    assert_eq!(held.state, RevocationState::Pending);
    assert_eq!((held.statement.as_slice(), held.reason), (&b"st-a"[..], 1));
    // Unexpired held revocations: what every CRL must list.
    assert_eq!(store.held_unexpired(now()).await.unwrap(), vec!["20"]);
    let undelivered = |e: &'static str| {
        let store = store.clone();
        async move {
            let items = store.undelivered(e, 10).await.unwrap();
            items.into_iter().map(|i| i.serial).collect::<Vec<_>>()
        }
    };
    assert_eq!(undelivered(e1).await, vec!["20", "22"]);
    store.revocation_delivered("20", e1, 150).await.unwrap();
    assert_eq!(undelivered(e1).await, vec!["22"]);
    assert_eq!(undelivered(e2).await, vec!["20", "22"]);
    let journaled = store
        .certificate("20")
        .await
        .unwrap()
        .unwrap()
        .revocation
        .unwrap();
    assert_eq!(
        (journaled.state, journaled.time),
        (RevocationState::Journaled, 150)
    );
    // A second endpoint's date does not move the first one's.
    store.revocation_delivered("20", e2, 170).await.unwrap();
    assert_eq!(store.delivered_to("20").await.unwrap(), vec![e1, e2]);
    let r = store
        .certificate("20")
        .await
        .unwrap()
        .unwrap()
        .revocation
        .unwrap();
    assert_eq!(r.time, 150);
    // A journaled revocation is never marked refused.
    store.revocation_refused("20", b"st-a", "no").await.unwrap();
    let r = store
        .certificate("20")
        .await
        .unwrap()
        .unwrap()
        .revocation
        .unwrap();
    assert_eq!(r.state, RevocationState::Journaled);

    // A refused one is no longer held, and a new statement may replace it.
    assert!(
        store
            .store_revocation("21", b"st-b".to_vec(), 1, 100)
            .await
            .unwrap()
    );
    store
        .revocation_refused("21", b"st-b", "stale statement")
        .await
        .unwrap();
    let r = store
        .certificate("21")
        .await
        .unwrap()
        .unwrap()
        .revocation
        .unwrap();
    assert_eq!(
        (r.state, r.refusal.as_str()),
        (RevocationState::Refused, "stale statement")
    );
    assert!(!r.held());
    assert_eq!(store.held_unexpired(now()).await.unwrap(), vec!["20"]);
    assert!(!undelivered(e2).await.contains(&"21".to_string()));
    assert!(
        store
            .store_revocation("21", b"st-b2".to_vec(), 1, 200)
            .await
            .unwrap()
    );
    assert_eq!(store.held_unexpired(now()).await.unwrap(), vec!["20", "21"]);
    // A late refusal of the replaced statement leaves the new one held.
    store
        .revocation_refused("21", b"st-b", "stale statement")
        .await
        .unwrap();
    assert_eq!(store.held_unexpired(now()).await.unwrap(), vec!["20", "21"]);
}

fn crl(number: &str) -> StoredCrl {
    StoredCrl {
        der: format!("crl-{number}").into_bytes(),
        number: number.into(),
        this_update: 10,
        next_update: 20,
    }
}

async fn suite_published_crl_only_moves_forward(store: Store) {
    assert!(store.latest_crl().await.unwrap().is_none());
    assert!(store.publish_crl(crl("9")).await.unwrap());
    assert!(store.publish_crl(crl("10")).await.unwrap());
    // Older or equal (another replica's stale refresh): kept out.
    assert!(!store.publish_crl(crl("9")).await.unwrap());
    assert!(!store.publish_crl(crl("10")).await.unwrap());
    assert_eq!(store.latest_crl().await.unwrap().unwrap(), crl("10"));
    assert!(
        store
            .publish_crl(crl("123456789012345678901"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.latest_crl().await.unwrap().unwrap().number,
        "123456789012345678901"
    );
}

/// A store from before the inventory (schema 4) holding an issued request
/// upgrades in place: the tables appear and the certificate is recorded by
/// the backfill.
async fn upgrades_in_place(url: &str) {
    let store = Store::open(url).await.unwrap();
    let (_, chain) = chain_pem(0x30, "dave", now() + 3600);
    issue(&store, "dave-1", "dave", S1, chain).await;
    store.close().await;
    drop(store);
    raw_exec(
        url,
        &[
            "DROP TABLE certificates",
            "DROP TABLE revocation_deliveries",
            "DROP TABLE crls",
            "DELETE FROM schema_migrations WHERE version = 5",
            "DELETE FROM counters WHERE name = 'inventory_backfill'",
        ],
    )
    .await;
    let store = Store::open(url).await.unwrap();
    assert!(store.certificate("30").await.unwrap().is_none());
    assert_eq!(store.backfill_inventory().await.unwrap(), 1);
    let row = store.certificate("30").await.unwrap().unwrap();
    assert_eq!(row.issued.request_name, "dave-1");
    // Once per store: later starts do not scan again.
    assert_eq!(store.backfill_inventory().await.unwrap(), 0);
    assert!(store.get("dave-1").await.unwrap().is_some());
    store.close().await;
    let store = Store::open(url).await.unwrap();
    assert_eq!(store.backfill_inventory().await.unwrap(), 0);
    assert_eq!(
        store
            .certificate("30")
            .await
            .unwrap()
            .unwrap()
            .issued
            .serial,
        "30"
    );
}

async fn raw_exec(url: &str, sql: &[&str]) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap();
        let conn = rusqlite::Connection::open(path).unwrap();
        for s in sql {
            conn.execute_batch(s).unwrap();
        }
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        for s in sql {
            sqlx::query(sqlx::AssertSqlSafe(s.to_string()))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
}

#[tokio::test]
async fn sqlite_store_upgrades_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    upgrades_in_place(&url).await;
}

#[tokio::test]
async fn postgres_store_upgrades_in_place() {
    if let Some(url) = store_kit::postgres_url().await {
        upgrades_in_place(&url).await;
    }
}

// === backends ===

both!(
    suite_issuance_is_recorded_and_outlives_the_request,
    suite_list_filters_and_pages,
    suite_revocations_are_held_and_delivered_per_endpoint,
    suite_published_crl_only_moves_forward,
);

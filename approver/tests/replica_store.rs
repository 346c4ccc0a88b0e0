//! Several store handles on one PostgreSQL database, standing in for
//! approver replicas: forwarding claims (one holder at a time, expired
//! leases taken over, only the holder releases), racing decisions (exactly
//! one outcome), and cross-handle change notifications.
//!
//! Each test gets a database of its own (created and dropped here), since
//! PostgreSQL notification channels are per database and other tests'
//! writes would otherwise wake the listener under test.
//! Needs `CERTSIGN_TEST_DATABASE_URL` (tests/run.sh sets it); FAILS without
//! it unless `CERTSIGN_SKIP_PG=1`.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use certsign_approver::decision::{self, Actor, DecisionInput, State};
use certsign_approver::store::{CreateGuard, Store};
use certsign_proto::v1::{CertificateSigningRequest, CertificateSigningRequestSpec, ObjectMeta};

const SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// A fresh database; dropped (forcibly) when the guard goes.
struct Db {
    base: String,
    name: String,
    url: String,
}

impl Db {
    async fn new() -> Option<Self> {
        let Ok(base) = std::env::var("CERTSIGN_TEST_DATABASE_URL") else {
            if std::env::var("CERTSIGN_SKIP_PG").as_deref() == Ok("1") {
                eprintln!("CERTSIGN_SKIP_PG=1: skipping the PostgreSQL replica store tests");
                return None;
            }
            panic!(
                "CERTSIGN_TEST_DATABASE_URL is not set (tests/run.sh starts PostgreSQL); \
                 set CERTSIGN_SKIP_PG=1 to skip explicitly"
            );
        };
        let name = format!("rs_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let url = replace_db(&base, &name);
        Some(Self { base, name, url })
    }

    async fn drop_now(self) {
        let admin = sqlx::PgPool::connect(&self.base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
    }
}

/// `postgres://u:p@h:port/db?x` with the database path replaced.
fn replace_db(base: &str, db: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let scheme_end = head.find("://").unwrap() + 3;
    let host_end = head[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(head.len());
    let mut url = format!("{}/{db}", &head[..host_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

fn csr(name: &str) -> CertificateSigningRequest {
    CertificateSigningRequest {
        api_version: "certificates.k8s.io/v1".into(),
        kind: "CertificateSigningRequest".into(),
        metadata: Some(ObjectMeta {
            name: name.into(),
            uid: format!("uid-{name}-{}", uuid::Uuid::new_v4().simple()),
            creation_timestamp: Some(decision::now()),
            ..Default::default()
        }),
        spec: Some(CertificateSigningRequestSpec {
            request: b"-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"
                .to_vec(),
            signer_name: SIGNER.into(),
            usages: vec!["client auth".into()],
            username: "alice".into(),
            ..Default::default()
        }),
        status: Some(Default::default()),
    }
}

fn by(admin: &str) -> DecisionInput {
    DecisionInput {
        actor: Actor {
            username: admin.into(),
            groups: vec!["system:masters".into()],
        },
        reason: String::new(),
        message: String::new(),
        statement: None,
    }
}

fn guard() -> CreateGuard {
    CreateGuard {
        max_pending_per_requestor: 100_000,
        token: None,
    }
}

async fn create_approved(store: &Store, name: &str) {
    store.create(csr(name), None, &guard()).await.unwrap();
    store
        .update(name, |c| decision::approve(c, by("admin"), 1))
        .await
        .unwrap();
}

fn name(c: &CertificateSigningRequest) -> String {
    c.metadata.as_ref().unwrap().name.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_from_two_handles_never_overlap() {
    let Some(db) = Db::new().await else { return };
    let a = Store::open(&db.url).await.unwrap();
    let b = Store::open(&db.url).await.unwrap();
    for i in 0..60 {
        create_approved(&a, &format!("c{i:02}")).await;
    }
    // Four claimers per handle, all at the same (fake) time, until the
    // queue is empty: every request is handed out exactly once.
    let mut tasks = Vec::new();
    for (k, store) in [a.clone(), a.clone(), b.clone(), b.clone()]
        .into_iter()
        .cycle()
        .take(8)
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = store.claim_forward(1000, 2000).await.unwrap() {
                assert_eq!(item.attempts, 1, "claimer {k}");
                got.push(name(&item.object));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 60, "{all:?}");
    assert_eq!(distinct.len(), 60);
    // Leased: nothing more before the leases end.
    assert!(a.claim_forward(1999, 3000).await.unwrap().is_none());
    assert!(b.claim_forward(1999, 3000).await.unwrap().is_none());
    a.close().await;
    b.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn expired_lease_is_taken_over_and_only_the_holder_releases() {
    let Some(db) = Db::new().await else { return };
    let a = Store::open(&db.url).await.unwrap();
    let b = Store::open(&db.url).await.unwrap();
    create_approved(&a, "x").await;

    // A claims, then "dies" (never answers).
    let item = a.claim_forward(100, 160).await.unwrap().unwrap();
    assert_eq!(item.attempts, 1);
    // B cannot have it while A's lease lives, even after a "signer is
    // back, everything due now" from B and a B start-up.
    b.retry_forward_at_all(120, 0).await.unwrap();
    b.resume_forwarding(120).await.unwrap();
    assert!(b.claim_forward(159, 300).await.unwrap().is_none());
    assert_eq!(b.next_forward_time().await.unwrap(), Some(160));
    // At the lease's end, B takes over.
    let again = b.claim_forward(160, 300).await.unwrap().unwrap();
    assert_eq!(name(&again.object), "x");
    assert_eq!(again.attempts, 2);
    // A comes back late and releases "its" lease: that is B's now, so
    // nothing changes and nobody else can claim it.
    a.retry_forward_at("x", 0).await.unwrap();
    assert!(a.claim_forward(200, 400).await.unwrap().is_none());
    // B releases with a backoff: due then, for anyone.
    b.retry_forward_at("x", 250).await.unwrap();
    assert!(a.claim_forward(249, 400).await.unwrap().is_none());
    let third = a.claim_forward(250, 400).await.unwrap().unwrap();
    assert_eq!(third.attempts, 3);
    // Issued: out of the queue for good.
    a.update("x", |c| {
        Ok::<_, std::convert::Infallible>(decision::issue(c, b"PEM".to_vec()))
    })
    .await
    .unwrap();
    assert!(b.claim_forward(10_000, 20_000).await.unwrap().is_none());
    assert_eq!(b.next_forward_time().await.unwrap(), None);
    a.close().await;
    b.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn unleased_backoff_is_made_due_but_leases_stay() {
    let Some(db) = Db::new().await else { return };
    let a = Store::open(&db.url).await.unwrap();
    let b = Store::open(&db.url).await.unwrap();
    create_approved(&a, "leased").await;
    create_approved(&a, "waiting").await;
    let first = a.claim_forward(100, 1000).await.unwrap().unwrap();
    let second = a.claim_forward(100, 1000).await.unwrap().unwrap();
    let mut names = [name(&first.object), name(&second.object)];
    names.sort();
    assert_eq!(names, ["leased", "waiting"]);
    // "waiting" failed on the signer: released with a long backoff.
    a.retry_forward_at("waiting", 5000).await.unwrap();
    assert!(b.claim_forward(200, 2000).await.unwrap().is_none());
    // The signer is back: B makes the queue due; only "waiting" moves.
    b.retry_forward_at_all(200, 0).await.unwrap();
    let got = b.claim_forward(200, 2000).await.unwrap().unwrap();
    assert_eq!(name(&got.object), "waiting");
    assert!(b.claim_forward(200, 2000).await.unwrap().is_none());
    a.close().await;
    b.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_approve_and_deny_on_two_handles_end_with_one_outcome() {
    let Some(db) = Db::new().await else { return };
    let a = Store::open(&db.url).await.unwrap();
    let b = Store::open(&db.url).await.unwrap();
    let rounds = 40;
    for i in 0..rounds {
        a.create(csr(&format!("r{i:02}")), None, &guard())
            .await
            .unwrap();
    }
    let mut approved_wins = 0;
    for i in 0..rounds {
        let n = format!("r{i:02}");
        let (sa, sb, na, nb) = (a.clone(), b.clone(), n.clone(), n.clone());
        let approve = tokio::spawn(async move {
            sa.update(&na, |c| decision::approve(c, by("admin-a"), 1))
                .await
                .is_ok()
        });
        let deny = tokio::spawn(async move {
            sb.update(&nb, |c| decision::deny(c, by("admin-b")))
                .await
                .is_ok()
        });
        let (ok_a, ok_d) = (approve.await.unwrap(), deny.await.unwrap());
        assert!(
            ok_a ^ ok_d,
            "{n}: exactly one decision succeeds ({ok_a}, {ok_d})"
        );
        let end = a.get(&n).await.unwrap().unwrap();
        let conds = decision::condition_column(&end);
        if ok_a {
            approved_wins += 1;
            assert_eq!(decision::state_of(&end), State::Approved, "{n}");
            assert_eq!(conds, "Approved", "{n}");
        } else {
            assert_eq!(decision::state_of(&end), State::Denied, "{n}");
            assert_eq!(conds, "Denied", "{n}");
        }
        // The other handle reads the same outcome.
        let other = b.get(&n).await.unwrap().unwrap();
        assert_eq!(decision::condition_column(&other), conds);
    }
    eprintln!("approve won {approved_wins} of {rounds} races");
    a.close().await;
    b.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn a_write_through_one_handle_wakes_the_other_handles_listener() {
    let Some(db) = Db::new().await else { return };
    let a = Store::open(&db.url).await.unwrap();
    let b = Store::open(&db.url).await.unwrap();
    let mut listener = b.change_listener().await.unwrap().unwrap();
    let before = b.latest_resource_version().await.unwrap();
    for i in 0..3 {
        a.create(csr(&format!("n{i}")), None, &guard())
            .await
            .unwrap();
        // A generous bound only so a broken notification path fails the
        // test instead of hanging it; nothing else writes to this database.
        tokio::time::timeout(Duration::from_secs(60), listener.changed())
            .await
            .expect("no notification for a committed write")
            .unwrap();
        let events = b.events_after(before, 100).await.unwrap();
        assert_eq!(events.len(), i + 1);
        assert_eq!(events[i].event_type, "ADDED");
    }
    // Decisions notify too.
    let last = b.latest_resource_version().await.unwrap();
    a.update("n1", |c| decision::deny(c, by("admin")))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), listener.changed())
        .await
        .expect("no notification for a committed write")
        .unwrap();
    let events = b.events_after(last, 100).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "MODIFIED");
    // SQLite has no listener: one process, local wake-ups.
    let dir = tempfile::tempdir().unwrap();
    let lite = Store::open(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("l.db").display()
    ))
    .await
    .unwrap();
    assert!(lite.change_listener().await.unwrap().is_none());
    drop(listener);
    a.close().await;
    b.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn sqlite_start_up_voids_its_own_old_leases() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let first = Store::open(&url).await.unwrap();
    create_approved(&first, "s").await;
    assert!(first.claim_forward(100, 10_000).await.unwrap().is_some());
    first.close().await;
    // The same single process restarted: its old lease is void at once.
    let second = Store::open(&url).await.unwrap();
    assert!(second.claim_forward(200, 300).await.unwrap().is_none());
    second.resume_forwarding(200).await.unwrap();
    let item = second.claim_forward(200, 300).await.unwrap().unwrap();
    assert_eq!(item.attempts, 2);
}

#[tokio::test]
async fn the_listener_recovers_from_a_dropped_connection() {
    let Some(db) = Db::new().await else { return };
    let a = Store::open(&db.url).await.unwrap();
    let b = Store::open(&db.url).await.unwrap();
    let mut listener = b.change_listener().await.unwrap().unwrap();
    // The server drops the listening connection (a restart, a proxy, an
    // administrator): the listener reports it (or an error), and then
    // listens again.
    let admin = sqlx::PgPool::connect(&db.url).await.unwrap();
    let killed = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .execute(&admin)
    .await
    .unwrap();
    assert_eq!(killed.rows_affected(), 1);
    let mut errors = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(60), listener.changed())
            .await
            .expect("the lost connection was never reported")
        {
            Ok(()) => break,
            Err(e) => {
                errors += 1;
                assert!(errors < 5, "the listener does not recover: {e}");
            }
        }
    }
    eprintln!("errors before the listener was back: {errors}");
    // Listening again: a write through the other handle wakes it.
    a.create(csr("after"), None, &guard()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), listener.changed())
        .await
        .expect("no notification after the reconnection")
        .unwrap();
    admin.close().await;
    drop(listener);
    a.close().await;
    b.close().await;
    db.drop_now().await;
}

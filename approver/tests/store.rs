//! The store suite, run against SQLite and PostgreSQL alike.
//!
//! PostgreSQL comes from `CERTSIGN_TEST_DATABASE_URL` (tests/run.sh starts
//! one); each test works in a fresh schema. Without that variable the
//! PostgreSQL tests FAIL, unless `CERTSIGN_SKIP_PG=1` says to skip them.

#![allow(clippy::unwrap_used)]

mod store_kit;

use store_kit::{S1, S2, both, by, csr, guard, rv, uid_of};

use certsign_approver::decision;
use certsign_approver::store::{CreateGuard, ListFilter, PageBy, Store, StoreError, UpdateError};
use certsign_proto::v1::{CertificateSigningRequest, SignedStatement};

fn names(items: &[CertificateSigningRequest]) -> Vec<String> {
    items
        .iter()
        .map(|c| c.metadata.as_ref().unwrap().name.clone())
        .collect()
}

/// The (resource version, event type) of up to `limit` events after `after`.
async fn event_log(store: &Store, after: i64, limit: u32) -> Vec<(i64, String)> {
    store
        .events_after(after, limit)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.resource_version, e.event_type))
        .collect()
}

async fn approve(store: &Store, name: &str) -> CertificateSigningRequest {
    store
        .update(name, |c| decision::approve(c, by("admin"), 1))
        .await
        .unwrap()
}

/// The metrics' counts per (state, signer name).
async fn suite_counts_by_state(store: Store) {
    assert!(store.count_by_state().await.unwrap().is_empty());
    for (name, signer) in [("c1", S1), ("c2", S1), ("c3", S2)] {
        store
            .create(csr(name, "u", signer), None, &guard(10))
            .await
            .unwrap();
    }
    approve(&store, "c2").await;
    let mut counts = store.count_by_state().await.unwrap();
    counts.sort();
    let want = [("approved", S1, 1), ("pending", S2, 1), ("pending", S1, 1)];
    let want: Vec<(String, String, i64)> = want
        .iter()
        .map(|(a, b, n)| (a.to_string(), b.to_string(), *n))
        .collect();
    assert_eq!(counts, want);
}

async fn suite_create_get_duplicate(store: Store) {
    let a = store
        .create(csr("a", "alice", S1), None, &guard(10))
        .await
        .unwrap();
    assert!(rv(&a) > 0);
    let got = store.get("a").await.unwrap().unwrap();
    assert_eq!(got, a);
    assert!(store.get("nope").await.unwrap().is_none());
    let err = store
        .create(csr("a", "bob", S1), None, &guard(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists(ref n) if n == "a"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "certificatesigningrequests.certificates.k8s.io \"a\" already exists"
    );
    let b = store
        .create(csr("b", "alice", S1), None, &guard(10))
        .await
        .unwrap();
    assert!(rv(&b) > rv(&a), "resource versions increase");
    // A renewal statement is kept with the request.
    let st = SignedStatement {
        statement: b"s".to_vec(),
        signature: b"sig".to_vec(),
        certificate_chain: vec![b"c".to_vec()],
        batch: None,
    };
    store
        .create(csr("c", "alice", S1), Some(&st), &guard(10))
        .await
        .unwrap();
    assert_eq!(store.renewal("c").await.unwrap(), Some(st));
    assert_eq!(store.renewal("a").await.unwrap(), None);
}

async fn suite_list_filters_and_pages(store: Store) {
    for (n, u, s) in [
        ("r1", "alice", S1),
        ("r2", "bob", S1),
        ("r3", "alice", S2),
        ("r4", "carol", S1),
        ("r5", "alice", S1),
    ] {
        store.create(csr(n, u, s), None, &guard(10)).await.unwrap();
    }
    approve(&store, "r2").await;
    store
        .update("r2", |c| {
            Ok::<_, std::convert::Infallible>(decision::issue(c, b"PEM".to_vec()))
        })
        .await
        .unwrap();
    store
        .update("r4", |c| decision::deny(c, by("admin")))
        .await
        .unwrap();

    let all = ListFilter::default();
    // Keyset pages of 2 walk everything exactly once, in name order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(&all, after.as_deref(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = Some(names(&page).last().unwrap().clone());
        seen.extend(names(&page));
    }
    assert_eq!(seen, vec!["r1", "r2", "r3", "r4", "r5"]);

    let f = |s: Option<&str>, c: Option<&str>, u: Option<&str>| ListFilter {
        signer_name: s.map(String::from),
        condition: c.map(String::from),
        username: u.map(String::from),
    };
    let l = |flt: ListFilter| {
        let store = store.clone();
        async move { names(&store.list(&flt, None, 100).await.unwrap()) }
    };
    assert_eq!(l(f(Some(S2), None, None)).await, vec!["r3"]);
    assert_eq!(
        l(f(None, None, Some("alice"))).await,
        vec!["r1", "r3", "r5"]
    );
    assert_eq!(l(f(Some(S1), None, Some("alice"))).await, vec!["r1", "r5"]);
    assert_eq!(
        l(f(None, Some("Pending"), None)).await,
        vec!["r1", "r3", "r5"]
    );
    assert_eq!(l(f(None, Some("Issued"), None)).await, vec!["r2"]);
    assert_eq!(l(f(None, Some("Approved"), None)).await, vec!["r2"]);
    assert_eq!(l(f(None, Some("Approved,Issued"), None)).await, vec!["r2"]);
    assert_eq!(l(f(None, Some("Denied"), None)).await, vec!["r4"]);
    assert!(l(f(None, Some("Failed"), None)).await.is_empty());
}

async fn suite_limits(store: Store) {
    store
        .create(csr("p1", "dave", S1), None, &guard(2))
        .await
        .unwrap();
    store
        .create(csr("p2", "dave", S1), None, &guard(2))
        .await
        .unwrap();
    let err = store
        .create(csr("p3", "dave", S1), None, &guard(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::PendingLimit { max: 2, .. }),
        "{err}"
    );
    assert!(
        store.get("p3").await.unwrap().is_none(),
        "refused create left nothing"
    );
    // Another requestor is not affected; a decided request frees a slot.
    store
        .create(csr("q1", "erin", S1), None, &guard(2))
        .await
        .unwrap();
    approve(&store, "p1").await;
    store
        .create(csr("p3", "dave", S1), None, &guard(2))
        .await
        .unwrap();
    assert_eq!(store.count_pending("dave").await.unwrap(), 2);

    let tok = CreateGuard {
        max_pending_per_requestor: 100,
        token: Some(("abcdef".into(), 2)),
    };
    store
        .create(csr("t1", "system:bootstrap:abcdef", S1), None, &tok)
        .await
        .unwrap();
    store
        .create(csr("t2", "system:bootstrap:abcdef", S1), None, &tok)
        .await
        .unwrap();
    let err = store
        .create(csr("t3", "system:bootstrap:abcdef", S1), None, &tok)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TokenExhausted { max: 2, .. }),
        "{err}"
    );
    assert!(store.get("t3").await.unwrap().is_none());
}

async fn suite_update_semantics(store: Store) {
    let a = store
        .create(csr("u1", "alice", S1), None, &guard(10))
        .await
        .unwrap();
    // A refusal changes nothing (and bumps no resource version).
    let err = store
        .update("u1", |c| decision::approve(c, by("alice"), 1))
        .await
        .unwrap_err();
    assert!(matches!(err, UpdateError::Rejected(_)));
    assert_eq!(store.get("u1").await.unwrap().unwrap(), a);
    // First approval of two: stays pending, records the decision.
    let one = store
        .update("u1", |c| decision::approve(c, by("a1"), 2))
        .await
        .unwrap();
    assert!(rv(&one) > rv(&a));
    assert_eq!(decision::condition_column(&one), "Pending");
    // Same admin again: no change, same version.
    let again = store
        .update("u1", |c| decision::approve(c, by("a1"), 2))
        .await
        .unwrap();
    assert_eq!(rv(&again), rv(&one));
    assert_eq!(again.status.as_ref().unwrap().decisions.len(), 1);
    let two = store
        .update("u1", |c| decision::approve(c, by("a2"), 2))
        .await
        .unwrap();
    assert_eq!(decision::condition_column(&two), "Approved");
    let err = store
        .update("missing", |c| decision::approve(c, by("a1"), 1))
        .await
        .unwrap_err();
    assert!(matches!(err, UpdateError::Store(StoreError::NotFound(_))));
}

async fn suite_forward_queue(store: Store) {
    store
        .create(csr("f1", "alice", S1), None, &guard(10))
        .await
        .unwrap();
    assert!(
        store.claim_forward(100, 200).await.unwrap().is_none(),
        "pending is not forwarded"
    );
    approve(&store, "f1").await;
    let item = store.claim_forward(100, 200).await.unwrap().unwrap();
    assert_eq!(item.object.metadata.as_ref().unwrap().name, "f1");
    assert_eq!(item.attempts, 1);
    // Leased: nobody else gets it until the lease ends.
    assert!(store.claim_forward(150, 250).await.unwrap().is_none());
    store.retry_forward_at("f1", 160).await.unwrap();
    assert!(store.claim_forward(159, 300).await.unwrap().is_none());
    let item = store.claim_forward(160, 300).await.unwrap().unwrap();
    assert_eq!(item.attempts, 2);
    // Issued: leaves the queue for good.
    store
        .update("f1", |c| {
            Ok::<_, std::convert::Infallible>(decision::issue(c, b"PEM".to_vec()))
        })
        .await
        .unwrap();
    store.retry_forward_at_all(i64::MAX / 2, 0).await.unwrap();
    assert!(
        store
            .claim_forward(i64::MAX / 2, i64::MAX / 2)
            .await
            .unwrap()
            .is_none()
    );
}

/// A backlog drains oldest first, whatever the names: claiming by name
/// order let a late-sorting name wait while newer requests kept arriving.
async fn suite_forward_queue_oldest_first(store: Store) {
    let mut old = csr("zz-oldest", "alice", S1);
    if let Some(m) = old.metadata.as_mut() {
        m.creation_timestamp = Some(prost_types::Timestamp {
            seconds: decision::now().seconds - 60,
            nanos: 0,
        });
    }
    store.create(old, None, &guard(10)).await.unwrap();
    for n in ["aa-newer", "mm-newer"] {
        store
            .create(csr(n, "alice", S1), None, &guard(10))
            .await
            .unwrap();
    }
    for n in ["mm-newer", "aa-newer", "zz-oldest"] {
        approve(&store, n).await;
    }
    let first = store.claim_forward(100, 200).await.unwrap().unwrap();
    assert_eq!(first.object.metadata.as_ref().unwrap().name, "zz-oldest");
    let rest = store.claim_forward_batch(100, 200, 10).await.unwrap();
    assert_eq!(rest.len(), 2);
}

async fn suite_events_and_delete(store: Store) {
    let start = store.latest_resource_version().await.unwrap();
    let a = store
        .create(csr("e1", "alice", S1), None, &guard(10))
        .await
        .unwrap();
    let b = approve(&store, "e1").await;
    // A stale expected version does not delete.
    assert!(store.delete("e1", Some(rv(&a))).await.unwrap().is_none());
    let d = store.delete("e1", Some(rv(&b))).await.unwrap().unwrap();
    assert!(store.get("e1").await.unwrap().is_none());
    assert!(store.delete("e1", None).await.unwrap().is_none());
    let events = store.events_after(start, 100).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(kinds, vec!["ADDED", "MODIFIED", "DELETED"]);
    assert_eq!(events[0].resource_version, rv(&a));
    assert_eq!(events[2].resource_version, rv(&d));
    assert!(rv(&d) > rv(&b));
    assert_eq!(store.latest_resource_version().await.unwrap(), rv(&d));
    assert_eq!(store.events_after(rv(&b), 100).await.unwrap().len(), 1);
}

/// Each object is stored once, in the event of its current version:
/// pruning every old event keeps exactly those a row still reads from, and
/// reads, lists, updates and forwarding claims still see whole objects.
async fn suite_prune_keeps_current_objects(store: Store) {
    let start = store.latest_resource_version().await.unwrap();
    for n in ["k1", "k2", "k3"] {
        store
            .create(csr(n, "alice", S1), None, &guard(10))
            .await
            .unwrap();
    }
    let k1 = approve(&store, "k1").await;
    store.delete("k3", None).await.unwrap().unwrap();
    let k2 = store.get("k2").await.unwrap().unwrap();
    // Everything is older than a cutoff an hour ahead: k1's ADDED, k3's
    // ADDED and DELETED go; k1's MODIFIED and k2's ADDED stay.
    let far = decision::now().seconds + 3600;
    assert_eq!(store.prune_events(far).await.unwrap(), 3);
    let left = event_log(&store, start, 100).await;
    assert_eq!(
        left,
        vec![
            (rv(&k2), "ADDED".to_string()),
            (rv(&k1), "MODIFIED".to_string())
        ]
    );
    assert_eq!(store.get("k1").await.unwrap().unwrap(), k1);
    assert_eq!(store.get("k2").await.unwrap().unwrap(), k2);
    assert!(store.get("k3").await.unwrap().is_none());
    let listed = store.list(&ListFilter::default(), None, 10).await.unwrap();
    assert_eq!(listed, vec![k1.clone(), k2.clone()]);
    // A second prune finds nothing more to delete.
    assert_eq!(store.prune_events(far).await.unwrap(), 0);
    // The claim returns the whole approved object; an update reads it.
    let claimed = store.claim_forward_batch(0, 100, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].object, k1);
    let k2b = approve(&store, "k2").await;
    assert!(rv(&k2b) > rv(&k1));
    assert_eq!(store.get("k2").await.unwrap().unwrap(), k2b);
}

fn aged(
    name: &str,
    created_ago: i64,
    conds: &[(&str, i64)],
    cert: &[u8],
) -> CertificateSigningRequest {
    let now = decision::now().seconds;
    let ts = |ago: i64| {
        Some(prost_types::Timestamp {
            seconds: now - ago,
            nanos: 0,
        })
    };
    let mut c = csr(name, "alice", S1);
    c.metadata.as_mut().unwrap().creation_timestamp = ts(created_ago);
    let st = c.status.as_mut().unwrap();
    for (ty, ago) in conds {
        st.conditions
            .push(certsign_proto::v1::CertificateSigningRequestCondition {
                r#type: (*ty).into(),
                status: "True".into(),
                last_update_time: ts(*ago),
                last_transition_time: ts(*ago),
                ..Default::default()
            });
    }
    st.certificate = cert.to_vec();
    c
}

async fn suite_cleaner_retention(store: Store) {
    let day = 86400;
    for c in [
        aged("pending-old", day + 60, &[], b""),
        aged("pending-new", 60, &[], b""),
        aged("denied-old", 7200, &[("Denied", 3700)], b""),
        aged("denied-new", 7200, &[("Denied", 60)], b""),
        aged(
            "failed-old",
            7200,
            &[("Approved", 7200), ("Failed", 3700)],
            b"",
        ),
        aged("issued-old", 7200, &[("Approved", 3700)], b"PEM"),
        aged("issued-new", 7200, &[("Approved", 60)], b"PEM"),
        aged("approved-unissued-new", 7200, &[("Approved", 3700)], b""),
        aged(
            "approved-unissued-old",
            2 * day,
            &[("Approved", day + 60)],
            b"",
        ),
    ] {
        store.create(c, None, &guard(100)).await.unwrap();
    }
    let deleted = certsign_approver::cleaner::sweep(&store, &Default::default())
        .await
        .unwrap();
    assert_eq!(deleted, 5);
    let left = names(&store.list(&ListFilter::default(), None, 100).await.unwrap());
    assert_eq!(
        left,
        vec![
            "approved-unissued-new",
            "denied-new",
            "issued-new",
            "pending-new"
        ]
    );
}

/// A self-signed certificate PEM valid from a day before `not_after`.
fn cert_pem(not_after_secs: i64) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["x.example".to_string()]).unwrap();
    let t = |s: i64| time::OffsetDateTime::from_unix_timestamp(s).unwrap();
    params.not_before = t(not_after_secs - 86400);
    params.not_after = t(not_after_secs);
    params.self_signed(&key).unwrap().pem().into_bytes()
}

async fn suite_cleaner_certificate_expiry(store: Store) {
    let now = decision::now().seconds;
    // Issued a minute ago (far inside the issued retention): only the
    // certificate's expiry can make them due.
    for (name, not_after) in [("cert-expired", now - 10), ("cert-valid", now + 3600)] {
        store
            .create(
                aged(name, 120, &[("Approved", 60)], &cert_pem(not_after)),
                None,
                &guard(100),
            )
            .await
            .unwrap();
    }
    let deleted = certsign_approver::cleaner::sweep(&store, &Default::default())
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert!(store.get("cert-expired").await.unwrap().is_none());
    assert!(store.get("cert-valid").await.unwrap().is_some());
    // The column the cleaner ranges over is the certificate's notAfter.
    let by_expiry = store
        .page_by_state(
            decision::State::Issued,
            PageBy::Expires,
            now..now + 7200,
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(by_expiry.len(), 1);
    assert_eq!(by_expiry[0].0, now + 3600);
}

async fn suite_concurrent_writers(store: Store) {
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("c{i:02}");
            let a = store
                .create(csr(&name, "alice", S1), None, &guard(1000))
                .await
                .unwrap();
            let b = store
                .update(&name, |c| decision::approve(c, by("admin"), 1))
                .await
                .unwrap();
            (rv(&a), rv(&b))
        }));
    }
    let mut rvs = Vec::new();
    for t in tasks {
        let (a, b) = t.await.unwrap();
        assert!(b > a);
        rvs.push(a);
        rvs.push(b);
    }
    let n = rvs.len();
    rvs.sort_unstable();
    rvs.dedup();
    assert_eq!(rvs.len(), n, "every write got its own resource version");
    let events = store.events_after(0, 1000).await.unwrap();
    let ev_rvs: Vec<i64> = events.iter().map(|e| e.resource_version).collect();
    assert_eq!(
        ev_rvs, rvs,
        "one event per write, in resource-version order"
    );
}

/// Waits until `n` writes are queued (behind a [`Store::pause_writes`]).
async fn queued(store: &Store, n: usize) {
    for _ in 0..30_000 {
        if store.queued_writes() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("{n} writes were never queued");
}

type Pending<T> = tokio::task::JoinHandle<T>;

/// Queues one create per `(name, user)` in this order, each after the
/// previous one is queued, so the queue order (and so the batch order) is
/// known.
async fn queue_creates(
    store: &Store,
    items: &[(&str, &str)],
    max_pending: u32,
) -> Vec<Pending<Result<CertificateSigningRequest, StoreError>>> {
    let mut tasks = Vec::new();
    for (name, user) in items {
        let (s, n, u) = (store.clone(), name.to_string(), user.to_string());
        let already = store.queued_writes();
        tasks.push(tokio::spawn(async move {
            s.create(csr(&n, &u, S1), None, &guard(max_pending)).await
        }));
        queued(store, already + 1).await;
    }
    tasks
}

async fn suite_batch_refusals_roll_back_alone(store: Store) {
    let base = store.latest_resource_version().await.unwrap();
    let before = store.writer_stats();
    let pause = store.pause_writes().await.unwrap();
    let tasks = queue_creates(
        &store,
        &[
            ("b1", "dave"),
            ("b1", "erin"), // same name: AlreadyExists, inside the batch
            ("b2", "dave"),
            ("b3", "dave"), // dave's third pending request: over the limit of 2
            ("b4", "erin"),
        ],
        2,
    )
    .await;
    // A database error inside one write (the uid column is unique) fails
    // that write alone.
    let mut same_uid = csr("b5", "erin", S1);
    same_uid.metadata.as_mut().unwrap().uid = uid_of("b1");
    let s = store.clone();
    let q = store.queued_writes();
    let uid_clash = tokio::spawn(async move { s.create(same_uid, None, &guard(2)).await });
    queued(&store, q + 1).await;
    drop(pause);
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let clash = uid_clash.await.unwrap();
    assert!(
        matches!(clash, Err(StoreError::Database(_) | StoreError::Sqlite(_))),
        "{clash:?}"
    );
    assert!(store.get("b5").await.unwrap().is_none());
    let after = store.writer_stats();
    assert_eq!(after.commits - before.commits, 1, "one transaction");
    assert_eq!(after.ops - before.ops, 6);
    assert!(
        matches!(results[1], Err(StoreError::AlreadyExists(ref n)) if n == "b1"),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[3], Err(StoreError::PendingLimit { max: 2, .. })),
        "{:?}",
        results[3]
    );
    // The others stand, with consecutive resource versions in queue order:
    // the refused ones took none.
    let ok: Vec<i64> = [0, 2, 4]
        .iter()
        .map(|&i| rv(results[i].as_ref().unwrap()))
        .collect();
    assert_eq!(ok, vec![base + 1, base + 2, base + 3]);
    assert_eq!(store.latest_resource_version().await.unwrap(), base + 3);
    let got = store.get("b1").await.unwrap().unwrap();
    assert_eq!(got.spec.as_ref().unwrap().username, "dave");
    assert!(store.get("b3").await.unwrap().is_none());
    let events = store.events_after(base, 100).await.unwrap();
    let seen: Vec<(i64, String)> = events
        .iter()
        .map(|e| {
            (
                e.resource_version,
                e.object.metadata.as_ref().unwrap().name.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (base + 1, "b1".to_string()),
            (base + 2, "b2".to_string()),
            (base + 3, "b4".to_string())
        ]
    );
}

async fn suite_batch_resource_version_order(store: Store) {
    store
        .create(csr("o0", "alice", S1), None, &guard(100))
        .await
        .unwrap();
    let base = store.latest_resource_version().await.unwrap();
    let pause = store.pause_writes().await.unwrap();
    // create, approve it, create, delete the first, all in one batch: each
    // sees the ones before it, versions follow the queue.
    let mut tasks = queue_creates(&store, &[("o1", "alice")], 100).await;
    let s = store.clone();
    let q = store.queued_writes();
    let approve_o1 = tokio::spawn(async move { approve(&s, "o1").await });
    queued(&store, q + 1).await;
    tasks.extend(queue_creates(&store, &[("o2", "bob")], 100).await);
    let s = store.clone();
    let q = store.queued_writes();
    let delete_o0 = tokio::spawn(async move { s.delete("o0", None).await });
    queued(&store, q + 1).await;
    drop(pause);
    let o1 = tasks.remove(0).await.unwrap().unwrap();
    let approved = approve_o1.await.unwrap();
    let o2 = tasks.remove(0).await.unwrap().unwrap();
    let deleted = delete_o0.await.unwrap().unwrap().unwrap();
    assert_eq!(
        vec![rv(&o1), rv(&approved), rv(&o2), rv(&deleted)],
        vec![base + 1, base + 2, base + 3, base + 4]
    );
    assert_eq!(decision::condition_column(&approved), "Approved");
    let kinds = event_log(&store, base, 100).await;
    assert_eq!(
        kinds,
        vec![
            (base + 1, "ADDED".to_string()),
            (base + 2, "MODIFIED".to_string()),
            (base + 3, "ADDED".to_string()),
            (base + 4, "DELETED".to_string()),
        ]
    );
}

async fn suite_batch_panicking_update_fails_alone(store: Store) {
    store
        .create(csr("z0", "alice", S1), None, &guard(100))
        .await
        .unwrap();
    let pause = store.pause_writes().await.unwrap();
    let mut tasks = queue_creates(&store, &[("z1", "alice")], 100).await;
    let s = store.clone();
    let q = store.queued_writes();
    let panicking = tokio::spawn(async move {
        s.update("z0", |_c| -> Result<bool, std::convert::Infallible> {
            panic!("an update function that panics")
        })
        .await
    });
    queued(&store, q + 1).await;
    tasks.extend(queue_creates(&store, &[("z2", "alice")], 100).await);
    drop(pause);
    let r = panicking.await.unwrap();
    assert!(
        matches!(r, Err(UpdateError::Store(StoreError::NotStored(_)))),
        "{r:?}"
    );
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // The writer goes on.
    store
        .create(csr("z3", "alice", S1), None, &guard(100))
        .await
        .unwrap();
    let z0 = store.get("z0").await.unwrap().unwrap();
    assert_eq!(decision::condition_column(&z0), "Pending");
}

/// A batch whose transaction fails at its end (`fail_sql` installs a
/// trigger that refuses a counter jump of more than 2, at commit on
/// PostgreSQL) answers every operation with an error and stores none.
async fn batch_failure_stores_nothing(store: Store, url: &str, fail_sql: &[&str], undo: &str) {
    store
        .create(csr("k0", "alice", S1), None, &guard(100))
        .await
        .unwrap();
    let raw = Raw::connect(url).await;
    for s in fail_sql {
        raw.exec(s, &[]).await;
    }
    let base = store.latest_resource_version().await.unwrap();
    let before = store.writer_stats();
    let pause = store.pause_writes().await.unwrap();
    let creates = queue_creates(&store, &[("k1", "alice"), ("k2", "bob")], 100).await;
    let s = store.clone();
    let q = store.queued_writes();
    let approve_k0 = tokio::spawn(async move {
        s.update("k0", |c| decision::approve(c, by("admin"), 1))
            .await
    });
    queued(&store, q + 1).await;
    let more = queue_creates(&store, &[("k3", "carol")], 100).await;
    drop(pause);
    for t in creates.into_iter().chain(more) {
        let r = t.await.unwrap();
        assert!(matches!(r, Err(StoreError::NotStored(_))), "{r:?}");
    }
    let r = approve_k0.await.unwrap();
    assert!(
        matches!(r, Err(UpdateError::Store(StoreError::NotStored(_)))),
        "{r:?}"
    );
    assert_eq!(store.writer_stats().commits, before.commits);
    for n in ["k1", "k2", "k3"] {
        assert!(store.get(n).await.unwrap().is_none(), "{n} was stored");
    }
    let k0 = store.get("k0").await.unwrap().unwrap();
    assert_eq!(decision::condition_column(&k0), "Pending");
    assert_eq!(store.latest_resource_version().await.unwrap(), base);
    assert!(store.events_after(base, 100).await.unwrap().is_empty());
    // The writer goes on once the cause is gone.
    raw.exec(undo, &[]).await;
    let k1 = store
        .create(csr("k1", "alice", S1), None, &guard(100))
        .await
        .unwrap();
    assert_eq!(rv(&k1), base + 1);
    raw.close().await;
}

/// A value bound to raw SQL.
enum Val {
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Val::Int(v) => v.to_sql(),
            Val::Text(v) => v.to_sql(),
            Val::Blob(v) => v.to_sql(),
        }
    }
}

/// Raw SQL beside the store, through each backend's own driver
/// (placeholders `$1`, `$2`, ... on both).
enum Raw {
    Sqlite(rusqlite::Connection),
    Postgres(sqlx::PgPool),
}

impl Raw {
    async fn connect(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Raw::Sqlite(sqlite_raw(url))
        } else {
            Raw::Postgres(sqlx::PgPool::connect(url).await.unwrap())
        }
    }

    async fn exec(&self, sql: &str, binds: &[Val]) {
        match self {
            Raw::Sqlite(c) => {
                c.execute(sql, rusqlite::params_from_iter(binds)).unwrap();
            }
            Raw::Postgres(pool) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
                for b in binds {
                    q = match b {
                        Val::Int(v) => q.bind(*v),
                        Val::Text(v) => q.bind(v.clone()),
                        Val::Blob(v) => q.bind(v.clone()),
                    };
                }
                q.execute(pool).await.unwrap();
            }
        }
    }

    async fn close(self) {
        if let Raw::Postgres(pool) = self {
            pool.close().await;
        }
    }
}

/// A connection of its own to the SQLite file a store URL names.
fn sqlite_raw(url: &str) -> rusqlite::Connection {
    let rest = url.strip_prefix("sqlite://").unwrap();
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    conn
}

/// Rows stored before the `expires` column existed (-1) are looked at by
/// the cleaner, filled in, and deleted when their certificate has expired.
#[tokio::test]
async fn sqlite_cleaner_fills_in_expiry_of_older_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let store = Store::open(&url).await.unwrap();
    let now = decision::now().seconds;
    for (name, not_after) in [("old-expired", now - 10), ("old-valid", now + 3600)] {
        store
            .create(
                aged(name, 120, &[("Approved", 60)], &cert_pem(not_after)),
                None,
                &guard(100),
            )
            .await
            .unwrap();
    }
    let raw = sqlite_raw(&url);
    raw.execute("UPDATE csrs SET expires = -1", []).unwrap();
    let deleted = certsign_approver::cleaner::sweep(&store, &Default::default())
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert!(store.get("old-expired").await.unwrap().is_none());
    let expires: i64 = raw
        .query_row(
            "SELECT expires FROM csrs WHERE name = 'old-valid'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(expires, now + 3600);
}

/// Commits are copied from the WAL into the database file while the store
/// is open, by the checkpointer beside the writer (the writer's own
/// connection never checkpoints), and well below the 1,000 WAL pages at
/// which SQLite's automatic checkpoint would have.
#[tokio::test]
async fn sqlite_commits_are_checkpointed_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let store = Store::open(&url).await.unwrap();
    // Compared by content: the pages may fit in the file as it is (the
    // migrations leave free pages behind).
    let before = std::fs::read(&db).unwrap();
    for i in 0..20 {
        store
            .create(
                csr(&format!("ckpt-{i}"), "jane", "example.com/s"),
                None,
                &guard(100),
            )
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read(&db).unwrap() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing checkpointed: the database file is as it was before the writes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(store.get("ckpt-19").await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_batch_failure_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let store = Store::open(&url).await.unwrap();
    batch_failure_stores_nothing(
        store,
        &url,
        &[
            "CREATE TRIGGER boom BEFORE UPDATE ON counters WHEN NEW.value > OLD.value + 2 \
           BEGIN SELECT RAISE(ABORT, 'boom: more than two writes in one transaction'); END",
        ],
        "DROP TRIGGER boom",
    )
    .await;
}

/// On SQLite an update runs without a savepoint: when one of its writes
/// fails after another one succeeded, the whole batch fails, none of it
/// stays (not even the update's first write), and the writer goes on.
#[tokio::test]
async fn sqlite_failed_update_write_fails_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let store = Store::open(&url).await.unwrap();
    store
        .create(csr("u0", "alice", S1), None, &guard(100))
        .await
        .unwrap();
    let raw = sqlite_raw(&url);
    // The row update succeeds, then its change event is refused.
    raw.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON csr_events \
         WHEN NEW.event_type = 'MODIFIED' AND NEW.name = 'u0' \
         BEGIN SELECT RAISE(ABORT, 'boom: no event for u0'); END",
        [],
    )
    .unwrap();
    let base = store.latest_resource_version().await.unwrap();
    let pause = store.pause_writes().await.unwrap();
    let mut tasks = queue_creates(&store, &[("u1", "alice")], 100).await;
    let s = store.clone();
    let q = store.queued_writes();
    let approving = tokio::spawn(async move {
        s.update("u0", |c| decision::approve(c, by("admin"), 1))
            .await
    });
    queued(&store, q + 1).await;
    drop(pause);
    let created = tasks.remove(0).await.unwrap();
    assert!(
        matches!(created, Err(StoreError::NotStored(_))),
        "{created:?}"
    );
    let approved = approving.await.unwrap();
    assert!(
        matches!(approved, Err(UpdateError::Store(StoreError::NotStored(ref m))) if m.contains("boom")),
        "{approved:?}"
    );
    let u0 = store.get("u0").await.unwrap().unwrap();
    assert_eq!(decision::condition_column(&u0), "Pending");
    assert!(store.get("u1").await.unwrap().is_none());
    assert_eq!(store.latest_resource_version().await.unwrap(), base);
    assert!(store.events_after(base, 10).await.unwrap().is_empty());
    // Once the cause is gone the same writes go through.
    raw.execute("DROP TRIGGER boom", []).unwrap();
    let u0 = approve(&store, "u0").await;
    assert_eq!(decision::condition_column(&u0), "Approved");
    store
        .create(csr("u1", "alice", S1), None, &guard(100))
        .await
        .unwrap();
    raw.close().unwrap();
}

#[tokio::test]
async fn postgres_batch_failure_stores_nothing() {
    let Some((store, url)) = store_kit::postgres().await else {
        return;
    };
    batch_failure_stores_nothing(
        store,
        &url,
        &[
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.value > OLD.value + 2 THEN RAISE EXCEPTION 'boom: more than two writes in one transaction'; END IF; \
             RETURN NEW; END $$",
            // Deferred: it fires at COMMIT, so the commit itself fails.
            "CREATE CONSTRAINT TRIGGER boom AFTER UPDATE ON counters DEFERRABLE INITIALLY DEFERRED \
             FOR EACH ROW EXECUTE FUNCTION boom()",
        ],
        "DROP TRIGGER boom ON counters",
    )
    .await;
}

// === backends ===

both!(
    suite_counts_by_state,
    suite_create_get_duplicate,
    suite_list_filters_and_pages,
    suite_limits,
    suite_update_semantics,
    suite_forward_queue,
    suite_forward_queue_oldest_first,
    suite_events_and_delete,
    suite_prune_keeps_current_objects,
    suite_cleaner_retention,
    suite_cleaner_certificate_expiry,
    suite_concurrent_writers,
    suite_batch_refusals_roll_back_alone,
    suite_batch_resource_version_order,
    suite_batch_panicking_update_fails_alone,
);

#[tokio::test]
async fn sqlite_survives_reopen_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let store = Store::open(&url).await.unwrap();
    store
        .create(csr("k1", "alice", S1), None, &guard(10))
        .await
        .unwrap();
    approve(&store, "k1").await;
    store.close().await;
    let store = Store::open(&url).await.unwrap();
    let got = store.get("k1").await.unwrap().unwrap();
    assert_eq!(decision::condition_column(&got), "Approved");
    let mode: String = sqlite_raw(&url)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
}

/// A store written by a version that kept each object in its row (schema
/// version 3) opens with every object readable: the current object of a
/// row whose event was pruned becomes that version's event.
#[tokio::test]
async fn sqlite_migrates_objects_out_of_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    migrates_objects_out_of_rows(&url, "BLOB").await;
}

#[tokio::test]
async fn postgres_migrates_objects_out_of_rows() {
    if let Some(url) = store_kit::postgres_url().await {
        migrates_objects_out_of_rows(&url, "BYTEA").await;
    }
}

async fn migrates_objects_out_of_rows(url: &str, blob: &str) {
    use prost::Message as _;
    let pool = Raw::connect(url).await;
    // Schema version 3, as released.
    for sql in [
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY)",
        "INSERT INTO schema_migrations (version) VALUES (1), (2), (3)",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "INSERT INTO counters (name, value) VALUES ('resource_version', 3)",
        "CREATE TABLE csrs (name TEXT PRIMARY KEY, uid TEXT NOT NULL UNIQUE, signer_name TEXT NOT NULL, username TEXT NOT NULL, state TEXT NOT NULL, cond TEXT NOT NULL, created BIGINT NOT NULL, resource_version BIGINT NOT NULL, next_attempt BIGINT NOT NULL DEFAULT 0, attempts BIGINT NOT NULL DEFAULT 0, object BLOB NOT NULL, renewal BLOB NOT NULL, lease_owner TEXT NOT NULL DEFAULT '', lease_until BIGINT NOT NULL DEFAULT 0, expires BIGINT NOT NULL DEFAULT -1)",
        "CREATE INDEX csrs_state ON csrs (state, next_attempt)",
        "CREATE INDEX csrs_username ON csrs (username, state)",
        "CREATE INDEX csrs_state_created ON csrs (state, created, name)",
        "CREATE INDEX csrs_state_expires ON csrs (state, expires, name)",
        "CREATE INDEX csrs_signer_name ON csrs (signer_name, name)",
        "CREATE TABLE csr_events (resource_version BIGINT PRIMARY KEY, event_type TEXT NOT NULL, name TEXT NOT NULL, created BIGINT NOT NULL, object BLOB NOT NULL)",
        "CREATE TABLE bootstrap_token_uses (id TEXT PRIMARY KEY, uses BIGINT NOT NULL)",
    ] {
        // Only the fixed type name of binary columns is formatted in.
        pool.exec(&sql.replace("BLOB", blob), &[]).await;
    }
    let with_rv = |name: &str, rv: i64| {
        let mut c = csr(name, "alice", S1);
        c.metadata.as_mut().unwrap().resource_version = rv.to_string();
        c
    };
    let (kept, pruned) = (with_rv("kept", 1), with_rv("pruned", 3));
    for (c, rv, event) in [(&kept, 1, true), (&pruned, 3, false)] {
        let name = c.metadata.as_ref().unwrap().name.clone();
        pool.exec(
            "INSERT INTO csrs (name, uid, signer_name, username, state, cond, created, resource_version, object, renewal) \
             VALUES ($1, $2, $3, 'alice', 'pending', '', 0, $4, $5, $6)",
            &[
                Val::Text(name.clone()),
                Val::Text(uid_of(&name)),
                Val::Text(S1.to_string()),
                Val::Int(rv),
                Val::Blob(c.encode_to_vec()),
                Val::Blob(Vec::new()),
            ],
        )
        .await;
        if event {
            pool.exec(
                "INSERT INTO csr_events (resource_version, event_type, name, created, object) \
                 VALUES ($1, 'ADDED', $2, 0, $3)",
                &[
                    Val::Int(rv),
                    Val::Text(name.clone()),
                    Val::Blob(c.encode_to_vec()),
                ],
            )
            .await;
        }
    }
    pool.close().await;

    let store = Store::open(url).await.unwrap();
    assert_eq!(store.get("kept").await.unwrap().unwrap(), kept);
    assert_eq!(store.get("pruned").await.unwrap().unwrap(), pruned);
    let events = event_log(&store, 0, 10).await;
    assert_eq!(
        events,
        vec![(1, "ADDED".to_string()), (3, "MODIFIED".to_string())]
    );
    // Writes go on from the stored counter.
    let approved = approve(&store, "pruned").await;
    assert_eq!(rv(&approved), 4);
    assert_eq!(store.get("pruned").await.unwrap().unwrap(), approved);
    store.close().await;
    // And the migrated store reopens (no migration runs twice).
    let store = Store::open(url).await.unwrap();
    assert_eq!(store.get("pruned").await.unwrap().unwrap(), approved);
}

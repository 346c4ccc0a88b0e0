//! List resource versions, watch resume and label selectors, on SQLite and
//! PostgreSQL: through the real approver over mTLS (List and Watch with
//! `label_selector` and `resource_version`), and on the store with its
//! watch hub where pruning must be driven (a resume from a pruned version
//! ends with OUT_OF_RANGE "too old resource version").
//!
//! PostgreSQL comes from `CERTSIGN_TEST_DATABASE_URL`; without it these
//! tests FAIL unless `CERTSIGN_SKIP_PG=1`.

#![allow(clippy::unwrap_used)]

mod common;
mod store_kit;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use certsign_approver::decision;
use certsign_approver::service::to_status;
use certsign_approver::store::{CreateGuard, ListFilter, Store};
use certsign_approver::watch::{self, Hub, Start};
use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
    DeleteCertificateSigningRequestRequest, ListCertificateSigningRequestsRequest, ObjectMeta,
    WatchCertificateSigningRequestsRequest,
};
use common::*;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::transport::Channel;

fn name_of(c: &CertificateSigningRequest) -> String {
    c.metadata.as_ref().unwrap().name.clone()
}

/// A watch slot from a limiter of the default limits (the store-level
/// tests drive `watch::stream` directly, as the service does).
fn slot() -> certsign_approver::limits::WatchSlot {
    certsign_approver::limits::Limiter::new(&Default::default())
        .open_watch("test")
        .unwrap()
}

/// A request named `name` by `user` with `labels`, made with a real CSR.
fn labelled(
    name: &str,
    user: &str,
    labels: &[(&str, &str)],
) -> certsign_proto::v1::CreateCertificateSigningRequestRequest {
    let (pem, _) = make_csr(user, &[], &[]);
    let mut req = new_csr(name, &pem, APISERVER_CLIENT, &["client auth"], None);
    let meta = req
        .certificate_signing_request
        .as_mut()
        .unwrap()
        .metadata
        .as_mut()
        .unwrap();
    meta.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    req
}

async fn list_names(
    c: &mut ApproverClient<Channel>,
    selector: &str,
) -> Result<(Vec<String>, String), tonic::Status> {
    let resp = c
        .list_certificate_signing_requests(ListCertificateSigningRequestsRequest {
            label_selector: selector.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok((
        resp.items.iter().map(name_of).collect(),
        resp.resource_version,
    ))
}

/// The next `n` events of a watch as "TYPE name".
async fn next_events(
    w: &mut tonic::Streaming<certsign_proto::v1::WatchEvent>,
    n: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(20), w.message())
            .await
            .expect("a watch event within 20 s")
            .unwrap()
            .unwrap();
        out.push(format!(
            "{} {}",
            ev.r#type,
            name_of(ev.object.as_ref().unwrap())
        ));
    }
    out
}

/// Nothing more arrives on the watch for a while.
async fn quiet(w: &mut tonic::Streaming<certsign_proto::v1::WatchEvent>) {
    if let Ok(ev) = tokio::time::timeout(Duration::from_millis(1500), w.message()).await {
        panic!("unexpected watch event: {ev:?}");
    }
}

async fn through_the_service(edit: impl FnOnce(&mut toml::Table)) {
    let stack = Stack::start_with(edit);
    let (_admin, mut adm, _alice, mut a) = stack.admin_and_user("alice").await;
    for (n, labels) in [
        ("web-1", vec![("app", "web"), ("env", "a")]),
        ("web-2", vec![("app", "web"), ("env", "c")]),
        ("db-1", vec![("app", "db"), ("env", "b")]),
        ("plain", vec![]),
    ] {
        a.create_certificate_signing_request(labelled(n, "alice", &labels))
            .await
            .unwrap();
    }

    // Label selectors on List.
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        list_names(&mut adm, "app=web").await.unwrap().0,
        names(&["web-1", "web-2"])
    );
    assert_eq!(
        list_names(&mut adm, "app==db").await.unwrap().0,
        names(&["db-1"])
    );
    assert_eq!(
        list_names(&mut adm, "app!=web").await.unwrap().0,
        names(&["db-1", "plain"])
    );
    assert_eq!(
        list_names(&mut adm, "env in (a,b)").await.unwrap().0,
        names(&["db-1", "web-1"])
    );
    assert_eq!(
        list_names(&mut adm, "env notin (a,b)").await.unwrap().0,
        names(&["plain", "web-2"])
    );
    assert_eq!(
        list_names(&mut adm, "!app").await.unwrap().0,
        names(&["plain"])
    );
    assert_eq!(
        list_names(&mut a, "app,env=c").await.unwrap().0,
        names(&["web-2"])
    );
    // Paging with a selector: the pages hold only selected objects.
    let page = adm
        .list_certificate_signing_requests(ListCertificateSigningRequestsRequest {
            label_selector: "app".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.items.iter().map(name_of).collect::<Vec<_>>(),
        names(&["db-1", "web-1"])
    );
    let rest = adm
        .list_certificate_signing_requests(ListCertificateSigningRequestsRequest {
            label_selector: "app".into(),
            limit: 2,
            continue_token: page.continue_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.items.iter().map(name_of).collect::<Vec<_>>(),
        names(&["web-2"])
    );
    assert!(rest.continue_token.is_empty());
    // A bad selector: INVALID_ARGUMENT with apimachinery's text.
    let e = list_names(&mut adm, "env in a").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "unable to parse requirement: found 'a' expected: '('"
    );
    let e = adm
        .watch_certificate_signing_requests(WatchCertificateSigningRequestsRequest {
            label_selector: "app=web,".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "found '', expected: identifier after ','");

    // The list's resource version: a watch from it sends exactly what
    // changed after the list, in order, then live events.
    let (listed, rv) = list_names(&mut adm, "").await.unwrap();
    assert_eq!(listed.len(), 4);
    let rv_n: i64 = rv.parse().unwrap();
    assert!(rv_n >= 4, "{rv}");
    a.create_certificate_signing_request(labelled("web-3", "alice", &[("app", "web")]))
        .await
        .unwrap();
    adm.delete_certificate_signing_request(DeleteCertificateSigningRequestRequest {
        name: "db-1".into(),
    })
    .await
    .unwrap();
    let mut w = adm
        .watch_certificate_signing_requests(WatchCertificateSigningRequestsRequest {
            resource_version: rv.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_events(&mut w, 2).await,
        vec!["ADDED web-3", "DELETED db-1"]
    );
    // A selected resume: only web objects, stored then live.
    let mut ws = a
        .watch_certificate_signing_requests(WatchCertificateSigningRequestsRequest {
            resource_version: rv.clone(),
            label_selector: "app=web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_events(&mut ws, 1).await, vec!["ADDED web-3"]);
    a.create_certificate_signing_request(labelled("db-2", "alice", &[("app", "db")]))
        .await
        .unwrap();
    a.create_certificate_signing_request(labelled("web-4", "alice", &[("app", "web")]))
        .await
        .unwrap();
    assert_eq!(
        next_events(&mut w, 2).await,
        vec!["ADDED db-2", "ADDED web-4"]
    );
    assert_eq!(next_events(&mut ws, 1).await, vec!["ADDED web-4"]);
    quiet(&mut w).await;
    quiet(&mut ws).await;

    // Resume from the version of the last event seen: nothing repeated.
    let (_, now_rv) = list_names(&mut adm, "").await.unwrap();
    let mut w2 = adm
        .watch_certificate_signing_requests(WatchCertificateSigningRequestsRequest {
            resource_version: now_rv,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    quiet(&mut w2).await;
    adm.delete_certificate_signing_request(DeleteCertificateSigningRequestRequest {
        name: "plain".into(),
    })
    .await
    .unwrap();
    assert_eq!(next_events(&mut w2, 1).await, vec!["DELETED plain"]);

    // Not a version this server issues.
    let e = adm
        .watch_certificate_signing_requests(WatchCertificateSigningRequestsRequest {
            resource_version: "abc".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("resource_version:"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn selectors_and_resume_through_the_service_on_sqlite() {
    through_the_service(|_| {}).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn selectors_and_resume_through_the_service_on_postgres() {
    let Some(url) = store_kit::postgres_url().await else {
        return;
    };
    through_the_service(|t| {
        t.insert("database_url".into(), url.into());
    })
    .await;
}

// === the store and its hub ===

fn stored(name: &str) -> CertificateSigningRequest {
    let (pem, _) = make_csr(name, &[], &[]);
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
            request: pem.into_bytes(),
            signer_name: APISERVER_CLIENT.into(),
            usages: vec!["client auth".into()],
            username: "alice".into(),
            ..Default::default()
        }),
        status: Some(Default::default()),
    }
}

fn guard() -> CreateGuard {
    CreateGuard {
        max_pending_per_requestor: 100_000,
        token: None,
    }
}

/// A list taken while writers run, then a watch from its version: every
/// object is in exactly one of the two, none twice.
async fn list_then_resume_misses_nothing(store: Store) {
    let hub = Hub::start(store.clone()).await.unwrap();
    for i in 0..20 {
        store
            .create(stored(&format!("a{i:03}")), None, &guard())
            .await
            .unwrap();
    }
    let writer = {
        let (store, hub) = (store.clone(), hub.clone());
        tokio::spawn(async move {
            for i in 0..60 {
                store
                    .create(stored(&format!("b{i:03}")), None, &guard())
                    .await
                    .unwrap();
                hub.notify();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let page = store
        .list_snapshot(&ListFilter::default(), None, 1000, Arc::new(|_| true))
        .await
        .unwrap();
    writer.await.unwrap();
    let mut seen: HashSet<String> = page.items.iter().map(name_of).collect();
    assert_eq!(seen.len(), page.items.len());
    // Every listed object is no newer than the list's version.
    for c in &page.items {
        let rv: i64 = c
            .metadata
            .as_ref()
            .unwrap()
            .resource_version
            .parse()
            .unwrap();
        assert!(rv <= page.resource_version);
    }
    let mut events = watch::stream(
        &hub,
        store.clone(),
        Start::After(page.resource_version),
        |_| true,
        slot(),
    );
    while seen.len() < 80 {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .unwrap();
        assert_eq!(ev.r#type, "ADDED");
        let name = name_of(ev.object.as_ref().unwrap());
        assert!(
            seen.insert(name.clone()),
            "{name} listed and watched, or watched twice"
        );
    }
}

/// Pruning moves the watermark: a resume from before it ends with
/// OUT_OF_RANGE "too old resource version"; from after it, it works.
async fn resume_from_pruned_version_is_too_old(store: Store) {
    let hub = Hub::start(store.clone()).await.unwrap();
    let start = store.latest_resource_version().await.unwrap();
    for n in ["p1", "p2", "p3"] {
        store.create(stored(n), None, &guard()).await.unwrap();
    }
    store.delete("p1", None).await.unwrap().unwrap();
    let before_prune = store.latest_resource_version().await.unwrap();
    // Before pruning, the oldest version resumes fine.
    let mut ok = watch::stream(&hub, store.clone(), Start::After(start), |_| true, slot());
    let first = ok.next().await.unwrap().unwrap();
    assert_eq!(first.r#type, "ADDED");
    assert_eq!(name_of(first.object.as_ref().unwrap()), "p1");

    let far = decision::now().seconds + 3600;
    // p1's ADDED and DELETED go; p2's and p3's ADDED stay (rows read them).
    assert_eq!(store.prune_events(far).await.unwrap(), 2);
    let pruned = store.pruned_through().await.unwrap();
    assert_eq!(pruned, before_prune);
    let mut gone = watch::stream(&hub, store.clone(), Start::After(start), |_| true, slot());
    let err = gone.next().await.unwrap().unwrap_err();
    let status = to_status(&err);
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("too old resource version"),
        "{status:?}"
    );
    assert!(
        gone.next().await.is_none(),
        "the stream ends after the error"
    );

    // From the watermark on, nothing is missing: resume works.
    let mut fine = watch::stream(&hub, store.clone(), Start::After(pruned), |_| true, slot());
    store.create(stored("p4"), None, &guard()).await.unwrap();
    hub.notify();
    let ev = tokio::time::timeout(Duration::from_secs(20), fine.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(name_of(ev.object.as_ref().unwrap()), "p4");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_then_resume_misses_nothing_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    list_then_resume_misses_nothing(Store::open(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_then_resume_misses_nothing_on_postgres() {
    if let Some(url) = store_kit::postgres_url().await {
        list_then_resume_misses_nothing(Store::open(&url).await.unwrap()).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_from_pruned_version_is_too_old_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    resume_from_pruned_version_is_too_old(Store::open(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_from_pruned_version_is_too_old_on_postgres() {
    if let Some(url) = store_kit::postgres_url().await {
        resume_from_pruned_version_is_too_old(Store::open(&url).await.unwrap()).await;
    }
}

/// A store written before the watermark existed counts every version it
/// handed out as pruned: a resume from one of them lists again.
#[tokio::test(flavor = "multi_thread")]
async fn migrated_store_treats_old_versions_as_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let store = Store::open(&url).await.unwrap();
    store.create(stored("old"), None, &guard()).await.unwrap();
    let rv = store.latest_resource_version().await.unwrap();
    drop(store);
    // Undo the watermark's migration, as a store of the previous release.
    {
        let c = rusqlite::Connection::open(dir.path().join("a.db")).unwrap();
        c.execute_batch(
            "DELETE FROM counters WHERE name = 'pruned_through'; \
             DELETE FROM schema_migrations WHERE version = 7;",
        )
        .unwrap();
    }
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.pruned_through().await.unwrap(), rv);
    let hub = Hub::start(store.clone()).await.unwrap();
    let mut w = watch::stream(&hub, store.clone(), Start::After(rv - 1), |_| true, slot());
    let status = to_status(&w.next().await.unwrap().unwrap_err());
    assert_eq!(status.code(), Code::OutOfRange);
    let mut w = watch::stream(&hub, store.clone(), Start::After(rv), |_| true, slot());
    store.create(stored("new"), None, &guard()).await.unwrap();
    hub.notify();
    let ev = w.next().await.unwrap().unwrap();
    assert_eq!(name_of(ev.object.as_ref().unwrap()), "new");
}

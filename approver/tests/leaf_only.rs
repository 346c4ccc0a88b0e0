//! `status.certificate` is the leaf (plus intermediates), never the root:
//! a real issuance through the real daemons stores and serves one
//! certificate, and an object stored before (leaf then CA, as the signer
//! sends them) is served without the CA by Get, List and Watch while its
//! stored bytes stay as they were.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use certsign_approver::decision;
use certsign_approver::store::{CreateGuard, Store};
use certsign_proto::v1::{
    CertificateSigningRequestCondition, ListCertificateSigningRequestsRequest,
    WatchCertificateSigningRequestsRequest,
};
use common::*;

fn cert_blocks(pem: &[u8]) -> usize {
    String::from_utf8_lossy(pem)
        .matches("-----BEGIN CERTIFICATE-----")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_chains_are_served_leaf_only() {
    let stack = Stack::start();
    let admin = stack.pki.admin();
    let alice = stack.pki.user("alice", &[]);
    // A real issuance: one certificate, which openssl verifies with the CA.
    let issued = issued_to(&stack.pki, &stack.approver.addr, &admin, &alice, "new").await;
    let mut adm = stack.client(&admin).await;
    let new = get(&mut adm, "new").await.unwrap();
    let leaf = new.status.as_ref().unwrap().certificate.clone();
    assert_eq!(cert_blocks(&leaf), 1);
    assert_eq!(String::from_utf8(leaf.clone()).unwrap(), issued.cert_pem);
    openssl_verify(&stack.pki, &leaf);

    // An object stored the old way: leaf, then the CA.
    let url = format!(
        "sqlite://{}",
        stack.pki.dir.join("approver/approver.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    let before = store.latest_resource_version().await.unwrap();
    let chain = [leaf.clone(), stack.pki.ca_pem().into_bytes()].concat();
    let mut old = new.clone();
    let meta = old.metadata.as_mut().unwrap();
    meta.name = "old".into();
    meta.uid = format!("uid-old-{}", std::process::id());
    let status = old.status.as_mut().unwrap();
    status.certificate = chain.clone();
    status.conditions = vec![CertificateSigningRequestCondition {
        r#type: "Approved".into(),
        status: "True".into(),
        last_update_time: Some(decision::now()),
        ..Default::default()
    }];
    let guard = CreateGuard {
        max_pending_per_requestor: 100,
        token: None,
    };
    store.create(old, None, &guard).await.unwrap();

    let served = get(&mut adm, "old").await.unwrap();
    assert_eq!(served.status.unwrap().certificate, leaf);
    let listed = adm
        .list_certificate_signing_requests(ListCertificateSigningRequestsRequest::default())
        .await
        .unwrap()
        .into_inner();
    for c in &listed.items {
        let cert = &c.status.as_ref().unwrap().certificate;
        assert_eq!(cert_blocks(cert), 1, "{:?}", c.metadata);
    }
    let mut w = adm
        .watch_certificate_signing_requests(WatchCertificateSigningRequestsRequest {
            resource_version: before.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ev = tokio::time::timeout(Duration::from_secs(20), w.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        ev.object.as_ref().unwrap().metadata.as_ref().unwrap().name,
        "old"
    );
    assert_eq!(ev.object.unwrap().status.unwrap().certificate, leaf);
    // The store keeps what it had: serving trims, nothing is rewritten.
    let stored = store.get("old").await.unwrap().unwrap();
    assert_eq!(stored.status.unwrap().certificate, chain);
}

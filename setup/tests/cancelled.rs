//! Regression: a `Sign` call dropped mid-flight (the approver was killed and
//! its connection closed, so tonic dropped the handler future) must not
//! release the uid before the journal line it queued is indexed. Before the
//! fix, the retry of the same uid issued a second certificate.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use certsign_signer::authority::{Authority, SignError};
use certsign_signer::config::Config;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_sign_call_is_replayed_not_issued_again() {
    let pki = init(&[]);
    let authority = Authority::open(Config::load(&pki.config()).unwrap()).unwrap();
    for i in 0..20 {
        let (csr, _) = openssl_csr(&pki, &format!("c{i}"), P256, &format!("/CN=c{i}"), &[]);
        let uid = format!("uid-{i}");
        let req = request(&uid, &csr, CLIENT, &["client auth"], None, "bob");
        let sign_req = sign_request(req.clone(), vec![approve(&pki, &req)]);
        // One poll: the certificate is built and its journal line queued,
        // then the call is dropped while the line is being written.
        let first = tokio::time::timeout(
            Duration::from_nanos(1),
            authority.sign(&sign_req, "certsign-approver"),
        )
        .await;
        let first_serial = first.ok().map(|r| r.unwrap().serial);
        // The retry: busy while the first is finishing, then a replay.
        let again = loop {
            match authority.sign(&sign_req, "certsign-approver").await {
                Err(SignError::Busy(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
                other => break other.unwrap(),
            }
        };
        assert!(
            again.replayed,
            "round {i}: the retry of a dropped call issued a second certificate"
        );
        if let Some(s) = first_serial {
            assert_eq!(s, again.serial);
        }
    }
    drop(authority);
    let journal = std::fs::read_to_string(pki.p("signer/journal.jsonl")).unwrap();
    for i in 0..20 {
        let n = journal
            .lines()
            .filter(|l| {
                l.contains("\"event\":\"issued\"") && l.contains(&format!("\"uid\":\"uid-{i}\""))
            })
            .count();
        assert_eq!(n, 1, "uid-{i} has {n} issued lines");
    }
}

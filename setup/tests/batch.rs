//! Batch approvals on the real `serve` process over mTLS: one signed batch
//! statement issues each of its requests, and the signer's cache of
//! verified statements never lets a statement outlive its freshness
//! (`statement_max_age` shortened to 3 s for the test).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use certsign_proto::v1::{ApprovalEntry, Decision};
use common::*;
use tonic::Code;

fn entry(req: &certsign_proto::v1::CertificateSigningRequest) -> ApprovalEntry {
    certsign_evidence::approval_entry(req).unwrap()
}

#[tokio::test]
async fn a_cached_batch_statement_does_not_outlive_its_freshness() {
    let pki = init(&[]);
    let cfg = pki.config();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let short = text.replace("statement_max_age = \"24h\"", "statement_max_age = \"3s\"");
    assert_ne!(short, text);
    std::fs::write(&cfg, short).unwrap();
    let server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let reqs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let (csr, _) = openssl_csr(&pki, n, P256, &format!("/CN={n}"), &[]);
            request(n, &csr, CLIENT, &["client auth"], Some(3600), "alice")
        })
        .collect();
    let entries: Vec<_> = reqs.iter().map(entry).collect();
    let (k, cert) = admin(&pki);
    let signed =
        certsign_evidence::sign_batch(&entries, Decision::Approve, now_ts(0), &k, vec![cert])
            .unwrap();
    // Fresh: the first two requests are issued under the one signature.
    for i in 0..2 {
        let resp = c
            .sign(sign_request(reqs[i].clone(), vec![signed[i].clone()]))
            .await
            .unwrap()
            .into_inner();
        assert!(!resp.serial_number.is_empty());
    }
    // Past statement_max_age the same (cached) statement is refused.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let s = c
        .sign(sign_request(reqs[2].clone(), vec![signed[2].clone()]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{}", s.message());
    assert!(s.message().contains("freshness"), "{}", s.message());
    let journal = std::fs::read_to_string(pki.p("signer/journal.jsonl")).unwrap();
    let last = journal.lines().last().unwrap();
    assert!(
        last.contains("\"event\":\"refused\"") && last.contains("\"c\""),
        "{last}"
    );
}

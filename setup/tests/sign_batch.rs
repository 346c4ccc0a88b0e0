//! The batched `Sign` (`SignRequest.request.batch`) on the real `serve`
//! process over mTLS: each request of a batch is decided as if sent alone
//! (its own uid, journal line, exactly-once guarantee), a bad item is
//! refused in its own result without touching the others, a retried batch
//! and a batch sent again after a restart replay the journaled
//! certificates, and only the batch's shape (empty, over the cap, evidence
//! outside the items, a caller off the allow-list) refuses it whole.
#![allow(clippy::unwrap_used)]

mod common;

use certsign_proto::v1::sign_request::Request;
use certsign_proto::v1::{
    CrlRequest, Decision, Revocation, SignBatch, SignRequest, SignResponse, SignResult,
};
use common::*;
use tonic::Code;

/// The most requests one batch may carry (the signer's `MAX_BATCH`).
const CAP: usize = 500;

fn batch(requests: Vec<SignRequest>) -> SignRequest {
    SignRequest {
        request: Some(Request::Batch(SignBatch { requests })),
        approvals: vec![],
        renewal: None,
    }
}

/// Journal lines of `event` ("issued", "refused") naming `uid`.
fn lines(pki: &Pki, event: &str, uid: &str) -> usize {
    let journal = std::fs::read_to_string(pki.p("signer/journal.jsonl")).unwrap();
    let (e, u) = (
        format!("\"event\":\"{event}\""),
        format!("\"uid\":\"{uid}\""),
    );
    journal
        .lines()
        .filter(|l| l.contains(&e) && l.contains(&u))
        .count()
}

fn code(r: &SignResult) -> Code {
    Code::from_i32(r.code)
}

#[tokio::test]
async fn a_batch_issues_good_items_refuses_bad_ones_alone_and_replays_after_retry_and_restart() {
    let pki = init(&[]);
    let mut server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let (csr, _) = openssl_csr(&pki, "batch", P256, "/CN=batch-client", &[]);
    // Four good requests under ONE signed batch statement (one signature).
    let good: Vec<_> = (0..4)
        .map(|i| {
            request(
                &format!("good-{i}"),
                &csr,
                CLIENT,
                &["client auth"],
                None,
                "alice",
            )
        })
        .collect();
    let entries: Vec<_> = good
        .iter()
        .map(|r| certsign_evidence::approval_entry(r).unwrap())
        .collect();
    let (k, cert) = admin(&pki);
    let signed =
        certsign_evidence::sign_batch(&entries, Decision::Approve, now_ts(0), &k, vec![cert])
            .unwrap();
    let item = |i: usize| sign_request(good[i].clone(), vec![signed[i].clone()]);
    // good-0's entry carried by another request: the entry cannot move.
    let moved = request("moved", &csr, CLIENT, &["client auth"], None, "alice");
    let unknown_signer = request("unknown", &csr, "example.com/nope", &[], None, "alice");
    let items = vec![
        item(0),
        SignRequest::default(),
        item(1),
        batch(vec![item(2)]),
        SignRequest {
            request: Some(Request::Revocation(Revocation::default())),
            ..SignRequest::default()
        },
        sign_request(moved, vec![signed[0].clone()]),
        item(2),
        sign_request(unknown_signer.clone(), vec![approve(&pki, &unknown_signer)]),
        SignRequest {
            request: Some(Request::Crl(CrlRequest {})),
            ..SignRequest::default()
        },
        item(3),
        // The same uid twice in one batch: issued once, never twice.
        item(3),
    ];
    let check = |resp: &SignResponse, replayed: bool| -> Vec<String> {
        let r = &resp.results;
        assert_eq!(r.len(), 11, "one result per request");
        let refused = [
            (1, Code::InvalidArgument, "metadata: Required value"),
            (3, Code::InvalidArgument, "only certificate_signing_request"),
            (4, Code::InvalidArgument, "only certificate_signing_request"),
            (5, Code::FailedPrecondition, ""),
            (7, Code::FailedPrecondition, "unknown signer name"),
            (8, Code::InvalidArgument, "only certificate_signing_request"),
        ];
        for (i, want, text) in refused {
            assert_eq!(code(&r[i]), want, "item {i}: {}", r[i].message);
            assert!(
                r[i].message.starts_with(&format!("batch.requests[{i}]: "))
                    && r[i].message.contains(text)
                    && r[i].certificate.is_empty(),
                "item {i}: {}",
                r[i].message
            );
        }
        let ok = |i: usize| {
            assert_eq!(code(&r[i]), Code::Ok, "item {i}: {}", r[i].message);
            assert!(r[i].message.is_empty());
            assert!(
                String::from_utf8_lossy(&r[i].certificate).starts_with("-----BEGIN CERTIFICATE"),
                "item {i}"
            );
        };
        for i in [0, 2, 6] {
            ok(i);
            assert_eq!(r[i].replayed, replayed, "item {i}");
        }
        // The same uid twice (items 9 and 10): one issues it (or replays it,
        // on a retry), the other gets the same certificate again or "in
        // flight" (ABORTED, a retry); never a second issuance.
        let (a, b) = if code(&r[9]) == Code::Ok && (replayed || !r[9].replayed) {
            (9, 10)
        } else {
            (10, 9)
        };
        ok(a);
        assert_eq!(r[a].replayed, replayed, "item {a}");
        match code(&r[b]) {
            Code::Ok => {
                assert_eq!(r[b].serial_number, r[a].serial_number);
                assert!(r[b].replayed);
            }
            other => assert_eq!(other, Code::Aborted, "{}", r[b].message),
        }
        [0, 2, 6, a]
            .iter()
            .map(|i| r[*i].serial_number.clone())
            .collect()
    };
    let first = c.sign(batch(items.clone())).await.unwrap().into_inner();
    let serials = check(&first, false);
    let mut distinct = serials.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{serials:?}");
    // Every request has its own journal line: issued once for each good
    // uid, a refusal for the bad ones that reached the checks.
    for i in 0..4 {
        assert_eq!(lines(&pki, "issued", &format!("good-{i}")), 1, "good-{i}");
    }
    assert_eq!(lines(&pki, "refused", "moved"), 1);
    assert_eq!(lines(&pki, "refused", "unknown"), 1);

    // The batch retried (its answer lost): the journaled certificates again.
    let again = c.sign(batch(items.clone())).await.unwrap().into_inner();
    assert_eq!(check(&again, true), serials);
    // And after a restart (the index rebuilt from the journal).
    drop(c);
    drop(server);
    server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let after = c.sign(batch(items)).await.unwrap().into_inner();
    assert_eq!(check(&after, true), serials);
    for i in 0..4 {
        assert_eq!(lines(&pki, "issued", &format!("good-{i}")), 1, "good-{i}");
    }
}

#[tokio::test]
async fn a_batch_is_refused_whole_only_for_its_shape() {
    let pki = init(&[]);
    let server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let refused = |s: tonic::Status, code: Code, text: &str| {
        assert_eq!(s.code(), code, "{}", s.message());
        assert!(s.message().contains(text), "{}", s.message());
    };
    // Empty, and one over the cap.
    let s = c.sign(batch(vec![])).await.unwrap_err();
    refused(s, Code::InvalidArgument, "a batch holds 1 to 500 requests");
    let over = vec![SignRequest::default(); CAP + 1];
    let s = c.sign(batch(over)).await.unwrap_err();
    refused(
        s,
        Code::InvalidArgument,
        "batch.requests: Invalid value: 501",
    );
    // Evidence outside the items: it would bind no item.
    let (csr, _) = openssl_csr(&pki, "outer", P256, "/CN=outer", &[]);
    let req = request("outer", &csr, CLIENT, &["client auth"], None, "alice");
    let mut outer = batch(vec![sign_request(req.clone(), vec![])]);
    outer.approvals = vec![approve(&pki, &req)];
    let s = c.sign(outer).await.unwrap_err();
    refused(s, Code::InvalidArgument, "the batch's own must be empty");
    // A caller off the allow-list is refused before any item is looked at.
    let mut admin = admin_client(&pki, &server).await;
    let s = admin
        .sign(batch(vec![sign_request(
            req.clone(),
            vec![approve(&pki, &req)],
        )]))
        .await
        .unwrap_err();
    refused(s, Code::PermissionDenied, "allow-list");
    assert_eq!(lines(&pki, "issued", "outer"), 0);
    // At the cap the batch is taken: every item answered on its own (here
    // each an empty request, each refused and journaled).
    let at_cap = vec![SignRequest::default(); CAP];
    let resp = c.sign(batch(at_cap)).await.unwrap().into_inner();
    assert_eq!(resp.results.len(), CAP);
    assert!(
        resp.results
            .iter()
            .all(|r| code(r) == Code::InvalidArgument && r.message.contains("metadata")),
        "{:?}",
        resp.results.first()
    );
}

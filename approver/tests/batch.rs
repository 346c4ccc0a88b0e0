//! Batch approvals through the approver, with the real signer process over
//! mTLS: each admin signs ONE statement for two requests; the approver
//! verifies it with the signer's code, stores each request's own entry and
//! proof, and forwards them; two admins' batches meet a 2-admin quorum and
//! both certificates are issued (judged by `openssl verify`). An entry sent
//! for another request, or a batch sent by an admin who did not sign it, is
//! refused with the rule named.

#![allow(clippy::unwrap_used)]

mod common;

use certsign_proto::v1::{
    ApproveCertificateSigningRequestRequest, CertificateSigningRequest, Decision, SignedStatement,
};
use certsign_tests::grpc::statement_for;
use common::*;
use tonic::Code;

fn approve_req(
    r: &CertificateSigningRequest,
    s: &SignedStatement,
) -> ApproveCertificateSigningRequestRequest {
    ApproveCertificateSigningRequestRequest {
        name: r.metadata.as_ref().unwrap().name.clone(),
        approval: Some(s.clone()),
        reason: String::new(),
        message: String::new(),
    }
}

fn batch(admin: &User, reqs: &[&CertificateSigningRequest]) -> Vec<SignedStatement> {
    let sts: Vec<_> = reqs
        .iter()
        .map(|r| statement_for(r, Decision::Approve))
        .collect();
    certsign_tests::evidence::sign_batch(&sts, &admin.key(), vec![admin.cert_der.clone()])
}

#[tokio::test(flavor = "multi_thread")]
async fn two_admins_batches_meet_the_quorum_and_entries_stay_with_their_requests() {
    let stack = Stack::start();
    let admin = stack.pki.admin();
    let admin2 = stack.pki.user("admin2", &["system:masters"]);
    let svc = stack.pki.user("svc", &[]);
    let mut s = stack.client(&svc).await;
    let mut a1 = stack.client(&admin).await;
    let mut a2 = stack.client(&admin2).await;
    let mut reqs = Vec::new();
    for name in ["svc-a", "svc-b"] {
        let (pem, _) = make_csr(name, &[], &[]);
        reqs.push(
            create(
                &mut s,
                new_csr(
                    name,
                    &pem,
                    IDENTITY,
                    &["digital signature", "client auth"],
                    Some(3600),
                ),
            )
            .await,
        );
    }
    let (ra, rb) = (&reqs[0], &reqs[1]);
    let b1 = batch(&admin, &[ra, rb]);
    let b2 = batch(&admin2, &[rb, ra]);

    // svc-a's entry sent to approve svc-b: the bound uid differs.
    let e = a1
        .approve_certificate_signing_request(approve_req(rb, &b1[0]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(
        e.message().contains("bound field: statement request_uid"),
        "{}",
        e.message()
    );
    // admin's batch sent by admin2: not the caller's own signature.
    let e = a2
        .approve_certificate_signing_request(approve_req(ra, &b1[0]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());

    // Each admin's one statement approves both.
    for (r, st) in [(ra, &b1[0]), (rb, &b1[1])] {
        let got = a1
            .approve_certificate_signing_request(approve_req(r, st))
            .await
            .unwrap()
            .into_inner();
        assert!(condition_types(&got).is_empty(), "one of two approvals");
    }
    for (r, st) in [(ra, &b2[1]), (rb, &b2[0])] {
        let got = a2
            .approve_certificate_signing_request(approve_req(r, st))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(condition_types(&got), vec!["Approved"]);
        let recorded = got.status.unwrap().decisions;
        assert_eq!(recorded.len(), 2);
        assert!(
            recorded
                .iter()
                .all(|d| d.statement.as_ref().unwrap().batch.is_some())
        );
    }
    for name in ["svc-a", "svc-b"] {
        let done = wait_done(&mut s, name).await;
        let cert = done.status.unwrap().certificate;
        assert!(
            !cert.is_empty(),
            "{name}: the signer accepted the two batches"
        );
        openssl_verify(&stack.pki, leaf_pem(&cert).as_bytes());
    }
}

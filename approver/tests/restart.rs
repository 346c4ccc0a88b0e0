//! Restart: a pending, an approved-but-unsigned (signer down) and an issued
//! request survive a kill -9 of the approver, and the approved one is issued
//! once the signer is back.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_every_state_and_resumes_forwarding() {
    let pki = Pki::init();
    let admin = pki.admin();
    let alice = pki.user("alice", &[]);
    let mut signer = start_signer(&pki, "127.0.0.1:0");
    let signer_addr = signer.addr.clone();
    let mut approver = start_approver(&pki, &signer_addr);
    let mut a = client(&pki, &approver.addr, Some(&alice)).await;
    let mut adm = client(&pki, &approver.addr, Some(&admin)).await;
    let usages = ["client auth"];

    // Issued.
    let (pem, _) = make_csr("alice", &[], &[]);
    let issued = a
        .create_certificate_signing_request(new_csr(
            "issued",
            &pem,
            APISERVER_CLIENT,
            &usages,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    approve(&mut adm, &admin, &issued).await.unwrap();
    let done = wait_done(&mut a, "issued").await;
    let cert_before = done.status.unwrap().certificate;
    assert!(!cert_before.is_empty());

    // Signer down: approved but not signed.
    signer.kill();
    let (pem, _) = make_csr("alice", &[], &[]);
    let queued = a
        .create_certificate_signing_request(new_csr(
            "queued",
            &pem,
            APISERVER_CLIENT,
            &usages,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let q = approve(&mut adm, &admin, &queued).await.unwrap();
    assert_eq!(condition_types(&q), vec!["Approved"]);

    // Pending.
    let (pem, _) = make_csr("alice", &[], &[]);
    a.create_certificate_signing_request(new_csr("pending", &pem, APISERVER_CLIENT, &usages, None))
        .await
        .unwrap();

    // kill -9 the approver and start it again on the same store.
    approver.kill();
    let approver = start_approver(&pki, &signer_addr);
    let mut adm = client(&pki, &approver.addr, Some(&admin)).await;

    let got = get(&mut adm, "issued").await.unwrap();
    assert_eq!(got.status.as_ref().unwrap().certificate, cert_before);
    assert_eq!(condition_types(&got), vec!["Approved"]);
    let got = get(&mut adm, "queued").await.unwrap();
    assert_eq!(condition_types(&got), vec!["Approved"]);
    assert!(got.status.as_ref().unwrap().certificate.is_empty());
    assert_eq!(got.status.as_ref().unwrap().decisions.len(), 1);
    let got = get(&mut adm, "pending").await.unwrap();
    assert!(condition_types(&got).is_empty());

    // The signer comes back on its address: the queued request is issued.
    let _signer = start_signer(&pki, &signer_addr);
    let done = wait_done(&mut adm, "queued").await;
    let cert = done.status.unwrap().certificate;
    assert!(!cert.is_empty());
    openssl_verify(&pki, leaf_pem(&cert).as_bytes());
    // The issued one was not issued again.
    let got = get(&mut adm, "issued").await.unwrap();
    assert_eq!(got.status.unwrap().certificate, cert_before);
}

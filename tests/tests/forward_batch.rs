//! The approver's forwarder sends the approved requests it claims together
//! in batched `Sign` calls, with the real signer and approver processes
//! over mTLS: requests approved while the signer is down are all claimed
//! at once when the approver comes back, go to the signer in one batch,
//! and each is issued exactly once (the journal is the judge); a request
//! the signer refuses in that batch ends Failed with the signer's own
//! message, as it would alone.

#![allow(clippy::unwrap_used)]

use certsign_tests::Stack;
use certsign_tests::grpc::{
    MintSpec, approve_request, create_request, csr, journal_issued, wait_final, wait_issued,
};

#[tokio::test(flavor = "multi_thread")]
async fn requests_claimed_together_go_to_the_signer_in_one_batch() {
    let mut stack = Stack::start();
    stack.pin_ports();
    let admin = stack.admin_ident();
    let alice = stack.mint(&MintSpec::new("alice", &[]));
    let mut user = stack.approver_client(Some(&alice));
    let mut admin_c = stack.approver_client(Some(&admin));
    // The signer is down: approved requests wait in the store.
    stack.signer.kill();
    let mut created = Vec::new();
    // The last one names the signer's own allow-listed client: the approver
    // takes it, the signer refuses it (identities it is called by are
    // issued only at its console).
    let names: Vec<String> = (0..12).map(|i| format!("fwd-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let cn = if i == 11 {
            "certsign-approver"
        } else {
            "alice"
        };
        let (_, pem) = csr(cn, &[]);
        let o = user
            .create_certificate_signing_request(create_request(name, &pem))
            .await
            .unwrap()
            .into_inner();
        admin_c
            .approve_certificate_signing_request(approve_request(&o, &admin))
            .await
            .unwrap();
        created.push(o);
    }
    // The approver restarts with the signer back: all twelve are due at
    // once, so one claim takes them and one batched call carries them.
    stack.approver.kill();
    stack.signer.restart();
    stack.approver.restart();
    let mut admin_c = stack.approver_client(Some(&admin));
    for name in &names[..11] {
        wait_issued(&mut admin_c, name).await;
    }
    let refused = wait_final(&mut admin_c, &names[11]).await;
    let failed = refused
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "Failed")
        .expect("the refused request ends Failed");
    assert_eq!(failed.reason, "SignerValidationFailure");
    assert!(
        failed.message.starts_with("subject names") && !failed.message.contains("batch.requests"),
        "the signer's own message, as for a request sent alone: {}",
        failed.message
    );
    let log = stack.approver.log();
    let batched: Vec<_> = log
        .lines()
        .filter(|l| l.contains("batched Sign call"))
        .collect();
    assert!(
        batched.iter().any(|l| l.contains("requests=12")),
        "one batched call of all twelve: {batched:?}\napprover log:\n{log}"
    );
    // Exactly once: one issued journal line per issued request.
    let issued = journal_issued(&stack.journal_path());
    for o in &created[..11] {
        let uid = &o.metadata.as_ref().unwrap().uid;
        assert_eq!(issued.iter().filter(|j| &j.uid == uid).count(), 1, "{uid}");
    }
    let ours = issued.iter().filter(|j| j.name.starts_with("fwd-")).count();
    assert_eq!(ours, 11, "{issued:?}");
}

//! Batch approvals against a fully compromised approver: the test holds the
//! approver's TLS key (the signer's only allowed client) and calls `Sign`
//! on the real signer process with batch statements that are forged,
//! replayed, moved between requests, grafted, stale, self-approved or short
//! of a quorum. Every rule the single-statement attacks
//! (security_compromised_approver.rs) exercise is here for a batch, plus
//! the batch's own: an entry cannot be moved to another request.
//!
//! Positive controls: a batch of three genuinely approved requests is
//! issued with one signature, and two admins' batches meet a 2-admin
//! quorum. The journal is the judge: its `issued` lines are exactly the
//! controls.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use certsign_proto::v1::{
    ApprovalStatement, BatchApprovalStatement, CertificateSigningRequest, Decision, SignRequest,
    SignedStatement,
};
use certsign_tests::Stack;
use certsign_tests::evidence::{self, APPROVAL_CONTEXT};
use certsign_tests::grpc::{
    self, CLIENT_SIGNER, IDENTITY_SIGNER, Ident, MintSpec, create_request, csr, sign, sign_batch,
    statement_for, ts,
};
use prost::Message as _;
use tonic::Code;

/// A request as the approver would hold it after create.
fn held(uid: &str, cn: &str, signer: &str, user: &str) -> CertificateSigningRequest {
    let (_, pem) = csr(cn, &[]);
    let mut r = create_request(&format!("{uid}-name"), &pem)
        .certificate_signing_request
        .unwrap();
    r.metadata.as_mut().unwrap().uid = uid.into();
    let spec = r.spec.as_mut().unwrap();
    spec.signer_name = signer.into();
    spec.username = user.into();
    spec.groups = vec!["system:authenticated".into()];
    if signer == IDENTITY_SIGNER {
        spec.usages = vec!["digital signature".into(), "client auth".into()];
    }
    r
}

fn sign_req(csr: &CertificateSigningRequest, approvals: Vec<SignedStatement>) -> SignRequest {
    SignRequest {
        request: Some(
            certsign_proto::v1::sign_request::Request::CertificateSigningRequest(csr.clone()),
        ),
        approvals,
        renewal: None,
    }
}

fn approve_all(reqs: &[&CertificateSigningRequest]) -> Vec<ApprovalStatement> {
    reqs.iter()
        .map(|r| statement_for(r, Decision::Approve))
        .collect()
}

/// The signed statement for `target`, in a batch with two bystanders, signed
/// by `who`, with `edit` applied to every statement first.
fn in_batch(
    target: &CertificateSigningRequest,
    who: &Ident,
    edit: impl Fn(&mut ApprovalStatement),
) -> SignedStatement {
    let a = held("bystander-a", "bystander-a", CLIENT_SIGNER, "mallory");
    let b = held("bystander-b", "bystander-b", CLIENT_SIGNER, "mallory");
    let mut sts = approve_all(&[&a, target, &b]);
    sts.iter_mut().for_each(&edit);
    sign_batch(&sts, who).swap_remove(1)
}

struct Attempt {
    what: String,
    req: SignRequest,
    rule: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_statements_obtain_nothing_nobody_approved() {
    let stack = Stack::start();
    let admin = stack.admin_ident();
    let admin2 = stack.mint(&MintSpec::new("admin2", &["system:masters"]));
    let approver = stack.approver_ident();
    let mut signer = stack.signer_client(Some(&approver));
    let ca_key = std::fs::read_to_string(stack.dir.join("signer/ca.key")).unwrap();
    let ca_pem = stack.ca_pem();
    let mut controls = BTreeSet::new();

    // ---- positive controls ---------------------------------------------------
    let c1 = held("uid-c1", "c1", CLIENT_SIGNER, "mallory");
    let c2 = held("uid-c2", "c2", CLIENT_SIGNER, "mallory");
    let c3 = held("uid-c3", "c3", CLIENT_SIGNER, "mallory");
    let batch = sign_batch(&approve_all(&[&c1, &c2, &c3]), &admin);
    assert!(batch.iter().all(|s| s.signature == batch[0].signature));
    for (r, s) in [&c1, &c2, &c3].into_iter().zip(&batch) {
        signer
            .sign(sign_req(r, vec![s.clone()]))
            .await
            .expect("control: a request in a genuine batch is issued");
        controls.insert(r.metadata.clone().unwrap().uid);
    }
    // A replay of the same uid and CSR returns the same certificate.
    let again = signer
        .sign(sign_req(&c1, vec![batch[0].clone()]))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    let q = held("uid-q", "q", IDENTITY_SIGNER, "mallory");
    let q_other = held("uid-q-other", "q-other", IDENTITY_SIGNER, "mallory");
    let q1 = sign_batch(&approve_all(&[&q, &q_other]), &admin).swap_remove(0);
    let q2 = sign_batch(&approve_all(&[&q_other, &q]), &admin2).swap_remove(1);
    signer
        .sign(sign_req(&q, vec![q1.clone(), q2]))
        .await
        .expect("control: two admins' batches meet the identity quorum");
    controls.insert("uid-q".into());

    // ---- identities the attacker can muster ------------------------------------
    let (rogue_ca, rogue_key) = grpc::rogue_ca("certsign CA");
    let rogue_admin = grpc::mint_with(
        &MintSpec::new("admin", &["system:masters"]),
        &rogue_ca,
        &rogue_key,
    );
    let expired_admin = grpc::mint_with(
        &MintSpec {
            not_before: time::Duration::days(-10),
            not_after: time::Duration::days(-1),
            ..MintSpec::new("admin3", &["system:masters"])
        },
        &ca_pem,
        &ca_key,
    );
    let non_admin = stack.mint(&MintSpec::new("bob", &["developers"]));
    let admin_again = stack.mint(&MintSpec::new("admin", &["system:masters"]));
    let requestor_admin = stack.mint(&MintSpec::new("mallory", &["system:masters"]));

    let mut attempts: Vec<Attempt> = Vec::new();
    let mut push = |what: &str, req: SignRequest, rule: &'static str| {
        attempts.push(Attempt {
            what: what.to_string(),
            req,
            rule,
        })
    };

    // ---- moving entries between requests ----------------------------------------
    let d = held("uid-d", "d", CLIENT_SIGNER, "mallory");
    push(
        "c1's genuine entry presented for another request",
        sign_req(&d, vec![batch[0].clone()]),
        "bound field: statement request_uid",
    );
    let mut rewritten = batch[0].clone();
    rewritten.batch.as_mut().unwrap().entry =
        evidence::entry_of(&statement_for(&d, Decision::Approve)).encode_to_vec();
    push(
        "c1's entry rewritten to name another request, c1's path kept",
        sign_req(&d, vec![rewritten]),
        "batch inclusion",
    );
    let mut shifted = batch[1].clone();
    shifted.batch.as_mut().unwrap().index = 0;
    let mut c2_new = c2.clone();
    c2_new.metadata.as_mut().unwrap().uid = "uid-c2-new".into();
    push(
        "an entry at another entry's position",
        sign_req(&c2_new, vec![shifted]),
        "batch inclusion",
    );
    let other = sign_batch(&approve_all(&[&c1, &c2]), &admin);
    let mut grafted = other[0].clone();
    grafted.batch = Some({
        let mut inc = batch[1].batch.clone().unwrap();
        inc.entry = evidence::entry_of(&statement_for(&d, Decision::Approve)).encode_to_vec();
        inc
    });
    push(
        "an entry grafted under another batch's signature",
        sign_req(&d, vec![grafted]),
        "batch inclusion",
    );
    let mut bare = batch[0].clone();
    bare.batch = None;
    let mut d_as_c1 = c1.clone();
    d_as_c1.metadata.as_mut().unwrap().uid = "uid-d2".into();
    push(
        "a batch statement without its inclusion",
        sign_req(&d_as_c1, vec![bare]),
        "evidence signature",
    );
    let r = held("uid-s1", "s1", CLIENT_SIGNER, "mallory");
    let mut single_as_batch = sign(&statement_for(&r, Decision::Approve), &admin);
    single_as_batch.batch = batch[0].batch.clone();
    push(
        "a single statement carrying a batch inclusion",
        sign_req(&r, vec![single_as_batch]),
        "evidence signature",
    );

    // ---- a field of the request changed under a genuine batch approval ---------
    let r = held("uid-f", "f", CLIENT_SIGNER, "mallory");
    let st = in_batch(&r, &admin, |_| {});
    let changes = grpc::bound_field_changes();
    for (what, change, rule) in changes {
        let mut changed = r.clone();
        change(&mut changed);
        push(
            &format!("{what} under a genuine batch approval"),
            sign_req(&changed, vec![st.clone()]),
            rule,
        );
    }

    // ---- who signed, and what happened to the signature -------------------------
    let keep: fn(&mut SignedStatement) = |_| {};
    let edited: fn(&mut SignedStatement) = |s| {
        let mut b = BatchApprovalStatement::decode(s.statement.as_slice()).unwrap();
        b.entry_count += 1;
        s.statement = b.encode_to_vec();
    };
    let forged: fn(&mut SignedStatement) =
        |s| s.signature = vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];
    let no_chain: fn(&mut SignedStatement) = |s| s.certificate_chain.clear();
    type Tamper = fn(&mut SignedStatement);
    let signers: [(&str, &Ident, Tamper, &str); 8] = [
        (
            "signed with the approver's own TLS key",
            &approver,
            keep,
            "approver group",
        ),
        (
            "by a look-alike admin from another CA",
            &rogue_admin,
            keep,
            "evidence certificate",
        ),
        (
            "by an expired admin certificate",
            &expired_admin,
            keep,
            "evidence certificate",
        ),
        (
            "by a non-admin of the real CA",
            &non_admin,
            keep,
            "approver group",
        ),
        (
            "by the requestor (an admin) of their own request",
            &requestor_admin,
            keep,
            "separation of duties",
        ),
        ("edited after signing", &admin, edited, "evidence signature"),
        (
            "with a forged signature",
            &admin,
            forged,
            "evidence signature",
        ),
        (
            "without a certificate chain",
            &admin,
            no_chain,
            "certificate_chain is empty",
        ),
    ];
    for (i, (what, who, tamper, rule)) in signers.into_iter().enumerate() {
        let r = held(
            &format!("uid-w{i}"),
            &format!("w{i}"),
            CLIENT_SIGNER,
            "mallory",
        );
        let mut s = in_batch(&r, who, |_| {});
        tamper(&mut s);
        push(&format!("a batch {what}"), sign_req(&r, vec![s]), rule);
    }
    // The admin approving a certificate for their own username (subject CN).
    let r = held("uid-cn", "admin", CLIENT_SIGNER, "mallory");
    push(
        "a batch approving a certificate whose CN is the admin",
        sign_req(&r, vec![in_batch(&r, &admin, |_| {})]),
        "separation of duties",
    );

    // ---- quorum faked with batches ----------------------------------------------
    let r = held("uid-q1", "q1", IDENTITY_SIGNER, "mallory");
    let later = in_batch(&r, &admin, |s| s.signed_at = Some(ts(-5)));
    push(
        "one admin's two batches for a 2-admin quorum",
        sign_req(&r, vec![in_batch(&r, &admin, |_| {}), later]),
        "quorum",
    );
    let r = held("uid-q2", "q2", IDENTITY_SIGNER, "mallory");
    push(
        "one admin name with two certificates, one batch each",
        sign_req(
            &r,
            vec![
                in_batch(&r, &admin, |_| {}),
                in_batch(&r, &admin_again, |_| {}),
            ],
        ),
        "quorum",
    );
    let r = held("uid-q3", "q3", IDENTITY_SIGNER, "mallory");
    let s = in_batch(&r, &admin, |_| {});
    push(
        "one batch statement duplicated for a 2-admin quorum",
        sign_req(&r, vec![s.clone(), s]),
        "quorum",
    );
    let r = held("uid-q4", "q4", IDENTITY_SIGNER, "mallory");
    push(
        "one admin's batch and single statement for a 2-admin quorum",
        sign_req(
            &r,
            vec![
                in_batch(&r, &admin, |_| {}),
                sign(&statement_for(&r, Decision::Approve), &admin),
            ],
        ),
        "quorum",
    );

    // ---- freshness and decision -------------------------------------------------
    for (i, (age, what)) in [
        (-2 * 86400, "stale (2 days old)"),
        (3600, "dated an hour ahead"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = held(
            &format!("uid-t{i}"),
            &format!("t{i}"),
            CLIENT_SIGNER,
            "mallory",
        );
        let s = in_batch(&r, &admin, |s| s.signed_at = Some(ts(age)));
        push(
            &format!("a genuine batch {what}"),
            sign_req(&r, vec![s]),
            "freshness",
        );
    }
    let r = held("uid-deny", "deny", CLIENT_SIGNER, "mallory");
    let s = in_batch(&r, &admin, |s| s.decision = Decision::Deny as i32);
    push(
        "a batch denial presented as approval",
        sign_req(&r, vec![s]),
        "decision",
    );
    let r = held("uid-ctx", "ctx", CLIENT_SIGNER, "mallory");
    let mut s = in_batch(&r, &admin, |_| {});
    let single = evidence::sign_bytes(
        APPROVAL_CONTEXT,
        s.statement.clone(),
        &admin.key(),
        vec![admin.cert_der.clone()],
    );
    s.signature = single.signature;
    push(
        "a batch statement signed under the single approval context",
        sign_req(&r, vec![s]),
        "evidence signature",
    );

    // ---- every attempt refused, by its rule --------------------------------------
    for a in &attempts {
        match signer.sign(a.req.clone()).await {
            Ok(resp) => panic!(
                "{}: the signer ISSUED serial {}",
                a.what,
                resp.into_inner().serial_number
            ),
            Err(s) => {
                assert_eq!(
                    s.code(),
                    Code::FailedPrecondition,
                    "{}: {}",
                    a.what,
                    s.message()
                );
                assert!(
                    s.message().contains(a.rule),
                    "{}: refused for another reason than {:?}: {}",
                    a.what,
                    a.rule,
                    s.message()
                );
                println!("refused: {:<66} {}", a.what, s.message());
            }
        }
    }
    assert!(attempts.len() >= 28, "the attack table shrank");

    let issued: BTreeSet<String> = grpc::journal_issued(&stack.journal_path())
        .into_iter()
        .filter(|i| i.caller != "console")
        .map(|i| i.uid)
        .collect();
    assert_eq!(
        issued, controls,
        "the journal must show exactly the controls issued through Sign"
    );
}

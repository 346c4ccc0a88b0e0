//! End-to-end over real mTLS with the real signer process: create, list,
//! approve with a signed statement, issue (judged by `openssl verify`),
//! deny, conflicting decisions, N-of-M approvals, renewal auto-approval,
//! who may see and decide what, and pagination.

#![allow(clippy::unwrap_used)]

mod common;

use certsign_proto::v1::{
    ApproveCertificateSigningRequestRequest, CreateCertificateSigningRequestRequest, Decision,
    DeleteCertificateSigningRequestRequest, DenyCertificateSigningRequestRequest,
    GetTrustBundleRequest, ListCertificateSigningRequestsRequest,
};
use common::*;
use tonic::Code;

fn list_req(condition: &str) -> ListCertificateSigningRequestsRequest {
    ListCertificateSigningRequestsRequest {
        condition: condition.into(),
        ..Default::default()
    }
}

/// A denial of `name` without a statement (what kubectl sends).
fn plain_denial(name: &str) -> DenyCertificateSigningRequestRequest {
    DenyCertificateSigningRequestRequest {
        name: name.into(),
        ..Default::default()
    }
}

/// The names `c` lists with `condition` ("" for all).
async fn listed(
    c: &mut certsign_proto::v1::approver_client::ApproverClient<tonic::transport::Channel>,
    condition: &str,
) -> Vec<String> {
    let list = c
        .list_certificate_signing_requests(list_req(condition))
        .await
        .unwrap()
        .into_inner();
    names(&list.items)
}

fn names(items: &[certsign_proto::v1::CertificateSigningRequest]) -> Vec<String> {
    items
        .iter()
        .map(|c| c.metadata.as_ref().unwrap().name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn create_list_approve_issue_and_visibility() {
    let stack = Stack::start();
    let admin = stack.pki.admin();
    let alice = stack.pki.user("alice", &["dev"]);
    let bob = stack.pki.user("bob", &["dev"]);
    let mut a = stack.client(&alice).await;
    let mut b = stack.client(&bob).await;
    let mut adm = stack.client(&admin).await;

    let (pem, _key) = make_csr("alice", &["dev"], &[]);
    let mut req = new_csr(
        "alice-1",
        &pem,
        APISERVER_CLIENT,
        &["client auth", "digital signature"],
        Some(86400),
    );
    // Identity and status in the body are ignored.
    {
        let body = req.certificate_signing_request.as_mut().unwrap();
        let spec = body.spec.as_mut().unwrap();
        spec.username = "mallory".into();
        spec.groups = vec!["system:masters".into()];
        body.status = Some(certsign_proto::v1::CertificateSigningRequestStatus {
            conditions: vec![certsign_proto::v1::CertificateSigningRequestCondition {
                r#type: "Approved".into(),
                status: "True".into(),
                ..Default::default()
            }],
            certificate: b"forged".to_vec(),
            decisions: vec![],
        });
    }
    let created = a
        .create_certificate_signing_request(req)
        .await
        .unwrap()
        .into_inner();
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.username, "alice");
    assert_eq!(spec.groups, vec!["dev", "system:authenticated"]);
    assert_eq!(created.api_version, "certificates.k8s.io/v1");
    assert_eq!(created.kind, "CertificateSigningRequest");
    let uid = created.metadata.as_ref().unwrap().uid.clone();
    assert!(uuid::Uuid::parse_str(&uid).is_ok(), "uid {uid}");
    assert!(condition_types(&created).is_empty());
    assert!(created.status.as_ref().unwrap().certificate.is_empty());

    // The admin's list shows it Pending; others don't see it at all.
    assert_eq!(listed(&mut adm, "Pending").await, vec!["alice-1"]);
    assert!(
        listed(&mut b, "").await.is_empty(),
        "bob sees alice's request"
    );
    let bobs = b
        .list_certificate_signing_requests(ListCertificateSigningRequestsRequest {
            username: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(bobs.items.is_empty());
    let e = get(&mut b, "alice-1").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(
        e.message(),
        "certificatesigningrequests.certificates.k8s.io \"alice-1\" not found"
    );
    // Others can neither decide nor delete it (not found: nothing leaks).
    let e = approve(&mut b, &bob, &created).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = b
        .delete_certificate_signing_request(DeleteCertificateSigningRequestRequest {
            name: "alice-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // The requestor (not an admin) cannot approve.
    let e = approve(&mut a, &alice, &created).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(
        e.message(),
        "user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""
    );
    // An admin must sign with their own certificate's key.
    let other_admin = stack.pki.user("root2", &["system:masters"]);
    let e = adm
        .approve_certificate_signing_request(ApproveCertificateSigningRequestRequest {
            name: "alice-1".into(),
            approval: Some(statement(&other_admin, &created, Decision::Approve)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // No statement at all.
    let e = adm
        .approve_certificate_signing_request(ApproveCertificateSigningRequestRequest {
            name: "alice-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // The admin approves; the certificate is issued.
    let approved = approve(&mut adm, &admin, &created).await.unwrap();
    assert_eq!(condition_types(&approved), vec!["Approved"]);
    let d = &approved.status.as_ref().unwrap().decisions;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].username, "admin");
    assert!(d[0].statement.is_some(), "statement kept with the decision");
    let c = approved.status.as_ref().unwrap().conditions[0].clone();
    assert_eq!(c.reason, "KubectlApprove");
    assert_eq!(c.status, "True");

    let done = wait_done(&mut a, "alice-1").await;
    let cert = done.status.as_ref().unwrap().certificate.clone();
    assert!(!cert.is_empty(), "{done:?}");
    openssl_verify(&stack.pki, leaf_pem(&cert).as_bytes());
    assert_eq!(listed(&mut adm, "Issued").await, vec!["alice-1"]);

    // Approving again changes nothing.
    let again = approve(&mut adm, &admin, &created).await.unwrap();
    assert_eq!(again.status.as_ref().unwrap().decisions.len(), 1);

    // Trust bundle: the CA.
    let tb = a
        .get_trust_bundle(GetTrustBundleRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        String::from_utf8(tb.trust_bundle).unwrap(),
        stack.pki.ca_pem()
    );

    // Duplicate name.
    let e = a
        .create_certificate_signing_request(client_csr("alice-1", "alice"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(
        e.message(),
        "certificatesigningrequests.certificates.k8s.io \"alice-1\" already exists"
    );

    // The owner may delete its own request.
    a.delete_certificate_signing_request(DeleteCertificateSigningRequestRequest {
        name: "alice-1".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        get(&mut adm, "alice-1").await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deny_and_conflicting_decisions() {
    let stack = Stack::start();
    let (admin, mut adm, _alice, mut a) = stack.admin_and_user("alice").await;

    let r1 = create(&mut a, client_csr("r1", "alice")).await;
    let denied = adm
        .deny_certificate_signing_request(DenyCertificateSigningRequestRequest {
            name: "r1".into(),
            denial: Some(statement(&admin, &r1, Decision::Deny)),
            reason: "NotAllowed".into(),
            message: "no certificates for alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(condition_types(&denied), vec!["Denied"]);
    let st = denied.status.clone().unwrap();
    assert_eq!(st.conditions[0].reason, "NotAllowed");
    assert_eq!(st.conditions[0].message, "no certificates for alice");
    assert!(st.conditions[0].last_update_time.is_some());
    assert_eq!(st.decisions[0].username, "admin");
    assert_eq!(st.decisions[0].decision, Decision::Deny as i32);
    assert_eq!(st.decisions[0].reason, "NotAllowed");
    assert!(st.decisions[0].time.is_some());

    let e = approve(&mut adm, &admin, &r1).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "certificate signing request \"r1\" is already Denied"
    );
    let still = get(&mut adm, "r1").await.unwrap();
    assert_eq!(
        condition_types(&still),
        vec!["Denied"],
        "conditions never removed or added"
    );

    // The reverse.
    let r2 = create(&mut a, client_csr("r2", "alice")).await;
    approve(&mut adm, &admin, &r2).await.unwrap();
    let e = adm
        .deny_certificate_signing_request(plain_denial("r2"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "certificate signing request \"r2\" is already Approved"
    );

    // A denial without a statement is accepted (default kubectl reason).
    a.create_certificate_signing_request(client_csr("r3", "alice"))
        .await
        .unwrap();
    let d = adm
        .deny_certificate_signing_request(plain_denial("r3"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.status.unwrap().conditions[0].reason, "KubectlDeny");
    // Users cannot deny.
    let e = a
        .deny_certificate_signing_request(plain_denial("r2"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_of_n_approvals() {
    // init configures certsign.io/identity with required_approvals = 2 on
    // both the signer and the approver.
    let stack = Stack::start();
    let admin = stack.pki.admin();
    let admin2 = stack.pki.user("admin2", &["system:masters"]);
    let svc = stack.pki.user("svc", &[]);
    let mut s = stack.client(&svc).await;
    let mut a1 = stack.client(&admin).await;
    let mut a2 = stack.client(&admin2).await;

    let (pem, _) = make_csr("svc-1", &[], &["svc-1.example.internal"]);
    let r = create(
        &mut s,
        new_csr(
            "svc-1",
            &pem,
            IDENTITY,
            &["digital signature", "client auth"],
            Some(3600),
        ),
    )
    .await;
    let one = approve(&mut a1, &admin, &r).await.unwrap();
    assert!(
        condition_types(&one).is_empty(),
        "one approval of two: still pending"
    );
    let st = one.status.clone().unwrap();
    assert_eq!(st.decisions.len(), 1);
    assert_eq!(st.decisions[0].username, "admin");
    // The same admin twice does not count.
    let again = approve(&mut a1, &admin, &r).await.unwrap();
    assert!(condition_types(&again).is_empty());
    assert_eq!(again.status.unwrap().decisions.len(), 1);
    assert_eq!(listed(&mut a1, "Pending").await, vec!["svc-1"]);

    let two = approve(&mut a2, &admin2, &r).await.unwrap();
    assert_eq!(condition_types(&two), vec!["Approved"]);
    let who: Vec<String> = two
        .status
        .unwrap()
        .decisions
        .iter()
        .map(|d| d.username.clone())
        .collect();
    assert_eq!(who, vec!["admin", "admin2"]);
    let done = wait_done(&mut s, "svc-1").await;
    let cert = done.status.unwrap().certificate;
    assert!(!cert.is_empty(), "the signer accepted the two statements");
    openssl_verify(&stack.pki, leaf_pem(&cert).as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_is_auto_approved() {
    let stack = Stack::start();
    let admin = stack.pki.admin();
    let mut adm = stack.client(&admin).await;

    // Alice's first certificate, the normal way.
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = csr_with_key(&key, "alice", &[], &[]);
    let user0 = stack.pki.user("alice", &[]);
    let mut a0 = stack.client(&user0).await;
    let r = create(
        &mut a0,
        new_csr(
            "alice-v1",
            &pem,
            APISERVER_CLIENT,
            &["client auth"],
            Some(86400),
        ),
    )
    .await;
    approve(&mut adm, &admin, &r).await.unwrap();
    let done = wait_done(&mut a0, "alice-v1").await;
    let cert_pem = leaf_pem(&done.status.unwrap().certificate);
    let current = User {
        name: "alice".into(),
        cert_der: pem_der(&cert_pem),
        cert_pem,
        key_pem: key.serialize_pem(),
    };

    // Renew with a new key, authenticated by the current certificate.
    let mut a = stack.client(&current).await;
    let (new_pem, _) = make_csr("alice", &[], &[]);
    let mut req = new_csr(
        "alice-v2",
        &new_pem,
        APISERVER_CLIENT,
        &["client auth"],
        Some(86400),
    );
    req.renewal = Some(renewal(&current, "alice-v2", &new_pem, APISERVER_CLIENT));
    let created = a
        .create_certificate_signing_request(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(condition_types(&created), vec!["Approved"]);
    assert_eq!(
        created.status.as_ref().unwrap().conditions[0].reason,
        "AutoApproved"
    );
    let done = wait_done(&mut a, "alice-v2").await;
    let cert = done.status.unwrap().certificate;
    assert!(!cert.is_empty());
    openssl_verify(&stack.pki, leaf_pem(&cert).as_bytes());

    // Renewal proofs that are not a renewal of the caller's certificate: the
    // request name, the CSR's CN, signer name, usages, who signs the proof,
    // and the refusal (its code and what its message says, where judged).
    type Refusal<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a [&'a str],
        &'a User,
        Option<Code>,
        Option<&'a str>,
    );
    let refusals: [Refusal<'_>; 3] = [
        // A proof signed by a certificate other than the caller's is refused.
        (
            "alice-v3",
            "alice",
            APISERVER_CLIENT,
            &["client auth"],
            &user0,
            Some(Code::PermissionDenied),
            None,
        ),
        // A different subject is not a renewal.
        (
            "alice-v4",
            "alice2",
            APISERVER_CLIENT,
            &["client auth"],
            &current,
            None,
            Some("renewal"),
        ),
        // kubelet-serving does not allow renewal (init: allow_renewal = false).
        (
            "alice-v5",
            "alice",
            "kubernetes.io/kubelet-serving",
            &["digital signature", "server auth"],
            &current,
            Some(Code::PermissionDenied),
            Some("does not allow renewal"),
        ),
    ];
    for (name, cn, signer, usages, holder, code, says) in refusals {
        let (pem, _) = make_csr(cn, &[], &[]);
        let mut req = new_csr(name, &pem, signer, usages, None);
        req.renewal = Some(renewal(holder, name, &pem, signer));
        let e = a.create_certificate_signing_request(req).await.unwrap_err();
        if let Some(code) = code {
            assert_eq!(e.code(), code, "{name}: {e:?}");
        }
        if let Some(says) = says {
            assert!(e.message().contains(says), "{name}: {e:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn signer_refusal_fails_the_request() {
    let stack = Stack::start();
    let (admin, mut adm, _alice, mut a) = stack.admin_and_user("alice").await;
    // Accepted at create (Kubernetes does too); the signer's policy refuses
    // server auth for kube-apiserver-client.
    let (pem, _) = make_csr("alice", &[], &[]);
    let r = create(
        &mut a,
        new_csr(
            "bad-usage",
            &pem,
            APISERVER_CLIENT,
            &["client auth", "server auth"],
            None,
        ),
    )
    .await;
    approve(&mut adm, &admin, &r).await.unwrap();
    let done = wait_done(&mut a, "bad-usage").await;
    let st = done.status.unwrap();
    assert!(st.certificate.is_empty());
    let failed = st.conditions.iter().find(|c| c.r#type == "Failed").unwrap();
    assert_eq!(failed.reason, "SignerValidationFailure");
    assert!(failed.message.contains("server auth"), "{}", failed.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_pages_and_watch_events() {
    let stack = Stack::start();
    let (_admin, mut adm, _alice, mut a) = stack.admin_and_user("alice").await;

    let mut watch = a
        .watch_certificate_signing_requests(
            certsign_proto::v1::WatchCertificateSigningRequestsRequest::default(),
        )
        .await
        .unwrap()
        .into_inner();
    for i in 0..5 {
        let (pem, _) = make_csr("alice", &[], &[]);
        a.create_certificate_signing_request(new_csr(
            &format!("p-{i}"),
            &pem,
            APISERVER_CLIENT,
            &["client auth"],
            None,
        ))
        .await
        .unwrap();
    }
    // Someone else's request is not in alice's watch.
    let bob = stack.pki.user("bob", &[]);
    let (pem, _) = make_csr("bob", &[], &[]);
    stack
        .client(&bob)
        .await
        .create_certificate_signing_request(new_csr(
            "q-bob",
            &pem,
            APISERVER_CLIENT,
            &["client auth"],
            None,
        ))
        .await
        .unwrap();
    adm.delete_certificate_signing_request(DeleteCertificateSigningRequestRequest {
        name: "p-0".into(),
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let ev = watch.message().await.unwrap().unwrap();
        seen.push(format!(
            "{} {}",
            ev.r#type,
            ev.object.unwrap().metadata.unwrap().name
        ));
    }
    assert_eq!(
        seen,
        vec![
            "ADDED p-0",
            "ADDED p-1",
            "ADDED p-2",
            "ADDED p-3",
            "ADDED p-4",
            "DELETED p-0"
        ]
    );

    let mut all = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let resp = adm
            .list_certificate_signing_requests(ListCertificateSigningRequestsRequest {
                limit: 2,
                continue_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(resp.items.len() <= 2);
        all.extend(names(&resp.items));
        if resp.continue_token.is_empty() {
            break;
        }
        token = resp.continue_token;
    }
    assert_eq!(all, vec!["p-1", "p-2", "p-3", "p-4", "q-bob"]);
    assert_eq!(pages, 3);
    let e = adm
        .list_certificate_signing_requests(ListCertificateSigningRequestsRequest {
            continue_token: "garbage!".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Initial events on request.
    let mut w = adm
        .watch_certificate_signing_requests(
            certsign_proto::v1::WatchCertificateSigningRequestsRequest {
                name: "q-bob".into(),
                signer_name: String::new(),
                send_initial_events: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .into_inner();
    let ev = w.message().await.unwrap().unwrap();
    assert_eq!(ev.r#type, "ADDED");
    assert_eq!(ev.object.unwrap().metadata.unwrap().name, "q-bob");
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_callers_are_refused() {
    let stack = Stack::start();
    let mut anon = client(&stack.pki, &stack.approver.addr, None).await;
    let e = anon
        .create_certificate_signing_request(client_csr("x", "x"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = anon
        .list_certificate_signing_requests(ListCertificateSigningRequestsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = anon
        .get_trust_bundle(GetTrustBundleRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // A client certificate from a CA the approver does not trust fails the
    // handshake: the call never reaches the service.
    let foreign = Pki::init().user("mallory", &["system:masters"]);
    let mut m = client(&stack.pki, &stack.approver.addr, Some(&foreign)).await;
    let e = m
        .list_certificate_signing_requests(ListCertificateSigningRequestsRequest::default())
        .await
        .unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    let _ = CreateCertificateSigningRequestRequest::default();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_requestor_never_approves_its_own_request() {
    let stack = Stack::start();
    let admin = stack.pki.admin();
    let mut adm = stack.client(&admin).await;
    let r = create(&mut adm, client_csr("own", "admin-made")).await;
    let e = approve(&mut adm, &admin, &r).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(
        e.message(),
        "user \"admin\" requested \"own\" and may not approve it"
    );
    let got = get(&mut adm, "own").await.unwrap();
    assert!(got.status.unwrap().decisions.is_empty());
}

fn set_approval_mode(t: &mut toml::Table, list: &str, key: &str, name: &str, mode: &str) {
    for p in t.get_mut(list).unwrap().as_array_mut().unwrap() {
        let p = p.as_table_mut().unwrap();
        if p.get(key).and_then(|v| v.as_str()) == Some(name) {
            p.insert("approval".into(), mode.into());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_approve_rules_for_approver_mode_signer_names() {
    let pki = Pki::init();
    // Both sides trust the approver for kubelet client certificates.
    edit_toml(&pki.signer_toml(), |t| {
        set_approval_mode(t, "profiles", "signer_name", KUBELET_CLIENT, "approver");
    });
    pki.edit_approver(|t| {
        set_approval_mode(t, "signer_names", "name", KUBELET_CLIENT, "approver");
        let mut rule = toml::Table::new();
        rule.insert(
            "signer_names".into(),
            toml::Value::Array(vec![KUBELET_CLIENT.into()]),
        );
        rule.insert(
            "groups".into(),
            toml::Value::Array(vec!["system:nodes".into()]),
        );
        rule.insert("cn_equals_username".into(), true.into());
        rule.insert(
            "message".into(),
            "Auto approving self kubelet client certificate.".into(),
        );
        t.insert("auto_approve".into(), toml::Value::Array(vec![rule.into()]));
    });
    let signer = start_signer(&pki, "127.0.0.1:0");
    let approver = start_approver(&pki, &signer.addr);
    let node = pki.user("system:node:n1", &["system:nodes"]);
    let mut n = client(&pki, &approver.addr, Some(&node)).await;
    let usages = ["digital signature", "client auth"];

    let (pem, _) = make_csr("system:node:n1", &["system:nodes"], &[]);
    let r = create(&mut n, new_csr("n1", &pem, KUBELET_CLIENT, &usages, None)).await;
    let c = &r.status.as_ref().unwrap().conditions;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].r#type, "Approved");
    assert_eq!(c[0].reason, "AutoApproved");
    assert_eq!(
        c[0].message,
        "Auto approving self kubelet client certificate."
    );
    let done = wait_done(&mut n, "n1").await;
    let cert = done.status.unwrap().certificate;
    assert!(!cert.is_empty());
    openssl_verify(&pki, leaf_pem(&cert).as_bytes());

    // The CN is not the requestor: the rule does not apply; it waits.
    let (pem, _) = make_csr("system:node:n2", &["system:nodes"], &[]);
    let r = create(&mut n, new_csr("n2", &pem, KUBELET_CLIENT, &usages, None)).await;
    assert!(condition_types(&r).is_empty());
    // Not in the group: no auto-approval either.
    let other = pki.user("system:node:n3", &["other"]);
    let (pem, _) = make_csr("system:node:n3", &["system:nodes"], &[]);
    let r = client(&pki, &approver.addr, Some(&other))
        .await
        .create_certificate_signing_request(new_csr("n3", &pem, KUBELET_CLIENT, &usages, None))
        .await
        .unwrap()
        .into_inner();
    assert!(condition_types(&r).is_empty());
}

#[test]
fn auto_approve_for_a_signed_signer_name_is_a_config_error() {
    let pki = Pki::init();
    pki.edit_approver(|t| {
        let mut rule = toml::Table::new();
        rule.insert(
            "signer_names".into(),
            toml::Value::Array(vec![APISERVER_CLIENT.into()]),
        );
        t.insert("auto_approve".into(), toml::Value::Array(vec![rule.into()]));
    });
    let out = std::process::Command::new(bin_dir().join("certsign-approver"))
        .args(["serve", "--config"])
        .arg(pki.approver_toml())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auto_approve[0].signer_names"), "{err}");
    assert!(
        err.contains("approval = \\\"approver\\\"") || err.contains("approval = \"approver\""),
        "{err}"
    );
}

//! The approver's boundary beyond Kubernetes' CSR rules, over real mTLS
//! against the real approver process: nobody approves a certificate whose
//! subject CN is their own username (separation of duties by subject as
//! well as by requestor), and labels and annotations are bounded as
//! Kubernetes bounds object metadata (qualified-name keys, label values,
//! 256 KiB of annotations), with Kubernetes' texts.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use certsign_proto::v1::CreateCertificateSigningRequestRequest;
use common::*;
use tonic::Code;

fn invalid(name: &str, msg: &str) -> String {
    format!("CertificateSigningRequest.certificates.k8s.io \"{name}\" is invalid: {msg}")
}

/// `req` with these labels and annotations.
fn with_meta(
    mut req: CreateCertificateSigningRequestRequest,
    labels: &[(&str, &str)],
    annotations: &[(&str, String)],
) -> CreateCertificateSigningRequestRequest {
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
        .collect::<HashMap<_, _>>();
    meta.annotations = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect::<HashMap<_, _>>();
    req
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_may_not_approve_a_certificate_in_their_own_name() {
    // No signer needed: the approval is what is judged.
    let pki = Pki::init();
    let approver = start_approver(&pki, &dead_addr());
    let admin = pki.admin();
    let admin2 = pki.user("admin2", &["system:masters"]);
    let bob = pki.user("bob", &[]);
    let mut adm = client(&pki, &approver.addr, Some(&admin)).await;
    let mut adm2 = client(&pki, &approver.addr, Some(&admin2)).await;
    let mut b = client(&pki, &approver.addr, Some(&bob)).await;

    // bob asks for a certificate whose subject CN is "admin".
    let csr = create(&mut b, client_csr("for-admin", "admin")).await;
    let e = approve(&mut adm, &admin, &csr).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(
        e.message(),
        "separation of duties: user \"admin\" may not approve \"for-admin\", whose subject CN is the user's own username"
    );
    // Nothing was recorded: still pending, no decision by admin.
    let stored = get(&mut adm, "for-admin").await.unwrap();
    let status = stored.status.clone().unwrap_or_default();
    assert!(status.conditions.is_empty(), "{status:?}");
    assert!(status.decisions.is_empty(), "{status:?}");
    // Another admin may approve it.
    let approved = approve(&mut adm2, &admin2, &stored).await.unwrap();
    assert_eq!(condition_types(&approved), ["Approved"]);

    // The admin's own request in their own name: the requestor rule first.
    let own = create(&mut adm, client_csr("own", "admin")).await;
    let e = approve(&mut adm, &admin, &own).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.message(),
        "user \"admin\" requested \"own\" and may not approve it"
    );
    // A subject naming someone else is approved as before.
    let other = create(&mut b, client_csr("for-carol", "carol")).await;
    let approved = approve(&mut adm, &admin, &other).await.unwrap();
    assert_eq!(condition_types(&approved), ["Approved"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_and_annotations_are_bounded_with_kubernetes_texts() {
    let pki = Pki::init();
    let approver = start_approver(&pki, &dead_addr());
    let alice = pki.user("alice", &[]);
    let mut c = client(&pki, &approver.addr, Some(&alice)).await;
    let req = |name: &str| client_csr(name, "alice");
    let qualified = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    let label_value = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    // Annotations: 256 KiB of keys and values is the limit, one byte more is refused.
    let limit = 262_144;
    let at_limit = "v".repeat(limit - "note".len());
    create(
        &mut c,
        with_meta(req("at-limit"), &[], &[("note", at_limit.clone())]),
    )
    .await;
    let e = c
        .create_certificate_signing_request(with_meta(
            req("over"),
            &[],
            &[("note", format!("{at_limit}v"))],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        invalid(
            "over",
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        )
    );
    // Split over many annotations, the total counts.
    let many: Vec<(String, String)> = (0..5)
        .map(|i| (format!("k{i}"), "x".repeat(60_000)))
        .collect();
    let many: Vec<(&str, String)> = many.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let e = c
        .create_certificate_signing_request(with_meta(req("many"), &[], &many))
        .await
        .unwrap_err();
    assert!(
        e.message().ends_with("may not be more than 262144 bytes"),
        "{e:?}"
    );

    // Annotation keys are qualified names, case aside.
    create(
        &mut c,
        with_meta(
            req("keys-ok"),
            &[],
            &[("Example.com/Owner", "x".into()), ("team", String::new())],
        ),
    )
    .await;
    let e = c
        .create_certificate_signing_request(with_meta(
            req("bad-key"),
            &[],
            &[("bad key", "x".into())],
        ))
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        invalid(
            "bad-key",
            &format!("metadata.annotations: Invalid value: \"bad key\": name part {qualified}")
        )
    );

    // Labels: qualified-name keys, values of at most 63 characters.
    create(
        &mut c,
        with_meta(
            req("labels-ok"),
            &[("app.kubernetes.io/name", "web_1"), ("tier", "")],
            &[],
        ),
    )
    .await;
    let long = "v".repeat(64);
    let e = c
        .create_certificate_signing_request(with_meta(
            req("bad-labels"),
            &[("a/b/c", "ok"), ("team", "-x"), ("zone", &long)],
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        invalid(
            "bad-labels",
            &format!(
                "[metadata.labels: Invalid value: \"a/b/c\": a qualified name {qualified} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName'), metadata.labels: Invalid value: \"-x\": {label_value}, metadata.labels: Invalid value: \"{long}\": must be no more than 63 characters]"
            )
        )
    );
    // Metadata errors come with the spec's, in Kubernetes' order.
    let mut both = with_meta(req("both"), &[("Bad/x", "v")], &[]);
    both.certificate_signing_request
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .usages
        .clear();
    let e = c
        .create_certificate_signing_request(both)
        .await
        .unwrap_err();
    assert!(
        e.message().starts_with(&invalid(
            "both",
            "[metadata.labels: Invalid value: \"Bad/x\": prefix part a lowercase RFC 1123 subdomain"
        )),
        "{e:?}"
    );
    assert!(
        e.message().ends_with("spec.usages: Required value]"),
        "{e:?}"
    );
}

//! The inventory and revocation RPCs through the real daemons (`init` PKI,
//! `certsign-signer serve`, `certsign-approver serve`, mTLS): who sees which
//! issued certificates (ListCertificates: admins all, others their own),
//! filters and pages; who may revoke (RevokeCertificate: an admin for the
//! signer name or the holder; others PERMISSION_DENIED, unknown serials
//! NOT_FOUND); and the CRL's plain-HTTP endpoint as curl sees it.

#![allow(clippy::unwrap_used)]

mod common;

use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::{
    IssuedCertificate, ListCertificatesRequest, RevocationReason, RevocationStatement,
    RevokeCertificateRequest, SignedStatement,
};
use common::*;
use prost::Message as _;
use tonic::transport::Channel;

/// Create `name` for `user` (a client certificate for its own CN), have the
/// admin approve it, wait for the certificate; returns the leaf PEM and the
/// key.
async fn issued(stack: &Stack, admin: &User, user: &User, name: &str) -> (String, rcgen::KeyPair) {
    let mut c = stack.client(user).await;
    let (pem, key) = make_csr(&user.name, &[], &[]);
    let created = create(
        &mut c,
        new_csr(name, &pem, APISERVER_CLIENT, &["client auth"], None),
    )
    .await;
    let mut adm = stack.client(admin).await;
    approve(&mut adm, admin, &created).await.unwrap();
    let done = wait_done(&mut c, name).await;
    (leaf_pem(&done.status.unwrap().certificate), key)
}

async fn list(
    c: &mut ApproverClient<Channel>,
    req: ListCertificatesRequest,
) -> Result<(Vec<IssuedCertificate>, String), tonic::Status> {
    c.list_certificates(req)
        .await
        .map(|r| r.into_inner())
        .map(|r| (r.items, r.continue_token))
}

fn names(items: &[IssuedCertificate]) -> Vec<&str> {
    items.iter().map(|i| i.request_name.as_str()).collect()
}

/// A revocation of the certificate `cert_pem` signed by `key` with `chain`.
fn revocation(
    serial: &str,
    cert_pem: &str,
    key: &rcgen::KeyPair,
    chain: Vec<Vec<u8>>,
) -> SignedStatement {
    let st = RevocationStatement {
        serial_number: serial.into(),
        certificate_sha256: certsign_tests::evidence::sha256(&pem_der(cert_pem)),
        reason: RevocationReason::KeyCompromise as i32,
        signed_at: Some(certsign_tests::grpc::ts(0)),
    };
    certsign_tests::evidence::sign_bytes(
        certsign_evidence::REVOCATION_CONTEXT,
        st.encode_to_vec(),
        key,
        chain,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn list_certificates_shows_admins_all_and_others_their_own() {
    let stack = Stack::start();
    let admin = stack.pki.admin();
    let alice = stack.pki.user("alice", &[]);
    let bob = stack.pki.user("bob", &[]);
    let (a1, _) = issued(&stack, &admin, &alice, "alice-1").await;
    issued(&stack, &admin, &alice, "alice-2").await;
    issued(&stack, &admin, &bob, "bob-1").await;

    let mut adm = stack.client(&admin).await;
    let (all, token) = list(&mut adm, ListCertificatesRequest::default())
        .await
        .unwrap();
    assert!(token.is_empty());
    let mut all_names = names(&all);
    all_names.sort();
    assert_eq!(all_names, vec!["alice-1", "alice-2", "bob-1"]);
    let first = all.iter().find(|i| i.request_name == "alice-1").unwrap();
    assert_eq!(first.status, "Valid");
    assert_eq!(first.requestor, "alice");
    assert_eq!(first.signer_name, APISERVER_CLIENT);
    assert_eq!(first.subject, "CN=alice");
    assert_eq!(String::from_utf8(first.certificate.clone()).unwrap(), a1);
    // The serial is the certificate's, as openssl prints it.
    let openssl_serial = certsign_tests::process::run_ok(
        std::process::Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(write_tmp(&stack, "a1.pem", &a1)),
    );
    assert_eq!(
        openssl_serial
            .trim()
            .trim_start_matches("serial=")
            .to_lowercase(),
        first.serial_number
    );

    // Others see only the certificates of their own requests, whatever
    // they ask for.
    let mut al = stack.client(&alice).await;
    let (mine, _) = list(&mut al, ListCertificatesRequest::default())
        .await
        .unwrap();
    let mut mine = names(&mine);
    mine.sort();
    assert_eq!(mine, vec!["alice-1", "alice-2"]);
    let (bobs, _) = list(
        &mut al,
        ListCertificatesRequest {
            request_name: "bob-1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(bobs.is_empty());

    // Filters and pages (admin).
    let by_serial = ListCertificatesRequest {
        serial_number: first.serial_number.to_uppercase(),
        ..Default::default()
    };
    let (one, _) = list(&mut adm, by_serial).await.unwrap();
    assert_eq!(names(&one), vec!["alice-1"]);
    let other_signer = ListCertificatesRequest {
        signer_name: KUBELET_CLIENT.into(),
        ..Default::default()
    };
    assert!(list(&mut adm, other_signer).await.unwrap().0.is_empty());
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = list(
            &mut adm,
            ListCertificatesRequest {
                limit: 2,
                continue_token: token.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.into_iter().map(|i| i.serial_number));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    let mut serials: Vec<String> = all.iter().map(|i| i.serial_number.clone()).collect();
    serials.sort();
    assert_eq!(seen, serials);
    let bad = list(
        &mut adm,
        ListCertificatesRequest {
            continue_token: "bm9wZQ".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().contains("continue_token"),
        "{}",
        bad.message()
    );
}

fn write_tmp(stack: &Stack, name: &str, text: &str) -> std::path::PathBuf {
    let p = stack.pki.dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_certificate_is_for_admins_and_the_holder_only() {
    let stack = Stack::start();
    let admin = stack.pki.admin();
    let alice = stack.pki.user("alice", &[]);
    let bob = stack.pki.user("bob", &[]);
    let (cert, _) = issued(&stack, &admin, &alice, "alice-1").await;
    let mut adm = stack.client(&admin).await;
    let serial = list(&mut adm, ListCertificatesRequest::default())
        .await
        .unwrap()
        .0[0]
        .serial_number
        .clone();

    // Bob is neither an admin nor the holder (the requestor's other
    // identity is not the holder either: only the certificate itself is).
    for caller in [&bob, &alice] {
        let mut c = stack.client(caller).await;
        let st = revocation(&serial, &cert, &caller.key(), vec![caller.cert_der.clone()]);
        let denied = c
            .revoke_certificate(RevokeCertificateRequest {
                revocation: Some(st),
            })
            .await
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().contains(&serial), "{}", denied.message());
    }
    // Unknown serial: NOT_FOUND naming it.
    let unknown = revocation(
        "0badc0de",
        &cert,
        &admin.key(),
        vec![admin.cert_der.clone()],
    );
    let nf = adm
        .revoke_certificate(RevokeCertificateRequest {
            revocation: Some(unknown),
        })
        .await
        .unwrap_err();
    assert_eq!(nf.code(), tonic::Code::NotFound);
    assert!(nf.message().contains("0badc0de"), "{}", nf.message());
    // No statement, or not a RevocationStatement: INVALID_ARGUMENT naming
    // the field.
    let missing = adm
        .revoke_certificate(RevokeCertificateRequest { revocation: None })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);
    assert!(
        missing.message().contains("revocation"),
        "{}",
        missing.message()
    );
    let garbage = SignedStatement {
        statement: vec![0xff, 0xff, 0xff],
        ..Default::default()
    };
    let bad = adm
        .revoke_certificate(RevokeCertificateRequest {
            revocation: Some(garbage),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().contains("revocation.statement"),
        "{}",
        bad.message()
    );
    // Nothing was revoked by any of that.
    let (items, _) = list(&mut adm, ListCertificatesRequest::default())
        .await
        .unwrap();
    assert_eq!(items[0].status, "Valid");
}

/// `curl` (an outside client) fetches `path` from `addr`: (status, content
/// type, body).
pub fn curl(addr: &str, path: &str, out: &std::path::Path) -> (String, String) {
    let text = certsign_tests::process::run_ok(
        std::process::Command::new("curl")
            .args(["-s", "-o"])
            .arg(out)
            .args(["-w", "%{http_code} %{content_type}"])
            .arg(format!("http://{addr}{path}")),
    );
    let (code, ty) = text.split_once(' ').unwrap_or((&text, ""));
    (code.to_string(), ty.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn crl_http_endpoint_answers_only_at_crl() {
    let crl_addr = format!("127.0.0.1:{}", certsign_tests::process::free_port());
    let addr = crl_addr.clone();
    let stack = Stack::start_with(move |t| {
        t.insert("crl_listen".into(), addr.into());
    });
    let out = stack.pki.dir.join("fetched");
    let (code, _) = curl(&crl_addr, "/nothing-here", &out);
    assert_eq!(code, "404");
    let (code, _) = curl(&crl_addr, "/crl/", &out);
    assert_eq!(code, "404");
    // Before any CRL is published: 503, never an empty 200. Once the
    // signer signs CRLs (tests/crl.rs), 200 with the DER.
    let (code, ty) = curl(&crl_addr, "/crl", &out);
    assert!(
        code == "503" || (code == "200" && ty == "application/pkix-crl"),
        "{code} {ty}"
    );
}

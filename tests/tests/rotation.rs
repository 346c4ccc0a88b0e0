//! Rotation of the approver's own TLS identity through the signer (issue 30),
//! end to end: an approver whose certificate is within its renewal window
//! renews it on the signer's `identity_renewal` path while a client keeps
//! calling, writes the new files and serves the new certificate (judged by
//! `openssl s_client`); the signer journals it, keeps subject, SANs and
//! profile, and refuses that path for any other subject, any other proof
//! and any caller not on its allow-list.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use certsign_evidence::{RENEWAL_CONTEXT, sha256, sign_statement};
use certsign_proto::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec, GetCertificateSigningRequestRequest,
    ObjectMeta, RenewalStatement, SignRequest, sign_request,
};
use certsign_tests::Stack;
use certsign_tests::grpc::{approve_request, create_request, ts};
use certsign_tests::pki::{Ident, MintSpec, csr, csr_with_key, openssl_serial};
use certsign_tests::records::journal_issued;
use certsign_tests::wait::wait_issued;
use prost::Message as _;
use tonic::Code;

fn served_serial(stack: &Stack) -> String {
    let (cert, key) = stack.admin();
    certsign_tests::pki::served_serial(&stack.approver.addr, &stack.ca(), &cert, &key)
}

fn subject_and_sans(path: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName,extendedKeyUsage",
            "-in",
        ])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_within_its_window_rotates_through_the_signer_while_clients_work() {
    let stack = Stack::start_configured(
        &[],
        |_| {},
        |t| {
            // The init certificate (one year) is inside this window at once.
            t.insert("tls_renew_before".into(), "400d".into());
        },
    );
    let crt = stack.dir.join("approver/tls.crt");
    let before_subject = subject_and_sans(&crt);
    let old_serial = served_serial(&stack);
    let old_file_serial = openssl_serial(&crt);
    // A client calling all along; none of its calls may fail.
    let mut client = stack.approver_client(Some(&stack.admin_ident()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut calls = 0;
    while !stack
        .approver
        .log()
        .contains("rotated the approver's TLS identity")
    {
        let answer = client
            .get_certificate_signing_request(GetCertificateSigningRequestRequest {
                name: "nothing".into(),
            })
            .await;
        assert_eq!(answer.unwrap_err().code(), Code::NotFound);
        calls += 1;
        assert!(
            Instant::now() < deadline,
            "no rotation within 60 s:\n{}",
            stack.approver.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(calls > 0);
    let new_file_serial = openssl_serial(&crt);
    assert_ne!(new_file_serial, old_file_serial);
    assert_eq!(
        served_serial(&stack),
        new_file_serial,
        "a new connection sees the old certificate"
    );
    assert_ne!(old_serial, new_file_serial);
    assert_eq!(
        subject_and_sans(&crt),
        before_subject,
        "subject, SANs or usages changed"
    );
    // The key is private and matches (the approver serves with it).
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(stack.dir.join("approver/tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The signer journaled it: renewal evidence, the approver as caller.
    let journaled: Vec<_> = journal_issued(&stack.journal_path())
        .into_iter()
        .filter(|i| i.serial == new_file_serial)
        .collect();
    assert_eq!(journaled.len(), 1, "{journaled:?}");
    assert_eq!(journaled[0].evidence, "renewal");
    assert_eq!(journaled[0].caller, "certsign-approver");
    // The old client connection still works, and so does the whole flow.
    let user = stack.mint(&MintSpec::client("rot-user", &[]));
    let (_k, pem) = csr("rot-user", &[]);
    let created = stack
        .approver_client(Some(&user))
        .create_certificate_signing_request(create_request("after-rotation", &pem))
        .await
        .unwrap()
        .into_inner();
    client
        .approve_certificate_signing_request(approve_request(&created, &stack.admin_ident()))
        .await
        .unwrap();
    wait_issued(&mut client, "after-rotation").await;
    // The forwarder's connection to the signer was opened after the
    // rotation (the first Sign is this one): it presented the new
    // certificate, read again from the changed files, not the one the
    // approver started with.
    let log = stack.approver.log().to_ascii_lowercase();
    let presented = log
        .lines()
        .filter(|l| l.contains("calls to the signer now present"))
        .collect::<Vec<_>>();
    assert!(
        presented
            .last()
            .is_some_and(|l| l.contains(&format!("serial {new_file_serial}"))),
        "the signer was not called with the rotated certificate: {presented:?}"
    );
}

/// An `identity_renewal` request for `csr_pem` (subject of the CSR) proven
/// by a renewal statement signed by `prover` for its own certificate.
fn identity_renewal(
    csr_pem: &str,
    signer_name: &str,
    prover: &Ident,
    usages: &[&str],
) -> SignRequest {
    let csr_der = certsign_evidence::csr_der_from_pem(csr_pem.as_bytes()).unwrap();
    let statement = RenewalStatement {
        request_name: "identity-test".into(),
        csr_sha256: sha256(&csr_der).to_vec(),
        signer_name: signer_name.into(),
        current_certificate_sha256: sha256(&prover.cert_der).to_vec(),
        signed_at: Some(ts(0)),
    };
    let proof = sign_statement(
        RENEWAL_CONTEXT,
        statement.encode_to_vec(),
        &prover.key(),
        vec![prover.cert_der.clone()],
    )
    .unwrap();
    SignRequest {
        request: Some(sign_request::Request::IdentityRenewal(
            CertificateSigningRequest {
                metadata: Some(ObjectMeta {
                    name: "identity-test".into(),
                    uid: format!("identity-test-{}", rand_suffix()),
                    ..Default::default()
                }),
                spec: Some(CertificateSigningRequestSpec {
                    request: csr_pem.as_bytes().to_vec(),
                    signer_name: signer_name.into(),
                    usages: usages.iter().map(|u| u.to_string()).collect(),
                    username: "certsign-approver".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        renewal: Some(proof),
        ..Default::default()
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

const IDENTITY: &str = "certsign.io/identity";
const USAGES: &[&str] = &[
    "digital signature",
    "key encipherment",
    "server auth",
    "client auth",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signer_refuses_identity_renewal_for_any_other_subject_proof_or_caller() {
    let stack = Stack::start();
    let approver = stack.approver_ident();
    let admin = stack.admin_ident();
    let key = rcgen::KeyPair::generate().unwrap();

    // The approver asking for someone else's subject, with its own proof.
    let other = csr_with_key(&key, "someone-else", &[], &[]);
    let refused = stack
        .signer_client(Some(&approver))
        .sign(identity_renewal(&other, IDENTITY, &approver, USAGES))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("subject differs"), "{refused:?}");

    // The approver with a proof for another certificate (the admin's).
    let admins = csr_with_key(&key, "admin", &["system:masters"], &[]);
    let refused = stack
        .signer_client(Some(&approver))
        .sign(identity_renewal(
            &admins,
            IDENTITY,
            &admin,
            &["digital signature", "client auth"],
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("not for the certificate this connection presented"),
        "{refused:?}"
    );

    // A caller not on the allow-list, for its own subject.
    let refused = stack
        .signer_client(Some(&admin))
        .sign(identity_renewal(
            &admins,
            IDENTITY,
            &admin,
            &["digital signature", "client auth"],
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // The ordinary certificate path never issues an allow-listed identity,
    // even with the approver's own renewal proof.
    let own = csr_with_key(&key, "certsign-approver", &[], &[]);
    let mut ordinary = identity_renewal(&own, IDENTITY, &approver, USAGES);
    if let Some(sign_request::Request::IdentityRenewal(c)) = ordinary.request.take() {
        ordinary.request = Some(sign_request::Request::CertificateSigningRequest(c));
    }
    let refused = stack
        .signer_client(Some(&approver))
        .sign(ordinary)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("allow-listed"), "{refused:?}");

    // No certificate was issued for any of them; each refusal is journaled.
    assert!(
        journal_issued(&stack.journal_path())
            .iter()
            .all(|i| !i.name.starts_with("identity-test"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signer_reissues_its_own_tls_certificate_within_its_window() {
    let stack = Stack::start_configured(
        &[],
        |t| {
            t.insert("tls_renew_before".into(), "400d".into());
        },
        |_| {},
    );
    let crt = stack.dir.join("signer/tls.crt");
    let before_subject = subject_and_sans(&crt);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stack
        .signer
        .log()
        .contains("re-issued the signer's own TLS certificate")
    {
        assert!(Instant::now() < deadline, "{}", stack.signer.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_serial = openssl_serial(&crt);
    let approver = stack.dir.join("approver");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {} -CAfile {} -cert {} -key {} -alpn h2 </dev/null 2>/dev/null | openssl x509 -noout -serial",
            stack.signer.addr,
            stack.ca().display(),
            approver.join("tls.crt").display(),
            approver.join("tls.key").display()
        ))
        .output()
        .unwrap();
    let served = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    assert_eq!(
        served, new_serial,
        "a new connection sees the old certificate"
    );
    assert_eq!(subject_and_sans(&crt), before_subject);
    let journaled: Vec<_> = journal_issued(&stack.journal_path())
        .into_iter()
        .filter(|i| i.serial == new_serial)
        .collect();
    assert_eq!(journaled.len(), 1, "{journaled:?}");
    // The approver keeps getting certificates signed.
    let user = stack.mint(&MintSpec::client("sig-user", &[]));
    let (_k, pem) = csr("sig-user", &[]);
    let created = stack
        .approver_client(Some(&user))
        .create_certificate_signing_request(create_request("after-signer-rotation", &pem))
        .await
        .unwrap()
        .into_inner();
    let mut admin = stack.approver_client(Some(&stack.admin_ident()));
    admin
        .approve_certificate_signing_request(approve_request(&created, &stack.admin_ident()))
        .await
        .unwrap();
    wait_issued(&mut admin, "after-signer-rotation").await;
}

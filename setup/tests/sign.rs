//! `Sign` over real mTLS on loopback: openssl-made CSRs, admin statements
//! signed with init's admin key, issued certificates judged by openssl and
//! rustls-webpki; every refusal with its own case.
#![allow(clippy::unwrap_used)]

mod common;

use certsign_evidence::{RENEWAL_CONTEXT, sign_statement};
use certsign_proto::v1::sign_request::Request as Asked;
use certsign_proto::v1::{Decision, RenewalStatement};
use common::*;
use prost::Message;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tonic::Code;

fn webpki_check(ca_pem: &[u8], leaf_pem: &[u8], server: bool) {
    let ca = CertificateDer::from_pem_slice(ca_pem).unwrap();
    let leaf = CertificateDer::from_pem_slice(leaf_pem).unwrap();
    let anchor = webpki::anchor_from_trusted_cert(&ca).unwrap();
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    let usage = if server {
        webpki::KeyUsage::server_auth()
    } else {
        webpki::KeyUsage::client_auth()
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::now(),
        usage,
        None,
        None,
    )
    .unwrap();
    if server {
        ee.verify_is_valid_for_subject_name(&ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    }
}

fn text(pki: &Pki, cert: &std::path::Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let _ = pki;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn openssl_csrs_of_every_key_type_are_issued_and_judged_valid() {
    let pki = init(&[]);
    let server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let ca_pem = std::fs::read(pki.p("ca.crt")).unwrap();
    for (i, (kind, newkey)) in [
        ("p256", P256),
        ("p384", P384),
        ("ed25519", ED25519),
        ("rsa", RSA2048),
    ]
    .into_iter()
    .enumerate()
    {
        // Client certificate, kube-apiserver-client, with an extra harmless extension.
        let (csr, _) = openssl_csr(
            &pki,
            &format!("u{kind}"),
            newkey,
            "/CN=alice/O=dev/O=ops",
            &["nsComment=hello"],
        );
        let req = request(
            &format!("c{i}"),
            &csr,
            CLIENT,
            &["digital signature", "key encipherment", "client auth"],
            Some(3600),
            "alice",
        );
        let appr = approve(&pki, &req);
        let resp = c
            .sign(sign_request(req, vec![appr]))
            .await
            .unwrap()
            .into_inner();
        assert!(!resp.replayed);
        let leaf = write_leaf(&pki, &format!("client-{kind}"), &resp.certificate);
        let v = openssl_verify(&pki, "sslclient", &leaf);
        assert!(v.contains(": OK"), "{kind}: {v}");
        webpki_check(&ca_pem, &resp.certificate, false);
        let t = text(&pki, &leaf);
        assert!(
            t.contains("CA:FALSE") && t.contains("O = dev, O = ops"),
            "{t}"
        );
        assert!(
            !t.contains("Netscape Comment"),
            "requested extension must be dropped: {t}"
        );
        assert_eq!(
            t.contains("Key Encipherment"),
            kind == "rsa",
            "keyEncipherment only for RSA: {t}"
        );

        // Serving certificate, kubelet-serving.
        let (csr, _) = openssl_csr(
            &pki,
            &format!("s{kind}"),
            newkey,
            "/O=system:nodes/CN=system:node:n1",
            &["subjectAltName=IP:127.0.0.1"],
        );
        let req = request(
            &format!("s{i}"),
            &csr,
            "kubernetes.io/kubelet-serving",
            &["digital signature", "server auth"],
            None,
            "system:node:n1",
        );
        let appr = approve(&pki, &req);
        let resp = c
            .sign(sign_request(req, vec![appr]))
            .await
            .unwrap()
            .into_inner();
        let leaf = write_leaf(&pki, &format!("server-{kind}"), &resp.certificate);
        let v = openssl_verify(&pki, "sslserver", &leaf);
        assert!(v.contains(": OK"), "{kind}: {v}");
        webpki_check(&ca_pem, &resp.certificate, true);
    }
}

#[tokio::test]
async fn callers_outside_the_allow_list_are_refused() {
    let pki = init(&[]);
    let server = serve(&pki);
    // Trusted CA, not allow-listed: PERMISSION_DENIED naming the identity.
    let mut c = admin_client(&pki, &server).await;
    let (csr, _) = openssl_csr(&pki, "a", P256, "/CN=alice", &[]);
    let r = request("x1", &csr, CLIENT, &["client auth"], None, "alice");
    let s = c
        .sign(sign_request(r.clone(), vec![approve(&pki, &r)]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(s.message().contains("admin"), "{}", s.message());
    // A client from another CA: the handshake fails, so the RPC does.
    let other = init(&[]);
    let mut c = client_as(
        &pki,
        &server,
        &pki.p("ca.crt"),
        &other.p("approver/tls.crt"),
        &other.p("approver/tls.key"),
    )
    .await;
    let s = c
        .sign(sign_request(r.clone(), vec![approve(&pki, &r)]))
        .await
        .unwrap_err();
    assert_ne!(s.code(), Code::Ok);
    assert_ne!(s.code(), Code::FailedPrecondition);
    // The allow-listed approver gets its certificate.
    let mut c = client(&pki, &server).await;
    c.sign(sign_request(r.clone(), vec![approve(&pki, &r)]))
        .await
        .unwrap();
    // The signer remembers the approver's certificate as allowed; that must
    // not let anyone else in: the admin is still refused, on a new
    // connection and with a fresh request.
    let mut c = admin_client(&pki, &server).await;
    let r2 = request("x2", &csr, CLIENT, &["client auth"], None, "alice");
    let s = c
        .sign(sign_request(r2.clone(), vec![approve(&pki, &r2)]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn retries_replay_and_uid_conflicts_survive_a_restart() {
    let pki = init(&[]);
    let (csr, _) = openssl_csr(&pki, "a", P256, "/CN=alice", &[]);
    let (csr2, _) = openssl_csr(&pki, "b", P256, "/CN=alice", &[]);
    let r = request("same-uid", &csr, CLIENT, &["client auth"], None, "alice");
    let r2 = request("same-uid", &csr2, CLIENT, &["client auth"], None, "alice");
    let first = {
        let server = serve(&pki);
        let mut c = client(&pki, &server).await;
        let first = c
            .sign(sign_request(r.clone(), vec![approve(&pki, &r)]))
            .await
            .unwrap()
            .into_inner();
        let again = c
            .sign(sign_request(r.clone(), vec![approve(&pki, &r)]))
            .await
            .unwrap()
            .into_inner();
        assert!(again.replayed);
        assert_eq!(again.certificate, first.certificate);
        let s = c
            .sign(sign_request(r2.clone(), vec![approve(&pki, &r2)]))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::AlreadyExists);
        first
    };
    let server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let again = c
        .sign(sign_request(r.clone(), vec![approve(&pki, &r)]))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.certificate, first.certificate);
    assert_eq!(again.serial_number, first.serial_number);
    let s = c
        .sign(sign_request(r2.clone(), vec![approve(&pki, &r2)]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn renewal_is_proven_by_the_current_certificate() {
    let pki = init(&[]);
    let server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let (csr, key) = openssl_csr(&pki, "cur", P256, "/CN=alice/O=dev", &[]);
    let r = request("n1", &csr, CLIENT, &["client auth"], None, "alice");
    let cur = c
        .sign(sign_request(r.clone(), vec![approve(&pki, &r)]))
        .await
        .unwrap()
        .into_inner();
    let cur_der = CertificateDer::from_pem_slice(&cur.certificate)
        .unwrap()
        .to_vec();
    let cur_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(key).unwrap()).unwrap();

    let renew_of = |cur_der: &Vec<u8>, cur_key: &rcgen::KeyPair, uid: &str, csr: &[u8]| {
        let req = request(uid, csr, CLIENT, &["client auth"], None, "alice");
        let der = certsign_signer::csr::csr_der_from_pem(csr).unwrap();
        let st = RenewalStatement {
            request_name: req.metadata.clone().unwrap().name,
            csr_sha256: certsign_evidence::sha256(&der).to_vec(),
            signer_name: CLIENT.into(),
            current_certificate_sha256: certsign_evidence::sha256(cur_der).to_vec(),
            signed_at: Some(now_ts(0)),
        };
        let proof = sign_statement(
            RENEWAL_CONTEXT,
            st.encode_to_vec(),
            cur_key,
            vec![cur_der.clone()],
        )
        .unwrap();
        certsign_proto::v1::SignRequest {
            request: Some(
                certsign_proto::v1::sign_request::Request::CertificateSigningRequest(req),
            ),
            approvals: vec![],
            renewal: Some(proof),
        }
    };
    let renew = |uid: &str, csr: &[u8]| renew_of(&cur_der, &cur_key, uid, csr);
    // Another subject is refused.
    let (other, _) = openssl_csr(&pki, "other", P256, "/CN=bob/O=dev", &[]);
    let s = c.sign(renew("n4", &other)).await.unwrap_err();
    assert!(
        s.message()
            .contains("renewal: the new CSR's subject differs"),
        "{}",
        s.message()
    );
    // A renewal may not move to another profile to add an extended key
    // usage (client → server auth under the identity profile); the EKU rule
    // itself is in renewal.rs.
    let (srv, _) = openssl_csr(&pki, "srv", P256, "/CN=alice/O=dev", &[]);
    let mut req = renew("n6", &srv);
    {
        let Some(Asked::CertificateSigningRequest(csr)) = req.request.as_mut() else {
            panic!("a certificate request")
        };
        let spec = csr.spec.as_mut().unwrap();
        spec.signer_name = "certsign.io/identity".into();
        spec.usages = vec!["client auth".into(), "server auth".into()];
        let st = RenewalStatement {
            request_name: csr.metadata.clone().unwrap().name,
            csr_sha256: certsign_evidence::sha256(
                &certsign_signer::csr::csr_der_from_pem(&srv).unwrap(),
            )
            .to_vec(),
            signer_name: "certsign.io/identity".into(),
            current_certificate_sha256: certsign_evidence::sha256(&cur_der).to_vec(),
            signed_at: Some(now_ts(0)),
        };
        req.renewal = Some(
            sign_statement(
                RENEWAL_CONTEXT,
                st.encode_to_vec(),
                &cur_key,
                vec![cur_der.clone()],
            )
            .unwrap(),
        );
    }
    let s = c.sign(req).await.unwrap_err();
    assert!(
        s.message().contains(
            "renewal: the current certificate was issued under signer name \"kubernetes.io/kube-apiserver-client\", not \"certsign.io/identity\""
        ),
        "{}",
        s.message()
    );
    // An approval statement is not a renewal statement (context separation).
    let (fresh, _) = openssl_csr(&pki, "fresh", P256, "/CN=alice/O=dev", &[]);
    let mut req = renew("n5", &fresh);
    let Some(Asked::CertificateSigningRequest(csr)) = req.request.as_ref() else {
        panic!("a certificate request")
    };
    let mut st = statement_for(csr);
    st.decision = Decision::Approve as i32;
    req.renewal.as_mut().unwrap().statement = st.encode_to_vec();
    let s = c.sign(req).await.unwrap_err();
    assert!(
        s.message().contains("evidence signature"),
        "{}",
        s.message()
    );
    // The renewal itself, once.
    let (new_csr, new_key) = openssl_csr(&pki, "new", P256, "/CN=alice/O=dev", &[]);
    let ok = c.sign(renew("n2", &new_csr)).await.unwrap().into_inner();
    assert_ne!(ok.serial_number, cur.serial_number);
    // The same proof under another uid is refused.
    let s = c.sign(renew("n3", &new_csr)).await.unwrap_err();
    assert!(
        s.message()
            .contains("renewal: the current certificate was already renewed"),
        "{}",
        s.message()
    );
    // The renewed certificate's own renewal may not reuse the issued CSR.
    let ok_der = CertificateDer::from_pem_slice(&ok.certificate)
        .unwrap()
        .to_vec();
    let ok_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(new_key).unwrap()).unwrap();
    let s = c
        .sign(renew_of(&ok_der, &ok_key, "n7", &new_csr))
        .await
        .unwrap_err();
    assert!(
        s.message().contains("already issued under uid"),
        "{}",
        s.message()
    );
}

#[tokio::test]
async fn health_is_served_reflection_is_not_and_approver_mode_trusts_the_caller() {
    let pki = init(&[]);
    let cfg = pki.config();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        "\n[[profiles]]\nsigner_name = \"example.com/auto\"\napproval = \"approver\"\nallowed_usages = [\"digital signature\", \"client auth\"]\nrequired_usages = [\"client auth\"]\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let server = serve(&pki);
    let ch = channel(&pki, &server);

    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "certsign.v1.Signer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut refl =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let s = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unimplemented);

    // approval = "approver": no statements needed, profile and CSR checks still apply.
    let mut c = certsign_proto::v1::signer_client::SignerClient::new(ch);
    let (csr, _) = openssl_csr(&pki, "auto", P256, "/CN=robot", &[]);
    let r = request(
        "a1",
        &csr,
        "example.com/auto",
        &["client auth"],
        None,
        "robot",
    );
    c.sign(sign_request(r, vec![])).await.unwrap();
    let r = request(
        "a2",
        &csr,
        "example.com/auto",
        &["server auth"],
        None,
        "robot",
    );
    let s = c.sign(sign_request(r, vec![])).await.unwrap_err();
    assert!(
        s.message()
            .contains("usage \"server auth\" is not allowed by profile example.com/auto"),
        "{}",
        s.message()
    );
    let (ca_csr, _) = openssl_csr(
        &pki,
        "autoca",
        P256,
        "/CN=robot",
        &["basicConstraints=critical,CA:TRUE"],
    );
    let r = request(
        "a3",
        &ca_csr,
        "example.com/auto",
        &["client auth"],
        None,
        "robot",
    );
    let s = c.sign(sign_request(r, vec![])).await.unwrap_err();
    assert!(
        s.message().contains("never issues CA certificates"),
        "{}",
        s.message()
    );
}

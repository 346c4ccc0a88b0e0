//! Revocation and CRLs end to end through the real daemons (`init` PKI,
//! `certsign-signer serve`, `certsign-approver serve`, mTLS), judged from
//! outside: RevokeCertificate by an admin and by the holder reaches the
//! signer, the approver publishes the signer's CRL over gRPC and plain HTTP
//! (curl), `openssl crl -verify` accepts it and `openssl verify -crl_check`
//! rejects the revoked certificate but not an unrevoked one; with two signer
//! endpoints, one of them down, the revocation reaches the other from the
//! store once it is up.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::signer_client::SignerClient;
use certsign_proto::v1::{
    CrlRequest, GetCertificateRevocationListRequest, ListCertificatesRequest, RevocationReason,
    RevocationStatement, RevokeCertificateRequest, SignRequest, sign_request,
};
use certsign_tests::process::{free_port, run};
use common::*;
use prost::Message as _;
use tonic::transport::Channel;

/// Waits (up to 60 s) until the approver's published CRL lists `serial`.
async fn published_with(c: &mut ApproverClient<Channel>, serial: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = c
            .get_certificate_revocation_list(GetCertificateRevocationListRequest {})
            .await
        {
            let r = r.into_inner();
            if crl_serials(&r.crl).iter().any(|s| s == serial) {
                assert!(!r.crl_number.is_empty());
                assert!(r.next_update.unwrap().seconds > r.this_update.unwrap().seconds);
                return r.crl;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no CRL listing {serial} was published"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `openssl verify -crl_check` of `cert_pem` against the CA and `crl_der`:
/// whether it passes, and openssl's output.
fn openssl_verify_with_crl(pki: &Pki, crl_der: &[u8], cert_pem: &str) -> (bool, String) {
    let dir = &pki.dir;
    let crl_der_path = dir.join("check.crl.der");
    let crl_pem_path = dir.join("check.crl.pem");
    let cert_path = dir.join("check.crt");
    std::fs::write(&crl_der_path, crl_der).unwrap();
    std::fs::write(&cert_path, cert_pem).unwrap();
    certsign_tests::process::run_ok(
        Command::new("openssl")
            .args(["crl", "-inform", "DER", "-in"])
            .arg(&crl_der_path)
            .arg("-out")
            .arg(&crl_pem_path),
    );
    let out = run(Command::new("openssl")
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(pki.p("ca.crt"))
        .arg("-CRLfile")
        .arg(&crl_pem_path)
        .arg(&cert_path));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn curl_crl(addr: &str, out: &Path) -> (String, String) {
    let text = certsign_tests::process::run_ok(
        Command::new("curl")
            .args(["-s", "-o"])
            .arg(out)
            .args(["-w", "%{http_code} %{content_type}"])
            .arg(format!("http://{addr}/crl")),
    );
    let (code, ty) = text.split_once(' ').unwrap_or((&text, ""));
    (code.to_string(), ty.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_certificates_are_on_the_published_crl_and_openssl_rejects_them() {
    let crl_addr = format!("127.0.0.1:{}", free_port());
    let addr = crl_addr.clone();
    let stack = Stack::start_with(move |t| {
        t.insert("crl_listen".into(), addr.into());
    });
    let pki = &stack.pki;
    let at = &stack.approver.addr;
    let admin = pki.admin();
    let alice = issued_to(pki, at, &admin, &pki.user("alice", &[]), "alice-1").await;
    let bob = issued_to(pki, at, &admin, &pki.user("bob", &[]), "bob-1").await;
    let carol = issued_to(pki, at, &admin, &pki.user("carol", &[]), "carol-1").await;

    // An admin revokes alice's certificate.
    let mut adm = client(pki, at, Some(&admin)).await;
    let revoked = adm
        .revoke_certificate(RevokeCertificateRequest {
            revocation: Some(revocation(&alice, &admin)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.status, "Revoked");
    assert_eq!(revoked.serial_number, serial_of(&alice.cert_der));
    assert_eq!(
        revoked.revocation_reason,
        RevocationReason::KeyCompromise as i32
    );
    assert!(revoked.revocation_time.is_some());
    // Bob gives his up himself: his TLS client certificate is the one
    // revoked, the statement signed with its key.
    let mut as_holder = client(pki, at, Some(&bob)).await;
    let gave_up = as_holder
        .revoke_certificate(RevokeCertificateRequest {
            revocation: Some(revocation(&bob, &bob)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gave_up.status, "Revoked");
    // A repeat answers the same revocation.
    let again = adm
        .revoke_certificate(RevokeCertificateRequest {
            revocation: Some(revocation(&alice, &admin)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.revocation_time, revoked.revocation_time);

    let crl = published_with(&mut adm, &serial_of(&bob.cert_der)).await;
    let on_it = crl_serials(&crl);
    assert!(on_it.contains(&serial_of(&alice.cert_der)), "{on_it:?}");
    assert!(!on_it.contains(&serial_of(&carol.cert_der)), "{on_it:?}");
    let (ok, text) = openssl_verify_with_crl(pki, &crl, &alice.cert_pem);
    assert!(!ok && text.contains("revoked"), "{text}");
    let (ok, text) = openssl_verify_with_crl(pki, &crl, &carol.cert_pem);
    assert!(ok, "{text}");

    // The same CRL over plain HTTP, as curl sees it.
    let fetched = pki.dir.join("fetched.crl");
    let (code, ty) = curl_crl(&crl_addr, &fetched);
    assert_eq!(
        (code.as_str(), ty.as_str()),
        ("200", "application/pkix-crl")
    );
    let served = std::fs::read(&fetched).unwrap();
    assert!(crl_serials(&served).contains(&serial_of(&alice.cert_der)));
    // openssl checks its signature with the CA.
    let v = run(Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-verify", "-in"])
        .arg(&fetched)
        .arg("-CAfile")
        .arg(pki.p("ca.crt")));
    assert!(
        v.status.success() && String::from_utf8_lossy(&v.stderr).contains("verify OK"),
        "{v:?}"
    );

    // The inventory says so.
    let (items, _) = adm
        .list_certificates(ListCertificatesRequest::default())
        .await
        .map(|r| {
            let r = r.into_inner();
            (r.items, r.continue_token)
        })
        .unwrap();
    let status = |n: &str| {
        items
            .iter()
            .find(|i| i.request_name == n)
            .unwrap()
            .status
            .clone()
    };
    assert_eq!(status("alice-1"), "Revoked");
    assert_eq!(status("bob-1"), "Revoked");
    assert_eq!(status("carol-1"), "Valid");
}

/// A CRL straight from the signer at `addr`, asked as the approver.
async fn signer_crl(pki: &Pki, addr: &str) -> Option<Vec<u8>> {
    let ch = certsign_tests::grpc::channel(addr, &pki.ca_pem(), Some(&pki.approver_ident()));
    SignerClient::new(ch)
        .sign(SignRequest {
            request: Some(sign_request::Request::Crl(CrlRequest {})),
            ..Default::default()
        })
        .await
        .ok()
        .map(|r| r.into_inner().crl)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_reaches_a_signer_that_was_down_from_the_store() {
    let pki = Pki::init();
    let signer_a = start_signer(&pki, "127.0.0.1:0");
    // Signer B: the same CA and profiles, its own journal, not started yet.
    let b_addr = format!("127.0.0.1:{}", free_port());
    let b_toml = pki.p("signer/signer-b.toml");
    std::fs::copy(pki.signer_toml(), &b_toml).unwrap();
    edit_toml(&b_toml, |t| {
        t.insert("listen".into(), b_addr.clone().into());
        t.insert("journal".into(), "journal-b.jsonl".into());
    });
    let endpoints = vec![
        format!("https://{}", signer_a.addr),
        format!("https://{b_addr}"),
    ];
    let approver = certsign_tests::stack::approver_spawn(&pki, &signer_a.addr, move |t| {
        let s = t.get_mut("signer").unwrap().as_table_mut().unwrap();
        s.insert(
            "endpoints".into(),
            toml::Value::Array(endpoints.into_iter().map(Into::into).collect()),
        );
    })
    .fresh_log()
    .start();
    let admin = pki.admin();
    let alice = issued_to(&pki, &approver.addr, &admin, &pki.user("alice", &[]), "a1").await;
    let serial = serial_of(&alice.cert_der);

    // B is down: the revocation is answered once A journaled it.
    let mut adm = client(&pki, &approver.addr, Some(&admin)).await;
    let revoked = adm
        .revoke_certificate(RevokeCertificateRequest {
            revocation: Some(revocation(&alice, &admin)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.status, "Revoked");
    let crl = published_with(&mut adm, &serial).await;
    assert!(crl_serials(&crl).contains(&serial));
    assert!(crl_serials(&signer_crl(&pki, &signer_a.addr).await.unwrap()).contains(&serial));

    // B comes up knowing nothing of it; the approver delivers it from the
    // store, unasked.
    let _signer_b = Daemon::serve(&signer_bin(), &b_toml, &pki.p("signer-b.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(crl) = signer_crl(&pki, &b_addr).await
            && crl_serials(&crl).contains(&serial)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "signer B never received the revocation"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // B's own journal has it (not only a CRL built elsewhere).
    let journal = std::fs::read_to_string(pki.p("signer/journal-b.jsonl")).unwrap();
    assert!(journal.contains(&serial), "{journal}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signer_refusal_is_passed_on_and_the_revocation_is_not_held() {
    let stack = Stack::start();
    let pki = &stack.pki;
    let at = &stack.approver.addr;
    let admin = pki.admin();
    let alice = issued_to(pki, at, &admin, &pki.user("alice", &[]), "alice-1").await;
    let serial = serial_of(&alice.cert_der);
    let mut adm = client(pki, at, Some(&admin)).await;

    // A stale statement: the approver stores it, the signer refuses it
    // (its own freshness rule), and the caller gets the signer's answer.
    let st = RevocationStatement {
        serial_number: serial.clone(),
        certificate_sha256: certsign_tests::evidence::sha256(&alice.cert_der),
        reason: RevocationReason::Superseded as i32,
        signed_at: Some(certsign_tests::grpc::ts(-2 * 86400)),
    };
    let stale = certsign_tests::evidence::sign_bytes(
        certsign_evidence::REVOCATION_CONTEXT,
        st.encode_to_vec(),
        &admin.key(),
        vec![admin.cert_der.clone()],
    );
    let refused = adm
        .revoke_certificate(RevokeCertificateRequest {
            revocation: Some(stale),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.code(),
            tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
        ),
        "{refused:?}"
    );
    assert!(!refused.message().is_empty());
    let one = ListCertificatesRequest {
        serial_number: serial.clone(),
        ..Default::default()
    };
    let items = adm
        .list_certificates(one.clone())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items[0].status, "Valid");

    // A fresh statement replaces the refused one.
    let revoked = adm
        .revoke_certificate(RevokeCertificateRequest {
            revocation: Some(revocation(&alice, &admin)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.status, "Revoked");
    assert_eq!(
        revoked.revocation_reason,
        RevocationReason::KeyCompromise as i32
    );
    let items = adm.list_certificates(one).await.unwrap().into_inner().items;
    assert_eq!(items[0].status, "Revoked");
}

/// The approver's published CRL (its DER and number), if any.
async fn published(c: &mut ApproverClient<Channel>) -> Option<(Vec<u8>, String)> {
    c.get_certificate_revocation_list(GetCertificateRevocationListRequest {})
        .await
        .ok()
        .map(|r| {
            let r = r.into_inner();
            (r.crl, r.crl_number)
        })
}

/// The only signer left refuses a revocation another signer journaled (a
/// statement too old for it): its CRLs omit that revocation, so the
/// approver keeps serving the last CRL that lists it and never publishes
/// one of them.
/// A second signer B beside `signer_a`: same CA and profiles, its own
/// address, and whatever `edit` sets in its config. Returns B's address
/// and config path.
fn second_signer(pki: &Pki, edit: impl FnOnce(&mut toml::Table)) -> (String, std::path::PathBuf) {
    let b_addr = format!("127.0.0.1:{}", free_port());
    let b_toml = pki.p("signer/signer-b.toml");
    std::fs::copy(pki.signer_toml(), &b_toml).unwrap();
    edit_toml(&b_toml, |t| {
        t.insert("listen".into(), b_addr.clone().into());
        edit(t);
    });
    (b_addr, b_toml)
}

/// An approver refreshing its CRL every second from B first, then A; it
/// issues alice a certificate, revokes it and waits until the revocation is
/// on a published CRL. Returns the approver, the admin's client and the
/// revoked serial.
async fn revoked_on_two_signers(
    pki: &Pki,
    a_addr: &str,
    b_addr: &str,
) -> (Daemon, ApproverClient<Channel>, String) {
    let endpoints = vec![format!("https://{b_addr}"), format!("https://{a_addr}")];
    let approver = certsign_tests::stack::approver_spawn(pki, a_addr, move |t| {
        t.insert("crl_refresh".into(), "1s".into());
        let s = t.get_mut("signer").unwrap().as_table_mut().unwrap();
        s.insert(
            "endpoints".into(),
            toml::Value::Array(endpoints.into_iter().map(Into::into).collect()),
        );
    })
    .fresh_log()
    .start();
    let admin = pki.admin();
    let alice = issued_to(pki, &approver.addr, &admin, &pki.user("alice", &[]), "a1").await;
    let serial = serial_of(&alice.cert_der);
    let mut adm = client(pki, &approver.addr, Some(&admin)).await;
    adm.revoke_certificate(RevokeCertificateRequest {
        revocation: Some(revocation(&alice, &admin)),
    })
    .await
    .unwrap();
    published_with(&mut adm, &serial).await;
    (approver, adm, serial)
}

/// For several refresh periods the approver keeps serving the last CRL that
/// lists `serial`, unchanged.
async fn keeps_serving_the_crl_with(adm: &mut ApproverClient<Channel>, serial: &str) {
    let (before, number) = published(adm).await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (now, n) = published(adm).await.unwrap();
        assert!(
            crl_serials(&now).contains(&serial.to_owned()),
            "published a CRL omitting {serial}"
        );
        assert_eq!(
            (now.as_slice(), n.as_str()),
            (before.as_slice(), number.as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crl_omitting_a_held_revocation_is_never_published() {
    let pki = Pki::init();
    let mut signer_a = start_signer(&pki, "127.0.0.1:0");
    // B: same CA and profiles, own journal, and statements older than 1 s
    // are stale to it.
    let (b_addr, b_toml) = second_signer(&pki, |t| {
        t.insert("journal".into(), "journal-b.jsonl".into());
        t.insert("statement_max_age".into(), "1s".into());
    });
    let (_approver, mut adm, serial) = revoked_on_two_signers(&pki, &signer_a.addr, &b_addr).await;

    // A goes away; B comes up after the statement went stale for it.
    signer_a.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _signer_b = Daemon::serve(&signer_bin(), &b_toml, &pki.p("signer-b.log"));
    // B signs CRLs, without the revocation (it refused it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let b_crl = loop {
        if let Some(crl) = signer_crl(&pki, &b_addr).await {
            break crl;
        }
        assert!(Instant::now() < deadline, "signer B never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!crl_serials(&b_crl).contains(&serial));
    let journal = std::fs::read_to_string(pki.p("signer/journal-b.jsonl")).unwrap_or_default();
    assert!(!journal.contains(&format!("\"{serial}\"")), "{journal}");

    // For several refresh periods the approver serves the last CRL that
    // lists the revocation, never one of B's.
    keeps_serving_the_crl_with(&mut adm, &serial).await;
    // The inventory still holds the revocation.
    let items = adm
        .list_certificates(ListCertificatesRequest {
            serial_number: serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items[0].status, "Revoked");
}

/// A signer restored without its journal (an old backup) has lost a
/// revocation the approver recorded as delivered to it: its CRLs omit it,
/// and the approver's check refuses to publish them.
#[tokio::test(flavor = "multi_thread")]
async fn a_crl_from_a_signer_that_lost_a_revocation_is_never_published() {
    let pki = Pki::init();
    let mut signer_a = start_signer(&pki, "127.0.0.1:0");
    let b_dir = pki.p("signer-b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let journal_path = b_dir.join("journal.jsonl").display().to_string();
    let (b_addr, b_toml) = second_signer(&pki, |t| {
        t.insert("journal".into(), journal_path.into());
    });
    let mut signer_b = Daemon::serve(&signer_bin(), &b_toml, &pki.p("signer-b.log"));
    let (_approver, mut adm, serial) = revoked_on_two_signers(&pki, &signer_a.addr, &b_addr).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !signer_crl(&pki, &b_addr)
        .await
        .is_some_and(|c| crl_serials(&c).contains(&serial))
    {
        assert!(Instant::now() < deadline, "signer B never journaled it");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A goes away; B comes back from a backup without the revocation.
    signer_a.kill();
    signer_b.kill();
    std::fs::remove_dir_all(&b_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let _signer_b = Daemon::serve(&signer_bin(), &b_toml, &pki.p("signer-b2.log"));
    let b_crl = signer_crl(&pki, &b_addr).await.unwrap();
    assert!(!crl_serials(&b_crl).contains(&serial));

    // For several refresh periods the approver serves the last CRL that
    // lists the revocation, never one of B's, and says why in its log.
    keeps_serving_the_crl_with(&mut adm, &serial).await;
    let log = std::fs::read_to_string(pki.p("approver.log")).unwrap();
    assert!(
        log.contains("refusing to publish this CRL") && log.contains(&serial),
        "{log}"
    );
}

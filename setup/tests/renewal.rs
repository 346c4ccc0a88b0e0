//! Renewal never widens what was approved (issue 28): direct `Sign` calls as
//! the approver over real mTLS, current certificates issued by the real
//! signer, judged by openssl and pkilint. Each escalation a holder could try
//! without an admin is refused with a message naming the rule; one renewal
//! proof yields one certificate, also under 16 concurrent calls and across a
//! restart. Also at the boundary: strict DER, bounded refusal lines, and
//! separation of duties by subject.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime};

use certsign_evidence::{Lineage, RENEWAL_CONTEXT, sign_statement};
use certsign_proto::v1::signer_client::SignerClient;
use certsign_proto::v1::{RenewalStatement, SignRequest, SignResponse};
use common::*;
use prost::Message;
use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tonic::Code;
use tonic::transport::Channel;
use x509_parser::prelude::{FromDer, X509Certificate};

const IDENTITY: &str = "certsign.io/identity";
const SERVING: &str = "kubernetes.io/kubelet-serving";

/// Profiles beside init's: one that can issue a certificate with no EKU,
/// one with a three-second renewal horizon and a CRL distribution point, one
/// whose renewals never end.
const PROFILES: &str = r#"
[[profiles]]
signer_name = "example.com/signing"
approver_groups = ["system:masters"]
allow_renewal = true
allowed_usages = ["digital signature", "client auth", "server auth"]

[[profiles]]
signer_name = "example.com/brief"
approver_groups = ["system:masters"]
allow_renewal = true
renewal_horizon = "3s"
crl_distribution_point = "http://crl.example.test/ca.crl"
allowed_usages = ["digital signature", "client auth"]

[[profiles]]
signer_name = "example.com/endless"
approver_groups = ["system:masters"]
allow_renewal = true
renewal_horizon = "none"
allowed_usages = ["digital signature", "client auth"]
"#;

fn init_with_profiles() -> Pki {
    let pki = init(&[]);
    let mut text = std::fs::read_to_string(pki.config()).unwrap();
    text.push_str(PROFILES);
    std::fs::write(pki.config(), text).unwrap();
    pki
}

/// A certificate this signer issued, with its key.
struct Holder {
    der: Vec<u8>,
    key: KeyPair,
}

fn leaf_der(pem: &[u8]) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem).unwrap().to_vec()
}

/// notAfter − notBefore, seconds.
fn lifetime(der: &[u8]) -> i64 {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    c.validity().not_after.timestamp() - c.validity().not_before.timestamp()
}

fn lineage(der: &[u8]) -> Lineage {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    Lineage::of_certificate(&c).unwrap().unwrap()
}

/// Issue `uid` with an admin's approval; the holder and the answer.
#[allow(clippy::too_many_arguments)]
async fn issue(
    c: &mut SignerClient<Channel>,
    pki: &Pki,
    uid: &str,
    signer: &str,
    subj: &str,
    addext: &[&str],
    usages: &[&str],
    exp: Option<i32>,
) -> Holder {
    let (csr, key) = openssl_csr(pki, uid, P256, subj, addext);
    let req = request(uid, &csr, signer, usages, exp, "alice");
    let resp = c
        .sign(sign_request(req.clone(), vec![approve(pki, &req)]))
        .await
        .unwrap()
        .into_inner();
    Holder {
        der: leaf_der(&resp.certificate),
        key: KeyPair::from_pem(&std::fs::read_to_string(key).unwrap()).unwrap(),
    }
}

/// A renewal of `h` for request `uid` with `csr`, proven with `h`'s key.
fn renew(
    h: &Holder,
    uid: &str,
    csr: &[u8],
    signer: &str,
    usages: &[&str],
    exp: Option<i32>,
) -> SignRequest {
    let req = request(uid, csr, signer, usages, exp, "alice");
    let st = RenewalStatement {
        request_name: req.metadata.clone().unwrap().name,
        csr_sha256: certsign_evidence::sha256(
            &certsign_signer::csr::csr_der_from_pem(csr).unwrap(),
        )
        .to_vec(),
        signer_name: signer.into(),
        current_certificate_sha256: certsign_evidence::sha256(&h.der).to_vec(),
        signed_at: Some(now_ts(0)),
    };
    let proof = sign_statement(
        RENEWAL_CONTEXT,
        st.encode_to_vec(),
        &h.key,
        vec![h.der.clone()],
    )
    .unwrap();
    let mut r = sign_request(req, vec![]);
    r.renewal = Some(proof);
    r
}

fn refused(r: Result<tonic::Response<SignResponse>, tonic::Status>, says: &str) {
    let s = r.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{}", s.message());
    assert!(
        s.message().contains(says),
        "wanted {says:?}: {}",
        s.message()
    );
}

fn openssl_text(pki: &Pki, name: &str, der: &[u8]) -> String {
    let path = pki.p(&format!("{name}.crt"));
    std::fs::write(&path, certsign_keys::pem("CERTIFICATE", der).unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pkilint_clean(pki: &Pki, name: &str, der: &[u8]) {
    let path = pki.p(&format!("{name}.pem"));
    std::fs::write(&path, certsign_keys::pem("CERTIFICATE", der).unwrap()).unwrap();
    let out = Command::new("lint_pkix_cert")
        .args(["lint", "-s", "WARNING", "-f", "JSON"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pkilint findings for {name}: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn renewal_never_widens_what_was_approved() {
    let pki = init_with_profiles();
    let server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let before = SystemTime::now() - Duration::from_secs(1);

    // A 10-minute certificate an admin approved; it records its lineage.
    let ten = issue(
        &mut c,
        &pki,
        "ten",
        CLIENT,
        "/CN=alice/O=dev",
        &[],
        &["client auth"],
        Some(600),
    )
    .await;
    assert_eq!(
        lifetime(&ten.der),
        900,
        "10 minutes plus the 5-minute backdate"
    );
    let lin = lineage(&ten.der);
    assert_eq!(lin.signer_name, CLIENT);
    assert!(lin.approved_at >= before && lin.approved_at <= SystemTime::now());
    pkilint_clean(&pki, "ten", &ten.der);

    // 10 minutes → one year, asked for explicitly (certctl renew --expiration 8760h).
    let (csr, _) = openssl_csr(&pki, "year", P256, "/CN=alice/O=dev", &[]);
    refused(
        c.sign(renew(
            &ten,
            "year",
            &csr,
            CLIENT,
            &["client auth"],
            Some(8760 * 3600),
        ))
        .await,
        "renewal: expiration_seconds 31536000 exceeds the current certificate's lifetime (900s)",
    );
    // Under another signer name: the identity profile would issue server auth.
    refused(
        c.sign(renew(&ten, "other", &csr, IDENTITY, &["client auth"], None))
            .await,
        "renewal: the current certificate was issued under signer name \"kubernetes.io/kube-apiserver-client\", not \"certsign.io/identity\"",
    );
    // A key usage the current certificate lacks.
    refused(
        c.sign(renew(
            &ten,
            "ku",
            &csr,
            CLIENT,
            &["digital signature", "client auth"],
            None,
        ))
        .await,
        "renewal: usage \"digital signature\" is not in the current certificate's key usage",
    );
    // Without an expiration: the current lifetime, never the profile's year.
    let renewed = c
        .sign(renew(&ten, "plain", &csr, CLIENT, &["client auth"], None))
        .await
        .unwrap()
        .into_inner();
    let renewed = leaf_der(&renewed.certificate);
    assert_eq!(lifetime(&renewed), 900);
    assert_eq!(
        lineage(&renewed),
        lin,
        "a renewal copies the lineage unchanged"
    );
    pkilint_clean(&pki, "renewed", &renewed);

    // EKU gained when the current certificate has no EKU extension.
    let signing = issue(
        &mut c,
        &pki,
        "sig",
        "example.com/signing",
        "/CN=alice/O=dev",
        &[],
        &["digital signature"],
        None,
    )
    .await;
    let t = openssl_text(&pki, "sig", &signing.der);
    assert!(
        t.contains("Digital Signature") && !t.contains("Extended Key Usage"),
        "{t}"
    );
    let (csr, _) = openssl_csr(&pki, "sig2", P256, "/CN=alice/O=dev", &[]);
    refused(
        c.sign(renew(
            &signing,
            "sig2",
            &csr,
            "example.com/signing",
            &["digital signature", "server auth", "client auth"],
            None,
        ))
        .await,
        "renewal: usage \"server auth\" is not in the current certificate's extended key usages",
    );

    // A kubelet-serving certificate (allow_renewal = false) renewed under a
    // profile that does renew.
    let (csr, key) = openssl_csr(
        &pki,
        "node",
        P256,
        "/O=system:nodes/CN=system:node:n1",
        &["subjectAltName=IP:127.0.0.1"],
    );
    let req = request(
        "node",
        &csr,
        SERVING,
        &["digital signature", "server auth"],
        None,
        "system:node:n1",
    );
    let resp = c
        .sign(sign_request(req.clone(), vec![approve(&pki, &req)]))
        .await
        .unwrap()
        .into_inner();
    let node = Holder {
        der: leaf_der(&resp.certificate),
        key: KeyPair::from_pem(&std::fs::read_to_string(key).unwrap()).unwrap(),
    };
    let (csr, _) = openssl_csr(
        &pki,
        "node2",
        P256,
        "/O=system:nodes/CN=system:node:n1",
        &["subjectAltName=IP:127.0.0.1"],
    );
    let usages = &["digital signature", "server auth"];
    refused(
        c.sign(renew(&node, "node2", &csr, IDENTITY, usages, None))
            .await,
        "renewal: the current certificate was issued under signer name \"kubernetes.io/kubelet-serving\"",
    );
    refused(
        c.sign(renew(&node, "node3", &csr, SERVING, usages, None))
            .await,
        "renewal: profile kubernetes.io/kubelet-serving does not accept renewals",
    );

    // A certificate without a lineage (minted with the CA key, not issued
    // by this signer's rules) is never renewed.
    let (key, der) = mint(&pki, "alice", &["dev"], -1, 1);
    let minted = Holder { der, key };
    let (csr, _) = openssl_csr(&pki, "minted", P256, "/CN=alice/O=dev", &[]);
    refused(
        c.sign(renew(
            &minted,
            "minted",
            &csr,
            CLIENT,
            &["client auth"],
            None,
        ))
        .await,
        "renewal: the current certificate carries no lineage",
    );
    refused(
        c.sign(renew(
            &minted,
            "minted",
            &csr,
            CLIENT,
            &["client auth"],
            None,
        ))
        .await,
        "create a new request and have it approved",
    );
}

#[tokio::test]
async fn a_line_of_renewals_ends_at_the_renewal_horizon_unless_it_is_none() {
    let pki = init_with_profiles();
    let server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let usages = &["digital signature", "client auth"];
    let brief = issue(
        &mut c,
        &pki,
        "brief",
        "example.com/brief",
        "/CN=alice",
        &[],
        usages,
        None,
    )
    .await;
    let endless = issue(
        &mut c,
        &pki,
        "endless",
        "example.com/endless",
        "/CN=alice",
        &[],
        usages,
        None,
    )
    .await;
    // The profile's CRL distribution point is in the certificate.
    let t = openssl_text(&pki, "brief", &brief.der);
    assert!(
        t.contains("X509v3 CRL Distribution Points")
            && t.contains("URI:http://crl.example.test/ca.crl"),
        "{t}"
    );
    pkilint_clean(&pki, "brief", &brief.der);
    assert!(!openssl_text(&pki, "endless", &endless.der).contains("CRL Distribution"));

    // Inside the horizon the renewal is issued and keeps the approval time.
    let (csr, _) = openssl_csr(&pki, "b1", P256, "/CN=alice", &[]);
    let r = c
        .sign(renew(&brief, "b1", &csr, "example.com/brief", usages, None))
        .await
        .unwrap()
        .into_inner();
    let next = Holder {
        der: leaf_der(&r.certificate),
        key: KeyPair::from_pem(&std::fs::read_to_string(pki.p("b1.key")).unwrap()).unwrap(),
    };
    assert_eq!(lineage(&next.der), lineage(&brief.der));

    std::thread::sleep(Duration::from_millis(4100));
    let (csr, _) = openssl_csr(&pki, "b2", P256, "/CN=alice", &[]);
    refused(
        c.sign(renew(&next, "b2", &csr, "example.com/brief", usages, None))
            .await,
        "longer ago than renewal_horizon 3s of profile example.com/brief: create a new request and have it approved",
    );
    let (csr, _) = openssl_csr(&pki, "e1", P256, "/CN=alice", &[]);
    c.sign(renew(
        &endless,
        "e1",
        &csr,
        "example.com/endless",
        usages,
        None,
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn one_renewal_proof_yields_one_certificate_under_16_concurrent_calls_and_a_restart() {
    let pki = init(&[]);
    let mut server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let cur = issue(
        &mut c,
        &pki,
        "cur",
        CLIENT,
        "/CN=alice/O=dev",
        &[],
        &["client auth"],
        None,
    )
    .await;
    let (same, _) = openssl_csr(&pki, "same", P256, "/CN=alice/O=dev", &[]);
    let mut reqs = Vec::new();
    for i in 0..16 {
        let csr = if i % 2 == 0 {
            same.clone()
        } else {
            openssl_csr(&pki, &format!("d{i}"), P256, "/CN=alice/O=dev", &[]).0
        };
        reqs.push((
            renew(&cur, &format!("r{i}"), &csr, CLIENT, &["client auth"], None),
            csr,
        ));
    }
    let calls: Vec<_> = reqs
        .iter()
        .map(|(r, _)| {
            let (mut c, r) = (c.clone(), r.clone());
            tokio::spawn(async move { c.sign(r).await })
        })
        .collect();
    let mut won = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        match call.await.unwrap() {
            Ok(_) => won.push(i),
            Err(s) => assert!(
                matches!(s.code(), Code::FailedPrecondition | Code::Aborted),
                "{i}: {s:?}"
            ),
        }
    }
    assert_eq!(won.len(), 1, "one renewal proof, one certificate: {won:?}");
    let w = won[0];

    // After a restart the journal still knows the certificate was renewed.
    drop(server);
    server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let (csr, _) = openssl_csr(&pki, "late", P256, "/CN=alice/O=dev", &[]);
    refused(
        c.sign(renew(&cur, "late", &csr, CLIENT, &["client auth"], None))
            .await,
        "renewal: the current certificate was already renewed (uid r",
    );
    // The winner's own retry is a replay, not a second certificate.
    let (r, csr) = &reqs[w];
    let again = c.sign(r.clone()).await.unwrap().into_inner();
    assert!(again.replayed);
    let _ = csr;
}

#[tokio::test]
async fn a_csr_that_is_not_strict_der_is_refused_before_any_rule() {
    use der::asn1::Any;
    use der::oid::ObjectIdentifier;
    use der::{Decode, Encode, Tag};
    use x509_cert::attr::AttributeTypeAndValue;
    use x509_cert::name::{Name, RelativeDistinguishedName};
    use x509_cert::request::CertReq;

    let pki = init(&[]);
    let server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let (csr, _) = openssl_csr(
        &pki,
        "a",
        P256,
        "/CN=alice",
        &["subjectAltName=DNS:a.example"],
    );
    let der = certsign_signer::csr::csr_der_from_pem(&csr).unwrap();
    let to_pem = |d: &[u8]| {
        certsign_keys::pem("CERTIFICATE REQUEST", d)
            .unwrap()
            .into_bytes()
    };
    // 2.5.4.3 (CN) with its last arc padded: 55 04 80 03. The der crate
    // keeps OID bytes as read, so this re-encodes to itself.
    let cn = ObjectIdentifier::from_bytes(&[0x55, 0x04, 0x80, 0x03]).unwrap();
    let mut req = CertReq::from_der(&der).unwrap();
    let atv = AttributeTypeAndValue {
        oid: cn,
        value: Any::new(Tag::Utf8String, b"alice".as_slice()).unwrap(),
    };
    let rdns = vec![RelativeDistinguishedName::try_from(vec![atv]).unwrap()];
    req.info.subject = Name::from_der(&rdns.to_der().unwrap()).unwrap();
    // The extensionRequest attribute type, padded the same way.
    let mut attrs = req.info.attributes.clone().into_vec();
    let mut ber = attrs[0].oid.as_bytes().to_vec();
    ber.insert(ber.len() - 1, 0x80);
    attrs[0].oid = ObjectIdentifier::from_bytes(&ber).unwrap();
    let mut only_attr = CertReq::from_der(&der).unwrap();
    only_attr.info.attributes = attrs.try_into().unwrap();
    // A non-minimal length (long form for a short length) on the signature.
    let mut long_len = der.clone();
    let sig_at = long_len.len() - (req.signature.raw_bytes().len() + 1) - 2;
    assert_eq!(long_len[sig_at], 0x03, "the signature BIT STRING");
    long_len.insert(sig_at + 1, 0x81);
    assert!(
        long_len[1] == 0x81 && long_len[2] < 0xff,
        "a one-byte outer length"
    );
    long_len[2] += 1;
    for (i, bad) in [req.to_der().unwrap(), only_attr.to_der().unwrap(), long_len]
        .into_iter()
        .enumerate()
    {
        let r = request(
            &format!("der{i}"),
            &to_pem(&bad),
            CLIENT,
            &["client auth"],
            None,
            "alice",
        );
        let s = c
            .sign(sign_request(r.clone(), vec![approve(&pki, &r)]))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{i}: {}", s.message());
        assert!(
            s.message().starts_with("spec.request: not strict DER: "),
            "{i}: checked before the signature and every rule: {}",
            s.message()
        );
    }
    // The request as openssl made it is issued.
    let r = request("good", &csr, CLIENT, &["client auth"], None, "alice");
    c.sign(sign_request(r.clone(), vec![approve(&pki, &r)]))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_refusal_writes_bounded_peer_strings_to_the_journal_and_the_log() {
    let pki = init(&[]);
    let log = pki.p("bounded.log");
    let server = certsign_tests::process::Spawn::new(BIN, &log)
        .args(["serve", "--config", pki.config().to_str().unwrap()])
        .start();
    let mut c = client(&pki, &server).await;
    let huge = "u".repeat(1 << 20);
    let (csr, _) = openssl_csr(&pki, "h", P256, "/CN=alice", &[]);
    let mut r = request(&huge, &csr, CLIENT, &["client auth"], None, &huge);
    r.metadata.as_mut().unwrap().name = "é".repeat(1 << 19);
    // No approval: refused, and journaled.
    let s = c.sign(sign_request(r, vec![])).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{}", s.message());
    let journal = std::fs::read_to_string(pki.p("signer/journal.jsonl")).unwrap();
    let last = journal.lines().last().unwrap();
    assert!(last.len() < 4096, "journal line of {} bytes", last.len());
    let line: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(line["event"], "refused");
    let uid = line["uid"].as_str().unwrap();
    assert!(
        uid.starts_with(&"u".repeat(256)) && uid.contains("bytes cut]"),
        "{uid}"
    );
    let name = line["name"].as_str().unwrap();
    assert!(name.len() <= 256 + 32 && name.starts_with('é'), "{name}");
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    let refused = text.lines().find(|l| l.contains("refused")).unwrap();
    assert!(refused.len() < 4096, "log line of {} bytes", refused.len());
    assert!(
        text.lines().all(|l| l.len() < 8192),
        "an unbounded log line"
    );
}

#[tokio::test]
async fn an_admin_may_not_approve_a_certificate_naming_their_own_username() {
    let pki = init(&[]);
    let server = serve(&pki);
    let mut c = client(&pki, &server).await;
    // alice asks for a certificate whose CN is the init admin's username.
    let (csr, _) = openssl_csr(&pki, "adm", P256, "/CN=admin/O=dev", &[]);
    let r = request("adm", &csr, CLIENT, &["client auth"], None, "alice");
    let s = c
        .sign(sign_request(r.clone(), vec![approve(&pki, &r)]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{}", s.message());
    assert!(
        s.message().contains(
            "separation of duties: admin \"admin\" may not approve a request whose subject common name is their own username"
        ),
        "{}",
        s.message()
    );
    // The same request for another subject is issued.
    let (csr, _) = openssl_csr(&pki, "bob", P256, "/CN=bob/O=dev", &[]);
    let r = request("bob", &csr, CLIENT, &["client auth"], None, "alice");
    c.sign(sign_request(r.clone(), vec![approve(&pki, &r)]))
        .await
        .unwrap();
}

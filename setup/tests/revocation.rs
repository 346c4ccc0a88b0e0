//! Revocation and CRLs over real mTLS on loopback: admin and holder
//! revocations journaled once per serial, forged revocations refused (and
//! journaled as refusals), revocations surviving restarts and kill -9, and
//! the CRLs judged by openssl, pkilint and Python `cryptography`.
#![allow(clippy::unwrap_used)]

mod common;

use certsign_proto::v1::RevocationReason as Reason;
use certsign_proto::v1::{RenewalStatement, SignRequest};
use common::*;
use prost::Message as _;
use tonic::Code;

const KEY_COMPROMISE: i32 = Reason::KeyCompromise as i32;

/// The journal's lines with this event tag.
fn journal_events(pki: &Pki, event: &str) -> Vec<String> {
    let text = std::fs::read_to_string(pki.p("signer/journal.jsonl")).unwrap();
    let tag = format!("\"event\":\"{event}\"");
    text.lines()
        .filter(|l| l.contains(&tag))
        .map(str::to_owned)
        .collect()
}

fn audit_verify(pki: &Pki) {
    let out = run(&[
        "audit",
        "verify",
        "--config",
        pki.config().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A renewal of `cur` (CLIENT allows renewals) under `uid`.
fn renewal(pki: &Pki, uid: &str, cn: &str, cur: &[u8], key: &rcgen::KeyPair) -> SignRequest {
    let (csr, _) = openssl_csr(pki, uid, P256, &format!("/CN={cn}/O=dev"), &[]);
    let req = request(uid, &csr, CLIENT, &["client auth"], Some(3600), cn);
    let der = certsign_signer::csr::csr_der_from_pem(&csr).unwrap();
    let st = RenewalStatement {
        request_name: req.metadata.clone().unwrap().name,
        csr_sha256: certsign_evidence::sha256(&der).to_vec(),
        signer_name: CLIENT.into(),
        current_certificate_sha256: certsign_evidence::sha256(cur).to_vec(),
        signed_at: Some(now_ts(0)),
    };
    let proof = certsign_evidence::sign_statement(
        certsign_evidence::RENEWAL_CONTEXT,
        st.encode_to_vec(),
        key,
        vec![cur.to_vec()],
    )
    .unwrap();
    SignRequest {
        renewal: Some(proof),
        ..sign_request(req, vec![])
    }
}

#[tokio::test]
async fn admin_and_holder_revocations_are_journaled_once_and_listed_on_every_crl() {
    let pki = init(&[]);
    let mut server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let (a, a_key) = issue_client(&pki, &mut c, "a", "alice").await;
    let (b, b_key) = issue_client(&pki, &mut c, "b", "bob").await;
    let (valid, _) = issue_client(&pki, &mut c, "v", "vera").await;
    let (admin_key, admin_cert) = admin(&pki);

    // Before any revocation: an empty CRL every judge accepts.
    let (_, pem) = fetch_crl(&pki, &mut c, "crl0").await;
    let py = judge_crl(&pki, &pem, &[], &[&a, &b, &valid]);
    assert_eq!(py.lines().count(), 1, "no entries: {py}");
    let n0 = crl_number(&py);

    // An admin allowed for the certificate's signer name revokes `a`.
    let st = revocation_statement(&a, KEY_COMPROMISE, 0);
    let first = c
        .sign(revocation_request(
            sign_revocation(&st, &admin_key, &admin_cert),
            &a,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.serial_number, serial_of(&a));
    assert!(!first.replayed);
    let revoked_at = first.time.unwrap();
    // A repeat (another statement, another reason) is the first revocation.
    let st = revocation_statement(&a, Reason::Superseded as i32, 0);
    let again = c
        .sign(revocation_request(
            sign_revocation(&st, &admin_key, &admin_cert),
            &a,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.time.unwrap(), revoked_at);
    // The holder of `b` gives it up with its own key (reason unspecified).
    let st = revocation_statement(&b, Reason::Unspecified as i32, 0);
    let holder = c
        .sign(revocation_request(sign_revocation(&st, &b_key, &b), &b))
        .await
        .unwrap()
        .into_inner();
    assert!(!holder.replayed);
    assert_eq!(journal_events(&pki, "revoked").len(), 2);
    let line = journal_events(&pki, "revoked").remove(0);
    assert!(
        line.contains(&serial_of(&a)) && line.contains("\"by\":\"admin admin\""),
        "{line}"
    );
    audit_verify(&pki);

    // A revoked certificate is not renewed.
    let s = c
        .sign(renewal(&pki, "ra", "alice", &a, &a_key))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(s.message().contains("is revoked"), "{}", s.message());

    let (_, pem) = fetch_crl(&pki, &mut c, "crl1").await;
    let py = judge_crl(&pki, &pem, &[&a, &b], &[&valid]);
    assert!(
        py.contains(&format!("{} key_compromise", serial_of(&a))),
        "{py}"
    );
    assert!(py.contains(&format!("{} -", serial_of(&b))), "{py}");
    let n1 = crl_number(&py);
    assert!(n1 > n0, "CRL numbers grow: {n0} then {n1}");

    // After kill -9 and a restart the revocations are still there, and
    // the CRL number still grows.
    server.restart();
    let mut c = client(&pki, &server).await;
    let (_, pem) = fetch_crl(&pki, &mut c, "crl2").await;
    let py = judge_crl(&pki, &pem, &[&a, &b], &[&valid]);
    let n2 = crl_number(&py);
    assert!(n2 > n1, "CRL numbers grow across a restart: {n1} then {n2}");
    let st = revocation_statement(&a, KEY_COMPROMISE, 0);
    let after = c
        .sign(revocation_request(sign_revocation(&st, &a_key, &a), &a))
        .await
        .unwrap()
        .into_inner();
    assert!(after.replayed);
    assert_eq!(after.time.unwrap(), revoked_at);
    assert_eq!(journal_events(&pki, "revoked").len(), 2);
    let s = c
        .sign(renewal(&pki, "rb", "bob", &b, &b_key))
        .await
        .unwrap_err();
    assert!(s.message().contains("is revoked"), "{}", s.message());
    audit_verify(&pki);
}

#[tokio::test]
async fn forged_revocations_are_refused_and_journaled_as_refusals() {
    let pki = init(&[]);
    let server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let (a, a_key) = issue_client(&pki, &mut c, "a", "alice").await;
    let (other_cert, _) = issue_client(&pki, &mut c, "o", "oscar").await;
    let (admin_key, admin_cert) = admin(&pki);
    let good = revocation_statement(&a, KEY_COMPROMISE, 0);

    let mut refusals = 0;
    let mut refused = async |req: SignRequest, code: Code, text: &str| {
        let s = c.sign(req).await.unwrap_err();
        assert_eq!(s.code(), code, "{}", s.message());
        assert!(s.message().contains(text), "want {text:?}: {}", s.message());
        refusals += 1;
    };

    // An approval-trust identity in a group not allowed for the profile.
    let (dev_key, dev_cert) = mint(&pki, "mallory", &["dev"], -1, 10);
    let req = revocation_request(sign_revocation(&good, &dev_key, &dev_cert), &a);
    refused(req, Code::FailedPrecondition, "no group allowed to revoke").await;
    // Another CA's admin (system:masters there).
    let other = init(&[]);
    let (o_key, o_cert) = admin(&other);
    let req = revocation_request(sign_revocation(&good, &o_key, &o_cert), &a);
    refused(req, Code::FailedPrecondition, "evidence certificate").await;
    // Wrong serial binding: another certificate's serial, another's hash.
    let mut st = good.clone();
    st.serial_number = serial_of(&other_cert);
    let req = revocation_request(sign_revocation(&st, &admin_key, &admin_cert), &a);
    refused(req, Code::FailedPrecondition, "serial_number").await;
    let mut st = good.clone();
    st.certificate_sha256 = certsign_evidence::sha256(&other_cert).to_vec();
    let req = revocation_request(sign_revocation(&st, &admin_key, &admin_cert), &a);
    refused(req, Code::FailedPrecondition, "certificate_sha256").await;
    // A statement about `a` sent with another certificate.
    let req = revocation_request(sign_revocation(&good, &admin_key, &admin_cert), &other_cert);
    refused(req, Code::FailedPrecondition, "serial_number").await;
    // Stale, and from the future.
    let st = revocation_statement(&a, KEY_COMPROMISE, -2 * 86400);
    let req = revocation_request(sign_revocation(&st, &admin_key, &admin_cert), &a);
    refused(req, Code::FailedPrecondition, "freshness").await;
    let st = revocation_statement(&a, KEY_COMPROMISE, 3600);
    let req = revocation_request(sign_revocation(&st, &a_key, &a), &a);
    refused(req, Code::FailedPrecondition, "in the future").await;
    // A certificate from another CA, revoked by its own holder.
    let (x_key, x_cert) = mint(&other, "xavier", &["dev"], -1, 10);
    let st = revocation_statement(&x_cert, KEY_COMPROMISE, 0);
    let req = revocation_request(sign_revocation(&st, &x_key, &x_cert), &x_cert);
    refused(
        req,
        Code::FailedPrecondition,
        "not a valid certificate issued by this CA",
    )
    .await;
    // An expired certificate of this CA needs no revocation.
    let (e_key, e_cert) = mint(&pki, "ernie", &["dev"], -10, -1);
    let st = revocation_statement(&e_cert, KEY_COMPROMISE, 0);
    let req = revocation_request(sign_revocation(&st, &e_key, &e_cert), &e_cert);
    refused(req, Code::FailedPrecondition, "expired").await;
    // Unknown and reserved reason numbers (certificateHold is not offered).
    for n in [6, 7, 11, -1] {
        let st = revocation_statement(&a, n, 0);
        let req = revocation_request(sign_revocation(&st, &admin_key, &admin_cert), &a);
        refused(req, Code::FailedPrecondition, &format!("reason {n} is not")).await;
    }
    // Signed by the holder's key but claiming the admin's certificate, and
    // a statement signed under another context.
    let req = revocation_request(sign_revocation(&good, &a_key, &admin_cert), &a);
    refused(req, Code::FailedPrecondition, "signature").await;
    let mut sig = sign_revocation(&good, &admin_key, &admin_cert);
    sig.signature = certsign_evidence::sign_statement(
        certsign_evidence::RENEWAL_CONTEXT,
        good.encode_to_vec(),
        &admin_key,
        vec![admin_cert.clone()],
    )
    .unwrap()
    .signature;
    refused(
        revocation_request(sig, &a),
        Code::FailedPrecondition,
        "signature",
    )
    .await;
    // No statement at all.
    let mut req = revocation_request(sign_revocation(&good, &admin_key, &admin_cert), &a);
    if let Some(certsign_proto::v1::sign_request::Request::Revocation(r)) = &mut req.request {
        r.statement = None;
    }
    refused(
        req,
        Code::InvalidArgument,
        "revocation.statement: Required value",
    )
    .await;

    let journal = std::fs::read_to_string(pki.p("signer/journal.jsonl")).unwrap();
    assert_eq!(
        journal_events(&pki, "revocation_refused").len(),
        refusals,
        "{journal}"
    );
    assert!(journal_events(&pki, "revoked").is_empty());
    // Nothing was revoked: the CRL lists nothing and `a` still verifies.
    let (_, pem) = fetch_crl(&pki, &mut c, "crl").await;
    let py = judge_crl(&pki, &pem, &[], &[&a]);
    assert_eq!(py.lines().count(), 1, "{py}");
    audit_verify(&pki);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_dropped_revocations_journal_one_line_per_serial() {
    let pki = init(&[]);
    let (admin_key, admin_cert) = admin(&pki);
    let mut certs = Vec::new();
    {
        let server = serve(&pki);
        let mut c = client(&pki, &server).await;
        for i in 0..6 {
            certs.push(
                issue_client(&pki, &mut c, &format!("c{i}"), "carol")
                    .await
                    .0,
            );
        }
        // 16 concurrent revocations of one serial: one journaled, 15 replays.
        let calls = (0..16).map(|_| {
            let mut c = c.clone();
            let st = revocation_statement(&certs[0], KEY_COMPROMISE, 0);
            let req = revocation_request(sign_revocation(&st, &admin_key, &admin_cert), &certs[0]);
            tokio::spawn(async move { c.sign(req).await.unwrap().into_inner() })
        });
        let mut answers = Vec::new();
        for call in calls.collect::<Vec<_>>() {
            answers.push(call.await.unwrap());
        }
        assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);
        assert!(answers.iter().all(|a| a.time == answers[0].time));
    }
    // A call dropped mid-way (one poll) still ends with its line indexed:
    // the retry is a replay, never a second line.
    let config = certsign_signer::config::Config::load(&pki.config()).unwrap();
    let authority = certsign_signer::authority::Authority::open(config).unwrap();
    for cert in &certs[1..] {
        let st = revocation_statement(cert, KEY_COMPROMISE, 0);
        let req = revocation_request(sign_revocation(&st, &admin_key, &admin_cert), cert);
        let Some(certsign_proto::v1::sign_request::Request::Revocation(r)) = req.request else {
            unreachable!()
        };
        let first = tokio::time::timeout(
            std::time::Duration::from_nanos(1),
            authority.revoke(&r, "certsign-approver"),
        )
        .await;
        let again = authority.revoke(&r, "certsign-approver").await.unwrap();
        if let Ok(first) = first {
            assert_eq!(first.unwrap().time, again.time);
        }
        assert!(
            again.replayed,
            "the retry of a dropped revocation journaled again"
        );
    }
    drop(authority);
    let lines = journal_events(&pki, "revoked");
    for cert in &certs {
        let n = lines
            .iter()
            .filter(|l| l.contains(&serial_of(cert)))
            .count();
        assert_eq!(n, 1, "{} has {n} revoked lines", serial_of(cert));
    }
    audit_verify(&pki);
}

/// A certificate of this CA whose lineage names `signer_name` (none for
/// `None`, as certificates issued before lineage existed), made with
/// Python `cryptography` (test setup plays the operator holding the CA key;
/// const-oid, under x509-cert, cannot encode the lineage OID's 128-bit arc).
fn with_lineage(pki: &Pki, signer_name: Option<&str>) -> Vec<u8> {
    let lineage = signer_name.map(|n| {
        let l = certsign_evidence::Lineage {
            signer_name: n.into(),
            approved_at: std::time::SystemTime::now(),
        };
        hex::encode(l.to_der().unwrap())
    });
    let script = r#"
import sys, datetime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
ca = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
ca_key = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), None)
now = datetime.datetime.now(datetime.timezone.utc)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lin"),
                  x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dev")])
b = x509.CertificateBuilder()
if len(sys.argv) > 4:
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(sys.argv[3]), bytes.fromhex(sys.argv[4]))
    b = b.add_extension(ext, critical=False)
cert = (b.subject_name(name).issuer_name(ca.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256()))
sys.stdout.write(cert.public_bytes(serialization.Encoding.DER).hex())
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(pki.p("ca.crt"))
        .arg(pki.p("signer/ca.key"))
        .arg(certsign_evidence::LINEAGE_OID)
        .args(lineage)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let der = hex::decode(String::from_utf8(out.stdout).unwrap()).unwrap();
    // The signer reads it back as this lineage.
    use x509_parser::prelude::FromDer;
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
    let read = certsign_evidence::Lineage::of_certificate(&c).unwrap();
    assert_eq!(read.map(|l| l.signer_name).as_deref(), signer_name);
    der
}

#[tokio::test]
async fn an_admin_revokes_only_certificates_of_profiles_their_groups_approve_for() {
    let pki = init(&[]);
    // A profile approved by "ops" alone: no group is allowed for every
    // profile any more, so a certificate without lineage is the holder's.
    let cfg = pki.config();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let ops = "\n[[profiles]]\nsigner_name = \"example.com/ops\"\napprover_groups = [\"ops\"]\n";
    std::fs::write(&cfg, format!("{text}{ops}")).unwrap();
    let server = serve(&pki);
    let mut c = client(&pki, &server).await;
    let (admin_key, admin_cert) = admin(&pki);
    let (ops_key, ops_cert) = mint(&pki, "olga", &["ops"], -1, 10);
    let of_ops = with_lineage(&pki, Some("example.com/ops"));
    let of_client = with_lineage(&pki, Some(CLIENT));
    let of_nobody = with_lineage(&pki, Some("example.com/gone"));
    let no_lineage = with_lineage(&pki, None);

    let mut ask = async |cert: &[u8], key: &rcgen::KeyPair, signer: &[u8]| {
        let st = revocation_statement(cert, KEY_COMPROMISE, 0);
        c.sign(revocation_request(sign_revocation(&st, key, signer), cert))
            .await
    };
    let refused = |r: Result<tonic::Response<_>, tonic::Status>, of: &str| {
        let s = r.unwrap_err();
        assert_eq!(s.code(), Code::FailedPrecondition, "{}", s.message());
        assert!(
            s.message().contains("no group allowed to revoke") && s.message().contains(of),
            "{}",
            s.message()
        );
    };
    refused(
        ask(&of_ops, &admin_key, &admin_cert).await,
        "example.com/ops",
    );
    refused(ask(&of_client, &ops_key, &ops_cert).await, CLIENT);
    refused(
        ask(&of_nobody, &admin_key, &admin_cert).await,
        "example.com/gone",
    );
    refused(
        ask(&no_lineage, &admin_key, &admin_cert).await,
        "without lineage",
    );
    assert!(ask(&of_ops, &ops_key, &ops_cert).await.is_ok());
    assert!(ask(&of_client, &admin_key, &admin_cert).await.is_ok());
    let revoked = journal_events(&pki, "revoked");
    assert_eq!(revoked.len(), 2);
    assert!(
        revoked[0].contains("\"signer_name\":\"example.com/ops\""),
        "{}",
        revoked[0]
    );
    assert!(
        revoked[1].contains("\"by\":\"admin admin\""),
        "{}",
        revoked[1]
    );
    let (_, pem) = fetch_crl(&pki, &mut c, "crl").await;
    judge_crl(
        &pki,
        &pem,
        &[&of_ops, &of_client],
        &[&of_nobody, &no_lineage],
    );
}

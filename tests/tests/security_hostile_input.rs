//! Hostile input: every case of the corpus in tests/corpus (index.tsv, made
//! by tests/scripts/gen_corpus.py) plus a few generated here (sizes that do
//! not belong in git, floods), each sent to the real services. Every one
//! must get a clear answer: the gRPC status (or `certctl apply -f` error)
//! that tests/corpus/expect.tsv records for it, with a message, never a
//! panic or a dropped connection. Afterwards a normal request still goes
//! through end to end and neither daemon died.
//!
//! `CERTSIGN_CORPUS_RECORD=1` rewrites expect.tsv from what the services
//! answered (review the diff before committing it).

#![allow(clippy::unwrap_used)]

use certsign_proto::v1::sign_request::Request;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use certsign_proto::v1::{
    CreateCertificateSigningRequestRequest, Decision, GetCertificateSigningRequestRequest,
    SignRequest,
};
use certsign_tests::grpc::{self, Ident, MintSpec, approve_request, create_request, csr, sign};
use certsign_tests::{Stack, bin, repo_root};
use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The outcome of one call, as recorded in expect.tsv.
fn outcome<T>(r: &Result<T, Status>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(s) => format!("{:?}", s.code()),
    }
}

/// A status is clear when a handler (or tonic's own framing) produced it
/// with a message, not a transport failure.
fn assert_clear<T>(id: &str, what: &str, r: &Result<T, Status>) {
    if let Err(s) = r {
        assert!(
            !s.message().trim().is_empty(),
            "{id} ({what}): {:?} without a message",
            s.code()
        );
        assert!(
            !matches!(
                s.code(),
                Code::Unknown | Code::Unavailable | Code::Cancelled
            ),
            "{id} ({what}): not a clear answer: {s:?}"
        );
    }
}

/// Raw bytes in, raw bytes out: sends a protobuf body no typed client can.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_create(ch: Channel, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut g = tonic::client::Grpc::new(ch);
    g.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/certsign.v1.Approver/CreateCertificateSigningRequest",
    );
    g.unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

struct Case {
    id: String,
    kind: String,
    file: String,
    desc: String,
}

fn read_index(corpus: &Path) -> Vec<Case> {
    std::fs::read_to_string(corpus.join("index.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, '\t').collect();
            assert_eq!(f.len(), 4, "bad index line: {l}");
            Case {
                id: f[0].into(),
                kind: f[1].into(),
                file: f[2].into(),
                desc: f[3].into(),
            }
        })
        .collect()
}

/// id → (approver, signer, cli) outcomes.
type Outcomes = BTreeMap<String, [String; 3]>;

fn read_expect(corpus: &Path) -> Outcomes {
    std::fs::read_to_string(corpus.join("expect.tsv"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                [f[1].to_string(), f[2].to_string(), f[3].to_string()],
            )
        })
        .collect()
}

/// The request the approver would hold for `csr_pem`, and a genuine admin
/// approval of it (when the PEM parses enough to hash).
fn held(uid: &str, csr_pem: &[u8], admin: &Ident) -> SignRequest {
    let mut r = create_request(&format!("{uid}-name"), csr_pem)
        .certificate_signing_request
        .unwrap();
    r.metadata.as_mut().unwrap().uid = uid.into();
    r.spec.as_mut().unwrap().username = "hostile".into();
    let approvals = match certsign_signer::csr::csr_der_from_pem(csr_pem) {
        Ok(_) => vec![sign(&grpc::statement_for(&r, Decision::Approve), admin)],
        Err(_) => vec![],
    };
    SignRequest {
        request: Some(certsign_proto::v1::sign_request::Request::CertificateSigningRequest(r)),
        approvals,
        renewal: None,
    }
}

fn apply_spec(base: &mut CreateCertificateSigningRequestRequest, json: &serde_json::Value) {
    let csr = base.certificate_signing_request.as_mut().unwrap();
    let meta = csr.metadata.as_mut().unwrap();
    let spec = csr.spec.as_mut().unwrap();
    for (k, v) in json.as_object().unwrap() {
        match k.as_str() {
            "expiration_seconds" => {
                spec.expiration_seconds = Some(i32::try_from(v.as_i64().unwrap()).unwrap())
            }
            "usages" => {
                spec.usages = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u.as_str().unwrap().to_string())
                    .collect()
            }
            "signer_name" => spec.signer_name = v.as_str().unwrap().into(),
            "name" => meta.name = v.as_str().unwrap().into(),
            "generate_name" => meta.generate_name = v.as_str().unwrap().into(),
            other => panic!("unknown spec field {other}"),
        }
    }
}

fn mutate_sign(req: &mut SignRequest, json: &serde_json::Value) {
    let Some(Request::CertificateSigningRequest(csr)) = req.request.as_mut() else {
        panic!("a certificate request")
    };
    for (k, v) in json.as_object().unwrap() {
        match (k.as_str(), v.as_str()) {
            ("drop", Some("request")) => {
                req.request = None;
                return;
            }
            ("drop", Some("metadata")) => csr.metadata = None,
            ("drop", Some("spec")) => csr.spec = None,
            ("uid", Some(s)) => csr.metadata.as_mut().unwrap().uid = s.into(),
            ("name", Some(s)) => csr.metadata.as_mut().unwrap().name = s.into(),
            ("request", Some(s)) => csr.spec.as_mut().unwrap().request = s.as_bytes().to_vec(),
            ("usages", None) => {
                csr.spec.as_mut().unwrap().usages = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u.as_str().unwrap().to_string())
                    .collect()
            }
            ("expiration_seconds", None) => {
                csr.spec.as_mut().unwrap().expiration_seconds =
                    Some(i32::try_from(v.as_i64().unwrap()).unwrap())
            }
            (other, _) => panic!("unknown sign field {other}"),
        }
    }
}

/// `certctl apply -f file` as `user`: "OK" or "error" (asserting the error
/// is one line, certctl's `error: ...` or kubectl's, and the exit code is
/// not 0).
fn certctl_apply(stack: &Stack, user_dir: &Path, file: &Path) -> String {
    let out = stack
        .certctl()
        .arg("--cert")
        .arg(user_dir.join("user.crt"))
        .arg("--key")
        .arg(user_dir.join("user.key"))
        .args(["apply", "-f"])
        .arg(file)
        .output()
        .unwrap();
    if out.status.success() {
        return "OK".into();
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{}: certctl error is not one line: {stderr}",
        file.display()
    );
    // certctl's own errors start `error: `; the server's validation and
    // NotFound answers are kubectl's lines (`The CertificateSigningRequest
    // "x" is invalid: ...`, `Error from server (...)`).
    assert!(
        lines[0].starts_with("error: ")
            || lines[0].starts_with("The CertificateSigningRequest ")
            || lines[0].starts_with("Error from server ("),
        "{}: {stderr}",
        file.display()
    );
    assert!(
        out.status.code().is_some(),
        "{}: certctl died from a signal",
        file.display()
    );
    "error".into()
}

fn user_files(dir: &Path, ident: &Ident) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("user.crt"), &ident.cert_pem).unwrap();
    std::fs::write(dir.join("user.key"), &ident.key_pem).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_gets_clear_errors_and_the_services_keep_serving() {
    let corpus = repo_root().join("tests/corpus");
    let cases = read_index(&corpus);
    let expect = read_expect(&corpus);
    let record = std::env::var("CERTSIGN_CORPUS_RECORD").is_ok_and(|v| v == "1");
    let mut stack = Stack::start();
    let admin = stack.admin_ident();
    let mut signer = stack.signer_client(Some(&stack.approver_ident()));
    let users_dir = stack.dir.join("hostile-users");
    let mut got: Outcomes = BTreeMap::new();
    let mut calls = [0usize; 3];

    for (n, c) in cases.iter().enumerate() {
        // A fresh identity per case: the per-identity limits must not turn
        // one case's answer into another's.
        let ident = stack.mint(&MintSpec::new(&format!("hostile{n}"), &[]));
        let mut user = stack.approver_client(Some(&ident));
        let path = corpus.join(&c.file);
        let mut res = ["-".to_string(), "-".to_string(), "-".to_string()];
        match c.kind.as_str() {
            "csr" => {
                let bytes = std::fs::read(&path).unwrap();
                let r = user
                    .create_certificate_signing_request(create_request(
                        &format!("case-{n}"),
                        &bytes,
                    ))
                    .await;
                assert_clear(&c.id, "approver", &r);
                res[0] = outcome(&r);
                let r = signer
                    .sign(held(&format!("corpus-{}", c.id), &bytes, &admin))
                    .await;
                assert_clear(&c.id, "signer", &r);
                res[1] = outcome(&r);
                calls[0] += 1;
                calls[1] += 1;
            }
            "spec" => {
                let json: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let (_, pem) = csr(&format!("hostile{n}"), &[]);
                let mut req = create_request(&format!("case-{n}"), &pem);
                apply_spec(&mut req, &json);
                let r = user.create_certificate_signing_request(req).await;
                assert_clear(&c.id, "approver", &r);
                res[0] = outcome(&r);
                calls[0] += 1;
            }
            "token" => {
                let value = std::fs::read_to_string(&path).unwrap();
                let (_, pem) = csr("node", &[]);
                let mut req = tonic::Request::new(create_request(&format!("case-{n}"), &pem));
                req.metadata_mut()
                    .insert("authorization", value.parse().unwrap());
                let r = stack
                    .approver_client(None)
                    .create_certificate_signing_request(req)
                    .await;
                assert_clear(&c.id, "approver", &r);
                res[0] = outcome(&r);
                calls[0] += 1;
            }
            "raw" => {
                let body = std::fs::read(&path).unwrap();
                let ch = grpc::channel(&stack.approver.addr, &stack.ca_pem(), Some(&ident));
                let r = raw_create(ch, body).await;
                assert_clear(&c.id, "approver", &r);
                res[0] = outcome(&r);
                calls[0] += 1;
            }
            "sign" => {
                let json: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let (_, pem) = csr("hostile", &[]);
                let mut req = held(&format!("corpus-{}", c.id), &pem, &admin);
                mutate_sign(&mut req, &json);
                let r = signer.sign(req).await;
                assert_clear(&c.id, "signer", &r);
                res[1] = outcome(&r);
                calls[1] += 1;
            }
            "manifest" => {
                let dir = users_dir.join(&c.id);
                user_files(&dir, &ident);
                res[2] = certctl_apply(&stack, &dir, &path);
                calls[2] += 1;
            }
            "gen" => {
                res = generated(&stack, &c.id, &ident, &admin, &users_dir).await;
                calls[0] += usize::from(res[0] != "-");
                calls[1] += usize::from(res[1] != "-");
                calls[2] += usize::from(res[2] != "-");
            }
            other => panic!("{}: unknown kind {other}", c.id),
        }
        let key = format!("{}/{}", c.kind, c.id);
        println!(
            "| {key} | {} | {} | {} | {} |",
            c.desc, res[0], res[1], res[2]
        );
        assert!(got.insert(key.clone(), res).is_none(), "{key} twice");
    }

    // Everyone else is still served: both daemons alive, a normal request
    // created, approved and issued.
    assert!(stack.approver.is_running(), "the approver died");
    assert!(stack.signer.is_running(), "the signer died");
    let carol = stack.mint(&MintSpec::new("carol", &[]));
    let mut c = stack.approver_client(Some(&carol));
    let (_, pem) = csr("carol", &[]);
    let created = c
        .create_certificate_signing_request(create_request("after-corpus", &pem))
        .await
        .unwrap()
        .into_inner();
    stack
        .approver_client(Some(&admin))
        .approve_certificate_signing_request(approve_request(&created, &admin))
        .await
        .unwrap();
    let issued = grpc::wait_issued(&mut c, "after-corpus").await;
    assert!(!issued.status.unwrap().certificate.is_empty());
    assert!(stack.approver.is_running() && stack.signer.is_running());
    for (what, log) in [
        ("signer", stack.signer.log()),
        ("approver", stack.approver.log()),
    ] {
        assert!(!log.contains("panicked"), "the {what} panicked:\n{log}");
        // The corpus carries an ESC in a CN; logs go to files that
        // operators read in a terminal, so it must arrive escaped.
        assert!(
            !log.contains('\u{1b}'),
            "a terminal escape reached the {what}'s log:\n{log}"
        );
    }

    if record {
        let mut out = String::from(
            "# kind/id\tapprover\tsigner\tcertctl apply (expected outcomes; `-` = not sent there)\n",
        );
        for (id, r) in &got {
            out.push_str(&format!("{id}\t{}\t{}\t{}\n", r[0], r[1], r[2]));
        }
        std::fs::write(corpus.join("expect.tsv"), out).unwrap();
    }
    let mut bad = Vec::new();
    for (id, r) in &got {
        match expect.get(id) {
            Some(e) if e == r => {}
            e => bad.push(format!("{id}: expected {e:?}, got {r:?}")),
        }
    }
    let issued_for_corpus: Vec<_> = grpc::journal_issued(&stack.journal_path())
        .into_iter()
        .filter(|i| i.uid.starts_with("corpus-"))
        .map(|i| i.uid)
        .collect();
    println!(
        "FIGURES hostile-input cases={} approver_calls={} signer_calls={} certctl_runs={} mismatches={} corpus_issued={issued_for_corpus:?} services_alive=true",
        cases.len(),
        calls[0],
        calls[1],
        calls[2],
        bad.len()
    );
    assert!(cases.len() >= 100, "the corpus shrank to {}", cases.len());
    assert!(
        record || bad.is_empty(),
        "{} cases differ from tests/corpus/expect.tsv:\n{}",
        bad.len(),
        bad.join("\n")
    );
    stack.approver.kill();
}

/// A CSR for `cn` padded to about `size` bytes with a non-critical private
/// extension, and with `sans` DNS SANs.
fn big_csr(cn: &str, pad: usize, sans: usize) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(
        (0..sans)
            .map(|i| format!("h{i}.example"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    if pad > 0 {
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            {
                // An OCTET STRING of `pad` bytes, DER-encoded.
                let mut v = vec![0x04, 0x83];
                v.extend_from_slice(&(pad as u32).to_be_bytes()[1..]);
                v.extend(std::iter::repeat_n(b'A', pad));
                v
            },
        )];
    }
    p.serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
        .into_bytes()
}

async fn generated(
    stack: &Stack,
    id: &str,
    ident: &Ident,
    admin: &Ident,
    users_dir: &Path,
) -> [String; 3] {
    let none = || "-".to_string();
    let mut user = stack.approver_client(Some(ident));
    let mut signer = stack.signer_client(Some(&stack.approver_ident()));
    match id {
        "csr-1mib" => {
            let pem = big_csr("big", 1 << 20, 0);
            let a = user
                .create_certificate_signing_request(create_request("big", &pem))
                .await;
            assert_clear(id, "approver", &a);
            let s = signer.sign(held("corpus-csr-1mib", &pem, admin)).await;
            assert_clear(id, "signer", &s);
            [outcome(&a), outcome(&s), none()]
        }
        "csr-6000-sans" => {
            let pem = big_csr("many", 0, 6000);
            let a = user
                .create_certificate_signing_request(create_request("many", &pem))
                .await;
            assert_clear(id, "approver", &a);
            let s = signer.sign(held("corpus-csr-6000-sans", &pem, admin)).await;
            assert_clear(id, "signer", &s);
            [outcome(&a), outcome(&s), none()]
        }
        "grpc-5mib" => {
            let pem = vec![b'A'; 5 << 20];
            let a = user
                .create_certificate_signing_request(create_request("huge", &pem))
                .await;
            assert_clear(id, "approver", &a);
            [outcome(&a), none(), none()]
        }
        "grpc-5mib-signer" => {
            let pem = vec![b'A'; 5 << 20];
            let s = signer.sign(held("corpus-grpc-5mib", &pem, admin)).await;
            assert_clear(id, "signer", &s);
            [none(), outcome(&s), none()]
        }
        "pending-flood" => {
            // The default cap is 100 pending requests per requestor; pace the
            // calls under the rate limit so only the cap can answer.
            let mut last = Ok(());
            for i in 0..101 {
                let (_, pem) = csr("flood", &[]);
                let r = user
                    .create_certificate_signing_request(create_request(&format!("flood-{i}"), &pem))
                    .await;
                if i < 100 {
                    r.unwrap_or_else(|s| panic!("create {i} of 100 refused: {s:?}"));
                } else {
                    assert_clear(id, "approver", &r);
                    last = r.map(|_| ());
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            [outcome(&last), none(), none()]
        }
        "rate-flood" => {
            // 200 cheap calls at once against requests_per_second = 50.
            let mut tasks = Vec::new();
            for _ in 0..200 {
                let mut u = user.clone();
                tasks.push(tokio::spawn(async move {
                    u.get_certificate_signing_request(GetCertificateSigningRequestRequest {
                        name: "nothing".into(),
                    })
                    .await
                    .map(|_| ())
                }));
            }
            let mut limited = None;
            for t in tasks {
                let r = t.await.unwrap();
                assert_clear(id, "approver", &r);
                if let Err(s) = &r
                    && s.code() == Code::ResourceExhausted
                {
                    limited = Some(r.clone());
                }
            }
            [
                limited.map_or_else(|| "NoLimit".to_string(), |r| outcome(&r)),
                none(),
                none(),
            ]
        }
        "manifest-2mib" => {
            let dir = users_dir.join(id);
            user_files(&dir, ident);
            let f = dir.join("big.yaml");
            std::fs::write(&f, "a".repeat(2 << 20)).unwrap();
            [none(), none(), certctl_apply(stack, &dir, &f)]
        }
        other => panic!("unknown generated case {other}"),
    }
}

#[test]
fn the_corpus_index_names_existing_files_and_unique_ids() {
    let corpus = repo_root().join("tests/corpus");
    let cases = read_index(&corpus);
    let mut ids = std::collections::BTreeSet::new();
    for c in &cases {
        assert!(
            ids.insert(format!("{}/{}", c.kind, c.id)),
            "duplicate id {}/{}",
            c.kind,
            c.id
        );
        assert!(!c.desc.trim().is_empty(), "{} has no description", c.id);
        if c.kind != "gen" {
            assert!(corpus.join(&c.file).is_file(), "{} is missing", c.file);
        }
    }
    assert!(bin("certctl").exists());
}

//! The security matrix: one table-driven test per trust boundary, each row
//! a real call over real mTLS against a real stack, with the outcome the
//! boundary promises. Rows print as Markdown table lines
//! (`| boundary | case | expected | got |`), the table in docs/SECURITY.md.
//!
//! "TLS" means the connection is refused during the handshake, before any
//! RPC runs: the call fails with a transport error (UNAVAILABLE or UNKNOWN
//! from tonic), never with an application answer.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::{
    CreateCertificateSigningRequestRequest, Decision, DeleteCertificateSigningRequestRequest,
    DenyCertificateSigningRequestRequest, GetCertificateSigningRequestRequest,
    GetTrustBundleRequest, ListCertificateSigningRequestsRequest, SignRequest,
    WatchCertificateSigningRequestsRequest,
};
use certsign_tests::Stack;
use certsign_tests::grpc::{
    self, Ident, MintSpec, approve_request, channel, create_request, csr, sign, statement_for,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// What a row expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok,
    Tls,
    Code(Code),
}

fn classify<T>(r: &Result<T, Status>) -> Expect {
    match r {
        Ok(_) => Expect::Ok,
        Err(s) if is_transport(s) => Expect::Tls,
        Err(s) => Expect::Code(s.code()),
    }
}

/// A refusal at the TLS layer surfaces in tonic as a transport error, not
/// as a status a server handler produced. With TLS 1.3 the client finishes
/// its half of the handshake before the server checks the client
/// certificate, so the refusal may arrive as the connection closing under
/// the first call: tonic reports that as CANCELLED ("operation was
/// canceled"), which no handler of ours ever returns.
fn is_transport(s: &Status) -> bool {
    (s.code() == Code::Cancelled && s.message().contains("operation was canceled"))
        || matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Internal)
            && (s.message().contains("transport")
                || s.message().contains("tls")
                || s.message().contains("connection")
                || s.message().contains("h2 protocol")
                || s.message().contains("certificate"))
}

fn show(e: Expect) -> String {
    match e {
        Expect::Ok => "OK".into(),
        Expect::Tls => "refused at TLS handshake".into(),
        Expect::Code(c) => format!("{c:?}"),
    }
}

/// Collects rows, prints them, fails at the end listing every mismatch.
struct Table {
    boundary: &'static str,
    rows: Vec<String>,
    bad: Vec<String>,
}

impl Table {
    fn new(boundary: &'static str) -> Self {
        Table {
            boundary,
            rows: Vec::new(),
            bad: Vec::new(),
        }
    }

    fn check<T: std::fmt::Debug>(&mut self, case: &str, expect: Expect, got: Result<T, Status>) {
        let g = classify(&got);
        let detail = match &got {
            Ok(_) => String::new(),
            Err(s) => s.message().replace('|', "/").chars().take(110).collect(),
        };
        let line = format!(
            "| {} | {case} | {} | {} |",
            self.boundary,
            show(expect),
            if detail.is_empty() {
                show(g)
            } else {
                format!("{}: {detail}", show(g))
            }
        );
        println!("{line}");
        if g != expect {
            self.bad
                .push(format!("{line}   <-- expected {}", show(expect)));
        }
        self.rows.push(line);
    }

    fn finish(self) {
        assert!(
            self.bad.is_empty(),
            "{} rows broke their promise:\n{}",
            self.bad.len(),
            self.bad.join("\n")
        );
        assert!(!self.rows.is_empty());
    }
}

fn approver_as(stack: &Stack, trust_pem: &str, ident: Option<&Ident>) -> ApproverClient<Channel> {
    ApproverClient::new(channel(&stack.approver.addr, trust_pem, ident))
}

fn bundle() -> GetTrustBundleRequest {
    GetTrustBundleRequest {
        signer_name: String::new(),
    }
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// A Sign request that would be issued if the caller were allowed:
/// genuinely approved by the admin.
fn approved_sign_request(stack: &Stack, uid: &str) -> SignRequest {
    let (_, pem) = csr("someone", &[]);
    let mut r = create_request(&format!("{uid}-name"), &pem)
        .certificate_signing_request
        .unwrap();
    r.metadata.as_mut().unwrap().uid = uid.into();
    r.spec.as_mut().unwrap().username = "someone".into();
    let st = sign(&statement_for(&r, Decision::Approve), &stack.admin_ident());
    SignRequest {
        request: Some(certsign_proto::v1::sign_request::Request::CertificateSigningRequest(r)),
        approvals: vec![st],
        renewal: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_boundary_unknown_ca_wrong_identity_expired() {
    let stack = Stack::start();
    let ca = stack.ca_pem();
    let ca_key = std::fs::read_to_string(stack.dir.join("signer/ca.key")).unwrap();
    let (rogue_ca, rogue_key) = grpc::rogue_ca("certsign CA");
    let rogue_admin = grpc::mint_with(
        &MintSpec::new("admin", &["system:masters"]),
        &rogue_ca,
        &rogue_key,
    );
    let rogue_approver = grpc::mint_with(
        &MintSpec::new("certsign-approver", &[]),
        &rogue_ca,
        &rogue_key,
    );
    let expired = grpc::mint_with(
        &MintSpec {
            not_before: time::Duration::days(-10),
            not_after: time::Duration::days(-1),
            ..MintSpec::new("admin", &["system:masters"])
        },
        &ca,
        &ca_key,
    );
    let not_yet = grpc::mint_with(
        &MintSpec {
            not_before: time::Duration::days(1),
            not_after: time::Duration::days(10),
            ..MintSpec::new("admin", &["system:masters"])
        },
        &ca,
        &ca_key,
    );
    let mut t = Table::new("TLS");

    // The approver.
    t.check(
        "approver: client certificate from an unknown CA (admin look-alike)",
        Expect::Tls,
        approver_as(&stack, &ca, Some(&rogue_admin))
            .get_trust_bundle(bundle())
            .await,
    );
    t.check(
        "approver: expired client certificate from the real CA",
        Expect::Tls,
        approver_as(&stack, &ca, Some(&expired))
            .get_trust_bundle(bundle())
            .await,
    );
    t.check(
        "approver: not-yet-valid client certificate from the real CA",
        Expect::Tls,
        approver_as(&stack, &ca, Some(&not_yet))
            .get_trust_bundle(bundle())
            .await,
    );
    t.check(
        "approver: client trusting another CA (server impersonation check)",
        Expect::Tls,
        approver_as(&stack, &rogue_ca, Some(&stack.admin_ident()))
            .get_trust_bundle(bundle())
            .await,
    );
    t.check(
        "approver: no client certificate and no token",
        Expect::Code(Code::Unauthenticated),
        approver_as(&stack, &ca, None)
            .get_trust_bundle(bundle())
            .await,
    );
    t.check(
        "approver: control, the real admin",
        Expect::Ok,
        approver_as(&stack, &ca, Some(&stack.admin_ident()))
            .get_trust_bundle(bundle())
            .await,
    );

    // The signer.
    let sign_as = |ident: Option<Ident>, trust: String, uid: &'static str| {
        let ch = channel(&stack.signer.addr, &trust, ident.as_ref());
        let req = approved_sign_request(&stack, uid);
        async move {
            certsign_proto::v1::signer_client::SignerClient::new(ch)
                .sign(req)
                .await
        }
    };
    t.check(
        "signer: approver look-alike (CN certsign-approver) from an unknown CA",
        Expect::Tls,
        sign_as(Some(rogue_approver.clone()), ca.clone(), "tls-1").await,
    );
    t.check(
        "signer: expired certificate from the real CA",
        Expect::Tls,
        sign_as(Some(expired.clone()), ca.clone(), "tls-2").await,
    );
    t.check(
        "signer: no client certificate",
        Expect::Tls,
        sign_as(None, ca.clone(), "tls-3").await,
    );
    t.check(
        "signer: approver identity, client trusting another CA",
        Expect::Tls,
        sign_as(Some(stack.approver_ident()), rogue_ca.clone(), "tls-4").await,
    );
    t.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signer_boundary_only_the_approver() {
    let stack = Stack::start();
    let ca = stack.ca_pem();
    let bob = stack.mint(&MintSpec::new("bob", &["developers"]));
    let server_only = {
        // A real-CA certificate for the signer's own name: a server identity
        // is not a client.
        Ident::load(
            &stack.dir.join("signer/tls.crt"),
            &stack.dir.join("signer/tls.key"),
        )
    };
    let mut t = Table::new("signer caller");
    let sign_as = |ident: Option<Ident>, uid: &'static str, token: Option<&'static str>| {
        let ch = channel(&stack.signer.addr, &ca, ident.as_ref());
        let req = approved_sign_request(&stack, uid);
        async move {
            let mut c = certsign_proto::v1::signer_client::SignerClient::new(ch);
            match token {
                Some(tk) => c.sign(with_token(req, tk)).await,
                None => c.sign(req).await,
            }
        }
    };
    t.check(
        "the admin (system:masters) calls Sign with a genuinely approved request",
        Expect::Code(Code::PermissionDenied),
        sign_as(Some(stack.admin_ident()), "sg-1", None).await,
    );
    t.check(
        "a user of the real CA calls Sign",
        Expect::Code(Code::PermissionDenied),
        sign_as(Some(bob.clone()), "sg-2", None).await,
    );
    t.check(
        "a user with a bearer token header calls Sign",
        Expect::Code(Code::PermissionDenied),
        sign_as(Some(bob), "sg-3", Some("abcdef.0123456789abcdef")).await,
    );
    let got = sign_as(Some(server_only), "sg-4", None).await;
    // The signer's own serving certificate has no clientAuth EKU (refused at
    // the handshake) or, if it had, is not on the allow-list.
    let e = classify(&got);
    t.check(
        "the signer's own serving identity calls Sign",
        if e == Expect::Tls {
            Expect::Tls
        } else {
            Expect::Code(Code::PermissionDenied)
        },
        got,
    );
    t.check(
        "control: the approver's identity",
        Expect::Ok,
        sign_as(Some(stack.approver_ident()), "sg-5", None).await,
    );
    // The signer speaks only Sign and health: the approver API is not there.
    let mut as_approver_api = ApproverClient::new(channel(
        &stack.signer.addr,
        &ca,
        Some(&stack.approver_ident()),
    ));
    t.check(
        "the approver API asked of the signer",
        Expect::Code(Code::Unimplemented),
        as_approver_api.get_trust_bundle(bundle()).await,
    );
    t.finish();
    let issued = grpc::journal_issued(&stack.journal_path());
    assert!(
        issued
            .iter()
            .all(|i| i.caller == "console" || i.uid == "sg-5"),
        "only the control was issued: {issued:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_boundary_others_requests() {
    let stack = Stack::start();
    let bob = stack.mint(&MintSpec::new("bob", &["developers"]));
    let carol = stack.mint(&MintSpec::new("carol", &["developers"]));
    let mut b = stack.approver_client(Some(&bob));
    let mut c = stack.approver_client(Some(&carol));
    let mut admin = stack.approver_client(Some(&stack.admin_ident()));
    let mut t = Table::new("users");

    // Bob's request, with a spoofed requestor in the body.
    let (_, pem) = csr("bob", &[]);
    let mut req = create_request("bobs", &pem);
    req.certificate_signing_request
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .username = "admin".into();
    let created = b
        .create_certificate_signing_request(req)
        .await
        .unwrap()
        .into_inner();
    let who = created.spec.as_ref().unwrap().username.clone();
    t.check(
        "spec.username \"admin\" sent in the body is replaced by the authenticated \"bob\"",
        Expect::Ok,
        if who == "bob" {
            Ok(())
        } else {
            Err(Status::internal(format!("stored requestor {who:?}")))
        },
    );
    let get = |n: &str| GetCertificateSigningRequestRequest { name: n.into() };
    t.check(
        "carol reads bob's request",
        Expect::Code(Code::NotFound),
        c.get_certificate_signing_request(get("bobs")).await,
    );
    let listed = c
        .list_certificate_signing_requests(ListCertificateSigningRequestsRequest::default())
        .await
        .map(|r| r.into_inner().items);
    let leak = listed
        .as_ref()
        .map(|items| {
            items
                .iter()
                .any(|i| i.metadata.as_ref().unwrap().name == "bobs")
        })
        .unwrap_or(false);
    t.check(
        "carol lists requests: bob's is not among them",
        Expect::Ok,
        if leak {
            Err(Status::internal("bob's request listed to carol"))
        } else {
            listed.map(|_| ())
        },
    );
    t.check(
        "carol approves bob's request (signed with her own key)",
        Expect::Code(Code::NotFound),
        c.approve_certificate_signing_request(approve_request(&created, &carol))
            .await,
    );
    t.check(
        "carol denies bob's request",
        Expect::Code(Code::NotFound),
        c.deny_certificate_signing_request(DenyCertificateSigningRequestRequest {
            name: "bobs".into(),
            ..Default::default()
        })
        .await,
    );
    t.check(
        "carol deletes bob's request",
        Expect::Code(Code::NotFound),
        c.delete_certificate_signing_request(DeleteCertificateSigningRequestRequest {
            name: "bobs".into(),
        })
        .await,
    );
    // Watch: carol sees initial events only for her own requests.
    let mut stream = c
        .watch_certificate_signing_requests(WatchCertificateSigningRequestsRequest {
            name: String::new(),
            signer_name: String::new(),
            send_initial_events: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (_, pem) = csr("carol", &[]);
    c.create_certificate_signing_request(create_request("carols", &pem))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Ok(Ok(Some(ev))) =
        tokio::time::timeout(Duration::from_secs(3), stream.message()).await
    {
        seen.push(ev.object.unwrap().metadata.unwrap().name);
        if seen.iter().any(|n| n == "carols") {
            break;
        }
    }
    t.check(
        "carol watches: sees her own request, never bob's",
        Expect::Ok,
        if seen.iter().any(|n| n == "bobs") || !seen.iter().any(|n| n == "carols") {
            Err(Status::internal(format!("watch showed {seen:?}")))
        } else {
            Ok(())
        },
    );
    t.check(
        "bob approves his own request (he is no admin)",
        Expect::Code(Code::PermissionDenied),
        b.approve_certificate_signing_request(approve_request(&created, &bob))
            .await,
    );
    // An admin who is the requestor may not approve their own request.
    let boss = stack.mint(&MintSpec::new("boss", &["system:masters"]));
    let mut boss_c = stack.approver_client(Some(&boss));
    let (_, pem) = csr("boss", &[]);
    let own = boss_c
        .create_certificate_signing_request(create_request("boss-own", &pem))
        .await
        .unwrap()
        .into_inner();
    t.check(
        "an admin approves a request they made themselves",
        Expect::Code(Code::PermissionDenied),
        boss_c
            .approve_certificate_signing_request(approve_request(&own, &boss))
            .await,
    );
    // The admin approving with someone else's statement.
    t.check(
        "the admin approves with a statement signed by another admin's key",
        Expect::Code(Code::PermissionDenied),
        admin
            .approve_certificate_signing_request(approve_request(&created, &boss))
            .await,
    );
    t.check(
        "control: the admin reads bob's request",
        Expect::Ok,
        admin.get_certificate_signing_request(get("bobs")).await,
    );
    t.check(
        "control: the admin approves bob's request with their own statement",
        Expect::Ok,
        admin
            .approve_certificate_signing_request(approve_request(&created, &stack.admin_ident()))
            .await,
    );
    t.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_token_boundary() {
    let secret = |s: &str| hex::encode(certsign_evidence::sha256(s.as_bytes()));
    let token = |id: &str, sec: &str, expires: &str, signers: &[&str], max: i64| {
        let mut t = toml::Table::new();
        t.insert("id".into(), id.into());
        t.insert("secret_sha256".into(), secret(sec).into());
        t.insert("expires".into(), expires.into());
        t.insert(
            "signer_names".into(),
            toml::Value::Array(signers.iter().map(|s| (*s).into()).collect()),
        );
        t.insert("max_uses".into(), max.into());
        toml::Value::Table(t)
    };
    const KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
    let stack = Stack::start_configured(
        &[],
        |_| {},
        |a| {
            a.insert(
                "bootstrap_tokens".into(),
                toml::Value::Array(vec![
                    token(
                        "good01",
                        "0123456789abcdef",
                        "2099-01-01T00:00:00Z",
                        &[KUBELET],
                        100,
                    ),
                    token(
                        "old001",
                        "0123456789abcdef",
                        "2020-01-01T00:00:00Z",
                        &[KUBELET],
                        100,
                    ),
                    token(
                        "once01",
                        "0123456789abcdef",
                        "2099-01-01T00:00:00Z",
                        &[KUBELET],
                        1,
                    ),
                ]),
            );
        },
    );
    let mut anon = stack.approver_client(None);
    let mut t = Table::new("bootstrap token");
    let kubelet_req = |name: &str| {
        let (_, pem) = csr("system:node:n1", &["system:nodes"]);
        let mut r = create_request(name, &pem);
        let spec = r
            .certificate_signing_request
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap();
        spec.signer_name = KUBELET.into();
        r
    };
    let good = "good01.0123456789abcdef";
    t.check(
        "control: a valid token creates a request for its signer name",
        Expect::Ok,
        anon.create_certificate_signing_request(with_token(kubelet_req("tok-1"), good))
            .await,
    );
    t.check(
        "a token past its expiry",
        Expect::Code(Code::Unauthenticated),
        anon.create_certificate_signing_request(with_token(
            kubelet_req("tok-2"),
            "old001.0123456789abcdef",
        ))
        .await,
    );
    t.check(
        "a token within its use limit (1 of 1)",
        Expect::Ok,
        anon.create_certificate_signing_request(with_token(
            kubelet_req("tok-3"),
            "once01.0123456789abcdef",
        ))
        .await,
    );
    t.check(
        "a token past its use limit (2 of 1)",
        Expect::Code(Code::Unauthenticated),
        anon.create_certificate_signing_request(with_token(
            kubelet_req("tok-4"),
            "once01.0123456789abcdef",
        ))
        .await,
    );
    let (_, pem) = csr("n1", &[]);
    t.check(
        "a token for a signer name it does not allow",
        Expect::Code(Code::PermissionDenied),
        anon.create_certificate_signing_request(with_token(create_request("tok-5", &pem), good))
            .await,
    );
    t.check(
        "a token with a wrong secret",
        Expect::Code(Code::Unauthenticated),
        anon.create_certificate_signing_request(with_token(
            kubelet_req("tok-6"),
            "good01.fedcba9876543210",
        ))
        .await,
    );
    t.check(
        "an unknown token id",
        Expect::Code(Code::Unauthenticated),
        anon.create_certificate_signing_request(with_token(
            kubelet_req("tok-7"),
            "zzzzzz.0123456789abcdef",
        ))
        .await,
    );
    t.check(
        "a malformed token",
        Expect::Code(Code::Unauthenticated),
        anon.create_certificate_signing_request(with_token(kubelet_req("tok-8"), "not a token"))
            .await,
    );
    let created = anon
        .get_certificate_signing_request(with_token(
            GetCertificateSigningRequestRequest {
                name: "tok-1".into(),
            },
            good,
        ))
        .await;
    t.check(
        "control: a token reads its own request",
        Expect::Ok,
        created.as_ref().map(|_| ()).map_err(|s| s.clone()),
    );
    let created = created.unwrap().into_inner();
    t.check(
        "a token approves (with the admin's real statement)",
        Expect::Code(Code::Unauthenticated),
        anon.approve_certificate_signing_request(with_token(
            approve_request(&created, &stack.admin_ident()),
            good,
        ))
        .await,
    );
    t.check(
        "a token deletes its own request",
        Expect::Code(Code::Unauthenticated),
        anon.delete_certificate_signing_request(with_token(
            DeleteCertificateSigningRequestRequest {
                name: "tok-1".into(),
            },
            good,
        ))
        .await,
    );
    // Another token's request is not readable.
    t.check(
        "a token reads another token's request",
        Expect::Code(Code::NotFound),
        anon.get_certificate_signing_request(with_token(
            GetCertificateSigningRequestRequest {
                name: "tok-3".into(),
            },
            good,
        ))
        .await,
    );
    t.finish();
}

#[test]
fn transport_classifier_is_not_fooled_by_application_statuses() {
    // An application refusal must never be counted as a TLS refusal.
    assert_ne!(
        classify::<()>(&Err(Status::permission_denied("certificate not allowed"))),
        Expect::Tls
    );
    assert_eq!(
        classify::<()>(&Err(Status::unavailable("transport error"))),
        Expect::Tls
    );
    let _ = CreateCertificateSigningRequestRequest::default();
}

//! Every create validation rule with Kubernetes' text, every limit, and
//! bootstrap tokens, over real mTLS against the real approver process.

#![allow(clippy::unwrap_used)]

mod common;

use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::{
    ApproveCertificateSigningRequestRequest, CreateCertificateSigningRequestRequest,
    GetCertificateSigningRequestRequest, ListCertificateSigningRequestsRequest,
};
use common::*;
use tonic::Code;
use tonic::transport::Channel;

async fn create_err(
    c: &mut ApproverClient<Channel>,
    req: CreateCertificateSigningRequestRequest,
) -> tonic::Status {
    c.create_certificate_signing_request(req).await.unwrap_err()
}

fn invalid(name: &str, msg: &str) -> String {
    format!("CertificateSigningRequest.certificates.k8s.io \"{name}\" is invalid: {msg}")
}

#[tokio::test(flavor = "multi_thread")]
async fn create_validation_rules_and_texts() {
    // No signer needed: nothing here is approved.
    let pki = Pki::init();
    let approver = start_approver(&pki, &dead_addr());
    let alice = pki.user("alice", &[]);
    let mut c = client(&pki, &approver.addr, Some(&alice)).await;
    let (pem, _) = make_csr("alice", &[], &[]);
    let usages = ["client auth"];

    // expirationSeconds below 600.
    let e = create_err(
        &mut c,
        new_csr("r", &pem, APISERVER_CLIENT, &usages, Some(300)),
    )
    .await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        invalid(
            "r",
            "spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 600 seconds (10 minutes)"
        )
    );
    // 600 is fine.
    c.create_certificate_signing_request(new_csr(
        "ok600",
        &pem,
        APISERVER_CLIENT,
        &usages,
        Some(600),
    ))
    .await
    .unwrap();

    // Not a CSR PEM.
    let e = create_err(
        &mut c,
        new_csr("r", "hello", APISERVER_CLIENT, &usages, None),
    )
    .await;
    assert_eq!(
        e.message(),
        invalid(
            "r",
            "spec.request: Invalid value: \"<request data>\": PEM block type must be CERTIFICATE REQUEST"
        )
    );
    let cert_pem = pki.ca_pem();
    let e = create_err(
        &mut c,
        new_csr("r", &cert_pem, APISERVER_CLIENT, &usages, None),
    )
    .await;
    assert!(
        e.message()
            .ends_with("PEM block type must be CERTIFICATE REQUEST"),
        "{e:?}"
    );
    // A CSR whose signature does not verify.
    let tampered = {
        use base64::Engine as _;
        let der = certsign_evidence::csr_der_from_pem(pem.as_bytes()).unwrap();
        let mut der = der.to_vec();
        let n = der.len();
        der[n - 5] ^= 0x55;
        let b = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b}\n-----END CERTIFICATE REQUEST-----\n")
    };
    let e = create_err(
        &mut c,
        new_csr("r", &tampered, APISERVER_CLIENT, &usages, None),
    )
    .await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("spec.request: Invalid value: \"<request data>\": x509:"),
        "{e:?}"
    );

    // Usages: required, known, no duplicates.
    let e = create_err(&mut c, new_csr("r", &pem, APISERVER_CLIENT, &[], None)).await;
    assert_eq!(e.message(), invalid("r", "spec.usages: Required value"));
    let e = create_err(
        &mut c,
        new_csr("r", &pem, APISERVER_CLIENT, &["client auth", "bogus"], None),
    )
    .await;
    assert!(
        e.message().starts_with(&invalid(
            "r",
            "spec.usages[1]: Unsupported value: \"bogus\": supported values: \"any\", \"cert sign\", \"client auth\""
        )),
        "{e:?}"
    );
    let e = create_err(
        &mut c,
        new_csr(
            "r",
            &pem,
            APISERVER_CLIENT,
            &["client auth", "client auth"],
            None,
        ),
    )
    .await;
    assert_eq!(
        e.message(),
        invalid("r", "spec.usages[1]: Duplicate value: \"client auth\"")
    );

    // Signer names.
    let e = create_err(&mut c, new_csr("r", &pem, "", &usages, None)).await;
    assert_eq!(e.message(), invalid("r", "spec.signerName: Required value"));
    let e = create_err(&mut c, new_csr("r", &pem, "kubernetes.io", &usages, None)).await;
    assert_eq!(
        e.message(),
        invalid(
            "r",
            "spec.signerName: Invalid value: \"kubernetes.io\": must be a fully qualified domain and path of the form 'example.com/signer-name'"
        )
    );
    let e = create_err(&mut c, new_csr("r", &pem, "example/x", &usages, None)).await;
    assert_eq!(
        e.message(),
        invalid(
            "r",
            "spec.signerName: Invalid value: \"example\": should be a domain with at least two segments separated by dots"
        )
    );
    let e = create_err(
        &mut c,
        new_csr("r", &pem, "kubernetes.io/legacy-unknown", &usages, None),
    )
    .await;
    assert_eq!(
        e.message(),
        invalid(
            "r",
            "spec.signerName: Invalid value: \"kubernetes.io/legacy-unknown\": the legacy signerName is not allowed via this API version"
        )
    );
    let e = create_err(
        &mut c,
        new_csr("r", &pem, "example.com/not-served", &usages, None),
    )
    .await;
    assert_eq!(
        e.message(),
        invalid(
            "r",
            "spec.signerName: Invalid value: \"example.com/not-served\": this deployment does not serve this signer name"
        )
    );

    // Names.
    let e = create_err(&mut c, new_csr("", &pem, APISERVER_CLIENT, &usages, None)).await;
    assert_eq!(
        e.message(),
        invalid(
            "",
            "metadata.name: Required value: name or generateName is required"
        )
    );
    let e = create_err(
        &mut c,
        new_csr("Bad_Name", &pem, APISERVER_CLIENT, &usages, None),
    )
    .await;
    assert!(
        e.message().starts_with(&invalid(
            "Bad_Name",
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        )),
        "{e:?}"
    );
    let mut generated = new_csr("", &pem, APISERVER_CLIENT, &usages, None);
    generated
        .certificate_signing_request
        .as_mut()
        .unwrap()
        .metadata
        .as_mut()
        .unwrap()
        .generate_name = "csr-".into();
    let made = c
        .create_certificate_signing_request(generated)
        .await
        .unwrap()
        .into_inner();
    let name = made.metadata.unwrap().name;
    assert!(name.starts_with("csr-") && name.len() == 9, "{name}");

    // Every error at once, joined like Kubernetes' aggregate.
    let e = create_err(
        &mut c,
        new_csr("r", "junk", "nope", &["bogus", "bogus"], Some(1)),
    )
    .await;
    let m = e.message().to_string();
    assert!(m.starts_with(&invalid("r", "[spec.request: Invalid value: \"<request data>\": PEM block type must be CERTIFICATE REQUEST, spec.usages[0]: Unsupported value: \"bogus\"")), "{m}");
    assert!(m.contains(", spec.usages[1]: Duplicate value: \"bogus\", spec.signerName: Invalid value: \"nope\": must be a fully qualified domain and path of the form 'example.com/signer-name', spec.expirationSeconds: Invalid value: 1: may not specify a duration less than 600 seconds (10 minutes)]"), "{m}");

    // CertificateSubjectRestriction.
    let (masters, _) = make_csr("root", &["system:masters"], &[]);
    let e = create_err(
        &mut c,
        new_csr("m", &masters, APISERVER_CLIENT, &usages, None),
    )
    .await;
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.message(),
        "certificatesigningrequests.certificates.k8s.io \"m\" is forbidden: use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"
    );
    // Another signer name may carry system:masters (its own policy decides).
    c.create_certificate_signing_request(new_csr("m2", &masters, IDENTITY, &usages, None))
        .await
        .unwrap();

    // Missing body.
    let e = create_err(&mut c, CreateCertificateSigningRequestRequest::default()).await;
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_are_resource_exhausted() {
    let pki = Pki::init();
    pki.edit_approver(|t| {
        let l = t.get_mut("limits").unwrap().as_table_mut().unwrap();
        l.insert("max_request_bytes".into(), 1500.into());
        l.insert("max_pending_per_requestor".into(), 2.into());
        l.insert("requests_per_second".into(), 1.into());
        l.insert("burst".into(), 8.into());
    });
    let approver = start_approver(&pki, &dead_addr());
    let alice = pki.user("alice", &[]);
    let mut c = client(&pki, &approver.addr, Some(&alice)).await;
    let usages = ["client auth"];

    // Request size.
    let many: Vec<String> = (0..60)
        .map(|i| format!("host-{i}.example.internal"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (big, _) = make_csr("alice", &[], &many);
    assert!(big.len() > 1500);
    let e = create_err(
        &mut c,
        new_csr("big", &big, APISERVER_CLIENT, &usages, None),
    )
    .await;
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(
        e.message(),
        format!(
            "spec.request is {} bytes; the limit is 1500 bytes",
            big.len()
        )
    );

    // Pending per requestor.
    for n in ["p1", "p2"] {
        let (pem, _) = make_csr("alice", &[], &[]);
        c.create_certificate_signing_request(new_csr(n, &pem, APISERVER_CLIENT, &usages, None))
            .await
            .unwrap();
    }
    let (pem, _) = make_csr("alice", &[], &[]);
    let e = create_err(&mut c, new_csr("p3", &pem, APISERVER_CLIENT, &usages, None)).await;
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(
        e.message(),
        "user \"alice\" already has 2 pending certificate signing requests; the limit is 2"
    );

    // Rate per identity: a burst of calls runs out; another identity is
    // unaffected.
    let mut exhausted = None;
    for _ in 0..50 {
        match c
            .get_certificate_signing_request(GetCertificateSigningRequestRequest {
                name: "p1".into(),
            })
            .await
        {
            Ok(_) => {}
            Err(e) => {
                exhausted = Some(e);
                break;
            }
        }
    }
    let e = exhausted.expect("50 calls at 1/s with burst 8 must hit the rate limit");
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(
        e.message(),
        "rate limit exceeded for \"alice\": at most 1 requests per second"
    );
    let bob = pki.user("bob", &[]);
    let mut b = client(&pki, &approver.addr, Some(&bob)).await;
    b.list_certificate_signing_requests(ListCertificateSigningRequestsRequest::default())
        .await
        .unwrap();
}

fn token_table(
    id: &str,
    secret: &str,
    expires: &str,
    signers: &[&str],
    max_uses: i64,
) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("id".into(), id.into());
    let h = certsign_evidence::sha256(secret.as_bytes());
    t.insert("secret_sha256".into(), hex::encode(h).into());
    t.insert("expires".into(), expires.into());
    t.insert(
        "signer_names".into(),
        toml::Value::Array(signers.iter().map(|s| (*s).into()).collect()),
    );
    t.insert("max_uses".into(), max_uses.into());
    toml::Value::Table(t)
}

async fn token_client(
    pki: &Pki,
    addr: &str,
    bearer: &str,
) -> ApproverClient<
    tonic::service::interceptor::InterceptedService<Channel, impl tonic::service::Interceptor>,
> {
    let ch = {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pki.ca_pem()));
        tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {bearer}").parse().unwrap();
    ApproverClient::with_interceptor(ch, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_tokens() {
    let pki = Pki::init();
    pki.edit_approver(|t| {
        t.insert(
            "bootstrap_tokens".into(),
            toml::Value::Array(vec![
                token_table(
                    "abcdef",
                    "0123456789abcdef",
                    "2099-01-01T00:00:00Z",
                    &[KUBELET_CLIENT],
                    1,
                ),
                token_table(
                    "oldtok",
                    "0123456789abcdef",
                    "2020-01-01T00:00:00Z",
                    &[KUBELET_CLIENT],
                    5,
                ),
            ]),
        );
    });
    let stack_signer = start_signer(&pki, "127.0.0.1:0");
    let approver = start_approver(&pki, &stack_signer.addr);
    let addr = approver.addr.clone();
    let kubelet_csr = || make_csr("system:node:n1", &["system:nodes"], &[]).0;
    let usages = ["digital signature", "client auth"];

    // Valid token: creates, as system:bootstrap:<id>.
    let mut t = token_client(&pki, &addr, "abcdef.0123456789abcdef").await;
    // Wrong signer name for this token (checked before the use is counted).
    let e = t
        .create_certificate_signing_request(new_csr(
            "w",
            &kubelet_csr(),
            APISERVER_CLIENT,
            &["client auth"],
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message()
            .contains("may not request certificates for signerName"),
        "{e:?}"
    );
    let made = t
        .create_certificate_signing_request(new_csr(
            "node-n1",
            &kubelet_csr(),
            KUBELET_CLIENT,
            &usages,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let spec = made.spec.unwrap();
    assert_eq!(spec.username, "system:bootstrap:abcdef");
    assert_eq!(
        spec.groups,
        vec!["system:bootstrappers", "system:authenticated"]
    );
    // The newcomer may read its own request.
    t.get_certificate_signing_request(GetCertificateSigningRequestRequest {
        name: "node-n1".into(),
    })
    .await
    .unwrap();
    // But may do nothing else.
    let e = t
        .approve_certificate_signing_request(ApproveCertificateSigningRequestRequest {
            name: "node-n1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // Use limit 1: the second create is refused.
    let e = t
        .create_certificate_signing_request(new_csr(
            "node-n2",
            &kubelet_csr(),
            KUBELET_CLIENT,
            &usages,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("use limit"), "{e:?}");

    for (bearer, what) in [
        ("abcdef.0123456789abcdee", "invalid bootstrap token"),
        ("zzzzzz.0123456789abcdef", "invalid bootstrap token"),
        ("oldtok.0123456789abcdef", "has expired"),
        ("not-a-token", "malformed authorization header"),
    ] {
        let mut t = token_client(&pki, &addr, bearer).await;
        let e = t
            .create_certificate_signing_request(new_csr(
                "x",
                &kubelet_csr(),
                KUBELET_CLIENT,
                &usages,
                None,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{bearer}: {e:?}");
        assert!(e.message().contains(what), "{bearer}: {e:?}");
    }

    // An admin approves the bootstrap request; it is issued.
    let admin = pki.admin();
    let mut adm = client(&pki, &addr, Some(&admin)).await;
    let r = get(&mut adm, "node-n1").await.unwrap();
    approve(&mut adm, &admin, &r).await.unwrap();
    let done = wait_done(&mut adm, "node-n1").await;
    assert!(!done.status.unwrap().certificate.is_empty());
}

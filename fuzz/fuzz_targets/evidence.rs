//! Fuzz target: evidence verification (`certsign_evidence`), the
//! code that decides whether a signed statement proves an approval or a
//! renewal.
//!
//! Byte 0 picks the mode:
//! - 0: the rest is a `SignedStatement` (protobuf) checked as approval and
//!   as renewal against a fixed request;
//! - 1: the rest is the statement body, validly signed by a real admin of a
//!   fixed CA, so decoding, freshness, chain and field checks run;
//! - 2: the rest is `certificate_chain[0]` (DER) under a real signature.
//!
//! Must never panic and never accept anything in modes 0 and 2.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use certsign_proto::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec, Decision, ObjectMeta,
    SignedStatement,
};
use certsign_signer::csr::VerifiedCsr;
use certsign_evidence::{
    APPROVAL_CONTEXT, ApprovalTrust, RENEWAL_CONTEXT, sign_statement, verify_approval,
    verify_renewal,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

struct Fixture {
    ca_der: Vec<u8>,
    trust: ApprovalTrust,
    admin_key: rcgen::KeyPair,
    admin_der: Vec<u8>,
    request: CertificateSigningRequest,
    csr: VerifiedCsr,
}

#[allow(clippy::expect_used)] // fixed inputs generated here; a failure is a harness bug
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, "fuzz CA");
        let ca = p.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(p, ca_key);
        let admin_key = rcgen::KeyPair::generate().expect("key");
        let mut a = rcgen::CertificateParams::default();
        a.distinguished_name = rcgen::DistinguishedName::new();
        a.distinguished_name.push(rcgen::DnType::CommonName, "admin");
        a.distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        let now = time::OffsetDateTime::now_utc();
        a.not_before = now - time::Duration::days(1);
        a.not_after = now + time::Duration::days(3650);
        let admin = a.signed_by(&admin_key, &issuer).expect("admin");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut r = rcgen::CertificateParams::default();
        r.distinguished_name = rcgen::DistinguishedName::new();
        r.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        let csr_pem = r
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
            .into_bytes();
        let csr = VerifiedCsr::from_pem(&csr_pem).expect("own csr");
        Fixture {
            ca_der: ca.der().to_vec(),
            trust: ApprovalTrust::from_der(vec![ca.der().to_vec()]),
            admin_key,
            admin_der: admin.der().to_vec(),
            request: CertificateSigningRequest {
                metadata: Some(ObjectMeta {
                    name: "req".into(),
                    uid: "uid-1".into(),
                    ..Default::default()
                }),
                spec: Some(CertificateSigningRequestSpec {
                    request: csr_pem,
                    signer_name: "kubernetes.io/kube-apiserver-client".into(),
                    usages: vec!["client auth".into()],
                    username: "alice".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            csr,
        }
    })
}

fn check(f: &Fixture, s: &SignedStatement, may_accept: bool) {
    let groups = ["system:masters".to_string()];
    let day = Duration::from_secs(86400);
    let now = SystemTime::now();
    let a = verify_approval(s, &f.request, Decision::Approve, &f.trust, &groups, day, now);
    let r = verify_renewal(s, &f.request, f.csr.renewal_input(), &f.ca_der, day, now);
    if !may_accept {
        assert!(a.is_err() && r.is_err(), "accepted a statement nobody signed");
    }
    let _ = (a.map_err(|e| e.to_string()), r.map_err(|e| e.to_string()));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    match mode % 3 {
        0 => {
            if let Ok(s) = SignedStatement::decode(rest) {
                check(f, &s, false);
            }
        }
        1 => {
            for ctx in [APPROVAL_CONTEXT, RENEWAL_CONTEXT] {
                if let Ok(s) =
                    sign_statement(ctx, rest.to_vec(), &f.admin_key, vec![f.admin_der.clone()])
                {
                    check(f, &s, true);
                }
            }
        }
        _ => {
            if let Ok(s) = sign_statement(
                APPROVAL_CONTEXT,
                rest.to_vec(),
                &f.admin_key,
                vec![rest.to_vec()],
            ) {
                // Signed by the admin key but claiming another certificate:
                // the signature must not verify against it.
                if rest != f.admin_der.as_slice() {
                    check(f, &s, false);
                }
            }
        }
    }
});

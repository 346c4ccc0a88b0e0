//! One test per refusal rule, each against its own `serve` process over real
//! mTLS; every message must name the rule (Kubernetes' exact text where it
//! has one), and the refusal must be journaled.
#![allow(clippy::unwrap_used)]

mod common;

use certsign_proto::v1::signer_client::SignerClient;
use certsign_proto::v1::{ApprovalStatement, CertificateSigningRequest, SignedStatement};
use common::*;
use rcgen::KeyPair;
use tonic::transport::Channel;
use tonic::{Code, Status};

struct Fx {
    pki: Pki,
    _server: Server,
    c: SignerClient<Channel>,
    csr: Vec<u8>,
}

async fn fx() -> Fx {
    let pki = init(&[]);
    let server = serve(&pki);
    let c = client(&pki, &server).await;
    let (csr, _) = openssl_csr(&pki, "alice", P256, "/CN=alice", &[]);
    Fx {
        pki,
        _server: server,
        c,
        csr,
    }
}

impl Fx {
    fn req(&self, uid: &str) -> CertificateSigningRequest {
        request(
            uid,
            &self.csr,
            CLIENT,
            &["client auth"],
            Some(3600),
            "alice",
        )
    }
    /// Sign and expect a refusal; check it is journaled.
    async fn refused(
        &mut self,
        req: CertificateSigningRequest,
        approvals: Vec<SignedStatement>,
    ) -> Status {
        let uid = req.metadata.clone().unwrap().uid;
        let s = self.c.sign(sign_request(req, approvals)).await.unwrap_err();
        let journal = std::fs::read_to_string(self.pki.p("signer/journal.jsonl")).unwrap();
        let last = journal.lines().last().unwrap();
        assert!(
            last.contains("\"event\":\"refused\"") && last.contains(&uid),
            "{last}"
        );
        s
    }
    /// A statement for `req` edited by `f`, signed by init's admin.
    fn edited(
        &self,
        req: &CertificateSigningRequest,
        f: impl FnOnce(&mut ApprovalStatement),
    ) -> SignedStatement {
        let (k, c) = admin(&self.pki);
        let mut st = statement_for(req);
        f(&mut st);
        sign_with(&st, &k, c)
    }
    fn by(&self, req: &CertificateSigningRequest, who: &(KeyPair, Vec<u8>)) -> SignedStatement {
        sign_with(&statement_for(req), &who.0, who.1.clone())
    }
}

fn has(s: &Status, code: Code, text: &str) {
    assert_eq!(s.code(), code, "{}", s.message());
    assert!(
        s.message().contains(text),
        "want {text:?} in {:?}",
        s.message()
    );
}

#[tokio::test]
async fn missing_evidence() {
    let mut f = fx().await;
    let s = f.refused(f.req("m"), vec![]).await;
    has(
        &s,
        Code::FailedPrecondition,
        "quorum: 0 distinct admin approval(s), 1 required",
    );
}

#[tokio::test]
async fn forged_signature() {
    let mut f = fx().await;
    let mut a = approve(&f.pki, &f.req("f"));
    a.signature[10] ^= 1;
    let s = f.refused(f.req("f"), vec![a]).await;
    has(&s, Code::FailedPrecondition, "evidence signature");
}

#[tokio::test]
async fn wrong_key_signature() {
    let mut f = fx().await;
    let (other, _) = mint(&f.pki, "mallory", &["system:masters"], -1, 1);
    let (_, admin_cert) = admin(&f.pki);
    let s = f
        .refused(f.req("w"), vec![f.by(&f.req("w"), &(other, admin_cert))])
        .await;
    has(&s, Code::FailedPrecondition, "evidence signature");
}

#[tokio::test]
async fn statement_for_another_csr() {
    let mut f = fx().await;
    let (csr2, _) = openssl_csr(&f.pki, "alice2", P256, "/CN=alice", &[]);
    let other = request("o", &csr2, CLIENT, &["client auth"], Some(3600), "alice");
    let s = f.refused(f.req("o"), vec![approve(&f.pki, &other)]).await;
    has(
        &s,
        Code::FailedPrecondition,
        "bound field: statement csr_sha256 does not match",
    );
}

#[tokio::test]
async fn statement_for_another_signer() {
    let mut f = fx().await;
    let a = f.edited(&f.req("s"), |st| {
        st.signer_name = "kubernetes.io/kubelet-serving".into()
    });
    let s = f.refused(f.req("s"), vec![a]).await;
    has(
        &s,
        Code::FailedPrecondition,
        "bound field: statement signer_name",
    );
}

#[tokio::test]
async fn statement_for_other_usages() {
    let mut f = fx().await;
    let a = f.edited(&f.req("u"), |st| st.usages.push("digital signature".into()));
    let s = f.refused(f.req("u"), vec![a]).await;
    has(
        &s,
        Code::FailedPrecondition,
        "bound field: statement usages",
    );
}

#[tokio::test]
async fn statement_for_another_duration() {
    let mut f = fx().await;
    let a = f.edited(&f.req("d"), |st| st.expiration_seconds = Some(86400));
    let s = f.refused(f.req("d"), vec![a]).await;
    has(
        &s,
        Code::FailedPrecondition,
        "bound field: statement expiration_seconds",
    );
}

#[tokio::test]
async fn stale_statement() {
    let mut f = fx().await;
    let a = f.edited(&f.req("st"), |st| st.signed_at = Some(now_ts(-2 * 86400)));
    let s = f.refused(f.req("st"), vec![a]).await;
    has(&s, Code::FailedPrecondition, "freshness");
}

#[tokio::test]
async fn expired_admin_certificate() {
    let mut f = fx().await;
    let old = mint(&f.pki, "old-admin", &["system:masters"], -10, -1);
    let s = f.refused(f.req("e"), vec![f.by(&f.req("e"), &old)]).await;
    has(&s, Code::FailedPrecondition, "evidence certificate");
    assert!(s.message().contains("Expired"), "{}", s.message());
}

#[tokio::test]
async fn admin_group_not_allowed() {
    let mut f = fx().await;
    let bob = mint(&f.pki, "bob", &["dev"], -1, 1);
    let s = f.refused(f.req("g"), vec![f.by(&f.req("g"), &bob)]).await;
    has(
        &s,
        Code::FailedPrecondition,
        "approver group: admin \"bob\"",
    );
}

#[tokio::test]
async fn requestor_approving_their_own_request() {
    let mut f = fx().await;
    let alice = mint(&f.pki, "alice", &["system:masters"], -1, 1);
    let s = f
        .refused(f.req("self"), vec![f.by(&f.req("self"), &alice)])
        .await;
    has(
        &s,
        Code::FailedPrecondition,
        "separation of duties: the requestor \"alice\"",
    );
}

#[tokio::test]
async fn same_admin_twice_is_one_approval() {
    let mut f = fx().await;
    let (csr, _) = openssl_csr(&f.pki, "svc", P256, "/CN=svc-a", &[]);
    let req = request(
        "q",
        &csr,
        "certsign.io/identity",
        &["client auth"],
        None,
        "svc-owner",
    );
    let a = approve(&f.pki, &req);
    let s = f.refused(req.clone(), vec![a.clone(), a.clone()]).await;
    has(
        &s,
        Code::FailedPrecondition,
        "quorum: 1 distinct admin approval(s), 2 required",
    );
    // A second, distinct admin completes the quorum.
    let second = mint(&f.pki, "admin2", &["system:masters"], -1, 1);
    let b = f.by(&req, &second);
    f.c.sign(sign_request(req, vec![a, b])).await.unwrap();
}

#[tokio::test]
async fn bad_csr_signature() {
    let mut f = fx().await;
    let mut der = certsign_signer::csr::csr_der_from_pem(&f.csr).unwrap();
    let n = der.len();
    der[n - 3] ^= 1;
    let bad = certsign_keys::pem("CERTIFICATE REQUEST", &der).unwrap();
    let r = request("b", bad.as_bytes(), CLIENT, &["client auth"], None, "alice");
    let s = f.refused(r.clone(), vec![approve(&f.pki, &r)]).await;
    has(
        &s,
        Code::InvalidArgument,
        "unable to verify certificate request signature",
    );
}

#[tokio::test]
async fn rsa_1024_key() {
    let mut f = fx().await;
    let (weak, _) = openssl_csr(&f.pki, "weak", &["-newkey", "rsa:1024"], "/CN=alice", &[]);
    let r = request("r", &weak, CLIENT, &["client auth"], None, "alice");
    let s = f.refused(r.clone(), vec![approve(&f.pki, &r)]).await;
    has(&s, Code::InvalidArgument, "RSA-1024 is too small");
}

#[tokio::test]
async fn csr_asking_for_ca_true_never_gets_a_ca_certificate() {
    let mut f = fx().await;
    let (ca_csr, _) = openssl_csr(
        &f.pki,
        "wantca",
        P256,
        "/CN=alice",
        &["basicConstraints=critical,CA:TRUE"],
    );
    let r = request("ca", &ca_csr, CLIENT, &["client auth"], None, "alice");
    let s = f.refused(r.clone(), vec![approve(&f.pki, &r)]).await;
    has(&s, Code::InvalidArgument, "never issues CA certificates");
    let r = request(
        "cs",
        &f.csr,
        CLIENT,
        &["client auth", "cert sign"],
        None,
        "alice",
    );
    let s = f.refused(r.clone(), vec![approve(&f.pki, &r)]).await;
    has(
        &s,
        Code::FailedPrecondition,
        "\"cert sign\" is never issued",
    );
}

#[tokio::test]
async fn kubernetes_builtin_rules_with_their_texts() {
    let mut f = fx().await;
    let (m, _) = openssl_csr(&f.pki, "masters", P256, "/CN=eve/O=system:masters", &[]);
    let r = request("k1", &m, CLIENT, &["client auth"], None, "eve");
    let s = f.refused(r.clone(), vec![approve(&f.pki, &r)]).await;
    assert_eq!(
        s.message(),
        "use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"
    );
    let r = request(
        "k2",
        &f.csr,
        CLIENT,
        &["client auth", "server auth"],
        None,
        "alice",
    );
    let s = f.refused(r.clone(), vec![approve(&f.pki, &r)]).await;
    assert_eq!(
        s.message(),
        "invalid usage for client certificate: server auth"
    );
    let r = request(
        "k3",
        &f.csr,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["client auth"],
        None,
        "alice",
    );
    let s = f.refused(r.clone(), vec![approve(&f.pki, &r)]).await;
    assert_eq!(s.message(), "subject organization is not system:nodes");
    let r = request("k4", &f.csr, CLIENT, &["client auth"], Some(60), "alice");
    let s = f.refused(r.clone(), vec![approve(&f.pki, &r)]).await;
    has(
        &s,
        Code::InvalidArgument,
        "may not specify a duration less than 600 seconds (10 minutes)",
    );
}

#[tokio::test]
async fn unknown_signer_name() {
    let mut f = fx().await;
    let r = request(
        "n",
        &f.csr,
        "example.com/nope",
        &["client auth"],
        None,
        "alice",
    );
    let s = f.refused(r.clone(), vec![approve(&f.pki, &r)]).await;
    has(
        &s,
        Code::FailedPrecondition,
        "unknown signer name \"example.com/nope\"",
    );
}

#[tokio::test]
async fn user_csr_may_not_claim_the_signer_client_identity() {
    let mut f = fx().await;
    let (imp, _) = openssl_csr(&f.pki, "imp", P256, "/CN=certsign-approver", &[]);
    let r = request("i", &imp, CLIENT, &["client auth"], None, "alice");
    let s = f.refused(r.clone(), vec![approve(&f.pki, &r)]).await;
    has(&s, Code::FailedPrecondition, "allow-listed signer client");
}

//! The approver's end-to-end tests on the workspace harness
//! (`certsign-tests`): a PKI made by the real `certsign-signer init`, the
//! real `certsign-signer serve` and `certsign-approver serve` processes on
//! 127.0.0.1:0, tonic clients over mTLS with identities signed by the init
//! CA, and signed statements. What is here is only the approver's
//! vocabulary over the harness (its `User`, request builders and calls).
//!
//! The binaries are looked up in `target/<profile>/`; the test command runs
//! `cargo build --workspace --bins` first, so both exist.

#![allow(clippy::unwrap_used, dead_code, unused_imports)] // each test binary uses a part

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::{
    ApproveCertificateSigningRequestRequest, CertificateSigningRequest,
    CertificateSigningRequestSpec, CreateCertificateSigningRequestRequest, Decision,
    GetCertificateSigningRequestRequest, ObjectMeta, RenewalStatement, RevocationReason,
    RevocationStatement, SignedStatement,
};
use certsign_tests::evidence::{self, sign_approval, sign_renewal};
use certsign_tests::pki::{Ident, MintSpec};
use certsign_tests::stack::{approver_spawn, signer_spawn};
use prost::Message as _;
use rcgen::KeyPair;
use tonic::transport::Channel;
use x509_parser::prelude::FromDer as _;
use x509_parser::revocation_list::CertificateRevocationList;

pub use certsign_tests::pki::{Pki, csr_with_key, pem_der};
pub use certsign_tests::process::{Daemon, bin_dir, dead_addr};
pub use certsign_tests::wait::{condition_types, wait_done};
pub use certsign_tests::{edit_toml, grpc};

pub const APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const IDENTITY: &str = "certsign.io/identity";

pub fn signer_bin() -> PathBuf {
    certsign_tests::bin("certsign-signer")
}

/// A user identity: certificate (PEM and DER) and key.
pub struct User {
    pub name: String,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
}

impl User {
    fn from_ident(name: &str, i: Ident) -> User {
        User {
            name: name.into(),
            cert_pem: i.cert_pem,
            cert_der: i.cert_der,
            key_pem: i.key_pem,
        }
    }

    pub fn key(&self) -> KeyPair {
        KeyPair::from_pem(&self.key_pem).unwrap()
    }

    fn ident(&self) -> Ident {
        Ident {
            cert_pem: self.cert_pem.clone(),
            cert_der: self.cert_der.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

/// The approver's users on an init PKI.
pub trait Users {
    /// The init admin.
    fn admin(&self) -> User;
    /// A client identity `cn` in groups `orgs`, signed with the init CA.
    fn user(&self, cn: &str, orgs: &[&str]) -> User;
}

impl Users for Pki {
    fn admin(&self) -> User {
        User::from_ident("admin", self.admin_ident())
    }

    fn user(&self, cn: &str, orgs: &[&str]) -> User {
        User::from_ident(cn, self.mint(&MintSpec::client(cn, orgs)))
    }
}

/// Start the signer from the init config on `listen` (e.g. 127.0.0.1:0).
pub fn start_signer(pki: &Pki, listen: &str) -> Daemon {
    signer_spawn(pki, listen, |_| {}).fresh_log().start()
}

/// Point the approver at `signer_addr`, listen on port 0, then start it.
pub fn start_approver(pki: &Pki, signer_addr: &str) -> Daemon {
    approver_spawn(pki, signer_addr, |_| {}).fresh_log().start()
}

/// A signer and an approver on one init PKI.
pub struct Stack {
    pub pki: Pki,
    pub signer: Daemon,
    pub approver: Daemon,
}

impl Stack {
    pub fn start() -> Stack {
        Self::start_with(|_| {})
    }

    pub fn start_with(edit: impl FnOnce(&mut toml::Table)) -> Stack {
        let pki = Pki::init();
        pki.edit_approver(edit);
        let signer = start_signer(&pki, "127.0.0.1:0");
        let approver = start_approver(&pki, &signer.addr);
        Stack {
            pki,
            signer,
            approver,
        }
    }

    pub async fn client(&self, user: &User) -> ApproverClient<Channel> {
        client(&self.pki, &self.approver.addr, Some(user)).await
    }

    /// The init admin and a user `cn` (no groups), each with a client:
    /// (admin, admin's client, user, user's client).
    pub async fn admin_and_user(
        &self,
        cn: &str,
    ) -> (User, ApproverClient<Channel>, User, ApproverClient<Channel>) {
        let admin = self.pki.admin();
        let user = self.pki.user(cn, &[]);
        let u = self.client(&user).await;
        let adm = self.client(&admin).await;
        (admin, adm, user, u)
    }
}

/// A tonic client over TLS to `addr`; with a client certificate if `user`.
pub async fn client(pki: &Pki, addr: &str, user: Option<&User>) -> ApproverClient<Channel> {
    let ident = user.map(User::ident);
    grpc::approver_client(addr, &pki.ca_pem(), ident.as_ref()).await
}

/// A CSR (PEM) for `cn` / `orgs` with DNS SANs `dns`, and its key.
pub fn make_csr(cn: &str, orgs: &[&str], dns: &[&str]) -> (String, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let pem = csr_with_key(&key, cn, orgs, dns);
    (pem, key)
}

pub fn new_csr(
    name: &str,
    pem: &str,
    signer: &str,
    usages: &[&str],
    expiration: Option<i32>,
) -> CreateCertificateSigningRequestRequest {
    CreateCertificateSigningRequestRequest {
        certificate_signing_request: Some(CertificateSigningRequest {
            metadata: Some(ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(CertificateSigningRequestSpec {
                request: pem.as_bytes().to_vec(),
                signer_name: signer.into(),
                usages: usages.iter().map(|s| s.to_string()).collect(),
                expiration_seconds: expiration,
                ..Default::default()
            }),
            status: None,
            ..Default::default()
        }),
        renewal: None,
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn csr_sha256(pem: &[u8]) -> Vec<u8> {
    evidence::csr_sha256(pem)
}

fn now() -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: unix_now(),
        nanos: 0,
    })
}

/// `admin` signs a statement with `decision` about `csr`.
pub fn statement(
    admin: &User,
    csr: &CertificateSigningRequest,
    decision: Decision,
) -> SignedStatement {
    let st = grpc::statement_for(csr, decision);
    sign_approval(&st, &admin.key(), vec![admin.cert_der.clone()])
}

/// A renewal statement for `name`/`csr_pem`, signed by `holder`.
pub fn renewal(holder: &User, name: &str, csr_pem: &str, signer: &str) -> SignedStatement {
    let st = RenewalStatement {
        request_name: name.into(),
        csr_sha256: csr_sha256(csr_pem.as_bytes()),
        signer_name: signer.into(),
        current_certificate_sha256: evidence::sha256(&holder.cert_der),
        signed_at: now(),
    };
    sign_renewal(&st, &holder.key(), vec![holder.cert_der.clone()])
}

pub async fn approve(
    c: &mut ApproverClient<Channel>,
    admin: &User,
    csr: &CertificateSigningRequest,
) -> Result<CertificateSigningRequest, tonic::Status> {
    c.approve_certificate_signing_request(ApproveCertificateSigningRequestRequest {
        name: csr.metadata.as_ref().unwrap().name.clone(),
        approval: Some(statement(admin, csr, Decision::Approve)),
        reason: String::new(),
        message: String::new(),
    })
    .await
    .map(|r| r.into_inner())
}

pub async fn get(
    c: &mut ApproverClient<Channel>,
    name: &str,
) -> Result<CertificateSigningRequest, tonic::Status> {
    c.get_certificate_signing_request(GetCertificateSigningRequestRequest { name: name.into() })
        .await
        .map(|r| r.into_inner())
}

/// `openssl verify` (an outside judge) of the issued chain against the CA.
pub fn openssl_verify(pki: &Pki, cert_pem: &[u8]) {
    let scratch = pki.dir.join(format!("verify-{}.pem", uuid::Uuid::new_v4()));
    certsign_tests::records::openssl_verify(&pki.p("ca.crt"), cert_pem, &scratch);
}

/// Leaf PEM of a `status.certificate` chain (the first block).
pub fn leaf_pem(chain: &[u8]) -> String {
    let s = String::from_utf8(chain.to_vec()).unwrap();
    let end = s.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    format!("{}\n", &s[..end])
}

/// `c` creates the request `req`; it must be accepted. Returns the stored
/// object.
pub async fn create(
    c: &mut ApproverClient<Channel>,
    req: CreateCertificateSigningRequestRequest,
) -> CertificateSigningRequest {
    c.create_certificate_signing_request(req)
        .await
        .unwrap()
        .into_inner()
}

/// A create request for a client certificate (`client auth`, no lifetime
/// asked) with a fresh CSR for `cn`.
pub fn client_csr(name: &str, cn: &str) -> CreateCertificateSigningRequestRequest {
    let (pem, _) = make_csr(cn, &[], &[]);
    new_csr(name, &pem, APISERVER_CLIENT, &["client auth"], None)
}

// === revocation and CRLs ===

/// Create `name` for `user`, have the admin approve it, wait for the
/// certificate; returns the holder (the issued certificate and its key).
pub async fn issued_to(pki: &Pki, approver: &str, admin: &User, user: &User, name: &str) -> User {
    let mut c = client(pki, approver, Some(user)).await;
    let (pem, key) = make_csr(&user.name, &[], &[]);
    let created = create(
        &mut c,
        new_csr(name, &pem, APISERVER_CLIENT, &["client auth"], None),
    )
    .await;
    let mut adm = client(pki, approver, Some(admin)).await;
    approve(&mut adm, admin, &created).await.unwrap();
    let done = wait_done(&mut c, name).await;
    let cert_pem = leaf_pem(&done.status.unwrap().certificate);
    User {
        name: user.name.clone(),
        cert_der: pem_der(&cert_pem),
        cert_pem,
        key_pem: key.serialize_pem(),
    }
}

pub fn serial_of(cert_der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(cert_der).unwrap();
    hex::encode(c.raw_serial())
}

/// A RevocationStatement for `holder`'s certificate signed by `signer`.
pub fn revocation(holder: &User, signer: &User) -> SignedStatement {
    let st = RevocationStatement {
        serial_number: serial_of(&holder.cert_der),
        certificate_sha256: certsign_tests::evidence::sha256(&holder.cert_der),
        reason: RevocationReason::KeyCompromise as i32,
        signed_at: Some(certsign_tests::grpc::ts(0)),
    };
    certsign_tests::evidence::sign_bytes(
        certsign_evidence::REVOCATION_CONTEXT,
        st.encode_to_vec(),
        &signer.key(),
        vec![signer.cert_der.clone()],
    )
}

pub fn crl_serials(crl_der: &[u8]) -> Vec<String> {
    let (_, crl) = CertificateRevocationList::from_der(crl_der).unwrap();
    crl.iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect()
}

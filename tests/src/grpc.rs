//! In-process gRPC helpers for the integration suites: tonic channels over
//! real mTLS, create and approve requests, and approval statements bound
//! to a request as an admin would sign them.
//!
//! It must never bypass a daemon to make a test pass: it only plays the
//! parts of users, admins and attackers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::{
    ApprovalStatement, ApproveCertificateSigningRequestRequest, CertificateSigningRequest,
    CertificateSigningRequestSpec, CreateCertificateSigningRequestRequest, Decision, ObjectMeta,
    SignedStatement,
};
use rcgen::KeyPair;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::evidence::{csr_sha256, sign_approval};

pub use crate::pki::{Ident, MintSpec, csr, mint_with, pem_der, rogue_ca};
pub use crate::records::{
    JournalIssue, journal_issued, journal_refusals, serial_of, sqlite_integrity_check,
};
pub use crate::wait::{block_on, wait_final, wait_issued};

/// `kubernetes.io/kube-apiserver-client`.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The usages a client certificate asks for.
pub const CLIENT_USAGES: &[&str] = &["digital signature", "client auth"];

/// TLS to a loopback daemon trusting `ca_pem`, as `ident` if given.
fn tls(ca_pem: &str, ident: Option<&Ident>) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("127.0.0.1");
    if let Some(i) = ident {
        tls = tls.identity(Identity::from_pem(&i.cert_pem, &i.key_pem));
    }
    tls
}

/// A lazy mTLS channel to `addr` trusting `ca_pem`.
pub fn channel(addr: &str, ca_pem: &str, ident: Option<&Ident>) -> Channel {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls(ca_pem, ident))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect_lazy()
}

/// [`channel`] with no connect or request deadline (a test that judges
/// how a call ends, not how long it takes).
pub fn lazy_channel(addr: &str, ca_pem: &str, ident: Option<&Ident>) -> Channel {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls(ca_pem, ident))
        .unwrap()
        .connect_lazy()
}

/// A channel to `addr` trusting `ca_pem`, connected now and with no
/// request deadline (long Watch streams).
pub async fn connect(addr: &str, ca_pem: &str, ident: Option<&Ident>) -> Channel {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls(ca_pem, ident))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A connected approver client (see [`connect`]).
pub async fn approver_client(
    addr: &str,
    ca_pem: &str,
    ident: Option<&Ident>,
) -> ApproverClient<Channel> {
    ApproverClient::new(connect(addr, ca_pem, ident).await)
}

/// A create request for a client certificate.
pub fn create_request(name: &str, csr_pem: &[u8]) -> CreateCertificateSigningRequestRequest {
    CreateCertificateSigningRequestRequest {
        certificate_signing_request: Some(CertificateSigningRequest {
            metadata: Some(ObjectMeta {
                name: name.to_string(),
                ..Default::default()
            }),
            spec: Some(CertificateSigningRequestSpec {
                request: csr_pem.to_vec(),
                signer_name: CLIENT_SIGNER.into(),
                usages: CLIENT_USAGES.iter().map(|u| u.to_string()).collect(),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        }),
        renewal: None,
    }
}

/// The current time as a protobuf timestamp, shifted by `offset_secs`.
pub fn ts(offset_secs: i64) -> prost_types::Timestamp {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    prost_types::Timestamp {
        seconds: i64::try_from(now).unwrap() + offset_secs,
        nanos: 0,
    }
}

/// The ApprovalStatement binding every field of `csr` (as the approver
/// returned it).
pub fn statement_for(csr: &CertificateSigningRequest, decision: Decision) -> ApprovalStatement {
    let meta = csr.metadata.clone().unwrap();
    let spec = csr.spec.clone().unwrap();
    ApprovalStatement {
        request_uid: meta.uid,
        request_name: meta.name,
        csr_sha256: csr_sha256(&spec.request),
        signer_name: spec.signer_name,
        usages: spec.usages,
        expiration_seconds: spec.expiration_seconds,
        requestor: spec.username,
        decision: decision as i32,
        signed_at: Some(ts(0)),
    }
}

/// Signs `st` with `ident`'s key, chain = its certificate.
pub fn sign(st: &ApprovalStatement, ident: &Ident) -> SignedStatement {
    sign_with_key(st, ident, &ident.key())
}

/// One batch statement over `statements` signed by `ident` (see
/// [`evidence::sign_batch`](crate::evidence::sign_batch)).
pub fn sign_batch(statements: &[ApprovalStatement], ident: &Ident) -> Vec<SignedStatement> {
    crate::evidence::sign_batch(statements, &ident.key(), vec![ident.cert_der.clone()])
}

/// [`sign`] with `ident`'s key already parsed (parsing a PKCS#8 key
/// derives its public key: a load generator signing thousands of
/// approvals parses it once).
pub fn sign_with_key(st: &ApprovalStatement, ident: &Ident, key: &KeyPair) -> SignedStatement {
    sign_approval(st, key, vec![ident.cert_der.clone()])
}

/// The approve call for `csr` signed by `admin`.
pub fn approve_request(
    csr: &CertificateSigningRequest,
    admin: &Ident,
) -> ApproveCertificateSigningRequestRequest {
    approve_request_with_key(csr, admin, &admin.key())
}

/// [`approve_request`] with `admin`'s key already parsed.
pub fn approve_request_with_key(
    csr: &CertificateSigningRequest,
    admin: &Ident,
    key: &KeyPair,
) -> ApproveCertificateSigningRequestRequest {
    ApproveCertificateSigningRequestRequest {
        name: csr.metadata.as_ref().unwrap().name.clone(),
        approval: Some(sign_with_key(
            &statement_for(csr, Decision::Approve),
            admin,
            key,
        )),
        reason: String::new(),
        message: String::new(),
    }
}

/// `certsign.io/identity`, the stack's custom profile.
pub const IDENTITY_SIGNER: &str = "certsign.io/identity";

/// One change to a request object.
pub type Change = fn(&mut CertificateSigningRequest);

/// Each field an approval binds, changed after the approval was signed:
/// (what was changed, the change, the signer's refusal rule). The swapped
/// CSR is a fresh one for the same name.
pub fn bound_field_changes() -> [(&'static str, Change, &'static str); 6] {
    [
        (
            "swap the CSR",
            |r| {
                let name = r
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                r.spec.get_or_insert_default().request = csr(&name, &[]).1
            },
            "bound field: statement csr_sha256",
        ),
        (
            "add a usage",
            |r| {
                r.spec
                    .get_or_insert_default()
                    .usages
                    .push("key encipherment".into())
            },
            "bound field: statement usages",
        ),
        (
            "lengthen the duration",
            |r| r.spec.get_or_insert_default().expiration_seconds = Some(86400 * 365),
            "bound field: statement expiration_seconds",
        ),
        (
            "move to another signer name",
            |r| r.spec.get_or_insert_default().signer_name = IDENTITY_SIGNER.into(),
            "bound field: statement signer_name",
        ),
        (
            "change the requestor",
            |r| r.spec.get_or_insert_default().username = "eve".into(),
            "bound field: statement requestor",
        ),
        (
            "rename the request",
            |r| r.metadata.get_or_insert_default().name = "other-name".into(),
            "bound field: statement request_name",
        ),
    ]
}

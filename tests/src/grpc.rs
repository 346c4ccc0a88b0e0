//! In-process gRPC helpers for the reliability and security suites: tonic
//! clients over real mTLS to a running [`Stack`], identities minted with the
//! init CA (test setup only), CSRs made with rcgen, signed approval
//! statements, and readers for the signer's journal and the approver's
//! SQLite store.
//!
//! It must never bypass a daemon to make a test pass: it only plays the
//! parts of users, admins and attackers, and reads the records to judge.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certsign_evidence::{APPROVAL_CONTEXT, sign_statement};
use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::signer_client::SignerClient;
use certsign_proto::v1::{
    ApprovalStatement, ApproveCertificateSigningRequestRequest, CertificateSigningRequest,
    CertificateSigningRequestCondition, CertificateSigningRequestSpec,
    CertificateSigningRequestStatus, CreateCertificateSigningRequestRequest, Decision,
    GetCertificateSigningRequestRequest, ObjectMeta, SignedStatement,
};
use prost::Message as _;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::Stack;

/// `kubernetes.io/kube-apiserver-client`.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The usages a client certificate asks for.
pub const CLIENT_USAGES: &[&str] = &["digital signature", "client auth"];

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Ident {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Certificate DER.
    pub cert_der: Vec<u8>,
    /// Key PEM (PKCS#8).
    pub key_pem: String,
}

impl Ident {
    /// Loads a certificate and key from PEM files.
    pub fn load(cert: &Path, key: &Path) -> Ident {
        let cert_pem = std::fs::read_to_string(cert).unwrap();
        Ident {
            cert_der: pem_der(&cert_pem),
            cert_pem,
            key_pem: std::fs::read_to_string(key).unwrap(),
        }
    }

    /// The key.
    pub fn key(&self) -> KeyPair {
        KeyPair::from_pem(&self.key_pem).unwrap()
    }
}

/// The DER of the first CERTIFICATE block of `pem`.
pub fn pem_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

/// What to mint: subject, validity relative to now, and who signs.
#[derive(Debug, Clone)]
pub struct MintSpec<'a> {
    /// Subject CN.
    pub cn: &'a str,
    /// Subject O values.
    pub orgs: &'a [&'a str],
    /// notBefore = now + this (negative: in the past).
    pub not_before: time::Duration,
    /// notAfter = now + this.
    pub not_after: time::Duration,
}

impl<'a> MintSpec<'a> {
    /// Valid from an hour ago for a day.
    pub fn new(cn: &'a str, orgs: &'a [&'a str]) -> Self {
        MintSpec {
            cn,
            orgs,
            not_before: time::Duration::hours(-1),
            not_after: time::Duration::days(1),
        }
    }
}

/// Mints a client certificate for `spec`, signed by `issuer_cert_pem` /
/// `issuer_key_pem` (test setup: plays the CA, or a rogue CA).
pub fn mint_with(spec: &MintSpec<'_>, issuer_cert_pem: &str, issuer_key_pem: &str) -> Ident {
    let ca_key = KeyPair::from_pem(issuer_key_pem).unwrap();
    let issuer = Issuer::from_ca_cert_pem(issuer_cert_pem, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, spec.cn);
    for o in spec.orgs {
        p.distinguished_name.push(DnType::OrganizationName, *o);
    }
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    p.subject_alt_names = vec![rcgen::SanType::IpAddress(std::net::IpAddr::V4(
        std::net::Ipv4Addr::LOCALHOST,
    ))];
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + spec.not_before;
    p.not_after = now + spec.not_after;
    let cert = p.signed_by(&key, &issuer).unwrap();
    Ident {
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
    }
}

/// A self-signed CA of its own (the "unknown CA" of the security tests):
/// (certificate PEM, key PEM).
pub fn rogue_ca(cn: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Stack {
    /// The CA certificate PEM.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca()).unwrap()
    }

    /// The init admin (CN admin, O system:masters).
    pub fn admin_ident(&self) -> Ident {
        let (c, k) = self.admin();
        Ident::load(&c, &k)
    }

    /// The approver's own TLS identity (the signer's only allowed client).
    pub fn approver_ident(&self) -> Ident {
        Ident::load(
            &self.dir.join("approver/tls.crt"),
            &self.dir.join("approver/tls.key"),
        )
    }

    /// Mints an identity with the stack's CA (test setup only).
    pub fn mint(&self, spec: &MintSpec<'_>) -> Ident {
        let key = std::fs::read_to_string(self.dir.join("signer/ca.key")).unwrap();
        mint_with(spec, &self.ca_pem(), &key)
    }

    /// An approver client as `ident` (None: no client certificate).
    pub fn approver_client(&self, ident: Option<&Ident>) -> ApproverClient<Channel> {
        ApproverClient::new(channel(&self.approver.addr, &self.ca_pem(), ident))
            .max_decoding_message_size(64 << 20)
    }

    /// A signer client as `ident`.
    pub fn signer_client(&self, ident: Option<&Ident>) -> SignerClient<Channel> {
        SignerClient::new(channel(&self.signer.addr, &self.ca_pem(), ident))
    }

    /// The signer's journal path.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("signer/journal.jsonl")
    }

    /// The approver's SQLite database path.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("approver/approver.db")
    }
}

/// A lazy mTLS channel to `addr` trusting `ca_pem`.
pub fn channel(addr: &str, ca_pem: &str, ident: Option<&Ident>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("127.0.0.1");
    if let Some(i) = ident {
        tls = tls.identity(Identity::from_pem(&i.cert_pem, &i.key_pem));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect_lazy()
}

/// A fresh P-256 key and a CSR for `cn` / `orgs`: (key, CSR PEM).
pub fn csr(cn: &str, orgs: &[&str]) -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    for o in orgs {
        p.distinguished_name.push(DnType::OrganizationName, *o);
    }
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    (key, pem.into_bytes())
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
    let der = certsign_evidence::csr_der_from_pem(&spec.request).unwrap();
    ApprovalStatement {
        request_uid: meta.uid,
        request_name: meta.name,
        csr_sha256: certsign_evidence::sha256(&der).to_vec(),
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

/// [`sign`] with `ident`'s key already parsed (parsing a PKCS#8 key
/// derives its public key: a load generator signing thousands of
/// approvals parses it once).
pub fn sign_with_key(st: &ApprovalStatement, ident: &Ident, key: &KeyPair) -> SignedStatement {
    sign_statement(
        APPROVAL_CONTEXT,
        st.encode_to_vec(),
        key,
        vec![ident.cert_der.clone()],
    )
    .unwrap()
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

/// One `issued` line of the signer's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalIssue {
    /// Request uid.
    pub uid: String,
    /// Request name.
    pub name: String,
    /// Serial, hex.
    pub serial: String,
    /// CSR hash, hex.
    pub csr_sha256: String,
    /// "approvals", "renewal", "approver", "console".
    pub evidence: String,
    /// The Sign caller.
    pub caller: String,
    /// Certificate chain PEM.
    pub certificate: String,
}

/// Polls `name` every 100 ms, as `client` sees it, until it is final:
/// it has a certificate or a Failed or Denied condition. Returns it then;
/// fails the test, naming the request, after 120 s.
pub async fn wait_final(
    client: &mut ApproverClient<Channel>,
    name: &str,
) -> CertificateSigningRequest {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let csr = client
            .get_certificate_signing_request(GetCertificateSigningRequestRequest {
                name: name.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let status = csr.status.clone().unwrap_or_default();
        if !status.certificate.is_empty() || ended(&status).next().is_some() {
            return csr;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never finished within 120 s: {csr:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_final`], and the request must have ended issued: fails the test,
/// naming the request and its conditions, when it ended Failed or Denied.
pub async fn wait_issued(
    client: &mut ApproverClient<Channel>,
    name: &str,
) -> CertificateSigningRequest {
    let csr = wait_final(client, name).await;
    let status = csr.status.clone().unwrap_or_default();
    let ended: Vec<_> = ended(&status)
        .map(|c| (c.r#type.as_str(), c.reason.as_str(), c.message.as_str()))
        .collect();
    assert!(
        !status.certificate.is_empty(),
        "{name} ended without a certificate: {ended:?}"
    );
    csr
}

/// The conditions that end a request without a certificate: Failed and
/// Denied.
fn ended(
    status: &CertificateSigningRequestStatus,
) -> impl Iterator<Item = &CertificateSigningRequestCondition> {
    status
        .conditions
        .iter()
        .filter(|c| c.r#type == "Failed" || c.r#type == "Denied")
}

/// Every `issued` line of a journal, in order.
pub fn journal_issued(path: &Path) -> Vec<JournalIssue> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("journal line is not JSON ({e}): {l}"));
            if v["event"] != "issued" {
                return None;
            }
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            Some(JournalIssue {
                uid: s("uid"),
                name: s("name"),
                serial: s("serial"),
                csr_sha256: s("csr_sha256"),
                evidence: s("evidence"),
                caller: s("caller"),
                certificate: s("certificate"),
            })
        })
        .collect()
}

/// The count of `refused` lines of a journal.
pub fn journal_refusals(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "refused")
        .map(|v| v["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The serial (lowercase hex, no leading zeros stripped beyond DER) of the
/// first certificate in a PEM chain.
pub fn serial_of(pem: &[u8]) -> String {
    let der = pem_der(std::str::from_utf8(pem).unwrap());
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    hex::encode(cert.raw_serial())
}

/// `PRAGMA integrity_check` on a SQLite file with an outside tool (the
/// sqlite3 CLI when installed, else python3's sqlite3 module): its output.
pub fn sqlite_integrity_check(db: &Path) -> String {
    let cli = std::process::Command::new("sqlite3")
        .arg(db)
        .arg("PRAGMA integrity_check;")
        .output();
    if let Ok(out) = cli
        && out.status.success()
    {
        return String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    crate::run_ok(
        std::process::Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])")
            .arg(db),
    )
    .trim()
    .to_string()
}

/// Runs an async block on a fresh multi-threaded runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

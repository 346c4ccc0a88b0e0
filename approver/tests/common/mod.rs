//! Test harness for the approver's end-to-end tests: a PKI made by the real
//! `certsign-signer init`, the real `certsign-signer serve` and
//! `certsign-approver serve` processes on 127.0.0.1:0, tonic clients over
//! mTLS with identities signed by the init CA, and signed statements.
//!
//! The signer binary is looked up next to `certsign-approver`
//! (`target/<profile>/`); the test command runs `cargo build --workspace
//! --bins` first, so both exist.

#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certsign_evidence as evidence;
use certsign_proto::v1::approver_client::ApproverClient;
use certsign_proto::v1::{
    ApprovalStatement, ApproveCertificateSigningRequestRequest, CertificateSigningRequest,
    CertificateSigningRequestSpec, CreateCertificateSigningRequestRequest, Decision,
    GetCertificateSigningRequestRequest, ObjectMeta, RenewalStatement, SignedStatement,
    WatchCertificateSigningRequestsRequest,
};
use prost::Message as _;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub const APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const IDENTITY: &str = "certsign.io/identity";

pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_certsign-approver"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn signer_bin() -> PathBuf {
    let p = bin_dir().join("certsign-signer");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (tests/run.sh does)",
        p.display()
    );
    p
}

/// A user identity: certificate (PEM and DER) and key.
pub struct User {
    pub name: String,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
}

impl User {
    pub fn key(&self) -> KeyPair {
        KeyPair::from_pem(&self.key_pem).unwrap()
    }
}

/// The PKI and configs of one `certsign-signer init`.
pub struct Pki {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Pki {
    pub fn init() -> Pki {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        let out = Command::new(signer_bin())
            .args(["init", "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pki { dir, _tmp: tmp }
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.join("ca.crt")).unwrap()
    }

    pub fn approver_toml(&self) -> PathBuf {
        self.dir.join("approver/approver.toml")
    }

    pub fn signer_toml(&self) -> PathBuf {
        self.dir.join("signer/signer.toml")
    }

    pub fn admin(&self) -> User {
        let cert_pem = std::fs::read_to_string(self.dir.join("admin/admin.crt")).unwrap();
        let key_pem = std::fs::read_to_string(self.dir.join("admin/admin.key")).unwrap();
        User {
            name: "admin".into(),
            cert_der: pem_der(&cert_pem),
            cert_pem,
            key_pem,
        }
    }

    /// A client identity `cn` in groups `orgs`, signed with the init CA.
    pub fn user(&self, cn: &str, orgs: &[&str]) -> User {
        let ca_key =
            KeyPair::from_pem(&std::fs::read_to_string(self.dir.join("signer/ca.key")).unwrap())
                .unwrap();
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem(), ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name.push(DnType::OrganizationName, *o);
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(1);
        let cert = p.signed_by(&key, &issuer).unwrap();
        User {
            name: cn.into(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn edit_approver(&self, f: impl FnOnce(&mut toml::Table)) {
        edit_toml(&self.approver_toml(), f);
    }
}

pub fn pem_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

pub fn edit_toml(path: &Path, f: impl FnOnce(&mut toml::Table)) {
    let mut t: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    f(&mut t);
    std::fs::write(path, toml::to_string(&t).unwrap()).unwrap();
}

/// A running daemon, killed (SIGKILL) when dropped.
pub struct Daemon {
    child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(program: &Path, config: &Path, log: &Path) -> Daemon {
        let mut child = Command::new(program)
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(a) = line.trim().strip_prefix("listening on ") {
                    let _ = tx.send(a.to_string());
                    sent = true;
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => Daemon {
                child,
                addr,
                log: log.to_path_buf(),
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not print `listening on`: {}",
                    program.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Start the signer from the init config on `listen` (e.g. 127.0.0.1:0).
pub fn start_signer(pki: &Pki, listen: &str) -> Daemon {
    edit_toml(&pki.signer_toml(), |t| {
        t.insert("listen".into(), listen.into());
    });
    Daemon::start(
        &signer_bin(),
        &pki.signer_toml(),
        &pki.dir.join("signer.log"),
    )
}

/// A loopback address nothing listens on (a signer that is down).
pub fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Point the approver at `signer_addr`, listen on port 0, then start it.
pub fn start_approver(pki: &Pki, signer_addr: &str) -> Daemon {
    pki.edit_approver(|t| {
        t.insert("listen".into(), "127.0.0.1:0".into());
        let s = t.get_mut("signer").unwrap().as_table_mut().unwrap();
        s.insert(
            "endpoints".into(),
            toml::Value::Array(vec![format!("https://{signer_addr}").into()]),
        );
    });
    Daemon::start(
        &bin_dir().join("certsign-approver"),
        &pki.approver_toml(),
        &pki.dir.join("approver.log"),
    )
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
}

/// A tonic client over TLS to `addr`; with a client certificate if `user`.
pub async fn client(pki: &Pki, addr: &str, user: Option<&User>) -> ApproverClient<Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.ca_pem()));
    if let Some(u) = user {
        tls = tls.identity(Identity::from_pem(&u.cert_pem, &u.key_pem));
    }
    let ch = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    ApproverClient::new(ch)
}

/// A CSR (PEM) for `cn` / `orgs` with DNS SANs `dns`, and its key.
pub fn make_csr(cn: &str, orgs: &[&str], dns: &[&str]) -> (String, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let pem = csr_with_key(&key, cn, orgs, dns);
    (pem, key)
}

pub fn csr_with_key(key: &KeyPair, cn: &str, orgs: &[&str], dns: &[&str]) -> String {
    let mut p =
        CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    for o in orgs {
        p.distinguished_name.push(DnType::OrganizationName, *o);
    }
    p.serialize_request(key).unwrap().pem().unwrap()
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
    let der = certsign_evidence::csr_der_from_pem(pem).unwrap();
    certsign_evidence::sha256(&der).to_vec()
}

/// `admin` signs a statement with `decision` about `csr`.
pub fn statement(
    admin: &User,
    csr: &CertificateSigningRequest,
    decision: Decision,
) -> SignedStatement {
    let meta = csr.metadata.clone().unwrap();
    let spec = csr.spec.clone().unwrap();
    let st = ApprovalStatement {
        request_uid: meta.uid,
        request_name: meta.name,
        csr_sha256: csr_sha256(&spec.request),
        signer_name: spec.signer_name,
        usages: spec.usages,
        expiration_seconds: spec.expiration_seconds,
        requestor: spec.username,
        decision: decision as i32,
        signed_at: Some(prost_types::Timestamp {
            seconds: unix_now(),
            nanos: 0,
        }),
    };
    evidence::sign_statement(
        evidence::APPROVAL_CONTEXT,
        st.encode_to_vec(),
        &admin.key(),
        vec![admin.cert_der.clone()],
    )
    .unwrap()
}

/// A renewal statement for `name`/`csr_pem`, signed by `holder`.
pub fn renewal(holder: &User, name: &str, csr_pem: &str, signer: &str) -> SignedStatement {
    let st = RenewalStatement {
        request_name: name.into(),
        csr_sha256: csr_sha256(csr_pem.as_bytes()),
        signer_name: signer.into(),
        current_certificate_sha256: certsign_evidence::sha256(&holder.cert_der).to_vec(),
        signed_at: Some(prost_types::Timestamp {
            seconds: unix_now(),
            nanos: 0,
        }),
    };
    evidence::sign_statement(
        evidence::RENEWAL_CONTEXT,
        st.encode_to_vec(),
        &holder.key(),
        vec![holder.cert_der.clone()],
    )
    .unwrap()
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

/// Wait, through Watch, until `name` has a certificate or a Failed
/// condition; returns the object. Gives up after two minutes (a hang is a
/// failure, not a timing assertion).
pub async fn wait_done(c: &mut ApproverClient<Channel>, name: &str) -> CertificateSigningRequest {
    let fut = async {
        let mut stream = c
            .watch_certificate_signing_requests(WatchCertificateSigningRequestsRequest {
                name: name.into(),
                signer_name: String::new(),
                send_initial_events: true,
            })
            .await
            .unwrap()
            .into_inner();
        while let Some(ev) = stream.message().await.unwrap() {
            let obj = ev.object.unwrap();
            let status = obj.status.clone().unwrap_or_default();
            if !status.certificate.is_empty()
                || status.conditions.iter().any(|c| c.r#type == "Failed")
            {
                return obj;
            }
        }
        panic!("watch ended before {name} was done");
    };
    tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .unwrap_or_else(|_| panic!("{name} was not issued or failed within two minutes"))
}

pub fn condition_types(csr: &CertificateSigningRequest) -> Vec<String> {
    csr.status
        .as_ref()
        .map(|s| s.conditions.iter().map(|c| c.r#type.clone()).collect())
        .unwrap_or_default()
}

/// `openssl verify` (an outside judge) of the issued chain against the CA.
pub fn openssl_verify(pki: &Pki, cert_pem: &[u8]) {
    let path = pki.dir.join(format!("verify-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&path, cert_pem).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(pki.dir.join("ca.crt"))
        .arg(&path)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Leaf PEM of a `status.certificate` chain (the first block).
pub fn leaf_pem(chain: &[u8]) -> String {
    let s = String::from_utf8(chain.to_vec()).unwrap();
    let end = s.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    format!("{}\n", &s[..end])
}

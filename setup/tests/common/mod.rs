//! Shared test helpers: a real `init` PKI in a temp dir, the real `serve`
//! binary on 127.0.0.1:0, a tonic mTLS client, openssl-made CSRs and admin
//! statements signed with the admin key `init` wrote.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certsign_evidence::{APPROVAL_CONTEXT, sign_statement};
use certsign_proto::v1::signer_client::SignerClient;
use certsign_proto::v1::{
    ApprovalStatement, CertificateSigningRequest, CertificateSigningRequestSpec, Decision,
    ObjectMeta, SignRequest, SignedStatement,
};
use prost::Message;
use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub const BIN: &str = env!("CARGO_BIN_EXE_certsign-signer");
pub const CLIENT: &str = "kubernetes.io/kube-apiserver-client";

pub struct Pki {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Pki {
    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
    pub fn config(&self) -> PathBuf {
        self.p("signer/signer.toml")
    }
}

pub fn run(args: &[&str]) -> std::process::Output {
    run_env(args, &[])
}

/// Run the binary with extra environment variables (e.g. SOFTHSM2_CONF).
pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// `certsign-signer init` into a fresh temp dir, signer listening on port 0.
pub fn init(extra: &[&str]) -> Pki {
    init_env(extra, &[])
}

/// `init` with extra environment variables.
pub fn init_env(extra: &[&str], env: &[(&str, &str)]) -> Pki {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let mut args = vec!["init", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run_env(&args, env);
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.join("signer/signer.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("listen = \"127.0.0.1:7443\"", "listen = \"127.0.0.1:0\""),
    )
    .unwrap();
    Pki { _tmp: tmp, dir }
}

pub struct Server {
    child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve(pki: &Pki) -> Server {
    serve_env(pki, &[])
}

/// `serve` with extra environment variables.
pub fn serve_env(pki: &Pki, env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--config", pki.config().to_str().unwrap()])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("serve printed no line");
    let addr = line
        .strip_prefix("listening on ")
        .expect("listening on line")
        .to_string();
    Server { child, addr }
}

/// A tonic client with the given identity (PEM files).
pub async fn client_as(
    pki: &Pki,
    server: &Server,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> SignerClient<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ))
        .domain_name("127.0.0.1");
    let _ = pki;
    let ch = Endpoint::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy();
    SignerClient::new(ch)
}

/// The approver's client (the allow-listed caller).
pub async fn client(pki: &Pki, server: &Server) -> SignerClient<Channel> {
    identity_client(pki, server, "approver/tls").await
}

/// The admin's client: trusted by the CA, not on the signer's allow-list.
pub async fn admin_client(pki: &Pki, server: &Server) -> SignerClient<Channel> {
    identity_client(pki, server, "admin/admin").await
}

/// A client with the `init` identity `<stem>.crt` / `<stem>.key`.
async fn identity_client(pki: &Pki, server: &Server, stem: &str) -> SignerClient<Channel> {
    client_as(
        pki,
        server,
        &pki.p("ca.crt"),
        &pki.p(&format!("{stem}.crt")),
        &pki.p(&format!("{stem}.key")),
    )
    .await
}

/// An openssl-made key + CSR; returns (csr PEM, key path).
pub fn openssl_csr(
    pki: &Pki,
    name: &str,
    newkey: &[&str],
    subj: &str,
    addext: &[&str],
) -> (Vec<u8>, PathBuf) {
    let key = pki.p(&format!("{name}.key"));
    let csr = pki.p(&format!("{name}.csr"));
    let mut c = Command::new("openssl");
    c.args(["req", "-new", "-nodes"])
        .args(newkey)
        .args(["-subj", subj]);
    for e in addext {
        c.args(["-addext", e]);
    }
    c.args([
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
    ]);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (std::fs::read(&csr).unwrap(), key)
}

pub const P256: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
pub const P384: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"];
pub const ED25519: &[&str] = &["-newkey", "ed25519"];
pub const RSA2048: &[&str] = &["-newkey", "rsa:2048"];

pub fn request(
    uid: &str,
    csr: &[u8],
    signer: &str,
    usages: &[&str],
    exp: Option<i32>,
    user: &str,
) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: Some(ObjectMeta {
            name: format!("{uid}-name"),
            uid: uid.into(),
            ..Default::default()
        }),
        spec: Some(CertificateSigningRequestSpec {
            request: csr.to_vec(),
            signer_name: signer.into(),
            expiration_seconds: exp,
            usages: usages.iter().map(|u| u.to_string()).collect(),
            username: user.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn now_ts(offset_secs: i64) -> prost_types::Timestamp {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    prost_types::Timestamp {
        seconds: now + offset_secs,
        nanos: 0,
    }
}

/// The ApprovalStatement that matches `req`.
pub fn statement_for(req: &CertificateSigningRequest) -> ApprovalStatement {
    let meta = req.metadata.clone().unwrap();
    let spec = req.spec.clone().unwrap();
    let der = certsign_evidence::csr_der_from_pem(&spec.request).unwrap();
    ApprovalStatement {
        request_uid: meta.uid,
        request_name: meta.name,
        csr_sha256: certsign_evidence::sha256(&der).to_vec(),
        signer_name: spec.signer_name,
        usages: spec.usages,
        expiration_seconds: spec.expiration_seconds,
        requestor: spec.username,
        decision: Decision::Approve as i32,
        signed_at: Some(now_ts(0)),
    }
}

pub fn sign_with(st: &ApprovalStatement, key: &KeyPair, cert_der: Vec<u8>) -> SignedStatement {
    sign_statement(APPROVAL_CONTEXT, st.encode_to_vec(), key, vec![cert_der]).unwrap()
}

/// The admin identity `init` wrote: (key, cert DER).
pub fn admin(pki: &Pki) -> (KeyPair, Vec<u8>) {
    let key =
        KeyPair::from_pem(&std::fs::read_to_string(pki.p("admin/admin.key")).unwrap()).unwrap();
    let cert = CertificateDer::from_pem_file(pki.p("admin/admin.crt"))
        .unwrap()
        .to_vec();
    (key, cert)
}

/// A statement approving `req`, signed by the init admin.
pub fn approve(pki: &Pki, req: &CertificateSigningRequest) -> SignedStatement {
    let (k, c) = admin(pki);
    sign_with(&statement_for(req), &k, c)
}

/// Mint an extra identity directly with the CA key (test setup only).
pub fn mint(
    pki: &Pki,
    cn: &str,
    orgs: &[&str],
    not_before_days: i64,
    not_after_days: i64,
) -> (KeyPair, Vec<u8>) {
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(pki.p("signer/ca.key")).unwrap()).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(pki.p("ca.crt")).unwrap(), ca_key)
            .unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    for o in orgs {
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(not_before_days);
    p.not_after = now + time::Duration::days(not_after_days);
    p.use_authority_key_identifier_extension = true;
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let der = p.signed_by(&key, &issuer).unwrap().der().to_vec();
    (key, der)
}

pub fn sign_request(
    req: CertificateSigningRequest,
    approvals: Vec<SignedStatement>,
) -> SignRequest {
    SignRequest {
        certificate_signing_request: Some(req),
        approvals,
        renewal: None,
    }
}

/// Write a PEM string's first certificate to a file, return path.
pub fn write_leaf(pki: &Pki, name: &str, pem: &[u8]) -> PathBuf {
    let der = CertificateDer::from_pem_slice(pem).unwrap();
    let path = pki.p(&format!("{name}.crt"));
    std::fs::write(&path, certsign_keys::pem("CERTIFICATE", &der).unwrap()).unwrap();
    path
}

pub fn openssl_verify(pki: &Pki, purpose: &str, cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
        .arg(pki.p("ca.crt"))
        .arg(cert)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A channel as the approver (the allow-listed identity).
pub fn channel(pki: &Pki, server: &Server) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(pki.p("ca.crt")).unwrap(),
        ))
        .identity(Identity::from_pem(
            std::fs::read(pki.p("approver/tls.crt")).unwrap(),
            std::fs::read(pki.p("approver/tls.key")).unwrap(),
        ))
        .domain_name("127.0.0.1");
    Endpoint::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy()
}

//! The signer's integration tests on the workspace harness
//! (`certsign-tests`): a real `init` PKI in a temp dir, the real `serve`
//! binary on 127.0.0.1:0, a tonic mTLS client, openssl-made CSRs and admin
//! statements signed with the admin key `init` wrote. What is here is only
//! the signer's vocabulary over the harness (this package's binary, Sign
//! requests, leaf files).
#![allow(clippy::unwrap_used, dead_code, unused_imports)] // each test binary uses a part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use certsign_proto::v1::signer_client::SignerClient;
use certsign_proto::v1::{
    ApprovalStatement, CertificateSigningRequest, CertificateSigningRequestSpec, Decision,
    ObjectMeta, SignRequest, SignedStatement,
};
use certsign_tests::evidence::sign_approval;
use certsign_tests::grpc::lazy_channel;
use certsign_tests::pki::{Ident, MintSpec};
use certsign_tests::process::{Daemon, Spawn};
use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tonic::transport::Channel;

pub use certsign_tests::pki::Pki;

pub const BIN: &str = env!("CARGO_BIN_EXE_certsign-signer");
pub const CLIENT: &str = "kubernetes.io/kube-apiserver-client";

/// A running `serve`, killed when dropped.
pub type Server = Daemon;

/// The signer's config of an init PKI.
pub trait SignerPki {
    /// `signer/signer.toml`.
    fn config(&self) -> PathBuf;
}

impl SignerPki for Pki {
    fn config(&self) -> PathBuf {
        self.signer_toml()
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
    let pki = Pki::init_with(Path::new(BIN), "pki", extra, env);
    let cfg = pki.config();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("listen = \"127.0.0.1:7443\"", "listen = \"127.0.0.1:0\""),
    )
    .unwrap();
    pki
}

pub fn serve(pki: &Pki) -> Server {
    serve_env(pki, &[])
}

/// `serve` with extra environment variables.
pub fn serve_env(pki: &Pki, env: &[(&str, &str)]) -> Server {
    Spawn::new(BIN, pki.p("signer.log"))
        .args(["serve", "--config", pki.config().to_str().unwrap()])
        .envs(env.iter().copied())
        .quiet()
        .start()
}

/// A tonic client with the given identity (PEM files).
pub async fn client_as(
    pki: &Pki,
    server: &Server,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> SignerClient<Channel> {
    let _ = pki;
    let ca_pem = std::fs::read_to_string(ca).unwrap();
    let ident = Ident::load(cert, key);
    SignerClient::new(lazy_channel(&server.addr, &ca_pem, Some(&ident)))
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
    certsign_tests::grpc::statement_for(req, Decision::Approve)
}

pub fn sign_with(st: &ApprovalStatement, key: &KeyPair, cert_der: Vec<u8>) -> SignedStatement {
    sign_approval(st, key, vec![cert_der])
}

/// The admin identity `init` wrote: (key, cert DER).
pub fn admin(pki: &Pki) -> (KeyPair, Vec<u8>) {
    let i = pki.admin_ident();
    (i.key(), i.cert_der)
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
    let i = pki.mint(&MintSpec::client_days(
        cn,
        orgs,
        not_before_days,
        not_after_days,
    ));
    (i.key(), i.cert_der)
}

pub fn sign_request(
    req: CertificateSigningRequest,
    approvals: Vec<SignedStatement>,
) -> SignRequest {
    SignRequest {
        request: Some(certsign_proto::v1::sign_request::Request::CertificateSigningRequest(req)),
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
    let ident = pki.approver_ident();
    lazy_channel(&server.addr, &pki.ca_pem(), Some(&ident))
}

/// A certificate issued by the running signer for an openssl P-256 CSR
/// (kube-apiserver-client, admin-approved): (certificate DER, holder key).
pub async fn issue_client(
    pki: &Pki,
    c: &mut SignerClient<Channel>,
    uid: &str,
    cn: &str,
) -> (Vec<u8>, KeyPair) {
    let (csr, key) = openssl_csr(pki, uid, P256, &format!("/CN={cn}/O=dev"), &[]);
    let req = request(uid, &csr, CLIENT, &["client auth"], Some(3600), cn);
    let appr = approve(pki, &req);
    let r = c.sign(sign_request(req, vec![appr])).await.unwrap();
    let der = CertificateDer::from_pem_slice(&r.into_inner().certificate).unwrap();
    let key = KeyPair::from_pem(&std::fs::read_to_string(key).unwrap()).unwrap();
    (der.to_vec(), key)
}

/// The lowercase hex serial of a certificate (as statements bind it).
pub fn serial_of(der: &[u8]) -> String {
    use x509_parser::prelude::FromDer;
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    certsign_evidence::serial_hex(c.raw_serial())
}

/// A RevocationStatement about `cert_der`, `signed_at` `offset_secs` from now.
pub fn revocation_statement(
    cert_der: &[u8],
    reason: i32,
    offset_secs: i64,
) -> certsign_proto::v1::RevocationStatement {
    certsign_proto::v1::RevocationStatement {
        serial_number: serial_of(cert_der),
        certificate_sha256: certsign_evidence::sha256(cert_der).to_vec(),
        reason,
        signed_at: Some(now_ts(offset_secs)),
    }
}

/// `st` signed with `key`, chain `[chain_der]`.
pub fn sign_revocation(
    st: &certsign_proto::v1::RevocationStatement,
    key: &KeyPair,
    chain_der: &[u8],
) -> SignedStatement {
    use prost::Message as _;
    certsign_evidence::sign_statement(
        certsign_evidence::REVOCATION_CONTEXT,
        st.encode_to_vec(),
        key,
        vec![chain_der.to_vec()],
    )
    .unwrap()
}

/// A `Sign` request asking to revoke `cert_der` with `statement`.
pub fn revocation_request(statement: SignedStatement, cert_der: &[u8]) -> SignRequest {
    SignRequest {
        request: Some(certsign_proto::v1::sign_request::Request::Revocation(
            certsign_proto::v1::Revocation {
                statement: Some(statement),
                certificate: cert_der.to_vec(),
            },
        )),
        ..Default::default()
    }
}

/// A `Sign` request asking for a fresh CRL.
pub fn crl_request() -> SignRequest {
    SignRequest {
        request: Some(certsign_proto::v1::sign_request::Request::Crl(
            certsign_proto::v1::CrlRequest {},
        )),
        ..Default::default()
    }
}

/// Ask for a CRL and write it as `<name>.der` and `<name>.pem`; returns the
/// DER and the PEM path.
pub async fn fetch_crl(pki: &Pki, c: &mut SignerClient<Channel>, name: &str) -> (Vec<u8>, PathBuf) {
    let r = c.sign(crl_request()).await.unwrap().into_inner();
    let (this, next) = (r.time.unwrap(), r.next_update.unwrap());
    assert!(next.seconds > this.seconds, "nextUpdate after thisUpdate");
    let der_path = pki.p(&format!("{name}.der"));
    std::fs::write(&der_path, &r.crl).unwrap();
    let pem_path = pki.p(&format!("{name}.pem"));
    std::fs::write(&pem_path, certsign_keys::pem("X509 CRL", &r.crl).unwrap()).unwrap();
    (r.crl, pem_path)
}

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What Python `cryptography` reads from a DER CRL: one line per entry,
/// `SERIALHEX REASON` (reason `-` without a reasonCode), then `number N`,
/// after it checked the signature with the CA's public key.
pub fn python_crl(pki: &Pki, der_path: &Path) -> String {
    let script = r#"
import sys
from cryptography import x509
crl = x509.load_der_x509_crl(open(sys.argv[1], "rb").read())
ca = x509.load_pem_x509_certificate(open(sys.argv[2], "rb").read())
assert crl.is_signature_valid(ca.public_key()), "CRL signature does not verify"
for r in crl:
    try:
        reason = r.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
    except x509.ExtensionNotFound:
        reason = "-"
    h = format(r.serial_number, "x")
    print("0" * (len(h) % 2) + h, reason)
print("number", crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
"#;
    let (ok, text) = output(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(der_path)
            .arg(pki.p("ca.crt")),
    );
    assert!(ok, "python cryptography: {text}");
    text
}

/// The CRL number Python `cryptography` reads.
pub fn crl_number(python_out: &str) -> u128 {
    python_out
        .lines()
        .find_map(|l| l.strip_prefix("number "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Every outside judge of a CRL from this CA: `openssl crl -verify`,
/// pkilint's CRL linter (nothing at WARNING or above), `openssl verify
/// -crl_check` refusing each of `revoked` and accepting each of `valid`
/// (certificate DERs). Returns what Python `cryptography` reads.
pub fn judge_crl(pki: &Pki, crl_pem: &Path, revoked: &[&[u8]], valid: &[&[u8]]) -> String {
    let ca = pki.p("ca.crt");
    let (ok, text) = output(
        Command::new("openssl")
            .args(["crl", "-noout", "-verify", "-CAfile"])
            .arg(&ca)
            .arg("-in")
            .arg(crl_pem),
    );
    assert!(
        ok && text.contains("verify OK"),
        "openssl crl -verify: {text}"
    );
    let der_path = crl_pem.with_extension("der");
    let (ok, text) = output(
        Command::new("lint_crl")
            .args([
                "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", "-f", "JSON",
            ])
            .arg(&der_path),
    );
    assert!(
        ok && !text.contains("\"severity\""),
        "pkilint CRL findings: {text}"
    );
    for (i, (der, expect_ok)) in revoked
        .iter()
        .map(|d| (d, false))
        .chain(valid.iter().map(|d| (d, true)))
        .enumerate()
    {
        let leaf = pki.p(&format!("judged-{i}.crt"));
        std::fs::write(&leaf, certsign_keys::pem("CERTIFICATE", der).unwrap()).unwrap();
        let (ok, text) = output(
            Command::new("openssl")
                .args(["verify", "-crl_check", "-CRLfile"])
                .arg(crl_pem)
                .arg("-CAfile")
                .arg(&ca)
                .arg(&leaf),
        );
        if expect_ok {
            assert!(ok && text.contains(": OK"), "unrevoked certificate: {text}");
        } else {
            assert!(
                !ok && text.contains("certificate revoked"),
                "revoked certificate accepted: {text}"
            );
        }
    }
    python_crl(pki, &der_path)
}

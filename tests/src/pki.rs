//! Test PKI: the directory `certsign-signer init` makes, identities minted
//! with its CA (or with a rogue CA), CSRs made with rcgen, and bootstrap
//! tokens.
//!
//! Minting with the init CA key is test setup only: it plays the operator
//! who holds the key. It must never stand in for the signer's issuance in a
//! test that judges the signer.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};

use crate::config::edit_toml;
use crate::process::{bin, run_ok};

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

/// What to mint: subject, validity relative to now, and the uses.
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
    /// Also serverAuth with the IP SAN 127.0.0.1 (an identity that can
    /// serve on loopback as well as call).
    pub server_too: bool,
}

impl<'a> MintSpec<'a> {
    /// Valid from an hour ago for a day, client and server on loopback.
    pub fn new(cn: &'a str, orgs: &'a [&'a str]) -> Self {
        MintSpec {
            cn,
            orgs,
            not_before: time::Duration::hours(-1),
            not_after: time::Duration::days(1),
            server_too: true,
        }
    }

    /// Valid from an hour ago for a day, clientAuth only, no SAN.
    pub fn client(cn: &'a str, orgs: &'a [&'a str]) -> Self {
        MintSpec {
            server_too: false,
            ..MintSpec::new(cn, orgs)
        }
    }

    /// clientAuth only, valid from `from_days` to `to_days` days from now.
    pub fn client_days(cn: &'a str, orgs: &'a [&'a str], from_days: i64, to_days: i64) -> Self {
        MintSpec {
            not_before: time::Duration::days(from_days),
            not_after: time::Duration::days(to_days),
            ..MintSpec::client(cn, orgs)
        }
    }
}

/// A distinguished name `CN=cn` with one `O` a value of `orgs`.
pub fn dn(cn: &str, orgs: &[&str]) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn
}

/// Mints a client certificate for `spec`, signed by `issuer_cert_pem` /
/// `issuer_key_pem` (test setup: plays the CA, or a rogue CA).
pub fn mint_with(spec: &MintSpec<'_>, issuer_cert_pem: &str, issuer_key_pem: &str) -> Ident {
    let ca_key = KeyPair::from_pem(issuer_key_pem).unwrap();
    let issuer = Issuer::from_ca_cert_pem(issuer_cert_pem, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = mint_params(spec).signed_by(&key, &issuer).unwrap();
    Ident {
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
    }
}

/// Mints a certificate for `spec` for a public key held elsewhere (e.g. in
/// a token): `spki_der` is its SubjectPublicKeyInfo. Returns the PEM.
pub fn mint_for_public_key(
    spec: &MintSpec<'_>,
    spki_der: &[u8],
    issuer_cert_pem: &str,
    issuer_key_pem: &str,
) -> String {
    let ca_key = KeyPair::from_pem(issuer_key_pem).unwrap();
    let issuer = Issuer::from_ca_cert_pem(issuer_cert_pem, ca_key).unwrap();
    let public = rcgen::SubjectPublicKeyInfo::from_der(spki_der).unwrap();
    mint_params(spec).signed_by(&public, &issuer).unwrap().pem()
}

/// The certificate parameters of `spec`.
fn mint_params(spec: &MintSpec<'_>) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = dn(spec.cn, spec.orgs);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if spec.server_too {
        p.extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
        p.subject_alt_names = vec![rcgen::SanType::IpAddress(std::net::IpAddr::V4(
            std::net::Ipv4Addr::LOCALHOST,
        ))];
    }
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + spec.not_before;
    p.not_after = now + spec.not_after;
    p
}

/// A self-signed CA of its own (the "unknown CA" of the security tests):
/// (certificate PEM, key PEM).
pub fn rogue_ca(cn: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = dn(cn, &[]);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A self-signed leaf certificate for `cn` / `orgs` that no CA issued.
pub fn self_signed(cn: &str, orgs: &[&str]) -> Ident {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = dn(cn, orgs);
    let c = p.self_signed(&key).unwrap();
    Ident {
        cert_pem: c.pem(),
        cert_der: c.der().to_vec(),
        key_pem: key.serialize_pem(),
    }
}

/// A CSR (PEM) with `key` for `cn` / `orgs` and DNS SANs `dns`.
pub fn csr_with_key(key: &KeyPair, cn: &str, orgs: &[&str], dns: &[&str]) -> String {
    let mut p =
        CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name = dn(cn, orgs);
    p.serialize_request(key).unwrap().pem().unwrap()
}

/// A fresh P-256 key and a CSR for `cn` / `orgs`: (key, CSR PEM).
pub fn csr(cn: &str, orgs: &[&str]) -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let pem = csr_with_key(&key, cn, orgs, &[]);
    (key, pem.into_bytes())
}

/// The PKI and configs of one `certsign-signer init` in a temp dir.
#[derive(Debug)]
pub struct Pki {
    /// The `init` directory.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Pki {
    /// `certsign-signer init` (the built binary) with the default key type.
    pub fn init() -> Pki {
        Pki::init_with(&bin("certsign-signer"), "ca", &[], &[])
    }

    /// `program init --dir <tmp>/<subdir> extra...` with extra environment.
    pub fn init_with(program: &Path, subdir: &str, extra: &[&str], env: &[(&str, &str)]) -> Pki {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(subdir);
        run_ok(
            Command::new(program)
                .args(["init", "--dir"])
                .arg(&dir)
                .args(extra)
                .envs(env.iter().copied()),
        );
        Pki { dir, _tmp: tmp }
    }

    /// A path inside the init directory.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// `ca.crt`, PEM.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.p("ca.crt")).unwrap()
    }

    /// `signer/signer.toml`.
    pub fn signer_toml(&self) -> PathBuf {
        self.p("signer/signer.toml")
    }

    /// `approver/approver.toml`.
    pub fn approver_toml(&self) -> PathBuf {
        self.p("approver/approver.toml")
    }

    /// Rewrites `approver/approver.toml` through `f`.
    pub fn edit_approver(&self, f: impl FnOnce(&mut toml::Table)) {
        edit_toml(&self.approver_toml(), f);
    }

    /// The init admin (CN admin, O system:masters).
    pub fn admin_ident(&self) -> Ident {
        Ident::load(&self.p("admin/admin.crt"), &self.p("admin/admin.key"))
    }

    /// The approver's own TLS identity (the signer's only allowed client).
    pub fn approver_ident(&self) -> Ident {
        Ident::load(&self.p("approver/tls.crt"), &self.p("approver/tls.key"))
    }

    /// Mints an identity with the init CA (test setup only).
    pub fn mint(&self, spec: &MintSpec<'_>) -> Ident {
        let key = std::fs::read_to_string(self.p("signer/ca.key")).unwrap();
        mint_with(spec, &self.ca_pem(), &key)
    }

    /// Mints a certificate (PEM) with the init CA for the public key
    /// `spki_der` (a key in a token; test setup only).
    pub fn mint_for_public_key(&self, spec: &MintSpec<'_>, spki_der: &[u8]) -> String {
        let key = std::fs::read_to_string(self.p("signer/ca.key")).unwrap();
        mint_for_public_key(spec, spki_der, &self.ca_pem(), &key)
    }
}

/// Appends a bootstrap token for `kubernetes.io/kube-apiserver-client` to an
/// approver config (before the approver starts) and returns `<id>.<secret>`:
/// the way a user without a certificate submits a request that an admin
/// (never the requestor) then approves.
pub fn add_bootstrap_token(approver_toml: &Path) -> String {
    use std::io::{Read, Write};
    let mut raw = [0u8; 11];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .expect("read /dev/urandom");
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let (id, secret) = (&hex[..6], &hex[6..22]);
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(secret.as_bytes())
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    let digest = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(approver_toml)
        .expect("open approver.toml");
    write!(
        f,
        "\n[[bootstrap_tokens]]\nid = \"{id}\"\nsecret_sha256 = \"{digest}\"\n\
         expires = \"2099-01-01T00:00:00Z\"\n\
         signer_names = [\"kubernetes.io/kube-apiserver-client\"]\nmax_uses = 10\n"
    )
    .expect("append token");
    format!("{id}.{secret}")
}

/// Whether the first certificate of the PEM file `cert` is for the private
/// key in the PEM file `key` (a pair that belongs together).
pub fn cert_matches_key(cert: &Path, key: &Path) -> bool {
    let (Ok(cert_pem), Ok(key_pem)) = (std::fs::read(cert), std::fs::read_to_string(key)) else {
        return false;
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&cert_pem) else {
        return false;
    };
    let Ok(c) = pem.parse_x509() else {
        return false;
    };
    KeyPair::from_pem(&key_pem)
        .is_ok_and(|k| k.public_key_raw() == c.public_key().subject_public_key.data.as_ref())
}

/// The serial of a PEM certificate file, as `openssl x509 -serial` prints
/// it (lower-case hex).
pub fn openssl_serial(path: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(path)
        .output()
        .expect("run openssl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// The serial of the certificate `addr` serves to a new TLS connection
/// (ALPN h2, client `cert`/`key`), as `openssl s_client` sees it.
pub fn served_serial(addr: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -CAfile {} -cert {} -key {} -alpn h2 </dev/null 2>/dev/null | openssl x509 -noout -serial",
            ca.display(),
            cert.display(),
            key.display()
        ))
        .output()
        .expect("run openssl");
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        s.starts_with("serial="),
        "openssl saw no certificate at {addr}: {s:?}"
    );
    s.trim_start_matches("serial=").to_ascii_lowercase()
}

//! The CA key in a PKCS#11 token (SoftHSM2): `init --ca-key-uri` creates it
//! inside the token, `serve` signs through a session pool, and everything
//! that holds for a file key holds here too (openssl -x509_strict,
//! rustls-webpki, pkilint). Also: no CA private key file anywhere in the
//! state directory, a wrong PIN or a PIN in the config is a clear start-up
//! error, 50 concurrent signs through 4 sessions, and a token that goes away
//! gives UNAVAILABLE, then signing again once it is back.
//!
//! Each test has its own token directory (private SOFTHSM2_CONF passed to
//! the child processes), so tests run in parallel safely.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use certsign_tests::hsm::{SOFTHSM_MODULE as MODULE, SoftHsm};
use common::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use tonic::Code;

const PIN: &str = "1234";

/// A SoftHSM2 token from the harness, as these tests name things.
struct Hsm {
    token: SoftHsm,
    dir: PathBuf,
    conf: String,
}

impl Hsm {
    /// A fresh SoftHSM2 token labelled `signer-ca`, PIN 1234 in a 0600 file.
    fn new() -> Self {
        let token = SoftHsm::new("signer-ca", PIN);
        Self {
            dir: token.dir.clone(),
            conf: token.conf.to_str().unwrap().to_string(),
            token,
        }
    }
    fn pin_file(&self) -> PathBuf {
        self.token.pin_file()
    }
    fn uri(&self) -> String {
        format!(
            "pkcs11:token=signer-ca;object=certsign-ca?module-path={MODULE}&pin-source=file:{}",
            self.pin_file().display()
        )
    }
    fn env(&self) -> [(&str, &str); 1] {
        [("SOFTHSM2_CONF", self.conf.as_str())]
    }
    /// `init` with the CA key generated in this token.
    fn init(&self, key_type: &str) -> Pki {
        let uri = self.uri();
        init_env(&["--key-type", key_type, "--ca-key-uri", &uri], &self.env())
    }
}

fn webpki_ok(ca_pem: &[u8], leaf_pem: &[u8]) {
    let ca = CertificateDer::from_pem_slice(ca_pem).unwrap();
    let leaf = CertificateDer::from_pem_slice(leaf_pem).unwrap();
    let anchor = webpki::anchor_from_trusted_cert(&ca).unwrap();
    webpki::EndEntityCert::try_from(&leaf)
        .unwrap()
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .unwrap();
}

fn pkilint_clean(cert: &Path) {
    let out = Command::new("lint_pkix_cert")
        .args(["lint", "-s", "WARNING", "-f", "JSON"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pkilint findings for {}: {} {}",
        cert.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The CA certificate's public key, as openssl prints it.
fn pubkey_of(args: &[&str], file: &Path) -> Option<String> {
    let out = Command::new("openssl")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// No file under `dir` holds the CA private key (or any key for the CA's public key).
fn no_ca_private_key_anywhere(pki: &Pki) {
    let ca_pub = pubkey_of(&["x509", "-noout", "-pubkey", "-in"], &pki.p("ca.crt")).unwrap();
    assert!(!pki.p("signer/ca.key").exists());
    let mut stack = vec![pki.dir.clone()];
    let mut keys = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            if !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY") {
                continue;
            }
            keys += 1;
            let pubkey = pubkey_of(&["pkey", "-pubout", "-in"], &p)
                .unwrap_or_else(|| panic!("{} does not parse as a key", p.display()));
            assert_ne!(pubkey, ca_pub, "{} holds the CA key", p.display());
        }
    }
    // The TLS and admin keys are files; only the CA key lives in the token.
    assert_eq!(keys, 3);
}

/// Sign one openssl CSR (with a signed approval); returns (PEM chain, serial).
async fn sign_one(
    pki: &Pki,
    c: &mut certsign_proto::v1::signer_client::SignerClient<tonic::transport::Channel>,
    uid: &str,
) -> Result<(Vec<u8>, String), tonic::Status> {
    let (csr, _) = openssl_csr(pki, uid, P256, "/CN=alice/O=dev", &[]);
    let req = request(
        uid,
        &csr,
        CLIENT,
        &["digital signature", "client auth"],
        Some(3600),
        "alice",
    );
    let appr = approve(pki, &req);
    let r = c.sign(sign_request(req, vec![appr])).await?.into_inner();
    Ok((r.certificate, r.serial_number))
}

#[tokio::test]
async fn token_ca_keys_issue_certificates_every_judge_accepts() {
    for (kt, openssl_name) in [
        ("p256", "prime256v1"),
        ("p384", "secp384r1"),
        ("rsa", "3072 bit"),
    ] {
        let hsm = Hsm::new();
        let pki = hsm.init(kt);
        let toml = std::fs::read_to_string(pki.config()).unwrap();
        assert!(
            toml.contains(&format!("ca_key = \"{}\"", hsm.uri())),
            "{toml}"
        );
        no_ca_private_key_anywhere(&pki);
        let ca_text = pubkey_of(&["x509", "-noout", "-text", "-in"], &pki.p("ca.crt")).unwrap();
        assert!(ca_text.contains(openssl_name), "{kt}: {ca_text}");
        pkilint_clean(&pki.p("ca.crt"));
        // init's own certificates were signed by the token key.
        let v = openssl_verify(&pki, "sslserver", &pki.p("signer/tls.crt"));
        assert!(v.contains(": OK"), "{kt}: {v}");

        let server = serve_env(&pki, &hsm.env());
        let mut c = client(&pki, &server).await;
        let (chain, _) = sign_one(&pki, &mut c, "t1").await.unwrap();
        let leaf = write_leaf(&pki, "leaf", &chain);
        let v = openssl_verify(&pki, "sslclient", &leaf);
        assert!(v.contains(": OK"), "{kt}: {v}");
        webpki_ok(&std::fs::read(pki.p("ca.crt")).unwrap(), &chain);
        pkilint_clean(&leaf);
        // Serving certificates for every user key type openssl makes.
        for (i, newkey) in [P256, P384, ED25519, RSA2048].into_iter().enumerate() {
            let (csr, _) = openssl_csr(
                &pki,
                &format!("srv{i}"),
                newkey,
                "/O=system:nodes/CN=system:node:n1",
                &["subjectAltName=IP:127.0.0.1"],
            );
            let req = request(
                &format!("s{i}"),
                &csr,
                "kubernetes.io/kubelet-serving",
                &["digital signature", "server auth"],
                None,
                "system:node:n1",
            );
            let appr = approve(&pki, &req);
            let r = c
                .sign(sign_request(req, vec![appr]))
                .await
                .unwrap()
                .into_inner();
            let leaf = write_leaf(&pki, &format!("srv{i}"), &r.certificate);
            let v = openssl_verify(&pki, "sslserver", &leaf);
            assert!(v.contains(": OK"), "{kt} {i}: {v}");
            pkilint_clean(&leaf);
        }
        let out = run(&[
            "audit",
            "verify",
            "--config",
            pki.config().to_str().unwrap(),
        ]);
        assert!(out.status.success());
    }
}

#[tokio::test]
async fn fifty_concurrent_signs_through_a_pool_of_four_sessions() {
    let hsm = Hsm::new();
    let pki = hsm.init("p256");
    let toml = std::fs::read_to_string(pki.config()).unwrap();
    assert!(toml.contains("pkcs11_sessions = 4"), "{toml}");
    // CSRs first (openssl is slow), then all 50 Sign calls at once.
    let mut reqs = Vec::new();
    for i in 0..50 {
        let uid = format!("c{i}");
        let (csr, _) = openssl_csr(&pki, &uid, P256, &format!("/CN=user{i}"), &[]);
        let req = request(&uid, &csr, CLIENT, &["client auth"], None, "u");
        let appr = approve(&pki, &req);
        reqs.push(sign_request(req, vec![appr]));
    }
    let server = serve_env(&pki, &hsm.env());
    let ch = channel(&pki, &server);
    let tasks: Vec<_> = reqs
        .into_iter()
        .map(|r| {
            let mut c = certsign_proto::v1::signer_client::SignerClient::new(ch.clone());
            tokio::spawn(async move { c.sign(r).await.map(|r| r.into_inner()) })
        })
        .collect();
    let mut serials = HashSet::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert!(!r.replayed);
        serials.insert(r.serial_number);
    }
    assert_eq!(serials.len(), 50);
}

#[test]
fn pin_problems_are_clear_start_up_errors() {
    let hsm = Hsm::new();
    let pki = hsm.init("p256");
    let cfg = pki.config().to_str().unwrap().to_string();
    let serve_err = |env: &[(&str, &str)]| {
        let out = run_env(&["serve", "--config", &cfg], env);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Wrong PIN.
    std::fs::write(hsm.pin_file(), "9999\n").unwrap();
    let e = serve_err(&hsm.env());
    assert!(
        e.contains("the PIN is incorrect") && e.contains("signer-ca"),
        "{e}"
    );
    assert!(!e.contains("9999"), "the PIN must not be printed: {e}");
    // A PIN file others can read.
    std::fs::write(hsm.pin_file(), format!("{PIN}\n")).unwrap();
    std::fs::set_permissions(hsm.pin_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = serve_err(&hsm.env());
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(hsm.pin_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    // A PIN in the config itself.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let file_src = format!("pin-source=file:{}", hsm.pin_file().display());
    std::fs::write(&cfg, text.replace(&file_src, "pin-value=1234")).unwrap();
    let e = serve_err(&hsm.env());
    assert!(
        e.contains("ca_key: pin-value: a PIN is never accepted in the configuration"),
        "{e}"
    );
    // pin-source=env:NAME: unset is an error naming it; set, the signer starts and signs.
    std::fs::write(
        &cfg,
        text.replace(&file_src, "pin-source=env:CERTSIGN_TEST_PIN"),
    )
    .unwrap();
    let e = serve_err(&hsm.env());
    assert!(e.contains("CERTSIGN_TEST_PIN is not set"), "{e}");
    let mut env = hsm.env().to_vec();
    env.push(("CERTSIGN_TEST_PIN", PIN));
    let server = serve_env(&pki, &env);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = client(&pki, &server).await;
        sign_one(&pki, &mut c, "e1").await.unwrap();
    });
}

#[test]
fn init_never_overwrites_a_key_in_the_token() {
    let hsm = Hsm::new();
    let _first = hsm.init("p256");
    let tmp = tempfile::tempdir().unwrap();
    let out = run_env(
        &[
            "init",
            "--dir",
            tmp.path().join("pki").to_str().unwrap(),
            "--ca-key-uri",
            &hsm.uri(),
        ],
        &hsm.env(),
    );
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("refusing to overwrite a CA key"), "{e}");
    // Ed25519 is not offered for token keys: a usage-level refusal, not a crash.
    let out = run_env(
        &[
            "init",
            "--dir",
            tmp.path().join("pki2").to_str().unwrap(),
            "--key-type",
            "ed25519",
            "--ca-key-uri",
            &hsm.uri(),
        ],
        &hsm.env(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("p256, p384 or rsa"));
}

#[tokio::test]
async fn a_vanished_token_is_unavailable_and_the_signer_recovers() {
    let hsm = Hsm::new();
    let pki = hsm.init("p256");
    let server = serve_env(&pki, &hsm.env());
    let mut c = client(&pki, &server).await;
    sign_one(&pki, &mut c, "before").await.unwrap();

    // The token's storage disappears under the running signer.
    let tokens = hsm.dir.join("tokens");
    let away = hsm.dir.join("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    let s = sign_one(&pki, &mut c, "during").await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{}", s.message());
    assert!(
        s.message().contains("the CA key's token is unavailable")
            && s.message().contains("signer-ca"),
        "{}",
        s.message()
    );

    // It comes back: the next request re-initializes the module and signs.
    std::fs::rename(&away, &tokens).unwrap();
    let (chain, _) = sign_one(&pki, &mut c, "after").await.unwrap();
    let leaf = write_leaf(&pki, "after", &chain);
    let v = openssl_verify(&pki, "sslclient", &leaf);
    assert!(v.contains(": OK"), "{v}");
    // The refused request can be retried under the same uid once the token is back.
    sign_one(&pki, &mut c, "during").await.unwrap();
}

#[test]
fn module_and_token_problems_are_clear_start_up_errors() {
    let hsm = Hsm::new();
    let pki = hsm.init("p256");
    let cfg = pki.config().to_str().unwrap().to_string();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let serve_err = |config_text: String| {
        std::fs::write(&cfg, config_text).unwrap();
        let out = run_env(&["serve", "--config", &cfg], &hsm.env());
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A module others could rewrite runs inside the CA process: refused.
    let copy = hsm.dir.join("libsofthsm2.so");
    std::fs::copy(MODULE, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = serve_err(text.replace(MODULE, copy.to_str().unwrap()));
    assert!(e.contains("writable by group or others"), "{e}");
    // A module that is not there.
    let gone = hsm.dir.join("gone.so");
    let e = serve_err(text.replace(MODULE, gone.to_str().unwrap()));
    assert!(e.contains(gone.to_str().unwrap()), "{e}");
    // A token or key that is not there names what it looked for.
    let e = serve_err(text.replace("token=signer-ca", "token=other"));
    assert!(e.contains("no token labelled \"other\""), "{e}");
    let e = serve_err(text.replace("object=certsign-ca", "object=nope"));
    assert!(e.contains("no such private key in the token"), "{e}");
    // Back to the real URI, the signer starts.
    std::fs::write(&cfg, &text).unwrap();
    let _server = serve_env(&pki, &hsm.env());
}

#[tokio::test]
async fn token_ca_keys_sign_crls_every_judge_accepts() {
    for kt in ["p256", "rsa"] {
        let hsm = Hsm::new();
        let pki = hsm.init(kt);
        let server = serve_env(&pki, &hsm.env());
        let mut c = client(&pki, &server).await;
        let (gone, _) = issue_client(&pki, &mut c, "gone", "alice").await;
        let (kept, _) = issue_client(&pki, &mut c, "kept", "bob").await;
        let (admin_key, admin_cert) = admin(&pki);
        let st = revocation_statement(&gone, 1, 0);
        let r = c
            .sign(revocation_request(
                sign_revocation(&st, &admin_key, &admin_cert),
                &gone,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.serial_number, serial_of(&gone), "{kt}");
        let (_, pem) = fetch_crl(&pki, &mut c, "crl1").await;
        let py = judge_crl(&pki, &pem, &[&gone], &[&kept]);
        assert!(
            py.contains(&format!("{} key_compromise", serial_of(&gone))),
            "{kt}: {py}"
        );
        let (_, pem) = fetch_crl(&pki, &mut c, "crl2").await;
        let later = judge_crl(&pki, &pem, &[&gone], &[&kept]);
        assert!(crl_number(&later) > crl_number(&py), "{kt}: {py} {later}");
    }
}

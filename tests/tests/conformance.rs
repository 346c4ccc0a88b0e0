//! Outside judges of the certificates certsign issues.
//!
//! For every built-in profile, every user key type the `openssl` command can
//! make (RSA 2048/3072/4096, ECDSA P-256/P-384, Ed25519) and a CA of each
//! key type `init` supports, the issued certificate must:
//! - pass `openssl verify -x509_strict` with the purpose its usages imply;
//! - be accepted by rustls-webpki as a client or server end-entity;
//! - lint clean with pkilint (`lint_pkix_cert`, nothing at WARNING or above),
//!   as must the CA certificate;
//! - work: a client certificate completes a TLS handshake with
//!   `openssl s_server -Verify`, and a serving certificate serves TLS that
//!   `openssl s_client -verify_return_error` accepts for its DNS name and IP.
//!
//! Requests go through the real stack: applied as Kubernetes manifests by a
//! user with `certctl`, approved by the admin with `certctl`.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use certsign_tests::{Stack, run, run_ok};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};

#[derive(Clone, Copy, Debug)]
enum Profile {
    ApiserverClient,
    KubeletClient,
    KubeletServing,
}

impl Profile {
    const ALL: [Profile; 3] = [
        Profile::ApiserverClient,
        Profile::KubeletClient,
        Profile::KubeletServing,
    ];

    fn signer_name(self) -> &'static str {
        match self {
            Profile::ApiserverClient => "kubernetes.io/kube-apiserver-client",
            Profile::KubeletClient => "kubernetes.io/kube-apiserver-client-kubelet",
            Profile::KubeletServing => "kubernetes.io/kubelet-serving",
        }
    }

    fn subject(self, n: &str) -> String {
        match self {
            Profile::ApiserverClient => format!("/CN=user-{n}/O=dev"),
            _ => format!("/O=system:nodes/CN=system:node:{n}"),
        }
    }

    /// Kubernetes' typical usage lists, keyEncipherment included for every
    /// key type: the signer must leave it out for EC and Ed25519 keys.
    fn usages(self) -> &'static [&'static str] {
        match self {
            Profile::KubeletServing => &["digital signature", "key encipherment", "server auth"],
            _ => &["digital signature", "key encipherment", "client auth"],
        }
    }

    fn serving(self) -> bool {
        matches!(self, Profile::KubeletServing)
    }
}

const USER_KEYS: [(&str, &[&str]); 6] = [
    ("rsa2048", &["-newkey", "rsa:2048"]),
    ("rsa3072", &["-newkey", "rsa:3072"]),
    ("rsa4096", &["-newkey", "rsa:4096"]),
    (
        "p256",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    ),
    (
        "p384",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
    ),
    ("ed25519", &["-newkey", "ed25519"]),
];

fn pkilint_clean(cert: &Path) {
    let out = run(Command::new("lint_pkix_cert")
        .args(["lint", "-s", "WARNING", "-f", "JSON"])
        .arg(cert));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pkilint findings for {}: {stdout} {}",
        cert.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `openssl s_server` for one connection and waits for its
/// `ACCEPT` line, so no probe connection uses up the one it will take.
fn s_server(args: &[&str]) -> (std::process::Child, u16) {
    use std::io::BufRead as _;
    let port = free_port();
    let mut child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-naccept",
            "1",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("ACCEPT") => break,
            Some(Ok(_)) => {}
            _ => panic!("openssl s_server did not start with {args:?}"),
        }
    }
    // Keep draining so s_server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

/// A client certificate completes a handshake with a server that demands one.
fn client_handshake(ca: &Path, cert: &Path, key: &Path) {
    // The server's own identity: any certificate; use the approver's.
    let dir = ca.parent().unwrap();
    let (mut server, port) = s_server(&[
        "-cert",
        dir.join("approver/tls.crt").to_str().unwrap(),
        "-key",
        dir.join("approver/tls.key").to_str().unwrap(),
        "-Verify",
        "1",
        "-verify_return_error",
        "-CAfile",
        ca.to_str().unwrap(),
    ]);
    let out = run(Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-brief",
        ])
        .arg("-CAfile")
        .arg(ca)
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(Stdio::null()));
    let _ = server.kill();
    let status = server.wait().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CONNECTION ESTABLISHED"),
        "client handshake with {}: {err}",
        cert.display()
    );
    // s_server exits non-zero when it rejected the client certificate; killed is fine.
    assert!(
        status.code() != Some(1),
        "s_server rejected {}",
        cert.display()
    );
}

/// A serving certificate serves TLS that s_client accepts for its name and IP.
fn serving_handshake(ca: &Path, cert: &Path, key: &Path, dns: &str) {
    for check in [["-verify_hostname", dns], ["-verify_ip", "127.0.0.1"]] {
        let (mut server, port) = s_server(&[
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
        ]);
        let out = run(Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-brief",
                "-verify_return_error",
            ])
            .args(check)
            .arg("-CAfile")
            .arg(ca)
            .stdin(Stdio::null()));
        let _ = server.kill();
        let _ = server.wait();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("CONNECTION ESTABLISHED") && err.contains("Verification: OK"),
            "serving handshake for {} with {check:?}: {err}",
            cert.display()
        );
    }
}

fn webpki_accepts(ca: &Path, cert_pem: &[u8], profile: Profile, dns: &str) {
    let ca_der = CertificateDer::from_pem_file(ca).unwrap();
    let anchor = webpki::anchor_from_trusted_cert(&ca_der).unwrap();
    let leaf = CertificateDer::from_pem_slice(cert_pem).unwrap();
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    let usage = if profile.serving() {
        webpki::KeyUsage::server_auth()
    } else {
        webpki::KeyUsage::client_auth()
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::now(),
        usage,
        None,
        None,
    )
    .unwrap_or_else(|e| panic!("rustls-webpki refused the {profile:?} certificate: {e:?}"));
    if profile.serving() {
        ee.verify_is_valid_for_subject_name(&ServerName::try_from(dns.to_string()).unwrap())
            .unwrap();
        ee.verify_is_valid_for_subject_name(&ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    }
}

/// Issues one certificate through the stack; returns (cert path, key path).
fn issue(
    stack: &Stack,
    user: &(PathBuf, PathBuf),
    profile: Profile,
    key: &(&str, &[&str]),
    n: usize,
) -> (PathBuf, PathBuf) {
    let dir = stack.dir.join("issued");
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!(
        "{}-{}-{n}",
        key.0,
        profile.signer_name().replace(['/', '.'], "-")
    );
    let node = format!("node{n}");
    let key_path = dir.join(format!("{name}.key"));
    let csr_path = dir.join(format!("{name}.csr"));
    let mut req = Command::new("openssl");
    req.args(["req", "-new", "-nodes"])
        .args(key.1)
        .arg("-subj")
        .arg(profile.subject(&node))
        .arg("-keyout")
        .arg(&key_path)
        .arg("-out")
        .arg(&csr_path);
    if profile.serving() {
        req.arg("-addext").arg(format!(
            "subjectAltName=DNS:{node}.example.internal,IP:127.0.0.1"
        ));
    }
    run_ok(&mut req);
    let manifest = serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(std::fs::read(&csr_path).unwrap()),
            "signerName": profile.signer_name(),
            "expirationSeconds": 86400,
            "usages": profile.usages(),
        }
    });
    let manifest_path = dir.join(format!("{name}.json"));
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let cert_path = dir.join(format!("{name}.crt"));
    stack.apply_approve_wait(user, &manifest_path, &name, &cert_path);
    // Judges look at the leaf alone; the chain file carries the CA after it.
    let chain = std::fs::read_to_string(&cert_path).unwrap();
    let end = "-----END CERTIFICATE-----";
    let leaf = &chain[..chain.find(end).expect("no certificate in the chain") + end.len()];
    let leaf_path = dir.join(format!("{name}.leaf.crt"));
    std::fs::write(&leaf_path, format!("{leaf}\n")).unwrap();
    (leaf_path, key_path)
}

fn judge_all_for_ca(ca_key_type: &str) {
    let stack = Stack::start_with(&["--key-type", ca_key_type]);
    let ca = stack.ca();
    pkilint_clean(&ca);
    let user = stack.user("requestor", &["dev"]);
    let mut n = 0;
    for profile in Profile::ALL {
        for key in &USER_KEYS {
            n += 1;
            let (cert, key_path) = issue(&stack, &user, profile, key, n);
            let purpose = if profile.serving() {
                "sslserver"
            } else {
                "sslclient"
            };
            let out = run_ok(
                Command::new("openssl")
                    .args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
                    .arg(&ca)
                    .arg(&cert),
            );
            assert!(out.trim_end().ends_with("OK"), "{out}");
            pkilint_clean(&cert);
            let pem = std::fs::read(&cert).unwrap();
            let dns = format!("node{n}.example.internal");
            webpki_accepts(&ca, &pem, profile, &dns);
            let text = run_ok(
                Command::new("openssl")
                    .args(["x509", "-noout", "-text", "-in"])
                    .arg(&cert),
            );
            let rsa = key.0.starts_with("rsa");
            assert_eq!(
                text.contains("Key Encipherment"),
                rsa,
                "keyEncipherment must appear exactly for RSA keys ({} {profile:?}):\n{text}",
                key.0
            );
            assert!(text.contains("CA:FALSE"), "{text}");
            if profile.serving() {
                serving_handshake(&ca, &cert, &key_path, &dns);
            } else {
                client_handshake(&ca, &cert, &key_path);
            }
        }
    }
    // A client certificate authenticates to the approver as its subject.
    let (cert, key) = issue(&stack, &user, Profile::ApiserverClient, &USER_KEYS[3], 99);
    let out = run_ok(
        stack
            .certctl()
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["get", "csr", "-o", "json"]),
    );
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = list["items"].as_array().unwrap();
    assert!(
        items.is_empty(),
        "user-node99 made no requests but sees {items:?}"
    );
}

#[test]
fn p256_ca_issues_certificates_every_judge_accepts() {
    judge_all_for_ca("p256");
}

#[test]
fn p384_ca_issues_certificates_every_judge_accepts() {
    judge_all_for_ca("p384");
}

#[test]
fn ed25519_ca_issues_certificates_every_judge_accepts() {
    judge_all_for_ca("ed25519");
}

#[test]
fn rsa_ca_issues_certificates_every_judge_accepts() {
    judge_all_for_ca("rsa");
}

//! Console issuance: `certsign-signer issue` and `init`'s own identities.
//!
//! The operator at the signer's host is the evidence (`Evidence::Console`,
//! the OS user); the request still goes through the signer's whole `Sign`
//! path (profile rules, journal). This module never bypasses the
//! authority and never writes anything but the leaf certificate it got.

use certsign_proto::v1::{CertificateSigningRequest, CertificateSigningRequestSpec, ObjectMeta};
use certsign_signer::authority::{Authority, Evidence};
use ring::rand::SecureRandom;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

fn os_user() -> String {
    let uid = rustix::process::getuid().as_raw();
    match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(u) if !u.is_empty() => format!("{u} (uid {uid})"),
        _ => format!("uid {uid}"),
    }
}

/// A random hex id.
pub fn random_id() -> String {
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    hex::encode(b)
}

/// Sign `csr_pem` at the console (evidence = the OS user); returns the leaf PEM.
pub async fn console_issue(
    authority: &Authority,
    csr_pem: Vec<u8>,
    signer_name: &str,
    usages: Vec<String>,
    expiration_seconds: Option<i32>,
) -> Result<String, String> {
    let user = os_user();
    let id = format!("console-{}", random_id());
    let req = CertificateSigningRequest {
        metadata: Some(ObjectMeta {
            name: id.clone(),
            uid: id,
            ..Default::default()
        }),
        spec: Some(CertificateSigningRequestSpec {
            request: csr_pem,
            signer_name: signer_name.to_string(),
            expiration_seconds,
            usages,
            username: user.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let signed = authority
        .sign_with(&req, Evidence::Console(&user), "console")
        .await
        .map_err(|e| e.to_string())?;
    // The answer is the leaf then the CA; only the leaf is written.
    let leaf = CertificateDer::pem_slice_iter(signed.certificate.as_bytes())
        .next()
        .ok_or("the signer returned no certificate")?
        .map_err(|e| format!("the signer's answer: {e}"))?;
    certsign_keys::pem("CERTIFICATE", &leaf).map_err(|e| e.to_string())
}

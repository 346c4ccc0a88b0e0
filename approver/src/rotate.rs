//! The approver's own TLS identity, renewed through the signer before it
//! expires, with no downtime.
//!
//! Every [`CHECK_EVERY`] (and soon after start) the identity it calls the
//! signer with (`signer.cert` / `signer.key`) is checked; within its
//! renewal window (`tls_renew_before`, default the shorter of 30 days and a
//! third of its lifetime) a new ECDSA P-256 key is made, a CSR repeating the
//! certificate's subject (byte for byte) and SANs, and the signer's
//! `identity_renewal` path is asked, proven by a RenewalStatement signed
//! with the current key; the signer allows it only for the certificate of
//! the very connection that asks, keeps its profile and usages, and
//! journals it. The new key, then the new certificate, are written
//! atomically (a temporary file, fsync, rename) and the serving identity is
//! reloaded: new connections get the new certificate, open ones keep
//! theirs. With init's layout (`tls_cert` / `tls_key` are the same files)
//! that is the serving identity too.
//!
//! It must never write a half-written file, never overwrite the current
//! files before the signer answered, and never log key material.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use certsign_evidence::{Lineage, RENEWAL_CONTEXT, Usage, sha256};
use certsign_proto::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec, ObjectMeta, RenewalStatement,
    SignRequest, sign_request,
};
use prost::Message as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use rustls::SignatureScheme;
use rustls::sign::Signer;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::X509Certificate;

use crate::config::Config;
use crate::reload::Reloader;
use crate::tls::{self, Identity};
use certsign_runtime::expiry::renewal_due;
use certsign_runtime::files::{self, write_atomically};

/// How often the identity's expiry is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// The first look, soon after start.
const FIRST_CHECK: Duration = Duration::from_secs(1);

/// Why a rotation did not happen (the identity in use stays).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RotateError(String);

fn err(what: &str, e: impl std::fmt::Display) -> RotateError {
    RotateError(format!("{what}: {e}"))
}

/// Check now and then every [`CHECK_EVERY`], forever (spawn it).
pub async fn run(reloader: Reloader, serving: Arc<Identity>) {
    let mut wait = FIRST_CHECK;
    loop {
        tokio::time::sleep(wait).await;
        wait = CHECK_EVERY;
        let config = reloader.current();
        match rotate_if_due(&config, SystemTime::now()).await {
            Ok(None) => {}
            Ok(Some(what)) => {
                tracing::info!(
                    "rotated the approver's TLS identity through the signer: {what}; written to {} (new connections, served and to the signer, present it; open ones keep the old one, valid until it expires)",
                    config.signer.cert.display()
                );
                if let Err(e) = serving.reload() {
                    tracing::error!(
                        "the rotated TLS identity does not load; the one in use stays: {e}"
                    );
                }
            }
            Err(e) => tracing::error!(
                "rotating the approver's TLS identity failed; retrying in {}s: {e}",
                CHECK_EVERY.as_secs()
            ),
        }
    }
}

/// Rotate the identity in `config.signer.cert`/`key` if it is within its
/// renewal window at `now`; the new certificate's serial and notAfter.
pub async fn rotate_if_due(
    config: &Config,
    now: SystemTime,
) -> Result<Option<String>, RotateError> {
    let leaf = tls::load_certs(&config.signer.cert)
        .map_err(|e| err("current certificate", e))?
        .remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| err("current certificate", e))?;
    let v = cert.validity();
    let (from, until) = (v.not_before.timestamp(), v.not_after.timestamp());
    if !renewal_due(from, until, now, config.tls_renew_before) {
        return Ok(None);
    }
    // Before the signer is asked, so a read-only place costs no certificate.
    for path in [&config.signer.key, &config.signer.cert] {
        files::writable(path).map_err(|e| {
            RotateError(format!(
                "{e}: rotation writes the new files beside it (deploy/README.md, \"Rotate\")"
            ))
        })?;
    }
    let current_key = PrivateKeyDer::from_pem_file(&config.signer.key)
        .map_err(|e| err(&config.signer.key.display().to_string(), e))
        .and_then(|der| TlsKey::new(&der))?;
    let lineage = Lineage::of_certificate(&cert)
        .map_err(|e| err("current certificate", e))?
        .ok_or_else(|| RotateError("the current certificate carries no certsign lineage (it was not issued by the signer); renew it at the signer console".into()))?;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
        .map_err(|e| err("new key", e))?;
    let new_key = TlsKey::new(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        pkcs8.as_ref().to_vec(),
    )))?;
    let csr_der = csr(&cert, &new_key)?;
    let csr_pem = x509_cert::der::pem::encode_string(
        "CERTIFICATE REQUEST",
        x509_cert::der::pem::LineEnding::LF,
        &csr_der,
    )
    .map_err(|e| err("CSR", e))?;
    let at = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = format!("identity-{}-{at}", cn_of(&cert));
    let statement = RenewalStatement {
        request_name: name.clone(),
        csr_sha256: sha256(&csr_der).to_vec(),
        signer_name: lineage.signer_name.clone(),
        current_certificate_sha256: sha256(leaf.as_ref()).to_vec(),
        signed_at: Some(now.into()),
    };
    let proof = certsign_evidence::sign_statement(
        RENEWAL_CONTEXT,
        statement.encode_to_vec(),
        &current_key,
        vec![leaf.as_ref().to_vec()],
    )
    .map_err(|e| err("renewal statement", e))?;
    let usages = Usage::of_certificate(&cert)
        .into_iter()
        .filter(|u| *u != Usage::Any)
        .map(|u| u.as_str().to_string())
        .collect();
    let request = SignRequest {
        request: Some(sign_request::Request::IdentityRenewal(
            CertificateSigningRequest {
                metadata: Some(ObjectMeta {
                    uid: uuid::Uuid::new_v4().to_string(),
                    name,
                    ..Default::default()
                }),
                spec: Some(CertificateSigningRequestSpec {
                    request: csr_pem.into_bytes(),
                    signer_name: lineage.signer_name,
                    usages,
                    username: cn_of(&cert),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        renewal: Some(proof),
        ..Default::default()
    };
    let mut last = RotateError("no signer endpoint".into());
    let clients = crate::forwarder::signer_clients(&config.signer).map_err(|e| err("signer", e))?;
    for (url, mut client) in clients {
        match client.sign(request.clone()).await {
            Ok(answer) => {
                let chain = answer.into_inner().certificate;
                let key_pem = x509_cert::der::pem::encode_string(
                    "PRIVATE KEY",
                    x509_cert::der::pem::LineEnding::LF,
                    pkcs8.as_ref(),
                )
                .map_err(|e| err("new key", e))?;
                write_atomically(&config.signer.key, key_pem.as_bytes(), 0o600)
                    .map_err(|e| RotateError(e.to_string()))?;
                write_atomically(&config.signer.cert, &chain, 0o644)
                    .map_err(|e| RotateError(e.to_string()))?;
                let (_, new) = x509_parser::pem::parse_x509_pem(&chain)
                    .map_err(|e| err("the signer's answer", e))?;
                let new = new
                    .parse_x509()
                    .map_err(|e| err("the signer's answer", e))?;
                return Ok(Some(format!(
                    "serial {}, expires {}",
                    new.raw_serial_as_string().replace(':', ""),
                    new.validity().not_after
                )));
            }
            Err(s) => last = RotateError(format!("{url}: {:?}: {}", s.code(), s.message())),
        }
    }
    Err(last)
}

/// A TLS private key (any type rustls' ring provider loads) as a signer of
/// statements and requests, with its public key: the statement schemes the
/// signer verifies (ECDSA P-256/SHA-256, P-384/SHA-384, Ed25519, RSA
/// PKCS#1 v1.5 SHA-256).
struct TlsKey {
    signer: Box<dyn Signer>,
    spki: Vec<u8>,
}

impl TlsKey {
    fn new(der: &PrivateKeyDer<'_>) -> Result<Self, RotateError> {
        let key = rustls::crypto::ring::sign::any_supported_type(der).map_err(|e| err("key", e))?;
        let spki = key
            .public_key()
            .ok_or_else(|| RotateError("key: no public key".into()))?
            .as_ref()
            .to_vec();
        let signer = key
            .choose_scheme(&[
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::ECDSA_NISTP384_SHA384,
                SignatureScheme::ED25519,
                SignatureScheme::RSA_PKCS1_SHA256,
            ])
            .ok_or_else(|| RotateError("key: no scheme the signer verifies".into()))?;
        Ok(Self { signer, spki })
    }
}

impl certsign_evidence::StatementKey for TlsKey {
    fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        self.signer.sign(msg).map_err(|e| e.to_string())
    }
}

/// The certificate's first common name (the journal's requestor).
fn cn_of(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("approver")
        .to_string()
}

/// A PKCS#10 request for `new_key` with `cert`'s subject and SANs.
fn csr(cert: &X509Certificate<'_>, new_key: &TlsKey) -> Result<Vec<u8>, RotateError> {
    certsign_evidence::request::renewal_request(cert, &new_key.spki, |info| {
        new_key.signer.sign(info).map_err(|e| e.to_string())
    })
    .map_err(|e| match e {
        certsign_evidence::request::RequestError::SubjectNotCanonical => {
            RotateError(format!("{e}: renew at the signer console"))
        }
        e => RotateError(e.to_string()),
    })
}

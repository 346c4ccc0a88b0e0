//! 10,000 issuances in-process through the library (console path, so the
//! journal and group commit are real): no two certificates share a serial,
//! and the journal verifies afterwards.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use certsign_setup::console::console_issue;
use certsign_signer::authority::Authority;
use certsign_signer::config::Config;
use common::*;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_issuances_have_distinct_serials() {
    let pki = init(&[]);
    let (csr, _) = openssl_csr(&pki, "svc", P256, "/CN=svc", &[]);
    let authority = Arc::new(Authority::open(Config::load(&pki.config()).unwrap()).unwrap());
    let mut serials = HashSet::new();
    for _ in 0..50 {
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (a, csr) = (authority.clone(), csr.clone());
            tasks.push(tokio::spawn(async move {
                console_issue(
                    &a,
                    csr,
                    "certsign.io/identity",
                    vec!["client auth".into()],
                    None,
                )
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            let pem = t.await.unwrap();
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            assert!(
                serials.insert(cert.raw_serial().to_vec()),
                "duplicate serial"
            );
        }
    }
    assert_eq!(serials.len(), 10_000);
    let v = certsign_signer::journal::verify(&pki.p("signer/journal.jsonl"), false).unwrap();
    assert_eq!(v.lines, 10_003);
}

//! Renewal never widens what an admin approved, end to end: a 10-minute
//! certificate an admin approved with `certctl` is renewed by its holder
//! through the real approver and signer. Asking for a year is refused by
//! `certctl renew` in one line before it dials, and by the approver when
//! sent anyway; an extended key usage the certificate lacks and another
//! signer name are refused by certctl and by the approver; a plain
//! `certctl renew` gets the current lifetime, not the profile's year.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use certsign_evidence::Lineage;
use certsign_proto::v1::RenewalStatement;
use certsign_tests::evidence::{csr_sha256, sha256, sign_renewal};
use certsign_tests::grpc::{approver_client, create_request, ts};
use certsign_tests::pki::Ident;
use certsign_tests::{Stack, run, run_ok};
use x509_parser::prelude::X509Certificate;

/// The leaf of a PEM chain file, DER.
fn leaf_der(chain: &Path) -> Vec<u8> {
    let pem = std::fs::read(chain).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    pem.contents
}

fn with_cert<T>(der: &[u8], f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    f(&c)
}

fn lifetime(der: &[u8]) -> i64 {
    with_cert(der, |c| {
        c.validity().not_after.timestamp() - c.validity().not_before.timestamp()
    })
}

/// certctl as the holder of (cert, key).
fn holder(stack: &Stack, cert: &Path, key: &Path) -> Command {
    let mut c = stack.certctl();
    c.arg("--cert").arg(cert).arg("--key").arg(key);
    c
}

fn one_line_error(out: &std::process::Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.contains(want), "wanted {want:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ten_minute_certificate_never_renews_into_a_year() {
    let stack = Stack::start();
    let requestor = stack.user("requestor", &["dev"]);
    let dir: PathBuf = stack.dir.clone();
    let (crt, key) = (dir.join("svc.crt"), dir.join("svc.key"));
    run_ok(
        holder(&stack, &requestor.0, &requestor.1)
            .args(["create", "csr", "svc", "--subject", "/CN=svc/O=team-a"])
            .args(["--expiration", "10m", "--key-out"])
            .arg(&key),
    );
    run_ok(stack.certctl().args(["certificate", "approve", "svc"]));
    run_ok(
        stack
            .certctl()
            .args(["certificate", "wait", "svc", "--timeout", "60s", "--out"])
            .arg(&crt),
    );
    let first = leaf_der(&crt);
    assert_eq!(
        lifetime(&first),
        900,
        "10 minutes and the 5-minute backdate"
    );
    let lineage = with_cert(&first, |c| Lineage::of_certificate(c).unwrap().unwrap());
    assert_eq!(lineage.signer_name, "kubernetes.io/kube-apiserver-client");

    // `certctl renew --expiration 8760h`: refused before dialing, nothing changed.
    let out = run(holder(&stack, &crt, &key).args(["renew", "--expiration", "8760h"]));
    one_line_error(
        &out,
        "invalid --expiration: 31536000s is longer than the current certificate's lifetime (900s)",
    );
    assert_eq!(leaf_der(&crt), first);

    // Sent anyway (the proof binds no lifetime): the approver refuses it
    // with the signer's rule.
    let ident = Ident::load(&crt, &key);
    let csr = dir.join("year.csr");
    run_ok(Command::new("openssl").args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=svc/O=team-a",
        "-keyout",
        dir.join("year.key").to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
    ]));
    let csr_pem = std::fs::read(&csr).unwrap();
    let mut req = create_request("svc-year", &csr_pem);
    {
        let spec = req
            .certificate_signing_request
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap();
        spec.usages = vec!["client auth".into()];
        spec.expiration_seconds = Some(8760 * 3600);
    }
    let st = RenewalStatement {
        request_name: "svc-year".into(),
        csr_sha256: csr_sha256(&csr_pem),
        signer_name: "kubernetes.io/kube-apiserver-client".into(),
        current_certificate_sha256: sha256(&first),
        signed_at: Some(ts(0)),
    };
    req.renewal = Some(sign_renewal(&st, &ident.key(), vec![first.clone()]));
    let mut c = approver_client(&stack.approver.addr, &stack.ca_pem(), Some(&ident)).await;
    let e = c.create_certificate_signing_request(req).await.unwrap_err();
    assert!(
        e.message().contains(
            "renewal: expiration_seconds 31536000 exceeds the current certificate's lifetime (900s)"
        ),
        "{e:?}"
    );

    // The same proof shape asking for more through the approver, past
    // certctl's own checks: an extended key usage the certificate lacks,
    // and another signer name. Both refused with the signer's rules.
    let widened: [(&str, &str, &[&str], &str); 2] = [
        (
            "svc-eku",
            "kubernetes.io/kube-apiserver-client",
            &["client auth", "server auth"],
            "usage \"server auth\" is not in the current certificate's extended key usages; a renewal never gains a usage",
        ),
        (
            "svc-profile",
            "certsign.io/identity",
            &["client auth"],
            "the current certificate was issued under signer name \"kubernetes.io/kube-apiserver-client\", not \"certsign.io/identity\"; a renewal keeps its profile",
        ),
    ];
    for (name, signer_name, usages, want) in widened {
        let mut req = create_request(name, &csr_pem);
        {
            let spec = req
                .certificate_signing_request
                .as_mut()
                .unwrap()
                .spec
                .as_mut()
                .unwrap();
            spec.signer_name = signer_name.into();
            spec.usages = usages.iter().map(|u| (*u).into()).collect();
        }
        let st = RenewalStatement {
            request_name: name.into(),
            csr_sha256: csr_sha256(&csr_pem),
            signer_name: signer_name.into(),
            current_certificate_sha256: sha256(&first),
            signed_at: Some(ts(0)),
        };
        req.renewal = Some(sign_renewal(&st, &ident.key(), vec![first.clone()]));
        let e = c.create_certificate_signing_request(req).await.unwrap_err();
        assert!(e.message().contains(want), "{name}: {e:?}");
    }

    // Under another signer name (a profile that would issue more): refused.
    let out = run(holder(&stack, &crt, &key).args([
        "renew",
        "--signer-name",
        "certsign.io/identity",
        "--timeout",
        "30s",
    ]));
    one_line_error(
        &out,
        "the current certificate was issued under signer name \"kubernetes.io/kube-apiserver-client\", not \"certsign.io/identity\"",
    );
    assert_eq!(leaf_der(&crt), first);

    // A plain `certctl renew` gets the current lifetime and the same lineage.
    std::thread::sleep(Duration::from_millis(1100));
    run_ok(holder(&stack, &crt, &key).args(["renew", "--timeout", "60s"]));
    let renewed = leaf_der(&crt);
    assert_ne!(renewed, first);
    assert_eq!(lifetime(&renewed), 900, "not the profile's year");
    let again = with_cert(&renewed, |c| Lineage::of_certificate(c).unwrap().unwrap());
    assert_eq!(again, lineage, "the approval time is carried, never moved");
}

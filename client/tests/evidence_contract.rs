//! certctl's signed statements (single and batch) and CSRs checked by the shared verifier
//! (`certsign_evidence`, the code the signer and approver run), with
//! admin keys of every supported kind, including ones made by `openssl`
//! (PKCS#1 RSA, SEC1 EC) that certctl must load itself, and its revocation
//! statements (an admin's and a holder's) checked by `verify_revocation`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use certctl::evidence::StatementSigner;
use certctl::pkix::{self, KeyType};
use certsign_evidence::{
    ApprovalTrust, KeyKind, RenewalInput, Sans, sha256, verify_approval, verify_renewal,
};
use certsign_proto::v1 as pb;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

struct Ca {
    dir: tempfile::TempDir,
    pem: String,
    der: Vec<u8>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "test CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(30);
    let cert = p.self_signed(&key).unwrap();
    let key_pem = key.serialize_pem();
    Ca {
        dir: tempfile::tempdir().unwrap(),
        pem: cert.pem(),
        der: cert.der().to_vec(),
        key_pem,
        issuer: Issuer::new(p, key),
    }
}

impl Ca {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a client certificate for `key` and writes cert + key files.
    fn issue(
        &self,
        name: &str,
        key: &KeyPair,
        cn: &str,
        orgs: &[&str],
        sans: Vec<SanType>,
    ) -> (PathBuf, PathBuf) {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name.push(DnType::OrganizationName, *o);
        }
        p.subject_alt_names = sans;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        // The lineage the signer writes into every certificate it issues.
        let lineage = certsign_evidence::Lineage {
            signer_name: "kubernetes.io/kube-apiserver-client".into(),
            approved_at: SystemTime::now(),
        };
        let arcs: Vec<u64> = certsign_evidence::LINEAGE_OID
            .split('.')
            .map(|a| a.parse().unwrap())
            .collect();
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &arcs,
            lineage.to_der().unwrap(),
        )];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::days(1);
        let cert = p.signed_by(key, &self.issuer).unwrap();
        let crt = self.path(&format!("{name}.crt"));
        let k = self.path(&format!("{name}.key"));
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (crt, k)
    }

    /// Issues a certificate with openssl for a key file openssl made.
    fn issue_openssl(&self, name: &str, key: &Path, subj: &str) -> PathBuf {
        let ca_crt = self.path("ca.crt");
        let ca_key = self.path("ca.key");
        std::fs::write(&ca_crt, &self.pem).unwrap();
        std::fs::write(&ca_key, &self.key_pem).unwrap();
        let csr = self.path(&format!("{name}.csr"));
        let crt = self.path(&format!("{name}.crt"));
        let ext = self.path("ext");
        std::fs::write(
            &ext,
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["req", "-new", "-key"])
            .arg(key)
            .args(["-subj", subj, "-out"])
            .arg(&csr));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca_crt)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-CAcreateserial")
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&crt));
        crt
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn request(name: &str, requestor: &str) -> pb::CertificateSigningRequest {
    let key = pkix::PrivateKey::generate(KeyType::P256).unwrap();
    let der = pkix::build_csr(
        &key,
        &pkix::Subject::parse("/CN=myuser").unwrap().to_der(),
        &[],
    )
    .unwrap();
    pb::CertificateSigningRequest {
        api_version: "certificates.k8s.io/v1".into(),
        kind: "CertificateSigningRequest".into(),
        metadata: Some(pb::ObjectMeta {
            name: name.into(),
            uid: "0b7c3a2e-uid".into(),
            ..Default::default()
        }),
        spec: Some(pb::CertificateSigningRequestSpec {
            request: pkix::pem_encode("CERTIFICATE REQUEST", &der).into_bytes(),
            signer_name: "kubernetes.io/kube-apiserver-client".into(),
            expiration_seconds: Some(86400),
            usages: vec!["digital signature".into(), "client auth".into()],
            username: requestor.into(),
            ..Default::default()
        }),
        status: None,
    }
}

fn check_approval(ca: &Ca, signer: &StatementSigner) {
    let trust = ApprovalTrust::from_pem(ca.pem.as_bytes()).unwrap();
    let groups = vec!["system:masters".to_string()];
    let req = request("myuser", "bob");
    let now = SystemTime::now();
    let signed = signer.approval(&req, pb::Decision::Approve, now).unwrap();
    let who = verify_approval(
        &signed,
        &req,
        pb::Decision::Approve,
        &trust,
        &groups,
        Duration::from_secs(3600),
        now,
    )
    .unwrap();
    assert_eq!(who.username, "admin");
    // A statement for a deny is not an approval, and any changed field is refused.
    let deny = signer.approval(&req, pb::Decision::Deny, now).unwrap();
    assert!(
        verify_approval(
            &deny,
            &req,
            pb::Decision::Approve,
            &trust,
            &groups,
            Duration::from_secs(3600),
            now
        )
        .is_err()
    );
    let mut other = req.clone();
    other
        .spec
        .as_mut()
        .unwrap()
        .usages
        .push("key encipherment".into());
    assert!(
        verify_approval(
            &signed,
            &other,
            pb::Decision::Approve,
            &trust,
            &groups,
            Duration::from_secs(3600),
            now
        )
        .is_err()
    );
    // One batch statement for two requests: each verifies against its own
    // entry, never against the other request.
    let mut second = request("other", "carol");
    second.metadata.as_mut().unwrap().uid = "1c8d4b3f-uid".into();
    let batch = signer
        .batch(&[req.clone(), second.clone()], pb::Decision::Approve, now)
        .unwrap();
    assert_eq!(batch[0].signature, batch[1].signature);
    let verify = |s: &pb::SignedStatement, r: &pb::CertificateSigningRequest| {
        verify_approval(
            s,
            r,
            pb::Decision::Approve,
            &trust,
            &groups,
            Duration::from_secs(3600),
            now,
        )
    };
    assert_eq!(verify(&batch[0], &req).unwrap().username, "admin");
    assert_eq!(verify(&batch[1], &second).unwrap().username, "admin");
    assert!(verify(&batch[0], &second).is_err());
    assert!(verify(&batch[1], &req).is_err());
}

#[test]
fn approvals_verify_with_the_signers_rules_for_every_key_type() {
    let ca = ca();
    for (i, alg) in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ]
    .into_iter()
    .enumerate()
    {
        let key = KeyPair::generate_for(alg).unwrap();
        let (crt, k) = ca.issue(
            &format!("admin{i}"),
            &key,
            "admin",
            &["system:masters"],
            vec![],
        );
        check_approval(&ca, &StatementSigner::load(&crt, &k).unwrap());
    }
}

#[test]
fn approvals_verify_with_openssl_made_rsa_pkcs1_and_sec1_keys() {
    let ca = ca();
    let rsa = ca.path("rsa.key");
    run(Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&rsa)
        .arg("2048"));
    assert!(
        std::fs::read_to_string(&rsa)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    let crt = ca.issue_openssl("rsa", &rsa, "/CN=admin/O=system:masters");
    check_approval(&ca, &StatementSigner::load(&crt, &rsa).unwrap());

    let ec = ca.path("ec.key");
    run(Command::new("openssl")
        .args(["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out"])
        .arg(&ec));
    assert!(
        std::fs::read_to_string(&ec)
            .unwrap()
            .starts_with("-----BEGIN EC PRIVATE KEY-----")
    );
    let crt = ca.issue_openssl("ec", &ec, "/CN=admin/O=system:masters");
    check_approval(&ca, &StatementSigner::load(&crt, &ec).unwrap());
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let ca = ca();
    let key = KeyPair::generate().unwrap();
    let (crt, _) = ca.issue("a", &key, "admin", &["system:masters"], vec![]);
    let other = KeyPair::generate().unwrap();
    let (_, other_key) = ca.issue("b", &other, "admin", &["system:masters"], vec![]);
    let err = StatementSigner::load(&crt, &other_key)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match certificate"), "{err}");
}

#[test]
fn renewals_verify_with_the_signers_rules() {
    let ca = ca();
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ] {
        let key = KeyPair::generate_for(alg).unwrap();
        let sans = vec![
            SanType::DnsName("svc.example.internal".try_into().unwrap()),
            SanType::IpAddress("10.0.0.7".parse().unwrap()),
        ];
        let (crt, k) = ca.issue("user", &key, "alice", &["dev"], sans);
        let current = StatementSigner::load(&crt, &k).unwrap();
        let kind = current.key.key_type().unwrap();
        let now = SystemTime::now();
        let r = certctl::cmd::build_renewal(
            &current,
            kind,
            "alice-renew-1",
            "kubernetes.io/kube-apiserver-client",
            now,
        )
        .unwrap();
        assert_eq!(r.key.key_type(), Some(kind));
        let (csr_sha256, subject_der, csr_sans) = renewal_facts(&r.csr_der);
        let csr = RenewalInput {
            csr_sha256: &csr_sha256,
            subject_der: &subject_der,
            sans: &csr_sans,
        };
        let mut req = request("alice-renew-1", "alice");
        req.spec.as_mut().unwrap().request =
            pkix::pem_encode("CERTIFICATE REQUEST", &r.csr_der).into_bytes();
        let proof = verify_renewal(
            &r.statement,
            &req,
            csr,
            &ca.der,
            Duration::from_secs(3600),
            now,
        )
        .unwrap();
        assert_eq!(proof.identity.username, "alice");
        assert_eq!(proof.identity.groups, ["dev"]);
        // Bound to the request name.
        let mut renamed = req.clone();
        renamed.metadata.as_mut().unwrap().name = "other".into();
        assert!(
            verify_renewal(
                &r.statement,
                &renamed,
                csr,
                &ca.der,
                Duration::from_secs(3600),
                now
            )
            .is_err()
        );
    }
}

/// What the signer reads of a new CSR for a renewal, after checking its
/// self-signature and key kind as the signer does.
fn renewal_facts(der: &[u8]) -> ([u8; 32], Vec<u8>, Sans) {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::prelude::FromDer;
    let (rest, csr) = X509CertificationRequest::from_der(der).unwrap();
    assert!(rest.is_empty());
    csr.verify_signature().unwrap();
    let info = &csr.certification_request_info;
    KeyKind::from_spki(&info.subject_pki).unwrap();
    let mut sans = Sans::default();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(s) = ext {
            sans = Sans::from_general_names(&s.general_names).unwrap();
        }
    }
    (sha256(der), info.subject.as_raw().to_vec(), sans)
}

#[test]
fn revocations_verify_with_the_signers_rules_for_admin_and_holder() {
    use certsign_evidence::{RevokedBy, verify_revocation};
    let ca = ca();
    let trust = ApprovalTrust::from_pem(ca.pem.as_bytes()).unwrap();
    let masters = ["system:masters".to_string()];
    let profiles = [("kubernetes.io/kube-apiserver-client", &masters[..])];
    let max = Duration::from_secs(3600);
    let now = SystemTime::now();
    let (acrt, akey) = ca.issue(
        "admin",
        &KeyPair::generate().unwrap(),
        "admin",
        &["system:masters"],
        vec![],
    );
    let (hcrt, hkey) = ca.issue(
        "holder",
        &KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        "holder",
        &[],
        vec![],
    );
    let der_of = |p: &Path| pkix::certs_der_from_pem(&std::fs::read(p).unwrap()).remove(0);
    let (admin_der, holder_der) = (der_of(&acrt), der_of(&hcrt));
    let verify = |signed: &pb::SignedStatement, cert: &[u8]| {
        verify_revocation(signed, cert, &ca.der, &trust, &profiles, max, now)
    };

    // An admin revokes the holder's certificate with the admin's own key.
    let admin = StatementSigner::load(&acrt, &akey).unwrap();
    let signed = admin
        .revocation(&holder_der, pb::RevocationReason::KeyCompromise, now)
        .unwrap();
    let proof = verify(&signed, &holder_der).unwrap();
    assert_eq!(
        proof.serial,
        certctl::revocation::serial_of(&holder_der).unwrap()
    );
    assert_eq!(proof.reason, pb::RevocationReason::KeyCompromise);
    assert!(matches!(&proof.by, RevokedBy::Admin(id) if id.username == "admin"));
    // Bound to that certificate: it revokes no other.
    assert!(verify(&signed, &admin_der).is_err());

    // The holder gives up its own certificate with its own key.
    let holder = StatementSigner::load(&hcrt, &hkey).unwrap();
    let signed = holder
        .revocation(&holder_der, pb::RevocationReason::Superseded, now)
        .unwrap();
    let proof = verify(&signed, &holder_der).unwrap();
    assert_eq!(proof.by, RevokedBy::Holder);
    assert_eq!(proof.reason, pb::RevocationReason::Superseded);
    // A holder (no admin group) cannot revoke someone else's certificate.
    let signed = holder
        .revocation(&admin_der, pb::RevocationReason::KeyCompromise, now)
        .unwrap();
    assert!(verify(&signed, &admin_der).is_err());
}

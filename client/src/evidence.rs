//! Signed statements: the admin's ApprovalStatement, the holder's
//! RenewalStatement and either's RevocationStatement (ARCHITECTURE.md
//! "Evidence"), signed with the caller's own key and certificate files.
//!
//! The contexts and the exact bytes signed are `certsign_evidence`'s, the
//! same the signer and the approver verify. This module never sends
//! anything; it only proves, with the caller's own key, what the caller
//! decided.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Result, anyhow, bail};
use certsign_evidence::{
    APPROVAL_CONTEXT, BATCH_APPROVAL_CONTEXT, RENEWAL_CONTEXT, REVOCATION_CONTEXT, StatementKey,
    batch_statement, sha256, sign_statement,
};
use certsign_proto::v1 as pb;
use prost::Message as _;
use x509_parser::prelude::FromDer;

use crate::conn;
use crate::pkix::{self, PrivateKey};

/// A key with its certificate chain (leaf first).
#[derive(Debug)]
pub struct StatementSigner {
    /// The private key.
    pub key: PrivateKey,
    /// DER certificates from the certificate file, leaf first.
    pub chain: Vec<Vec<u8>>,
}

impl StatementSigner {
    /// Loads the certificate and key and checks that they belong together.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let (_, mut certs) = conn::read_certs("certificate", cert_path)?;
        if certs.is_empty() {
            bail!(
                "cannot read certificate {}: no certificate",
                cert_path.display()
            );
        }
        let leaf_der = certs.remove(0);
        let key = if crate::token::is_uri(key_path) {
            let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(&leaf_der)
                .map_err(|e| anyhow!("cannot read certificate {}: {e}", cert_path.display()))?;
            PrivateKey::from_token(crate::token::open(key_path, leaf.public_key().raw)?)
        } else {
            let key_pem = conn::read_file("key", key_path)?;
            PrivateKey::from_pem(&key_pem)
                .map_err(|e| anyhow!("cannot read key {}: {e}", key_path.display()))?
        };
        {
            let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(&leaf_der)
                .map_err(|e| anyhow!("cannot read certificate {}: {e}", cert_path.display()))?;
            if leaf.public_key().subject_public_key.data.as_ref() != key.public_key_raw().as_slice()
            {
                bail!(
                    "key {} does not match certificate {}",
                    key_path.display(),
                    cert_path.display()
                );
            }
        }
        // The chain is the key's certificate plus any intermediates in the
        // file; self-issued roots (a chain file ending in the CA) are left
        // out: the verifier has its own trust anchors.
        let mut chain = vec![leaf_der];
        chain.extend(certs.into_iter().filter(|der| {
            x509_parser::certificate::X509Certificate::from_der(der)
                .map(|(_, c)| c.subject().as_raw() != c.issuer().as_raw())
                .unwrap_or(false)
        }));
        Ok(Self { key, chain })
    }

    /// The DER of the key's own certificate.
    pub fn leaf(&self) -> Result<&[u8]> {
        self.chain
            .first()
            .map(Vec::as_slice)
            .ok_or_else(|| anyhow!("no certificate for the signing key"))
    }

    fn sign(&self, context: &'static str, statement: Vec<u8>) -> Result<pb::SignedStatement> {
        sign_statement(context, statement, &self.key, self.chain.clone())
            .map_err(|e| anyhow!("cannot sign the statement: {e}"))
    }

    /// Signs an ApprovalStatement binding every field of `csr` the signer compares.
    pub fn approval(
        &self,
        csr: &pb::CertificateSigningRequest,
        decision: pb::Decision,
        now: SystemTime,
    ) -> Result<pb::SignedStatement> {
        let statement = approval_statement(csr, decision, now)?;
        self.sign(APPROVAL_CONTEXT, statement.encode_to_vec())
    }

    /// Signs ONE BatchApprovalStatement over every request of `csrs` (at
    /// most `MAX_BATCH_ENTRIES`): one signature, and for each request, in
    /// order, a SignedStatement carrying it with the request's own entry
    /// and inclusion proof.
    pub fn batch(
        &self,
        csrs: &[pb::CertificateSigningRequest],
        decision: pb::Decision,
        now: SystemTime,
    ) -> Result<Vec<pb::SignedStatement>> {
        let entries = csrs
            .iter()
            .map(|c| {
                let st = approval_statement(c, decision, now)?;
                Ok(pb::ApprovalEntry {
                    request_uid: st.request_uid,
                    request_name: st.request_name,
                    csr_sha256: st.csr_sha256,
                    signer_name: st.signer_name,
                    usages: st.usages,
                    expiration_seconds: st.expiration_seconds,
                    requestor: st.requestor,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (statement, inclusions) = batch_statement(&entries, decision, now.into())
            .map_err(|e| anyhow!("cannot build the batch statement: {e}"))?;
        let signed = self.sign(BATCH_APPROVAL_CONTEXT, statement)?;
        Ok(inclusions
            .into_iter()
            .map(|inc| pb::SignedStatement {
                batch: Some(inc),
                ..signed.clone()
            })
            .collect())
    }

    /// Signs a RenewalStatement for a new request (chain = the current
    /// certificate only: the signer accepts only certificates it issued).
    pub fn renewal(
        &self,
        request_name: &str,
        csr_der: &[u8],
        signer_name: &str,
        now: SystemTime,
    ) -> Result<pb::SignedStatement> {
        let statement = pb::RenewalStatement {
            request_name: request_name.to_string(),
            csr_sha256: sha256(csr_der).to_vec(),
            signer_name: signer_name.to_string(),
            current_certificate_sha256: sha256(self.leaf()?).to_vec(),
            signed_at: Some(now.into()),
        };
        let mut signed = self.sign(RENEWAL_CONTEXT, statement.encode_to_vec())?;
        signed.certificate_chain.truncate(1);
        Ok(signed)
    }

    /// Signs a RevocationStatement for the DER certificate `cert_der`: an
    /// admin's (chain = the admin's certificate and intermediates) or the
    /// holder's (`cert_der` is this key's own certificate; chain = it alone).
    pub fn revocation(
        &self,
        cert_der: &[u8],
        reason: pb::RevocationReason,
        now: SystemTime,
    ) -> Result<pb::SignedStatement> {
        let statement = crate::revocation::statement(cert_der, reason, now)?;
        let mut signed = self.sign(REVOCATION_CONTEXT, statement.encode_to_vec())?;
        if self.leaf()? == cert_der {
            signed.certificate_chain.truncate(1);
        }
        Ok(signed)
    }
}

impl StatementKey for PrivateKey {
    fn sign_bytes(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.sign(msg).map_err(|e| format!("{e:#}"))
    }
}

/// The ApprovalStatement for a request as the approver returned it.
pub fn approval_statement(
    csr: &pb::CertificateSigningRequest,
    decision: pb::Decision,
    now: SystemTime,
) -> Result<pb::ApprovalStatement> {
    let meta = csr
        .metadata
        .as_ref()
        .ok_or_else(|| anyhow!("the approver returned a request without metadata"))?;
    let spec = csr
        .spec
        .as_ref()
        .ok_or_else(|| anyhow!("the approver returned a request without spec"))?;
    if meta.uid.is_empty() {
        bail!("certificatesigningrequest {:?} has no uid", meta.name);
    }
    let der = pkix::csr_der_from_pem(&spec.request).map_err(|e| {
        anyhow!(
            "certificatesigningrequest {:?}: spec.request: {e}",
            meta.name
        )
    })?;
    Ok(pb::ApprovalStatement {
        request_uid: meta.uid.clone(),
        request_name: meta.name.clone(),
        csr_sha256: sha256(&der).to_vec(),
        signer_name: spec.signer_name.clone(),
        usages: spec.usages.clone(),
        expiration_seconds: spec.expiration_seconds,
        requestor: spec.username.clone(),
        decision: decision as i32,
        signed_at: Some(now.into()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use certsign_evidence::signed_bytes;
    use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

    /// A self-signed certificate for `key` (its serial is rcgen's random one).
    fn certificate_for(key: &PrivateKey) -> Vec<u8> {
        let pem = key.pkcs8_pem().unwrap();
        let kp = rcgen::KeyPair::from_pem(&pem).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["holder.example".into()]).unwrap();
        params.serial_number = Some(vec![0x00, 0x8f, 0x01, 0x02].into());
        params.self_signed(&kp).unwrap().der().to_vec()
    }

    #[test]
    fn revocation_statements_bind_serial_hash_reason_and_verify_over_their_context() {
        let admin_key = PrivateKey::generate(pkix::KeyType::P256).unwrap();
        let admin_cert = certificate_for(&admin_key);
        let holder_key = PrivateKey::generate(pkix::KeyType::P256).unwrap();
        let holder_cert = certificate_for(&holder_key);
        let now = SystemTime::now();

        // The admin signs for another certificate: the admin's chain goes along.
        let admin = StatementSigner {
            key: admin_key,
            chain: vec![admin_cert.clone(), b"intermediate".to_vec()],
        };
        let signed = admin
            .revocation(&holder_cert, pb::RevocationReason::KeyCompromise, now)
            .unwrap();
        assert_eq!(signed.certificate_chain.len(), 2);
        assert_eq!(signed.certificate_chain[0], admin_cert);
        let st = pb::RevocationStatement::decode(signed.statement.as_slice()).unwrap();
        // The serial as the signer writes it: lowercase hex, no leading zero byte.
        assert_eq!(st.serial_number, "8f0102");
        assert_eq!(st.certificate_sha256, sha256(&holder_cert).to_vec());
        assert_eq!(st.reason, 1);
        assert_eq!(
            st.signed_at.unwrap().seconds,
            prost_types::Timestamp::from(now).seconds
        );
        let public = admin.key.public_key_raw();
        let pk = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public);
        pk.verify(
            &signed_bytes(REVOCATION_CONTEXT, &signed.statement),
            &signed.signature,
        )
        .unwrap();
        for other in [APPROVAL_CONTEXT, RENEWAL_CONTEXT] {
            assert!(
                pk.verify(&signed_bytes(other, &signed.statement), &signed.signature)
                    .is_err()
            );
        }

        // The holder gives up its own certificate: the chain is that certificate.
        let holder = StatementSigner {
            key: holder_key,
            chain: vec![holder_cert.clone(), b"intermediate".to_vec()],
        };
        let signed = holder
            .revocation(&holder_cert, pb::RevocationReason::Superseded, now)
            .unwrap();
        assert_eq!(signed.certificate_chain, vec![holder_cert.clone()]);
        let public = holder.key.public_key_raw();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public)
            .verify(
                &signed_bytes(REVOCATION_CONTEXT, &signed.statement),
                &signed.signature,
            )
            .unwrap();
    }

    #[test]
    fn approval_signature_verifies_over_context_and_statement() {
        let key = PrivateKey::generate(pkix::KeyType::P256).unwrap();
        let der =
            pkix::build_csr(&key, &pkix::Subject::parse("/CN=u").unwrap().to_der(), &[]).unwrap();
        let csr = pb::CertificateSigningRequest {
            metadata: Some(pb::ObjectMeta {
                name: "u".into(),
                uid: "uid-1".into(),
                ..Default::default()
            }),
            spec: Some(pb::CertificateSigningRequestSpec {
                request: pkix::pem_encode("CERTIFICATE REQUEST", &der).into_bytes(),
                signer_name: "kubernetes.io/kube-apiserver-client".into(),
                usages: vec!["client auth".into()],
                expiration_seconds: Some(600),
                username: "bob".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let signer = StatementSigner {
            key,
            chain: vec![b"cert".to_vec()],
        };
        let signed = signer
            .approval(&csr, pb::Decision::Approve, SystemTime::now())
            .unwrap();
        let st = pb::ApprovalStatement::decode(signed.statement.as_slice()).unwrap();
        assert_eq!(st.csr_sha256, sha256(&der));
        assert_eq!(st.requestor, "bob");
        assert_eq!(st.expiration_seconds, Some(600));
        assert_eq!(st.decision, pb::Decision::Approve as i32);
        let public = signer.key.public_key_raw();
        let pk = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public);
        pk.verify(
            &signed_bytes(APPROVAL_CONTEXT, &signed.statement),
            &signed.signature,
        )
        .unwrap();
        assert!(
            pk.verify(
                &signed_bytes(RENEWAL_CONTEXT, &signed.statement),
                &signed.signature
            )
            .is_err()
        );
    }
}

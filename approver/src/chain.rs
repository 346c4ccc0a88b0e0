//! `status.certificate` as Kubernetes' signers fill it: the issued
//! certificate, then any intermediates, never the root. The root (a
//! self-issued certificate) comes from the trust bundle (GetTrustBundle).
//!
//! The signer answers with the leaf followed by its CA certificate, so the
//! approver drops every self-issued certificate after the first block when
//! it records an issuance, and again when it serves a stored object (those
//! recorded before still hold the CA; they are served the same way, never
//! rewritten). The kept blocks are copied as stored, byte for byte; this
//! module never writes PEM or DER by hand, and never changes the first
//! block. Text it cannot read is left as it is.

use std::borrow::Cow;

use certsign_proto::v1::CertificateSigningRequest;
use rustls_pki_types::pem::{SectionKind, SliceIter};
use x509_parser::prelude::*;

/// `pem` without the self-issued certificates (roots) after its first
/// block. Unchanged (borrowed) when there are none or it does not parse.
pub fn leaf_and_intermediates(pem: &[u8]) -> Cow<'_, [u8]> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    if pem.windows(BEGIN.len()).filter(|w| *w == BEGIN).count() < 2 {
        return Cow::Borrowed(pem);
    }
    let mut kept: Vec<u8> = Vec::with_capacity(pem.len());
    let mut dropped = false;
    let mut blocks = SliceIter::<(SectionKind, Vec<u8>)>::new(pem);
    let mut offset = 0;
    let mut first = true;
    loop {
        let item = match blocks.next() {
            None => break,
            Some(Ok(item)) => item,
            Some(Err(_)) => return Cow::Borrowed(pem),
        };
        let end = pem.len() - blocks.remainder().len();
        let Some(text) = pem.get(offset..end) else {
            return Cow::Borrowed(pem);
        };
        offset = end;
        // Only the block itself: what precedes its BEGIN line is not kept.
        let Some(begin) = text.windows(BEGIN.len()).position(|w| w == BEGIN) else {
            return Cow::Borrowed(pem);
        };
        let block = &text[begin..];
        let (kind, der) = item;
        let root = !first && kind == SectionKind::Certificate && self_issued(&der);
        first = false;
        if root {
            dropped = true;
            continue;
        }
        kept.extend_from_slice(block);
        if !block.ends_with(b"\n") {
            kept.push(b'\n');
        }
    }
    if dropped {
        Cow::Owned(kept)
    } else {
        Cow::Borrowed(pem)
    }
}

/// Whether a DER certificate names itself as its issuer (a root).
fn self_issued(der: &[u8]) -> bool {
    X509Certificate::from_der(der)
        .map(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
        .unwrap_or(false)
}

/// A stored object as served: its certificate without the root.
pub fn serve(mut csr: CertificateSigningRequest) -> CertificateSigningRequest {
    if let Some(status) = csr.status.as_mut()
        && let Cow::Owned(trimmed) = leaf_and_intermediates(&status.certificate)
    {
        status.certificate = trimmed;
    }
    csr
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, "root");
        (p.self_signed(&key).unwrap(), key)
    }

    fn issued_by(
        cn: &str,
        ca: &rcgen::Certificate,
        ca_key: &rcgen::KeyPair,
        is_ca: bool,
    ) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if is_ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let issuer = rcgen::Issuer::from_ca_cert_der(ca.der(), ca_key).unwrap();
        (p.signed_by(&key, &issuer).unwrap(), key)
    }

    #[test]
    fn drops_the_root_keeps_leaf_and_intermediates() {
        let (root, root_key) = ca();
        let (mid, mid_key) = issued_by("mid", &root, &root_key, true);
        let (leaf, _) = issued_by("leaf", &mid, &mid_key, false);
        let chain = format!("{}{}{}", leaf.pem(), mid.pem(), root.pem());
        let out = leaf_and_intermediates(chain.as_bytes());
        assert_eq!(
            String::from_utf8(out.into_owned()).unwrap(),
            format!("{}{}", leaf.pem(), mid.pem())
        );
        // Already leaf-only, or one block: unchanged, not copied.
        let alone = leaf.pem();
        assert!(matches!(
            leaf_and_intermediates(alone.as_bytes()),
            Cow::Borrowed(_)
        ));
        // A self-signed first block stays (it is what was issued).
        let two = format!("{}{}", root.pem(), root.pem());
        assert_eq!(
            leaf_and_intermediates(two.as_bytes()).as_ref(),
            root.pem().as_bytes()
        );
        // Not PEM: left alone.
        assert_eq!(
            leaf_and_intermediates(b"garbage").as_ref(),
            b"garbage".as_slice()
        );
    }
}

//! What the inventory records of an issued certificate, read from the
//! request it was issued for: serial, subject (RFC 4514), signer name,
//! requestor, request name and uid, validity and the certificate's own PEM
//! block. Shared by the store (which writes the row in the transaction that
//! records the issuance) and the inventory (which reads rows back), so
//! neither has to import the other.
//!
//! This module must never change a request and never write PEM by hand: the
//! certificate's PEM is the signer's own first block, copied as sent.

use certsign_proto::v1::CertificateSigningRequest;
use rustls_pki_types::pem::{SectionKind, SliceIter};
use x509_cert::der::Decode as _;
use x509_parser::prelude::*;

/// One inventory row as written at issuance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedRecord {
    /// Lowercase hex of the DER INTEGER's content octets (as the signer and
    /// the evidence crate write serials).
    pub serial: String,
    /// RFC 4514.
    pub subject: String,
    pub signer_name: String,
    pub requestor: String,
    pub request_name: String,
    pub request_uid: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The certificate's PEM block alone (no chain).
    pub certificate_pem: Vec<u8>,
}

/// The PEM text of the first block of `chain` and that block's DER, when it
/// is a CERTIFICATE.
pub fn leaf_of(chain: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut blocks = SliceIter::<(SectionKind, Vec<u8>)>::new(chain);
    let (kind, der) = blocks.next()?.ok()?;
    if kind != SectionKind::Certificate {
        return None;
    }
    let used = chain.len().checked_sub(blocks.remainder().len())?;
    let text = chain.get(..used)?;
    // Only the block itself: anything before its BEGIN line is not part of it.
    let begin = text.windows(11).position(|w| w == b"-----BEGIN ")?;
    Some((text.get(begin..)?.to_vec(), der))
}

/// The DER of a stored certificate PEM block.
pub fn der_of(pem: &[u8]) -> Option<Vec<u8>> {
    leaf_of(pem).map(|(_, der)| der)
}

impl IssuedRecord {
    /// The record of `csr`'s certificate; `None` when it has none that
    /// parses (nothing to record).
    pub fn of(csr: &CertificateSigningRequest) -> Option<Self> {
        let status = csr.status.as_ref()?;
        let (certificate_pem, der) = leaf_of(&status.certificate)?;
        let (_, cert) = X509Certificate::from_der(&der).ok()?;
        let meta = csr.metadata.clone().unwrap_or_default();
        let spec = csr.spec.clone().unwrap_or_default();
        Some(Self {
            serial: hex::encode(cert.raw_serial()),
            subject: rfc4514(cert.subject().as_raw())?,
            signer_name: spec.signer_name,
            requestor: spec.username,
            request_name: meta.name,
            request_uid: meta.uid,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            certificate_pem,
        })
    }
}

/// A DER Name as RFC 4514 text (x509-cert's rendering: last RDN first,
/// special characters escaped).
fn rfc4514(der: &[u8]) -> Option<String> {
    x509_cert::name::Name::from_der(der)
        .ok()
        .map(|n| n.to_string())
}

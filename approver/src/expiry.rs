//! A request's certificate expiry: the notAfter of its issued certificate,
//! and the store's indexed `expires` column derived from it. Shared by the
//! store (which writes the column) and the cleaner (which reads it), so
//! neither has to import the other.
//!
//! This module must never change a request; it only reads its certificate.

use certsign_proto::v1::CertificateSigningRequest;
use x509_parser::prelude::*;

use crate::validation::first_pem_block;

/// The notAfter (unix seconds) of the request's certificate, if it has one
/// that parses.
pub fn not_after(csr: &CertificateSigningRequest) -> Option<i64> {
    let status = csr.status.as_ref()?;
    let (_, der) = first_pem_block(&status.certificate)?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The store's indexed `expires` column for `csr`: its certificate's
/// notAfter, or 0 when it has no readable certificate (never expires by
/// certificate). At least 1 for a certificate, so 0 and the store's -1
/// ("not computed") stay distinct.
pub fn expiry_column(csr: &CertificateSigningRequest) -> i64 {
    not_after(csr).map_or(0, |t| t.max(1))
}

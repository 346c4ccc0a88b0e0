//! The PKCS#10 request a service makes to renew its own TLS identity (the
//! approver's rotation through the signer, the signer's own re-issue): the
//! current certificate's subject, byte for byte, and its subjectAltName
//! extension as it is, for a new ECDSA P-256 key.
//!
//! Built with the `x509-cert`/`der` types, never by hand. The caller's key
//! signs through a closure; this module never holds a key and never decides
//! whether a renewal is allowed (the signer does).

use der::asn1::{BitString, OctetString, SetOfVec};
use der::{Decode as _, Encode as _};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, ExtensionReq, Version};
use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_parser::prelude::X509Certificate;

const ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";
const SUBJECT_ALT_NAME: &str = "2.5.29.17";

/// Why the request could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The subject's DER is not canonical, so it cannot be repeated as is.
    #[error("the subject is not in canonical DER; it cannot be repeated byte for byte")]
    SubjectNotCanonical,
    /// Encoding failed.
    #[error("CSR: {0}")]
    Der(#[from] der::Error),
    /// The key could not sign.
    #[error("CSR signature: {0}")]
    Signature(String),
}

/// A DER PKCS#10 request for the P-256 key whose SubjectPublicKeyInfo is
/// `spki` (DER), signed by `sign` (ECDSA P-256 SHA-256, ASN.1 signature),
/// repeating `cert`'s subject and subjectAltName.
pub fn renewal_request(
    cert: &X509Certificate<'_>,
    spki: &[u8],
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, RequestError> {
    let subject = Name::from_der(cert.subject().as_raw())?;
    if subject.to_der()? != cert.subject().as_raw() {
        return Err(RequestError::SubjectNotCanonical);
    }
    let mut attributes = SetOfVec::new();
    if let Some(san) = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == SUBJECT_ALT_NAME)
    {
        let extension = Extension {
            extn_id: ObjectIdentifier::new_unwrap(SUBJECT_ALT_NAME),
            critical: san.critical,
            extn_value: OctetString::new(san.value.to_vec())?,
        };
        attributes.insert(ExtensionReq(vec![extension]).try_into()?)?;
    }
    let info = CertReqInfo {
        version: Version::V1,
        subject,
        public_key: SubjectPublicKeyInfoOwned::from_der(spki)?,
        attributes,
    };
    let signature = sign(&info.to_der()?).map_err(RequestError::Signature)?;
    Ok(CertReq {
        info,
        algorithm: AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap(ECDSA_WITH_SHA256),
            parameters: None,
        },
        signature: BitString::from_bytes(&signature)?,
    }
    .to_der()?)
}

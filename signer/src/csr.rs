//! `VerifiedCsr`: a PKCS#10 request that has been parsed, whose key type and
//! size are acceptable and whose self-signature verifies.
//!
//! The only way to get a `VerifiedCsr` is [`VerifiedCsr::from_pem`], so code
//! holding one never re-checks. This module never decides policy (usages,
//! subject rules): that is `profile.rs`. It never trusts a requested
//! extension except the SAN list (checked later against the profile);
//! basicConstraints CA:TRUE is refused outright, everything else is dropped.
//!
//! Strict DER comes first, before any rule
//! ([`certsign_evidence::check_strict_der`]), so no parser can read the
//! request differently from this one.

use certsign_evidence::RenewalInput;
pub use certsign_evidence::{KeyKind, MIN_RSA_BITS, Sans, name_identity, sha256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::{
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, OID_X509_COMMON_NAME, OID_X509_EXT_BASIC_CONSTRAINTS,
    OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

/// Why a CSR was refused. Display texts follow Kubernetes where it has one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CsrError {
    /// The first PEM block is not a CERTIFICATE REQUEST (Kubernetes' text).
    #[error("PEM block type must be CERTIFICATE REQUEST")]
    NotPem,
    /// The DER inside the PEM block does not parse as PKCS#10.
    #[error("spec.request: invalid PKCS#10 request: {0}")]
    Parse(String),
    /// The key type is not one of ECDSA P-256/P-384, Ed25519, RSA >= 2048.
    #[error(
        "spec.request: key type not allowed: {0} (allowed: ECDSA P-256, ECDSA P-384, Ed25519, RSA >= 2048 bits)"
    )]
    KeyType(String),
    /// The request's self-signature does not verify (Kubernetes' text).
    #[error("unable to verify certificate request signature: {0}")]
    Signature(String),
    /// The request asks for basicConstraints CA:TRUE.
    #[error(
        "spec.request: the request asks for a CA certificate (basicConstraints CA:TRUE); this signer never issues CA certificates"
    )]
    AsksForCa,
    /// A SAN type other than DNS, IP, URI or email, or a malformed SAN.
    #[error("spec.request: unsupported or malformed subjectAltName: {0}")]
    San(String),
    /// A subject attribute another parser could read differently.
    #[error("spec.request: subject: {0}")]
    Subject(String),
    /// Not strict DER (checked before any rule).
    #[error("spec.request: not strict DER: {0}")]
    NotDer(String),
}
/// A parsed, signature-checked, key-checked certificate request.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    der: Vec<u8>,
    sha256: [u8; 32],
    subject_der: Vec<u8>,
    spki_der: Vec<u8>,
    key: KeyKind,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// Subject O values in order (Kubernetes: the groups).
    pub organizations: Vec<String>,
    /// Requested SANs, by type.
    pub sans: Sans,
}

/// Decode the first PEM block, which must be a CERTIFICATE REQUEST, to DER.
pub fn csr_der_from_pem(pem: &[u8]) -> Result<Vec<u8>, CsrError> {
    certsign_evidence::csr_der_from_pem(pem).ok_or(CsrError::NotPem)
}

/// Refuses a subject that parsers could read differently: an attribute
/// value that is not a readable string (invalid UTF-8, an OCTET STRING, an
/// odd BMPString: lenient readers skip it, so e.g. a forbidden O would go
/// unseen here yet be in the certificate), a control character (NUL cuts
/// the name short in C code), or more than one CN (this code reads the
/// first, Go's crypto/x509 and so Kubernetes the last: two usernames).
pub fn check_subject(name: &X509Name<'_>) -> Result<(), CsrError> {
    let mut cns = 0;
    for attr in name.iter_attributes() {
        // The OID's dotted text only for a refusal: building it costs a
        // dozen allocations per attribute, on every request.
        let oid = || attr.attr_type().to_id_string();
        let value = attr.as_str().map_err(|_| {
            CsrError::Subject(format!(
                "attribute {} is not a valid UTF8String, PrintableString, IA5String or NumericString",
                oid()
            ))
        })?;
        if value.chars().any(char::is_control) {
            return Err(CsrError::Subject(format!(
                "attribute {} value {value:?} contains a control character",
                oid()
            )));
        }
        if *attr.attr_type() == OID_X509_COMMON_NAME {
            cns += 1;
        }
    }
    if cns > 1 {
        return Err(CsrError::Subject(format!(
            "{cns} common names (CN); exactly one names the user"
        )));
    }
    Ok(())
}

impl VerifiedCsr {
    /// Parse `spec.request` (PEM), check key type/size, refuse CA:TRUE and
    /// verify the self-signature.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CsrError> {
        Self::from_der(&csr_der_from_pem(pem)?)
    }

    /// As [`VerifiedCsr::from_pem`], from DER.
    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        certsign_evidence::check_strict_der(der).map_err(CsrError::NotDer)?;
        let (rest, req) =
            X509CertificationRequest::from_der(der).map_err(|e| CsrError::Parse(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::Parse("trailing bytes after the request".into()));
        }
        let info = &req.certification_request_info;
        if info.version.0 != 0 {
            return Err(CsrError::Parse(format!(
                "version is {}, PKCS#10 defines only 0 (v1)",
                info.version.0
            )));
        }
        // Key checks come before the signature so that RSA-1024 is named as
        // such rather than as a signature failure.
        let key = KeyKind::from_spki(&info.subject_pki).map_err(|e| CsrError::KeyType(e.0))?;
        let sig_alg = &req.signature_algorithm.algorithm;
        if *sig_alg == OID_PKCS1_SHA1WITHRSA || *sig_alg == OID_SHA1_WITH_RSA {
            return Err(CsrError::Signature(
                "SHA-1 signatures are not accepted".into(),
            ));
        }
        req.verify_signature()
            .map_err(|e| CsrError::Signature(e.to_string()))?;

        check_subject(&info.subject)?;

        let mut sans = Sans::default();
        let mut ext_requests = 0;
        for attr in info.iter_attributes() {
            let ParsedCriAttribute::ExtensionRequest(ext_req) = attr.parsed_attribute() else {
                continue;
            };
            // Two extension requests, or one extension twice: which one
            // counts would depend on the reader. Fail closed.
            ext_requests += 1;
            if ext_requests > 1 {
                return Err(CsrError::Parse(
                    "more than one extensionRequest attribute".into(),
                ));
            }
            for (i, ext) in ext_req.extensions.iter().enumerate() {
                if ext_req.extensions[..i].iter().any(|e| e.oid == ext.oid) {
                    return Err(CsrError::Parse(format!(
                        "extension {} requested twice",
                        ext.oid.to_id_string()
                    )));
                }
                if ext.oid == OID_X509_EXT_BASIC_CONSTRAINTS {
                    match ext.parsed_extension() {
                        ParsedExtension::BasicConstraints(bc) if !bc.ca => {}
                        // CA:TRUE or an unreadable basicConstraints: fail closed.
                        _ => return Err(CsrError::AsksForCa),
                    }
                } else if ext.oid == OID_X509_EXT_SUBJECT_ALT_NAME {
                    match ext.parsed_extension() {
                        ParsedExtension::SubjectAlternativeName(san) => {
                            sans = Sans::from_general_names(&san.general_names)
                                .map_err(|e| CsrError::San(e.0))?;
                        }
                        _ => return Err(CsrError::San("unreadable extension".into())),
                    }
                }
                // Every other requested extension (KU, EKU, nsComment, ...)
                // is dropped: the profile decides what the certificate says.
            }
        }
        let (common_name, organizations) = name_identity(&info.subject);
        Ok(Self {
            der: der.to_vec(),
            sha256: sha256(der),
            subject_der: info.subject.as_raw().to_vec(),
            spki_der: info.subject_pki.raw.to_vec(),
            key,
            common_name,
            organizations,
            sans,
        })
    }

    /// The request DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// SHA-256 of the request DER (what statements bind).
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
    /// The subject Name, DER, exactly as requested.
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }
    /// The SubjectPublicKeyInfo, DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
    /// The key type.
    pub fn key(&self) -> KeyKind {
        self.key
    }
    /// What a renewal check reads of this request.
    pub fn renewal_input(&self) -> RenewalInput<'_> {
        RenewalInput {
            csr_sha256: &self.sha256,
            subject_der: &self.subject_der,
            sans: &self.sans,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn csr(alg: &'static rcgen::SignatureAlgorithm, ca: bool) -> String {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "dev");
        if ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn accepts_p256_and_reads_identity() {
        let c =
            VerifiedCsr::from_pem(csr(&rcgen::PKCS_ECDSA_P256_SHA256, false).as_bytes()).unwrap();
        assert_eq!(c.key(), KeyKind::P256);
        assert_eq!(c.common_name.as_deref(), Some("alice"));
        assert_eq!(c.organizations, vec!["dev".to_string()]);
        assert_eq!(c.sans.dns, vec!["a.example".to_string()]);
    }

    fn csr_named(cn: &str, dns: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![dns.to_string()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn rejects_control_characters_in_names() {
        // Found by the hostile-input corpus (tests/corpus): both were issued.
        let e = VerifiedCsr::from_pem(csr_named("admin\0.evil", "a.example").as_bytes());
        assert!(matches!(e, Err(CsrError::Subject(_))), "{e:?}");
        let text = e.unwrap_err().to_string();
        assert!(
            text.contains("attribute 2.5.4.3 value \"admin\\0.evil\" contains a control character"),
            "{text}"
        );
        let e = VerifiedCsr::from_pem(csr_named("alice", "good.example\0.evil").as_bytes());
        assert!(matches!(e, Err(CsrError::San(_))), "{e:?}");
        assert!(VerifiedCsr::from_pem(csr_named("alice", "good.example").as_bytes()).is_ok());
    }

    #[test]
    fn rejects_ca_true_csr() {
        let e = VerifiedCsr::from_pem(csr(&rcgen::PKCS_ED25519, true).as_bytes()).unwrap_err();
        assert_eq!(e, CsrError::AsksForCa);
    }

    #[test]
    fn rejects_tampered_signature_and_non_csr_pem() {
        let pem = csr(&rcgen::PKCS_ECDSA_P384_SHA384, false);
        let mut der = csr_der_from_pem(pem.as_bytes()).unwrap();
        let n = der.len();
        der[n - 5] ^= 0x01;
        assert!(matches!(
            VerifiedCsr::from_der(&der),
            Err(CsrError::Signature(_))
        ));
        let e = VerifiedCsr::from_pem(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "PEM block type must be CERTIFICATE REQUEST"
        );
    }
}

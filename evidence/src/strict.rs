//! Strict DER for a PKCS#10 request: what was received must be exactly
//! what re-encoding the parsed request gives, so every parser (the
//! signer's, the approver's, openssl) reads the same request.
//!
//! [`check_strict_der`] decodes the request with x509-cert (the der crate
//! refuses non-minimal lengths, integers, booleans, unsorted sets) and
//! requires the re-encoding to equal the input; the same for each requested
//! extension list and the SAN and basicConstraints values the signer reads;
//! and it requires minimal arcs in every OID, which re-encoding cannot show
//! (the der crate keeps an OID's bytes as read). It only judges encoding:
//! it must never decide policy or accept what the parsers would refuse.

use der::asn1::AnyRef;
use der::oid::AssociatedOid;
use der::{Decode, Encode, Reader, SliceReader, Tag, Tagged};
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};
use x509_cert::request::{CertReq, ExtensionReq};

/// Nesting deeper than this is refused (the walk recurses).
const MAX_DEPTH: u8 = 32;

/// `der` decoded as `T`, which must encode back to exactly `der`.
fn strict<'a, T: Decode<'a> + Encode>(der: &'a [u8], what: &str) -> Result<T, String> {
    let v = T::from_der(der).map_err(|e| format!("{what}: {e}"))?;
    match v.to_der() {
        Ok(again) if again == der => Ok(v),
        _ => Err(format!("{what}: re-encoding gives other bytes")),
    }
}

/// Every OID in `der` (recursively) has minimal arcs: no arc starts with
/// the padding byte 0x80.
fn minimal_oids(der: &[u8], depth: u8) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested more than {MAX_DEPTH} levels deep"));
    }
    let mut r = SliceReader::new(der).map_err(|e| e.to_string())?;
    while !r.is_finished() {
        let tlv = AnyRef::decode(&mut r).map_err(|e| e.to_string())?;
        let v = tlv.value();
        if tlv.tag().is_constructed() {
            minimal_oids(v, depth + 1)?;
        } else if tlv.tag() == Tag::ObjectIdentifier
            && (v.first() == Some(&0x80) || v.windows(2).any(|w| w[0] < 0x80 && w[1] == 0x80))
        {
            return Err("an OBJECT IDENTIFIER arc is not minimally encoded".into());
        }
    }
    Ok(())
}

/// Refuses a request (DER) that is not strict DER; the error says where.
pub fn check_strict_der(der: &[u8]) -> Result<(), String> {
    let req: CertReq = strict(der, "request")?;
    minimal_oids(der, 0)?;
    let ext_reqs = req
        .info
        .attributes
        .iter()
        .filter(|a| a.oid == ExtensionReq::OID);
    for value in ext_reqs.flat_map(|a| a.values.iter()) {
        let bytes = value.to_der().map_err(|e| e.to_string())?;
        for e in strict::<ExtensionReq>(&bytes, "extensionRequest")?.0 {
            let v = e.extn_value.as_bytes();
            if e.extn_id == SubjectAltName::OID {
                strict::<SubjectAltName>(v, "subjectAltName")?;
            } else if e.extn_id == BasicConstraints::OID {
                strict::<BasicConstraints>(v, "basicConstraints")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use der::oid::ObjectIdentifier;

    /// A CSR with a DNS SAN and a critical private extension.
    fn csr() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let mut ext = rcgen::CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![0x05, 0x00]);
        ext.set_criticality(true);
        p.custom_extensions = vec![ext];
        p.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn strict_der_passes_and_every_laxity_is_named() {
        let good = csr();
        check_strict_der(&good).unwrap();
        // Trailing bytes.
        let mut longer = good.clone();
        longer.push(0);
        assert!(check_strict_der(&longer).is_err());
        // A padded OID arc (2.5.4.3 as 55 04 80 03), which re-encodes to itself.
        let mut req = CertReq::from_der(&good).unwrap();
        let mut attrs = req.info.attributes.clone().into_vec();
        let mut ber = attrs[0].oid.as_bytes().to_vec();
        ber.insert(ber.len() - 1, 0x80);
        attrs[0].oid = ObjectIdentifier::from_bytes(&ber).unwrap();
        req.info.attributes = attrs.try_into().unwrap();
        let e = check_strict_der(&req.to_der().unwrap()).unwrap_err();
        assert_eq!(e, "an OBJECT IDENTIFIER arc is not minimally encoded");
        // critical TRUE as 0x01 inside the extension request (BER, not DER).
        let at = good
            .windows(3)
            .position(|w| w == [0x01, 0x01, 0xff])
            .unwrap();
        let mut ber_bool = good.clone();
        ber_bool[at + 2] = 0x01;
        let e = check_strict_der(&ber_bool).unwrap_err();
        assert!(e.starts_with("extensionRequest: "), "{e}");
    }
}

//! CRLs: an RFC 5280 v2 `CertificateList` of what this signer journaled,
//! built with x509-cert and signed with the CA key through certsign-keys
//! (file or PKCS#11, as certificates are).
//!
//! issuer = the CA subject, thisUpdate = now, nextUpdate = now +
//! `crl_validity`; extensions authorityKeyIdentifier (the CA's SKI) and
//! cRLNumber = max(microseconds since the epoch, last journaled + 1), so
//! numbers only grow across restarts and across signer replicas without
//! shared state. One entry per revoked certificate until one validity
//! period past its notAfter (RFC 5280 §3.3: it appears on at least one CRL
//! issued after it expired), with a reasonCode entry extension unless the
//! reason is unspecified(0); revokedCertificates is absent when empty.
//! This module must never list a serial the journal does not hold, and
//! never sign anything but the `TBSCertList` it built.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certsign_proto::v1::SignResponse;
use der::{Encode, asn1::OctetString};
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::{ToExtension, pkix::AuthorityKeyIdentifier, pkix::crl::*};
use x509_cert::{Version, name::Name, serial_number::SerialNumber, time::Time};

use crate::authority::{Authority, SignError};
use crate::issue::IssueError;
use crate::journal::Revocation;

impl Authority {
    /// Sign a fresh CRL (see the module header): `crl` (DER), `time` =
    /// thisUpdate, `next_update`.
    pub fn crl(&self, caller: &str) -> Result<SignResponse, SignError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH);
        let now = now.unwrap_or_default();
        let this_update = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let next_update = this_update + self.config.crl_validity;
        // The number and the entries are taken together: a higher number
        // never lists less.
        let (number, entries) = {
            let mut st = self.lock()?;
            let micros = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
            let number = micros.max(st.index.last_crl_number.saturating_add(1));
            st.index.last_crl_number = number;
            let listed = |r: &&Revocation| r.not_after + self.config.crl_validity > this_update;
            let entries = st.index.revoked.iter().filter(|(_, r)| listed(r));
            let entries: Vec<_> = entries.map(|(s, r)| (s.0.clone(), *r)).collect();
            (number, entries)
        };
        let encode = |e: der::Error| SignError::Issue(IssueError::Encode(e.to_string()));
        let tbs = self.tbs_cert_list(number, this_update, next_update, &entries);
        let tbs = tbs.map_err(encode)?;
        let signature = (self.ca.sign(&tbs.to_der().map_err(encode)?))
            .map_err(|e| SignError::Issue(IssueError::Sign(e.to_string())))?;
        let crl = CertificateList {
            signature_algorithm: tbs.signature.clone(),
            tbs_cert_list: tbs,
            signature: signature.to_bitstring().map_err(encode)?,
        };
        tracing::info!(number, entries = entries.len(), caller, "CRL signed");
        Ok(SignResponse {
            crl: crl.to_der().map_err(encode)?,
            time: Some(this_update.into()),
            next_update: Some(next_update.into()),
            ..SignResponse::default()
        })
    }

    fn tbs_cert_list(
        &self,
        number: u64,
        this_update: SystemTime,
        next_update: SystemTime,
        entries: &[(String, Revocation)],
    ) -> der::Result<TbsCertList> {
        let (none, no) = (&Name::default(), &[][..]);
        let mut revoked: Vec<RevokedCert> = Vec::with_capacity(entries.len());
        for (serial, r) in entries {
            // An unknown journaled number is listed as unspecified (no reasonCode).
            let reason = u32::try_from(r.reason).map(CrlReason::try_from);
            let reason = match reason {
                Ok(Ok(reason)) if reason != CrlReason::Unspecified => Some(reason),
                _ => None,
            };
            let serial = hex::decode(serial).map_err(|_| der::Tag::Integer.value_error())?;
            let reason = reason.map(|r| (&r).to_extension(none, no)).transpose()?;
            revoked.push(RevokedCert {
                serial_number: SerialNumber::new(&serial)?,
                revocation_date: Time::try_from(r.revoked_at)?,
                crl_entry_extensions: reason.map(|e| vec![e]),
            });
        }
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(self.ca.ski())?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        };
        Ok(TbsCertList {
            version: Version::V2,
            signature: self.ca.algorithm().identifier(),
            issuer: self.ca.subject().clone(),
            this_update: Time::try_from(this_update)?,
            next_update: Some(Time::try_from(next_update)?),
            revoked_certificates: (!revoked.is_empty()).then_some(revoked),
            crl_extensions: Some(vec![
                (&aki).to_extension(none, no)?,
                (&CrlNumber::try_from(number)?).to_extension(none, no)?,
            ]),
        })
    }
}

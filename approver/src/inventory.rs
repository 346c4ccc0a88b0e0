//! ListCertificates: the inventory of issued certificates as a caller may
//! see it (admins all of it, others the certificates issued for their own
//! requests), filtered and paged, each with its status ("Valid", "Revoked"
//! or "Expired"; Revoked wins over Expired).
//!
//! This module must never show a caller a certificate it may not read, and
//! never take the requestor filter of a non-admin from the request body.

use certsign_proto::v1::{IssuedCertificate, ListCertificatesRequest, ListCertificatesResponse};

use crate::access;
use crate::authn::Caller;
use crate::config::Config;
use crate::paging::Pages;
use crate::status::ServiceError;
use crate::store::{CertFilter, CertificateRecord, Store};
use certsign_runtime::unix_now;

/// Default and largest page size (as ListCertificateSigningRequests).
const DEFAULT_PAGE: u32 = 500;
const MAX_PAGE: u32 = 1000;

pub const VALID: &str = "Valid";
pub const REVOKED: &str = "Revoked";
pub const EXPIRED: &str = "Expired";

fn timestamp(secs: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    })
}

/// The status of `record` at `now` (unix seconds).
pub fn status_of(record: &CertificateRecord, now: i64) -> &'static str {
    match &record.revocation {
        Some(r) if r.held() => REVOKED,
        _ if record.issued.not_after <= now => EXPIRED,
        _ => VALID,
    }
}

/// An inventory row as the API shows it.
pub fn to_proto(record: &CertificateRecord, now: i64) -> IssuedCertificate {
    let r = &record.issued;
    let held = record.revocation.as_ref().filter(|v| v.held());
    IssuedCertificate {
        serial_number: r.serial.clone(),
        subject: r.subject.clone(),
        signer_name: r.signer_name.clone(),
        requestor: r.requestor.clone(),
        request_name: r.request_name.clone(),
        request_uid: r.request_uid.clone(),
        not_before: timestamp(r.not_before),
        not_after: timestamp(r.not_after),
        status: status_of(record, now).to_string(),
        revocation_reason: held.map_or(0, |v| v.reason),
        revocation_time: held.and_then(|v| timestamp(v.time)),
        certificate: r.certificate_pem.clone(),
    }
}

/// One page of the inventory for `id`.
pub async fn list(
    store: &Store,
    cfg: &Config,
    id: &Caller,
    req: &ListCertificatesRequest,
) -> Result<ListCertificatesResponse, ServiceError> {
    let after = Pages::Certificates.after(&req.continue_token)?;
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let filter = CertFilter {
        signer_name: non_empty(&req.signer_name),
        serial: non_empty(&req.serial_number.to_ascii_lowercase()),
        request_name: non_empty(&req.request_name),
        // Others only ever see the certificates of their own requests.
        requestor: (!access::is_admin(cfg, id)).then(|| id.username.clone()),
    };
    let limit = match u32::try_from(req.limit) {
        Ok(0) | Err(_) => DEFAULT_PAGE,
        Ok(n) => n.min(MAX_PAGE),
    };
    let mut rows = store
        .list_certificates(&filter, after.as_deref(), limit + 1)
        .await?;
    let continue_token = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last()
            .map(|r| Pages::Certificates.token(&r.issued.serial))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let now = unix_now();
    Ok(ListCertificatesResponse {
        items: rows.iter().map(|r| to_proto(r, now)).collect(),
        continue_token,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::issued::IssuedRecord;
    use crate::store::{RevocationState, StoredRevocation};

    fn record(not_after: i64, state: Option<RevocationState>) -> CertificateRecord {
        CertificateRecord {
            issued: IssuedRecord {
                serial: "0a".into(),
                subject: "CN=a".into(),
                signer_name: "example.com/x".into(),
                requestor: "a".into(),
                request_name: "r".into(),
                request_uid: "u".into(),
                not_before: 0,
                not_after,
                certificate_pem: Vec::new(),
            },
            revocation: state.map(|state| StoredRevocation {
                state,
                statement: Vec::new(),
                reason: 1,
                time: 5,
                refusal: String::new(),
            }),
        }
    }

    #[test]
    fn status_revoked_wins_and_refused_is_not_revoked() {
        assert_eq!(status_of(&record(100, None), 50), VALID);
        assert_eq!(status_of(&record(100, None), 100), EXPIRED);
        let pending = record(100, Some(RevocationState::Pending));
        assert_eq!(status_of(&pending, 200), REVOKED);
        let refused = record(100, Some(RevocationState::Refused));
        assert_eq!(status_of(&refused, 50), VALID);
        assert_eq!(to_proto(&refused, 50).revocation_reason, 0);
        assert_eq!(to_proto(&pending, 50).revocation_reason, 1);
    }
}

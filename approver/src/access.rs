//! Who may see and decide what: admins per signer name, requestors their
//! own requests. Others' requests are NOT_FOUND to a caller, not
//! PERMISSION_DENIED, so their names do not leak.
//!
//! This module must never take an identity from a request body: the
//! [`Identity`] comes from authentication only.

use certsign_proto::v1::{CertificateSigningRequest, ListCertificateSigningRequestsRequest};

use crate::authn::Identity;
use crate::config::Config;
use crate::status::ServiceError;
use crate::store::{ListFilter, Store, StoreError};

pub(crate) fn not_found(name: &str) -> ServiceError {
    StoreError::NotFound(name.to_string()).into()
}

pub(crate) fn is_admin(cfg: &Config, id: &Identity) -> bool {
    id.certificate().is_some() && cfg.is_admin(&id.groups)
}

pub(crate) fn can_read(cfg: &Config, id: &Identity, csr: &CertificateSigningRequest) -> bool {
    is_admin(cfg, id) || csr.spec.as_ref().is_some_and(|s| s.username == id.username)
}

/// The request `name` if the caller may read it; NOT_FOUND otherwise.
pub(crate) async fn readable(
    store: &Store,
    cfg: &Config,
    id: &Identity,
    name: &str,
) -> Result<CertificateSigningRequest, ServiceError> {
    match store.get(name).await? {
        Some(csr) if can_read(cfg, id, &csr) => Ok(csr),
        _ => Err(not_found(name)),
    }
}

/// Kubernetes' `IsAuthorizedForSignerName` for verb approve: the exact
/// signer name, then `domain/*`. Returns the groups that may approve.
pub(crate) fn approver_groups_for(
    cfg: &Config,
    id: &Identity,
    signer_name: &str,
) -> Result<Vec<String>, ServiceError> {
    let groups: Vec<String> = cfg
        .approver_groups(signer_name)
        .into_iter()
        .map(str::to_string)
        .collect();
    if id.certificate().is_none() || !id.groups.iter().any(|g| groups.contains(g)) {
        return Err(ServiceError::Forbidden(format!(
            "user not permitted to approve requests with signerName {signer_name:?}"
        )));
    }
    Ok(groups)
}

/// The store filter of a List call; `None` when the caller may see nothing
/// it asked for (a non-admin asking for another user's requests).
pub(crate) fn list_filter(
    cfg: &Config,
    id: &Identity,
    req: &ListCertificateSigningRequestsRequest,
) -> Option<ListFilter> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mut filter = ListFilter {
        signer_name: non_empty(&req.signer_name),
        condition: non_empty(&req.condition),
        username: non_empty(&req.username),
    };
    if !is_admin(cfg, id) {
        // Others only ever see their own requests.
        match &filter.username {
            Some(u) if *u != id.username => return None,
            _ => filter.username = Some(id.username.clone()),
        }
    }
    Some(filter)
}

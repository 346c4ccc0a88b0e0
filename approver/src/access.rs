//! Who may see and decide what: admins per signer name, requestors their
//! own requests. Others' requests are NOT_FOUND to a caller, not
//! PERMISSION_DENIED, so their names do not leak.
//!
//! [`review`] answers Kubernetes' SelfSubjectAccessReview (`kubectl auth
//! can-i`) from the same predicates.
//!
//! This module must never take an identity from a request body: the
//! [`Caller`] comes from authentication only.

use certsign_proto::v1::{CertificateSigningRequest, ListCertificateSigningRequestsRequest};

use crate::authn::Caller;
use crate::config::Config;
use crate::status::ServiceError;
use crate::store::{ListFilter, Store, StoreError};

pub(crate) fn not_found(name: &str) -> ServiceError {
    StoreError::NotFound(name.to_string()).into()
}

pub(crate) fn is_admin(cfg: &Config, id: &Caller) -> bool {
    id.certificate().is_some() && cfg.is_admin(&id.groups)
}

pub(crate) fn can_read(cfg: &Config, id: &Caller, csr: &CertificateSigningRequest) -> bool {
    is_admin(cfg, id) || csr.spec.as_ref().is_some_and(|s| s.username == id.username)
}

/// The request `name` if the caller may read it; NOT_FOUND otherwise.
pub(crate) async fn readable(
    store: &Store,
    cfg: &Config,
    id: &Caller,
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
    id: &Caller,
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
    id: &Caller,
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

/// One question of Kubernetes' SelfSubjectAccessReview (`kubectl auth
/// can-i VERB RESOURCE[/NAME] [--subresource S]`).
#[derive(Debug, Default)]
pub struct AccessQuestion {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// Whether certsign lets `id` do what `q` asks at all, and the reason
/// (how far, or why not). It answers from the same predicates the
/// handlers enforce (admin and approver groups here, bootstrap tokens only
/// creating and reading); anything it does not know is a no.
pub fn review(cfg: &Config, id: &Caller, q: &AccessQuestion) -> (bool, String) {
    const CSRS: &str = "certificatesigningrequests";
    let token = id.certificate().is_none();
    let scope = |verb: &str| {
        if is_admin(cfg, id) {
            (true, String::new())
        } else {
            (true, format!("{verb} only the requests you created"))
        }
    };
    let no = |why: &str| (false, why.to_string());
    match (
        q.group.as_str(),
        q.resource.as_str(),
        q.subresource.as_str(),
        q.verb.as_str(),
    ) {
        ("certificates.k8s.io", CSRS, "", "create") => (true, String::new()),
        ("certificates.k8s.io", CSRS, "" | "approval" | "status", "get" | "list" | "watch") => {
            scope("read")
        }
        ("certificates.k8s.io", CSRS, "", "delete" | "patch" | "update") if !token => {
            scope("change")
        }
        ("certificates.k8s.io", CSRS, "", "delete" | "patch" | "update") => {
            no("a bootstrap token may only create and read requests")
        }
        ("certificates.k8s.io", CSRS, "approval", "update" | "patch") => {
            if is_admin(cfg, id) {
                (true, "for the signer names your groups approve".into())
            } else {
                no("user not permitted to approve requests")
            }
        }
        ("certificates.k8s.io", "signers", "", "approve") if q.name.is_empty() => {
            if is_admin(cfg, id) {
                (true, "for the signer names your groups approve".into())
            } else {
                no("user not permitted to approve requests")
            }
        }
        ("certificates.k8s.io", "signers", "", "approve") => {
            match approver_groups_for(cfg, id, &q.name) {
                Ok(_) => (true, String::new()),
                Err(e) => (false, e.to_string()),
            }
        }
        ("certificates.k8s.io", "signers", "", "sign") => {
            no("only the signer signs, on its own host")
        }
        ("authentication.k8s.io", "selfsubjectreviews", "", "create")
        | ("authorization.k8s.io", "selfsubjectaccessreviews", "", "create") => {
            (true, String::new())
        }
        ("certificates.k8s.io", CSRS | "signers", _, _) => {
            no("certsign does not serve this verb on this resource")
        }
        _ => no("certsign serves only certificatesigningrequests"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::authn::Credential;

    fn ask(verb: &str, resource: &str, subresource: &str, name: &str) -> AccessQuestion {
        AccessQuestion {
            verb: verb.into(),
            group: "certificates.k8s.io".into(),
            resource: resource.into(),
            subresource: subresource.into(),
            name: name.into(),
        }
    }

    fn caller(name: &str, groups: &[&str], certificate: bool) -> Caller {
        Caller {
            identity: certsign_evidence::Identity {
                username: name.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
            credential: if certificate {
                Credential::Certificate(vec![0x30])
            } else {
                Credential::BootstrapToken("abcdef".into())
            },
        }
    }

    #[test]
    fn reviews_answer_as_the_handlers_enforce() {
        let cfg = Config::parse(
            "listen = \"127.0.0.1:0\"\ntls_cert = \"t\"\ntls_key = \"k\"\nclient_ca = \"c\"\ntrust_bundle = \"c\"\n[signer]\nendpoints = [\"https://127.0.0.1:7443\"]\nca = \"c\"\ncert = \"t\"\nkey = \"k\"\n[[signer_names]]\nname = \"example.com/*\"\napproval = \"signed\"\napprover_groups = [\"ops\"]\n",
            std::path::Path::new("/a/approver.toml"),
            std::path::Path::new("/a"),
        )
        .unwrap();
        let admin = caller("ann", &["ops"], true);
        let user = caller("bob", &["dev"], true);
        let token = caller("system:bootstrap:abcdef", &["system:bootstrappers"], false);
        let csrs = "certificatesigningrequests";
        assert_eq!(
            review(&cfg, &admin, &ask("list", csrs, "", "")),
            (true, String::new())
        );
        let (ok, why) = review(&cfg, &user, &ask("list", csrs, "", ""));
        assert!(ok && why == "read only the requests you created");
        assert!(review(&cfg, &user, &ask("delete", csrs, "", "x")).0);
        assert!(!review(&cfg, &token, &ask("delete", csrs, "", "x")).0);
        assert!(review(&cfg, &token, &ask("create", csrs, "", "")).0);
        assert!(review(&cfg, &admin, &ask("update", csrs, "approval", "")).0);
        assert!(!review(&cfg, &user, &ask("update", csrs, "approval", "")).0);
        assert!(
            review(
                &cfg,
                &admin,
                &ask("approve", "signers", "", "example.com/serving")
            )
            .0
        );
        let (ok, why) = review(&cfg, &admin, &ask("approve", "signers", "", "other.org/x"));
        assert!(!ok && why.contains("not permitted to approve"), "{why}");
        assert!(!review(&cfg, &admin, &ask("sign", "signers", "", "example.com/x")).0);
        assert!(!review(&cfg, &admin, &ask("deletecollection", csrs, "", "")).0);
        assert!(!review(&cfg, &admin, &ask("*", csrs, "", "")).0);
        let pods = AccessQuestion {
            verb: "get".into(),
            resource: "pods".into(),
            ..Default::default()
        };
        assert_eq!(
            review(&cfg, &admin, &pods),
            (
                false,
                "certsign serves only certificatesigningrequests".into()
            )
        );
    }
}

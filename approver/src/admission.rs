//! Admission of a new request (the Create RPC after authentication):
//! Kubernetes' create validation, the signer names this deployment serves
//! and a bootstrap token may ask for, the CertificateSubjectRestriction
//! plugin, the object built from the caller's identity, then renewal proofs
//! and `[[auto_approve]]` rules, and the store's counting limits, applied
//! atomically with the write.
//!
//! This module must never take an identity from the request body (the
//! object's username and groups come from authentication only), never keep
//! a submitted status, and never auto-approve a renewal whose proof it has
//! not verified with the same code the signer runs.

use std::time::SystemTime;

use certsign_evidence as evidence;
use certsign_proto::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec, CertificateSigningRequestStatus,
    CreateCertificateSigningRequestRequest, ObjectMeta, SignedStatement,
};

use crate::authn::Caller;
use crate::config::{ApprovalMode, BootstrapToken, Config, pattern_matches};
use crate::decision;
use crate::limits::Limiter;
use crate::service::DryRun;
use crate::status::ServiceError;
use crate::store::{CreateGuard, Store, StoreError};
use crate::validation::{self, CreateInput, FieldError, Invalid, Value};

/// What admission works with besides the call itself.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    pub store: &'a Store,
    pub limiter: &'a Limiter,
    /// Client CA certificates (DER): renewal proofs are issued by one.
    pub client_ca_der: &'a [Vec<u8>],
}

fn spec_of(csr: &CertificateSigningRequest) -> CertificateSigningRequestSpec {
    csr.spec.clone().unwrap_or_default()
}

impl Admission<'_> {
    /// Admit and store a new request from `id` (with the bootstrap token it
    /// authenticated with, if any). Returns the stored object.
    pub async fn create(
        &self,
        cfg: &Config,
        id: Caller,
        token: Option<BootstrapToken>,
        body: CreateCertificateSigningRequestRequest,
        dry_run: DryRun,
    ) -> Result<CertificateSigningRequest, ServiceError> {
        let submitted = body.certificate_signing_request.ok_or_else(|| {
            ServiceError::BadRequest("certificate_signing_request is required".into())
        })?;
        let meta_in = submitted.metadata.unwrap_or_default();
        let spec_in = submitted.spec.unwrap_or_default();
        self.limiter.check_request_size(spec_in.request.len())?;

        let name = if meta_in.name.is_empty() && !meta_in.generate_name.is_empty() {
            validation::generate_name(&meta_in.generate_name)
        } else {
            meta_in.name.clone()
        };
        let input = CreateInput {
            name: &name,
            generate_name: if meta_in.name.is_empty() {
                &meta_in.generate_name
            } else {
                ""
            },
            labels: &meta_in.labels,
            annotations: &meta_in.annotations,
            request: &spec_in.request,
            signer_name: &spec_in.signer_name,
            usages: &spec_in.usages,
            expiration_seconds: spec_in.expiration_seconds,
        };
        let mut errors = Vec::new();
        let csr = match validation::validate_create(&input) {
            Ok(csr) => Some(csr),
            Err(e) => {
                errors = e;
                None
            }
        };
        let signer_cfg = cfg.signer_name(&spec_in.signer_name);
        let signer_name_ok = !errors.iter().any(|e| {
            matches!(e, FieldError::Invalid { field, .. } | FieldError::Required { field, .. } | FieldError::TooLong { field, .. } if field == "spec.signerName")
        });
        if signer_cfg.is_none() && signer_name_ok {
            errors.push(FieldError::Invalid {
                field: "spec.signerName".into(),
                value: Value::Str(spec_in.signer_name.clone()),
                detail: "this deployment does not serve this signer name".into(),
            });
        }
        let (Some(csr), Some(signer_cfg), true) = (csr, signer_cfg, errors.is_empty()) else {
            return Err(Invalid { name, errors }.into());
        };

        if let Some(t) = &token
            && !t
                .signer_names
                .iter()
                .any(|p| pattern_matches(p, &spec_in.signer_name))
        {
            return Err(ServiceError::Forbidden(format!(
                "bootstrap token {:?} may not request certificates for signerName {:?}",
                t.id, spec_in.signer_name
            )));
        }
        // Kubernetes' CertificateSubjectRestriction admission plugin.
        if spec_in.signer_name == "kubernetes.io/kube-apiserver-client"
            && csr.organizations.iter().any(|o| o == "system:masters")
        {
            return Err(ServiceError::Forbidden(format!(
                "certificatesigningrequests.certificates.k8s.io {name:?} is forbidden: use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"
            )));
        }

        // Identity from authentication only; status discarded.
        let mut obj = CertificateSigningRequest {
            api_version: "certificates.k8s.io/v1".into(),
            kind: "CertificateSigningRequest".into(),
            metadata: Some(ObjectMeta {
                name: name.clone(),
                generate_name: meta_in.generate_name,
                // Time-ordered (UUIDv7): the store's unique index on uid then
                // grows at its end instead of touching a random page per
                // create (docs/BENCHMARKS.md). The creation
                // time it carries is in creationTimestamp anyway.
                uid: uuid::Uuid::now_v7().to_string(),
                resource_version: String::new(),
                creation_timestamp: Some(decision::now()),
                labels: meta_in.labels,
                annotations: meta_in.annotations,
            }),
            spec: Some(CertificateSigningRequestSpec {
                request: spec_in.request,
                signer_name: spec_in.signer_name.clone(),
                expiration_seconds: spec_in.expiration_seconds,
                usages: spec_in.usages,
                username: id.username.clone(),
                uid: String::new(),
                groups: id.groups.clone(),
                extra: Default::default(),
            }),
            status: Some(CertificateSigningRequestStatus::default()),
        };

        let renewal = body.renewal;
        if let Some(proof) = &renewal {
            self.check_renewal(cfg, &id, proof, &obj, signer_cfg.allow_renewal)?;
            decision::auto_approve(
                &mut obj,
                "Auto approving the renewal of a certificate, proven by its current holder.",
            );
        } else if signer_cfg.approval == ApprovalMode::Approver
            && let Some(message) = auto_approve_rule(cfg, &id, &obj, &csr)
        {
            decision::auto_approve(&mut obj, &message);
        }

        if dry_run == DryRun::All {
            // The name must be free, as the store would require; the
            // pending and token-use counts are only taken by a real create.
            if self.store.get(&name).await?.is_some() {
                return Err(StoreError::AlreadyExists(name).into());
            }
            return Ok(obj);
        }
        let guard = CreateGuard {
            max_pending_per_requestor: cfg.limits.max_pending_per_requestor,
            token: token.map(|t| (t.id, t.max_uses)),
        };
        let stored = self.store.create(obj, renewal.as_ref(), &guard).await?;
        tracing::info!(name = %name, requestor = %id.username, "created certificate signing request");
        Ok(stored)
    }

    fn check_renewal(
        &self,
        cfg: &Config,
        id: &Caller,
        proof: &SignedStatement,
        obj: &CertificateSigningRequest,
        allow_renewal: bool,
    ) -> Result<(), ServiceError> {
        let spec = spec_of(obj);
        let Some(client_cert) = id.certificate() else {
            return Err(ServiceError::Forbidden(
                "a renewal must be authenticated by the certificate being replaced (client certificate)".into(),
            ));
        };
        if !allow_renewal {
            return Err(ServiceError::Forbidden(format!(
                "signerName {:?} does not allow renewal",
                spec.signer_name
            )));
        }
        if proof.certificate_chain.first().map(Vec::as_slice) != Some(client_cert) {
            return Err(ServiceError::Forbidden(
                "renewal: certificate_chain[0] must be the client certificate of this call".into(),
            ));
        }
        let new_csr = validation::VerifiedCsr::from_pem(&spec.request)
            .and_then(|c| c.renewal_facts())
            .map_err(|e| ServiceError::BadRequest(format!("renewal: {e}")))?;
        let mut last = None;
        for ca in self.client_ca_der {
            match evidence::verify_renewal(
                proof,
                obj,
                new_csr.input(),
                ca,
                cfg.statement_max_age,
                SystemTime::now(),
            ) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(source) => ServiceError::Evidence {
                context: "renewal proof refused",
                source,
            },
            None => ServiceError::Precondition("no client CA configured".into()),
        })
    }
}

/// The first `[[auto_approve]]` rule that approves this request: its
/// condition message.
fn auto_approve_rule(
    cfg: &Config,
    id: &Caller,
    obj: &CertificateSigningRequest,
    csr: &validation::VerifiedCsr,
) -> Option<String> {
    let spec = spec_of(obj);
    cfg.auto_approve
        .iter()
        .enumerate()
        .find(|(_, r)| {
            r.signer_names
                .iter()
                .any(|p| pattern_matches(p, &spec.signer_name))
                && (r.groups.is_empty() || r.groups.iter().any(|g| id.groups.contains(g)))
                && (r.usernames.is_empty() || r.usernames.contains(&id.username))
                && (!r.cn_equals_username || csr.common_name == id.username)
                && (r.allowed_organizations.is_empty()
                    || csr
                        .organizations
                        .iter()
                        .all(|o| r.allowed_organizations.contains(o)))
        })
        .map(|(i, r)| {
            r.message
                .clone()
                .unwrap_or_else(|| format!("Auto approved by auto_approve rule {i}."))
        })
}

//! The `certsign.v1.Approver` gRPC service: authenticate, authorize, decode,
//! call one domain function, encode. The only place errors become
//! `tonic::Status` (`to_status`). Each RPC takes one snapshot of the
//! configuration in force and uses only it, so a reload never splits a call.
//!
//! It must never take an identity from a request body, never show a caller
//! a request it may not read (others' requests are NOT_FOUND, not
//! PERMISSION_DENIED), and never record an approval whose signed statement
//! it has not verified with the same code the signer runs.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use certsign_evidence::{self as evidence, ApprovalTrust, EvidenceError};
use certsign_proto::v1::approver_server::Approver;
use certsign_proto::v1::{
    ApproveCertificateSigningRequestRequest, CertificateSigningRequest,
    CertificateSigningRequestSpec, CertificateSigningRequestStatus,
    CreateCertificateSigningRequestRequest, Decision, DeleteCertificateSigningRequestRequest,
    DeleteCertificateSigningRequestResponse, DenyCertificateSigningRequestRequest,
    GetCertificateSigningRequestRequest, GetTrustBundleRequest,
    ListCertificateSigningRequestsRequest, ListCertificateSigningRequestsResponse, ObjectMeta,
    SignedStatement, TrustBundle, WatchCertificateSigningRequestsRequest, WatchEvent,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::authn::{self, AuthnError, Caller as Identity};
use crate::config::{ApprovalMode, BootstrapToken, Config, LiveConfig, pattern_matches};
use crate::decision::{self, Actor, DecisionError, DecisionInput, State};
use crate::forwarder::Forwarder;
use crate::limits::{LimitError, Limiter};
use crate::store::{CreateGuard, ListFilter, Store, StoreError, UpdateError};
use crate::validation::{self, CreateInput, FieldError, Invalid, Value};
use crate::watch::Hub;

/// Default and largest page size of List.
const DEFAULT_PAGE: u32 = 500;
const MAX_PAGE: u32 = 1000;

/// Every way an RPC can fail, before it becomes a `Status`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error(transparent)]
    Unauthenticated(#[from] AuthnError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Decision(#[from] DecisionError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{context}: {source}")]
    Evidence {
        context: &'static str,
        source: EvidenceError,
    },
}

impl<E: Into<ServiceError>> From<UpdateError<E>> for ServiceError {
    fn from(e: UpdateError<E>) -> Self {
        match e {
            UpdateError::Store(s) => ServiceError::Store(s),
            UpdateError::Rejected(r) => r.into(),
        }
    }
}

/// Longest status message sent, in bytes. The message travels in an HTTP/2
/// trailer (percent-encoded, so up to 3x longer); a very long one (e.g. 1000
/// aggregated field errors) overflows the peer's header limit and the client
/// sees an opaque INTERNAL instead of the INVALID_ARGUMENT it was given.
pub const MAX_STATUS_MESSAGE: usize = 2048;

/// The one mapping from errors to gRPC statuses. Internal details (database
/// errors) are logged, not sent.
pub fn to_status(e: &ServiceError) -> Status {
    let status = to_status_unbounded(e);
    let msg = status.message();
    if msg.len() <= MAX_STATUS_MESSAGE {
        return status;
    }
    let mut cut = MAX_STATUS_MESSAGE;
    while !msg.is_char_boundary(cut) {
        cut -= 1;
    }
    Status::new(
        status.code(),
        format!("{}... ({} more bytes)", &msg[..cut], msg.len() - cut),
    )
}

fn to_status_unbounded(e: &ServiceError) -> Status {
    use ServiceError as E;
    match e {
        E::Unauthenticated(a) => Status::unauthenticated(a.to_string()),
        E::Invalid(i) => Status::invalid_argument(i.to_string()),
        E::BadRequest(m) => Status::invalid_argument(m.clone()),
        E::Store(StoreError::NotFound(_)) => Status::not_found(e.to_string()),
        E::Store(StoreError::AlreadyExists(_)) => Status::already_exists(e.to_string()),
        E::Store(StoreError::PendingLimit { .. }) => Status::resource_exhausted(e.to_string()),
        E::Store(StoreError::TokenExhausted { .. }) => Status::unauthenticated(e.to_string()),
        E::Store(other) => {
            tracing::error!(error = %other, "storage failure");
            Status::unavailable("the request store is unavailable; retry later")
        }
        E::Decision(DecisionError::Conflicting { .. }) => {
            Status::failed_precondition(e.to_string())
        }
        E::Decision(DecisionError::SelfApproval { .. }) => Status::permission_denied(e.to_string()),
        E::Limit(_) => Status::resource_exhausted(e.to_string()),
        E::Forbidden(m) => Status::permission_denied(m.clone()),
        E::Precondition(m) => Status::failed_precondition(m.clone()),
        E::Evidence { source, .. } => match source {
            EvidenceError::GroupNotAllowed { .. } | EvidenceError::SelfApproval(_) => {
                Status::permission_denied(e.to_string())
            }
            _ => Status::invalid_argument(e.to_string()),
        },
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        to_status(&e)
    }
}

/// What the service needs, shared by all RPCs.
#[derive(Debug)]
pub struct Shared {
    /// The configuration in force; each RPC takes one snapshot of it.
    pub config: Arc<LiveConfig>,
    pub store: Store,
    pub hub: Hub,
    pub forwarder: Forwarder,
    pub limiter: Arc<Limiter>,
    /// Admin statement certificates chain to the client CA.
    pub approval_trust: ApprovalTrust,
    /// Client CA certificates (DER): renewal proofs are issued by one.
    pub client_ca_der: Vec<Vec<u8>>,
    /// PEM returned by GetTrustBundle.
    pub trust_bundle_pem: Vec<u8>,
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct ApproverService {
    shared: Arc<Shared>,
    /// Identities of client certificates already seen (no parse per call).
    identities: Arc<authn::CertificateIdentities>,
}

/// Which RPCs a bootstrap token may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenUse {
    Allowed,
    Refused,
}

fn not_found(name: &str) -> ServiceError {
    StoreError::NotFound(name.to_string()).into()
}

fn name_of(csr: &CertificateSigningRequest) -> &str {
    csr.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
}

fn spec_of(csr: &CertificateSigningRequest) -> CertificateSigningRequestSpec {
    csr.spec.clone().unwrap_or_default()
}

impl ApproverService {
    pub fn new(shared: Shared) -> Self {
        Self {
            shared: Arc::new(shared),
            identities: Arc::default(),
        }
    }

    /// Authenticate the caller and count the call against its rate.
    fn authenticate<T>(
        &self,
        cfg: &Config,
        req: &Request<T>,
        token_use: TokenUse,
    ) -> Result<(Identity, Option<BootstrapToken>), ServiceError> {
        let (id, token) = match req.peer_certs() {
            Some(certs) if !certs.is_empty() => {
                (self.identities.identify(certs[0].as_ref())?, None)
            }
            _ => {
                let header = req
                    .metadata()
                    .get("authorization")
                    .ok_or(AuthnError::Missing)?
                    .to_str()
                    .map_err(|_| AuthnError::MalformedToken)?;
                let (id, token) =
                    authn::from_bearer(header, &cfg.bootstrap_tokens, SystemTime::now())?;
                if token_use == TokenUse::Refused {
                    return Err(AuthnError::TokenNotAllowed.into());
                }
                (id, Some(token))
            }
        };
        self.shared.limiter.check_rate(&id.username)?;
        Ok((id, token))
    }

    fn is_admin(cfg: &Config, id: &Identity) -> bool {
        id.certificate().is_some() && cfg.is_admin(&id.groups)
    }

    fn can_read(cfg: &Config, id: &Identity, csr: &CertificateSigningRequest) -> bool {
        Self::is_admin(cfg, id) || csr.spec.as_ref().is_some_and(|s| s.username == id.username)
    }

    async fn readable(
        &self,
        cfg: &Config,
        id: &Identity,
        name: &str,
    ) -> Result<CertificateSigningRequest, ServiceError> {
        match self.shared.store.get(name).await? {
            Some(csr) if Self::can_read(cfg, id, &csr) => Ok(csr),
            _ => Err(not_found(name)),
        }
    }

    /// Kubernetes' `IsAuthorizedForSignerName` for verb approve: the exact
    /// signer name, then `domain/*`.
    fn approver_groups_for(
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

    fn notify(&self, csr: &CertificateSigningRequest) {
        self.shared.hub.notify();
        if decision::state_of(csr) == State::Approved {
            self.shared.forwarder.notify();
        }
    }

    async fn create(
        &self,
        cfg: &Config,
        id: Identity,
        token: Option<BootstrapToken>,
        body: CreateCertificateSigningRequestRequest,
    ) -> Result<CertificateSigningRequest, ServiceError> {
        let submitted = body.certificate_signing_request.ok_or_else(|| {
            ServiceError::BadRequest("certificate_signing_request is required".into())
        })?;
        let meta_in = submitted.metadata.unwrap_or_default();
        let spec_in = submitted.spec.unwrap_or_default();
        self.shared
            .limiter
            .check_request_size(spec_in.request.len())?;

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
                // create (docs/BENCHMARKS.md, "Third pass"). The creation
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
            && let Some(message) = Self::auto_approve_rule(cfg, &id, &obj, &csr)
        {
            decision::auto_approve(&mut obj, &message);
        }

        let guard = CreateGuard {
            max_pending_per_requestor: cfg.limits.max_pending_per_requestor,
            token: token.map(|t| (t.id, t.max_uses)),
        };
        let stored = self
            .shared
            .store
            .create(obj, renewal.as_ref(), &guard)
            .await?;
        tracing::info!(name = %name, requestor = %id.username, "created certificate signing request");
        self.notify(&stored);
        Ok(stored)
    }

    fn check_renewal(
        &self,
        cfg: &Config,
        id: &Identity,
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
        for ca in &self.shared.client_ca_der {
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

    /// The first `[[auto_approve]]` rule that approves this request: its
    /// condition message.
    fn auto_approve_rule(
        cfg: &Config,
        id: &Identity,
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

    /// Verify a signed statement from the caller: its signing certificate
    /// must be the caller's own client certificate.
    fn verify_statement(
        &self,
        cfg: &Config,
        id: &Identity,
        signed: &SignedStatement,
        obj: &CertificateSigningRequest,
        expected: Decision,
        groups: &[String],
    ) -> Result<(), ServiceError> {
        let context = if expected == Decision::Approve {
            "approval statement refused"
        } else {
            "denial statement refused"
        };
        if signed.certificate_chain.first().map(Vec::as_slice) != id.certificate() {
            return Err(ServiceError::Forbidden(format!(
                "{context}: it must be signed with the key of the caller's own client certificate (certificate_chain[0])"
            )));
        }
        evidence::verify_approval(
            signed,
            obj,
            expected,
            &self.shared.approval_trust,
            groups,
            cfg.statement_max_age,
            SystemTime::now(),
        )
        .map(|_| ())
        .map_err(|source| ServiceError::Evidence { context, source })
    }

    // The request's configuration snapshot travels with it explicitly (one
    // snapshot per call), which takes this past clippy's argument count.
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        cfg: &Config,
        id: Identity,
        name: &str,
        decision: Decision,
        statement: Option<SignedStatement>,
        reason: String,
        message: String,
    ) -> Result<CertificateSigningRequest, ServiceError> {
        let current = self.readable(cfg, &id, name).await?;
        let spec = spec_of(&current);
        let groups = Self::approver_groups_for(cfg, &id, &spec.signer_name)?;
        let signer_cfg = cfg.signer_name(&spec.signer_name).ok_or_else(|| {
            ServiceError::Precondition(format!(
                "signerName {:?} is no longer served by this deployment",
                spec.signer_name
            ))
        })?;
        let input = DecisionInput {
            actor: Actor {
                username: id.username.clone(),
                groups: id.groups.clone(),
            },
            reason,
            message,
            statement: statement.clone(),
        };
        // Refuse conflicting decisions with kubectl's text before looking
        // at the evidence (a dry run on a copy; the store re-checks).
        let mut probe = current.clone();
        let changed = match decision {
            Decision::Approve => {
                decision::approve(&mut probe, input.clone(), signer_cfg.required_approvals)?
            }
            _ => decision::deny(&mut probe, input.clone())?,
        };
        if !changed {
            return Ok(current);
        }
        match (&statement, decision) {
            (Some(s), d) => self.verify_statement(cfg, &id, s, &current, d, &groups)?,
            (None, Decision::Approve) => {
                return Err(ServiceError::BadRequest(
                    "approval: a signed ApprovalStatement from the approving admin is required"
                        .into(),
                ));
            }
            (None, _) => {}
        }
        let required = signer_cfg.required_approvals;
        let updated = self
            .shared
            .store
            .update(name, move |c| match decision {
                Decision::Approve => decision::approve(c, input, required),
                _ => decision::deny(c, input),
            })
            .await?;
        tracing::info!(%name, admin = %id.username, ?decision, "recorded decision");
        self.notify(&updated);
        Ok(updated)
    }

    fn list_filter(
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
        if !Self::is_admin(cfg, id) {
            // Others only ever see their own requests.
            match &filter.username {
                Some(u) if *u != id.username => return None,
                _ => filter.username = Some(id.username.clone()),
            }
        }
        Some(filter)
    }
}

fn decode_continue(token: &str) -> Result<Option<String>, ServiceError> {
    if token.is_empty() {
        return Ok(None);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("v1:").map(str::to_string))
        .map(Some)
        .ok_or_else(|| {
            ServiceError::BadRequest("continue_token: not a token this server issued".into())
        })
}

fn encode_continue(name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{name}"))
}

#[tonic::async_trait]
impl Approver for ApproverService {
    async fn create_certificate_signing_request(
        &self,
        request: Request<CreateCertificateSigningRequestRequest>,
    ) -> Result<Response<CertificateSigningRequest>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, token) = self.authenticate(&cfg, &request, TokenUse::Allowed)?;
        Ok(Response::new(
            self.create(&cfg, id, token, request.into_inner()).await?,
        ))
    }

    async fn get_certificate_signing_request(
        &self,
        request: Request<GetCertificateSigningRequestRequest>,
    ) -> Result<Response<CertificateSigningRequest>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Allowed)?;
        Ok(Response::new(
            self.readable(&cfg, &id, &request.get_ref().name).await?,
        ))
    }

    async fn list_certificate_signing_requests(
        &self,
        request: Request<ListCertificateSigningRequestsRequest>,
    ) -> Result<Response<ListCertificateSigningRequestsResponse>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Allowed)?;
        let req = request.into_inner();
        let after = decode_continue(&req.continue_token)?;
        let Some(filter) = Self::list_filter(&cfg, &id, &req) else {
            return Ok(Response::new(
                ListCertificateSigningRequestsResponse::default(),
            ));
        };
        let limit = match u32::try_from(req.limit) {
            Ok(0) | Err(_) => DEFAULT_PAGE,
            Ok(n) => n.min(MAX_PAGE),
        };
        let mut items = self
            .shared
            .store
            .list(&filter, after.as_deref(), limit + 1)
            .await
            .map_err(ServiceError::from)?;
        let continue_token = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items
                .last()
                .map(|c| encode_continue(name_of(c)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListCertificateSigningRequestsResponse {
            items,
            continue_token,
        }))
    }

    type WatchCertificateSigningRequestsStream = ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch_certificate_signing_requests(
        &self,
        request: Request<WatchCertificateSigningRequestsRequest>,
    ) -> Result<Response<Self::WatchCertificateSigningRequestsStream>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Allowed)?;
        let req = request.into_inner();
        let wants_initial = req.send_initial_events;
        // Subscribe before listing so nothing falls between the two.
        let mut events = self.shared.hub.subscribe();
        let this = self.clone();
        let matches = move |this: &ApproverService, c: &CertificateSigningRequest| {
            // The configuration in force at each event (not at the start of
            // the watch), so a reload that removes an admin group also
            // stops that group's open watches from showing others' requests.
            Self::can_read(&this.shared.config.snapshot(), &id, c)
                && (req.name.is_empty() || name_of(c) == req.name)
                && (req.signer_name.is_empty()
                    || c.spec
                        .as_ref()
                        .is_some_and(|s| s.signer_name == req.signer_name))
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut seen: std::collections::HashMap<String, i64> = Default::default();
            if wants_initial {
                let mut after: Option<String> = None;
                loop {
                    let page = match this
                        .shared
                        .store
                        .list(&ListFilter::default(), after.as_deref(), DEFAULT_PAGE)
                        .await
                    {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = tx.send(Err(to_status(&e.into()))).await;
                            return;
                        }
                    };
                    let Some(last) = page.last() else { break };
                    after = Some(name_of(last).to_string());
                    for c in page {
                        if !matches(&this, &c) {
                            continue;
                        }
                        let rv = c
                            .metadata
                            .as_ref()
                            .and_then(|m| m.resource_version.parse().ok())
                            .unwrap_or(0);
                        seen.insert(name_of(&c).to_string(), rv);
                        let ev = WatchEvent {
                            r#type: "ADDED".into(),
                            object: Some(c),
                        };
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            loop {
                let ev = match events.recv().await {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx
                            .send(Err(Status::aborted(
                                "watch fell too far behind; list again and start a new watch",
                            )))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if !matches(&this, &ev.object) {
                    continue;
                }
                if seen
                    .get(name_of(&ev.object))
                    .is_some_and(|rv| *rv >= ev.resource_version)
                {
                    continue;
                }
                let out = WatchEvent {
                    r#type: ev.event_type.clone(),
                    object: Some(ev.object.clone()),
                };
                if tx.send(Ok(out)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn approve_certificate_signing_request(
        &self,
        request: Request<ApproveCertificateSigningRequestRequest>,
    ) -> Result<Response<CertificateSigningRequest>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Refused)?;
        let r = request.into_inner();
        Ok(Response::new(
            self.decide(
                &cfg,
                id,
                &r.name,
                Decision::Approve,
                r.approval,
                r.reason,
                r.message,
            )
            .await?,
        ))
    }

    async fn deny_certificate_signing_request(
        &self,
        request: Request<DenyCertificateSigningRequestRequest>,
    ) -> Result<Response<CertificateSigningRequest>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Refused)?;
        let r = request.into_inner();
        Ok(Response::new(
            self.decide(
                &cfg,
                id,
                &r.name,
                Decision::Deny,
                r.denial,
                r.reason,
                r.message,
            )
            .await?,
        ))
    }

    async fn delete_certificate_signing_request(
        &self,
        request: Request<DeleteCertificateSigningRequestRequest>,
    ) -> Result<Response<DeleteCertificateSigningRequestResponse>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Refused)?;
        let name = &request.get_ref().name;
        self.readable(&cfg, &id, name).await?;
        if self
            .shared
            .store
            .delete(name, None)
            .await
            .map_err(ServiceError::from)?
            .is_none()
        {
            return Err(not_found(name).into());
        }
        tracing::info!(%name, by = %id.username, "deleted certificate signing request");
        self.shared.hub.notify();
        Ok(Response::new(DeleteCertificateSigningRequestResponse {}))
    }

    async fn get_trust_bundle(
        &self,
        request: Request<GetTrustBundleRequest>,
    ) -> Result<Response<TrustBundle>, Status> {
        let cfg = self.shared.config.snapshot();
        self.authenticate(&cfg, &request, TokenUse::Allowed)?;
        let signer_name = &request.get_ref().signer_name;
        if !signer_name.is_empty() && cfg.signer_name(signer_name).is_none() {
            return Err(ServiceError::BadRequest(format!(
                "signer_name: this deployment does not serve {signer_name:?}"
            ))
            .into());
        }
        Ok(Response::new(TrustBundle {
            trust_bundle: self.shared.trust_bundle_pem.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_but_keep_their_code() {
        let errors = (0..1000)
            .map(|i| FieldError::Invalid {
                field: format!("spec.usages[{i}]"),
                value: Value::Str("client auth".into()),
                detail: "duplicate".into(),
            })
            .collect();
        let s = to_status(&ServiceError::Invalid(Invalid {
            name: "x".into(),
            errors,
        }));
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message().len() < MAX_STATUS_MESSAGE + 64,
            "{}",
            s.message().len()
        );
        assert!(s.message().ends_with("more bytes)"), "{}", s.message());
        let short = to_status(&ServiceError::BadRequest("short".into()));
        assert_eq!(short.message(), "short");
    }
}

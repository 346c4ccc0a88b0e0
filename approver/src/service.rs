//! The `certsign.v1.Approver` gRPC service: each handler authenticates,
//! authorizes, decodes, makes one domain call and maps its error once
//! ([`crate::status::to_status`], the only place errors become `tonic::Status`).
//! The domain calls live in their own modules: admission
//! ([`crate::admission`]), decisions ([`crate::decide`]), watch
//! streams ([`crate::watch::stream`]), reads and deletes on the store with
//! the access rules of [`crate::access`], the inventory
//! ([`crate::inventory`]), revocations ([`crate::revocation`]) and the
//! published CRL ([`crate::crl`]). Each RPC takes one snapshot of the
//! configuration in force and uses only it, so a reload never splits a
//! call.
//!
//! It must never take an identity from a request body, never show a caller
//! a request it may not read (others' requests are NOT_FOUND, not
//! PERMISSION_DENIED), and never record an approval whose signed statement
//! it has not verified with the same code the signer runs.

use std::sync::Arc;
use std::time::SystemTime;

use certsign_evidence::ApprovalTrust;
use certsign_proto::v1::approver_server::Approver;
use certsign_proto::v1::{
    ApproveCertificateSigningRequestRequest, CertificateRevocationList, CertificateSigningRequest,
    CreateCertificateSigningRequestRequest, CreateSelfSubjectReviewRequest, Decision,
    DeleteCertificateSigningRequestRequest, DeleteCertificateSigningRequestResponse,
    DenyCertificateSigningRequestRequest, GetCertificateRevocationListRequest,
    GetCertificateSigningRequestRequest, GetTrustBundleRequest, IssuedCertificate,
    ListCertificateSigningRequestsRequest, ListCertificateSigningRequestsResponse,
    ListCertificatesRequest, ListCertificatesResponse, RevokeCertificateRequest, SelfSubjectReview,
    SignedStatement, TrustBundle, UserInfo, WatchCertificateSigningRequestsRequest, WatchEvent,
};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::access;
use crate::admission::Admission;
use crate::authn::{self, AuthnError, Caller};
use crate::chain;
use crate::config::{BootstrapToken, Config, LiveConfig};
use crate::crl::CrlPublisher;
use crate::decide::{Evidence, Recorder};
use crate::decision::{self, State};
use crate::forwarder::Forwarder;
use crate::inventory;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::paging::Pages;
use crate::revocation::Deliverer;
use crate::selector::Selector;
use crate::store::{Keep, Store};
use crate::watch::{self, Hub};

pub use crate::status::{MAX_STATUS_MESSAGE, ServiceError, to_status};

/// Default and largest page size of List.
const DEFAULT_PAGE: u32 = 500;
const MAX_PAGE: u32 = 1000;

/// What the service needs, shared by all RPCs.
#[derive(Debug)]
pub struct Shared {
    /// The configuration in force; each RPC takes one snapshot of it.
    pub config: Arc<LiveConfig>,
    pub store: Store,
    pub hub: Hub,
    pub forwarder: Forwarder,
    /// Revocations: RevokeCertificate and delivery to every signer.
    pub deliverer: Deliverer,
    /// The published CRL.
    pub crl: CrlPublisher,
    pub limiter: Arc<Limiter>,
    /// Admin statement certificates chain to the client CA.
    pub approval_trust: ApprovalTrust,
    /// Client CA certificates (DER): renewal proofs are issued by one.
    pub client_ca_der: Vec<Vec<u8>>,
    /// PEM returned by GetTrustBundle.
    pub trust_bundle_pem: Vec<u8>,
    /// Set at shutdown: open watches end with UNAVAILABLE.
    pub drain: crate::drain::Drain,
    /// Counters of calls, decisions and token logins.
    pub metrics: Arc<Metrics>,
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
pub(crate) enum TokenUse {
    Allowed,
    Refused,
}

fn name_of(csr: &CertificateSigningRequest) -> &str {
    csr.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
}

/// A watch stream with its errors mapped to statuses, ended by a drain.
type WatchStream = crate::drain::Drained<WatchEvent>;

fn watch_status(r: Result<WatchEvent, ServiceError>) -> Result<WatchEvent, Status> {
    r.map(|mut ev| {
        ev.object = ev.object.map(chain::serve);
        ev
    })
    .map_err(|e| to_status(&e))
}

/// Whether a write is carried out or only checked: Kubernetes' `dryRun`
/// (`All` runs authentication, authorization and admission and answers
/// what would be stored, storing nothing). The gRPC face always writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRun {
    No,
    All,
}

/// What a delete requires of the stored object (Kubernetes'
/// `DeleteOptions.preconditions`); a mismatch is a conflict and nothing is
/// deleted.
#[derive(Debug, Default)]
pub(crate) struct Precondition {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl ApproverService {
    pub fn new(shared: Shared) -> Self {
        Self {
            shared: Arc::new(shared),
            identities: Arc::default(),
        }
    }

    /// Authenticate the caller and count the call against its rate.
    /// Approve and Deny: authenticate (no bootstrap token), then one
    /// recorded decision; `parts` takes the name, the signed statement,
    /// the reason and the message out of the request.
    async fn decide<T>(
        &self,
        request: Request<T>,
        decision: Decision,
        parts: impl FnOnce(T) -> (String, Option<SignedStatement>, String, String),
    ) -> Result<Response<CertificateSigningRequest>, Status> {
        let cfg = self.shared.config.snapshot();
        let (rpc, counted) = match decision {
            Decision::Approve => ("approve", "approve"),
            _ => ("deny", "deny"),
        };
        let metrics = &self.shared.metrics;
        let (id, _) = self
            .authenticate(&cfg, &request, TokenUse::Refused)
            .inspect_err(|e| metrics.rejected(rpc, e))?;
        let (name, statement, reason, message) = parts(request.into_inner());
        let decided = self
            .decide_csr(
                &cfg,
                id,
                &name,
                decision,
                Evidence::Statement(statement),
                reason,
                message,
            )
            .await
            .inspect_err(|e| metrics.rejected(rpc, e))?;
        metrics.decision(counted, "admin");
        Ok(Response::new(chain::serve(decided)))
    }

    fn authenticate<T>(
        &self,
        cfg: &Config,
        req: &Request<T>,
        token_use: TokenUse,
    ) -> Result<(Caller, Option<BootstrapToken>), ServiceError> {
        let cert = req
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()));
        let header = req.metadata().get("authorization").map(|h| h.to_str());
        let header = match header {
            Some(Ok(h)) => Some(h),
            Some(Err(_)) if cert.is_none() => return Err(AuthnError::MalformedToken.into()),
            _ => None,
        };
        self.identify(cfg, cert.as_deref(), header, token_use)
    }

    /// Authenticate a caller by its verified client certificate (leaf DER)
    /// or else its `authorization` header, and count the call against its
    /// rate: the one authentication of both faces (gRPC and Kubernetes).
    pub(crate) fn identify(
        &self,
        cfg: &Config,
        cert: Option<&[u8]>,
        authorization: Option<&str>,
        token_use: TokenUse,
    ) -> Result<(Caller, Option<BootstrapToken>), ServiceError> {
        let (id, token) = match cert {
            Some(der) => (self.identities.identify(der)?, None),
            None => {
                let header = authorization.ok_or(AuthnError::Missing)?;
                let login = authn::from_bearer(header, &cfg.bootstrap_tokens, SystemTime::now());
                self.shared.metrics.token_login(login.as_ref().err());
                let (id, token) = login?;
                if token_use == TokenUse::Refused {
                    return Err(AuthnError::TokenNotAllowed.into());
                }
                (id, Some(token))
            }
        };
        self.shared.limiter.check_rate(&id.username)?;
        Ok((id, token))
    }

    /// What both faces share: configuration, store, hub, limits.
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Admit and store a new request, then wake whoever waits for it. A
    /// dry run admits it and answers what would be stored, storing nothing.
    pub(crate) async fn create_csr(
        &self,
        cfg: &Config,
        id: Caller,
        token: Option<BootstrapToken>,
        body: CreateCertificateSigningRequestRequest,
        dry_run: DryRun,
    ) -> Result<CertificateSigningRequest, ServiceError> {
        let created = self
            .admission()
            .create(cfg, id, token, body, dry_run)
            .await?;
        if dry_run == DryRun::All {
            return Ok(created);
        }
        if decision::state_of(&created) == State::Approved {
            self.shared.metrics.decision("approve", "auto");
        }
        self.notify(&created);
        Ok(created)
    }

    /// One page of the requests `id` may read that `req` asks for.
    pub(crate) async fn list_csrs(
        &self,
        cfg: &Config,
        id: &Caller,
        req: &ListCertificateSigningRequestsRequest,
    ) -> Result<ListCertificateSigningRequestsResponse, ServiceError> {
        let after = Pages::Requests.after(&req.continue_token)?;
        let selector = parse_selector(&req.label_selector)?;
        let Some(filter) = access::list_filter(cfg, id, req) else {
            // Nothing the caller may read matches; the version still lets
            // it watch from here.
            let rv = self
                .shared
                .store
                .latest_resource_version()
                .await
                .map_err(ServiceError::from)?;
            return Ok(ListCertificateSigningRequestsResponse {
                resource_version: rv.to_string(),
                ..Default::default()
            });
        };
        let limit = match u32::try_from(req.limit) {
            Ok(0) | Err(_) => DEFAULT_PAGE,
            Ok(n) => n.min(MAX_PAGE),
        };
        let keep: Keep = Arc::new(move |c: &CertificateSigningRequest| selects(&selector, c));
        let page = self
            .shared
            .store
            .list_snapshot(&filter, after.as_deref(), limit + 1, keep)
            .await
            .map_err(ServiceError::from)?;
        let mut items: Vec<_> = page.items.into_iter().map(chain::serve).collect();
        let continue_token = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items
                .last()
                .map(|c| Pages::Requests.token(name_of(c)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ListCertificateSigningRequestsResponse {
            items,
            continue_token,
            resource_version: page.resource_version.to_string(),
        })
    }

    /// The change events `id` may read that `req` asks for.
    pub(crate) fn watch_csrs(
        &self,
        id: Caller,
        req: WatchCertificateSigningRequestsRequest,
    ) -> Result<ReceiverStream<Result<WatchEvent, ServiceError>>, ServiceError> {
        let selector = parse_selector(&req.label_selector)?;
        let start = watch_start(&req)?;
        let slot = self.shared.limiter.open_watch(&id.username)?;
        let live = self.shared.config.clone();
        let matches = move |c: &CertificateSigningRequest| {
            // The configuration in force at each event (not at the start of
            // the watch), so a reload that removes an admin group also
            // stops that group's open watches from showing others' requests.
            access::can_read(&live.snapshot(), &id, c)
                && (req.name.is_empty() || name_of(c) == req.name)
                && (req.signer_name.is_empty()
                    || c.spec
                        .as_ref()
                        .is_some_and(|s| s.signer_name == req.signer_name))
                && selects(&selector, c)
        };
        Ok(watch::stream(
            &self.shared.hub,
            self.shared.store.clone(),
            start,
            matches,
            slot,
        ))
    }

    /// Record a decision by `id` (see [`Recorder::decide`]) and wake the
    /// hub and the forwarder.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn decide_csr(
        &self,
        cfg: &Config,
        id: Caller,
        name: &str,
        decision: Decision,
        evidence: Evidence,
        reason: String,
        message: String,
    ) -> Result<CertificateSigningRequest, ServiceError> {
        let decided = self
            .recorder()
            .decide(cfg, id, name, decision, evidence, reason, message)
            .await?;
        self.notify(&decided);
        Ok(decided)
    }

    /// Delete `name` if `id` may read it; returns the deleted object.
    pub(crate) async fn delete_csr(
        &self,
        cfg: &Config,
        id: &Caller,
        name: &str,
        dry_run: DryRun,
        precondition: &Precondition,
    ) -> Result<CertificateSigningRequest, ServiceError> {
        let current = access::readable(&self.shared.store, cfg, id, name).await?;
        let meta = current.metadata.clone().unwrap_or_default();
        let failed = |what: &str, wanted: &str, has: &str| {
            ServiceError::Precondition(format!(
                "Operation cannot be fulfilled on certificatesigningrequests.certificates.k8s.io {name:?}: Precondition failed: {what} in precondition: {wanted}, {what} in object meta: {has}"
            ))
        };
        if let Some(uid) = precondition.uid.as_deref()
            && uid != meta.uid
        {
            return Err(failed("UID", uid, &meta.uid));
        }
        let expected_rv = match precondition.resource_version.as_deref() {
            Some(rv) if rv != meta.resource_version => {
                return Err(failed("ResourceVersion", rv, &meta.resource_version));
            }
            Some(rv) => Some(
                rv.parse::<i64>()
                    .map_err(|_| failed("ResourceVersion", rv, &meta.resource_version))?,
            ),
            None => None,
        };
        if dry_run == DryRun::All {
            return Ok(current);
        }
        if self
            .shared
            .store
            .delete(name, expected_rv)
            .await
            .map_err(ServiceError::from)?
            .is_none()
        {
            if expected_rv.is_some() {
                // Changed (or deleted) between the read and the delete.
                return Err(ServiceError::Precondition(format!(
                    "Operation cannot be fulfilled on certificatesigningrequests.certificates.k8s.io {name:?}: the object has been modified; please apply your changes to the latest version and try again"
                )));
            }
            return Err(access::not_found(name));
        }
        tracing::info!(%name, by = %id.username, "deleted certificate signing request");
        self.shared.hub.notify();
        Ok(current)
    }

    fn admission(&self) -> Admission<'_> {
        Admission {
            store: &self.shared.store,
            limiter: &self.shared.limiter,
            client_ca_der: &self.shared.client_ca_der,
        }
    }

    fn recorder(&self) -> Recorder<'_> {
        Recorder {
            store: &self.shared.store,
            approval_trust: &self.shared.approval_trust,
        }
    }

    /// Wake the watch hub, and the forwarder when `csr` awaits the signer.
    fn notify(&self, csr: &CertificateSigningRequest) {
        self.shared.hub.notify();
        if decision::state_of(csr) == State::Approved {
            self.shared.forwarder.notify();
        }
    }
}

/// A request's label selector ([`Selector`]); a bad one is refused with
/// apimachinery's text.
fn parse_selector(s: &str) -> Result<Selector, ServiceError> {
    Selector::parse(s).map_err(ServiceError::BadRequest)
}

fn selects(selector: &Selector, csr: &CertificateSigningRequest) -> bool {
    selector.is_empty()
        || selector.matches(csr.metadata.as_ref().map_or(&EMPTY_LABELS, |m| &m.labels))
}

static EMPTY_LABELS: std::sync::LazyLock<std::collections::HashMap<String, String>> =
    std::sync::LazyLock::new(Default::default);

/// Where a watch starts: after `resource_version` when given (Kubernetes'
/// "0", any version, counts as not given), else with the current objects
/// when asked, else from now.
fn watch_start(req: &WatchCertificateSigningRequestsRequest) -> Result<watch::Start, ServiceError> {
    let rv = match req.resource_version.as_str() {
        "" | "0" => None,
        v => Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ServiceError::BadRequest(format!(
                "resource_version: {v:?} is not a resource version this server issued (a non-negative integer)"
            ))
        })?),
    };
    Ok(match rv {
        Some(_) if req.send_initial_events => {
            return Err(ServiceError::BadRequest(
                "send_initial_events: cannot be combined with resource_version (a resumed watch sends the events after that version)".into(),
            ));
        }
        Some(n) => watch::Start::After(n),
        None if req.send_initial_events => watch::Start::Initial,
        None => watch::Start::Now,
    })
}

#[tonic::async_trait]
impl Approver for ApproverService {
    async fn create_certificate_signing_request(
        &self,
        request: Request<CreateCertificateSigningRequestRequest>,
    ) -> Result<Response<CertificateSigningRequest>, Status> {
        let cfg = self.shared.config.snapshot();
        let metrics = &self.shared.metrics;
        let (id, token) = self
            .authenticate(&cfg, &request, TokenUse::Allowed)
            .inspect_err(|e| metrics.rejected("create", e))?;
        let created = self
            .create_csr(&cfg, id, token, request.into_inner(), DryRun::No)
            .await
            .inspect_err(|e| metrics.rejected("create", e))?;
        Ok(Response::new(created))
    }

    async fn get_certificate_signing_request(
        &self,
        request: Request<GetCertificateSigningRequestRequest>,
    ) -> Result<Response<CertificateSigningRequest>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Allowed)?;
        let name = &request.get_ref().name;
        Ok(Response::new(chain::serve(
            access::readable(&self.shared.store, &cfg, &id, name).await?,
        )))
    }

    async fn list_certificate_signing_requests(
        &self,
        request: Request<ListCertificateSigningRequestsRequest>,
    ) -> Result<Response<ListCertificateSigningRequestsResponse>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Allowed)?;
        let page = self.list_csrs(&cfg, &id, request.get_ref()).await?;
        Ok(Response::new(page))
    }

    type WatchCertificateSigningRequestsStream = WatchStream;

    async fn watch_certificate_signing_requests(
        &self,
        request: Request<WatchCertificateSigningRequestsRequest>,
    ) -> Result<Response<Self::WatchCertificateSigningRequestsStream>, Status> {
        if self.shared.drain.is_draining() {
            return Err(Status::unavailable(crate::drain::SHUTTING_DOWN));
        }
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Allowed)?;
        let events = self.watch_csrs(id, request.into_inner())?;
        Ok(Response::new(
            self.shared.drain.until_drained(events.map(watch_status)),
        ))
    }

    async fn approve_certificate_signing_request(
        &self,
        request: Request<ApproveCertificateSigningRequestRequest>,
    ) -> Result<Response<CertificateSigningRequest>, Status> {
        self.decide(request, Decision::Approve, |r| {
            (r.name, r.approval, r.reason, r.message)
        })
        .await
    }

    async fn deny_certificate_signing_request(
        &self,
        request: Request<DenyCertificateSigningRequestRequest>,
    ) -> Result<Response<CertificateSigningRequest>, Status> {
        self.decide(request, Decision::Deny, |r| {
            (r.name, r.denial, r.reason, r.message)
        })
        .await
    }

    async fn delete_certificate_signing_request(
        &self,
        request: Request<DeleteCertificateSigningRequestRequest>,
    ) -> Result<Response<DeleteCertificateSigningRequestResponse>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Refused)?;
        self.delete_csr(
            &cfg,
            &id,
            &request.get_ref().name,
            DryRun::No,
            &Precondition::default(),
        )
        .await?;
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

    async fn revoke_certificate(
        &self,
        request: Request<RevokeCertificateRequest>,
    ) -> Result<Response<IssuedCertificate>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Refused)?;
        let revoked = self
            .shared
            .deliverer
            .revoke(&cfg, &id, request.into_inner().revocation)
            .await?;
        Ok(Response::new(revoked))
    }

    async fn list_certificates(
        &self,
        request: Request<ListCertificatesRequest>,
    ) -> Result<Response<ListCertificatesResponse>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Allowed)?;
        let page = inventory::list(&self.shared.store, &cfg, &id, request.get_ref()).await?;
        Ok(Response::new(page))
    }

    async fn get_certificate_revocation_list(
        &self,
        request: Request<GetCertificateRevocationListRequest>,
    ) -> Result<Response<CertificateRevocationList>, Status> {
        let cfg = self.shared.config.snapshot();
        self.authenticate(&cfg, &request, TokenUse::Allowed)?;
        let Some(crl) = self.shared.crl.current() else {
            return Err(ServiceError::Unavailable("no CRL has been published yet".into()).into());
        };
        let ts = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        Ok(Response::new(CertificateRevocationList {
            crl: crl.der.clone(),
            crl_number: crl.number.clone(),
            this_update: ts(crl.this_update),
            next_update: ts(crl.next_update),
        }))
    }

    async fn create_self_subject_review(
        &self,
        request: Request<CreateSelfSubjectReviewRequest>,
    ) -> Result<Response<SelfSubjectReview>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Allowed)?;
        Ok(Response::new(SelfSubjectReview {
            user_info: Some(user_info(&id)),
        }))
    }
}

/// Who `id` is, as both faces' SelfSubjectReview answer it.
pub(crate) fn user_info(id: &Caller) -> UserInfo {
    UserInfo {
        username: id.username.clone(),
        groups: id.groups.clone(),
    }
}

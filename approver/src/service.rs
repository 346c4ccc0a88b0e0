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

use base64::Engine as _;
use certsign_evidence::ApprovalTrust;
use certsign_proto::v1::approver_server::Approver;
use certsign_proto::v1::{
    ApproveCertificateSigningRequestRequest, CertificateRevocationList, CertificateSigningRequest,
    CreateCertificateSigningRequestRequest, Decision, DeleteCertificateSigningRequestRequest,
    DeleteCertificateSigningRequestResponse, DenyCertificateSigningRequestRequest,
    GetCertificateRevocationListRequest, GetCertificateSigningRequestRequest,
    GetTrustBundleRequest, IssuedCertificate, ListCertificateSigningRequestsRequest,
    ListCertificateSigningRequestsResponse, ListCertificatesRequest, ListCertificatesResponse,
    RevokeCertificateRequest, SignedStatement, TrustBundle, WatchCertificateSigningRequestsRequest,
    WatchEvent,
};
use tokio_stream::StreamExt as _;
use tokio_stream::adapters::Map;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::access;
use crate::admission::Admission;
use crate::authn::{self, AuthnError, Caller};
use crate::config::{BootstrapToken, Config, LiveConfig};
use crate::crl::CrlPublisher;
use crate::decide::Recorder;
use crate::decision::{self, State};
use crate::forwarder::Forwarder;
use crate::inventory;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::revocation::Deliverer;
use crate::store::Store;
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
enum TokenUse {
    Allowed,
    Refused,
}

fn name_of(csr: &CertificateSigningRequest) -> &str {
    csr.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
}

/// A watch stream with its errors mapped to statuses.
type WatchStream = Map<
    ReceiverStream<Result<WatchEvent, ServiceError>>,
    fn(Result<WatchEvent, ServiceError>) -> Result<WatchEvent, Status>,
>;

fn watch_status(r: Result<WatchEvent, ServiceError>) -> Result<WatchEvent, Status> {
    r.map_err(|e| to_status(&e))
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
            .recorder()
            .decide(&cfg, id, &name, decision, statement, reason, message)
            .await
            .inspect_err(|e| metrics.rejected(rpc, e))?;
        metrics.decision(counted, "admin");
        self.notify(&decided);
        Ok(Response::new(decided))
    }

    fn authenticate<T>(
        &self,
        cfg: &Config,
        req: &Request<T>,
        token_use: TokenUse,
    ) -> Result<(Caller, Option<BootstrapToken>), ServiceError> {
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
        let metrics = &self.shared.metrics;
        let (id, token) = self
            .authenticate(&cfg, &request, TokenUse::Allowed)
            .inspect_err(|e| metrics.rejected("create", e))?;
        let created = self
            .admission()
            .create(&cfg, id, token, request.into_inner())
            .await
            .inspect_err(|e| metrics.rejected("create", e))?;
        if decision::state_of(&created) == State::Approved {
            metrics.decision("approve", "auto");
        }
        self.notify(&created);
        Ok(Response::new(created))
    }

    async fn get_certificate_signing_request(
        &self,
        request: Request<GetCertificateSigningRequestRequest>,
    ) -> Result<Response<CertificateSigningRequest>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Allowed)?;
        let name = &request.get_ref().name;
        Ok(Response::new(
            access::readable(&self.shared.store, &cfg, &id, name).await?,
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
        let Some(filter) = access::list_filter(&cfg, &id, &req) else {
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
            ..Default::default()
        }))
    }

    type WatchCertificateSigningRequestsStream = WatchStream;

    async fn watch_certificate_signing_requests(
        &self,
        request: Request<WatchCertificateSigningRequestsRequest>,
    ) -> Result<Response<Self::WatchCertificateSigningRequestsStream>, Status> {
        let cfg = self.shared.config.snapshot();
        let (id, _) = self.authenticate(&cfg, &request, TokenUse::Allowed)?;
        let req = request.into_inner();
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
        };
        let events = watch::stream(
            &self.shared.hub,
            self.shared.store.clone(),
            req.send_initial_events,
            matches,
        );
        Ok(Response::new(events.map(watch_status as fn(_) -> _)))
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
        let name = &request.get_ref().name;
        access::readable(&self.shared.store, &cfg, &id, name).await?;
        if self
            .shared
            .store
            .delete(name, None)
            .await
            .map_err(ServiceError::from)?
            .is_none()
        {
            return Err(access::not_found(name).into());
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
}

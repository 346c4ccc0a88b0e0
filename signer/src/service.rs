//! The gRPC face: `certsign.v1.Signer/Sign` plus health (and reflection only
//! when the config asks), over the mTLS streams the binary accepts.
//!
//! The only module that imports tonic service types. Each call: authorize
//! the peer certificate against `allowed_clients` (by DNS SAN or CN; fail
//! closed) → hand the request to [`Authority`] → encode, or map the error to
//! a `Status` in [`to_status`], the single mapping. It never makes policy
//! decisions itself and never puts internals or key material in a status.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use certsign_proto::v1::sign_request::Request as Asked;
use certsign_proto::v1::signer_server::{Signer, SignerServer};
use certsign_proto::v1::{FILE_DESCRIPTOR_SET, SignRequest, SignResponse, SignResult};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::Stream;
use tonic::transport::Server;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authority::{Answers, Authority, SignError};
use crate::csr;
use crate::issue::IssueError;
use crate::profile::ProfileError;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// tonic transport error.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection setup.
    #[error("reflection: {0}")]
    Reflection(String),
}

/// The one mapping from [`SignError`] to a gRPC status: a malformed
/// request is INVALID_ARGUMENT, a rule it breaks FAILED_PRECONDITION, a
/// used uid ALREADY_EXISTS, a uid in flight ABORTED, and anything worth a
/// retry (journal, key, state) UNAVAILABLE.
pub fn to_status(e: &SignError) -> Status {
    use SignError::*;
    let msg = e.to_string();
    match e {
        Invalid(_) | Csr(_) | Profile(ProfileError::Request(_)) => Status::invalid_argument(msg),
        Refused(_)
        | Profile(_)
        | Evidence(_)
        | Issue(IssueError::CaExpired(_) | IssueError::Encode(_)) => {
            Status::failed_precondition(msg)
        }
        AlreadyExists(_) => Status::already_exists(msg),
        Busy(_) => Status::aborted(msg),
        Issue(_) | Journal(_) | Unavailable(_) => Status::unavailable(msg),
    }
}

pub use crate::authority::{SIGN_OBSERVER, SignObserver};
/// The health statuses [`serve`] answers, for the binary's plaintext
/// `health_listen` (set once serving starts).
pub static HEALTH: OnceLock<tonic_health::server::HealthReporter> = OnceLock::new();

/// The `Signer` service.
#[derive(Debug)]
pub struct SignerService {
    authority: Arc<Authority>,
    /// Client certificates already found on the allow-list: SHA-256 of the
    /// leaf DER → the allow-listed name. A caller presents the same
    /// certificate on every call of a connection, and parsing it again per
    /// call cost ~1 % of the signer's CPU. The allow-list is fixed for the
    /// life of the process and rustls has verified the chain before any
    /// call, so the same bytes always get the same answer; only successes
    /// are remembered, so a refusal is always decided afresh.
    allowed: Mutex<HashMap<[u8; 32], String>>,
}

/// Allowed client certificates remembered at most (then the memory starts over).
const ALLOWED_CACHE_MAX: usize = 256;

impl SignerService {
    fn new(authority: Arc<Authority>) -> Self {
        Self {
            authority,
            allowed: Mutex::default(),
        }
    }

    /// The caller's name if it is allow-listed, else PERMISSION_DENIED
    /// naming the identity it presented.
    fn authorize<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let certs = req.peer_certs();
        let no_cert = || Status::permission_denied("no client certificate");
        let leaf = certs
            .as_deref()
            .and_then(|c| c.first())
            .ok_or_else(no_cert)?;
        let key = csr::sha256(leaf.as_ref());
        if let Some(name) = self.allowed.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(name);
        }
        let name = self.allow_listed(leaf.as_ref())?;
        if let Ok(mut m) = self.allowed.lock() {
            if m.len() >= ALLOWED_CACHE_MAX {
                m.clear();
            }
            m.insert(key, name.clone());
        }
        Ok(name)
    }

    /// The allow-listed name (CN or DNS SAN) of a client certificate.
    fn allow_listed(&self, leaf: &[u8]) -> Result<String, Status> {
        let (_, cert) = X509Certificate::from_der(leaf)
            .map_err(|_| Status::permission_denied("client certificate does not parse"))?;
        let (cn, _) = csr::name_identity(cert.subject());
        let dns = match cert.subject_alternative_name() {
            Ok(Some(ext)) => csr::Sans::from_general_names(&ext.value.general_names)
                .map(|s| s.dns)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let allowed = &self.authority.config().allowed_clients;
        if let Some(name) = cn.iter().chain(dns.iter()).find(|n| allowed.contains(n)) {
            return Ok(name.clone());
        }
        tracing::warn!(subject = %cert.subject(), ?dns, "caller not on the allow-list");
        Err(Status::permission_denied(format!(
            "client {:?} (CN {:?}, DNS SANs {dns:?}) is not on the signer's allow-list",
            cert.subject().to_string(),
            cn.unwrap_or_default()
        )))
    }
}

#[tonic::async_trait]
impl Signer for SignerService {
    async fn sign(&self, request: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        let caller = self.authorize(&request)?;
        let other = match &request.get_ref().request {
            Some(Asked::Batch(_)) => {
                let answers = self.authority.sign_batch(request.into_inner(), &caller);
                return batch_response(answers.await);
            }
            Some(Asked::CertificateSigningRequest(_) | Asked::IdentityRenewal(_)) => None,
            Some(Asked::Revocation(r)) => Some(self.authority.revoke(r, &caller).await),
            Some(Asked::Crl(_)) => Some(self.authority.crl(&caller)),
            None => {
                return Err(Status::invalid_argument(
                    "request: Required value: one of certificate_signing_request, revocation, crl, batch",
                ));
            }
        };
        if let Some(answer) = other {
            return answer.map(Response::new).map_err(|e| to_status(&e));
        }
        let started = std::time::Instant::now();
        let signed = match (&request.get_ref().request, request.peer_certs()) {
            (Some(Asked::IdentityRenewal(_)), Some(peer)) => {
                let leaf = peer.first().map(|c| c.as_ref()).unwrap_or_default();
                (self.authority)
                    .renew_identity(request.get_ref(), &caller, leaf)
                    .await
            }
            _ => self.authority.sign(request.get_ref(), &caller).await,
        };
        if let Some(observe) = SIGN_OBSERVER.get() {
            observe(request.get_ref(), signed.as_ref(), started.elapsed());
        }
        let signed = signed.map_err(|e| to_status(&e))?;
        Ok(Response::new(SignResponse {
            certificate: signed.certificate.into_bytes(),
            serial_number: signed.serial.0,
            replayed: signed.replayed,
            ..SignResponse::default()
        }))
    }
}

/// A batch: one result per request, a refusal in its own result.
fn batch_response(answers: Answers) -> Result<Response<SignResponse>, Status> {
    let mut out = SignResponse::default();
    for (i, a) in answers.map_err(|e| to_status(&e))?.into_iter().enumerate() {
        out.results.push(match a {
            Ok(s) => SignResult {
                certificate: s.certificate.into_bytes(),
                serial_number: s.serial.0,
                replayed: s.replayed,
                ..SignResult::default()
            },
            Err(e) => SignResult {
                code: to_status(&e).code() as i32,
                message: format!("batch.requests[{i}]: {e}"),
                ..SignResult::default()
            },
        });
    }
    Ok(Response::new(out))
}

/// Serve the TLS streams of `incoming` (client certificates verified against
/// `client_ca` by the binary's listener) until `shutdown` resolves.
pub async fn serve<I, IO>(
    authority: Arc<Authority>,
    incoming: I,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError>
where
    I: Stream<Item = Result<IO, std::io::Error>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
{
    let cfg = authority.config().clone();
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<SignerServer<SignerService>>().await;
    let _ = HEALTH.set(health);
    let reflection = if cfg.reflection {
        Some(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .map_err(|e| ServeError::Reflection(e.to_string()))?,
        )
    } else {
        None
    };
    Server::builder()
        .timeout(Duration::from_secs(30))
        .concurrency_limit_per_connection(256)
        .add_service(health_svc)
        .add_service(SignerServer::new(SignerService::new(authority)))
        .add_optional_service(reflection)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

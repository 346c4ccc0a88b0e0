//! The forwarder: sends approved requests to the signer
//! (`certsign.v1.Signer/Sign` over mTLS with the approver's identity) with
//! their evidence, and records the outcome.
//!
//! Work comes from the store (the `state` column), never from memory, so a
//! restart resumes it; a claimed request is leased to this process so
//! workers and replicas do not collide (a dead replica's leases expire and
//! are taken over), and the request uid is the signer's idempotency key, so
//! a retry after a lost answer returns the same certificate instead of a
//! second one. One claimer takes due requests in batches (one store write
//! per batch) and keeps up to [`IN_FLIGHT`] requests in flight, sent in
//! batched Sign calls of up to [`BATCH`] per endpoint (one call carries
//! many requests; the signer decides and journals each alone,
//! group-committing their lines); outcomes are recorded through the
//! store's group-committed update. A request a batched call did not decide
//! goes the single-request way below.
//!
//! With several signer endpoints (identical profiles, each with its own
//! journal), each request prefers one of them, chosen by its uid: a retry
//! goes back to the signer that may already have journaled it. Only when
//! that one is unreachable (connect error, UNAVAILABLE, deadline, any
//! non-terminal answer) does the request fail over to the next endpoint.
//! Policy refusals are terminal (`Failed`, reason `SignerValidationFailure`,
//! the signer's message); an unreachable signer is retried with backoff.
//! This module must never drop an approved request or mark it failed for a
//! transport error.

use std::sync::Arc;
use std::time::Duration;

use certsign_proto::v1::signer_client::SignerClient;
use certsign_proto::v1::{
    CertificateSigningRequest, SignBatch, SignRequest, SignResult, sign_request,
};
use tokio::sync::{Notify, Semaphore};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::decision;
use crate::metrics::ForwarderMetrics;
use crate::store::{ForwardItem, Store, StoreError, UpdateError};
use crate::validation::first_pem_block;
use crate::watch::Hub;
use certsign_runtime::unix_now;
use rustls_pki_types::pem::SectionKind;

/// Why the forwarder could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwarderError {
    #[error("signer endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Signer answers that are a decision about the request, not a transport
/// problem: recording them as `Failed` is final.
pub fn is_terminal(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::AlreadyExists
            | Code::OutOfRange
    )
}

/// Seconds to wait before attempt `attempts + 1` (exponential, capped at
/// 30 s so a returning signer is noticed soon; the first success after an
/// outage also makes every waiting request due at once).
pub fn backoff_secs(attempts: i64) -> i64 {
    let exp = attempts.clamp(1, 6) - 1;
    (1i64 << exp).min(30)
}

/// Sign calls in flight per process (the signer's journal commits the
/// calls that arrive together with one fsync, so its rate grows with this).
pub const IN_FLIGHT: usize = 256;

/// Requests per batched Sign call at most (the signer takes up to 500).
pub const BATCH: usize = 128;

/// Connect timeout per signer endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a claim is leased: long enough for one attempt on every
/// endpoint (connect plus the RPC deadline each) and recording the outcome,
/// so a live worker's lease never runs out under it. It is also the time
/// after which another replica takes over the claims of a dead one.
pub fn lease_secs(endpoints: usize, rpc_timeout: Duration) -> i64 {
    let per_endpoint = rpc_timeout.as_secs() + CONNECT_TIMEOUT.as_secs() + 1;
    let n = u64::try_from(endpoints.max(1)).unwrap_or(1);
    i64::try_from(per_endpoint.saturating_mul(n)).unwrap_or(i64::MAX / 4) + 5
}

/// The endpoint a request tries first: a stable function of its uid (FNV-1a,
/// so every replica and every restart picks the same one).
pub fn preferred_endpoint(uid: &str, endpoints: usize) -> usize {
    if endpoints == 0 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let n = u64::try_from(endpoints).unwrap_or(1);
    usize::try_from(h % n).unwrap_or(0)
}

/// A client per configured signer endpoint, with its URL, in the
/// configured order (mTLS with the approver's identity; connected lazily).
pub fn signer_clients(
    signer: &crate::config::SignerConnection,
) -> Result<Vec<(String, SignerClient<Channel>)>, ForwarderError> {
    // Our own TLS (not tonic's): the client identity is read again for a
    // new connection when its files changed, so a rotated certificate is
    // presented without a restart.
    let tls = crate::tls::signer_connector(&signer.ca, &signer.cert, &signer.key)?;
    let mut clients = Vec::new();
    for url in &signer.endpoints {
        let err = |message: String| ForwarderError::Endpoint {
            endpoint: url.clone(),
            message,
        };
        let uri: http::Uri = url.parse().map_err(|e| err(format!("{e}")))?;
        let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
            return Err(err("no host".into()));
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| err(format!("{e}")))?;
        let port = uri.port_u16().unwrap_or(443);
        let tls = tls.clone();
        let connector = tower::service_fn(move |_: http::Uri| {
            let (tls, server_name, host) = (tls.clone(), server_name.clone(), host.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let stream = tls.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        // The scheme only tells tonic how to speak HTTP/2; TLS is done above.
        let ep = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(signer.timeout);
        clients.push((
            url.clone(),
            SignerClient::new(ep.connect_with_connector_lazy(connector)),
        ));
    }
    Ok(clients)
}

/// The running forwarder's handle.
#[derive(Debug, Clone)]
pub struct Forwarder {
    wake: Arc<Notify>,
}

impl Forwarder {
    /// Build the signer channels and start the worker.
    pub async fn start(
        store: Store,
        hub: Hub,
        signer: &crate::config::SignerConnection,
        metrics: ForwarderMetrics,
    ) -> Result<Self, ForwarderError> {
        let clients = signer_clients(signer)?;
        // Resume at once; on SQLite also void the leases of a previous run
        // (the uid makes a repeated Sign harmless). Other replicas' leases
        // on PostgreSQL are theirs until they expire.
        store.resume_forwarding(unix_now()).await?;
        let wake = Arc::new(Notify::new());
        let worker = Worker {
            outage: std::sync::atomic::AtomicBool::new(false),
            store,
            hub,
            clients,
            lease: lease_secs(signer.endpoints.len(), signer.timeout),
            metrics,
        };
        // One claimer; the calls run as tasks, at most IN_FLIGHT at once.
        // The lease in the store keeps other replicas off claimed requests.
        let worker = Arc::new(worker);
        let w = wake.clone();
        tokio::spawn(async move { worker.run(w).await });
        Ok(Self { wake })
    }

    /// Look for work now (something was just approved).
    pub fn notify(&self) {
        self.wake.notify_one();
    }
}

struct Worker {
    /// Set when a Sign call failed for a transport reason; cleared (and the
    /// queue made due) by the next success.
    outage: std::sync::atomic::AtomicBool,
    store: Store,
    hub: Hub,
    clients: Vec<(String, SignerClient<Channel>)>,
    lease: i64,
    metrics: ForwarderMetrics,
}

enum Outcome {
    Issued(Vec<u8>),
    Refused(String),
    Retry(String),
}

impl Worker {
    async fn run(self: Arc<Self>, wake: Arc<Notify>) {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        loop {
            // Claim as many due requests as there are free call slots (at
            // least one: wait for a slot first), in one store write.
            let Ok(first) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            let now = unix_now();
            let limit = u32::try_from(permits.len()).unwrap_or(u32::MAX);
            match self
                .store
                .claim_forward_batch(now, now + self.lease, limit)
                .await
            {
                Ok(items) if !items.is_empty() => {
                    // A full claim may have left more due work behind; a
                    // short one took everything due (what is approved
                    // later wakes this loop).
                    let full = items.len() == permits.len();
                    for batch in batches(items, self.clients.len()) {
                        let held = permits.split_off(permits.len().saturating_sub(batch.len()));
                        let worker = self.clone();
                        tokio::spawn(async move {
                            worker.forward_batch(batch).await;
                            drop(held);
                        });
                    }
                    if full {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "forwarder: claiming work failed"),
            }
            drop(permits);
            let wait = match self.store.next_forward_time().await {
                Ok(Some(t)) => {
                    Duration::from_secs(u64::try_from((t - unix_now()).clamp(1, 5)).unwrap_or(1))
                }
                _ => Duration::from_secs(5),
            };
            let _ = tokio::time::timeout(wait, wake.notified()).await;
        }
    }

    /// Several claimed requests for one endpoint in one batched Sign call.
    /// Each answer that is a decision (issued, or a terminal refusal) is
    /// recorded as it would be alone; every other request (an answer worth
    /// a retry, or no answer: the call failed, or the signer does not know
    /// batches) goes the single-request way, with its failover over every
    /// endpoint and its backoff.
    async fn forward_batch(self: Arc<Self>, items: Vec<ForwardItem>) {
        let mut decided: Vec<Option<Outcome>> = Vec::new();
        if items.len() > 1 {
            let requests: Vec<SignRequest> = items.iter().map(sign_request_for).collect();
            let uid = items[0]
                .object
                .metadata
                .as_ref()
                .map_or("", |m| m.uid.as_str());
            let (url, client) = &self.clients[preferred_endpoint(uid, self.clients.len())];
            let batch = SignRequest {
                request: Some(sign_request::Request::Batch(SignBatch { requests })),
                ..SignRequest::default()
            };
            tracing::info!(%url, requests = items.len(), "batched Sign call");
            match client
                .clone()
                .sign(batch)
                .await
                .map(tonic::Response::into_inner)
            {
                Ok(resp) if resp.results.len() == items.len() => {
                    decided = resp.results.into_iter().map(decision_of).collect();
                }
                Ok(resp) => {
                    tracing::warn!(%url, results = resp.results.len(), requests = items.len(), "batched Sign answered a different number of results; sending one by one")
                }
                Err(status) => {
                    tracing::warn!(%url, code = ?status.code(), message = status.message(), "batched Sign failed; sending one by one")
                }
            }
        }
        decided.resize_with(items.len(), || None);
        let tasks: Vec<_> = items
            .into_iter()
            .zip(decided)
            .map(|(item, outcome)| {
                let worker = self.clone();
                tokio::spawn(async move { worker.forward(item, outcome).await })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Forward one request, or record the outcome a batched call decided.
    async fn forward(&self, item: ForwardItem, decided: Option<Outcome>) {
        let name = item
            .object
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let uid = item
            .object
            .metadata
            .as_ref()
            .map(|m| m.uid.as_str())
            .unwrap_or("");
        let outcome = match decided {
            Some(o) => o,
            None => {
                self.metrics.in_flight.inc();
                let started = std::time::Instant::now();
                let o = self.sign(&name, uid, sign_request_for(&item)).await;
                self.metrics
                    .sign_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.in_flight.dec();
                o
            }
        };
        self.metrics.attempt(match outcome {
            Outcome::Issued(_) => "issued",
            Outcome::Refused(_) => "refused",
            Outcome::Retry(_) => "retry",
        });
        let result = match outcome {
            Outcome::Issued(pem) => {
                tracing::info!(%name, "certificate issued");
                if self
                    .outage
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
                {
                    // The signer is back: stop waiting out backoffs (of
                    // unleased requests only; leased ones are in flight).
                    if let Err(e) = self.store.retry_forward_at_all(unix_now(), 0).await {
                        tracing::warn!(error = %e, "forwarder: rescheduling the queue failed");
                    }
                }
                self.record(&name, move |c| Ok(decision::issue(c, pem)))
                    .await
            }
            Outcome::Refused(msg) => {
                tracing::info!(%name, message = %msg, "signer refused the request");
                self.record(&name, move |c| Ok(decision::fail(c, &msg)))
                    .await
            }
            Outcome::Retry(msg) => {
                self.outage
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let delay = backoff_secs(item.attempts);
                tracing::warn!(%name, message = %msg, retry_in_secs = delay, "signer unavailable; will retry");
                self.store
                    .retry_forward_at(&name, unix_now() + delay)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        if let Err(e) = result {
            tracing::warn!(%name, error = %e, "forwarder: recording the outcome failed; will retry");
        }
    }

    async fn record(
        &self,
        name: &str,
        f: impl FnOnce(&mut CertificateSigningRequest) -> Result<bool, std::convert::Infallible>
        + Send
        + 'static,
    ) -> Result<(), String> {
        match self.store.update(name, f).await {
            Ok(_) => {
                self.hub.notify();
                Ok(())
            }
            // Deleted meanwhile: nothing to record.
            Err(UpdateError::Store(StoreError::NotFound(_))) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn sign(&self, name: &str, uid: &str, request: SignRequest) -> Outcome {
        let mut last = String::from("no signer endpoint configured");
        let first = preferred_endpoint(uid, self.clients.len());
        let order = self.clients[first..].iter().chain(&self.clients[..first]);
        for (url, client) in order {
            let mut client = client.clone();
            match client.sign(request.clone()).await {
                Ok(resp) => {
                    let cert = resp.into_inner().certificate;
                    return match first_pem_block(&cert) {
                        Some((SectionKind::Certificate, _)) => Outcome::Issued(cert),
                        _ => Outcome::Refused(
                            "the signer returned no CERTIFICATE PEM block".to_string(),
                        ),
                    };
                }
                Err(status) if is_terminal(status.code()) => {
                    return Outcome::Refused(status.message().to_string());
                }
                Err(status) => {
                    // Fail over: this signer did not answer with a decision.
                    tracing::warn!(%name, %url, code = ?status.code(), message = status.message(), "Sign failed on this endpoint");
                    last = format!("{url}: {:?}: {}", status.code(), status.message());
                }
            }
        }
        Outcome::Retry(last)
    }
}

/// The Sign request for one claimed request, with its evidence.
fn sign_request_for(item: &ForwardItem) -> SignRequest {
    SignRequest {
        request: Some(sign_request::Request::CertificateSigningRequest(
            CertificateSigningRequest {
                status: None,
                ..item.object.clone()
            },
        )),
        approvals: decision::approval_statements(&item.object),
        renewal: item.renewal.clone(),
    }
}

/// Claimed requests in batches of at most [`BATCH`], each batch for one
/// preferred endpoint (so a batch goes where each of its requests would).
pub fn batches(items: Vec<ForwardItem>, endpoints: usize) -> Vec<Vec<ForwardItem>> {
    let mut by_endpoint: Vec<Vec<ForwardItem>> = Vec::new();
    by_endpoint.resize_with(endpoints.max(1), Vec::new);
    for item in items {
        let uid = item.object.metadata.as_ref().map_or("", |m| m.uid.as_str());
        by_endpoint[preferred_endpoint(uid, endpoints)].push(item);
    }
    let mut out = Vec::new();
    for mut group in by_endpoint {
        while !group.is_empty() {
            let rest = group.split_off(group.len().min(BATCH));
            out.push(std::mem::replace(&mut group, rest));
        }
    }
    out
}

/// A batched Sign result as this request's outcome when it is a decision:
/// a certificate, or a terminal refusal (its message without the
/// `batch.requests[i]: ` the signer puts before it). `None`: worth a retry.
fn decision_of(r: SignResult) -> Option<Outcome> {
    let code = Code::from_i32(r.code);
    if code == Code::Ok {
        return Some(match first_pem_block(&r.certificate) {
            Some((SectionKind::Certificate, _)) => Outcome::Issued(r.certificate),
            _ => Outcome::Refused("the signer returned no CERTIFICATE PEM block".to_string()),
        });
    }
    if !is_terminal(code) {
        return None;
    }
    let message = match r.message.split_once("]: ") {
        Some((head, rest)) if head.starts_with("batch.requests[") => rest.to_string(),
        _ => r.message,
    };
    Some(Outcome::Refused(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_secs(1), 1);
        assert_eq!(backoff_secs(2), 2);
        assert_eq!(backoff_secs(4), 8);
        assert_eq!(backoff_secs(100), 30);
    }

    #[test]
    fn preferred_endpoint_is_stable_and_spread() {
        assert_eq!(preferred_endpoint("a", 0), 0);
        assert_eq!(preferred_endpoint("anything", 1), 0);
        let uid = "7f1c8f0e-1d3b-4a57-9a3e-0c2b1f6a9d11";
        assert_eq!(preferred_endpoint(uid, 3), preferred_endpoint(uid, 3));
        let mut seen = [0usize; 2];
        for i in 0..200 {
            seen[preferred_endpoint(&format!("uid-{i}"), 2)] += 1;
        }
        assert!(seen[0] > 50 && seen[1] > 50, "{seen:?}");
    }

    #[test]
    fn lease_covers_every_endpoint() {
        let one = lease_secs(1, Duration::from_secs(30));
        let two = lease_secs(2, Duration::from_secs(30));
        assert!(one > 30 + 5);
        assert!(two > 2 * (30 + 5));
        assert_eq!(
            lease_secs(0, Duration::from_secs(1)),
            lease_secs(1, Duration::from_secs(1))
        );
    }

    fn item(uid: &str) -> ForwardItem {
        ForwardItem {
            object: CertificateSigningRequest {
                metadata: Some(certsign_proto::v1::ObjectMeta {
                    uid: uid.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            renewal: None,
            attempts: 1,
        }
    }

    #[test]
    fn batches_are_capped_and_each_goes_to_its_requests_endpoint() {
        let items: Vec<_> = (0..300).map(|i| item(&format!("uid-{i}"))).collect();
        let one = batches(items.clone(), 1);
        assert_eq!(
            one.iter().map(Vec::len).collect::<Vec<_>>(),
            [BATCH, BATCH, 300 - 2 * BATCH]
        );
        let two = batches(items, 2);
        assert_eq!(two.iter().map(Vec::len).sum::<usize>(), 300);
        for b in &two {
            assert!(!b.is_empty() && b.len() <= BATCH);
            let uid = |i: &ForwardItem| {
                i.object
                    .metadata
                    .as_ref()
                    .map_or(String::new(), |m| m.uid.clone())
            };
            let first = preferred_endpoint(&uid(&b[0]), 2);
            assert!(b.iter().all(|i| preferred_endpoint(&uid(i), 2) == first));
        }
        assert!(batches(Vec::new(), 3).is_empty());
    }

    #[test]
    fn batch_results_decide_only_what_is_a_decision() {
        let r = |code: Code, message: &str, certificate: &[u8]| SignResult {
            code: code as i32,
            message: message.into(),
            certificate: certificate.to_vec(),
            ..Default::default()
        };
        let pem = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert!(matches!(decision_of(r(Code::Ok, "", pem)), Some(Outcome::Issued(c)) if c == pem));
        assert!(matches!(
            decision_of(r(Code::Ok, "", b"")),
            Some(Outcome::Refused(_))
        ));
        let refused = decision_of(r(
            Code::FailedPrecondition,
            "batch.requests[7]: unknown signer name",
            b"",
        ));
        assert!(matches!(refused, Some(Outcome::Refused(m)) if m == "unknown signer name"));
        for code in [
            Code::Unavailable,
            Code::Aborted,
            Code::Unknown,
            Code::DeadlineExceeded,
        ] {
            assert!(
                decision_of(r(code, "batch.requests[0]: retry", b"")).is_none(),
                "{code:?}"
            );
        }
    }

    #[test]
    fn terminal_codes() {
        assert!(is_terminal(Code::InvalidArgument));
        assert!(is_terminal(Code::FailedPrecondition));
        assert!(!is_terminal(Code::Unavailable));
        assert!(!is_terminal(Code::DeadlineExceeded));
        assert!(!is_terminal(Code::Unknown));
    }
}

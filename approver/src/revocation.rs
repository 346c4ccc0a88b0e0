//! RevokeCertificate and the delivery of every held revocation to every
//! signer endpoint.
//!
//! A revocation is looked up in the inventory by the serial of its signed
//! RevocationStatement, authorized (an admin allowed to approve for the
//! certificate's signer name, or the holder: the caller's TLS client
//! certificate is that very certificate), stored durably, then sent to
//! every signer endpoint as `SignRequest{revocation}`. The call answers once
//! one signer journaled it; endpoints that could not be reached get it
//! from the store later ([`Deliverer`]'s background task), until each has
//! it. A signer's refusal (INVALID_ARGUMENT / FAILED_PRECONDITION / ...) of
//! a revocation nobody journaled is passed on to the caller and recorded:
//! the revocation is no longer held and not retried. The signer verifies
//! the statement itself; the approver reads it only to find the serial.
//!
//! This module must never drop or undo a held revocation, never mark one
//! refused for a transport error, and never take an identity from the
//! request body.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certsign_proto::v1::signer_client::SignerClient;
use certsign_proto::v1::{
    IssuedCertificate, Revocation, RevocationStatement, SignRequest, SignedStatement, sign_request,
};
use prost::Message as _;
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::access;
use crate::authn::Caller;
use crate::config::Config;
use crate::forwarder::{ForwarderError, is_terminal, signer_clients};
use crate::inventory::to_proto;
use crate::issued::der_of;
use crate::status::ServiceError;
use crate::store::{RevocationState, Store, StoreError, Undelivered};
use certsign_runtime::unix_now;

/// Held revocations read from the store at a time.
const BATCH: u32 = 100;

/// Signer endpoints by URL.
pub type Clients = Arc<Vec<(String, SignerClient<Channel>)>>;

/// How one endpoint answered a revocation.
#[derive(Debug)]
pub enum Delivery {
    /// Journaled (now or before), dated `at` (unix seconds).
    Journaled { at: i64 },
    /// A decision: the signer will not journal it.
    Refused { code: tonic::Code, message: String },
    /// No decision (unreachable, unavailable): try again later.
    Unreachable(String),
}

/// Send one revocation to one endpoint and record a journaling.
pub async fn deliver(
    store: &Store,
    url: &str,
    client: &SignerClient<Channel>,
    item: &Undelivered,
) -> Delivery {
    let Some(certificate) = der_of(&item.certificate_pem) else {
        return Delivery::Unreachable(format!(
            "the stored certificate of serial {} is unreadable",
            item.serial
        ));
    };
    let statement = match SignedStatement::decode(item.statement.as_slice()) {
        Ok(s) => s,
        Err(e) => {
            return Delivery::Unreachable(format!(
                "the stored revocation of serial {} is unreadable: {e}",
                item.serial
            ));
        }
    };
    let request = SignRequest {
        request: Some(sign_request::Request::Revocation(Revocation {
            statement: Some(statement),
            certificate,
        })),
        ..Default::default()
    };
    let outcome = match client.clone().sign(request).await {
        Ok(resp) => Delivery::Journaled {
            at: resp.into_inner().time.map_or_else(unix_now, |t| t.seconds),
        },
        Err(s) if is_terminal(s.code()) => Delivery::Refused {
            code: s.code(),
            message: s.message().to_string(),
        },
        Err(s) => Delivery::Unreachable(format!("{url}: {:?}: {}", s.code(), s.message())),
    };
    if let Delivery::Journaled { at } = outcome
        && let Err(e) = store.revocation_delivered(&item.serial, url, at).await
    {
        // Not recorded: the signer has it; the retry's repeat is harmless.
        return Delivery::Unreachable(format!("recording the delivery failed: {e}"));
    }
    outcome
}

/// The revocation side of the approver: RevokeCertificate and the
/// background delivery of held revocations.
#[derive(Debug, Clone)]
pub struct Deliverer {
    store: Store,
    clients: Clients,
    /// Wakes the background delivery.
    wake: Arc<Notify>,
    /// Wakes the CRL refresh (after every delivered revocation).
    crl_wake: Arc<Notify>,
}

fn required(field: &str) -> ServiceError {
    ServiceError::BadRequest(format!("{field}: Required value"))
}

/// The RevocationStatement inside `signed` (not verified: the signer does).
fn statement_of(signed: &SignedStatement) -> Result<RevocationStatement, ServiceError> {
    let st = RevocationStatement::decode(signed.statement.as_slice()).map_err(|e| {
        ServiceError::BadRequest(format!(
            "revocation.statement: not a RevocationStatement: {e}"
        ))
    })?;
    let serial = &st.serial_number;
    if serial.is_empty() {
        return Err(required("revocation.statement.serial_number"));
    }
    if serial.len() > 64
        || !serial
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(ServiceError::BadRequest(format!(
            "revocation.statement.serial_number: {serial:?} must be lowercase hex (at most 64 digits)"
        )));
    }
    Ok(st)
}

impl Deliverer {
    /// Connect (lazily) to every signer endpoint and start the background
    /// delivery.
    pub fn start(
        store: Store,
        signer: &crate::config::SignerConnection,
        crl_wake: Arc<Notify>,
    ) -> Result<Self, ForwarderError> {
        let d = Self {
            store,
            clients: Arc::new(signer_clients(signer)?),
            wake: Arc::new(Notify::new()),
            crl_wake,
        };
        tokio::spawn(d.clone().run());
        Ok(d)
    }

    /// The signer endpoints (shared with the CRL refresh).
    pub fn clients(&self) -> Clients {
        self.clients.clone()
    }

    /// RevokeCertificate for `id`.
    pub async fn revoke(
        &self,
        cfg: &Config,
        id: &Caller,
        signed: Option<SignedStatement>,
    ) -> Result<IssuedCertificate, ServiceError> {
        let signed = signed.ok_or_else(|| required("revocation"))?;
        let st = statement_of(&signed)?;
        let serial = st.serial_number.as_str();
        let record = self.store.certificate(serial).await?.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "certificate with serial number {serial} not found in the inventory"
            ))
        })?;
        let der = der_of(&record.issued.certificate_pem).ok_or_else(|| {
            ServiceError::Store(StoreError::Corrupt {
                name: serial.to_string(),
                message: "the stored certificate does not parse".into(),
            })
        })?;
        let holder = id.certificate() == Some(der.as_slice());
        if !holder && access::approver_groups_for(cfg, id, &record.issued.signer_name).is_err() {
            return Err(ServiceError::Forbidden(format!(
                "user {:?} may not revoke certificate {serial}: only an admin allowed to approve \
                 signerName {:?} or the certificate's holder may",
                id.username, record.issued.signer_name
            )));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, &der);
        if st.certificate_sha256 != digest.as_ref() {
            return Err(ServiceError::BadRequest(format!(
                "revocation.statement.certificate_sha256: does not match certificate {serial}"
            )));
        }
        let journaled_before = record
            .revocation
            .as_ref()
            .is_some_and(|r| r.state == RevocationState::Journaled);
        if !record.revocation.as_ref().is_some_and(|r| r.held()) {
            self.store
                .store_revocation(serial, signed.encode_to_vec(), st.reason, unix_now())
                .await?;
            tracing::info!(%serial, by = %id.username, reason = st.reason, "revocation stored");
        }
        let outcome = self.deliver_everywhere(serial).await?;
        let record = self
            .store
            .certificate(serial)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("certificate {serial} vanished")))?;
        match outcome {
            Everywhere::Journaled => {}
            _ if journaled_before => {}
            Everywhere::Refused {
                code,
                message,
                statement,
            } => {
                self.store
                    .revocation_refused(serial, &statement, &message)
                    .await?;
                tracing::info!(%serial, %message, "signer refused the revocation");
                return Err(ServiceError::Signer { code, message });
            }
            Everywhere::Unreachable(last) => {
                return Err(ServiceError::Unavailable(format!(
                    "the revocation of {serial} is stored but no signer endpoint journaled it yet \
                     ({last}); it is delivered when one answers"
                )));
            }
        }
        Ok(to_proto(&record, unix_now()))
    }

    /// Send the held revocation of `serial` to every endpoint that lacks
    /// it, all at once.
    async fn deliver_everywhere(&self, serial: &str) -> Result<Everywhere, ServiceError> {
        let done = self.store.delivered_to(serial).await?;
        let record = self.store.certificate(serial).await?;
        let Some((record, revocation)) = record.and_then(|r| r.revocation.clone().map(|v| (r, v)))
        else {
            return Ok(Everywhere::Unreachable("not stored".into()));
        };
        let item = Undelivered {
            serial: serial.to_string(),
            statement: revocation.statement,
            certificate_pem: record.issued.certificate_pem,
        };
        // Each endpoint's call runs on its own and records its outcome even
        // after this call has answered (on the first journaling).
        let (tx, mut outcomes) = tokio::sync::mpsc::channel(self.clients.len().max(1));
        for (url, client) in self.clients.iter() {
            if done.contains(url) {
                continue;
            }
            let (store, url, client, item) = (
                self.store.clone(),
                url.clone(),
                client.clone(),
                item.clone(),
            );
            let (tx, wake, crl_wake) = (tx.clone(), self.wake.clone(), self.crl_wake.clone());
            tokio::spawn(async move {
                let delivery = deliver(&store, &url, &client, &item).await;
                match &delivery {
                    Delivery::Journaled { .. } => crl_wake.notify_one(),
                    // The background delivery takes it from here.
                    _ => wake.notify_one(),
                }
                let _ = tx.send(delivery).await;
            });
        }
        drop(tx);
        if !done.is_empty() {
            return Ok(Everywhere::Journaled);
        }
        let mut outcome = Everywhere::Unreachable("no signer endpoint answered".into());
        while let Some(delivery) = outcomes.recv().await {
            match delivery {
                Delivery::Journaled { .. } => return Ok(Everywhere::Journaled),
                Delivery::Refused { code, message } => {
                    outcome = Everywhere::Refused {
                        code,
                        message,
                        statement: item.statement.clone(),
                    };
                }
                Delivery::Unreachable(m) => {
                    if matches!(outcome, Everywhere::Unreachable(_)) {
                        outcome = Everywhere::Unreachable(m);
                    }
                }
            }
        }
        Ok(outcome)
    }

    /// The background delivery: every held revocation to every endpoint
    /// that has not journaled it, from the store, with backoff per endpoint.
    async fn run(self) {
        // (serial, endpoint) refused after another endpoint journaled it:
        // retried only after a long pause (an operator must look).
        let mut parked: HashMap<(String, String), Instant> = HashMap::new();
        let mut backoff: Vec<(u32, Instant)> = vec![(0, Instant::now()); self.clients.len()];
        let parked_for = Duration::from_secs(600);
        loop {
            let mut pending = false;
            for (i, (url, client)) in self.clients.iter().enumerate() {
                if backoff[i].1 > Instant::now() {
                    pending = true;
                    continue;
                }
                match self.deliver_to(url, client, &mut parked, parked_for).await {
                    Ok(Progress::Done) => backoff[i] = (0, Instant::now()),
                    Ok(Progress::Unreachable) => {
                        pending = true;
                        // 2, 4, 8, then every 10 s: a signer that is
                        // back gets what it lacks within seconds.
                        let n = backoff[i].0.saturating_add(1).min(4);
                        let pause = Duration::from_secs((1u64 << n).min(10));
                        backoff[i] = (n, Instant::now() + pause);
                    }
                    Err(e) => {
                        pending = true;
                        tracing::warn!(error = %e, "revocation delivery: reading the store failed");
                    }
                }
            }
            parked.retain(|_, until| *until > Instant::now());
            let wait = if pending {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(30)
            };
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        }
    }

    async fn deliver_to(
        &self,
        url: &str,
        client: &SignerClient<Channel>,
        parked: &mut HashMap<(String, String), Instant>,
        parked_for: Duration,
    ) -> Result<Progress, StoreError> {
        // Batch after batch while full ones make progress (parked items
        // come back in every batch; they alone never keep this going).
        loop {
            let batch = self.store.undelivered(url, BATCH).await?;
            let full = batch.len() >= BATCH as usize;
            let mut delivered = false;
            for item in batch {
                let key = (item.serial.clone(), url.to_string());
                if parked.contains_key(&key) {
                    continue;
                }
                match self.deliver_one(url, client, &item).await? {
                    Some(true) => delivered = true,
                    Some(false) => {
                        parked.insert(key, Instant::now() + parked_for);
                    }
                    None => return Ok(Progress::Unreachable),
                }
            }
            if !(full && delivered) {
                return Ok(Progress::Done);
            }
        }
    }

    /// One background delivery: `Some(true)` journaled, `Some(false)`
    /// refused although another endpoint journaled it (to be parked),
    /// `None` unreachable. A refusal of a revocation nobody journaled
    /// marks it refused.
    async fn deliver_one(
        &self,
        url: &str,
        client: &SignerClient<Channel>,
        item: &Undelivered,
    ) -> Result<Option<bool>, StoreError> {
        match deliver(&self.store, url, client, item).await {
            Delivery::Journaled { .. } => {
                tracing::info!(serial = %item.serial, %url, "revocation delivered");
                self.crl_wake.notify_one();
                Ok(Some(true))
            }
            Delivery::Refused { message, .. } => {
                let held = self.store.certificate(&item.serial).await?;
                let journaled = held
                    .and_then(|r| r.revocation)
                    .is_some_and(|r| r.state == RevocationState::Journaled);
                if journaled {
                    tracing::error!(serial = %item.serial, %url, %message,
                        "a signer endpoint refused a revocation another one journaled; \
                         its CRLs will not be published until it takes it");
                    return Ok(Some(false));
                }
                tracing::info!(serial = %item.serial, %url, %message, "signer refused the revocation");
                self.store
                    .revocation_refused(&item.serial, &item.statement, &message)
                    .await?;
                Ok(Some(true))
            }
            Delivery::Unreachable(m) => {
                tracing::warn!(serial = %item.serial, %url, message = %m, "revocation not delivered; will retry");
                Ok(None)
            }
        }
    }
}

/// What a round of background delivery to one endpoint achieved.
enum Progress {
    Done,
    Unreachable,
}

/// The outcome of delivering one revocation to every endpoint.
#[derive(Debug)]
enum Everywhere {
    /// At least one endpoint journaled it.
    Journaled,
    /// Refused (the statement delivered, so that only it is marked).
    Refused {
        code: tonic::Code,
        message: String,
        statement: Vec<u8>,
    },
    Unreachable(String),
}

/// Deliver every held revocation `url` lacks, now (the CRL refresh does
/// this before asking that endpoint for a CRL). Returns whether all went.
pub async fn deliver_pending(
    store: &Store,
    url: &str,
    client: &SignerClient<Channel>,
) -> Result<bool, StoreError> {
    loop {
        let batch = store.undelivered(url, BATCH).await?;
        let full = batch.len() >= BATCH as usize;
        for item in batch {
            match deliver(store, url, client, &item).await {
                Delivery::Journaled { .. } => {}
                Delivery::Refused { message, .. } => {
                    // Refused and journaled nowhere: no longer held (a no-op
                    // when another endpoint journaled it; then this
                    // endpoint's CRLs cannot list it).
                    store
                        .revocation_refused(&item.serial, &item.statement, &message)
                        .await?;
                    let held = store.certificate(&item.serial).await?;
                    if held.and_then(|r| r.revocation).is_some_and(|r| r.held()) {
                        return Ok(false);
                    }
                }
                Delivery::Unreachable(_) => return Ok(false),
            }
        }
        if !full {
            return Ok(true);
        }
    }
}

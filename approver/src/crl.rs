//! CRL refresh and publication: a background task asks a signer for a
//! fresh CRL (`SignRequest{crl}`) at start, after every delivered
//! revocation and periodically well before nextUpdate (`crl_refresh`, by
//! default half the current CRL's validity), checks it and publishes it in
//! the store, so every replica and every restart serves the same one. The
//! published CRL is served by GetCertificateRevocationList and, with
//! `crl_listen`, over plain HTTP (`crl_http`).
//!
//! Before a CRL is published it is parsed (x509-parser), its signature
//! checked against the trust bundle, and every unexpired revocation the
//! approver holds (delivered or not) must be listed on it; otherwise it is
//! not published (the previous one stays, the refusal is logged and the
//! refresh retried). Held revocations an endpoint lacks are delivered to
//! it before it is asked.
//!
//! This module must never publish a CRL that omits a held revocation, one
//! not signed by a CA of the trust bundle, or one older than the
//! published one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use certsign_proto::v1::{CrlRequest, SignRequest, sign_request};
use tokio::sync::{Notify, watch};
use x509_parser::prelude::*;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::revocation::{Clients, deliver_pending};
use crate::store::{Store, StoredCrl};
use certsign_runtime::unix_now;

/// Why a CRL was not published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrlError {
    #[error("the CRL does not parse: {0}")]
    Unparsable(String),
    #[error("the CRL has no {0}")]
    Missing(&'static str),
    #[error("the CRL is not signed by a CA of the trust bundle")]
    NotCaSigned,
    #[error("the CRL omits {} held revocation(s): serial(s) {}", .0.len(), .0.join(", "))]
    Omits(Vec<String>),
}

/// Checks `der` and returns it as published, or why it must not be: it
/// parses, is signed by a certificate of `trust` (DER) whose subject is its
/// issuer, carries a CRL number and nextUpdate, and lists every serial of
/// `held`.
pub fn check(der: &[u8], held: &[String], trust: &[Vec<u8>]) -> Result<StoredCrl, CrlError> {
    let (rest, crl) = CertificateRevocationList::from_der(der)
        .map_err(|e| CrlError::Unparsable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CrlError::Unparsable("trailing bytes".into()));
    }
    let signed = trust.iter().any(|ca| {
        X509Certificate::from_der(ca).is_ok_and(|(_, ca)| {
            ca.subject().as_raw() == crl.issuer().as_raw()
                && crl.verify_signature(ca.public_key()).is_ok()
        })
    });
    if !signed {
        return Err(CrlError::NotCaSigned);
    }
    let number = crl.crl_number().ok_or(CrlError::Missing("CRL number"))?;
    let next_update = crl.next_update().ok_or(CrlError::Missing("nextUpdate"))?;
    let listed: HashSet<String> = crl
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    let omitted: Vec<String> = held
        .iter()
        .filter(|s| !listed.contains(*s))
        .cloned()
        .collect();
    if !omitted.is_empty() {
        return Err(CrlError::Omits(omitted));
    }
    Ok(StoredCrl {
        der: der.to_vec(),
        number: number.to_string(),
        this_update: crl.last_update().timestamp(),
        next_update: next_update.timestamp(),
    })
}

/// The published CRL as this process serves it (cheap to clone).
#[derive(Debug, Clone)]
pub struct CrlPublisher {
    current: watch::Receiver<Option<Arc<StoredCrl>>>,
}

/// Retry pause after a refresh that published nothing.
const RETRY: Duration = Duration::from_secs(10);

/// How often the store is re-read for a CRL another replica published.
const RELOAD: Duration = Duration::from_secs(10);

impl CrlPublisher {
    /// Load the published CRL and start the refresh task, which also runs
    /// when `wake` is notified.
    pub async fn start(
        store: Store,
        clients: Clients,
        trust: Vec<Vec<u8>>,
        refresh: Option<Duration>,
        wake: Arc<Notify>,
    ) -> Self {
        let stored = store.latest_crl().await.ok().flatten().map(Arc::new);
        let (tx, current) = watch::channel(stored);
        let task = Refresher {
            store,
            clients,
            trust,
            refresh,
            tx,
        };
        tokio::spawn(task.run(wake));
        Self { current }
    }

    /// A publisher that serves `crl` as it is and never refreshes it
    /// (tools and tests).
    pub fn fixed(crl: Option<StoredCrl>) -> Self {
        let (_, current) = watch::channel(crl.map(Arc::new));
        Self { current }
    }

    /// The CRL to serve now, if one was ever published.
    pub fn current(&self) -> Option<Arc<StoredCrl>> {
        self.current.borrow().clone()
    }
}

struct Refresher {
    store: Store,
    clients: Clients,
    trust: Vec<Vec<u8>>,
    refresh: Option<Duration>,
    tx: watch::Sender<Option<Arc<StoredCrl>>>,
}

impl Refresher {
    async fn run(self, wake: Arc<Notify>) {
        // Refresh at start and when woken; otherwise when the published
        // CRL's refresh is due, but not before a failed attempt's pause. A
        // failed refresh is owed: retried after the pause even when the
        // published CRL is not due (a revocation woke it and must not wait
        // for the periodic refresh).
        let mut forced = true;
        let mut owed = false;
        let mut paused_until = 0i64;
        loop {
            let now = unix_now();
            if forced || (owed && now >= paused_until) || now >= self.due().max(paused_until) {
                match self.refresh_once().await {
                    Ok(crl) => {
                        paused_until = 0;
                        owed = false;
                        tracing::info!(number = %crl.number, next_update = crl.next_update, "CRL published");
                    }
                    Err(e) => {
                        paused_until = unix_now() + i64::try_from(RETRY.as_secs()).unwrap_or(10);
                        owed = true;
                        tracing::warn!(error = %e, "CRL not refreshed; the published one stays; will retry");
                    }
                }
            }
            self.reload().await;
            let due = if owed {
                paused_until
            } else {
                self.due().max(paused_until)
            };
            let wait = u64::try_from((due - unix_now()).max(1))
                .map(Duration::from_secs)
                .unwrap_or(RETRY)
                .min(RELOAD);
            forced = tokio::time::timeout(wait, wake.notified()).await.is_ok();
        }
    }

    /// When the next refresh is due (now when nothing is published).
    fn due(&self) -> i64 {
        self.tx.borrow().as_ref().map_or(0, |c| self.due_after(c))
    }

    /// When the CRL after `crl` is due: `crl_refresh` after its thisUpdate,
    /// or half its validity.
    fn due_after(&self, crl: &StoredCrl) -> i64 {
        let interval = match self.refresh {
            Some(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4),
            None => (crl.next_update - crl.this_update) / 2,
        };
        crl.this_update.saturating_add(interval.max(1))
    }

    /// Serve what the store holds (another replica may have published a
    /// newer CRL).
    async fn reload(&self) {
        match self.store.latest_crl().await {
            Ok(Some(c)) => {
                let newer = self.tx.borrow().as_ref().is_none_or(|old| **old != c);
                if newer {
                    let _ = self.tx.send(Some(Arc::new(c)));
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading the published CRL failed"),
        }
    }

    /// Ask the endpoints in turn for a CRL until one passes the check, and
    /// publish it.
    async fn refresh_once(&self) -> Result<StoredCrl, String> {
        let mut last = String::from("no signer endpoint configured");
        for (url, client) in self.clients.iter() {
            match deliver_pending(&self.store, url, client).await {
                Ok(true) => {}
                Ok(false) => {
                    last = format!("{url}: held revocations are not delivered to it yet");
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            }
            let request = SignRequest {
                request: Some(sign_request::Request::Crl(CrlRequest {})),
                ..Default::default()
            };
            let der = match client.clone().sign(request).await {
                Ok(r) => r.into_inner().crl,
                Err(s) => {
                    last = format!("{url}: {:?}: {}", s.code(), s.message());
                    continue;
                }
            };
            // Held now, after the CRL was signed: a revocation stored
            // meanwhile must be on it too (or the next refresh brings it).
            let held = self
                .store
                .held_unexpired(unix_now())
                .await
                .map_err(|e| e.to_string())?;
            match check(&der, &held, &self.trust) {
                Ok(crl) => {
                    self.store
                        .publish_crl(crl.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                    self.reload().await;
                    return Ok(crl);
                }
                Err(e) => {
                    tracing::error!(%url, error = %e, "refusing to publish this CRL");
                    last = format!("{url}: {e}");
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa, Issuer,
        KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
    };

    fn ca(cn: &str) -> (CertificateParams, KeyPair, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        (params, key, der)
    }

    fn crl_of(
        params: &CertificateParams,
        key: &KeyPair,
        serials: &[&[u8]],
        number: u64,
    ) -> Vec<u8> {
        let now = ::time::OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now,
            next_update: now + ::time::Duration::days(1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&Issuer::from_params(params, key))
        .unwrap()
        .der()
        .to_vec()
    }

    #[test]
    fn a_crl_listing_every_held_revocation_is_published() {
        let (params, key, ca_der) = ca("ca");
        let der = crl_of(&params, &key, &[&[0x0a], &[0x01, 0xff]], 7);
        let held = vec!["01ff".to_string(), "0a".to_string()];
        let crl = check(&der, &held, std::slice::from_ref(&ca_der)).unwrap();
        assert_eq!(crl.number, "7");
        assert_eq!(crl.der, der);
        assert!(crl.next_update > crl.this_update);
        // Listing more than is held is fine (another replica's, or expired).
        check(&der, &held[..1], &[ca_der]).unwrap();
    }

    #[test]
    fn a_crl_omitting_a_held_revocation_is_never_published() {
        let (params, key, ca_der) = ca("ca");
        let der = crl_of(&params, &key, &[&[0x0a]], 8);
        let held = vec!["0a".to_string(), "0b".to_string()];
        match check(&der, &held, &[ca_der]) {
            Err(CrlError::Omits(missing)) => assert_eq!(missing, vec!["0b".to_string()]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_crl_not_signed_by_the_trust_bundle_is_never_published() {
        let (params, key, _) = ca("ca");
        let (_, _, other_der) = ca("ca");
        let der = crl_of(&params, &key, &[], 9);
        assert!(matches!(
            check(&der, &[], &[other_der]),
            Err(CrlError::NotCaSigned)
        ));
        assert!(matches!(
            check(b"not a crl", &[], &[]),
            Err(CrlError::Unparsable(_))
        ));
    }
}

//! The cleaner: Kubernetes' csrcleaner retention, configurable.
//!
//! Issued: `retention.issued` after approval, or once the certificate has
//! expired; denied / failed: after their condition's last update; pending
//! (no condition): from creation; approved but never issued: from approval
//! (kubernetes#133116). Deletes are conditional on the resource version the
//! decision was made on, so a request that changed meanwhile is not removed.
//! This module must never delete anything else.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Retention;
use crate::decision::{self, APPROVED, DENIED, FAILED, State};
pub use crate::expiry::expiry_column;
use crate::expiry::not_after;
use crate::store::{PageBy, Store, StoreError};
use certsign_proto::v1::CertificateSigningRequest;

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn older_than(ts: Option<&prost_types::Timestamp>, age: Duration, now: i64) -> bool {
    // A zero timestamp never expires, as in Kubernetes' isOlderThan.
    match ts {
        Some(t) if t.seconds > 0 => now.saturating_sub(t.seconds) > secs(age),
        _ => false,
    }
}

fn cert_expired(csr: &CertificateSigningRequest, now: i64) -> bool {
    // Unparseable: never "expired" (Kubernetes #103823 looped on this).
    not_after(csr).is_some_and(|t| t < now)
}

/// Whether `csr` is due for deletion at `now` (unix seconds).
pub fn is_expired(csr: &CertificateSigningRequest, retention: &Retention, now: i64) -> bool {
    let upd = |ty: &str| decision::condition(csr, ty).and_then(|c| c.last_update_time.as_ref());
    match decision::state_of(csr) {
        State::Issued => older_than(upd(APPROVED), retention.issued, now) || cert_expired(csr, now),
        State::Denied => older_than(upd(DENIED), retention.denied, now),
        State::Failed => older_than(upd(FAILED), retention.failed, now),
        State::Approved => older_than(upd(APPROVED), retention.approved_unissued, now),
        State::Pending => older_than(
            csr.metadata
                .as_ref()
                .and_then(|m| m.creation_timestamp.as_ref()),
            retention.pending,
            now,
        ),
    }
}

/// Rows read per page of the cleaner's walk.
const PAGE: u32 = 200;

/// The pause between pages: the walk shares the store's few connections
/// with API calls, and must not hold them for long stretches.
const PAUSE: Duration = Duration::from_millis(2);

/// One pass over the store, a state at a time, in small pages of an
/// indexed range read. Returns how many requests were deleted.
pub async fn sweep(store: &Store, retention: &Retention) -> Result<usize, StoreError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut deleted = 0;
    // Candidates by indexed range; `is_expired` decides for each. A
    // condition is never older than its request, so nothing created
    // within a state's retention can be due by age yet.
    let before = |age: Duration| now.saturating_sub(secs(age));
    let walks = [
        (
            State::Pending,
            PageBy::Created,
            i64::MIN..before(retention.pending),
        ),
        (
            State::Denied,
            PageBy::Created,
            i64::MIN..before(retention.denied),
        ),
        (
            State::Failed,
            PageBy::Created,
            i64::MIN..before(retention.failed),
        ),
        (
            State::Approved,
            PageBy::Created,
            i64::MIN..before(retention.approved_unissued),
        ),
        (
            State::Issued,
            PageBy::Created,
            i64::MIN..before(retention.issued),
        ),
        // Issued requests whose certificate has expired, at any age.
        (State::Issued, PageBy::Expires, 1..now),
        // Rows stored before the expiry column existed: looked at each time.
        (State::Issued, PageBy::Expires, -1..0),
    ];
    for (state, by, range) in walks {
        deleted += walk(store, retention, now, state, by, range).await?;
    }
    // Watch events are only needed by live watchers.
    store.prune_events(now - 3600).await?;
    Ok(deleted)
}

/// Deletes the expired requests among one indexed range, a page at a time.
async fn walk(
    store: &Store,
    retention: &Retention,
    now: i64,
    state: State,
    by: PageBy,
    range: std::ops::Range<i64>,
) -> Result<usize, StoreError> {
    let mut deleted = 0;
    let mut after: Option<(i64, String)> = None;
    loop {
        let page = store
            .page_by_state(
                state,
                by,
                range.clone(),
                after.as_ref().map(|(k, n)| (*k, n.as_str())),
                PAGE,
            )
            .await?;
        let Some((key, last)) = page.last() else {
            break;
        };
        after = Some((*key, name_of(last)));
        let mut deletes = tokio::task::JoinSet::new();
        for (key, csr) in &page {
            if !is_expired(csr, retention, now) {
                if by == PageBy::Expires && *key == -1 {
                    // Stored before the column existed: fill it in, so
                    // the next sweeps find this row by range only.
                    let (store, name, expires) = (store.clone(), name_of(csr), expiry_column(csr));
                    deletes.spawn(
                        async move { store.set_expiry(&name, expires).await.map(|()| None) },
                    );
                }
                continue;
            }
            let meta = csr.metadata.clone().unwrap_or_default();
            let rv = meta.resource_version.parse::<i64>().ok();
            let store = store.clone();
            // Concurrent, so the page's deletes share one commit.
            deletes.spawn(async move {
                let gone = store.delete(&meta.name, rv).await?;
                Ok(gone.map(|_| meta.name))
            });
        }
        while let Some(joined) = deletes.join_next().await {
            let Ok(result) = joined else { continue };
            if let Some(name) = result? {
                tracing::info!(%name, "cleaner: deleted expired request");
                deleted += 1;
            }
        }
        if page.len() < PAGE as usize {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    Ok(deleted)
}

fn name_of(csr: &CertificateSigningRequest) -> String {
    csr.metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

/// Run [`sweep`] every `retention.interval`, and trim the rate limiter.
pub fn spawn(store: Store, retention: Retention, limiter: std::sync::Arc<crate::limits::Limiter>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(retention.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match sweep(&store, &retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "cleaner pass"),
                Err(e) => tracing::warn!(error = %e, "cleaner pass failed"),
            }
            limiter.shrink();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use certsign_proto::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus, ObjectMeta,
    };

    fn ts(s: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        })
    }

    fn with(created: i64, conds: &[(&str, i64)], cert: &[u8]) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: Some(ObjectMeta {
                name: "x".into(),
                creation_timestamp: ts(created),
                ..Default::default()
            }),
            status: Some(CertificateSigningRequestStatus {
                conditions: conds
                    .iter()
                    .map(|(t, at)| CertificateSigningRequestCondition {
                        r#type: (*t).into(),
                        status: "True".into(),
                        last_update_time: ts(*at),
                        ..Default::default()
                    })
                    .collect(),
                certificate: cert.to_vec(),
                decisions: vec![],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn kubernetes_retention() {
        let r = Retention::default();
        let now = 1_000_000;
        assert!(!is_expired(&with(now - 3600, &[], b""), &r, now));
        assert!(is_expired(&with(now - 86401, &[], b""), &r, now));
        assert!(!is_expired(&with(0, &[(DENIED, now - 3599)], b""), &r, now));
        assert!(is_expired(&with(0, &[(DENIED, now - 3601)], b""), &r, now));
        assert!(is_expired(
            &with(0, &[(APPROVED, now - 10), (FAILED, now - 3601)], b""),
            &r,
            now
        ));
        assert!(!is_expired(
            &with(0, &[(APPROVED, now - 3601)], b""),
            &r,
            now
        ));
        assert!(is_expired(
            &with(0, &[(APPROVED, now - 86401)], b""),
            &r,
            now
        ));
        assert!(is_expired(
            &with(0, &[(APPROVED, now - 3601)], b"garbage"),
            &r,
            now
        ));
        assert!(!is_expired(
            &with(0, &[(APPROVED, now - 60)], b"garbage"),
            &r,
            now
        ));
    }
}

//! The watch hub: one task tails the store's change events (so changes made
//! by other replicas sharing a PostgreSQL store are seen too) and fans them
//! out to subscribers over a broadcast channel.
//!
//! The events table is the source of truth, read in resource-version order
//! from the last version seen; wake-ups only say when to read. Local writes
//! wake the hub directly; on PostgreSQL every committed write of any
//! replica also wakes it through `LISTEN certsign_csr_events`, so other
//! replicas' changes arrive at once, not at the next poll. A lost listener
//! connection wakes it too (notifications may have been missed) and the
//! read from the last seen version catches up. A slow backstop poll covers
//! anything else.
//!
//! A caller's watch ([`stream`]) subscribes first, then (if asked) sends
//! the current objects as ADDED, then every later event, skipping what the
//! initial list already showed. A watch resumed from a resource version
//! reads the events after it from the store (checking, after each read,
//! that pruning removed none of them: else OUT_OF_RANGE "too old resource
//! version"), then goes on with the hub's events newer than the last one
//! it sent, so nothing is repeated or missed. A subscriber that falls too far behind is
//! told so (its stream ends with an error and the client re-lists), never
//! silently skipped. This module must never decide who may see an event;
//! the service passes the filter of what the caller may read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use certsign_proto::v1::{CertificateSigningRequest, WatchEvent};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::limits::WatchSlot;
use crate::status::ServiceError;
use crate::store::{ChangeListener, Event, ListFilter, Store};

/// Page size of a watch's initial list.
const INITIAL_PAGE: u32 = 500;

/// Backstop poll with a listener (PostgreSQL): notifications normally wake
/// the hub long before this.
const BACKSTOP_POLL: Duration = Duration::from_secs(5);
/// Poll without a listener (SQLite, one process: its own writes wake the
/// hub; this only bounds the delay of writes that do not, e.g. the
/// cleaner's deletions).
const LOCAL_POLL: Duration = Duration::from_millis(500);

/// The fan-out point for change events.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Event>>,
    wake: Arc<Notify>,
}

impl Hub {
    /// Start tailing the store from its current resource version.
    pub async fn start(store: Store) -> Result<Self, crate::store::StoreError> {
        let (tx, _) = broadcast::channel(1024);
        let wake = Arc::new(Notify::new());
        // Listen before reading the starting version: a change committed
        // in between is then both after `last` and notified.
        let listener = store.change_listener().await?;
        let poll = if listener.is_some() {
            BACKSTOP_POLL
        } else {
            LOCAL_POLL
        };
        if let Some(listener) = listener {
            tokio::spawn(relay(listener, wake.clone()));
        }
        let mut last = store.latest_resource_version().await?;
        let hub = Self {
            tx: tx.clone(),
            wake: wake.clone(),
        };
        tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(poll, wake.notified()).await;
                loop {
                    match store.events_after(last, 500).await {
                        Ok(events) if events.is_empty() => break,
                        Ok(events) => {
                            // A short page is the end: no second read to
                            // find nothing.
                            let more = events.len() >= 500;
                            for e in events {
                                last = e.resource_version;
                                // No receivers is fine.
                                let _ = tx.send(Arc::new(e));
                            }
                            if !more {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "watch: reading events failed");
                            break;
                        }
                    }
                }
            }
        });
        Ok(hub)
    }

    /// Tell the hub that this process just wrote something.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Receive every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

/// Turn database notifications (and listener reconnects) into wake-ups.
async fn relay(mut listener: ChangeListener, wake: Arc<Notify>) {
    loop {
        match listener.changed().await {
            Ok(()) => wake.notify_one(),
            Err(e) => {
                tracing::warn!(error = %e, "watch: change listener lost its connection; retrying");
                // Whatever was missed is read by the next wake-up.
                wake.notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn name_of(csr: &CertificateSigningRequest) -> &str {
    csr.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the events from now on.
    Now,
    /// With the current objects as ADDED, then the events.
    Initial,
    /// With every event after this resource version.
    After(i64),
}

/// One caller's watch: the events `matches` lets through, from `start`.
/// Subscribes before listing or reading stored events, so nothing falls
/// between the two; an event no newer than what was already sent of its
/// object (or, resuming, than the last stored event sent) is skipped. Ends
/// with [`ServiceError::WatchLagged`] when the caller falls too far behind.
/// `slot` is held for as long as the watch runs: it ends when the caller
/// leaves, not at the next event.
pub fn stream(
    hub: &Hub,
    store: Store,
    start: Start,
    matches: impl Fn(&CertificateSigningRequest) -> bool + Send + Sync + 'static,
    slot: WatchSlot,
) -> ReceiverStream<Result<WatchEvent, ServiceError>> {
    let mut events = hub.subscribe();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let _slot = slot;
        let mut seen: HashMap<String, i64> = HashMap::new();
        let mut floor = i64::MIN;
        match start {
            Start::Now => {}
            Start::Initial => {
                if send_initial(&store, &matches, &tx, &mut seen)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Start::After(rv) => match send_stored(&store, &matches, &tx, rv).await {
                Ok(last) => floor = last,
                Err(()) => return,
            },
        }
        loop {
            let received = tokio::select! {
                r = events.recv() => r,
                () = tx.closed() => return,
            };
            let ev = match received {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = tx.send(Err(ServiceError::WatchLagged)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if ev.resource_version <= floor || !matches(&ev.object) {
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
    ReceiverStream::new(rx)
}

/// Every stored event after `rv` that `matches` lets through, in order;
/// returns the last version read. `Err` when the watch is over (the
/// caller left, or the events were pruned or unreadable and that was
/// sent).
async fn send_stored(
    store: &Store,
    matches: &(impl Fn(&CertificateSigningRequest) -> bool + Sync),
    tx: &mpsc::Sender<Result<WatchEvent, ServiceError>>,
    rv: i64,
) -> Result<i64, ()> {
    let mut cursor = rv;
    loop {
        let read = store.events_after(cursor, INITIAL_PAGE).await;
        // Read after the events: pruning that removed any event after
        // `cursor` before that read has moved the watermark past it.
        let pruned = store.pruned_through().await;
        let events = match (read, pruned) {
            (Ok(events), Ok(pruned)) if pruned <= cursor => events,
            (Ok(_), Ok(pruned_through)) => {
                let e = ServiceError::TooOldResourceVersion {
                    requested: rv,
                    pruned_through,
                };
                let _ = tx.send(Err(e)).await;
                return Err(());
            }
            (Err(e), _) | (_, Err(e)) => {
                let _ = tx.send(Err(e.into())).await;
                return Err(());
            }
        };
        let more = events.len() >= INITIAL_PAGE as usize;
        for e in events {
            cursor = e.resource_version;
            if !matches(&e.object) {
                continue;
            }
            let ev = WatchEvent {
                r#type: e.event_type,
                object: Some(e.object),
            };
            tx.send(Ok(ev)).await.map_err(|_| ())?;
        }
        if !more {
            return Ok(cursor);
        }
    }
}

/// The current objects `matches` lets through, as ADDED, page by page;
/// records each one's resource version in `seen`. `Err` when the watch is
/// over (the caller left, or the list failed and that was sent).
async fn send_initial(
    store: &Store,
    matches: &(impl Fn(&CertificateSigningRequest) -> bool + Sync),
    tx: &mpsc::Sender<Result<WatchEvent, ServiceError>>,
    seen: &mut HashMap<String, i64>,
) -> Result<(), ()> {
    let mut after: Option<String> = None;
    loop {
        let page = match store
            .list(&ListFilter::default(), after.as_deref(), INITIAL_PAGE)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return Err(());
            }
        };
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(name_of(last).to_string());
        for c in page {
            if !matches(&c) {
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
            tx.send(Ok(ev)).await.map_err(|_| ())?;
        }
    }
}

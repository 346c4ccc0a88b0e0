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
//! A subscriber that falls too far behind is told so (its stream ends with
//! an error and the client re-lists), never silently skipped. This module
//! must never decide who may see an event; the service filters each event by
//! what the caller may read.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use crate::store::{ChangeListener, Event, Store};

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

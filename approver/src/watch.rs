//! The watch hub: one task tails the store's change events (so changes made
//! by other replicas sharing a PostgreSQL store are seen too) and fans them
//! out to subscribers over a broadcast channel.
//!
//! A subscriber that falls too far behind is told so (its stream ends with
//! an error and the client re-lists), never silently skipped. This module
//! must never decide who may see an event; the service filters each event by
//! what the caller may read.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use crate::store::{Event, Store};

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
        let mut last = store.latest_resource_version().await?;
        let hub = Self {
            tx: tx.clone(),
            wake: wake.clone(),
        };
        tokio::spawn(async move {
            loop {
                // Woken by local writes at once; polls for other replicas'.
                let _ = tokio::time::timeout(Duration::from_millis(500), wake.notified()).await;
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

//! Draining at shutdown: one flag that every open watch listens to, so
//! SIGTERM ends watch streams at once with UNAVAILABLE ("the approver is
//! shutting down") instead of waiting for clients to hang up.
//!
//! It must never end a stream silently (OK): a client has to be able to tell
//! a shutdown from a watch that simply ended.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::Status;

/// What a watch open at shutdown ends with.
pub const SHUTTING_DOWN: &str =
    "the approver is shutting down; watch again (another replica, or this one once it is back)";

/// A boxed stream of call results.
pub type Drained<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The shutdown flag; cheap to clone.
#[derive(Debug, Clone)]
pub struct Drain {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Drain {
    /// Start draining: every stream made by [`Drain::until_drained`] ends.
    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }

    /// `stream` until the drain starts, then one UNAVAILABLE status (which
    /// ends the call).
    pub fn until_drained<T: Send + 'static>(
        &self,
        stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
    ) -> Drained<T> {
        // `None` marks the end of either side: the stream's own end, or the
        // drain's status after which nothing more is sent.
        let own = stream.map(Some).chain(tokio_stream::once(None));
        let ended = WatchStream::new(self.tx.subscribe())
            .filter(|draining| *draining)
            .take(1)
            .map(|_| Some(Err(Status::unavailable(SHUTTING_DOWN))));
        Box::pin(
            own.merge(ended)
                .take_while(Option::is_some)
                .filter_map(|item| item),
        )
    }
}

//! Per-identity rate limiting (governor), the request-size limit, and the
//! cap on watches one identity holds open at once (each is a task and a
//! subscription in this process, on either face).
//!
//! Over a limit is an error the service maps to RESOURCE_EXHAUSTED with a
//! message; this module must never block, drop silently or panic. (The
//! pending-per-requestor cap is counted by the store, atomically with the
//! create.) The limits are replaced whole on a configuration reload.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Limits;

/// A limit was exceeded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    #[error("rate limit exceeded for {identity:?}: at most {per_second} requests per second")]
    Rate { identity: String, per_second: u32 },
    #[error("spec.request is {size} bytes; the limit is {max} bytes")]
    RequestTooLarge { size: usize, max: usize },
    #[error(
        "too many open watches for {identity:?}: at most {max} at once (limits.max_watches_per_identity); end one first"
    )]
    Watches { identity: String, max: u32 },
}

/// The limiter shared by all RPCs. Its limits can be replaced while it
/// runs (a configuration reload); the cleaner keeps shrinking the same one.
#[derive(Debug)]
pub struct Limiter {
    current: RwLock<Arc<Rates>>,
    /// Open watches per identity; kept across reloads (they are still open).
    watches: Arc<Mutex<HashMap<String, u32>>>,
}

/// One open watch counted against its identity, released when dropped
/// (the watch ended, the caller left, or the approver is draining).
#[derive(Debug)]
pub struct WatchSlot {
    watches: Arc<Mutex<HashMap<String, u32>>>,
    identity: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.identity) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.identity);
            }
        }
    }
}

/// One set of limits and the per-identity state counted against them.
#[derive(Debug)]
struct Rates {
    limits: Limits,
    rate: DefaultKeyedRateLimiter<String>,
    per_second: u32,
}

impl Rates {
    fn new(limits: &Limits) -> Self {
        let per_second = NonZeroU32::new(limits.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = limits.burst.and_then(NonZeroU32::new).unwrap_or(per_second);
        Self {
            limits: limits.clone(),
            rate: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            per_second: per_second.get(),
        }
    }
}

impl Limiter {
    pub fn new(limits: &Limits) -> Self {
        Self {
            current: RwLock::new(Arc::new(Rates::new(limits))),
            watches: Arc::default(),
        }
    }

    fn rates(&self) -> Arc<Rates> {
        // The only write replaces one whole `Arc`: a poisoned lock still
        // holds a consistent value.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Put `limits` in force. Unchanged limits keep the counted state;
    /// changed ones start from a fresh state (every identity at full quota).
    pub fn reconfigure(&self, limits: &Limits) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.limits != *limits {
            *current = Arc::new(Rates::new(limits));
        }
    }

    /// Count one RPC for `identity`.
    pub fn check_rate(&self, identity: &str) -> Result<(), LimitError> {
        let rates = self.rates();
        rates
            .rate
            .check_key(&identity.to_string())
            .map_err(|_| LimitError::Rate {
                identity: identity.to_string(),
                per_second: rates.per_second,
            })
    }

    /// Check the size of a submitted `spec.request`.
    pub fn check_request_size(&self, size: usize) -> Result<(), LimitError> {
        let max = self.rates().limits.max_request_bytes;
        if size > max {
            return Err(LimitError::RequestTooLarge { size, max });
        }
        Ok(())
    }

    /// Count one more open watch for `identity`, refused at
    /// `max_watches_per_identity` (a lowered limit refuses new watches
    /// until enough of the open ones end).
    pub fn open_watch(&self, identity: &str) -> Result<WatchSlot, LimitError> {
        let max = self.rates().limits.max_watches_per_identity;
        let mut open = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(identity.to_string()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                open.remove(identity);
            }
            return Err(LimitError::Watches {
                identity: identity.to_string(),
                max,
            });
        }
        *n += 1;
        Ok(WatchSlot {
            watches: self.watches.clone(),
            identity: identity.to_string(),
        })
    }

    /// Forget identities idle long enough to be back at full quota (keeps
    /// memory bounded; called by the cleaner).
    pub fn shrink(&self) {
        let rates = self.rates();
        rates.rate.retain_recent();
        rates.rate.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn watches_are_capped_per_identity_and_released_when_dropped() {
        let l = Limiter::new(&Limits {
            max_watches_per_identity: 2,
            ..Limits::default()
        });
        let a1 = l.open_watch("a").unwrap();
        let _a2 = l.open_watch("a").unwrap();
        let err = l.open_watch("a").unwrap_err();
        assert_eq!(
            err.to_string(),
            "too many open watches for \"a\": at most 2 at once (limits.max_watches_per_identity); end one first"
        );
        let _b = l.open_watch("b").unwrap();
        drop(a1);
        let _a3 = l.open_watch("a").unwrap();
        // A lowered limit keeps the open ones and refuses new ones.
        l.reconfigure(&Limits {
            max_watches_per_identity: 1,
            ..Limits::default()
        });
        assert!(l.open_watch("a").is_err());
        assert!(l.open_watch("c").is_ok());
    }

    #[test]
    fn rate_is_per_identity() {
        let l = Limiter::new(&Limits {
            requests_per_second: 1,
            burst: Some(2),
            ..Limits::default()
        });
        assert!(l.check_rate("a").is_ok());
        assert!(l.check_rate("a").is_ok());
        let err = l.check_rate("a").unwrap_err();
        assert!(err.to_string().contains("rate limit exceeded for \"a\""));
        assert!(l.check_rate("b").is_ok());
    }

    #[test]
    fn reconfigure_replaces_limits_and_keeps_state_when_unchanged() {
        let one = Limits {
            requests_per_second: 1,
            burst: Some(1),
            ..Limits::default()
        };
        let l = Limiter::new(&one);
        assert!(l.check_rate("a").is_ok());
        assert!(l.check_rate("a").is_err());
        // The same limits again: the spent quota stays spent.
        l.reconfigure(&one);
        assert!(l.check_rate("a").is_err());
        // New limits apply at once, size included.
        l.reconfigure(&Limits {
            requests_per_second: 1,
            burst: Some(3),
            max_request_bytes: 5,
            ..Limits::default()
        });
        assert!(l.check_rate("a").is_ok());
        assert!(l.check_rate("a").is_ok());
        assert!(l.check_request_size(6).is_err());
        assert!(l.check_request_size(5).is_ok());
    }

    #[test]
    fn request_size() {
        let l = Limiter::new(&Limits {
            max_request_bytes: 10,
            ..Limits::default()
        });
        assert!(l.check_request_size(10).is_ok());
        assert_eq!(
            l.check_request_size(11).unwrap_err().to_string(),
            "spec.request is 11 bytes; the limit is 10 bytes"
        );
    }
}

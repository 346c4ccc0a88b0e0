//! Per-identity rate limiting (governor) and the request-size limit.
//!
//! Over a limit is an error the service maps to RESOURCE_EXHAUSTED with a
//! message; this module must never block, drop silently or panic. (The
//! pending-per-requestor cap is counted by the store, atomically with the
//! create.)

use std::num::NonZeroU32;

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
}

/// The limiter shared by all RPCs.
#[derive(Debug)]
pub struct Limiter {
    rate: DefaultKeyedRateLimiter<String>,
    per_second: u32,
    max_request_bytes: usize,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Self {
        let per_second = NonZeroU32::new(limits.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = limits.burst.and_then(NonZeroU32::new).unwrap_or(per_second);
        Self {
            rate: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            per_second: per_second.get(),
            max_request_bytes: limits.max_request_bytes,
        }
    }

    /// Count one RPC for `identity`.
    pub fn check_rate(&self, identity: &str) -> Result<(), LimitError> {
        self.rate
            .check_key(&identity.to_string())
            .map_err(|_| LimitError::Rate {
                identity: identity.to_string(),
                per_second: self.per_second,
            })
    }

    /// Check the size of a submitted `spec.request`.
    pub fn check_request_size(&self, size: usize) -> Result<(), LimitError> {
        if size > self.max_request_bytes {
            return Err(LimitError::RequestTooLarge {
                size,
                max: self.max_request_bytes,
            });
        }
        Ok(())
    }

    /// Forget identities idle long enough to be back at full quota (keeps
    /// memory bounded; called by the cleaner).
    pub fn shrink(&self) {
        self.rate.retain_recent();
        self.rate.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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

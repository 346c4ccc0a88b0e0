//! The cache of verified batch statements: a batch statement covering many
//! requests has its signature and certificate chain verified once, then
//! each request is checked against its own entry from memory.
//!
//! Keyed by SHA-256 over the signed statement bytes, the signature and every
//! certificate of the chain (length-prefixed), so a change to any of them
//! is another key and a full verification. Bounded by a count and by an
//! estimate of the memory held; the oldest entry goes first. An entry is
//! usable only inside the window it was verified for: from the chain's
//! latest notBefore to the earlier of the statement's freshness end and the
//! chain's earliest notAfter; outside it, it is dropped and the statement
//! verified again.
//!
//! It must never hold an unverified statement, never answer for a time
//! outside the window it was verified for, and never grow past its bounds.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use certsign_proto::v1::{Decision, SignedStatement};

use crate::cert::{Identity, sha256};

/// Statements remembered at most, by default.
pub const DEFAULT_CACHE_COUNT: usize = 4096;
/// Memory held at most, by default (estimated, bytes).
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

/// What a verified batch statement established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedBatch {
    /// The signing admin, from the verified certificate.
    pub id: Identity,
    pub signed_at: SystemTime,
    pub root: [u8; 32],
    pub count: u64,
    pub decision: Decision,
    /// The window in which this result holds.
    pub from: SystemTime,
    pub until: SystemTime,
}

impl VerifiedBatch {
    fn size(&self) -> usize {
        // Key, value and the map's and queue's own share, plus the strings.
        256 + self.id.username.len() + self.id.groups.iter().map(|g| g.len() + 24).sum::<usize>()
    }
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<[u8; 32], Arc<VerifiedBatch>>,
    order: VecDeque<[u8; 32]>,
    bytes: usize,
}

/// A bounded cache of verified batch statements (see the module header).
#[derive(Debug)]
pub struct StatementCache {
    inner: Mutex<Inner>,
    max_count: usize,
    max_bytes: usize,
    verified: AtomicU64,
}

impl Default for StatementCache {
    fn default() -> Self {
        Self::new(DEFAULT_CACHE_COUNT, DEFAULT_CACHE_BYTES)
    }
}

impl StatementCache {
    /// A cache of at most `max_count` statements and about `max_bytes`.
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::default(),
            max_count,
            max_bytes,
            verified: AtomicU64::new(0),
        }
    }

    /// The key of a signed statement.
    pub(crate) fn key(signed: &SignedStatement) -> [u8; 32] {
        let mut v = Vec::with_capacity(
            signed.statement.len()
                + signed.signature.len()
                + signed.certificate_chain.iter().map(Vec::len).sum::<usize>()
                + 8 * (2 + signed.certificate_chain.len()),
        );
        let parts = [&signed.statement, &signed.signature]
            .into_iter()
            .chain(signed.certificate_chain.iter());
        for p in parts {
            v.extend_from_slice(&(p.len() as u64).to_be_bytes());
            v.extend_from_slice(p);
        }
        sha256(&v)
    }

    /// The verified result for `key`, if remembered and valid at `now`; an
    /// entry whose window has passed is dropped.
    pub(crate) fn get(&self, key: &[u8; 32], now: SystemTime) -> Option<Arc<VerifiedBatch>> {
        let mut inner = self.inner.lock().ok()?;
        let hit = inner.map.get(key)?.clone();
        if now > hit.until {
            inner.map.remove(key);
            inner.order.retain(|k| k != key);
            inner.bytes = inner.bytes.saturating_sub(hit.size());
            return None;
        }
        (hit.from <= now).then_some(hit)
    }

    /// Remember a result just verified, evicting the oldest as needed.
    pub(crate) fn insert(&self, key: [u8; 32], value: VerifiedBatch) {
        self.verified.fetch_add(1, Ordering::Relaxed);
        let size = value.size();
        if self.max_count == 0 || size > self.max_bytes {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(old) = inner.map.remove(&key) {
            inner.order.retain(|k| *k != key);
            inner.bytes = inner.bytes.saturating_sub(old.size());
        }
        while inner.map.len() >= self.max_count || inner.bytes + size > self.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.map.remove(&oldest) {
                inner.bytes = inner.bytes.saturating_sub(old.size());
            }
        }
        inner.order.push_back(key);
        inner.bytes += size;
        inner.map.insert(key, Arc::new(value));
    }

    /// Statements held now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated bytes held now.
    pub fn bytes(&self) -> usize {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }

    /// Batch statements fully verified (signature and chain) so far.
    pub fn verifications(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn value(t: SystemTime, user: &str) -> VerifiedBatch {
        VerifiedBatch {
            id: Identity {
                username: user.into(),
                groups: vec!["g".into()],
            },
            signed_at: t,
            root: [0; 32],
            count: 1,
            decision: Decision::Approve,
            from: t,
            until: t + Duration::from_secs(60),
        }
    }

    #[test]
    fn bounded_by_count_and_memory_oldest_first() {
        let t = SystemTime::now();
        let c = StatementCache::new(2, 1 << 20);
        for i in 0..3u8 {
            c.insert([i; 32], value(t, "a"));
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&[0; 32], t).is_none());
        assert!(c.get(&[2; 32], t).is_some());
        let one = value(t, "a").size();
        let c = StatementCache::new(100, 2 * one + 1);
        for i in 0..5u8 {
            c.insert([i; 32], value(t, "a"));
        }
        assert_eq!(c.len(), 2);
        assert!(c.bytes() <= 2 * one + 1);
        assert_eq!(c.verifications(), 5);
    }

    #[test]
    fn an_entry_never_answers_outside_its_window() {
        let t = SystemTime::now();
        let c = StatementCache::default();
        c.insert([1; 32], value(t, "a"));
        assert!(c.get(&[1; 32], t - Duration::from_secs(1)).is_none());
        assert!(c.get(&[1; 32], t + Duration::from_secs(60)).is_some());
        assert!(c.get(&[1; 32], t + Duration::from_secs(61)).is_none());
        // Dropped, not just hidden.
        assert_eq!(c.len(), 0);
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn the_key_covers_statement_signature_and_chain() {
        let s = SignedStatement {
            statement: b"ab".to_vec(),
            signature: b"c".to_vec(),
            certificate_chain: vec![b"d".to_vec()],
            batch: None,
        };
        let k = StatementCache::key(&s);
        let mut moved = s.clone();
        moved.statement = b"a".to_vec();
        moved.signature = b"bc".to_vec();
        assert_ne!(StatementCache::key(&moved), k);
        let mut chain = s.clone();
        chain.certificate_chain.push(b"e".to_vec());
        assert_ne!(StatementCache::key(&chain), k);
        // The per-request inclusion is not part of what was verified.
        let mut inc = s.clone();
        inc.batch = Some(Default::default());
        assert_eq!(StatementCache::key(&inc), k);
    }
}

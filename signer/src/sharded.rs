//! `ShardedMap`: a hash map split into shards so that growing never moves
//! every entry at once (the journal index lives under the signer's state
//! lock, and a single map's resize stalled every `Sign`).
//!
//! It only stores; it never decides anything and never does I/O.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};

/// Shards per index map.
const SHARDS: usize = 64;

/// A hash map split into [`SHARDS`] maps by the key's hash, so that growing
/// moves one shard's entries at a time. The index is read and written under
/// the signer's state lock, and a single map doubles by moving every entry
/// at once: tens of milliseconds at 114,688 issued certificates, ~200 ms at
/// 229,376, while every `Sign` waited (it was the p99 of the benchmark's
/// half-load run), and the pause grows with the journal. Sharded, a resize
/// moves 1/64 of it.
#[derive(Debug)]
pub struct ShardedMap<K, V> {
    hasher: RandomState,
    shards: Vec<HashMap<K, V>>,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| HashMap::new()).collect(),
        }
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    // `String` and `str` hash alike, so a key and its borrowed form pick
    // the same shard.
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(key)].get(key)
    }

    /// Whether `key` is present.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Insert, replacing (and returning) an earlier value.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let i = self.shard(&key);
        // `shard` is below SHARDS, the number of shards: never out of range.
        self.shards[i].insert(key, value)
    }

    /// Entries in all shards.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sharded_map_finds_what_it_holds_by_borrowed_key() {
        let mut m: ShardedMap<String, u32> = ShardedMap::default();
        assert!(m.is_empty());
        for i in 0..10_000u32 {
            assert_eq!(m.insert(format!("uid-{i}"), i), None);
        }
        assert_eq!(m.len(), 10_000);
        for i in 0..10_000u32 {
            let k = format!("uid-{i}");
            assert_eq!(m.get(k.as_str()), Some(&i));
            assert!(m.contains_key(&k));
        }
        assert!(!m.contains_key("uid-10000"));
        assert_eq!(m.insert("uid-7".into(), 70), Some(7));
        assert_eq!(m.get("uid-7"), Some(&70));
        assert_eq!(m.len(), 10_000);
        // The keys spread over the shards instead of piling into one.
        assert!(m.shards.iter().all(|s| !s.is_empty()));
    }
}

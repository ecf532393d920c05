//! Per-key generation stripes: an invalidation bumps the key's stripe; a load snapshots it
//! before calling the source and discards its write if it moved.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Generation counters striped by key hash. An invalidation bumps the key's stripe; a load
/// snapshots it before calling the source and discards its write if it moved. Collisions
/// only cost a discarded fill, never a stale value.
pub(crate) struct Generations {
    stripes: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
}

const STRIPES: usize = 256;

impl Generations {
    pub fn new() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: Default::default(),
        }
    }

    fn stripe(&self, key: &str) -> &AtomicU64 {
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        &self.stripes[(std::hash::Hasher::finish(&h) as usize) % STRIPES]
    }

    /// The current generation of `key`.
    pub fn of(&self, key: &str) -> u64 {
        self.stripe(key).load(SeqCst)
    }

    /// Moves `key`'s generation on; returns the new one.
    pub fn bump(&self, key: &str) -> u64 {
        self.stripe(key).fetch_add(1, SeqCst) + 1
    }

    /// Moves `key`'s generation from `expected` to the next one, unless something else
    /// moved it first (an invalidation, another put); returns the new generation.
    pub fn advance(&self, key: &str, expected: u64) -> Option<u64> {
        self.stripe(key)
            .compare_exchange(expected, expected + 1, SeqCst, SeqCst)
            .ok()
            .map(|g| g + 1)
    }

    /// Moves every stripe on (used when every key is dropped at once).
    pub fn bump_all(&self) {
        for s in self.stripes.iter() {
            s.fetch_add(1, SeqCst);
        }
    }
}

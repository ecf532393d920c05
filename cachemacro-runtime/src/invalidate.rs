//! Invalidation state shared by every engine in the process: per-key generation stripes that
//! let an invalidation win over a load in flight, and the tag clock that makes
//! `invalidate_tag` O(1) for writers and one atomic load for readers.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{OnceLock, RwLock};

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

    /// Moves every stripe on (used when every key is dropped at once).
    pub fn bump_all(&self) {
        for s in self.stripes.iter() {
            s.fetch_add(1, SeqCst);
        }
    }
}

/// The process's tag clock. `invalidate(tag)` records the tag at a new epoch; an entry
/// whose load started at epoch `s` is valid while every one of its tags was last
/// invalidated at or before `s`.
pub(crate) struct TagClock {
    epoch: AtomicU64,
    invalidated: RwLock<HashMap<String, u64>>,
}

impl TagClock {
    pub fn epoch(&self) -> u64 {
        self.epoch.load(SeqCst)
    }

    pub fn invalidate(&self, tag: &str) {
        let mut map = self.invalidated.write().unwrap_or_else(|e| e.into_inner());
        let e = self.epoch.fetch_add(1, SeqCst) + 1;
        map.insert(tag.to_owned(), e);
    }

    pub fn any_invalidated_after(&self, tags: &[String], stamp: u64) -> bool {
        let map = self.invalidated.read().unwrap_or_else(|e| e.into_inner());
        tags.iter()
            .any(|t| map.get(t.as_str()).is_some_and(|&e| e > stamp))
    }
}

pub(crate) fn tags() -> &'static TagClock {
    static CLOCK: OnceLock<TagClock> = OnceLock::new();
    CLOCK.get_or_init(|| TagClock {
        epoch: AtomicU64::new(0),
        invalidated: RwLock::new(HashMap::new()),
    })
}

//! The in-process tier: a bounded, sharded S3-FIFO cache (quick_cache) of entries.
//!
//! Why quick_cache and not moka: a hit must cost well under the `cached` crate's (see
//! docs/BENCHMARKS.md), and moka's bare `get` alone costs more than that budget on the
//! project's machine; quick_cache's costs about a sixth of it. Its S3-FIFO policy also keeps
//! hot keys through one-time scans at least as well as moka's TinyLFU (hit-ratio bench).

use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::{Lifecycle, UnitWeighter};

use crate::entry::Entry;

/// Called once per entry pushed out by the capacity bound.
type OnEvict = Arc<dyn Fn() + Send + Sync>;

/// Collects the keys an insert pushed out. quick_cache reports a same-key replacement
/// through the same hook as an eviction; the store tells them apart by key.
#[derive(Clone, Copy)]
struct Collect;

impl<V> Lifecycle<String, V> for Collect {
    type RequestState = Vec<String>;

    fn on_evict(&self, evicted: &mut Vec<String>, key: String, _: V) {
        evicted.push(key);
    }
}

type Inner<V> =
    Cache<String, Arc<Entry<V>>, UnitWeighter, quick_cache::DefaultHashBuilder, Collect>;

/// A bounded map from key to entry.
pub(crate) struct MemoryStore<V> {
    cache: Inner<V>,
    on_evict: OnEvict,
}

impl<V: Send + Sync + 'static> MemoryStore<V> {
    pub fn new(capacity: u64, on_evict: OnEvict) -> Self {
        let items = usize::try_from(capacity).unwrap_or(usize::MAX).min(1 << 24);
        Self {
            cache: Cache::with(items, capacity, UnitWeighter, Default::default(), Collect),
            on_evict,
        }
    }

    #[inline]
    pub fn get(&self, key: &str) -> Option<Arc<Entry<V>>> {
        self.cache.get(key)
    }

    pub fn insert(&self, key: String, entry: Arc<Entry<V>>) {
        let mut evicted = Vec::new();
        self.cache
            .insert_with_lifecycle(key.clone(), entry, &mut evicted);
        for _ in evicted.iter().filter(|k| **k != key) {
            (self.on_evict)();
        }
    }

    pub fn remove(&self, key: &str) {
        self.cache.remove(key);
    }

    /// Removes `key` only while it still maps to `entry` (not a newer one).
    pub fn remove_entry(&self, key: &str, entry: &Arc<Entry<V>>) {
        self.cache.remove_if(key, |e| Arc::ptr_eq(e, entry));
    }

    pub fn clear(&self) {
        self.cache.clear();
    }

    #[allow(dead_code)]
    pub fn len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn entry(v: u32) -> Arc<Entry<u32>> {
        let now = tokio::time::Instant::now();
        Arc::new(Entry {
            value: v,
            soft: None,
            hard: now,
            delta: Default::default(),
            tags: None,
        })
    }

    #[test]
    fn replacing_is_not_evicting() {
        let evicted = Arc::new(AtomicU64::new(0));
        let e = evicted.clone();
        let store = MemoryStore::new(
            10_000,
            Arc::new(move || {
                e.fetch_add(1, Ordering::SeqCst);
            }),
        );
        store.insert("a".into(), entry(1));
        store.insert("a".into(), entry(2));
        store.insert("b".into(), entry(1));
        store.remove("a");
        store.insert("a".into(), entry(3));
        assert_eq!(evicted.load(Ordering::SeqCst), 0);
        for i in 0..20_000 {
            store.insert(i.to_string(), entry(i));
        }
        assert!(store.len() <= 10_000);
        assert!(evicted.load(Ordering::SeqCst) >= 10_000);
    }
}

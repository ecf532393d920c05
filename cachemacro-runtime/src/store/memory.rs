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

/// Called with the number of entries pushed out by the capacity bound.
type OnEvict = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone)]
struct EvictionHook(OnEvict);

impl<K, V> Lifecycle<K, V> for EvictionHook {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _: K, _: V) {
        (self.0)();
    }
}

type Inner<V> =
    Cache<String, Arc<Entry<V>>, UnitWeighter, quick_cache::DefaultHashBuilder, EvictionHook>;

/// A bounded map from key to entry.
pub(crate) struct MemoryStore<V> {
    cache: Inner<V>,
}

impl<V: Send + Sync + 'static> MemoryStore<V> {
    pub fn new(capacity: u64, on_evict: OnEvict) -> Self {
        let items = usize::try_from(capacity).unwrap_or(usize::MAX).min(1 << 24);
        Self {
            cache: Cache::with(
                items,
                capacity,
                UnitWeighter,
                Default::default(),
                EvictionHook(on_evict),
            ),
        }
    }

    #[inline]
    pub fn get(&self, key: &str) -> Option<Arc<Entry<V>>> {
        self.cache.get(key)
    }

    pub fn insert(&self, key: String, entry: Arc<Entry<V>>) {
        self.cache.insert(key, entry);
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

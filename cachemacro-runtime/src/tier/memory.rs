//! The in-process tier (L1): a bounded, sharded S3-FIFO cache (quick_cache) of entries,
//! stored inline under their rendered keys, or, for a function whose key holds only
//! integers, under those integers packed (a hit then renders nothing).
//!
//! Why quick_cache and not moka: a hit must cost well under the `cached` crate's (see
//! docs/BENCHMARKS.md), and moka's bare `get` alone costs more than that budget on the
//! project's machine; quick_cache's costs about a sixth of it. Its S3-FIFO policy also keeps
//! hot keys through one-time scans at least as well as moka's TinyLFU (hit-ratio bench).
//! It runs with sharded read locks, so concurrent hits on different threads write no shared
//! memory (a plain reader-writer lock would write its lock word on every hit).
//!
//! Keys are `CompactString`s (inline up to 24 bytes: most keys cost no allocation), and an
//! entry is its value and four words (deadlines, δ, tags), not a separate allocation.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Lifecycle, UnitWeighter};

use crate::entry::Entry;
use crate::key::{Key, Packer, Probe};

/// A key as L1 stores it: its rendered bytes, or (a function whose key holds only integer
/// arguments) those integers packed ([`crate::key::Probe::Packed`]). It hashes as its bytes or its
/// two words, so a look-up needs only what a call wrote on its stack ([`Probe`]: no
/// `String`, no UTF-8 check). One store holds keys of one kind only: its function's.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    Text(Key),
    Packed([u64; 2]),
}

impl Stored {
    #[inline(always)]
    fn probe(&self) -> Probe<'_> {
        match self {
            Stored::Text(k) => Probe::Bytes(k.as_bytes()),
            Stored::Packed(p) => Probe::Packed(*p),
        }
    }

    fn len(&self) -> usize {
        match self {
            Stored::Text(k) => k.len(),
            Stored::Packed(_) => 16,
        }
    }
}

impl Hash for Stored {
    #[inline(always)]
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.probe().hash(h)
    }
}

impl Hash for Probe<'_> {
    #[inline(always)]
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            // The bytes alone, no length prefix: a key is the only thing hashed.
            Probe::Bytes(b) => h.write(b),
            // Both words through the (seeded) hasher: folding them first would let chosen
            // integers share a hash whatever the seed.
            Probe::Packed([a, b]) => {
                h.write_u64(*a);
                h.write_u64(*b);
            }
        }
    }
}

impl Equivalent<Stored> for Probe<'_> {
    #[inline(always)]
    fn equivalent(&self, stored: &Stored) -> bool {
        match (self, stored) {
            (Probe::Packed(p), Stored::Packed(s)) => p == s,
            (Probe::Bytes(b), Stored::Text(s)) => *b == s.as_bytes(),
            _ => false,
        }
    }
}

/// Called once per entry pushed out by the capacity bound.
type OnEvict = Arc<dyn Fn() + Send + Sync>;

/// The bytes a value occupies, when its type can say (`CacheSize`).
pub(crate) type Sizer<V> = fn(&V) -> usize;

/// Collects the keys an insert pushed out, with the bytes they held. quick_cache reports a
/// same-key replacement through the same hook as an eviction; the store tells them apart
/// by key.
struct Collect<V>(Option<Sizer<V>>);

impl<V> Clone for Collect<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for Collect<V> {}

impl<V> Collect<V> {
    fn bytes(&self, key: &Stored, entry: &Entry<V>) -> i64 {
        self.0.map_or(0, |size| {
            i64::try_from(key.len() + size(&entry.value)).unwrap_or(i64::MAX)
        })
    }
}

impl<V> Lifecycle<Stored, Entry<V>> for Collect<V> {
    type RequestState = Vec<(Stored, i64)>;

    fn on_evict(&self, evicted: &mut Vec<(Stored, i64)>, key: Stored, entry: Entry<V>) {
        let bytes = self.bytes(&key, &entry);
        evicted.push((key, bytes));
    }
}

type Inner<V> = Cache<Stored, Entry<V>, UnitWeighter, quick_cache::DefaultHashBuilder, Collect<V>>;

/// A bounded map from key to entry.
pub(crate) struct MemoryStore<V> {
    cache: Inner<V>,
    on_evict: OnEvict,
    collect: Collect<V>,
    /// Set for a function whose keys are packed: how a rendered key becomes its packed form.
    packer: Option<Packer>,
    /// Bytes of the keys and values held (values as `CacheSize` counts them), when the
    /// value type can say; a gauge (momentarily off by the inserts in progress).
    bytes: AtomicI64,
}

impl<V: Clone + Send + Sync + 'static> MemoryStore<V> {
    pub fn new(
        capacity: u64,
        on_evict: OnEvict,
        sizer: Option<Sizer<V>>,
        packer: Option<Packer>,
    ) -> Self {
        let items = usize::try_from(capacity).unwrap_or(usize::MAX).min(1 << 24);
        let collect = Collect(sizer);
        Self {
            cache: Cache::with(items, capacity, UnitWeighter, Default::default(), collect),
            on_evict,
            collect,
            packer,
            bytes: AtomicI64::new(0),
        }
    }

    /// How `key` is looked for: `None` if this store cannot hold it (a packed store, and a
    /// string its function could not have rendered).
    #[inline]
    fn at<'k>(&self, key: &'k str) -> Option<Probe<'k>> {
        match self.packer {
            None => Some(Probe::Bytes(key.as_bytes())),
            Some(pack) => pack(key).map(Probe::Packed),
        }
    }

    /// The bytes held, if the value type can say (see [`MemoryStore::bytes`]).
    pub fn bytes(&self) -> Option<u64> {
        self.collect
            .0
            .map(|_| u64::try_from(self.bytes.load(Relaxed)).unwrap_or(0))
    }

    fn removed(&self, gone: Option<(Stored, Entry<V>)>) -> Option<(Stored, Entry<V>)> {
        if let Some((key, entry)) = &gone {
            if self.collect.0.is_some() {
                self.bytes
                    .fetch_sub(self.collect.bytes(key, entry), Relaxed);
            }
        }
        gone
    }

    /// A copy of the entry under `key` (its value cloned).
    #[inline]
    pub fn get(&self, key: &str) -> Option<Entry<V>> {
        self.get_probe(self.at(key)?)
    }

    /// [`MemoryStore::get`] by what a call wrote on its stack. A rendered key given to a
    /// packed store (a call that renders anyway, as `<fn>_many`'s) is packed first.
    #[inline]
    pub fn get_probe(&self, key: Probe<'_>) -> Option<Entry<V>> {
        match (key, self.packer) {
            (Probe::Bytes(b), Some(_)) => self.get(std::str::from_utf8(b).ok()?),
            _ => self.cache.get(&key),
        }
    }

    pub fn insert(&self, key: Key, entry: Entry<V>) {
        let key = match self.at(&key) {
            Some(Probe::Packed(packed)) => Stored::Packed(packed),
            Some(Probe::Bytes(_)) => Stored::Text(key),
            None => {
                // Never for a key of this function's own template (tested for every
                // integer type at its extremes); kept out of L1 rather than mis-filed.
                debug_assert!(false, "a packed function's key {key:?} does not pack");
                return;
            }
        };
        let mut evicted = Vec::new();
        let added = self.collect.bytes(&key, &entry);
        self.cache
            .insert_with_lifecycle(key.clone(), entry, &mut evicted);
        if self.collect.0.is_some() {
            let gone: i64 = evicted.iter().map(|(_, b)| b).sum();
            self.bytes.fetch_add(added - gone, Relaxed);
        }
        for _ in evicted.iter().filter(|(k, _)| *k != key) {
            (self.on_evict)();
        }
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&self, key: &str) -> bool {
        let Some(at) = self.at(key) else {
            return false;
        };
        self.removed(self.cache.remove(&at)).is_some()
    }

    /// Removes `key` only while it still holds `entry` (not a newer one; entries are told
    /// apart by their hard deadline: mistaking one for another only costs a refill).
    pub fn remove_entry(&self, key: &str, entry: &Entry<V>) {
        self.remove_hard(key, entry.hard);
    }

    /// Removes `key` only while its entry has this hard deadline.
    pub fn remove_hard(&self, key: &str, hard: u64) {
        if let Some(at) = self.at(key) {
            self.removed(self.cache.remove_if(&at, |e| e.hard == hard));
        }
    }

    pub fn clear(&self) {
        self.cache.clear();
        self.bytes.store(0, Relaxed);
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    fn entry(v: u32) -> Entry<u32> {
        Entry::new(v, 0, None, Duration::from_secs(1), Duration::ZERO, None)
    }

    #[test]
    fn packed_keys_do_not_share_a_hash_by_construction() {
        // Review finding: folding the two words into one before hashing let anyone who
        // chooses both integers make keys collide (`(x ^ rotl(y, 29), y)`), whatever the
        // hasher's seed.
        use std::hash::BuildHasher;
        let hasher = quick_cache::DefaultHashBuilder::default();
        let mut seen = std::collections::HashSet::new();
        for i in 1..10_000u64 {
            let h = hasher.hash_one(Probe::Packed([i.rotate_left(29), i]));
            assert!(seen.insert(h), "pair {i} collides");
            let neg = hasher.hash_one(Probe::Packed([(-(i as i128)) as u64, u64::MAX]));
            let pos = hasher.hash_one(Probe::Packed([i - 1, 0]));
            assert_ne!(neg, pos, "-{i} and {} as i128", i - 1);
        }
    }

    /// The packer of a template `n:<n>` with `n: u64`, for the tests.
    fn pack(key: &str) -> Option<[u64; 2]> {
        Some([key.strip_prefix("n:")?.parse().ok()?, 0])
    }

    #[test]
    fn a_packed_store_answers_a_probe_by_rendered_bytes_too() {
        let store = MemoryStore::new(100, Arc::new(|| {}), None, Some(pack));
        store.insert("n:5".into(), entry(5));
        assert_eq!(
            store.get_probe(Probe::Bytes(b"n:5")).map(|e| e.value),
            Some(5)
        );
        assert!(store.get_probe(Probe::Bytes(b"x:5")).is_none());
        let text = MemoryStore::new(100, Arc::new(|| {}), None, None);
        text.insert("n:5".into(), entry(5));
        assert!(text.get_probe(Probe::Packed([5, 0])).is_none());
    }

    #[test]
    fn a_packed_key_costs_no_more_than_a_rendered_one() {
        assert_eq!(std::mem::size_of::<Stored>(), std::mem::size_of::<Key>());
    }

    #[test]
    fn a_packed_store_finds_entries_by_their_rendered_keys() {
        let store = MemoryStore::new(100, Arc::new(|| {}), None, Some(pack));
        store.insert("n:5".into(), entry(5));
        assert_eq!(
            store.get_probe(Probe::Packed([5, 0])).map(|e| e.value),
            Some(5)
        );
        assert_eq!(store.get("n:5").map(|e| e.value), Some(5));
        assert!(store.get("n:6").is_none());
        assert!(
            !store.remove("other:5"),
            "a key this function cannot render"
        );
        store.remove_hard("n:5", 0);
        assert!(store.get("n:5").is_some(), "another entry's deadline");
        assert!(store.remove("n:5"));
        assert!(store.get_probe(Probe::Packed([5, 0])).is_none());
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
            None,
            None,
        );
        store.insert("a".into(), entry(1));
        store.insert("a".into(), entry(2));
        store.insert("b".into(), entry(1));
        store.remove("a");
        store.insert("a".into(), entry(3));
        assert_eq!(evicted.load(Ordering::SeqCst), 0);
        for i in 0..20_000 {
            store.insert(i.to_string().into(), entry(i));
        }
        assert!(store.len() <= 10_000);
        assert!(evicted.load(Ordering::SeqCst) >= 10_000);
        assert_eq!(store.bytes(), None, "u32 says nothing of its size here");
    }

    #[test]
    fn bytes_follow_inserts_replacements_removals_and_evictions() {
        #[allow(clippy::ptr_arg)] // a sizer takes the value type, here `String`
        fn size(v: &String) -> usize {
            v.len()
        }
        let store: MemoryStore<String> = MemoryStore::new(100, Arc::new(|| {}), Some(size), None);
        let e = |v: &str| {
            Entry::new(
                v.to_owned(),
                0,
                None,
                Duration::from_secs(1),
                Duration::ZERO,
                None,
            )
        };
        store.insert("a".into(), e("1234"));
        assert_eq!(store.bytes(), Some(5));
        store.insert("a".into(), e("12"));
        assert_eq!(store.bytes(), Some(3), "a replacement counts once");
        store.insert("bb".into(), e("123"));
        assert_eq!(store.bytes(), Some(8));
        store.remove("a");
        assert_eq!(store.bytes(), Some(5));
        for i in 0..1_000 {
            store.insert(format!("{i:04}").into(), e("x"));
        }
        let held = store.len() as u64;
        assert!(held <= 100);
        assert_eq!(store.bytes(), Some(held * 5), "evictions subtracted");
        store.clear();
        assert_eq!(store.bytes(), Some(0));
    }
}

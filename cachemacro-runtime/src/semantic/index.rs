//! One scope's stored prompts, searched exactly: every live vector is compared with the
//! query (a dot product of normalised vectors). Bounded: past `max_entries` the prompt hit
//! least recently goes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::embed::cosine;
use crate::entry::TagStamp;

/// An entry's id: FNV-1a of the model's id and the prompt (a prompt stored again by any
/// process replaces its entry).
pub(crate) fn entry_id(model: &str, prompt: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in model.bytes().chain([0]).chain(prompt.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A stored prompt: its vector and its answer.
pub(crate) struct Item<V> {
    /// Its id in a shared tier (see [`entry_id`]).
    pub id: u64,
    pub prompt: Box<str>,
    pub vector: Box<[f32]>,
    /// The embedder that made `vector` (vectors of different models are never compared).
    pub model: Arc<str>,
    pub value: V,
    /// When it expires, on the cache's clock.
    pub hard: u64,
    pub tags: Option<Arc<TagStamp>>,
    /// When it was last returned (or stored), on the cache's clock.
    pub used: AtomicU64,
}

impl<V> Item<V> {
    fn live(&self, now: u64) -> bool {
        now < self.hard && self.tags.as_ref().is_none_or(|t| t.valid())
    }
}

/// One scope: its prompts, and a generation that an invalidation moves (a load that began
/// before it does not store its answer).
pub(crate) struct Scope<V> {
    items: Vec<Item<V>>,
    pub generation: u64,
    /// When the scope was last looked up, on the cache's clock (the scope map's eviction).
    pub used: AtomicU64,
    /// With a shared tier: whether the scope's entries there were read into this index
    /// since it was last emptied (until then it is not looked in).
    pub loaded: bool,
    /// Held while the scope is read from the shared tier (one reader at a time).
    pub load: Arc<tokio::sync::Mutex<()>>,
    /// Counts the changes of single entries other processes announced (see `touched`).
    pub seq: u64,
    /// The entries with an announced change whose read is under way, and the `seq` of the
    /// latest announcement: a read of the entry (or of the whole scope) begun before it is
    /// not applied over it.
    pub touched: HashMap<u64, u64>,
}

impl<V> Default for Scope<V> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            generation: 0,
            used: AtomicU64::new(0),
            loaded: false,
            load: Default::default(),
            seq: 0,
            touched: HashMap::new(),
        }
    }
}

/// The best live match of a look-up.
pub(crate) struct Nearest {
    pub index: usize,
    pub score: f32,
}

impl<V> Scope<V> {
    /// Items stored (live or not yet dropped).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The item a look-up found.
    pub fn item(&self, index: usize) -> &Item<V> {
        &self.items[index]
    }

    /// Drops every item (the scope's generation is the caller's); returns how many.
    pub fn clear(&mut self) -> usize {
        let n = self.items.len();
        self.items.clear();
        self.touched.clear();
        n
    }

    /// Drops the items `gone` says; returns how many.
    pub fn remove_where(&mut self, mut gone: impl FnMut(&Item<V>) -> bool) -> usize {
        let before = self.items.len();
        self.items.retain(|i| !gone(i));
        before - self.items.len()
    }

    /// The live item most similar to `query` among those made by `model`.
    pub fn nearest(&self, query: &[f32], model: &str, now: u64) -> Option<Nearest> {
        let mut best: Option<Nearest> = None;
        for (index, item) in self.items.iter().enumerate() {
            if &*item.model != model || item.vector.len() != query.len() || !item.live(now) {
                continue;
            }
            let score = cosine(query, &item.vector);
            if score.is_nan() {
                continue;
            }
            if best.as_ref().is_none_or(|b| score > b.score) {
                best = Some(Nearest { index, score });
            }
        }
        best
    }

    /// Stores `item` (replacing a stored item of the same prompt and model), first dropping
    /// what expired, then, past `max`, the items used least recently. Returns how many
    /// items were evicted for room (expired ones are not counted), and the change in the
    /// number of items.
    pub fn insert(&mut self, item: Item<V>, max: usize, now: u64) -> (u64, i64) {
        let before = self.items.len() as i64;
        self.items.retain(|i| i.live(now));
        if let Some(same) = self
            .items
            .iter_mut()
            .find(|i| i.prompt == item.prompt && i.model == item.model)
        {
            *same = item;
            return (0, self.items.len() as i64 - before);
        }
        let mut evicted = 0;
        while self.items.len() >= max.max(1) {
            let oldest = self
                .items
                .iter()
                .enumerate()
                .min_by_key(|(_, i)| i.used.load(Relaxed))
                .map(|(n, _)| n);
            match oldest {
                Some(n) => {
                    self.items.swap_remove(n);
                    evicted += 1;
                }
                None => break,
            }
        }
        self.items.push(item);
        (evicted, self.items.len() as i64 - before)
    }
}

/// For `benches/semantic_pairs.rs` only, not API: one scope's exact search, filled in bulk.
#[doc(hidden)]
pub struct BenchScope(Scope<u32>, Arc<str>);

impl Default for BenchScope {
    fn default() -> Self {
        Self(Scope::default(), Arc::from("bench"))
    }
}

impl BenchScope {
    /// Stores `vector` as the answer `n` (no bound).
    pub fn push(&mut self, vector: Vec<f32>, n: u32) {
        self.0.items.push(Item {
            id: u64::from(n),
            prompt: n.to_string().into(),
            vector: vector.into_boxed_slice(),
            model: self.1.clone(),
            value: n,
            hard: u64::MAX,
            tags: None,
            used: AtomicU64::new(0),
        });
    }

    /// The nearest stored vector: its answer and score.
    pub fn nearest(&self, query: &[f32]) -> Option<(u32, f32)> {
        self.0
            .nearest(query, &self.1, 0)
            .map(|n| (self.0.items[n.index].value, n.score))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(prompt: &str, v: [f32; 2], used: u64) -> Item<u32> {
        Item {
            id: 0,
            prompt: prompt.into(),
            vector: Box::new(v),
            model: Arc::from("m"),
            value: 1,
            hard: 100,
            tags: None,
            used: AtomicU64::new(used),
        }
    }

    #[test]
    fn nearest_skips_expired_items_and_other_models_and_eviction_keeps_the_recent() {
        let mut s = Scope::default();
        s.insert(item("a", [1.0, 0.0], 1), 2, 0);
        s.insert(item("b", [0.0, 1.0], 2), 2, 0);
        let n = s.nearest(&[0.6, 0.8], "m", 0).unwrap();
        assert_eq!(&*s.items[n.index].prompt, "b");
        assert!((n.score - 0.8).abs() < 1e-6);
        assert!(s.nearest(&[0.6, 0.8], "other", 0).is_none());
        assert!(s.nearest(&[0.6, 0.8], "m", 100).is_none(), "expired");
        // Full: the least recently used ("a") goes.
        let (evicted, _) = s.insert(item("c", [0.6, 0.8], 3), 2, 0);
        assert_eq!(evicted, 1);
        let prompts: Vec<_> = s.items.iter().map(|i| &*i.prompt).collect();
        assert!(prompts.contains(&"b") && prompts.contains(&"c"));
        // The same prompt replaces.
        let (evicted, grew) = s.insert(item("c", [1.0, 0.0], 4), 2, 0);
        assert_eq!((evicted, grew), (0, 0));
    }
}

//! One scope's stored prompts, searched by the dot product of normalised vectors: exactly
//! (every live vector is compared with the query) while the scope is small, through an
//! approximate index (an HNSW graph, see `ann.rs`) from [`ANN_FROM`] items on, its few
//! nearest candidates then re-scored exactly. Bounded: past `max_entries` the prompt hit
//! least recently goes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::ann::Graph;
use super::embed::cosine;
use crate::entry::TagStamp;

/// From this many items a scope is searched through an HNSW graph (and below half of it,
/// exactly again). The crossover measured by `benches/semantic_pairs.rs -- lookup`
/// (docs/BENCHMARKS.md, 384 values): the graph's search is slower than the exact one at
/// 10k prompts (0.6–0.7×), 1.5× faster at 20k clustered prompts (0.9× at 20k random ones),
/// 1.6–3.2× at 50k, 6–14× at 100k.
pub(crate) const ANN_FROM: usize = 20_000;

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
    /// The approximate index, while the scope is large (its items of one model and
    /// dimension), once built.
    graph: Option<Graph>,
    /// A graph being built (on a thread of its own) to take its place.
    next: Option<Graph>,
    /// The size from which the graph is built ([`ANN_FROM`]; tests and the bench set others).
    ann_from: usize,
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
    /// While the scope is not loaded: the entries such a read applied, and its `seq`: a read
    /// of the whole scope begun before it does not put back what it replaced or removed.
    pub applied: HashMap<u64, u64>,
}

impl<V> Default for Scope<V> {
    fn default() -> Self {
        Self::with_ann_from(ANN_FROM)
    }
}

/// The best live match of a look-up.
pub(crate) struct Nearest {
    pub index: usize,
    pub score: f32,
}

impl<V> Scope<V> {
    /// An empty scope that builds its graph from `n` items on (`usize::MAX`: never).
    pub(crate) fn with_ann_from(n: usize) -> Self {
        Self {
            items: Vec::new(),
            graph: None,
            next: None,
            ann_from: n,
            generation: 0,
            used: AtomicU64::new(0),
            loaded: false,
            load: Default::default(),
            seq: 0,
            touched: HashMap::new(),
            applied: HashMap::new(),
        }
    }

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
        self.applied.clear();
        self.graph = None;
        self.next = None;
        n
    }

    /// Drops the items `gone` says; returns how many.
    pub fn remove_where(&mut self, mut gone: impl FnMut(&Item<V>) -> bool) -> usize {
        let before = self.items.len();
        self.retain(|i| !gone(i));
        self.maintain(None);
        before - self.items.len()
    }

    /// The live item most similar to `query` among those made by `model` (through the graph
    /// when the scope has one for `model`: the best of its few nearest candidates).
    pub fn nearest(&self, query: &[f32], model: &str, now: u64) -> Option<Nearest> {
        if let Some(graph) = self.graph.as_ref().filter(|g| g.admits(model, query)) {
            let candidates = graph
                .search(query)
                .filter_map(|index| self.items.get(index).map(|item| (index, item)));
            if let Some(found) = best(candidates, query, model, now) {
                return Some(found);
            }
            // No candidate is live (they expired since the last store, say): whether any
            // other item is, only the exact scan can tell.
        }
        best(self.items.iter().enumerate(), query, model, now)
    }

    /// Stores `item` (replacing a stored item of the same prompt and model), first dropping
    /// what expired, then, past `max`, the items used least recently. Returns how many
    /// items were evicted for room (expired ones are not counted), and the change in the
    /// number of items.
    pub fn insert(&mut self, item: Item<V>, max: usize, now: u64) -> (u64, i64) {
        let before = self.items.len() as i64;
        self.retain(|i| i.live(now));
        let model = item.model.clone();
        if let Some(same) = self
            .items
            .iter()
            .position(|i| i.prompt == item.prompt && i.model == item.model)
        {
            for g in self.graph.iter_mut().chain(self.next.iter_mut()) {
                g.replace(same, &item.model, &item.vector);
            }
            self.items[same] = item;
            self.maintain(Some(&model));
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
                    self.remove(n);
                    evicted += 1;
                }
                None => break,
            }
        }
        self.push(item);
        self.maintain(Some(&model));
        (evicted, self.items.len() as i64 - before)
    }

    /// Stores many items at once (a scope read whole from a shared tier), as [`Self::insert`]
    /// one by one would (a stored prompt of the same model replaced; past `max`, the items
    /// used least recently go), in one pass: no graph insert per item (0.5–1 ms each past
    /// `ann_from`), the graph is dropped and built anew once, beside the scope.
    pub fn extend(&mut self, items: Vec<Item<V>>, max: usize, now: u64) -> (u64, i64) {
        let before = self.items.len() as i64;
        self.graph = None;
        self.next = None;
        self.items.retain(|i| i.live(now));
        let mut at: HashMap<u64, usize> = self
            .items
            .iter()
            .enumerate()
            .map(|(n, i)| (i.id, n))
            .collect();
        for item in items.into_iter().filter(|i| i.live(now)) {
            match at.get(&item.id) {
                Some(&n)
                    if self.items[n].prompt == item.prompt && self.items[n].model == item.model =>
                {
                    self.items[n] = item;
                }
                _ => {
                    at.insert(item.id, self.items.len());
                    self.items.push(item);
                }
            }
        }
        let max = max.max(1);
        let mut evicted = 0;
        if self.items.len() > max {
            self.items
                .sort_unstable_by_key(|i| std::cmp::Reverse(i.used.load(Relaxed)));
            evicted = (self.items.len() - max) as u64;
            self.items.truncate(max);
        }
        self.maintain(None);
        (evicted, self.items.len() as i64 - before)
    }

    /// Appends `item` (to the graphs too, those that admit it).
    fn push(&mut self, item: Item<V>) {
        for g in self.graph.iter_mut().chain(self.next.iter_mut()) {
            g.push(&item.model, &item.vector);
        }
        self.items.push(item);
    }

    /// Drops the item at `pos` (the last item takes its place; its point in a graph, a
    /// tombstone).
    fn remove(&mut self, pos: usize) {
        for g in self.graph.iter_mut().chain(self.next.iter_mut()) {
            g.swap_remove(pos);
        }
        self.items.swap_remove(pos);
    }

    /// Keeps the items `keep` says (not in their order).
    fn retain(&mut self, mut keep: impl FnMut(&Item<V>) -> bool) {
        // From the back: the item that `remove` moves into a freed place was already kept.
        for pos in (0..self.items.len()).rev() {
            if !keep(&self.items[pos]) {
                self.remove(pos);
            }
        }
    }

    /// After the items changed: takes the graph built meanwhile, if it is done; drops the
    /// graphs when the scope fell under half of `ann_from`; else, unless one is being built,
    /// starts building a graph when the scope reached `ann_from` items (for `latest`, the
    /// model of the item just stored), when a quarter of the graph's points are tombstones,
    /// or, for `latest`, when that model has more than twice the graph's items.
    fn maintain(&mut self, latest: Option<&Arc<str>>) {
        if self.next.as_ref().is_some_and(Graph::ready) {
            if let Some(mut next) = self.next.take() {
                if next.finish() {
                    self.graph = Some(next);
                }
            }
        }
        let n = self.items.len();
        if n < self.ann_from / 2 {
            self.graph = None;
            self.next = None;
            return;
        }
        if self.next.is_some() {
            return;
        }
        let model = match &self.graph {
            None if n >= self.ann_from && n > 0 => {
                latest.or(self.items.last().map(|i| &i.model)).cloned()
            }
            None => None,
            Some(g) => {
                let inside = g.points() - g.dead();
                let other = latest.filter(|m| ***m != **g.model());
                match other {
                    // Twice the graph's items: a scope that holds two models about equally
                    // does not build a graph at every store.
                    Some(m) if self.items.iter().filter(|i| i.model == *m).count() > 2 * inside => {
                        Some(m.clone())
                    }
                    _ if g.dead() * 4 > g.points() => Some(g.model().clone()),
                    _ => None,
                }
            }
        };
        if let Some(model) = model {
            self.start(model);
        }
    }

    /// Starts building a graph of every item of `model` (and of the dimension of its latest
    /// item).
    fn start(&mut self, model: Arc<str>) {
        let Some(dim) = self
            .items
            .iter()
            .rev()
            .find(|i| i.model == model)
            .map(|i| i.vector.len())
        else {
            return;
        };
        let items = self.items.iter().map(|i| (&*i.model, &*i.vector));
        self.next = Graph::start(model, dim, items);
    }

    /// Waits for the graph being built, and takes it.
    fn settle(&mut self) {
        if let Some(mut next) = self.next.take() {
            if next.finish() {
                self.graph = Some(next);
            }
        }
    }
}

/// The best of `items` for `query`: same model, same dimension, live, a score that is a
/// number.
fn best<'a, V: 'a>(
    items: impl Iterator<Item = (usize, &'a Item<V>)>,
    query: &[f32],
    model: &str,
    now: u64,
) -> Option<Nearest> {
    let mut best: Option<Nearest> = None;
    for (index, item) in items {
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

/// For `benches/semantic_pairs.rs` only, not API: one scope, filled in bulk, searched
/// exactly or through its graph.
#[doc(hidden)]
pub struct BenchScope(Scope<u32>, Arc<str>);

impl Default for BenchScope {
    fn default() -> Self {
        Self::exact()
    }
}

impl BenchScope {
    /// A scope searched exactly, whatever its size.
    pub fn exact() -> Self {
        Self(Scope::with_ann_from(usize::MAX), Arc::from("bench"))
    }

    /// A scope searched through its graph once [`BenchScope::build`] built it.
    pub fn approximate() -> Self {
        Self(Scope::with_ann_from(0), Arc::from("bench"))
    }

    /// Stores `vector` as the answer `n` (no bound; into the graph too, once built).
    pub fn push(&mut self, vector: Vec<f32>, n: u32) {
        self.0.push(Item {
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

    /// Builds the graph of every stored vector, as a scope does (on a thread of its own),
    /// and waits for it; no-op for an exact scope.
    pub fn build(&mut self) {
        if self.0.ann_from != usize::MAX {
            self.0.start(self.1.clone());
            self.0.settle();
        }
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

    /// A random unit vector of `dim` values.
    fn unit(rng: &mut fastrand::Rng, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    /// `v` moved to a cosine of about 0.9 with it.
    fn paraphrase(v: &[f32], rng: &mut fastrand::Rng) -> Vec<f32> {
        let noise = unit(rng, v.len());
        let w: Vec<f32> = v.iter().zip(&noise).map(|(a, b)| a + 0.48 * b).collect();
        let n = w.iter().map(|x| x * x).sum::<f32>().sqrt();
        w.into_iter().map(|x| x / n).collect()
    }

    fn stored(prompt: String, vector: Vec<f32>, model: &str, hard: u64) -> Item<u32> {
        Item {
            id: 0,
            value: prompt.parse().unwrap_or(0),
            prompt: prompt.into(),
            vector: vector.into_boxed_slice(),
            model: Arc::from(model),
            hard,
            tags: None,
            used: AtomicU64::new(0),
        }
    }

    /// The exact answer, whatever the scope's graph.
    fn exact(s: &Scope<u32>, q: &[f32], model: &str, now: u64) -> Option<Nearest> {
        best(s.items.iter().enumerate(), q, model, now)
    }

    /// A scope of `n` random unit vectors of `dim` (prompts "0".."n-1"), searched through
    /// its graph from 1,000 items on, the graph built.
    fn large(rng: &mut fastrand::Rng, n: usize, dim: usize) -> Scope<u32> {
        let mut s = Scope::with_ann_from(1_000);
        for i in 0..n {
            s.insert(
                stored(i.to_string(), unit(rng, dim), "m", 100),
                usize::MAX,
                0,
            );
        }
        s.settle();
        assert!(s.graph.is_some(), "built past the threshold");
        s
    }

    /// The graph really answers past the threshold: an item it was never told of (pushed
    /// behind its back), however near the query, is not what the graph path returns, while
    /// the exact scan finds it (review finding: the recall tests passed with the graph
    /// bypassed).
    #[test]
    fn past_the_threshold_the_graph_answers() {
        let mut rng = fastrand::Rng::with_seed(12);
        let mut s = large(&mut rng, 2_000, 32);
        let q = unit(&mut rng, 32);
        s.items.push(stored("hidden".into(), q.clone(), "m", 100));
        let hidden = s.items.len() - 1;
        assert_eq!(exact(&s, &q, "m", 0).unwrap().index, hidden);
        assert_ne!(s.nearest(&q, "m", 0).unwrap().index, hidden);
    }

    /// Many items at once: the same items as one by one (a replaced prompt, the least
    /// recently used gone past `max`), expired ones left out, and a graph built once.
    #[test]
    fn extend_stores_like_insert_and_builds_the_graph_once() {
        let mut rng = fastrand::Rng::with_seed(17);
        let mut s: Scope<u32> = Scope::with_ann_from(1_000);
        let mut items: Vec<Item<u32>> = (0..1_500)
            .map(|i| {
                let mut it = stored(i.to_string(), unit(&mut rng, 16), "m", 100);
                it.id = i as u64;
                it.used = AtomicU64::new(i as u64);
                it
            })
            .collect();
        let mut expired = stored("gone".into(), unit(&mut rng, 16), "m", 5);
        expired.id = 99_999;
        items.push(expired);
        let mut again = stored("7".into(), unit(&mut rng, 16), "m", 100);
        again.id = 7;
        again.used = AtomicU64::new(10_000);
        items.push(again);
        let (evicted, grew) = s.extend(items, 1_200, 10);
        assert_eq!((evicted, grew), (300, 1_200));
        assert!(s.items.iter().all(|i| &*i.prompt != "gone"));
        assert_eq!(s.items.iter().filter(|i| &*i.prompt == "7").count(), 1);
        assert!(
            s.items.iter().all(|i| i.used.load(Relaxed) >= 300),
            "the LRU went"
        );
        assert!(s.next.is_some(), "one build, beside the scope");
        s.settle();
        let probe = s.items[0].vector.to_vec();
        assert_eq!(
            s.nearest(&probe, "m", 10).unwrap().index,
            exact(&s, &probe, "m", 10).unwrap().index
        );
    }

    #[test]
    fn the_graph_finds_what_the_exact_search_finds() {
        let mut rng = fastrand::Rng::with_seed(13);
        let s = large(&mut rng, 3_000, 64);
        let (mut same, mut asked) = (0, 0);
        // Paraphrases of stored prompts (the case of a hit) and random vectors (the case of
        // a miss, where the nearest is barely nearer than the rest).
        let queries: Vec<Vec<f32>> = (0..200)
            .map(|i| {
                if i % 2 == 0 {
                    paraphrase(&s.items[rng.usize(..s.items.len())].vector, &mut rng)
                } else {
                    unit(&mut rng, 64)
                }
            })
            .collect();
        for q in &queries {
            let (a, e) = (s.nearest(q, "m", 0).unwrap(), exact(&s, q, "m", 0).unwrap());
            asked += 1;
            if a.index == e.index {
                same += 1;
                assert!((a.score - e.score).abs() < 1e-4);
            }
        }
        assert!(same * 100 >= asked * 95, "{same}/{asked} found");
    }

    #[test]
    fn removed_expired_and_other_models_items_are_never_returned() {
        let mut rng = fastrand::Rng::with_seed(14);
        let mut s = large(&mut rng, 1_500, 32);
        // An item that expires at 50, and one of another model on the same vector.
        let v = unit(&mut rng, 32);
        s.insert(stored("soon".into(), v.clone(), "m", 50), usize::MAX, 0);
        s.insert(stored("other".into(), v.clone(), "n", 100), usize::MAX, 0);
        let at = |s: &Scope<u32>, q: &[f32], model: &str, now: u64| {
            s.nearest(q, model, now)
                .map(|n| s.items[n.index].prompt.to_string())
        };
        assert_eq!(at(&s, &v, "m", 0).as_deref(), Some("soon"));
        // Expired (still in the graph: nothing was stored since).
        let later = at(&s, &v, "m", 60).unwrap();
        assert!(later != "soon" && later != "other");
        assert_eq!(
            s.nearest(&v, "m", 60).map(|n| n.index),
            exact(&s, &v, "m", 60).map(|n| n.index)
        );
        // Another model is never compared; its own queries find it (by the exact scan: the
        // graph is of "m").
        assert_eq!(at(&s, &v, "n", 0).as_deref(), Some("other"));
        // Removed: each of the three nearest of a query, one after another.
        let q = unit(&mut rng, 32);
        for _ in 0..3 {
            let gone = at(&s, &q, "m", 0).unwrap();
            assert_eq!(s.remove_where(|i| *i.prompt == *gone), 1);
            let now = at(&s, &q, "m", 0).unwrap();
            assert_ne!(now, gone);
            assert_eq!(
                s.nearest(&q, "m", 0).map(|n| n.index),
                exact(&s, &q, "m", 0).map(|n| n.index)
            );
        }
        // Replaced: the prompt's old vector is not found any more.
        let old = s
            .items
            .iter()
            .find(|i| *i.prompt == *"7")
            .unwrap()
            .vector
            .clone();
        s.insert(
            stored("7".into(), unit(&mut rng, 32), "m", 100),
            usize::MAX,
            0,
        );
        assert_ne!(at(&s, &old, "m", 0).as_deref(), Some("7"));
        // Every candidate dead (all expired): nothing, as the exact scan says.
        assert!(s.nearest(&q, "m", 100).is_none());
        // NaN queries and vectors of other dimensions: nothing either.
        assert!(s.nearest(&[f32::NAN; 32], "m", 0).is_none());
        assert!(s.nearest(&[1.0; 8], "m", 0).is_none());
    }

    #[test]
    fn a_graph_with_a_quarter_of_tombstones_is_built_anew_and_answers_alike() {
        let mut rng = fastrand::Rng::with_seed(15);
        let mut s = large(&mut rng, 2_000, 32);
        let queries: Vec<Vec<f32>> = (0..50).map(|_| unit(&mut rng, 32)).collect();
        // A third of the items go: a rebuild starts.
        let gone = s.remove_where(|i| i.value % 3 == 0);
        assert_eq!(gone, 667);
        assert!(s.next.is_some(), "a rebuild started");
        // Until it is done, the old graph answers (its tombstones passed over).
        for q in &queries {
            let n = s.nearest(q, "m", 0).unwrap();
            assert_ne!(s.items[n.index].value % 3, 0);
        }
        s.settle();
        let g = s.graph.as_ref().unwrap();
        assert_eq!((g.points(), g.dead()), (1_333, 0));
        let same = queries
            .iter()
            .filter(|q| {
                s.nearest(q, "m", 0).map(|n| n.index) == exact(&s, q, "m", 0).map(|n| n.index)
            })
            .count();
        assert!(same >= 47, "{same}/50");
        // Fewer than half the threshold: exact again.
        s.remove_where(|i| i.value >= 400);
        assert!(s.graph.is_none() && s.next.is_none());
        let q = &queries[0];
        assert_eq!(
            s.nearest(q, "m", 0).map(|n| n.index),
            exact(&s, q, "m", 0).map(|n| n.index)
        );
    }

    #[test]
    fn eviction_past_max_works_with_the_graph() {
        let mut rng = fastrand::Rng::with_seed(16);
        let mut s: Scope<u32> = Scope::with_ann_from(1_000);
        let max = 1_200;
        let mut vectors = Vec::new();
        let mut evicted = 0;
        for i in 0..2_000u64 {
            let v = unit(&mut rng, 32);
            vectors.push(v.clone());
            let mut item = stored(i.to_string(), v, "m", 100);
            item.used = AtomicU64::new(i);
            let (e, _) = s.insert(item, max, 0);
            evicted += e;
            if i == 1_100 {
                s.settle();
                assert!(s.graph.is_some());
            }
        }
        s.settle();
        assert_eq!(s.len(), max);
        assert_eq!(evicted, 800);
        assert!(s.graph.is_some());
        // The least recently used went: none of them is found, the kept ones are.
        for (i, v) in vectors.iter().enumerate().step_by(7) {
            let n = s.nearest(v, "m", 0).unwrap();
            if i < 800 {
                assert!(s.items[n.index].value >= 800);
            } else {
                assert_eq!(s.items[n.index].value as usize, i);
                assert!(n.score > 0.999);
            }
        }
        // The tombstones of 800 evictions were shed by rebuilds.
        let g = s.graph.as_ref().unwrap();
        assert!(g.dead() * 4 <= g.points(), "{} of {}", g.dead(), g.points());
    }
}

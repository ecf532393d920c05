//! The approximate index of a large scope: an HNSW graph (the `hnsw_rs` crate) over the
//! vectors of one model and dimension, kept in step with the scope's items: each item's
//! point, and each point's item position.
//!
//! hnsw_rs cannot delete a point: an item that goes leaves a tombstone (its point maps to
//! no item), and the scope builds a new graph when tombstones pass a quarter of the points.
//! A graph is built on a thread of its own while the scope goes on with the graph it has
//! (or its exact search); items stored meanwhile go into both.
//!
//! What hnsw_rs must never see, and does not: a negative or NaN distance (it asserts, or
//! panics sorting), a vector of another dimension (it does not check), more than 256 links
//! per point (it calls `std::process::exit`).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

use hnsw_rs::prelude::{Distance, Hnsw};

use super::embed::cosine;

/// Links kept per point and layer (layer 0 keeps twice as many). hnsw_rs exits the process
/// past 256.
const LINKS: usize = 16;
const _: () = assert!(LINKS <= 256);
/// Layers at most (hnsw_rs's own cap).
const LAYERS: usize = 16;
/// Candidates examined per layer while a point is inserted. (Links, build and search
/// candidates chosen on `benches/semantic_pairs.rs -- lookup` at 100k prompts of 384
/// values, docs/BENCHMARKS.md: 24 links and 64 build candidates found 2% more paraphrases
/// but cost 2.4 times as much to build and 3–10 times as much per store.)
const EF_BUILD: usize = 40;
/// Candidates examined in layer 0 by a search (64 found 95% of the paraphrases at 100k
/// clustered prompts, 128 found 98%, for 0.7 ms more).
const EF_SEARCH: usize = 128;
/// Nearest points a search returns; the scope re-scores them exactly and keeps the best
/// live one (more than one, so a few tombstones or expired items near the query are
/// passed over).
const CANDIDATES: usize = 8;
/// A point whose item has gone; an item that has no point.
const NONE: usize = usize::MAX;

/// Cosine distance of normalised vectors, `1 − a·b`, kept in `[0, f32::MAX]`: a vector
/// whose norm rounds above 1 would give a duplicate a distance a hair under zero, which
/// hnsw_rs asserts against; a NaN is never returned (hnsw_rs panics sorting it).
#[derive(Clone, Copy, Default)]
struct Dot;

impl Distance<f32> for Dot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let d = 1.0 - cosine(a, b);
        if d.is_nan() {
            f32::MAX
        } else {
            d.clamp(0.0, f32::MAX)
        }
    }
}

/// The thread that fills a graph being built.
struct Builder {
    thread: JoinHandle<()>,
    /// Set when the graph is dropped before it is done: the thread stops.
    stop: Arc<AtomicBool>,
}

/// One scope's graph: the vectors of one model and dimension.
pub(super) struct Graph {
    hnsw: Arc<Hnsw<'static, f32, Dot>>,
    /// The model whose vectors it holds.
    model: Arc<str>,
    /// Their dimension.
    dim: usize,
    /// By point id (handed out in order, never reused): the position of its item, or
    /// [`NONE`] (a tombstone).
    at: Vec<usize>,
    /// By item position, in step with the scope's items: the item's point id, or [`NONE`].
    ids: Vec<usize>,
    /// Tombstones.
    dead: usize,
    /// While the points there were when the build began are being inserted.
    builder: Option<Builder>,
}

impl Graph {
    /// Starts building the graph of `items` (each item's model and vector, in the scope's
    /// order) that are of `model` and `dim`, on a thread of its own; `None` if no thread
    /// could be started.
    pub fn start<'a>(
        model: Arc<str>,
        dim: usize,
        items: impl ExactSizeIterator<Item = (&'a str, &'a [f32])>,
    ) -> Option<Self> {
        let n = items.len();
        let mut graph = Self {
            hnsw: Arc::new(Hnsw::new(LINKS, n.max(1), LAYERS, EF_BUILD, Dot)),
            model,
            dim,
            at: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            dead: 0,
            builder: None,
        };
        let mut vectors: Vec<Vec<f32>> = Vec::new();
        for (pos, (model, vector)) in items.enumerate() {
            if graph.admits(model, vector) {
                graph.ids.push(graph.at.len());
                graph.at.push(pos);
                vectors.push(vector.to_vec());
            } else {
                graph.ids.push(NONE);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (hnsw, stopped) = (graph.hnsw.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("cachemacro-hnsw".into())
            .spawn(move || {
                for (id, v) in vectors.iter().enumerate() {
                    if stopped.load(Relaxed) {
                        return;
                    }
                    hnsw.insert((v, id));
                }
            })
            .ok()?;
        graph.builder = Some(Builder { thread, stop });
        Some(graph)
    }

    /// Whether the build is over (the graph can be searched).
    pub fn ready(&self) -> bool {
        self.builder.as_ref().is_none_or(|b| b.thread.is_finished())
    }

    /// Waits for the build; `false` if its thread panicked (the graph is then unusable).
    pub fn finish(&mut self) -> bool {
        match self.builder.take() {
            Some(b) => b.thread.join().is_ok(),
            None => true,
        }
    }

    /// Whether a vector of `model` goes in this graph (and a query of `model` is answered
    /// from it): its model and dimension, and finite.
    pub fn admits(&self, model: &str, vector: &[f32]) -> bool {
        *self.model == *model && vector.len() == self.dim && vector.iter().all(|x| x.is_finite())
    }

    /// The model whose vectors it holds.
    pub fn model(&self) -> &Arc<str> {
        &self.model
    }

    /// Points in the graph, tombstones included.
    pub fn points(&self) -> usize {
        self.at.len()
    }

    /// Tombstones.
    pub fn dead(&self) -> usize {
        self.dead
    }

    /// An item was appended to the scope.
    pub fn push(&mut self, model: &str, vector: &[f32]) {
        let pos = self.ids.len();
        self.ids.push(NONE);
        self.link(pos, model, vector);
    }

    /// The item at `pos` was replaced.
    pub fn replace(&mut self, pos: usize, model: &str, vector: &[f32]) {
        self.unlink(pos);
        self.link(pos, model, vector);
    }

    /// The item at `pos` was swap-removed (the last took its place).
    pub fn swap_remove(&mut self, pos: usize) {
        self.unlink(pos);
        if pos >= self.ids.len() {
            return;
        }
        self.ids.swap_remove(pos);
        if let Some(&id) = self.ids.get(pos) {
            if let Some(at) = self.at.get_mut(id) {
                *at = pos;
            }
        }
    }

    /// Gives the item at `pos` a point, if the graph admits it.
    fn link(&mut self, pos: usize, model: &str, vector: &[f32]) {
        if pos < self.ids.len() && self.admits(model, vector) {
            let id = self.at.len();
            self.at.push(pos);
            self.ids[pos] = id;
            self.hnsw.insert((vector, id));
        }
    }

    /// The item at `pos` leaves its point (a tombstone).
    fn unlink(&mut self, pos: usize) {
        let Some(id) = self.ids.get_mut(pos) else {
            return;
        };
        let id = std::mem::replace(id, NONE);
        if let Some(at) = self.at.get_mut(id) {
            *at = NONE;
            self.dead += 1;
        }
    }

    /// The positions of the items whose vectors are nearest `query` (one the graph
    /// [`admits`](Graph::admits)), approximately, nearest first; tombstones left out.
    pub fn search(&self, query: &[f32]) -> impl Iterator<Item = usize> + '_ {
        self.hnsw
            .search(query, CANDIDATES, EF_SEARCH)
            .into_iter()
            .filter_map(|n| self.at.get(n.d_id).copied())
            .filter(|&pos| pos != NONE)
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        if let Some(b) = &self.builder {
            b.stop.store(true, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_distance_is_never_negative_nor_nan() {
        let d = Dot;
        // A duplicate of norm a little above 1.
        let v = [0.600_001_f32, 0.800_001];
        assert_eq!(d.eval(&v, &v), 0.0);
        assert_eq!(d.eval(&[f32::NAN, 0.0], &[1.0, 0.0]), f32::MAX);
        assert_eq!(d.eval(&[f32::INFINITY], &[-1.0]), f32::MAX);
        assert_eq!(d.eval(&[f32::INFINITY], &[1.0]), 0.0);
        assert!((d.eval(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn ids_follow_the_items() {
        let m = "m";
        let v = |x: f32| [x, (1.0 - x * x).sqrt()];
        let items = [v(1.0), v(0.8), v(0.6)];
        let mut g = Graph::start(Arc::from(m), 2, items.iter().map(|x| (m, &x[..]))).unwrap();
        assert!(g.finish());
        // Another model, another dimension, a NaN: no point.
        g.push("other", &v(0.0));
        g.push(m, &[1.0]);
        g.push(m, &[f32::NAN, 0.0]);
        assert_eq!(g.points(), 3);
        // Item 0 goes: item 5 (the NaN, no point) takes its place, item 1 keeps its point.
        g.swap_remove(0);
        assert_eq!((g.points(), g.dead()), (3, 1));
        let found: Vec<usize> = g.search(&v(0.8)).collect();
        assert_eq!(found[0], 1);
        assert!(!found.contains(&0));
        // Item 2 replaced: a new point, the old one a tombstone.
        g.replace(2, m, &v(0.99));
        assert_eq!((g.points(), g.dead()), (4, 2));
        assert_eq!(g.search(&v(1.0)).next(), Some(2));
    }
}

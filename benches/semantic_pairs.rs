//! The semantic cache on real text (issue 13): hit rates by threshold on the labelled pairs
//! of `tests/data/semantic_pairs.jsonl`, through the cache itself (scopes, threshold, store),
//! with the real model; and the search's latency at 1k–100k stored prompts per
//! scope, exact and through the HNSW graph (with how often the two agree, and what the graph
//! costs to insert into and to rebuild), beside the model call a hit replaces.
//!
//! ```text
//! scripts/fetch-model.sh
//! cargo bench --bench semantic_pairs --features minilm            # both
//! cargo bench --bench semantic_pairs --features minilm -- pairs   # the hit rates only
//! cargo bench --bench semantic_pairs --features minilm -- lookup  # the latencies only
//! SEMANTIC_LOOKUP_SIZES=10000,50000 cargo bench --bench semantic_pairs --features minilm -- lookup  # other sizes
//! ```

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachemacro_runtime::cached;
use cachemacro_runtime::semantic::{set_embedder, BenchScope, EmbedError, Embedder, MiniLm};

/// The model, with every text embedded once (the pairs repeat many texts).
struct Memo {
    model: MiniLm,
    memo: Mutex<HashMap<String, Vec<f32>>>,
}

impl Embedder for Memo {
    fn id(&self) -> &str {
        self.model.id()
    }
    fn dim(&self) -> usize {
        self.model.dim()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let missing: Vec<&str> = {
            let memo = self.memo.lock().unwrap();
            texts
                .iter()
                .copied()
                .filter(|t| !memo.contains_key(*t))
                .collect()
        };
        if !missing.is_empty() {
            let vectors = self.model.embed(&missing)?;
            let mut memo = self.memo.lock().unwrap();
            for (t, v) in missing.iter().zip(vectors) {
                memo.insert((*t).to_owned(), v);
            }
        }
        let memo = self.memo.lock().unwrap();
        Ok(texts.iter().map(|t| memo[*t].clone()).collect())
    }
}

static LOADS: AtomicUsize = AtomicUsize::new(0);

macro_rules! at {
    ($name:ident, $t:expr) => {
        #[cached(ttl = "1h", semantic(on = q, threshold = $t), key = "pair<pair>:<tenant>")]
        async fn $name(pair: usize, tenant: &str, q: &str) -> String {
            LOADS.fetch_add(1, SeqCst);
            format!("{tenant}: {q}")
        }
    };
}
at!(at90, 0.90);
at!(at93, 0.93);
at!(at95, 0.95);
at!(at97, 0.97);

struct Pair {
    a: String,
    b: String,
    hit: bool,
    kind: String,
    tenant_a: String,
    tenant_b: String,
}

fn pairs() -> Vec<Pair> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/semantic_pairs.jsonl"
    ))
    .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_owned();
            Pair {
                a: s("a"),
                b: s("b"),
                hit: s("label") == "hit",
                kind: s("kind"),
                tenant_a: s("tenant_a"),
                tenant_b: s("tenant_b"),
            }
        })
        .collect()
}

fn run_pairs(rt: &tokio::runtime::Runtime) {
    let model = MiniLm::from_env().unwrap_or_else(|e| panic!("{e}"));
    let memo = Arc::new(Memo {
        model,
        memo: Mutex::new(HashMap::new()),
    });
    let pairs = pairs();
    // Every text embedded up front, in batches (the cache then finds them in the memo).
    let mut texts: Vec<&str> = pairs
        .iter()
        .flat_map(|p| [p.a.as_str(), p.b.as_str()])
        .collect();
    texts.sort();
    texts.dedup();
    let started = Instant::now();
    for chunk in texts.chunks(32) {
        memo.embed(chunk).unwrap();
    }
    println!(
        "{} pairs, {} distinct texts embedded in {:.1} s",
        pairs.len(),
        texts.len(),
        started.elapsed().as_secs_f64()
    );
    set_embedder(memo);
    println!("\n| threshold | paraphrase hits | near_miss_intent false hits | negation false hits | other_tenant false hits | unrelated false hits | all misses false hits |");
    println!("|---|---|---|---|---|---|---|");
    for (which, threshold) in [0.90, 0.93, 0.95, 0.97].into_iter().enumerate() {
        let mut by_kind: HashMap<&str, (usize, usize)> = HashMap::new();
        rt.block_on(async {
            for (i, p) in pairs.iter().enumerate() {
                let call = |tenant: &str, q: &str| {
                    let (tenant, q) = (tenant.to_owned(), q.to_owned());
                    async move {
                        match which {
                            0 => at90(i, &tenant, &q).await,
                            1 => at93(i, &tenant, &q).await,
                            2 => at95(i, &tenant, &q).await,
                            _ => at97(i, &tenant, &q).await,
                        }
                    }
                };
                call(&p.tenant_a, &p.a).await;
                let before = LOADS.load(SeqCst);
                call(&p.tenant_b, &p.b).await;
                let hit = LOADS.load(SeqCst) == before;
                let e = by_kind.entry(p.kind.as_str()).or_default();
                e.0 += usize::from(hit);
                e.1 += 1;
                let _ = p.hit;
            }
        });
        let cell = |k: &str| {
            let (h, n) = by_kind.get(k).copied().unwrap_or_default();
            format!("{h}/{n} ({:.1}%)", 100.0 * h as f64 / n.max(1) as f64)
        };
        let misses: (usize, usize) = by_kind
            .iter()
            .filter(|(k, _)| **k != "paraphrase")
            .fold((0, 0), |a, (_, v)| (a.0 + v.0, a.1 + v.1));
        println!(
            "| {threshold:.2} | {} | {} | {} | {} | {} | {}/{} ({:.1}%) |",
            cell("paraphrase"),
            cell("near_miss_intent"),
            cell("negation"),
            cell("other_tenant"),
            cell("unrelated"),
            misses.0,
            misses.1,
            100.0 * misses.0 as f64 / misses.1.max(1) as f64
        );
    }
}

/// A random unit vector of 384 dimensions.
fn unit(rng: &mut fastrand::Rng) -> Vec<f32> {
    let v: Vec<f32> = (0..384).map(|_| rng.f32() * 2.0 - 1.0).collect();
    normalised(v)
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// `v` moved by `by` times a random unit vector, normalised (`by` = 0.48: a cosine of about
/// 0.9 with `v`; 0.75: about 0.8).
fn moved(v: &[f32], by: f32, rng: &mut fastrand::Rng) -> Vec<f32> {
    let noise = unit(rng);
    normalised(v.iter().zip(&noise).map(|(a, b)| a + by * b).collect())
}

/// The stored prompts of a look-up benchmark.
#[derive(Clone, Copy)]
enum Prompts {
    /// Random unit vectors: no structure at all, the worst case of a graph (every vector is
    /// about as far from every other).
    Random,
    /// 2,000 random "intents", each prompt one of them moved to a cosine of about 0.8 with
    /// it (two prompts of one intent: about 0.64), closer to what a sentence model makes
    /// of a scope's prompts.
    Clustered,
}

impl Prompts {
    fn draw(self, intents: &[Vec<f32>], rng: &mut fastrand::Rng) -> Vec<f32> {
        match self {
            Self::Random => unit(rng),
            Self::Clustered => moved(&intents[rng.usize(..intents.len())], 0.75, rng),
        }
    }
}

/// Median, p10 and p90 of `samples`, in ms.
fn spread(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.1), at(0.9))
}

/// Times `nearest` over `queries` (`iters` calls, round-robin).
fn time(
    queries: &[Vec<f32>],
    iters: usize,
    nearest: impl Fn(&[f32]) -> Option<(u32, f32)>,
) -> (f64, f64, f64) {
    spread(
        (0..iters)
            .map(|i| {
                let q = &queries[i % queries.len()];
                let t = Instant::now();
                black_box(nearest(black_box(q)));
                t.elapsed()
            })
            .collect(),
    )
}

/// How many of `queries` the two scopes answer alike.
fn agree(exact: &BenchScope, approximate: &BenchScope, queries: &[Vec<f32>]) -> usize {
    queries
        .iter()
        .filter(|q| exact.nearest(q).map(|x| x.0) == approximate.nearest(q).map(|x| x.0))
        .count()
}

fn run_lookup() {
    let model = MiniLm::from_env().ok();
    let prompt = "My package was marked as delivered yesterday but I never received it, so what should I do about it now?";
    let sizes: Vec<u32> = std::env::var("SEMANTIC_LOOKUP_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 2_000, 5_000, 10_000, 100_000]);
    println!("\n| prompts | stored prompts in the scope | exact search, median (p10–p90) | approximate (HNSW), median (p10–p90) | exact ÷ approximate | approximate = exact: paraphrases / new prompts | graph build, per prompt | one more prompt into the graph |");
    println!("|---|---|---|---|---|---|---|---|");
    for prompts in [Prompts::Random, Prompts::Clustered] {
        let mut rng = fastrand::Rng::with_seed(7);
        let intents: Vec<Vec<f32>> = (0..2_000).map(|_| unit(&mut rng)).collect();
        let name = match prompts {
            Prompts::Random => "random",
            Prompts::Clustered => "clustered",
        };
        for &n in &sizes {
            let stored: Vec<Vec<f32>> = (0..n).map(|_| prompts.draw(&intents, &mut rng)).collect();
            let mut exact = BenchScope::exact();
            let mut approximate = BenchScope::approximate();
            // One scope after the other, so each scope's vectors lie together in memory.
            for (i, v) in stored.iter().enumerate() {
                exact.push(v.clone(), i as u32);
            }
            for (i, v) in stored.iter().enumerate() {
                approximate.push(v.clone(), i as u32);
            }
            // The graph of the whole scope, as a scope builds it (crossing the threshold,
            // or past a quarter of tombstones): one thread.
            let t = Instant::now();
            approximate.build();
            let build = t.elapsed().as_secs_f64();
            // Then prompts one at a time, as the cache stores them.
            let more: Vec<Vec<f32>> = (0..200).map(|_| prompts.draw(&intents, &mut rng)).collect();
            let t = Instant::now();
            for (i, v) in more.iter().enumerate() {
                approximate.push(v.clone(), n + i as u32);
            }
            let insert = t.elapsed().as_secs_f64() * 1e3 / more.len() as f64;
            for (i, v) in more.iter().enumerate() {
                exact.push(v.clone(), n + i as u32);
            }
            // Half paraphrases of stored prompts (a cosine of about 0.9: the case of a hit),
            // half new prompts (the case of a miss).
            let paraphrases: Vec<Vec<f32>> = (0..200)
                .map(|_| moved(&stored[rng.usize(..stored.len())], 0.48, &mut rng))
                .collect();
            let new: Vec<Vec<f32>> = (0..200).map(|_| prompts.draw(&intents, &mut rng)).collect();
            let queries: Vec<Vec<f32>> = paraphrases
                .iter()
                .zip(&new)
                .take(32)
                .flat_map(|(a, b)| [a.clone(), b.clone()])
                .collect();
            let iters = if n >= 100_000 { 64 } else { 512 };
            let e = time(&queries, iters, |q| exact.nearest(q));
            let a = time(&queries, iters * 4, |q| approximate.nearest(q));
            println!(
                "| {name} | {n} | {:.3} ms ({:.3}–{:.3}) | {:.3} ms ({:.3}–{:.3}) | {:.1}× | {}/200, {}/200 | {:.2} s ({:.3} ms) | {:.3} ms |",
                e.0, e.1, e.2, a.0, a.1, a.2, e.0 / a.0,
                agree(&exact, &approximate, &paraphrases),
                agree(&exact, &approximate, &new),
                build, build * 1e3 / f64::from(n), insert
            );
        }
    }
    if let Some(model) = model {
        let mut samples: Vec<Duration> = (0..50)
            .map(|_| {
                let t = Instant::now();
                black_box(model.embed(&[prompt]).unwrap());
                t.elapsed()
            })
            .collect();
        samples.sort();
        println!(
            "\nembedding the 20-word prompt (the part of every semantic call before the search): median {:.1} ms",
            samples[samples.len() / 2].as_secs_f64() * 1e3
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args
        .iter()
        .any(|a| a == "--list" || a.starts_with("--test"))
    {
        return;
    }
    let only_pairs = args.iter().any(|a| a == "pairs");
    let only_lookup = args.iter().any(|a| a == "lookup");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if !only_lookup {
        run_pairs(&rt);
    }
    if !only_pairs {
        run_lookup();
    }
}

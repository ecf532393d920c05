//! L1 hit ratio on a scan-polluted Zipf trace: the seed's eviction table says hot keys must
//! survive one-time scans. Replays the same trace through
//!
//! * `#[cached(max_capacity = 1000)]` (the real engine, memory backend),
//! * moka 0.12 (TinyLFU admission + LRU), bounded at 1,000 entries,
//! * a plain LRU, bounded at 1,000 entries,
//! * Belady's optimum (evict the key whose next use is furthest away), the ceiling.
//!
//! Trace: 1,000,000 accesses; 9 in 10 draw from Zipf(s = 1.0) over 100,000 keys, every 10th
//! is a key never seen before or again. Deterministic (seeded).
//!
//! ```text
//! cargo bench --bench hit_ratio
//! ```

use std::collections::{BTreeSet, HashMap};

const KEYS: usize = 100_000;
const ACCESSES: usize = 1_000_000;
const CAPACITY: usize = 1_000;
const SEED: u64 = 42;

fn trace() -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut cdf = Vec::with_capacity(KEYS);
    let mut total = 0.0;
    for rank in 1..=KEYS {
        total += 1.0 / rank as f64;
        cdf.push(total);
    }
    let mut scan = KEYS as u64;
    (0..ACCESSES)
        .map(|i| {
            if i % 10 == 9 {
                scan += 1;
                scan
            } else {
                let u = rng.f64() * total;
                cdf.partition_point(|&c| c < u) as u64
            }
        })
        .collect()
}

static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cachemacro_runtime::cached(ttl = "1h", key = "k:<k>", max_capacity = 1000)]
async fn cached_key(k: u64) -> u64 {
    LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    k
}

fn ours(trace: &[u64]) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for &k in trace {
            cached_key(k).await;
        }
    });
    cached_key_stats().hit_ratio()
}

fn moka(trace: &[u64]) -> f64 {
    let cache = moka::sync::Cache::<u64, u64>::new(CAPACITY as u64);
    let mut hits = 0;
    for &k in trace {
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.insert(k, k);
        }
    }
    hits as f64 / trace.len() as f64
}

fn lru(trace: &[u64]) -> f64 {
    let mut last_use: HashMap<u64, usize> = HashMap::new();
    let mut order: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut hits = 0;
    for (t, &k) in trace.iter().enumerate() {
        if let Some(prev) = last_use.insert(k, t) {
            hits += 1;
            order.remove(&(prev, k));
        } else if last_use.len() > CAPACITY {
            let (_, victim) = order.pop_first().unwrap();
            last_use.remove(&victim);
        }
        order.insert((t, k));
    }
    hits as f64 / trace.len() as f64
}

fn belady(trace: &[u64]) -> f64 {
    let mut next_use = vec![usize::MAX; trace.len()];
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (t, &k) in trace.iter().enumerate().rev() {
        if let Some(&n) = seen.get(&k) {
            next_use[t] = n;
        }
        seen.insert(k, t);
    }
    let mut resident: HashMap<u64, usize> = HashMap::new();
    let mut by_next: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut hits = 0;
    for (t, &k) in trace.iter().enumerate() {
        if let Some(n) = resident.get(&k).copied() {
            hits += 1;
            by_next.remove(&(n, k));
        } else if resident.len() == CAPACITY {
            // Evict the resident whose next use is furthest, unless k's own is further.
            let &(far, victim) = by_next.last().unwrap();
            if next_use[t] >= far {
                continue;
            }
            by_next.pop_last();
            resident.remove(&victim);
        }
        resident.insert(k, next_use[t]);
        by_next.insert((next_use[t], k));
    }
    hits as f64 / trace.len() as f64
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, so keep it quick
    // there by replaying a tenth of the trace.
    let quick = !std::env::args().any(|a| a == "--bench");
    let mut t = trace();
    if quick {
        t.truncate(ACCESSES / 10);
    }
    let ours = ours(&t);
    let moka = moka(&t);
    let lru = lru(&t);
    let opt = belady(&t);
    println!(
        "hit ratio, Zipf(1.0) over {KEYS} keys + 10% one-time scan keys, capacity {CAPACITY}, {} accesses",
        t.len()
    );
    println!("  cachemacro (memory L1) {ours:.3}");
    println!("  moka 0.12 (TinyLFU)    {moka:.3}");
    println!("  LRU                    {lru:.3}");
    println!("  Belady (optimum)       {opt:.3}");
    println!("  cachemacro / moka      {:.3}", ours / moka);
    println!("  cachemacro / optimum   {:.3}", ours / opt);
}

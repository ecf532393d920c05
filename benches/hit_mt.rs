//! The hit path where applications run it: a multi-thread runtime (2 workers), calls made
//! from spawned tasks. Plain timed loops (2,000,000 hits over 1,000 warm keys, best of 5),
//! every figure beside its baselines measured in the same process, interleaved round by
//! round. Also: the current-thread runtime figures, two tasks on two workers (different keys,
//! one key), and L1 memory per entry.
//!
//! ```text
//! cargo bench --bench hit_mt                 # hits, scaling; starts a redis-server for tiered
//! cargo bench --bench hit_mt -- --memory     # L1 memory per entry (RSS, one process per store)
//! ```
//!
//! Results and how to read them: docs/BENCHMARKS.md.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachemacro_runtime::{cached, configure, Config};

const KEYS: u64 = 1_000;
const CALLS: u64 = 2_000_000;
const ROUNDS: usize = 5;

#[cached(ttl = 600, key = "pm:<id>")]
async fn ours(id: u64) -> Arc<String> {
    Arc::new(id.to_string())
}

#[cached(ttl = 600, key = "pn:<id>")]
async fn ours_u64(id: u64) -> u64 {
    id
}

#[cached(ttl = 600, key = "pt:<id>", backend = tiered)]
async fn ours_tiered(id: u64) -> Arc<String> {
    Arc::new(id.to_string())
}

#[cached::proc_macro::cached(max_size = 10000, ttl_secs = 600)]
async fn theirs(id: u64) -> Arc<String> {
    Arc::new(id.to_string())
}

#[cached::proc_macro::cached(max_size = 10000)]
async fn theirs_no_expiry(id: u64) -> Arc<String> {
    Arc::new(id.to_string())
}

type Quick = quick_cache::sync::Cache<u64, Arc<String>>;

/// One measured loop, in a task spawned on `rt`: ns per call.
fn timed<F, Fut>(rt: &tokio::runtime::Runtime, f: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Arc<String>> + Send,
{
    rt.block_on(async move {
        tokio::spawn(async move {
            let started = Instant::now();
            for i in 0..CALLS {
                black_box(f(black_box(i % KEYS)).await);
            }
            started.elapsed().as_nanos() as f64 / CALLS as f64
        })
        .await
        .unwrap()
    })
}

/// `tasks` tasks spawned at once, each making `CALLS` calls on its own keys (`same`: all on
/// key 0): calls per microsecond, all tasks together.
fn throughput<F, Fut, T>(rt: &tokio::runtime::Runtime, tasks: u64, same: bool, f: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    rt.block_on(async move {
        let barrier = Arc::new(tokio::sync::Barrier::new(tasks as usize));
        let started = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (f, barrier) = (f.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    for i in 0..CALLS {
                        let key = if same { 0 } else { t * KEYS + i % KEYS };
                        black_box(f(black_box(key)).await);
                        if i % 1024 == 0 {
                            // As a request handler does now and then: lets the other worker
                            // take a task (a task woken by another never leaves that
                            // worker's LIFO slot otherwise).
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        (tasks * CALLS) as f64 / started.elapsed().as_nanos() as f64 * 1_000.0
    })
}

struct Row {
    name: &'static str,
    best: f64,
    all: Vec<f64>,
}

fn measure(
    rt: &tokio::runtime::Runtime,
    quick: &'static Quick,
    moka: &'static moka::future::Cache<u64, Arc<String>>,
) -> Vec<Row> {
    let mut rows: Vec<Row> = [
        "cachemacro memory",
        "cachemacro tiered",
        "cached, ttl_secs = 600",
        "cached, no expiry",
        "raw quick_cache get_or_insert_with",
        "raw quick_cache get",
        "raw moka future get",
    ]
    .into_iter()
    .map(|name| Row {
        name,
        best: f64::MAX,
        all: Vec::new(),
    })
    .collect();
    for _ in 0..ROUNDS {
        let figures = [
            timed(rt, ours),
            timed(rt, ours_tiered),
            timed(rt, theirs),
            timed(rt, theirs_no_expiry),
            timed(rt, move |id| {
                let q = quick;
                async move {
                    q.get_or_insert_with(&id, || Ok::<_, ()>(Arc::new(id.to_string())))
                        .unwrap()
                }
            }),
            timed(rt, move |id| {
                let q = quick;
                async move { q.get(&id).unwrap() }
            }),
            timed(rt, move |id| {
                let m = moka;
                async move { m.get(&id).await.unwrap() }
            }),
        ];
        for (row, ns) in rows.iter_mut().zip(figures) {
            row.best = row.best.min(ns);
            row.all.push(ns);
        }
    }
    rows
}

fn print(title: &str, rows: &[Row]) {
    let cached = rows[2].best;
    let raw = rows[5].best;
    let memory = rows[0].best;
    println!("\n{title}: ns per hit, best of {ROUNDS} (every round)");
    println!(
        "{:<38} {:>8} {:>10} {:>10} {:>10}",
        "", "ns", "/cached", "/raw get", "/memory"
    );
    for r in rows {
        println!(
            "{:<38} {:>8.1} {:>10.2} {:>10.2} {:>10.2}   {:?}",
            r.name,
            r.best,
            r.best / cached,
            r.best / raw,
            r.best / memory,
            r.all
                .iter()
                .map(|x| (x * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        );
    }
    // Each round times every row one after another, so a ratio within a round is steadier
    // than a ratio of bests when the machine's load shifts between rounds.
    let per_round = |a: usize, b: usize| {
        let mut r: Vec<f64> = rows[a]
            .all
            .iter()
            .zip(&rows[b].all)
            .map(|(x, y)| (x / y * 100.0).round() / 100.0)
            .collect();
        let shown = r.clone();
        r.sort_by(f64::total_cmp);
        (r[r.len() / 2], shown)
    };
    for (label, a, b) in [
        ("memory / raw get", 0, 5),
        ("memory / cached", 0, 2),
        ("tiered / memory", 1, 0),
    ] {
        let (median, all) = per_round(a, b);
        println!("  per round, {label}: median {median:.2} {all:?}");
    }
}

fn memory_per_entry(which: &str) {
    fn rss() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }
    const N: u64 = 1_000_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let before = rss();
    let keep: Box<dyn std::any::Any> = match which {
        "cachemacro" => {
            rt.block_on(async {
                for id in 0..N {
                    big(id).await;
                }
            });
            Box::new(())
        }
        _ => {
            let q = Quick::new(N as usize + 10);
            for id in 0..N {
                q.insert(id, Arc::new(id.to_string()));
            }
            Box::new(q)
        }
    };
    let after = rss();
    println!(
        "{which}: {:.1} bytes per entry",
        (after - before) as f64 / N as f64
    );
    drop(keep);
}

#[cached(ttl = 600, key = "big:<id>", max_capacity = 1_000_010)]
async fn big(id: u64) -> Arc<String> {
    Arc::new(id.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-of") {
        memory_per_entry(&args[i + 1]);
        return;
    }
    if args.iter().any(|a| a == "--memory") {
        let me = std::env::current_exe().unwrap();
        for which in ["quick_cache", "cachemacro"] {
            let out = std::process::Command::new(&me)
                .args(["--memory-of", which])
                .output()
                .unwrap();
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
        return;
    }
    if args.iter().any(|a| a == "--probe") {
        probe();
        return;
    }
    if args.iter().any(|a| a == "--profile") {
        // A loop of hits alone, for a profiler.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for id in 0..KEYS {
                ours(id).await;
            }
        });
        for _ in 0..10 {
            println!("{:.1} ns", timed(&rt, ours));
        }
        return;
    }
    if args
        .iter()
        .any(|a| a == "--list" || a.starts_with("--test"))
    {
        return; // `cargo test --benches` lists or smoke-runs every bench
    }

    let server = support::Server::start();
    configure(Config::default().redis_url(server.url()).prefix("hitmt:")).unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The baselines are `'static` (leaked): a closure that cloned an `Arc` per call would
    // charge them a refcount write that the cache's own calls do not make.
    let quick: &'static Quick = Box::leak(Box::new(Quick::new(10_000)));
    let moka: &'static moka::future::Cache<u64, Arc<String>> = Box::leak(Box::new(
        moka::future::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(600))
            .build(),
    ));
    multi.block_on(async {
        for id in 0..2 * KEYS {
            ours(id).await; // two tasks' key ranges
        }
        for id in 0..KEYS {
            ours_tiered(id).await;
            theirs(id).await;
            theirs_no_expiry(id).await;
            quick.insert(id, Arc::new(id.to_string()));
            moka.insert(id, Arc::new(id.to_string())).await;
        }
        // L1 of tiered is used once the backplane is subscribed.
        while !cachemacro_runtime::health()
            .iter()
            .all(|h| h.subscribed != Some(false))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for id in 0..KEYS {
            ours_tiered(id).await;
        }
    });
    let loads = ours_tiered_stats().loads;

    print(
        "multi-thread runtime, 2 workers, one spawned task",
        &measure(&multi, quick, moka),
    );
    print("current-thread runtime", &measure(&current, quick, moka));
    assert_eq!(
        ours_tiered_stats().loads,
        loads,
        "every tiered call was an L1 hit"
    );

    println!("\nscaling on the multi-thread runtime (2 workers): calls per µs, all tasks together (3 runs)");
    let q = quick;
    let qn: &'static quick_cache::sync::Cache<u64, u64> =
        Box::leak(Box::new(quick_cache::sync::Cache::new(10_000)));
    multi.block_on(async {
        for id in 0..2 * KEYS {
            q.insert(id, Arc::new(id.to_string()));
            qn.insert(id, id);
            ours_u64(id).await;
        }
    });
    let raw = move |id: u64| async move { q.get(&id).unwrap() };
    let raw_u64 = move |id: u64| async move { qn.get(&id).unwrap() };
    scaling(&multi, "cachemacro, u64 -> Arc<String>", |id| async move {
        ours(id).await
    });
    scaling(&multi, "raw quick_cache, u64 -> Arc<String>", raw);
    scaling(&multi, "cachemacro, u64 -> u64", |id| async move {
        ours_u64(id).await
    });
    scaling(&multi, "raw quick_cache, u64 -> u64", raw_u64);
}

/// Two tasks against one (different keys, then one key), three times.
fn scaling<F, Fut, T>(rt: &tokio::runtime::Runtime, name: &str, f: F)
where
    F: Fn(u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    for _ in 0..3 {
        let one = throughput(rt, 1, false, f.clone());
        let two = throughput(rt, 2, false, f.clone());
        let one_same = throughput(rt, 1, true, f.clone());
        let two_same = throughput(rt, 2, true, f.clone());
        println!(
            "{name:<38} different keys: 1 task {one:5.1}, 2 tasks {two:5.1} ({:.2}x)   same key: 1 task {one_same:5.1}, 2 tasks {two_same:5.1} ({:.2}x)",
            two / one,
            two_same / one_same
        );
    }
}

/// A string key as the L1 stores it (bytes, inline up to 24), for `--probe`.
#[derive(Clone, PartialEq, Eq)]
struct SKey(compact_str::CompactString);

impl std::hash::Hash for SKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.as_bytes().hash(h)
    }
}

/// The rendered bytes, looking for their [`SKey`].
struct SProbe<'a>(&'a [u8]);

impl std::hash::Hash for SProbe<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.hash(h)
    }
}

impl quick_cache::Equivalent<SKey> for SProbe<'_> {
    fn equivalent(&self, k: &SKey) -> bool {
        self.0 == k.0.as_bytes()
    }
}

/// `--probe`: what a string key costs the store itself. The same quick_cache, keyed by
/// the rendered `pm:<id>` (rendered per call with `itoa` into a stack buffer, as the macro
/// does) instead of the `u64`, with nothing else of the cache around it: the floor of any
/// L1 keyed by the rendered string.
fn probe() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let q: &'static Quick = Box::leak(Box::new(Quick::new(10_000)));
    let s: &'static quick_cache::sync::Cache<SKey, Arc<String>> =
        Box::leak(Box::new(quick_cache::sync::Cache::new(10_000)));
    rt.block_on(async {
        for id in 0..KEYS {
            let v = Arc::new(id.to_string());
            q.insert(id, v.clone());
            s.insert(SKey(compact_str::format_compact!("pm:{id}")), v);
            ours(id).await;
        }
    });
    for round in 1..=ROUNDS {
        let raw = timed(&rt, move |id| async move { q.get(&id).unwrap() });
        let skey = timed(&rt, move |id| async move {
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(id).as_bytes();
            let mut buf = [0u8; 24];
            buf[..3].copy_from_slice(b"pm:");
            buf[3..3 + digits.len()].copy_from_slice(digits);
            s.get(&SProbe(&buf[..3 + digits.len()])).unwrap()
        });
        let ours_ns = timed(&rt, ours);
        println!(
            "round {round}: raw u64 get {raw:.1} ns, rendered string key {skey:.1} ns ({:.2}x), \
             cachemacro {ours_ns:.1} ns ({:.2}x)",
            skey / raw,
            ours_ns / raw
        );
    }
}

//! Cost of a cache hit through `#[cached]` (memory backend) against the `cached` crate's
//! `#[cached(max_size = 10000, ttl_secs = 600)]` on the same function, in the same run, plus
//! the bare stores underneath for reference.
//!
//! ```text
//! cargo bench --bench hit
//! ```
//!
//! Results and how to read them: docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

/// The function both caches wrap: a hit never runs it.
async fn source(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cachemacro_runtime::cached(ttl = 600, key = "n:<n>")]
async fn ours(n: u64) -> u64 {
    source(n).await
}

#[cachemacro_runtime::cached(ttl = 600, key = "s:<s>")]
async fn ours_string(s: String) -> String {
    s
}

#[cached::proc_macro::cached(max_size = 10000, ttl_secs = 600)]
async fn theirs(n: u64) -> u64 {
    source(n).await
}

#[cached::proc_macro::cached(max_size = 10000, ttl_secs = 600)]
async fn theirs_string(s: String) -> String {
    s
}

fn hits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Warm both caches with the same 1,000 keys; every measured call is a hit.
    rt.block_on(async {
        for n in 0..1000 {
            ours(n).await;
            theirs(n).await;
            ours_string(n.to_string()).await;
            theirs_string(n.to_string()).await;
        }
    });
    let moka = moka::sync::Cache::<u64, u64>::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(600))
        .build();
    let quick = quick_cache::sync::Cache::<u64, u64>::new(10_000);
    for n in 0..1000 {
        moka.insert(n, n);
        quick.insert(n, n);
    }

    let mut g = c.benchmark_group("hit");
    g.measurement_time(Duration::from_secs(4));
    let mut i = 0u64;
    let mut next = move || {
        i = (i + 1) % 1000;
        i
    };
    g.bench_function("cachemacro_u64", |b| {
        b.to_async(&rt).iter(|| ours(black_box(next())))
    });
    g.bench_function("cached_crate_u64", |b| {
        b.to_async(&rt).iter(|| theirs(black_box(next())))
    });
    let keys: Vec<String> = (0..1000).map(|n| n.to_string()).collect();
    let mut j = 0usize;
    let mut key = move || {
        j = (j + 1) % 1000;
        keys[j].clone()
    };
    g.bench_function("cachemacro_string", |b| {
        b.to_async(&rt).iter(|| ours_string(black_box(key())))
    });
    g.bench_function("cached_crate_string", |b| {
        b.to_async(&rt).iter(|| theirs_string(black_box(key())))
    });
    g.bench_function("moka_sync_get", |b| b.iter(|| moka.get(&black_box(next()))));
    g.bench_function("quick_cache_get", |b| {
        b.iter(|| quick.get(&black_box(next())))
    });
    g.finish();
}

criterion_group!(benches, hits);
criterion_main!(benches);

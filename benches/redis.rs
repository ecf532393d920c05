//! Redis and tiered hits against their baselines, measured in one run on a `redis-server`
//! of the bench's own (started on a free port, killed at the end):
//!
//! * `redis/1_task`: `#[cached(backend = redis)]` hit vs. a raw redis-rs `GET` of the same
//!   bytes over a multiplexed connection, one task;
//! * `redis/64_tasks`: the same with 64 concurrent tasks (each on its own key);
//! * `tiered/hit`: a tiered hit (L1) vs. a memory-backend hit;
//! * `outage/call`: with Redis killed and the breaker open, a `backend = redis` call vs. a
//!   direct call of the same source.
//!
//! Criterion measures each function in turn; on a shared machine the load can shift between
//! them, so the bench also prints *interleaved* ratios at the end: rounds that alternate the
//! baseline and cachemacro, one median ratio per comparison. Those are the figures quoted in
//! docs/BENCHMARKS.md.
//!
//! ```text
//! cargo bench --bench redis
//! ```

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use cachemacro_runtime::{cached, configure, Config};
use criterion::Criterion;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use support::Server;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
    tags: Vec<String>,
}

fn profile(id: u64) -> Profile {
    Profile {
        id,
        name: format!("user number {id}"),
        tags: vec!["a".into(), "bb".into(), "ccc".into()],
    }
}

#[cached(ttl = 3600, key = "bench:r:<id>", backend = redis)]
async fn remote(id: u64) -> Profile {
    profile(id)
}

#[cached(ttl = 3600, key = "bench:t:<id>", backend = tiered)]
async fn tiered(id: u64) -> Profile {
    profile(id)
}

#[cached(ttl = 3600, key = "bench:m:<id>")]
async fn memory(id: u64) -> Profile {
    profile(id)
}

#[cached(ttl = 3600, key = "bench:o:<id>", backend = redis)]
async fn during_outage(id: u64) -> Profile {
    profile(id)
}

fn benches(c: &mut Criterion) {
    let mut server = Server::start();
    let url = server.url();
    configure(Config::default().redis_url(&url)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let raw = rt.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let conn = client.get_multiplexed_async_connection().await.unwrap();
        for id in 0..64 {
            remote(id).await;
            tiered(id).await;
            memory(id).await;
        }
        // The raw baseline reads the very bytes the cache stored.
        let mut c = conn.clone();
        for id in 0..64 {
            let bytes: Vec<u8> = c.get(format!("bench:r:{id}")).await.unwrap();
            let _: () = c.set(format!("raw:{id}"), bytes).await.unwrap();
        }
        conn
    });
    while cachemacro_runtime::health()
        .iter()
        .any(|h| h.subscribed != Some(true))
    {
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut g = c.benchmark_group("redis");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("1_task/raw_get", |b| {
        let conn = raw.clone();
        b.to_async(&rt).iter(|| {
            let mut c = conn.clone();
            async move {
                let v: Vec<u8> = c.get("raw:1").await.unwrap();
                black_box(v)
            }
        })
    });
    g.bench_function("1_task/cachemacro", |b| {
        b.to_async(&rt).iter(|| remote(black_box(1)))
    });
    // 64 tasks, each reading its own key in a loop; time per call.
    let per_call = |iters: u64, cached: bool| {
        let conn = raw.clone();
        rt.block_on(async move {
            let per_task = iters.div_ceil(64).max(1);
            let start = Instant::now();
            let tasks: Vec<_> = (0..64u64)
                .map(|id| {
                    let mut c = conn.clone();
                    tokio::spawn(async move {
                        for _ in 0..per_task {
                            if cached {
                                black_box(remote(id).await);
                            } else {
                                let v: Vec<u8> = c.get(format!("raw:{id}")).await.unwrap();
                                black_box(v);
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            start
                .elapsed()
                .div_f64((per_task * 64) as f64 / iters as f64)
        })
    };
    g.bench_function("64_tasks/raw_get", |b| {
        b.iter_custom(|n| per_call(n, false))
    });
    g.bench_function("64_tasks/cachemacro", |b| {
        b.iter_custom(|n| per_call(n, true))
    });
    g.finish();

    // Interleaved: alternate baseline and cachemacro round by round (see the module docs).
    let one_task = |cached: bool| {
        let conn = raw.clone();
        rt.block_on(async move {
            let mut c = conn;
            let start = Instant::now();
            for _ in 0..2000 {
                if cached {
                    black_box(remote(1).await);
                } else {
                    let v: Vec<u8> = c.get("raw:1").await.unwrap();
                    black_box(v);
                }
            }
            start.elapsed() / 2000
        })
    };
    let (r1, b1, o1) = interleaved(20, || one_task(false), || one_task(true));
    let (r64, b64, o64) = interleaved(
        20,
        || per_call(64 * 300, false) / (64 * 300),
        || per_call(64 * 300, true) / (64 * 300),
    );
    println!("\ninterleaved, median of 20 rounds (cachemacro / raw redis-rs GET):");
    println!("  1 task:   {r1:.3}  (raw {b1:?}, cachemacro {o1:?} per call)");
    println!("  64 tasks: {r64:.3}  (raw {b64:?}, cachemacro {o64:?} per call)\n");

    let mut g = c.benchmark_group("tiered");
    g.bench_function("hit/memory", |b| {
        b.to_async(&rt).iter(|| memory(black_box(1)))
    });
    g.bench_function("hit/tiered", |b| {
        b.to_async(&rt).iter(|| tiered(black_box(1)))
    });
    g.finish();

    // Outage: kill Redis, let the breaker open, then time calls.
    let _ = server.0.kill();
    let _ = server.0.wait();
    rt.block_on(async {
        for id in 0..10 {
            during_outage(id).await;
        }
    });
    let mut g = c.benchmark_group("outage");
    g.bench_function("call/source_directly", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(profile(black_box(1))) })
    });
    g.bench_function("call/cachemacro_redis_down", |b| {
        b.to_async(&rt).iter(|| during_outage(black_box(1)))
    });
    g.finish();
    drop(server);
}

/// Median of `rounds` ratios `ours / baseline`, each round timing `calls` of both, in
/// alternating order.
fn interleaved(
    rounds: usize,
    mut baseline: impl FnMut() -> Duration,
    mut ours: impl FnMut() -> Duration,
) -> (f64, Duration, Duration) {
    let mut ratios = Vec::new();
    let (mut tb, mut to) = (Duration::ZERO, Duration::ZERO);
    for r in 0..rounds {
        let (b, o) = if r % 2 == 0 {
            let b = baseline();
            (b, ours())
        } else {
            let o = ours();
            (baseline(), o)
        };
        tb += b;
        to += o;
        ratios.push(o.as_secs_f64() / b.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    (
        ratios[ratios.len() / 2],
        tb / rounds as u32,
        to / rounds as u32,
    )
}

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Fields 14 and 15 (utime, stime), counted from the state field after the name.
    (f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)) as f64 / 100.0
}

/// `CACHEMACRO_BENCH_CPU=1`: 64-task rounds, alternating, with wall time and the CPU time
/// of this process and of redis-server per call.
fn cpu_mode() {
    let server = Server::start();
    let url = server.url();
    configure(Config::default().redis_url(&url)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let raw = rt.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut c = conn.clone();
        for id in 0..64 {
            remote(id).await;
            let bytes: Vec<u8> = c.get(format!("bench:r:{id}")).await.unwrap();
            let _: () = c.set(format!("raw:{id}"), bytes).await.unwrap();
        }
        conn
    });
    let me = std::process::id();
    let redis_pid = server.0.id();
    for round in 0..6 {
        let only = std::env::var("CACHEMACRO_BENCH_CPU").unwrap_or_default();
        let cached = only == "ours" || (only != "raw" && round % 2 == 1);
        let conn = raw.clone();
        let (c0, r0, t0) = (cpu_of(me), cpu_of(redis_pid), Instant::now());

        const PER: u64 = 3000;
        rt.block_on(async move {
            let tasks: Vec<_> = (0..64u64)
                .map(|id| {
                    let mut c = conn.clone();
                    tokio::spawn(async move {
                        for _ in 0..PER {
                            if cached {
                                black_box(remote(id).await);
                            } else {
                                let v: Vec<u8> = c.get(format!("raw:{id}")).await.unwrap();
                                black_box(v);
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let n = (64 * PER) as f64;
        println!(
            "{:<10} wall {:>6.2} µs/call   bench cpu {:>6.2} µs/call   redis cpu {:>6.2} µs/call",
            if cached { "cachemacro" } else { "raw" },
            t0.elapsed().as_secs_f64() * 1e6 / n,
            (cpu_of(me) - c0) * 1e6 / n,
            (cpu_of(redis_pid) - r0) * 1e6 / n
        );
    }
}

fn main() {
    if std::env::var_os("CACHEMACRO_BENCH_CPU").is_some() {
        cpu_mode();
        return;
    }
    benches(&mut Criterion::default().configure_from_args());
    Criterion::default().configure_from_args().final_summary();
}

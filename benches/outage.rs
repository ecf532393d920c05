//! A 10-second Redis outage under steady load: source calls per second of a `tiered`
//! function with `outage_ttl = 0` (L1 not read while the backplane and Redis are down, as
//! before issue 11) and with the default `outage_ttl` (5 s), both in the same process,
//! through the same outage. Four tasks per function call random keys of 1,000 in a loop;
//! the source takes 1 ms (a database query).
//!
//! ```text
//! cargo bench --bench outage
//! ```
//!
//! Results: docs/BENCHMARKS.md.

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachemacro_runtime::{cached, configure, health, Config};

const KEYS: u64 = 1_000;

static BEFORE_SOURCE: AtomicU64 = AtomicU64::new(0);
static AFTER_SOURCE: AtomicU64 = AtomicU64::new(0);
static BEFORE_CALLS: AtomicU64 = AtomicU64::new(0);
static AFTER_CALLS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 600, key = "ob:<id>", backend = tiered, outage_ttl = 0)]
async fn before(id: u64) -> u64 {
    BEFORE_SOURCE.fetch_add(1, Relaxed);
    tokio::time::sleep(Duration::from_millis(1)).await;
    id
}

#[cached(ttl = 600, key = "oa:<id>", backend = tiered)]
async fn after(id: u64) -> u64 {
    AFTER_SOURCE.fetch_add(1, Relaxed);
    tokio::time::sleep(Duration::from_millis(1)).await;
    id
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a.starts_with("--test")) {
        return; // `cargo test --benches` lists or smoke-runs every bench
    }
    let mut server = support::Server::start();
    configure(Config::default().redis_url(server.url()).prefix("outage:")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    rt.block_on(async {
        for id in 0..KEYS {
            before(id).await;
            after(id).await;
        }
        while !health().iter().all(|h| h.subscribed == Some(true)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let stop = stop.clone();
        tasks.push(rt.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(t);
            while !stop.load(Relaxed) {
                let id = rng.u64(0..KEYS);
                if t % 2 == 0 {
                    before(id).await;
                    BEFORE_CALLS.fetch_add(1, Relaxed);
                } else {
                    after(id).await;
                    AFTER_CALLS.fetch_add(1, Relaxed);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    println!("second  phase     outage_ttl=0: calls/s source/s   outage_ttl=5s: calls/s source/s");
    let mut totals = [[0u64; 4]; 3]; // phase -> [before calls, before source, after calls, after source]
    let mut last = [0u64; 4];
    let read = || {
        [
            BEFORE_CALLS.load(Relaxed),
            BEFORE_SOURCE.load(Relaxed),
            AFTER_CALLS.load(Relaxed),
            AFTER_SOURCE.load(Relaxed),
        ]
    };
    let started = Instant::now();
    for second in 0..20u64 {
        let phase = match second {
            0..=4 => 0,
            5..=14 => 1,
            _ => 2,
        };
        if second == 5 {
            let _ = server.0.kill();
            let _ = server.0.wait();
        }
        if second == 15 {
            server = support::Server::start_on(server.1);
        }
        std::thread::sleep(
            (started + Duration::from_secs(second + 1)).saturating_duration_since(Instant::now()),
        );
        let now = read();
        let d: Vec<u64> = now.iter().zip(last).map(|(n, l)| n - l).collect();
        last = now;
        for i in 0..4 {
            totals[phase][i] += d[i];
        }
        println!(
            "{second:>6}  {:<8}  {:>14} {:>8}   {:>14} {:>8}",
            ["redis up", "outage", "back"][phase],
            d[0],
            d[1],
            d[2],
            d[3]
        );
    }
    stop.store(true, Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let outage = totals[1];
    println!(
        "\nduring the 10 s outage: outage_ttl=0 {:.0} calls/s, {:.0} source calls/s; outage_ttl=5s {:.0} calls/s, {:.0} source calls/s",
        outage[0] as f64 / 10.0,
        outage[1] as f64 / 10.0,
        outage[2] as f64 / 10.0,
        outage[3] as f64 / 10.0
    );
    drop(server);
}

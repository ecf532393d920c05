//! `backend = tiered`: an in-process L1 in front of Redis, kept coherent across processes.
//!
//! ```text
//! redis-server --port 6379 --save "" &      # if no Redis is running (apt-get install redis-server)
//! cargo run --example tiered
//! ```
//!
//! The example runs a second copy of itself as another process. That process invalidates
//! a key; this one's L1 copy is dropped over Redis pub/sub, and its next call sees the new
//! value.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cachemacro_runtime::{cached, configure, health, stats, Config};

static VERSION: AtomicU32 = AtomicU32::new(1);

#[cached(ttl = "10m", key = "price:<sku>", backend = tiered)]
async fn price(sku: String) -> (String, u32) {
    tokio::time::sleep(Duration::from_millis(30)).await; // the pricing service
    (sku, VERSION.load(Ordering::SeqCst))
}

async fn timed(label: &str) {
    let t = Instant::now();
    let p = price("ABC-1".into()).await;
    println!(
        "{label:<44} {:>8.3} ms  {p:?}",
        t.elapsed().as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    configure(Config::from_env().prefix("example:")).unwrap();
    if std::env::args().nth(1).as_deref() == Some("invalidate") {
        // The second process: change the price and invalidate it everywhere.
        price_invalidate("ABC-1".into()).await.unwrap();
        return;
    }

    price_invalidate("ABC-1".into()).await.ok();
    if !health().iter().all(|h| h.reachable) || price_stats().backend_errors > 0 {
        eprintln!(
            "No Redis at {}. Start one (`redis-server --port 6379 --save \"\"`; Debian/Ubuntu: \
             `apt-get install redis-server`), or set CACHEMACRO_REDIS_URL.",
            std::env::var("CACHEMACRO_REDIS_URL")
                .unwrap_or_else(|_| cachemacro_runtime::DEFAULT_REDIS_URL.into())
        );
        std::process::exit(2);
    }
    price("warm-up".into()).await;
    while health().iter().any(|h| h.subscribed != Some(true)) {
        tokio::time::sleep(Duration::from_millis(10)).await; // the backplane subscribes
    }

    timed("miss: loads, writes Redis and L1").await;
    timed("hit: answered by L1, no round trip").await;
    timed("hit: L1").await;

    VERSION.store(2, Ordering::SeqCst);
    let status = Command::new(std::env::current_exe().unwrap())
        .arg("invalidate")
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(50)).await; // the message crosses Redis
    timed("after another process invalidated it: loads").await;
    timed("hit: L1 again").await;

    println!("\n{}", stats::table(&stats::all()));
}

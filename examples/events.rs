//! Event-driven invalidation: another service publishes "user.42.updated"; this process's
//! router invalidates `get_user(42)` in Redis and in every process's L1.
//!
//! ```text
//! redis-server --port 6379 --save "" &      # if no Redis is running (apt-get install redis-server)
//! cargo run --example events
//! ```
//!
//! The example is both sides: the consumer (this process: caches users, listens on the
//! `example:events` channel) and the publisher (a copy of itself run as a child process,
//! which publishes one event with a plain Redis client, as any other service would).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cachemacro_runtime::events::Router;
use cachemacro_runtime::{cached, configure, health, Config};

static VERSION: AtomicU32 = AtomicU32::new(1);

#[cached(ttl = "10m", key = "user:<id>", backend = tiered)]
async fn get_user(id: u64) -> (u64, u32) {
    (id, VERSION.load(Ordering::SeqCst))
}

const CHANNEL: &str = "example:events";

async fn publish(event: &str) -> redis::RedisResult<()> {
    let url = std::env::var("CACHEMACRO_REDIS_URL")
        .unwrap_or_else(|_| cachemacro_runtime::DEFAULT_REDIS_URL.into());
    let client = redis::Client::open(url.split(',').next().unwrap_or_default())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(event)
        .query_async::<i64>(&mut conn)
        .await
        .map(drop)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("publish") {
        // The other service: it knows nothing of the cache, only the event.
        publish(&args[2]).await.expect("publish");
        return;
    }
    configure(Config::from_env().prefix("example:")).unwrap();
    let listener = Router::new()
        .on("user.{id}.updated", |e| async move {
            get_user_invalidate(e.parse("id")?).await
        })
        .listen(CHANNEL);
    get_user(0).await;
    let started = Instant::now();
    while !(listener.subscribed() && health().iter().all(|h| h.subscribed != Some(false))) {
        if started.elapsed() > Duration::from_secs(3) {
            eprintln!(
                "No Redis reachable. Start one (`redis-server --port 6379 --save \"\"`; Debian/Ubuntu: \
                 `apt-get install redis-server`), or set CACHEMACRO_REDIS_URL."
            );
            std::process::exit(2);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    get_user_invalidate(42).await.ok();
    println!("get_user(42) = {:?}  (loaded)", get_user(42).await);
    VERSION.store(2, Ordering::SeqCst); // the user changes in the database…
    println!(
        "get_user(42) = {:?}  (cached: the change is not visible yet)",
        get_user(42).await
    );

    let status = Command::new(std::env::current_exe().unwrap())
        .args(["publish", "user.42.updated"])
        .status()
        .unwrap();
    assert!(status.success());
    println!("… and the user service published \"user.42.updated\" on {CHANNEL}");
    while listener.counts().1 == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "get_user(42) = {:?}  (invalidated by the event, reloaded)",
        get_user(42).await
    );
    let (received, applied, failed) = listener.counts();
    println!("events received {received}, applied {applied}, failed {failed}");
}

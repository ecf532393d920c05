//! The quickstart: runs on the in-process default, no setup.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! A miss, hits, a stale read answered at once while one background refresh runs, a burst of
//! concurrent misses that makes one source call, an invalidation, and the stats table.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cachemacro_runtime::{cached, stats};

#[derive(Clone, Debug)]
struct User {
    id: u64,
    name: String,
    version: u32,
}

#[derive(Debug)]
struct DbError;

static DB_CALLS: AtomicU32 = AtomicU32::new(0);

/// The source of truth: a slow "database" call.
async fn fetch_user(id: u64) -> Result<User, DbError> {
    let version = DB_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(User {
        id,
        name: format!("user-{id}"),
        version,
    })
}

/// Fresh for 300 ms, then served stale while one refresh runs; gone after 10 s.
#[cached(ttl = "10s", soft_ttl = "300ms", key = "user:<id>")]
async fn get_user(id: u64) -> Result<User, DbError> {
    fetch_user(id).await
}

async fn timed(label: &str, id: u64) -> User {
    let t = Instant::now();
    let user = get_user(id).await.expect("the demo database never fails");
    println!(
        "{label:<34} {:>9.3} ms   {} #{} (version {})",
        t.elapsed().as_secs_f64() * 1e3,
        user.name,
        user.id,
        user.version
    );
    user
}

#[tokio::main]
async fn main() {
    println!("call                                  latency   value");
    timed("1. first call: miss, loads", 1).await;
    timed("2. second call: hit", 1).await;
    timed("3. third call: hit", 1).await;

    tokio::time::sleep(Duration::from_millis(350)).await;
    timed("4. after soft_ttl: stale, at once", 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    timed("5. background refresh landed", 1).await;

    let before = DB_CALLS.load(Ordering::SeqCst);
    let t = Instant::now();
    let burst: Vec<_> = (0..100).map(|_| tokio::spawn(get_user(2))).collect();
    for task in burst {
        task.await.unwrap().unwrap();
    }
    println!(
        "6. 100 concurrent misses of user 2  {:>9.3} ms   {} source call(s)",
        t.elapsed().as_secs_f64() * 1e3,
        DB_CALLS.load(Ordering::SeqCst) - before
    );

    get_user_invalidate(1).await.unwrap();
    timed("7. after get_user_invalidate(1)", 1).await;
    let refreshed = get_user_refresh(1).await.unwrap();
    println!(
        "8. get_user_refresh(1) stored version {}",
        refreshed.version
    );
    timed("9. hit on the refreshed value", 1).await;

    println!("\n{}", stats::table(&stats::all()));
    let s = get_user_stats();
    println!(
        "hit ratio {:.2}, hit p50 {:?}, load p99 {:?}",
        s.hit_ratio(),
        s.hit_latency(0.5),
        s.load_latency(0.99)
    );
}

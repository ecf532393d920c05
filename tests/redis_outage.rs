//! Redis down, slow, or restarting never fails a call: the call goes to the source, the
//! failure is counted, an unresponsive server costs at most the operation timeout, the
//! circuit breaker stops paying even that, and the cache is used again once Redis is back.
//! The tests here stop and start this binary's own server, so they run one at a time.
#![cfg(feature = "redis")]
// The server lock is held for a whole test on purpose: it serializes the tests, not tasks.
#![allow(clippy::await_holding_lock)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use cachemacro_runtime::{cached, configure, health, Config};
use common::redis::Server;
use common::until_real;

const OP_TIMEOUT: Duration = Duration::from_millis(200);

/// The server, locked: one outage at a time.
fn server() -> MutexGuard<'static, Server> {
    static SERVER: OnceLock<Mutex<Server>> = OnceLock::new();
    let m = SERVER.get_or_init(|| {
        let s = Server::start();
        configure(
            Config::default()
                .redis_url(s.url())
                .prefix("out:")
                .op_timeout(OP_TIMEOUT)
                .connect_timeout(Duration::from_millis(300))
                .breaker(3, Duration::from_millis(300))
                .heartbeat(Duration::from_millis(100)),
        )
        .unwrap();
        Mutex::new(s)
    });
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn reachable() -> bool {
    health().iter().all(|h| h.reachable)
}

static CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "o:<id>", backend = redis)]
async fn remote(id: u64) -> u64 {
    CALLS.fetch_add(1, SeqCst);
    id
}

#[cached(ttl = 60, key = "ot:<id>", backend = tiered)]
async fn tiered(id: u64) -> u64 {
    CALLS.fetch_add(1, SeqCst);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_calls_succeed_from_the_source_and_the_breaker_opens() {
    let mut s = server();
    until_real("Redis reachable", reachable).await;
    assert_eq!(remote(1).await, 1);
    let errors = remote_stats().backend_errors;
    s.kill();
    for i in 0..20 {
        assert_eq!(remote(1000 + i).await, 1000 + i, "the call succeeds");
    }
    assert!(
        remote_stats().backend_errors > errors,
        "failures are counted"
    );
    assert!(!reachable(), "the breaker opened");
    // While it is open, calls skip Redis without an error per call.
    let (errors, skipped) = (
        remote_stats().backend_errors,
        remote_stats().backend_skipped,
    );
    for i in 0..20 {
        assert_eq!(remote(3000 + i).await, 3000 + i);
    }
    assert_eq!(
        remote_stats().backend_errors,
        errors,
        "no error counted per call"
    );
    assert!(remote_stats().backend_skipped >= skipped + 20);
    s.restart();
    until_real("the breaker closed after a probe", || {
        futures_block(remote(1));
        reachable()
    })
    .await;
}

/// A blocking call from a synchronous closure (the cache works from any executor).
fn futures_block<F: std::future::Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f)
        })
        .join()
        .unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresponsive_redis_costs_at_most_the_operation_timeout() {
    let s = server();
    until_real("Redis reachable", reachable).await;
    remote(2).await;
    // The server stops answering for 3 s; the connection stays open.
    s.cli(&["client", "pause", "3000", "all"]);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let t = Instant::now();
        assert_eq!(remote(2000 + i).await, 2000 + i);
        slowest = slowest.max(t.elapsed());
    }
    // Generous margins: each call may wait one timeout (read), never the 3 s pause.
    assert!(
        slowest < Duration::from_millis(1500),
        "a call took {slowest:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "10 calls took {:?}",
        started.elapsed()
    );
    assert!(
        !reachable(),
        "after 3 timeouts the breaker stops paying them"
    );
    s.cli(&["client", "unpause"]);
    until_real("Redis reachable again", || {
        futures_block(remote(2));
        reachable()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_values_are_cached_in_redis_again() {
    let mut s = server();
    until_real("Redis reachable", reachable).await;
    s.restart(); // empty server, same port; the client reconnects by itself
    until_real("values stored again", || {
        futures_block(remote(3));
        s.cli(&["exists", "out:o:3"]) == "1"
    })
    .await;
    let loads = remote_stats().loads;
    assert_eq!(remote(3).await, 3);
    assert_eq!(remote_stats().loads, loads, "a hit from Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiered_process_cut_off_from_redis_does_not_serve_its_l1() {
    let mut s = server();
    until_real("Redis reachable", reachable).await;
    tiered(0).await;
    until_real("subscribed", || {
        health().iter().any(|h| h.subscribed == Some(true))
    })
    .await;
    tiered(4).await;
    let loads = tiered_stats().loads;
    tiered(4).await;
    assert_eq!(tiered_stats().loads, loads, "an L1 hit");

    s.kill();
    until_real("the backplane noticed", || {
        health().iter().any(|h| h.subscribed == Some(false))
    })
    .await;
    assert_eq!(tiered(4).await, 4);
    assert_eq!(
        tiered_stats().loads,
        loads + 1,
        "invalidations could be missed: L1 is not trusted, the source answers"
    );

    s.restart();
    until_real("subscribed again", || {
        health().iter().any(|h| h.subscribed == Some(true))
    })
    .await;
    until_real("cached again", || {
        let before = tiered_stats().loads;
        futures_block(tiered(4));
        tiered_stats().loads == before
    })
    .await;
}

// ---- an outage is not a stampede: L1 within outage_ttl ------------------------------------

static GUARDED: AtomicU32 = AtomicU32::new(0);
static UNGUARDED: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "og:<id>", backend = tiered, outage_ttl = "2s")]
async fn guarded(id: u64) -> u64 {
    GUARDED.fetch_add(1, SeqCst);
    id
}

#[cached(ttl = 60, key = "ou:<id>", backend = tiered, outage_ttl = 0)]
async fn unguarded(id: u64) -> u64 {
    UNGUARDED.fetch_add(1, SeqCst);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_an_outage_a_tiered_process_serves_l1_within_outage_ttl_and_loads_once_per_period()
{
    let mut s = server();
    until_real("Redis reachable", reachable).await;
    guarded(1).await;
    unguarded(1).await;
    until_real("subscribed", || {
        health().iter().any(|h| h.subscribed == Some(true))
    })
    .await;
    guarded(1).await;
    unguarded(1).await;
    let (g0, u0) = (GUARDED.load(SeqCst), UNGUARDED.load(SeqCst));
    assert_eq!((g0, u0), (1, 1), "L1 hits while subscribed");

    s.kill();
    // The backplane notices; calls that go to Redis fail until its breaker opens.
    until_real("Redis unreachable and the backplane down", || {
        futures_block(unguarded(2));
        !reachable() && health().iter().any(|h| h.subscribed == Some(false))
    })
    .await;
    let u1 = UNGUARDED.load(SeqCst);
    for _ in 0..20 {
        assert_eq!(guarded(1).await, 1);
        assert_eq!(unguarded(1).await, 1);
    }
    assert!(
        GUARDED.load(SeqCst) <= g0 + 1,
        "within outage_ttl, at most one reload: {} loads",
        GUARDED.load(SeqCst) - g0
    );
    assert!(guarded_stats().outage_hits >= 19);
    assert_eq!(
        UNGUARDED.load(SeqCst),
        u1 + 20,
        "control (outage_ttl = 0): every call reaches the source"
    );

    // Past outage_ttl, one reload, then L1 again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let g1 = GUARDED.load(SeqCst);
    for _ in 0..20 {
        assert_eq!(guarded(1).await, 1);
    }
    assert_eq!(GUARDED.load(SeqCst), g1 + 1, "one reload per outage_ttl");

    s.restart();
    until_real("subscribed again", || {
        health().iter().any(|h| h.subscribed == Some(true))
    })
    .await;
    // The subscription answering is evidence enough: the breaker probes at once rather
    // than at the end of its cool-down.
    let back = std::time::Instant::now();
    until_real("the breaker closed", reachable).await;
    assert!(
        back.elapsed() < Duration::from_millis(1500),
        "reachable {:?} after the subscription was back",
        back.elapsed()
    );
}

// ---- missed invalidations are replayed --------------------------------------------------------

static OUTBOX_SOURCE: AtomicU32 = AtomicU32::new(1);

#[cached(ttl = 600, key = "ox:<id>", backend = redis)]
async fn outboxed(id: u64) -> u32 {
    let _ = id;
    OUTBOX_SOURCE.load(SeqCst)
}

fn pending() -> usize {
    health().iter().map(|h| h.outbox_pending).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_that_missed_redis_is_replayed_when_it_answers_again() {
    let s = server();
    until_real("Redis reachable", reachable).await;
    assert_eq!(outboxed(1).await, 1);
    assert_eq!(outboxed(1).await, 1, "from Redis");
    // Redis stops answering (its data stays): the invalidation fails and is kept.
    s.cli(&["client", "pause", "1500", "all"]);
    OUTBOX_SOURCE.store(2, SeqCst);
    assert!(
        outboxed_invalidate(1).await.is_err(),
        "the caller is told it failed"
    );
    assert!(pending() >= 1, "kept for replay");
    // Once Redis answers, the invalidation is replayed: nobody reads the old value.
    until_real("replayed", || pending() == 0).await;
    until_real("reachable", reachable).await;
    assert_eq!(s.cli(&["exists", "out:ox:1"]), "0", "the old value is gone");
    assert_eq!(outboxed(1).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_latency_and_the_servers_eviction_policy() {
    let _s = server();
    until_real("Redis reachable", reachable).await;
    remote(5).await;
    until_real("the server's policy is known", || {
        health().iter().any(|h| h.eviction_policy.is_some())
    })
    .await;
    let h = health()
        .into_iter()
        .find(|h| h.eviction_policy.is_some())
        .unwrap();
    assert!(h.op_latency_p99 > Duration::ZERO, "{h:?}");
    assert!(h.evicted_keys.is_some());
    // A test server runs with Redis's default policy, which is wrong for a cache.
    assert_eq!(h.eviction_policy.as_deref(), Some("noeviction"));
    assert!(
        h.warnings.iter().any(|w| w.contains("noeviction")),
        "{:?}",
        h.warnings
    );
}

// ---- write paths during an outage ------------------------------------------------------------

static ACCOUNT_SOURCE: AtomicU32 = AtomicU32::new(1);

#[cached(ttl = 600, key = "acct:<id>", backend = redis)]
async fn account(id: u64) -> u32 {
    let _ = id;
    ACCOUNT_SOURCE.load(SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_with_redis_down_still_writes_the_source() {
    let mut s = server();
    until_real("Redis reachable", reachable).await;
    assert_eq!(account(1).await, 1);
    s.kill();
    let errors = account_stats().backend_errors;
    let written = cachemacro_runtime::write_through(
        async {
            ACCOUNT_SOURCE.store(2, SeqCst); // the database write
            Ok::<u32, String>(2)
        },
        |v: &u32| account_put(1, *v),
    )
    .await;
    assert_eq!(
        written,
        Ok(2),
        "the write succeeded although the cache did not"
    );
    assert!(
        account_stats().backend_errors > errors,
        "the failed put is counted"
    );
    assert_eq!(account(1).await, 2, "and no stale value is served");
    s.restart();
    until_real("Redis reachable again", || {
        futures_block(account(1));
        reachable()
    })
    .await;
    assert_eq!(account(1).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_retries_a_batch_through_a_redis_restart() {
    use redis::AsyncCommands;
    let mut s = server();
    until_real("Redis reachable", reachable).await;
    let url = s.url();
    let wb = cachemacro_runtime::WriteBehind::builder(move |batch: Vec<(String, u64)>| {
        let url = url.clone();
        async move {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = tokio::time::timeout(
                Duration::from_millis(300),
                client.get_multiplexed_async_connection(),
            )
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timeout")))??;
            let mut pipe = redis::pipe();
            for (k, v) in &batch {
                pipe.set(format!("wb:{k}"), *v).ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
            let _: i64 = conn.incr("wb:batches", 1).await?;
            Ok::<(), redis::RedisError>(())
        }
    })
    .max_batch(50)
    .flush_interval(Duration::from_millis(20))
    .retries(10, Duration::from_millis(50))
    .build();

    s.kill();
    for i in 0..100u64 {
        wb.write(format!("k{i}"), i).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // batches fail meanwhile
    assert!(wb.stats().retries > 0, "the sink failed and was retried");
    s.restart();
    wb.flush().await;
    let stats = wb.shutdown().await;
    assert_eq!((stats.written, stats.failed), (100, 0), "{stats:?}");
    assert_eq!(s.cli(&["get", "wb:k99"]), "99");
}

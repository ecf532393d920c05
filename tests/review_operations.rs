//! Seams found by reviewing the operations features (outbox, source timeouts, refresh
//! ahead, bulk reads), each a test that failed before its fix. Real Redis behind a proxy
//! that can stall it; multi-thread runtimes.
#![cfg(feature = "redis")]
// The serial lock is held for a whole test on purpose: the proxy's stalls are global.
#![allow(clippy::await_holding_lock)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use cachemacro_runtime::{cached, configure, health, Config, SourceTimeout};
use common::proxy::Proxy;
use common::redis::Server;
use common::{until_real, Gate};

struct World {
    _server: Server,
    proxy: Proxy,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let server = Server::start();
        let proxy = Proxy::start(server.port);
        configure(
            Config::default()
                .redis_url(proxy.url())
                .prefix("rv:")
                .op_timeout(Duration::from_millis(500))
                .connect_timeout(Duration::from_millis(300))
                .breaker(3, Duration::from_millis(300))
                .heartbeat(Duration::from_millis(100)),
        )
        .unwrap();
        World {
            _server: server,
            proxy,
        }
    })
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn back() -> bool {
    health()
        .iter()
        .all(|h| h.reachable && h.subscribed != Some(false))
}

fn pending() -> usize {
    health().iter().map(|h| h.outbox_pending).sum()
}

// ---- a replayed invalidation reaches this process's L1 -------------------------------------

static OBX: AtomicU64 = AtomicU64::new(1);

#[cached(ttl = 600, key = "obx:<id>", backend = tiered)]
async fn obx(id: u64) -> u64 {
    OBX.load(SeqCst) * 100 + id
}

#[cached(ttl = 600, key = "probe:<id>", backend = redis)]
async fn probe(id: u64) -> u64 {
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_invalidation_reaches_the_l1_of_the_process_that_made_it() {
    let w = world();
    let _s = serial();
    tokio::spawn(async move {
        assert_eq!(obx(1).await, 101);
        until_real("subscribed", || {
            health().iter().any(|h| h.subscribed == Some(true))
        })
        .await;
        assert_eq!(obx(1).await, 101, "L1 and Redis hold 101");
        w.proxy.freeze();
        OBX.store(2, SeqCst);
        // Other invalidations queued first, so key 1's replay comes late.
        for i in 1_000..3_000 {
            let _ = obx_invalidate(i).await;
        }
        assert!(obx_invalidate(1).await.is_err(), "Redis is stalled");
        // The subscription notices (missed heartbeats) and L1 stops being trusted…
        until_real("subscription lost", || {
            health().iter().any(|h| h.subscribed == Some(false))
        })
        .await;
        w.proxy.cut();
        w.proxy.unfreeze();
        // …until it is back (L1 flushed then) and Redis answers.
        until_real("Redis back and subscribed", || {
            health()
                .iter()
                .all(|h| h.reachable && h.subscribed != Some(false))
        })
        .await;
        // Read before key 1 is replayed: the old value comes from Redis into L1.
        // Connections cut by the proxy fail once before they reconnect: use them first.
        for _ in 0..5 {
            probe(7).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let early = obx(1).await;
        let raced = pending() > 0;
        until_real("replayed", || pending() == 0).await;
        assert_eq!(
            obx(1).await,
            201,
            "after the replay this process still served {early} (read before the replay: {raced})"
        );
    })
    .await
    .unwrap();
}

// ---- a stalled Redis is not the source's timeout -------------------------------------------

#[derive(Debug, PartialEq)]
struct Failure(String);

impl From<SourceTimeout> for Failure {
    fn from(t: SourceTimeout) -> Self {
        Failure(t.to_string())
    }
}

#[cached(ttl = 60, hard_timeout = "100ms", key = "ht:<id>", backend = redis)]
async fn fast(id: u64) -> Result<u64, Failure> {
    Ok(id)
}

static SLOW_GATE: Gate = Gate::new();

#[cached(ttl = 60, hard_timeout = "100ms", key = "hts:<id>", backend = redis)]
async fn slow(id: u64) -> Result<u64, Failure> {
    SLOW_GATE.pass().await;
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_does_not_fail_a_call_whose_source_answers() {
    let w = world();
    let _s = serial();
    tokio::spawn(async move {
        until_real("Redis back", back).await;
        assert_eq!(fast(1).await, Ok(1));
        w.proxy.freeze();
        let r = fast(2).await;
        w.proxy.unfreeze();
        assert_eq!(
            r,
            Ok(2),
            "the cache's stall was reported as the source's timeout"
        );
        until_real("Redis back", back).await;
        // The control: a source slower than `hard_timeout` does time out.
        let started = Instant::now();
        let r = slow(3).await;
        assert!(r.is_err(), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        SLOW_GATE.open(1);
    })
    .await
    .unwrap();
}

// ---- scheduled reloads do not knock other keys out of L1 -----------------------------------

static RA_GATED: AtomicBool = AtomicBool::new(false);
static RA_GATE: Gate = Gate::new();
static RA_DONE: AtomicU32 = AtomicU32::new(0);

#[cached(
    ttl = "30s",
    refresh_every = "1s",
    refresh_idle = "20s",
    key = "ra:<id>"
)]
async fn ra(id: u64) -> u64 {
    if id == 0 && RA_GATED.load(SeqCst) {
        RA_GATE.pass().await;
        RA_DONE.fetch_add(1, SeqCst);
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_reloads_do_not_drop_each_other_from_l1() {
    tokio::spawn(async {
        assert_eq!(ra(0).await, 0);
        RA_GATED.store(true, SeqCst);
        until_real("key 0's reload is at the source", || RA_GATE.entered() == 1).await;
        let before = ra_stats().background_refreshes;
        // Scheduled keys; some share key 0's generation stripe (there are 256).
        for id in 1..=2_048 {
            ra(id).await;
        }
        until_real("they reloaded", || {
            ra_stats().background_refreshes >= before + 2_048
        })
        .await;
        RA_GATED.store(false, SeqCst);
        RA_GATE.open(1);
        until_real("key 0 reloaded", || RA_DONE.load(SeqCst) == 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let misses = ra_stats().misses;
        for id in 0..=2_048 {
            assert_eq!(ra(id).await, id);
        }
        assert_eq!(
            ra_stats().misses,
            misses,
            "a scheduled key met a miss: another key's reload dropped it"
        );
    })
    .await
    .unwrap();
}

// ---- keys read through `_many` stay scheduled ------------------------------------------------

#[cached(ttl = "1s", refresh_every = "200ms", key = "ah:<id>", backend = redis)]
async fn ah(id: u64) -> u64 {
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_read_only_through_many_stay_scheduled() {
    world();
    let _s = serial();
    tokio::spawn(async {
        until_real("Redis back", back).await;
        assert_eq!(ah_many([1, 2]).await, [1, 2]);
        let misses = ah_stats().misses;
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            assert_eq!(ah_many([1, 2]).await, [1, 2]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            ah_stats().misses,
            misses,
            "the schedule ended (idle 800 ms) and the keys expired under steady reads"
        );
    })
    .await
    .unwrap();
}

//! Trust at the seams: where two parts meet (the engine and the breaker, a flight and an
//! invalidation, L1 and Redis, one function's keys and another's), the cache never serves
//! what it was told to drop, and never switches itself off. Real Redis throughout; faults
//! come from a proxy between the cache and the server (tests/common/proxy.rs), one per
//! test that needs one, so tests do not disturb each other.
#![cfg(feature = "redis")]

mod common;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cachemacro_runtime::{cached, configure, BackendConfig, Config};
use common::proxy::Proxy;
use common::redis::Server;
use common::{until, until_real, Gate};

const PREFIX: &str = "seams:";

struct World {
    server: Server,
    probe: Proxy,
    race: Proxy,
    lock: Proxy,
    down: Proxy,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let server = Server::start();
        let proxy = || Proxy::start(server.port);
        let w = World {
            probe: proxy(),
            race: proxy(),
            lock: proxy(),
            down: proxy(),
            server,
        };
        configure(
            Config::default()
                .redis_url(w.server.url())
                .prefix(PREFIX)
                .op_timeout(Duration::from_millis(300))
                .breaker(3, Duration::from_millis(300))
                .heartbeat(Duration::from_millis(100))
                .max_value_bytes(16 * 1024)
                .generation_retention(Duration::from_secs(1))
                .lock_wait(Duration::from_millis(400))
                .backend("probe", BackendConfig::redis(w.probe.url()))
                .backend("race", BackendConfig::tiered(w.race.url()))
                .backend("lock", BackendConfig::redis(w.lock.url()))
                .backend("down", BackendConfig::redis(w.down.url())),
        )
        .unwrap();
        w
    })
}

/// Runs `f` on a runtime of its own, on a thread of its own (its Redis requests go through
/// the cache's I/O thread, not this test runtime's connection).
fn on_another_runtime<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
}

fn health_of(backend: &str) -> cachemacro_runtime::BackendHealth {
    cachemacro_runtime::health()
        .into_iter()
        .find(|h| h.backend == backend)
        .unwrap_or_else(|| panic!("no backend {backend} in {:?}", cachemacro_runtime::health()))
}

// ---- 1. a cancelled probe ----------------------------------------------------------------

static PROBED_LOADS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 60, key = "probe:<id>", backend = "probe")]
async fn probed(id: u64) -> u64 {
    PROBED_LOADS.fetch_add(1, SeqCst);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_probe_does_not_switch_the_redis_tier_off() {
    let w = world();
    assert_eq!(probed(1).await, 1);
    assert_eq!(probed(1).await, 1);
    assert_eq!(probed_stats().hits, 1, "Redis in use");

    // Redis stops answering: calls go to the source, and the breaker opens.
    w.probe.freeze();
    let deadline = Instant::now() + Duration::from_secs(20);
    while health_of("probe").reachable {
        assert!(Instant::now() < deadline, "the breaker never opened");
        assert_eq!(probed(2).await, 2);
    }
    w.probe.unfreeze();
    tokio::time::sleep(Duration::from_millis(400)).await; // the cool-down is over

    // The next call probes; its caller gives up while Redis has not answered yet.
    let hold = w.probe.hold_next(&["MGET"]);
    let cancelled = tokio::time::timeout(Duration::from_millis(100), probed(1)).await;
    assert!(
        cancelled.is_err(),
        "the probe was held; its caller was cancelled"
    );
    hold.release();

    // Redis answers again: within a few cool-downs the cache is in use again.
    let hits = probed_stats().hits;
    let deadline = Instant::now() + Duration::from_secs(5);
    while probed_stats().hits == hits {
        assert!(
            Instant::now() < deadline,
            "the Redis tier stayed off after a cancelled probe: {:?}",
            health_of("probe")
        );
        assert_eq!(probed(1).await, 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(health_of("probe").reachable);
    let inv = probed_invalidate(1).await;
    assert!(inv.is_ok(), "explicit operations work again: {inv:?}");
}

// ---- 2. a call after an invalidation never joins an older load ---------------------------

static PRICE: AtomicU64 = AtomicU64::new(0);
static PRICE_GATE: Gate = Gate::new();

#[cached(ttl = 60, soft_ttl = 1, key = "price:<id>")]
async fn price(id: u64) -> u64 {
    let p = PRICE.load(SeqCst) + id;
    PRICE_GATE.pass().await;
    p
}

#[tokio::test(start_paused = true)]
async fn a_call_after_invalidate_gets_a_value_loaded_after_it() {
    PRICE.store(10, SeqCst);
    PRICE_GATE.open(1);
    assert_eq!(price(0).await, 10);
    tokio::time::advance(Duration::from_secs(2)).await;
    // Stale: served at once, and one refresh starts; it reads the old price, then waits.
    assert_eq!(price(0).await, 10);
    until("the refresh read the price", || PRICE_GATE.entered() == 2).await;

    // The price changes and the cache is told so.
    PRICE.store(20, SeqCst);
    price_invalidate(0).await.unwrap();
    let after = tokio::spawn(price(0));
    until(
        "a new load started for the call after the invalidation",
        || PRICE_GATE.entered() == 3,
    )
    .await;
    PRICE_GATE.open(2);
    assert_eq!(
        after.await.unwrap(),
        20,
        "not the price the invalidation dropped"
    );
    // And the refresh that read the old price did not write it back.
    assert_eq!(price(0).await, 20);
}

static STOCK: AtomicU64 = AtomicU64::new(0);
static STOCK_GATE: Gate = Gate::new();

#[cached(ttl = 60, soft_ttl = "200ms", key = "stock:<id>", backend = tiered)]
async fn stock(id: u64) -> u64 {
    let s = STOCK.load(SeqCst) + id;
    STOCK_GATE.pass().await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_put_gets_the_put_value_not_a_refresh_in_flight() {
    world();
    STOCK.store(1, SeqCst);
    STOCK_GATE.open(1);
    assert_eq!(stock(0).await, 1);
    until_real("the backplane is up", || {
        health_of("default").subscribed == Some(true)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stock(0).await, 1, "stale, served at once");
    until_real("the refresh read the old stock", || {
        STOCK_GATE.entered() == 2
    })
    .await;
    STOCK.store(5, SeqCst);
    stock_put(0, 5).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), stock(0)).await;
    assert_eq!(got.ok(), Some(5), "the put value, at once");
    STOCK_GATE.open(1);
    until_real("the old refresh finished", || STOCK_GATE.entered() == 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        stock(0).await,
        5,
        "the refresh that read the old stock did not land"
    );
}

// ---- 3. stale readers never wait on the redis backend ------------------------------------

static STALE_GATE: Gate = Gate::new();

#[cached(ttl = 60, soft_ttl = "300ms", key = "stale:<id>", backend = redis)]
async fn stale_r(id: u64) -> u64 {
    STALE_GATE.pass().await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_readers_never_wait_on_the_redis_backend() {
    world();
    STALE_GATE.open(1);
    assert_eq!(stale_r(1).await, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let first = tokio::time::timeout(Duration::from_secs(2), stale_r(1)).await;
    assert_eq!(
        first.ok(),
        Some(1),
        "the first stale reader is served at once"
    );
    until_real("the refresh is running", || STALE_GATE.entered() == 2).await;
    for _ in 0..5 {
        let next = tokio::time::timeout(Duration::from_secs(2), stale_r(1)).await;
        assert_eq!(
            next.ok(),
            Some(1),
            "later stale readers do not wait on the refresh"
        );
    }
    STALE_GATE.open(1);
    let s = stale_r_stats();
    assert_eq!(s.background_refreshes, 1, "one refresh: {s:?}");
    assert!(s.stale_hits >= 6, "{s:?}");
}

// ---- 4. one function's keys and another's ------------------------------------------------

#[cached(ttl = 60, key = "user:<id>", backend = redis)]
async fn user_by_id(id: u64) -> String {
    format!("user {id}")
}

#[cached(ttl = 60, key = "<token>", backend = redis)]
async fn by_token(token: String) -> String {
    format!("token {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_input_cannot_reach_another_functions_entry_or_the_caches_own_keys() {
    let w = world();
    assert_eq!(user_by_id(42).await, "user 42");
    assert_eq!(
        by_token("user:42".into()).await,
        "token user:42",
        "not the entry of user_by_id(42)"
    );
    assert_eq!(w.server.cli(&["exists", "seams:user:42"]), "1");
    assert_eq!(w.server.cli(&["exists", "seams:user%3A42"]), "1");
    // A value shaped like the cache's own keys lands beside them, never on them.
    user_by_id_invalidate(42).await.unwrap();
    let generation = w.server.cli(&["get", "{seams:user:42} gen"]);
    assert!(!generation.is_empty(), "the generation key exists");
    assert_eq!(
        by_token("{seams:user:42} gen".into()).await,
        "token {seams:user:42} gen"
    );
    assert_eq!(w.server.cli(&["get", "{seams:user:42} gen"]), generation);
    assert_eq!(
        w.server
            .cli(&["exists", "seams:%7Bseams%3Auser%3A42%7D%20gen"]),
        "1"
    );
}

#[cached(ttl = 60, key = "dup:<a>", backend = redis)]
async fn dup_a(a: u64) -> u64 {
    a
}

#[cached(ttl = 60, key = "dup:<b>", backend = redis)]
async fn dup_b(b: u64) -> u64 {
    b + 1
}

#[cached(ttl = 60, key = "shared:<a>", backend = redis, name = "shared")]
async fn shared_a(a: u64) -> u64 {
    a
}

#[cached(ttl = 60, key = "shared:<b>", backend = redis, name = "shared")]
async fn shared_b(b: u64) -> u64 {
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_functions_whose_keys_collide_are_reported_with_both_names() {
    world();
    dup_a(1).await;
    dup_b(1).await;
    shared_a(1).await;
    shared_b(1).await;
    let conflicts = health_of("default").conflicts;
    assert!(
        conflicts.iter().any(|c| c.contains("dup_a")
            && c.contains("dup_b")
            && c.contains("dup:<a>")
            && c.contains("dup:<b>")),
        "{conflicts:?}"
    );
    assert!(
        !conflicts.iter().any(|c| c.contains("`shared`")),
        "a shared `name` is deliberate: {conflicts:?}"
    );
}

// ---- 6. own-process L1 race (tiered) -------------------------------------------------------

static RACE_VERSION: AtomicU64 = AtomicU64::new(0);
/// The two race tests share the proxy's holds: one at a time.
static RACE_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cached(ttl = 60, key = "race:<id>", backend = "race", tags = ["rt:<id>"])]
async fn race(id: u64) -> u64 {
    RACE_VERSION.load(SeqCst) + id
}

/// Warms the key and waits until this runtime has its own connection (its probe's PING went
/// through the proxy), so the reader below does not queue behind the held command.
async fn warm_race(w: &World, id: u64) {
    race(id).await;
    until_real("the backplane is up", || {
        health_of("race").subscribed == Some(true)
    })
    .await;
    let pings = w.race.commands_seen(Some("PING"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        race(id).await;
        if w.race.commands_seen(Some("PING")) > pings + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no per-runtime connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_invalidate_returns_this_process_never_serves_the_old_value() {
    let _serial = RACE_SERIAL.lock().await;
    let w = world();
    RACE_VERSION.store(100, SeqCst);
    warm_race(w, 1).await;
    assert_eq!(race(1).await, 101);
    RACE_VERSION.store(200, SeqCst);

    // The invalidation's Redis step is held; meanwhile this process reads the key.
    let hold = w.race.hold_next(&["EVALSHA"]);
    let inv = on_another_runtime(race_invalidate(1));
    let hold = tokio::task::spawn_blocking(move || {
        hold.wait_held();
        hold
    })
    .await
    .unwrap();
    let _during = race(1).await; // old or new: the invalidation has not returned
    hold.release();
    inv.join().unwrap().unwrap();
    assert_eq!(
        race(1).await,
        201,
        "the invalidated value came back from L1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_invalidate_tag_returns_this_process_never_serves_the_old_value() {
    let _serial = RACE_SERIAL.lock().await;
    let w = world();
    RACE_VERSION.store(300, SeqCst);
    warm_race(w, 2).await;
    assert_eq!(race(2).await, 302);
    RACE_VERSION.store(400, SeqCst);

    let hold = w.race.hold_next(&["EVALSHA"]);
    let inv = on_another_runtime(cachemacro_runtime::invalidate_tag("rt:2"));
    let hold = tokio::task::spawn_blocking(move || {
        hold.wait_held();
        hold
    })
    .await
    .unwrap();
    let _during = race(2).await;
    hold.release();
    let _ = inv.join().unwrap();
    assert_eq!(
        race(2).await,
        402,
        "the tag-invalidated value came back from L1"
    );
}

// ---- 7. an oversized value leaves nothing stale behind -----------------------------------

static BIG_LEN: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 60, key = "big:<id>", backend = redis)]
async fn big(id: u64) -> String {
    "x".repeat(BIG_LEN.load(SeqCst) as usize + id as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_too_large_to_store_removes_the_previous_one() {
    let w = world();
    BIG_LEN.store(10, SeqCst);
    assert_eq!(big(0).await.len(), 10);
    assert_eq!(w.server.cli(&["exists", "seams:big:0"]), "1");
    BIG_LEN.store(20_000, SeqCst); // over max_value_bytes (16 KiB)
    assert_eq!(big_refresh(0).await.len(), 20_000);
    assert_eq!(
        w.server.cli(&["exists", "seams:big:0"]),
        "0",
        "the previous value is gone, not served in place of the new one"
    );
    assert_eq!(big(0).await.len(), 20_000);
    let put = big_put(0, "y".repeat(30_000)).await;
    assert!(put.is_err(), "a put that cannot be stored says so");
    assert_eq!(w.server.cli(&["exists", "seams:big:0"]), "0");
    let s = big_stats();
    assert!(s.oversized >= 2, "counted: {s:?}");
}

// ---- 8. versions never repeat ------------------------------------------------------------

static GEN_VERSION: AtomicU64 = AtomicU64::new(0);
static GEN_GATE: Gate = Gate::new();

#[cached(ttl = 60, key = "gen:<id>", backend = redis)]
async fn generational(id: u64) -> u64 {
    let v = GEN_VERSION.load(SeqCst) + id;
    GEN_GATE.pass().await;
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_load_stays_invalid_after_its_generation_expires() {
    world();
    generational_invalidate(0).await.unwrap();
    GEN_VERSION.store(1, SeqCst);
    let load = tokio::spawn(generational(0));
    until_real("the load started", || GEN_GATE.entered() == 1).await;
    // Twice invalidated while the load runs, the generation forgotten in between
    // (generation_retention is 1 s here): INCR would hand out the load's generation again.
    GEN_VERSION.store(2, SeqCst);
    generational_invalidate(0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    generational_invalidate(0).await.unwrap();
    GEN_GATE.open(2);
    assert_eq!(
        load.await.unwrap(),
        1,
        "its caller started before the invalidations"
    );
    assert_eq!(
        generational(0).await,
        2,
        "the invalidated load was not written back"
    );
}

// ---- 14. the lock winner re-reads Redis ----------------------------------------------------

static LK_LOADS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 60, key = "lk:<id>", backend = "lock", stampede = lock, name = "lk")]
async fn lk(id: u64) -> u64 {
    LK_LOADS.fetch_add(1, SeqCst);
    100 + id
}

/// The same entries, through another connection: "another process".
#[cached(ttl = 60, key = "lk:<id>", backend = redis, name = "lk")]
async fn lk_elsewhere(id: u64) -> u64 {
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_winner_takes_a_value_written_between_its_read_and_its_lock() {
    let w = world();
    let hold = w.lock.hold_next(&["SET"]);
    let call = tokio::spawn(lk(1));
    let hold = tokio::task::spawn_blocking(move || {
        hold.wait_held();
        hold
    })
    .await
    .unwrap();
    // Between this caller's read (a miss) and its lock, another process stores the value.
    lk_elsewhere_put(1, 7).await.unwrap();
    hold.release();
    assert_eq!(call.await.unwrap(), 7, "the value written meanwhile");
    assert_eq!(LK_LOADS.load(SeqCst), 0, "no second load");
}

// ---- 17. day-one details ---------------------------------------------------------------------

static NONE_LOADS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 60, key = "row:<id>")]
async fn row(id: u64) -> Result<Option<u64>, String> {
    NONE_LOADS.fetch_add(1, SeqCst);
    Ok((id > 0).then_some(id))
}

static NONE_CACHED_LOADS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 60, key = "row2:<id>", cache_none = true, none_ttl = "1s")]
async fn row_cached_none(id: u64) -> Result<Option<u64>, String> {
    NONE_CACHED_LOADS.fetch_add(1, SeqCst);
    Ok((id > 0).then_some(id))
}

#[tokio::test(start_paused = true)]
async fn cache_none_and_none_ttl_govern_an_option_inside_a_result() {
    assert_eq!(row(0).await, Ok(None));
    assert_eq!(row(0).await, Ok(None));
    assert_eq!(
        NONE_LOADS.load(SeqCst),
        2,
        "Ok(None) is not cached without cache_none"
    );
    assert_eq!(row(3).await, Ok(Some(3)));
    assert_eq!(row(3).await, Ok(Some(3)));
    assert_eq!(NONE_LOADS.load(SeqCst), 3, "Ok(Some) is");

    assert_eq!(row_cached_none(0).await, Ok(None));
    assert_eq!(row_cached_none(0).await, Ok(None));
    assert_eq!(NONE_CACHED_LOADS.load(SeqCst), 1, "cached with cache_none");
    tokio::time::advance(Duration::from_millis(1100)).await;
    assert_eq!(row_cached_none(0).await, Ok(None));
    assert_eq!(NONE_CACHED_LOADS.load(SeqCst), 2, "for none_ttl, not ttl");
}

#[cached(ttl = 60, key = "pf:<id>", backend = "down")]
async fn put_target(id: u64) -> u64 {
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_could_not_invalidate_either_does_not_claim_it_did() {
    let w = world();
    assert_eq!(put_target(1).await, 1);
    w.down.freeze();
    let err = put_target_put(1, 5).await.unwrap_err().to_string();
    w.down.unfreeze();
    assert!(
        !err.contains("the key was invalidated instead"),
        "the invalidation failed too: {err}"
    );
    assert!(err.contains("failed too"), "{err}");
}

// ---- 18. the stampede signal -----------------------------------------------------------------

static HERD_GATE: Gate = Gate::new();
static COALESCED_GATE: Gate = Gate::new();

#[cached(ttl = 60, key = "herd:<id>", stampede = none)]
async fn herd(id: u64) -> u64 {
    HERD_GATE.pass().await;
    id
}

#[cached(ttl = 60, key = "herd2:<id>")]
async fn herd_coalesced(id: u64) -> u64 {
    COALESCED_GATE.pass().await;
    id
}

#[tokio::test(start_paused = true)]
async fn the_stampede_signal_counts_misses_that_reached_the_source() {
    let tasks: Vec<_> = (0..5).map(|_| tokio::spawn(herd(1))).collect();
    until("every caller reached the source", || {
        HERD_GATE.entered() == 5
    })
    .await;
    HERD_GATE.open(5);
    for t in tasks {
        t.await.unwrap();
    }
    let s = herd_stats();
    assert_eq!(s.stampede_escapes, 4, "{s:?}");
    assert_eq!(s.stampede_signal(), 4);

    let tasks: Vec<_> = (0..5).map(|_| tokio::spawn(herd_coalesced(1))).collect();
    until("the leader reached the source", || {
        COALESCED_GATE.entered() == 1
    })
    .await;
    until("the others joined", || {
        herd_coalesced_stats().coalesced == 4
    })
    .await;
    COALESCED_GATE.open(1);
    for t in tasks {
        t.await.unwrap();
    }
    let s = herd_coalesced_stats();
    assert_eq!(s.stampede_signal(), 0, "protection held: {s:?}");
    assert_eq!(s.stampede_absorbed(), 4);
    let table = cachemacro_runtime::stats::table(&[s]);
    assert!(
        table.contains("escaped") && table.contains("absorbed"),
        "{table}"
    );
}

static WAITED_LOADS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 60, key = "lw:<id>", backend = redis, stampede = lock)]
async fn lock_waited(id: u64) -> u64 {
    WAITED_LOADS.fetch_add(1, SeqCst);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_past_lock_wait_is_an_escape() {
    let w = world();
    // Another process holds the key's lock and never writes.
    w.server
        .cli(&["set", "{seams:lw:1} lock", "someone", "px", "10000"]);
    assert_eq!(lock_waited(1).await, 1);
    let s = lock_waited_stats();
    assert_eq!((s.lock_waits, s.loads), (1, 1), "{s:?}");
    assert_eq!(s.stampede_escapes, 1, "loaded without the lock: {s:?}");
}

// ---- 15. user code off the cache's I/O thread --------------------------------------------------

#[cached(ttl = 60, key = "hot:<id>", backend = tiered)]
async fn hot(id: u64) -> u64 {
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_sink_or_handler_does_not_touch_tiered_hits() {
    let w = world();
    assert_eq!(hot(1).await, 1);
    until_real("the backplane is up", || {
        health_of("default").subscribed == Some(true)
    })
    .await;
    // Careless user code: blocking calls inside async callbacks.
    let sink = cachemacro_runtime::WriteBehind::builder(|_batch: Vec<(u64, u64)>| async {
        std::thread::sleep(Duration::from_millis(500));
        Ok::<_, std::io::Error>(())
    })
    .flush_interval(Duration::from_millis(10))
    .build();
    let listener = cachemacro_runtime::events::Router::new()
        .on("slow.{id}", |_e| async {
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        })
        .listen("seams-slow");
    until_real("the event listener is up", || listener.subscribed()).await;
    let loads = hot_stats().loads;
    let end = Instant::now() + Duration::from_millis(1500);
    let mut slowest = Duration::ZERO;
    let mut i = 0;
    while Instant::now() < end {
        sink.write(i, i).await.unwrap();
        if i % 10 == 0 {
            w.server.cli(&["publish", "seams-slow", "slow.1"]);
        }
        let t = Instant::now();
        assert_eq!(hot(1).await, 1);
        slowest = slowest.max(t.elapsed());
        assert_eq!(
            health_of("default").subscribed,
            Some(true),
            "the backplane kept its heartbeat"
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(hot_stats().loads, loads, "every call an L1 hit");
    assert!(
        slowest < Duration::from_millis(50),
        "slowest hit {slowest:?}"
    );
    drop(listener);
    drop(sink);
}

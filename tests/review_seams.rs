//! An adversarial review of the seams of issue 8 ("trust at the seams"): each test stages one
//! scenario where two parts meet and states what the contract (../shared/CONTRACT.md) or the
//! docs promise. Memory-backend scenarios use gates only; Redis ones run against a
//! `redis-server` of this binary's own, with a fault-injecting proxy where a command must be
//! held.
#![cfg(feature = "redis")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::OnceLock;
use std::time::Duration;

use cachemacro_runtime::{cached, configure, BackendConfig, Config};
use common::proxy::Proxy;
use common::redis::Server;
use common::{until, until_real, Gate};

const PREFIX: &str = "rvw:";

struct World {
    server: Server,
    /// Between the cache and the server for the `held` backend (tiered).
    held: Proxy,
    /// For the `lockp` backend (redis).
    lockp: Proxy,
    /// For the `stall` backend (redis).
    stall: Proxy,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let server = Server::start();
        let held = Proxy::start(server.port);
        let lockp = Proxy::start(server.port);
        let stall = Proxy::start(server.port);
        configure(
            Config::default()
                .redis_url(server.url())
                .prefix(PREFIX)
                .op_timeout(Duration::from_secs(1))
                .breaker(3, Duration::from_millis(300))
                .heartbeat(Duration::from_millis(100))
                .lock_wait(Duration::from_secs(2))
                .backend("held", BackendConfig::tiered(held.url()))
                .backend("lockp", BackendConfig::redis(lockp.url()))
                .backend("stall", BackendConfig::redis(stall.url())),
        )
        .unwrap();
        World {
            server,
            held,
            lockp,
            stall,
        }
    })
}

fn health_of(backend: &str) -> cachemacro_runtime::BackendHealth {
    cachemacro_runtime::health()
        .into_iter()
        .find(|h| h.backend == backend)
        .unwrap_or_else(|| panic!("no backend {backend} in {:?}", cachemacro_runtime::health()))
}

/// Invalidates `n` keys of some function other than the one under test's key: with 256
/// generation stripes per engine, one of them shares the key's stripe (the chance that none
/// does is (255/256)^4096, about 1e-7).
const OTHER_KEYS: u64 = 4096;

// ---- A. one key's invalidation sends another key's coalesced waiters back to the source --

static COAL_LOADS: AtomicU64 = AtomicU64::new(0);
static COAL_GATE: Gate = Gate::new();

#[cached(ttl = 600, key = "coal:<id>")]
async fn coal(id: u64) -> u64 {
    COAL_LOADS.fetch_add(1, SeqCst);
    if id == 0 {
        COAL_GATE.pass().await;
    }
    id + 1000
}

#[tokio::test]
async fn invalidating_other_keys_does_not_send_coalesced_waiters_back_to_the_source() {
    world();
    let leader = tokio::spawn(coal(0));
    until("the leader is in the source", || COAL_GATE.entered() == 1).await;
    let waiter = tokio::spawn(coal(0));
    until("the second caller joined the flight", || {
        coal_stats().coalesced == 1
    })
    .await;
    // The application invalidates other keys of the function meanwhile (never key 0).
    for other in 1..=OTHER_KEYS {
        coal_invalidate(other).await.unwrap();
    }
    COAL_GATE.open(10);
    assert_eq!(leader.await.unwrap(), 1000);
    assert_eq!(waiter.await.unwrap(), 1000);
    assert_eq!(
        COAL_LOADS.load(SeqCst),
        1,
        "two concurrent misses of key 0, which nobody invalidated, made {} source calls \
         (coalesce promises one): {:?}",
        COAL_LOADS.load(SeqCst),
        coal_stats()
    );
}

// ---- B. a `*_refresh` "superseded" by another key's invalidation keeps the old value -------

static RF_VALUE: AtomicU64 = AtomicU64::new(0);
static RF_BLOCK: AtomicBool = AtomicBool::new(false);
static RF_GATE: Gate = Gate::new();

#[cached(ttl = 600, key = "rf:<id>")]
async fn rf(id: u64) -> u64 {
    let v = RF_VALUE.load(SeqCst);
    if id == 0 && RF_BLOCK.load(SeqCst) {
        RF_GATE.pass().await;
    }
    v
}

#[tokio::test]
async fn after_refresh_returns_the_old_value_is_not_served_memory() {
    world();
    RF_VALUE.store(1, SeqCst);
    assert_eq!(rf(0).await, 1);
    assert_eq!(rf(0).await, 1, "cached");

    RF_VALUE.store(2, SeqCst);
    RF_BLOCK.store(true, SeqCst);
    let refresh = tokio::spawn(rf_refresh(0));
    until("the refresh is in the source", || RF_GATE.entered() == 1).await;
    for other in 1..=OTHER_KEYS {
        rf_invalidate(other).await.unwrap();
    }
    RF_GATE.open(1);
    assert_eq!(
        refresh.await.unwrap(),
        2,
        "the refresh loaded the new value"
    );
    RF_BLOCK.store(false, SeqCst);
    assert_eq!(
        rf(0).await,
        2,
        "*_refresh returned 2, yet the cache still serves the value it replaced"
    );
}

// ---- C. the same on tiered, through `*_put` ------------------------------------------------

static TP_VALUE: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 600, key = "tp:<id>", backend = "held")]
async fn tp(id: u64) -> u64 {
    TP_VALUE.load(SeqCst) + id
}

/// Publishes `messages` on the backplane channel straight to the server (as other processes
/// invalidating their keys would), pipelined, and waits for the server's replies.
fn publish_raw(port: u16, messages: &[String]) {
    use std::io::{BufRead, BufReader, Write};
    let channel = format!("{PREFIX}cachemacro:invalidate");
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(
            format!(
                "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${}\r\n{m}\r\n",
                channel.len(),
                m.len()
            )
            .as_bytes(),
        );
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&out).unwrap();
    let mut r = BufReader::new(s);
    for _ in messages {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(':'), "PUBLISH answered {line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_put_returns_the_old_value_is_not_served_tiered() {
    let _serial = HELD_SERIAL.lock().await;
    let w = world();
    TP_VALUE.store(10, SeqCst);
    assert_eq!(tp(0).await, 10);
    until_real("the backplane is up", || {
        health_of("held").subscribed == Some(true)
    })
    .await;
    assert_eq!(tp(0).await, 10); // in L1 now
    assert_eq!(tp(0).await, 10);

    // The put's first Redis step is slow (held); meanwhile other processes invalidate other
    // keys of the function, which this process hears on the backplane.
    let hold = w.held.hold_next(&["EVALSHA"]);
    let put = on_another_runtime(tp_put(0, 77));
    let hold = tokio::task::spawn_blocking(move || {
        hold.wait_held();
        hold
    })
    .await
    .unwrap();
    let others: Vec<String> = (1..=OTHER_KEYS)
        .map(|i| format!("k|0123456789abcdef|tp:{i}"))
        .collect();
    publish_raw(w.server.port, &others);
    tokio::time::sleep(Duration::from_millis(200)).await; // the listener drops them
    hold.release();
    put.join().unwrap().expect("the put succeeded");
    assert_eq!(
        tp(0).await,
        77,
        "tp_put(0, 77) returned Ok, yet this process still serves the value it replaced"
    );
}

// ---- D. tags rendered with the fixed escape set cannot be invalidated by name -------------

static DOC_VERSION: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 600, key = "doc:<org>:<id>", tags = ["org:<org>"])]
async fn doc(org: String, id: u64) -> u64 {
    DOC_VERSION.load(SeqCst) * 100 + id
}

#[tokio::test]
async fn invalidate_tag_with_the_tag_as_written_reaches_the_entries_that_carry_it() {
    world();
    DOC_VERSION.store(1, SeqCst);
    assert_eq!(doc("Acme Corp".into(), 7).await, 107);
    DOC_VERSION.store(2, SeqCst);
    // The tag is `org:<org>` with org = "Acme Corp": the README's and the events module's
    // way of naming it is `format!("org:{org}")`.
    // (Other tests of this binary freeze the backends they use: a backend that does not
    // answer is reported, and this process is invalidated anyway.)
    let _ = cachemacro_runtime::invalidate_tag(&format!("org:{}", "Acme Corp")).await;
    assert_eq!(
        doc("Acme Corp".into(), 7).await,
        207,
        "invalidate_tag(\"org:Acme Corp\") returned Ok, yet the entry tagged with it is \
         still served"
    );
}

// ---- E. two functions that share a `name` (and so their entries) on tiered ---------------

static SHARED_VERSION: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 600, key = "sh:<id>", backend = tiered, name = "rv_shared")]
async fn shared_reader(id: u64) -> u64 {
    SHARED_VERSION.load(SeqCst) * 100 + id
}

#[cached(ttl = 600, key = "sh:<id>", backend = tiered, name = "rv_shared")]
async fn shared_writer(id: u64) -> u64 {
    SHARED_VERSION.load(SeqCst) * 100 + id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_through_one_function_reaches_a_function_sharing_its_entries_here() {
    world();
    SHARED_VERSION.store(1, SeqCst);
    assert_eq!(shared_writer(1).await, 101);
    until_real("the backplane is up", || {
        health_of("default").subscribed == Some(true)
    })
    .await;
    // Both functions have the entry in their L1 now.
    assert_eq!(shared_writer(1).await, 101);
    assert_eq!(shared_reader(1).await, 101);
    assert_eq!(shared_reader(1).await, 101);
    assert!(
        health_of("default").conflicts.is_empty(),
        "the shared name is deliberate"
    );

    SHARED_VERSION.store(2, SeqCst);
    shared_writer_invalidate(1).await.unwrap();
    assert_eq!(
        shared_reader(1).await,
        201,
        "the entry was invalidated (every other process drops it from every function's \
         L1), but this process still serves it through the other function"
    );
}

// ---- F. `*_refresh` whose value cannot be written to Redis leaves the old one there -------

#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
struct Picky(u64);

/// A value type whose serialisation fails for one value (a validating `serialize_with`, a
/// map with non-string keys under JSON, …).
impl serde::Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 13 {
            return Err(serde::ser::Error::custom("13 does not serialise"));
        }
        s.serialize_u64(self.0)
    }
}

static PICKY: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 600, key = "picky:<id>", backend = tiered, name = "rv_picky")]
async fn picky(id: u64) -> Picky {
    Picky(PICKY.load(SeqCst) + id)
}

/// What any other process sees: the same entries, read from Redis.
#[cached(ttl = 600, key = "picky:<id>", backend = redis, name = "rv_picky")]
async fn picky_elsewhere(id: u64) -> Picky {
    Picky(PICKY.load(SeqCst) + id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_cannot_reach_redis_does_not_leave_the_replaced_value_there() {
    let w = world();
    PICKY.store(1, SeqCst);
    assert_eq!(picky(0).await, Picky(1));
    assert_eq!(
        w.server.cli(&["exists", "rvw:picky:0"]),
        "1",
        "stored in Redis"
    );

    PICKY.store(13, SeqCst);
    assert_eq!(picky_refresh(0).await, Picky(13));
    assert_eq!(
        picky_elsewhere(0).await,
        Picky(13),
        "*_refresh returned 13 and told every process to drop its copy, but Redis still \
         holds the value it replaced, so every other process reloads that one"
    );
}

// ---- G. a cancelled invalidation is done in Redis and everywhere else, not here -----------

static CX_VERSION: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 600, key = "cx:<id>", backend = "held")]
async fn cx(id: u64) -> u64 {
    CX_VERSION.load(SeqCst) * 100 + id
}

/// Runs `f` on a runtime of its own, on a thread of its own.
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

/// The `held` proxy's holds are shared: one test at a time.
static HELD_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_invalidate_does_not_leave_only_this_process_serving_the_old_value() {
    let _serial = HELD_SERIAL.lock().await;
    let w = world();
    CX_VERSION.store(1, SeqCst);
    assert_eq!(cx(1).await, 101);
    until_real("the backplane is up", || {
        health_of("held").subscribed == Some(true)
    })
    .await;
    assert_eq!(cx(1).await, 101); // in L1 now
    assert_eq!(cx(1).await, 101);

    CX_VERSION.store(2, SeqCst);
    // A request handler invalidates, and is cancelled (client gone, request timeout) while
    // the announcement is on its way.
    let hold = w.held.hold_next(&["PUBLISH"]);
    let cancelled = on_another_runtime(async {
        tokio::time::timeout(Duration::from_millis(150), cx_invalidate(1))
            .await
            .is_err()
    });
    let hold = tokio::task::spawn_blocking(move || {
        hold.wait_held();
        hold
    })
    .await
    .unwrap();
    assert!(cancelled.join().unwrap(), "the invalidation was cancelled");
    hold.release();
    assert_eq!(
        w.server.cli(&["exists", "rvw:cx:1"]),
        "0",
        "Redis dropped the value (and other processes hear the announcement)"
    );
    assert_eq!(
        cx(1).await,
        201,
        "the invalidation took effect in Redis and in every other process, but this \
         process keeps serving the old value from L1 until its TTL"
    );
}

// ---- H. a caller cancelled while its lock request is on the wire orphans the lock --------

static LK_LOADS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 600, key = "lk:<id>", backend = "lockp", stampede = lock)]
async fn lk(id: u64) -> u64 {
    LK_LOADS.fetch_add(1, SeqCst);
    id + 500
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cancelled_while_taking_the_lock_does_not_stall_the_key_for_lock_wait() {
    let w = world();
    assert_eq!(lk(0).await, 500); // connections up

    // A request times out while its lock request (SET NX) is on its way to Redis.
    let hold = w.lockp.hold_next(&["SET"]);
    let cancelled = on_another_runtime(async {
        tokio::time::timeout(Duration::from_millis(150), lk(1))
            .await
            .is_err()
    });
    let hold = tokio::task::spawn_blocking(move || {
        hold.wait_held();
        hold
    })
    .await
    .unwrap();
    assert!(cancelled.join().unwrap(), "the caller was cancelled");
    hold.release();
    tokio::time::sleep(Duration::from_millis(50)).await; // Redis executed the SET NX
    until_real("the cancelled caller's lock is released", || {
        w.server.cli(&["exists", "{rvw:lk:1} lock"]) == "0"
    })
    .await;

    // The next caller of the key, here or in any other process.
    let started = std::time::Instant::now();
    assert_eq!(lk(1).await, 501);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(800),
        "the next miss of the key waited {took:?} (lock_wait is 2 s) for a lock that no \
         load holds: {:?}",
        lk_stats()
    );
}

// ---- I. a probe whose caller stalls (not cancelled) keeps the circuit open for good -------

#[cached(ttl = 600, key = "st:<id>", backend = "stall")]
async fn st(id: u64) -> u64 {
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_probe_does_not_keep_the_redis_tier_off() {
    let w = world();
    assert_eq!(st(1).await, 1);
    assert_eq!(st(1).await, 1);
    assert!(st_stats().hits >= 1, "Redis in use: {:?}", st_stats());

    // Redis stops answering for a while: the breaker opens.
    w.stall.freeze();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while health_of("stall").reachable {
        assert!(
            std::time::Instant::now() < deadline,
            "the breaker never opened"
        );
        assert_eq!(st(2).await, 2);
    }
    w.stall.unfreeze();
    // A caller whose future then stops being polled (its thread blocked, a combinator that
    // no longer polls it) cannot hold the probe: callers never probe an open circuit.
    let mut stalled = Box::pin(st(1));
    let still_pending = futures_poll_once(&mut stalled).await;
    // Redis answers; nobody else calls: the circuit closes by itself within a few
    // cool-downs (the breaker's own task probes it).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !health_of("stall").reachable {
        assert!(
            std::time::Instant::now() < deadline,
            "Redis has answered for 3 s (10 cool-downs), but the circuit stayed open \
             (a stalled caller pending: {still_pending})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stalled);
    assert_eq!(st(1).await, 1);
}

/// Polls `f` once; whether it is still pending.
async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> bool {
    tokio::select! {
        biased;
        _ = f => false,
        _ = std::future::ready(()) => true,
    }
}

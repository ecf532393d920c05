//! The Memcached backend against real `memcached` processes of this test binary's own: keys
//! and TTLs, CAS-guarded writes (an invalidation during a load wins), invalidation as a
//! tombstone, tags as version keys, oversized values (ours and the server's limit), garbage
//! read as a miss, several servers by consistent hashing, and failures (a server killed,
//! a server that never answers, the circuit breaker).
#![cfg(feature = "memcached")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cachemacro_runtime::{cached, configure, BackendConfig, Config};
use common::memcached::Server;
use common::{until_real, Gate};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "it:";

struct Servers {
    main: Server,
    /// A server whose item size limit (32 KiB) is below `max_value_bytes` (64 KiB).
    small: Server,
    /// Two servers of one backend.
    pair: [Server; 2],
    /// Killed and restarted by the outage test (its own backend).
    flaky: std::sync::Mutex<Server>,
    /// Accepts connections and never answers.
    silent: std::net::TcpListener,
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let s = Servers {
            main: Server::start(),
            small: Server::start_with(&["-I", "32k", "-o", "slab_chunk_max=16384"]),
            pair: [Server::start(), Server::start()],
            flaky: std::sync::Mutex::new(Server::start()),
            silent: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        };
        let flaky_url = s.flaky.lock().unwrap().url();
        let silent_url = format!("memcached://{}", s.silent.local_addr().unwrap());
        configure(
            Config::default()
                .memcached_url(s.main.url())
                .prefix(PREFIX)
                .op_timeout(Duration::from_millis(200))
                .max_value_bytes(64 * 1024)
                .breaker(3, Duration::from_millis(200))
                .backend("small", BackendConfig::memcached(s.small.url()))
                .backend(
                    "pair",
                    BackendConfig::memcached(format!("{},{}", s.pair[0].url(), s.pair[1].url())),
                )
                .backend("flaky", BackendConfig::memcached(flaky_url))
                .backend("silent", BackendConfig::memcached(silent_url)),
        )
        .unwrap();
        s
    })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

// ---- keys, TTLs, hits ----------------------------------------------------------------------

static USER_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "user:<id>", backend = memcached)]
async fn user(id: u64) -> User {
    USER_CALLS.fetch_add(1, SeqCst);
    User {
        id,
        name: format!("u{id}"),
    }
}

#[tokio::test]
async fn values_live_under_the_prefix_and_the_rendered_template_with_their_ttl() {
    let s = servers();
    assert_eq!(user(42).await.name, "u42");
    let (bytes, flags) = s.main.get("it:user:42").expect("inspectable by its key");
    assert_eq!(&bytes[..3], b"CM\x01", "the same envelope as on Redis");
    assert_eq!(flags, 0);
    let ttl = s.main.ttl("it:user:42").unwrap();
    assert!((55..=61).contains(&ttl), "TTL {ttl}");
    let calls = USER_CALLS.load(SeqCst);
    assert_eq!(user(42).await.name, "u42");
    assert_eq!(USER_CALLS.load(SeqCst), calls, "a hit");
    let st = user_stats();
    assert!(st.hits >= 1 && st.loads >= 1, "{st:?}");
    assert_eq!(st.backend_errors, 0);
}

// ---- invalidation --------------------------------------------------------------------------

static RACE_GATE: Gate = Gate::new();

#[cached(ttl = 60, key = "race:<id>", backend = memcached)]
async fn racy(id: u64) -> u64 {
    RACE_GATE.pass().await;
    id
}

#[tokio::test]
async fn an_invalidation_during_a_load_keeps_the_loads_result_out_of_memcached() {
    let s = servers();
    // Cold key (no item when the load read it: its write is an add).
    let load = tokio::spawn(racy(1));
    until_real("the load started", || RACE_GATE.entered() == 1).await;
    racy_invalidate(1).await.unwrap();
    RACE_GATE.open(1);
    assert_eq!(load.await.unwrap(), 1);
    let (_, flags) = s.main.get("it:race:1").expect("the tombstone");
    assert_ne!(
        flags, 0,
        "the older result was not written over the tombstone"
    );

    // Warm key (the load read the tombstone's CAS: its write is a compare-and-set).
    let load = tokio::spawn(racy(1));
    until_real("the second load started", || RACE_GATE.entered() == 2).await;
    racy_invalidate(1).await.unwrap();
    RACE_GATE.open(1);
    load.await.unwrap();
    assert_ne!(s.main.get("it:race:1").unwrap().1, 0, "not written either");

    // Control: without the invalidation it is written.
    let load = tokio::spawn(racy(2));
    until_real("the load started", || RACE_GATE.entered() == 3).await;
    RACE_GATE.open(1);
    load.await.unwrap();
    assert_eq!(s.main.get("it:race:2").unwrap().1, 0, "a value");
}

#[tokio::test]
async fn invalidate_leaves_a_tombstone_read_as_a_miss_and_refresh_and_put_rewrite() {
    let s = servers();
    user(100).await;
    let calls = USER_CALLS.load(SeqCst);
    user_invalidate(100).await.unwrap();
    let (bytes, flags) = s.main.get("it:user:100").unwrap();
    assert!(bytes.is_empty() && flags != 0, "a tombstone");
    user(100).await;
    assert_eq!(USER_CALLS.load(SeqCst), calls + 1, "a miss");
    assert_eq!(s.main.get("it:user:100").unwrap().1, 0, "written over it");
    user_refresh(100).await;
    assert_eq!(USER_CALLS.load(SeqCst), calls + 2);
    assert_eq!(s.main.get("it:user:100").unwrap().1, 0);
    user_put(
        100,
        User {
            id: 100,
            name: "put".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(user(100).await.name, "put");
    assert_eq!(USER_CALLS.load(SeqCst), calls + 2, "the put value is a hit");
}

// ---- tags ----------------------------------------------------------------------------------

static TAG_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, key = "member:<org>:<id>", backend = memcached, tags = ["org:<org>"])]
async fn member(org: u64, id: u64) -> u64 {
    TAG_CALLS.fetch_add(1, SeqCst);
    org * 1000 + id
}

#[tokio::test]
async fn invalidate_tag_makes_every_value_with_the_tag_a_miss() {
    let s = servers();
    for (o, i) in [(1, 1), (1, 2), (2, 1)] {
        member(o, i).await;
    }
    assert_eq!(TAG_CALLS.load(SeqCst), 3);
    // Every configured backend is reached; this binary's `silent` one cannot be: the error
    // names it, never Memcached, and never a default Redis this configuration did not name.
    if let Err(e) = cachemacro_runtime::invalidate_tag("org:1").await {
        assert!(!e.to_string().contains("`memcached`"), "{e}");
        assert!(!e.to_string().contains("default"), "{e}");
    }
    let version: u64 = String::from_utf8(s.main.get_own("it:cm:tag org:1").unwrap())
        .unwrap()
        .parse()
        .expect("a version key, not a scan");
    assert!(version > 0);
    for (o, i) in [(1, 1), (1, 2), (2, 1)] {
        member(o, i).await;
    }
    assert_eq!(TAG_CALLS.load(SeqCst), 5, "only org 1's values reloaded");
    for (o, i) in [(1, 1), (1, 2)] {
        member(o, i).await;
    }
    assert_eq!(
        TAG_CALLS.load(SeqCst),
        5,
        "stored again with the new version"
    );
    member_clear().await.unwrap();
    member(2, 1).await;
    assert_eq!(
        TAG_CALLS.load(SeqCst),
        6,
        "<fn>_clear: the function's own tag"
    );
}

// ---- what is refused -----------------------------------------------------------------------

#[cached(ttl = 60, key = "big:<n>", backend = memcached)]
async fn big(n: usize) -> Vec<u8> {
    vec![7; n]
}

#[cached(ttl = 60, key = "sbig:<n>", backend = "small")]
async fn small_big(n: usize) -> Vec<u8> {
    vec![7; n]
}

#[tokio::test]
async fn oversized_values_are_refused_cleanly_and_counted() {
    let s = servers();
    assert_eq!(big(100 * 1024).await.len(), 100 * 1024);
    assert!(s.main.get("it:big:102400").is_none_or(|(_, f)| f != 0));
    assert_eq!(big_stats().oversized, 1);
    assert_eq!(big_stats().backend_errors, 0, "not an error");
    big(1000).await;
    assert_eq!(s.main.get("it:big:1000").unwrap().1, 0, "control: written");

    // Under max_value_bytes but over the server's item size limit (-I 32k).
    assert_eq!(small_big(48 * 1024).await.len(), 48 * 1024);
    assert!(s.small.get("it:sbig:49152").is_none_or(|(_, f)| f != 0));
    assert_eq!(small_big_stats().oversized, 1);
    assert_eq!(small_big_stats().backend_errors, 0);
    small_big(1000).await;
    assert_eq!(
        s.small.get("it:sbig:1000").unwrap().1,
        0,
        "control: written"
    );
}

static GARBAGE_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "garbage:<id>", backend = memcached)]
async fn garbage(id: u64) -> u64 {
    GARBAGE_CALLS.fetch_add(1, SeqCst);
    id
}

#[tokio::test]
async fn garbage_bytes_are_a_miss_counted_and_overwritten() {
    let s = servers();
    s.main.set("it:garbage:1", b"\x00not an envelope\xff", 60);
    assert_eq!(garbage(1).await, 1);
    assert_eq!(GARBAGE_CALLS.load(SeqCst), 1, "a miss");
    assert_eq!(garbage_stats().backend_errors, 1, "counted");
    assert_eq!(
        &s.main.get("it:garbage:1").unwrap().0[..3],
        b"CM\x01",
        "overwritten"
    );
    assert_eq!(garbage(1).await, 1);
    assert_eq!(GARBAGE_CALLS.load(SeqCst), 1, "then a hit");
}

#[cached(ttl = 60, key = "<name>", backend = memcached)]
async fn named_by(name: String) -> usize {
    name.len()
}

#[tokio::test]
async fn keys_memcached_cannot_take_go_to_the_source() {
    servers();
    let long = "x".repeat(300);
    assert_eq!(named_by(long.clone()).await, 300);
    assert_eq!(named_by(long).await, 300);
    let st = named_by_stats();
    assert_eq!(st.loads, 2, "never cached");
    assert!(st.backend_errors >= 2, "and said so: {st:?}");
    // Control: a key with spaces and non-ASCII (base64 on the wire) is cached.
    assert_eq!(named_by("é a".into()).await, 4);
    assert_eq!(named_by("é a".into()).await, 4);
    assert_eq!(named_by_stats().loads, 3);
}

// ---- several servers -----------------------------------------------------------------------

#[cached(ttl = 60, key = "spread:<id>", backend = "pair")]
async fn spread(id: u64) -> u64 {
    id
}

#[tokio::test]
async fn keys_are_spread_over_several_servers_each_on_exactly_one() {
    let s = servers();
    for id in 0..200 {
        spread(id).await;
    }
    let on = |i: usize| {
        (0..200)
            .filter(|id| s.pair[i].get(&format!("it:spread:{id}")).is_some())
            .count()
    };
    let (a, b) = (on(0), on(1));
    assert_eq!(a + b, 200, "each key on exactly one server");
    assert!(a >= 60 && b >= 60, "both servers used: {a} / {b}");
    let loads = spread_stats().loads;
    for id in 0..200 {
        spread(id).await;
    }
    assert_eq!(spread_stats().loads, loads, "all hits");
    spread_invalidate(7).await.unwrap();
    spread(7).await;
    assert_eq!(spread_stats().loads, loads + 1);
}

// ---- failures ------------------------------------------------------------------------------

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);
static FLAKY_GATE: Gate = Gate::new();

#[cached(ttl = 60, key = "f:<id>", backend = "flaky")]
async fn flaky(id: u64) -> u64 {
    if id == 999 {
        FLAKY_GATE.pass().await;
    }
    FLAKY_CALLS.fetch_add(1, SeqCst);
    id
}

#[tokio::test]
async fn a_server_killed_mid_load_costs_calls_nothing_but_the_cache() {
    let s = servers();
    flaky(1).await;
    let load = tokio::spawn(flaky(999));
    until_real("the load started", || FLAKY_GATE.entered() == 1).await;
    s.flaky.lock().unwrap().kill();
    FLAKY_GATE.open(1);
    assert_eq!(load.await.unwrap(), 999, "the load's caller gets its value");

    // Down: calls go to the source, with a bounded delay, and the breaker opens.
    let started = Instant::now();
    for id in 0..20 {
        assert_eq!(flaky(id).await, id);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let st = flaky_stats();
    assert!(st.backend_errors >= 1, "{st:?}");
    assert!(st.backend_skipped >= 1, "the breaker skipped calls: {st:?}");
    assert!(
        cachemacro_runtime::health()
            .iter()
            .any(|h| h.backend == "flaky" && !h.reachable),
        "{:?}",
        cachemacro_runtime::health()
    );

    // Back: the breaker closes by itself and values are cached again.
    s.flaky.lock().unwrap().restart();
    until_real("the breaker closed", || {
        cachemacro_runtime::health()
            .iter()
            .any(|h| h.backend == "flaky" && h.reachable)
    })
    .await;
    flaky(500).await;
    let calls = FLAKY_CALLS.load(SeqCst);
    flaky(500).await;
    assert_eq!(FLAKY_CALLS.load(SeqCst), calls, "cached again");
}

#[cached(ttl = 60, key = "q:<id>", backend = "silent")]
async fn silent(id: u64) -> u64 {
    id
}

#[tokio::test]
async fn a_server_that_never_answers_costs_one_timeout_then_the_breaker_skips_it() {
    servers();
    let started = Instant::now();
    assert_eq!(silent(1).await, 1);
    let first = started.elapsed();
    assert!(
        first < Duration::from_secs(2),
        "bounded by op_timeout: {first:?}"
    );
    for id in 2..10 {
        assert_eq!(silent(id).await, id);
    }
    let st = silent_stats();
    assert!(st.backend_errors >= 1 && st.backend_skipped >= 1, "{st:?}");
    let started = Instant::now();
    silent(50).await;
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "skipped while open: {:?}",
        started.elapsed()
    );
}

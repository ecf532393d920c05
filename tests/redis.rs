//! The Redis and tiered backends against a real `redis-server` of this test binary's own:
//! keys and TTLs as documented, the wire format's failure cases (garbage, other versions,
//! oversized values), the default codec on the shapes users write, invalidation races,
//! tags, and L1 hits that never touch Redis.
#![cfg(feature = "redis")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::OnceLock;
use std::time::Duration;

use cachemacro_runtime::{cached, configure, BackendConfig, Config};
use common::redis::{get_raw, set_raw, Server};
use common::{until_real, Gate};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "it:";

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let s = Server::start();
        configure(
            Config::default()
                .redis_url(s.url())
                .prefix(PREFIX)
                .op_timeout(Duration::from_millis(500))
                .max_value_bytes(64 * 1024)
                .heartbeat(Duration::from_millis(100))
                .backend("sessions", BackendConfig::tiered(s.url()).prefix("sess:")),
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

#[cached(ttl = 60, key = "user:<id>", backend = redis)]
async fn user(id: u64) -> User {
    USER_CALLS.fetch_add(1, SeqCst);
    User {
        id,
        name: format!("u{id}"),
    }
}

#[cached(ttl = 60, key = "profile:<id>", backend = redis)]
async fn profile(id: u64) -> User {
    User {
        id,
        name: format!("u{id}"),
    }
}

#[tokio::test]
async fn values_live_under_the_prefix_and_the_rendered_template_with_their_ttl() {
    let s = server();
    assert_eq!(profile(42).await.name, "u42");
    assert_eq!(
        s.cli(&["exists", "it:profile:42"]),
        "1",
        "inspectable with redis-cli"
    );
    let pttl: u64 = s.cli(&["pttl", "it:profile:42"]).parse().unwrap();
    assert!((55_000..=60_000).contains(&pttl), "PTTL {pttl}");
    assert_eq!(&get_raw(s.port, "it:profile:42").unwrap()[..3], b"CM\x01");
    assert_eq!(profile(42).await.name, "u42");
    let st = profile_stats();
    assert_eq!(
        (st.hits, st.misses, st.loads),
        (1, 1, 1),
        "second call read Redis"
    );
}

#[tokio::test]
async fn garbage_bytes_are_a_counted_miss_and_get_overwritten() {
    let s = server();
    set_raw(s.port, "it:user:7", b"definitely not an envelope", 60_000);
    let before = user_stats();
    assert_eq!(user(7).await.id, 7, "the call succeeds from the source");
    let after = user_stats();
    assert_eq!(after.loads - before.loads, 1);
    assert_eq!(after.backend_errors - before.backend_errors, 1);
    assert_eq!(
        &get_raw(s.port, "it:user:7").unwrap()[..2],
        b"CM",
        "overwritten"
    );
}

#[tokio::test]
async fn a_value_of_another_format_version_is_a_quiet_miss() {
    let s = server();
    user(8).await;
    let mut bytes = get_raw(s.port, "it:user:8").unwrap();
    bytes[2] = 0; // an older format version
    set_raw(s.port, "it:user:8", &bytes, 60_000);
    let before = user_stats();
    user(8).await;
    let after = user_stats();
    assert_eq!(after.loads - before.loads, 1, "a miss");
    assert_eq!(
        after.backend_errors, before.backend_errors,
        "expected during deploys, not an error"
    );
    assert_eq!(get_raw(s.port, "it:user:8").unwrap()[2], 1, "overwritten");
}

static BIG_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "big:<n>", backend = redis)]
async fn big(n: usize) -> String {
    BIG_CALLS.fetch_add(1, SeqCst);
    "x".repeat(n)
}

#[tokio::test]
async fn values_over_max_value_bytes_are_served_but_not_stored() {
    let s = server();
    assert_eq!(big(100_000).await.len(), 100_000);
    assert_eq!(s.cli(&["exists", "it:big:100000"]), "0");
    assert_eq!(big(100).await.len(), 100);
    assert_eq!(
        s.cli(&["exists", "it:big:100"]),
        "1",
        "small values are stored"
    );
}

// ---- the default codec on the shapes users write -------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Untagged {
    Count(u64),
    Label(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Audit {
    by: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Document {
    id: u64,
    body: serde_json::Value,
    parts: Vec<Untagged>,
    #[serde(flatten)]
    audit: Audit,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    #[serde(default)]
    added_later: Vec<String>,
}

static DOC_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "doc:<id>", backend = redis)]
async fn document(id: u64) -> Document {
    DOC_CALLS.fetch_add(1, SeqCst);
    Document {
        id,
        body: serde_json::json!({"title": "t", "tags": ["a", 1, null], "n": 2.5}),
        parts: vec![Untagged::Count(3), Untagged::Label("x".into())],
        audit: Audit { by: "me".into() },
        note: None,
        added_later: vec![],
    }
}

#[tokio::test]
async fn the_default_codec_round_trips_json_untagged_flatten_and_skipped_fields() {
    server();
    let first = document(1).await;
    let second = document(1).await;
    assert_eq!(first, second);
    assert_eq!(
        DOC_CALLS.load(SeqCst),
        1,
        "the second call decoded the stored value"
    );
    assert_eq!(document_stats().backend_errors, 0);
}

// ---- invalidation --------------------------------------------------------------------------

static RACE_GATE: Gate = Gate::new();

#[cached(ttl = 60, key = "race:<id>", backend = redis)]
async fn racy(id: u64) -> u64 {
    RACE_GATE.pass().await;
    id
}

#[tokio::test]
async fn an_invalidation_during_a_load_keeps_the_loads_result_out_of_redis() {
    let s = server();
    let load = tokio::spawn(racy(1));
    until_real("the load started", || RACE_GATE.entered() == 1).await;
    racy_invalidate(1).await.unwrap();
    RACE_GATE.open(1);
    assert_eq!(load.await.unwrap(), 1);
    assert_eq!(
        s.cli(&["exists", "it:race:1"]),
        "0",
        "the older result was not written"
    );

    // Control: without the invalidation it is written.
    let load = tokio::spawn(racy(2));
    until_real("the load started", || RACE_GATE.entered() == 2).await;
    RACE_GATE.open(1);
    load.await.unwrap();
    assert_eq!(s.cli(&["exists", "it:race:2"]), "1");
}

#[tokio::test]
async fn invalidate_deletes_and_refresh_rewrites_the_redis_key() {
    let s = server();
    user(100).await;
    assert_eq!(s.cli(&["exists", "it:user:100"]), "1");
    user_invalidate(100).await.unwrap();
    assert_eq!(s.cli(&["exists", "it:user:100"]), "0");
    user_refresh(100).await;
    assert_eq!(s.cli(&["exists", "it:user:100"]), "1");
}

static TAG_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, key = "member:<org>:<id>", backend = redis, tags = ["org:<org>"])]
async fn member(org: u64, id: u64) -> u64 {
    TAG_CALLS.fetch_add(1, SeqCst);
    org * 1000 + id
}

#[tokio::test]
async fn invalidate_tag_makes_every_value_with_the_tag_a_miss_in_redis() {
    let s = server();
    for (o, i) in [(1, 1), (1, 2), (2, 1)] {
        member(o, i).await;
    }
    assert_eq!(TAG_CALLS.load(SeqCst), 3);
    cachemacro_runtime::invalidate_tag("org:1").await.unwrap();
    let version: u64 = s
        .cli(&["get", "it:cm:tag org:1"])
        .parse()
        .expect("a version, not a scan");
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
        "and were stored again with the new version"
    );
}

// ---- tiered --------------------------------------------------------------------------------

#[cached(ttl = 60, key = "tiered:<id>", backend = tiered)]
async fn tiered(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, key = "remote:<id>", backend = redis)]
async fn remote_only(id: u64) -> u64 {
    id
}

#[tokio::test]
async fn tiered_hits_are_answered_by_l1_without_touching_redis() {
    let s = server();
    tiered(0).await; // a tiered function's first call starts its backplane
    until_real("the backplane subscribed", || {
        cachemacro_runtime::health()
            .iter()
            .any(|h| h.subscribed == Some(true))
    })
    .await;
    tiered(1).await;
    remote_only(1).await;
    // Redis's idle time of a key grows only while nobody reads it (1 s resolution).
    for _ in 0..30 {
        tiered(1).await;
        remote_only(1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle = |k: &str| s.cli(&["object", "idletime", k]).parse::<u64>().unwrap();
    assert!(
        idle("it:tiered:1") >= 2,
        "tiered hits did not read Redis: {} {:?}",
        idle("it:tiered:1"),
        tiered_stats()
    );
    assert!(
        idle("it:remote:1") <= 1,
        "control: redis-backend hits do read Redis"
    );
    assert!(tiered_stats().hits >= 25);
}

// ---- named backends ------------------------------------------------------------------------

#[cached(ttl = 60, key = "s:<id>", backend = "sessions")]
async fn session(id: u64) -> u64 {
    id
}

static NOWHERE_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "n:<id>", backend = "nowhere")]
async fn unregistered(id: u64) -> u64 {
    NOWHERE_CALLS.fetch_add(1, SeqCst);
    id
}

#[tokio::test]
async fn a_named_backend_uses_its_own_settings() {
    let s = server();
    assert_eq!(session(1).await, 1);
    assert_eq!(s.cli(&["exists", "sess:s:1"]), "1", "its own prefix");
    until_real("its backplane subscribed (it is tiered)", || {
        cachemacro_runtime::health()
            .iter()
            .any(|h| h.backend == "sessions" && h.subscribed == Some(true))
    })
    .await;
}

#[tokio::test]
async fn an_unregistered_backend_name_fails_no_call_but_caches_nothing() {
    server();
    assert_eq!(unregistered(1).await, 1);
    assert_eq!(unregistered(1).await, 1);
    assert_eq!(NOWHERE_CALLS.load(SeqCst), 2, "nothing cached");
    assert_eq!(
        unregistered_stats().backend_errors,
        2,
        "and every call says so"
    );
    let e = unregistered_invalidate(1).await.unwrap_err();
    assert!(e.to_string().contains("not registered"), "{e}");
}

// ---- runtimes --------------------------------------------------------------------------------

static BARE_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "bare:<id>", backend = redis)]
async fn from_bare_runtime(id: u64) -> u64 {
    BARE_CALLS.fetch_add(1, SeqCst);
    id
}

#[test]
fn a_runtime_without_io_or_timers_uses_the_cache_without_panicking() {
    server();
    // No enable_io / enable_time: redis-rs cannot run on this runtime; the cache's own I/O
    // thread serves it (after one probe, which fails quietly for the caller).
    let bare = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    bare.block_on(async {
        for _ in 0..20 {
            assert_eq!(from_bare_runtime(5).await, 5);
            tokio::task::yield_now().await; // lets the probe run
        }
    });
    assert_eq!(
        BARE_CALLS.load(SeqCst),
        1,
        "cached in Redis; the rest were hits"
    );
    assert_eq!(from_bare_runtime_stats().backend_errors, 0);
    // And from no runtime at all.
    let on_other_executor = std::thread::spawn(|| futures_executor_block_on(from_bare_runtime(5)));
    assert_eq!(on_other_executor.join().unwrap(), 5);
}

/// A minimal executor that is not tokio: polls on this thread, parks between wake-ups.
fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

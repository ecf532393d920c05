//! `<fn>_many`: bulk reads. The keys L1 cannot answer are read from Redis in one command
//! (counted by a proxy in front of this binary's own `redis-server`), the misses are
//! loaded concurrently and coalesced, results come back in order, and invalidations and
//! tags are honoured as by single calls. Multi-thread runtimes, calls from spawned tasks.
#![cfg(feature = "redis")]
// The serial lock is held for a whole test on purpose: it serializes tests, not tasks.
#![allow(clippy::await_holding_lock)]

mod common;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::OnceLock;
use std::time::Duration;

use cachemacro_runtime::{cached, configure, invalidate_tag, Config};
use common::proxy::Proxy;
use common::redis::Server;
use common::{no_hang, until_real, Gate};

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
                .prefix("many:")
                .heartbeat(Duration::from_millis(100)),
        )
        .unwrap();
        World {
            _server: server,
            proxy,
        }
    })
}

/// Commands the proxy forwarded while `f` ran (other tests of this binary run serially
/// through [`serial`], and the subscription's heartbeat `PING`s are not counted).
async fn commands_during<T>(f: impl std::future::Future<Output = T>) -> (T, u64) {
    let p = &world().proxy;
    let before = p.commands_seen(None) - p.commands_seen(Some("PING"));
    let out = f.await;
    let after = p.commands_seen(None) - p.commands_seen(Some("PING"));
    (out, after - before)
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- one round trip, in order ---------------------------------------------------------------

static ITEM_LOADS: AtomicU32 = AtomicU32::new(0);
static ITEM_VERSION: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 60, key = "item:<id>", tags = ["items"], backend = redis)]
async fn item(id: u64) -> (u64, u64) {
    ITEM_LOADS.fetch_add(1, SeqCst);
    (id, ITEM_VERSION.load(SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_hits_is_one_round_trip_and_comes_back_in_order() {
    world();
    let _s = serial();
    tokio::spawn(async {
        for id in 0..20 {
            item(id).await;
        }
        let loads = ITEM_LOADS.load(SeqCst);
        let ids: Vec<u64> = (0..20).rev().collect();
        let (got, commands) = commands_during(item_many(ids.clone())).await;
        assert_eq!(got.iter().map(|v| v.0).collect::<Vec<_>>(), ids, "in order");
        assert_eq!(commands, 1, "one MGET for twenty keys");
        assert_eq!(ITEM_LOADS.load(SeqCst), loads, "all hits");
        // The control: the same reads one by one make one round trip each.
        let ((), commands) = commands_during(async {
            for id in 0..20 {
                item(id).await;
            }
        })
        .await;
        assert_eq!(commands, 20, "without _many: a round trip per key");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidated_keys_and_tags_are_reloaded_as_by_single_calls() {
    world();
    let _s = serial();
    tokio::spawn(async {
        for id in 100..105 {
            item(id).await;
        }
        ITEM_VERSION.store(1, SeqCst);
        item_invalidate(102).await.unwrap();
        let got = item_many(100..105).await;
        let versions: Vec<u64> = got.iter().map(|v| v.1).collect();
        assert_eq!(
            versions,
            [0, 0, 1, 0, 0],
            "only the invalidated key reloaded"
        );
        ITEM_VERSION.store(2, SeqCst);
        invalidate_tag("items").await.unwrap();
        let got = item_many(100..105).await;
        assert!(
            got.iter().all(|v| v.1 == 2),
            "the tag dropped them all: {got:?}"
        );
    })
    .await
    .unwrap();
}

// ---- misses: concurrent, coalesced ---------------------------------------------------------

static SLOW: Gate = Gate::new();

#[cached(ttl = 60, key = "slow:<id>", backend = redis)]
async fn slow(id: u64) -> u64 {
    SLOW.pass().await;
    id * 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_load_concurrently_and_a_repeated_key_loads_once() {
    world();
    let _s = serial();
    let task = tokio::spawn(slow_many([1, 2, 1, 3]));
    // All three distinct keys reach the source before any is let through: concurrent.
    until_real("three loads in flight", || SLOW.entered() == 3).await;
    SLOW.open(3);
    let got = no_hang("slow_many", task).await.unwrap();
    assert_eq!(got, [10, 20, 10, 30]);
    assert_eq!(SLOW.entered(), 3, "the repeated key joined its flight");
    assert_eq!(slow_stats().coalesced, 1);
}

// ---- tiered: L1 answers, and is filled from the bulk read -----------------------------------

static TIERED_LOADS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "tiered:<id>", backend = tiered)]
async fn tiered_item(id: u64) -> u64 {
    TIERED_LOADS.fetch_add(1, SeqCst);
    id + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_hits_in_l1_touch_nothing_and_only_the_rest_is_read() {
    world();
    let _s = serial();
    tokio::spawn(async {
        // L1 is trusted once the backplane is subscribed.
        tiered_item(100).await;
        until_real("subscribed", || {
            cachemacro_runtime::health()
                .iter()
                .any(|h| h.subscribed == Some(true))
        })
        .await;
        let (got, commands) = commands_during(tiered_item_many(0..10)).await;
        assert_eq!(got, (1..11).collect::<Vec<_>>());
        assert!(commands > 0, "a cold list reads Redis and loads");
        assert_eq!(TIERED_LOADS.load(SeqCst), 11);
        let (got, commands) = commands_during(tiered_item_many(0..10)).await;
        assert_eq!(got, (1..11).collect::<Vec<_>>());
        assert_eq!(commands, 0, "every key answered by L1");
        assert_eq!(TIERED_LOADS.load(SeqCst), 11);
    })
    .await
    .unwrap();
}

// ---- shapes: several key parameters, borrowed keys, methods -------------------------------

#[cached(ttl = 60, key = "pair:<a>:<b>")]
async fn pair(a: u64, b: String) -> String {
    format!("{a}{b}")
}

#[cached(ttl = 60, key = "len:<name>")]
async fn name_len(name: &str) -> usize {
    name.len()
}

struct Db {
    calls: AtomicU32,
}

struct Repo {
    shard: u32,
}

impl Repo {
    #[cached(ttl = 60, key = "repo:<self.shard>:<id>")]
    async fn find(&self, #[key_ignore] db: &Db, id: u64) -> u64 {
        db.calls.fetch_add(1, SeqCst);
        id + u64::from(self.shard)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuples_borrowed_keys_and_methods_have_a_many_too() {
    tokio::spawn(async {
        assert_eq!(
            pair_many([(1, "x".to_owned()), (2, "y".to_owned())]).await,
            ["1x", "2y"]
        );
        let names = ["a".to_owned(), "bbb".to_owned()];
        assert_eq!(
            name_len_many(names.iter().map(String::as_str)).await,
            [1, 3]
        );
        let db = Db {
            calls: AtomicU32::new(0),
        };
        let repo = Repo { shard: 100 };
        assert_eq!(repo.find_many(&db, [1, 2, 1]).await, [101, 102, 101]);
        assert_eq!(db.calls.load(SeqCst), 2, "the repeated key loaded once");
        assert_eq!(repo.find_many(&db, [2, 1]).await, [102, 101]);
        assert_eq!(db.calls.load(SeqCst), 2, "hits");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_answered_by_the_bulk_read_are_seen_by_an_observer() {
    world();
    let _s = serial();
    tokio::spawn(async {
        for id in 300..303 {
            item(id).await;
        }
        let (got, seen) = cachemacro_runtime::served::observe(item_many(300..303)).await;
        assert_eq!(got.len(), 3);
        assert_eq!(seen.calls().len(), 3, "every value returned is reported");
        // Read from Redis without the entry at hand: no validator, rather than one that
        // leaves them out (an HTTP 304 would then miss a change of theirs).
        assert_eq!(seen.etag(), None);
    })
    .await
    .unwrap();
}

//! Redis Cluster: a comma-separated URL list selects cluster mode. Values spread over the
//! three masters' slots; a value and its generation share a slot (hash tags), so the
//! conditional write works; tags (other slots) and invalidation work; two processes stay
//! coherent over pub/sub on the cluster bus.
#![cfg(feature = "redis")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::OnceLock;
use std::time::Duration;

use cachemacro_runtime::{cached, configure, BackendConfig, Config};
use common::child::{eventually, slowest_us, Proc};
use common::redis::Cluster;
use common::until_real;

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let c = Cluster::start();
        configure(
            Config::default()
                .redis_url(c.url())
                .prefix("cl:")
                .op_timeout(Duration::from_secs(1))
                .heartbeat(Duration::from_millis(100))
                // One node's URL: the cache finds out it is a cluster.
                .backend("single", BackendConfig::redis(c.nodes[0].url())),
        )
        .unwrap();
        c
    })
}

static CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "item:<group>:<id>", backend = redis, tags = ["group:<group>"])]
async fn item(id: u64, group: u64) -> u64 {
    CALLS.fetch_add(1, SeqCst);
    id * 10 + group
}

#[cached(ttl = 60, key = "t:<id>", backend = tiered)]
async fn tiered(id: u64) -> u64 {
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_spread_over_the_masters_and_hit() {
    let c = cluster();
    for id in 0..60 {
        assert_eq!(item(id, id % 3).await, id * 10 + id % 3);
    }
    let loads = item_stats().loads;
    assert_eq!(item_stats().backend_errors, 0, "{:?}", item_stats());
    for id in 0..60 {
        item(id, id % 3).await;
    }
    assert_eq!(item_stats().loads, loads, "all hits");
    for n in &c.nodes {
        let keys: u64 = n.cli(&["dbsize"]).parse().unwrap();
        assert!(keys > 0, "node :{} holds some of the keys", n.port);
    }
    assert_eq!(
        c.cli(&["exists", "cl:item:1:7"]),
        "1",
        "the documented key, found with -c"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_invalidation_work_across_slots() {
    let c = cluster();
    for id in 100..130 {
        item(id, 1).await;
    }
    let before = CALLS.load(SeqCst);
    cachemacro_runtime::invalidate_tag("group:1").await.unwrap();
    for id in 100..130 {
        item(id, 1).await;
    }
    assert!(
        CALLS.load(SeqCst) >= before + 30,
        "every value of the tag reloaded"
    );
    item_invalidate(100, 1).await.unwrap();
    assert_eq!(c.cli(&["exists", "cl:item:1:100"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_works_on_a_cluster() {
    cluster();
    tiered(0).await;
    until_real("subscribed", || {
        cachemacro_runtime::health()
            .iter()
            .any(|h| h.subscribed == Some(true))
    })
    .await;
    tiered(1).await;
    let loads = tiered_stats().loads;
    tiered(1).await;
    assert_eq!(tiered_stats().loads, loads);
    tiered_invalidate(1).await.unwrap();
    tiered(1).await;
    assert_eq!(tiered_stats().loads, loads + 1);
}

#[test]
fn two_processes_stay_coherent_over_a_cluster() {
    let c = cluster();
    let mut a = Proc::start(&c.url(), "clmp:");
    let mut b = Proc::start(&c.url(), "clmp:");
    a.cmd("get tiered 0");
    b.cmd("get tiered 0");
    a.wait_subscribed();
    b.wait_subscribed();
    for id in 1..=5 {
        assert_eq!(a.version("tiered", id), 1);
        assert_eq!(b.version("tiered", id), 1);
    }
    assert_eq!(b.stat("tiered", "loads"), 0, "B read every value A loaded");
    a.cmd("version 2");
    b.cmd("version 2");
    for id in 1..=5 {
        assert_eq!(a.cmd(&format!("inv tiered {id}")), "ok");
    }
    for id in 1..=5 {
        eventually("B dropped its L1 copy", || b.version("tiered", id) == 2);
    }
}

/// Semantic scopes on a cluster: each scope's hash, generation and expiry order share a
/// slot (the Lua write touches all three), scopes spread over the masters, and two
/// processes share answers by meaning and invalidations.
#[cfg(feature = "semantic")]
#[test]
fn semantic_scopes_are_shared_on_a_cluster() {
    let c = cluster();
    let mut a = Proc::start(&c.url(), "clsem:");
    let mut b = Proc::start(&c.url(), "clsem:");
    for p in [&mut a, &mut b] {
        p.cmd("ask faq warmup hello");
        p.wait_subscribed();
    }
    let tenants: Vec<String> = (0..12).map(|t| format!("tenant{t}")).collect();
    let answers: Vec<String> = tenants
        .iter()
        .map(|t| a.cmd(&format!("ask faq {t} how do I reset my password")))
        .collect();
    for (t, first) in tenants.iter().zip(&answers) {
        assert!(first.starts_with(&format!("{t}|")), "{first}");
        assert_eq!(
            &b.cmd(&format!("ask faq {t} How do I reset my password?")),
            first,
            "B served A's answer from the cluster"
        );
    }
    let stats = b.cmd("sstats faq");
    assert!(
        stats.contains("loads=1 "),
        "only B's warm-up loaded: {stats}"
    );
    assert!(stats.contains("backend_errors=0"), "{stats}");
    a.cmd("version 2");
    b.cmd("version 2");
    assert_eq!(a.cmd("sinv faq tenant3"), "ok");
    eventually("B dropped tenant3's scope", || {
        b.cmd("ask faq tenant3 how do I reset my password")
            .ends_with("|v2")
    });
    assert_eq!(
        b.cmd("ask faq tenant4 how do I reset my password"),
        answers[4],
        "another scope kept"
    );
}

#[test]
fn the_distributed_lock_works_on_a_cluster() {
    let c = cluster();
    let mut procs: Vec<Proc> = (0..3).map(|_| Proc::start(&c.url(), "cllock:")).collect();
    for p in procs.iter_mut() {
        p.cmd("delay 300");
    }
    for p in procs.iter_mut() {
        p.send("burst locked 1 20");
    }
    for p in procs.iter_mut() {
        assert!(p.answer_within(20).starts_with("ok"));
    }
    let loads: u64 = procs.iter_mut().map(|p| p.stat("locked", "loads")).sum();
    assert_eq!(
        loads, 1,
        "one source call across three processes on the cluster"
    );
}

#[test]
fn xfetch_keeps_a_hot_key_warm_on_a_cluster() {
    let c = cluster();
    let mut a = Proc::start(&c.url(), "clxf:");
    let mut b = Proc::start(&c.url(), "clxf:");
    for p in [&mut a, &mut b] {
        p.cmd("get xfetched 0");
        p.wait_subscribed();
        p.cmd("delay 100");
    }
    a.send("steady xfetched 1 5000 10");
    b.send("steady xfetched 1 5000 10");
    for p in [&mut a, &mut b] {
        let report = p.answer_within(30);
        let max_us = slowest_us(&report);
        assert!(max_us < 60_000, "no reader waited on the source: {report}");
    }
    let loads = a.stat("xfetched", "loads") + b.stat("xfetched", "loads") - 1;
    assert!(
        (2..=5).contains(&loads),
        "{loads} loads in 5 s of a 2 s value"
    );
}

// ---- keys with braces, and a cluster given by one URL ------------------------------------------

static BRACED: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "{acct:<id>}:profile", backend = redis)]
async fn braced(id: u64) -> u64 {
    BRACED.fetch_add(1, SeqCst);
    id
}

static EMPTY_TAG: AtomicU32 = AtomicU32::new(0);

/// With `name = ""` the key is `cl:x{}y`: an empty hash tag, so Redis hashes the whole key.
#[cached(ttl = 60, key = "x{<name>}y", backend = redis, stampede = lock)]
async fn empty_tag(name: String) -> usize {
    EMPTY_TAG.fetch_add(1, SeqCst);
    name.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_braces_are_cached_and_invalidated() {
    cluster();
    for id in 0..30 {
        assert_eq!(braced(id).await, id);
        assert_eq!(braced(id).await, id);
    }
    assert_eq!(BRACED.load(SeqCst), 30, "{:?}", braced_stats());
    braced_invalidate(3).await.unwrap();
    assert_eq!(braced(3).await, 3);
    assert_eq!(BRACED.load(SeqCst), 31);

    for name in ["", "n", "{"] {
        let n = EMPTY_TAG.load(SeqCst);
        assert_eq!(empty_tag(name.into()).await, name.len());
        assert_eq!(empty_tag(name.into()).await, name.len());
        assert_eq!(
            EMPTY_TAG.load(SeqCst),
            n + 1,
            "a hit: {:?}",
            empty_tag_stats()
        );
        empty_tag_invalidate(name.into()).await.unwrap();
        assert_eq!(empty_tag(name.into()).await, name.len());
        assert_eq!(EMPTY_TAG.load(SeqCst), n + 2, "invalidated");
    }
    assert_eq!(braced_stats().backend_errors, 0, "{:?}", braced_stats());
    assert_eq!(
        empty_tag_stats().backend_errors,
        0,
        "{:?}",
        empty_tag_stats()
    );
    assert!(cachemacro_runtime::health().iter().all(|h| h.reachable));
}

static SINGLE: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "one:<id>", backend = "single")]
async fn single(id: u64) -> u64 {
    SINGLE.fetch_add(1, SeqCst);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_given_by_one_url_is_used_as_a_cluster() {
    let c = cluster();
    for id in 0..60 {
        assert_eq!(single(id).await, id);
    }
    for id in 0..60 {
        assert_eq!(single(id).await, id);
    }
    let s = single_stats();
    assert_eq!((s.loads, s.backend_errors), (60, 0), "{s:?}");
    single_invalidate(7).await.unwrap();
    assert_eq!(single(7).await, 7);
    assert_eq!(SINGLE.load(SeqCst), 61);
    let homes = c
        .nodes
        .iter()
        .filter(|n| n.cli(&["keys", "cl:one:*"]).lines().count() > 0)
        .count();
    assert_eq!(homes, 3, "the keys are spread over the three masters");
}

#[cached(ttl = 60, key = "bulk:<id>", backend = redis, tags = ["bulk"])]
async fn bulk(id: u64) -> u64 {
    id + 7
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_reads_span_the_masters_slots() {
    let c = cluster();
    let ids: Vec<u64> = (0..60).collect();
    let got = bulk_many(ids.clone()).await;
    assert_eq!(got, ids.iter().map(|i| i + 7).collect::<Vec<_>>());
    assert_eq!(bulk_stats().loads, 60);
    for n in &c.nodes {
        let keys: u64 = n.cli(&["dbsize"]).parse().unwrap();
        assert!(keys > 0, "node :{} holds some of the keys", n.port);
    }
    // Every key answered by the bulk read, though they live in slots of all three masters.
    let got = bulk_many(ids.clone()).await;
    assert_eq!(got, ids.iter().map(|i| i + 7).collect::<Vec<_>>());
    let s = bulk_stats();
    assert_eq!((s.loads, s.l2_hits, s.backend_errors), (60, 60, 0), "{s:?}");
    cachemacro_runtime::invalidate_tag("bulk").await.unwrap();
    bulk_many(ids).await;
    assert_eq!(bulk_stats().loads, 120, "the tag, checked in the bulk read");
}

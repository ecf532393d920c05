//! Tags rendered from the returned value: `tags = ["org:<result.org>"]`, and one tag per
//! element with `<result[].id>`. `invalidate_tag` drops such values in L1 and in Redis, an
//! invalidation that lands while the value loads keeps it out of every tier, and tags that
//! the value does not carry leave it alone (the negative controls). Real Redis of this
//! binary's own; multi-thread runtimes.
#![cfg(feature = "redis")]
// The serial lock is held for a whole test on purpose: it serializes tests, not tasks.
#![allow(clippy::await_holding_lock)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use cachemacro_runtime::{cached, configure, invalidate_tag, Config};
use common::redis::Server;
use common::{until_real, Gate};
use serde::{Deserialize, Serialize};

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let s = Server::start();
        configure(
            Config::default()
                .redis_url(s.url())
                .prefix("rt:")
                .heartbeat(Duration::from_millis(100)),
        )
        .unwrap();
        s
    })
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Doc {
    id: u64,
    org: u64,
    loads: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Member {
    id: u64,
}

// ---- in-process --------------------------------------------------------------------------

static DOC_LOADS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, key = "doc:<id>", tags = ["org:<result.org>"])]
async fn doc(id: u64) -> Doc {
    Doc {
        id,
        org: id % 2,
        loads: DOC_LOADS.fetch_add(1, SeqCst) + 1,
    }
}

static TEAM_LOADS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, key = "team:<team>", tags = ["member:<result[].id>"])]
async fn team(team: u64) -> Result<Vec<Member>, String> {
    TEAM_LOADS.fetch_add(1, SeqCst);
    Ok((0..3).map(|i| Member { id: team * 10 + i }).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_from_the_result_drops_the_values_that_carry_it_and_only_those() {
    server(); // configured before any cached call
    tokio::spawn(async {
        let (a, b) = (doc(1).await, doc(2).await); // org 1 and org 0
        assert_eq!((a.loads, b.loads), (1, 2));
        invalidate_tag("org:5").await.unwrap();
        assert_eq!(
            doc(1).await.loads,
            1,
            "a tag it does not carry: still cached"
        );
        invalidate_tag("org:1").await.unwrap();
        assert_eq!(doc(1).await.loads, 3, "its org's tag: reloaded");
        assert_eq!(doc(2).await.loads, 2, "the other org's value: still cached");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tag_per_element_of_a_returned_list() {
    server(); // configured before any cached call
    tokio::spawn(async {
        team(1).await.unwrap(); // members 10, 11, 12
        team(2).await.unwrap(); // members 20, 21, 22
        assert_eq!(TEAM_LOADS.load(SeqCst), 2);
        invalidate_tag("member:13").await.unwrap();
        team(1).await.unwrap();
        assert_eq!(TEAM_LOADS.load(SeqCst), 2, "no such member: still cached");
        invalidate_tag("member:11").await.unwrap();
        team(1).await.unwrap();
        team(2).await.unwrap();
        assert_eq!(
            TEAM_LOADS.load(SeqCst),
            3,
            "only the team with member 11 reloaded"
        );
    })
    .await
    .unwrap();
}

static RACE: Gate = Gate::new();
static RACE_LOADS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, key = "race:<id>", tags = ["org:<result.org>"])]
async fn raced(id: u64) -> Doc {
    let loads = RACE_LOADS.fetch_add(1, SeqCst) + 1;
    if loads <= 2 {
        RACE.pass().await;
    }
    Doc {
        id,
        org: 40 + id,
        loads,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_the_load_keeps_its_result_out_of_l1() {
    server(); // configured before any cached call
    tokio::spawn(async {
        // The control first: another org's tag during the load leaves it cached.
        let load = tokio::spawn(raced(1));
        until_real("at the source", || RACE.entered() == 1).await;
        invalidate_tag("org:99").await.unwrap();
        RACE.open(1);
        assert_eq!(load.await.unwrap().loads, 1);
        assert_eq!(raced(1).await.loads, 1, "cached");
        // Its own org's tag during the load: not cached.
        let load = tokio::spawn(raced(2));
        until_real("at the source", || RACE.entered() == 2).await;
        invalidate_tag("org:42").await.unwrap();
        RACE.open(1);
        assert_eq!(load.await.unwrap().loads, 2);
        assert_eq!(raced(2).await.loads, 3, "loaded again");
    })
    .await
    .unwrap();
}

// ---- Redis and tiered -------------------------------------------------------------------

static RDOC_LOADS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, key = "rdoc:<id>", tags = ["org:<result.org>"], backend = redis)]
async fn rdoc(id: u64) -> Doc {
    Doc {
        id,
        org: 100 + id,
        loads: RDOC_LOADS.fetch_add(1, SeqCst) + 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_redis_a_value_is_checked_against_the_tags_it_was_stored_with() {
    let s = server();
    let _s = serial();
    tokio::spawn(async move {
        // Any bump of org:101 must be older than the load (the store checks it).
        assert_eq!(rdoc(1).await.loads, 1);
        assert_eq!(s.cli(&["exists", "rt:rdoc:1"]), "1", "stored in Redis");
        assert_eq!(rdoc(1).await.loads, 1, "a Redis hit");
        assert_eq!(rdoc_stats().l2_hits, 1);
        invalidate_tag("org:555").await.unwrap();
        assert_eq!(rdoc(1).await.loads, 1, "another tag: still a hit");
        invalidate_tag("org:101").await.unwrap();
        assert_eq!(
            s.cli(&["exists", "rt:rdoc:1"]),
            "1",
            "no key was scanned or deleted"
        );
        let after = rdoc(1).await;
        assert_eq!(after.loads, 2, "its tag moved on: a miss, reloaded");
        // The reload was itself invalidated moments ago (within the margin): not stored,
        // so the next call loads again; past the margin a load is stored again.
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let n = rdoc(1).await.loads;
        assert_eq!(
            rdoc(1).await.loads,
            n,
            "stored once the invalidation is past"
        );
    })
    .await
    .unwrap();
}

static RRACE: Gate = Gate::new();
static RRACE_LOADS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, key = "rrace:<id>", tags = ["org:<result.org>"], backend = tiered)]
async fn rraced(id: u64) -> Doc {
    let loads = RRACE_LOADS.fetch_add(1, SeqCst) + 1;
    if loads == 1 {
        RRACE.pass().await;
    }
    Doc {
        id,
        org: 200 + id,
        loads,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_an_invalidation_during_the_load_keeps_it_out_of_redis_too() {
    let s = server();
    let _s = serial();
    tokio::spawn(async move {
        let load = tokio::spawn(rraced(1));
        until_real("at the source", || RRACE.entered() == 1).await;
        invalidate_tag("org:201").await.unwrap();
        RRACE.open(1);
        assert_eq!(
            load.await.unwrap().loads,
            1,
            "the caller gets what it loaded"
        );
        assert_eq!(
            s.cli(&["exists", "rt:rrace:1"]),
            "0",
            "not stored in Redis: it may predate the invalidation"
        );
        assert_eq!(rraced(1).await.loads, 2, "nor in L1");
    })
    .await
    .unwrap();
}

static FS_GATE: Gate = Gate::new();
static FS_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = "50ms", fail_safe = "10s", key = "fs:<id>", tags = ["org:<result.org>"])]
async fn fs_doc(id: u64) -> Result<Doc, String> {
    let loads = FS_CALLS.fetch_add(1, SeqCst) + 1;
    if loads > 1 {
        FS_GATE.pass().await;
        return Err("down".into());
    }
    Ok(Doc {
        id,
        org: 300 + id,
        loads,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_safe_value_whose_tag_was_invalidated_is_not_handed_to_later_waiters() {
    server();
    tokio::spawn(async {
        assert_eq!(fs_doc(1).await.unwrap().loads, 1);
        tokio::time::sleep(Duration::from_millis(80)).await; // expired, within fail_safe
        let a = tokio::spawn(fs_doc(1)); // leads, with the expired value as its fallback
        until_real("the reload is at the source", || FS_GATE.entered() == 1).await;
        invalidate_tag("org:301").await.unwrap();
        let b = tokio::spawn(fs_doc(1)); // starts after the invalidation returned
        until_real("b waits on a's flight", || fs_doc_stats().coalesced == 1).await;
        FS_GATE.open(10);
        assert!(
            a.await.unwrap().is_ok(),
            "a started before: its fail-safe value is fine"
        );
        let b = b.await.unwrap();
        assert!(
            !matches!(&b, Ok(d) if d.org == 301),
            "b started after invalidate_tag(org:301) returned and got {b:?}"
        );
    })
    .await
    .unwrap();
}

static SD_LOADS: AtomicU32 = AtomicU32::new(0);

// Two functions that share entries on purpose (`name`): the first stores its values
// without the result tag (as a build before the tag was added would).
#[cached(ttl = 600, key = "sd:<id>", name = "shared_doc", backend = redis)]
async fn sd_untagged(id: u64) -> Doc {
    Doc {
        id,
        org: 500 + id,
        loads: 0,
    }
}

#[cached(ttl = 600, key = "sd:<id>", name = "shared_doc", backend = redis, tags = ["org:<result.org>"])]
async fn sd_tagged(id: u64) -> Doc {
    Doc {
        id,
        org: 500 + id,
        loads: SD_LOADS.fetch_add(1, SeqCst) + 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_stored_without_the_tags_its_value_renders_is_not_served_by_a_tagged_function() {
    server();
    let _s = serial();
    tokio::spawn(async {
        assert_eq!(sd_untagged(1).await.loads, 0);
        assert_eq!(
            sd_untagged(1).await.loads,
            0,
            "a hit for the untagged function"
        );
        assert_eq!(
            sd_tagged(1).await.loads,
            1,
            "invalidate_tag could not reach that copy: reloaded"
        );
        assert_eq!(sd_tagged(1).await.loads, 1, "stored with its tag this time");
        invalidate_tag("org:501").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_100)).await; // past the store margin
        assert_eq!(sd_tagged(1).await.loads, 2);
    })
    .await
    .unwrap();
}

//! An L1 in front of Memcached (`BackendConfig::memcached_tiered(url, l1_ttl)`) across two
//! real processes (`cm-child`). Memcached has no pub/sub: what is offered is an L1 copy
//! served for at most `l1_ttl` after the process read or loaded it, so another process's
//! invalidation reaches it within `l1_ttl`; a process's own invalidations drop its L1 at
//! once; L1 hits do not touch Memcached.
#![cfg(all(feature = "memcached", feature = "redis"))] // cm-child needs `redis`

mod common;

use std::time::{Duration, Instant};

use common::child::{eventually, Proc};
use common::memcached::Server;

fn child(server: &Server, prefix: &str, l1_ttl_ms: u64) -> Proc {
    let url = server.url();
    let ttl = l1_ttl_ms.to_string();
    Proc::start_with(
        "redis://127.0.0.1:1",
        prefix,
        &[
            ("CACHEMACRO_MEMCACHED_URL", url.as_str()),
            ("CM_L1_TTL_MS", ttl.as_str()),
        ],
    )
}

#[test]
fn l1_hits_do_not_touch_memcached_and_a_value_loaded_in_one_process_is_a_hit_in_another() {
    let server = Server::start();
    let mut a = child(&server, "mt1:", 60_000);
    let mut b = child(&server, "mt1:", 60_000);
    let from_a = a.cmd("get mtiered 1");
    assert_eq!(
        b.cmd("get mtiered 1"),
        from_a,
        "B read A's value from Memcached"
    );
    assert_eq!(b.stat("mtiered", "loads"), 0);
    let gets = server.stat("cmd_get");
    for _ in 0..20 {
        assert_eq!(b.cmd("get mtiered 1"), from_a);
    }
    assert_eq!(
        server.stat("cmd_get"),
        gets,
        "20 L1 hits, no Memcached read"
    );
    assert!(b.stat("mtiered", "hits") >= 20);
}

#[test]
fn another_process_sees_an_invalidation_within_l1_ttl_and_its_own_at_once() {
    let server = Server::start();
    let l1_ttl = Duration::from_millis(1000);
    let mut a = child(&server, "mt2:", 1000);
    let mut b = child(&server, "mt2:", 1000);
    assert_eq!(a.version("mtiered", 1), 1);
    assert_eq!(b.version("mtiered", 1), 1, "B holds A's value in L1");

    a.cmd("version 2");
    b.cmd("version 2");
    assert_eq!(a.cmd("inv mtiered 1"), "ok");
    let invalidated = Instant::now();
    assert_eq!(a.version("mtiered", 1), 2, "A's own L1 dropped at once");
    // B keeps serving its copy (no pub/sub) until it is `l1_ttl` old, then reads Memcached.
    eventually("B sees the new value", || b.version("mtiered", 1) == 2);
    let took = invalidated.elapsed();
    assert!(
        took <= l1_ttl + Duration::from_millis(500),
        "within l1_ttl: {took:?}"
    );
    assert_eq!(
        b.stat("mtiered", "loads"),
        0,
        "from Memcached, not B's source"
    );

    // Tags too: A's invalidate_tag reaches B's L1 within l1_ttl.
    a.cmd("version 3");
    // (The child's default Redis points nowhere: the answer names it, never `mtiered`.)
    let answer = a.cmd("tag mtorg:1");
    assert!(!answer.contains("`mtiered`"), "{answer}");
    let tagged = Instant::now();
    assert_eq!(a.version("mtiered", 1), 3);
    eventually("B sees the tag invalidation", || {
        b.version("mtiered", 1) == 3
    });
    assert!(tagged.elapsed() <= l1_ttl + Duration::from_millis(500));
}

#[test]
fn negative_control_a_long_l1_ttl_keeps_serving_the_old_copy() {
    let server = Server::start();
    let mut a = child(&server, "mt3:", 60_000);
    let mut b = child(&server, "mt3:", 60_000);
    assert_eq!(a.version("mtiered", 1), 1);
    assert_eq!(b.version("mtiered", 1), 1);
    a.cmd("version 2");
    assert_eq!(a.cmd("inv mtiered 1"), "ok");
    assert_eq!(a.version("mtiered", 1), 2);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        b.version("mtiered", 1),
        1,
        "no backplane: B's copy stands until its l1_ttl (60 s here)"
    );
}

//! Several real processes (`cm-child`) sharing one real Redis: values shared through L2,
//! invalidations and tags reaching every process's L1 over pub/sub, and a process that
//! loses its subscription no longer trusting its L1.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::child::{eventually, Proc};
use common::redis::{get_raw, set_raw, Server};

#[test]
fn a_value_loaded_by_one_process_is_a_hit_in_another() {
    let server = Server::start();
    let mut a = Proc::start(&server.url(), "mp1:");
    let mut b = Proc::start(&server.url(), "mp1:");
    let from_a = a.cmd("get remote 1");
    assert_eq!(b.cmd("get remote 1"), from_a, "B got A's value");
    assert_eq!(b.stat("remote", "loads"), 0);
    assert_eq!(b.stat("remote", "hits"), 1);
}

#[test]
fn an_invalidation_or_refresh_in_one_process_reaches_every_other_l1() {
    let server = Server::start();
    let mut a = Proc::start(&server.url(), "mp2:");
    let mut b = Proc::start(&server.url(), "mp2:");
    a.cmd("get tiered 0");
    b.cmd("get tiered 0");
    a.wait_subscribed();
    b.wait_subscribed();

    assert_eq!(a.version("tiered", 1), 1);
    assert_eq!(
        b.version("tiered", 1),
        1,
        "B reads A's value from L2 and keeps it in L1"
    );
    a.cmd("version 2");
    b.cmd("version 2");
    assert_eq!(b.version("tiered", 1), 1, "B serves its L1 copy");

    assert_eq!(a.cmd("inv tiered 1"), "ok");
    eventually("B dropped its L1 copy", || b.version("tiered", 1) == 2);

    a.cmd("version 3");
    a.cmd("refresh tiered 1");
    let loads = b.stat("tiered", "loads");
    eventually("B sees A's refresh", || b.version("tiered", 1) == 3);
    assert_eq!(
        b.stat("tiered", "loads"),
        loads,
        "from L2, not from B's source"
    );
}

#[test]
fn a_tag_invalidated_in_one_process_is_invalidated_in_all() {
    let server = Server::start();
    let mut a = Proc::start(&server.url(), "mp3:");
    let mut b = Proc::start(&server.url(), "mp3:");
    a.cmd("get tagged 0");
    b.cmd("get tagged 0");
    a.wait_subscribed();
    b.wait_subscribed();
    assert_eq!(a.version("tagged", 5), 1);
    assert_eq!(b.version("tagged", 5), 1);
    a.cmd("version 2");
    b.cmd("version 2");
    assert_eq!(a.version("tagged", 5), 1, "cached in A's L1");
    assert_eq!(b.cmd("tag org:5"), "ok");
    eventually("A dropped the tagged value", || a.version("tagged", 5) == 2);
    assert_eq!(b.version("tagged", 5), 2, "B too");
}

#[test]
fn a_process_that_loses_its_subscription_stops_trusting_its_l1() {
    let server = Server::start();
    let mut a = Proc::start(&server.url(), "mp4:");
    let mut b = Proc::start(&server.url(), "mp4:");
    a.cmd("get tiered 0");
    a.wait_subscribed();
    assert_eq!(a.version("tiered", 7), 1, "A caches version 1 in L1");

    // Version 2 lands in Redis for key 7 with no invalidation message: copied raw from a
    // value B stored under another key (what a process misses while unsubscribed).
    b.cmd("version 2");
    b.cmd("get tiered 8");
    let v2 = get_raw(server.port, "mp4:t:8").unwrap();
    set_raw(server.port, "mp4:t:7", &v2, 60_000);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        a.version("tiered", 7),
        1,
        "control: without a lost subscription, L1 answers"
    );

    server.cli(&["client", "kill", "type", "pubsub"]);
    eventually("A stopped answering from L1", || {
        a.version("tiered", 7) == 2
    });
    a.wait_subscribed();
    assert_eq!(
        a.version("tiered", 7),
        2,
        "subscribed again, with L1 flushed: no stale copy"
    );
    assert!(a.stat("tiered", "hits") > 0);
}

#[test]
fn after_a_put_in_one_process_another_does_not_serve_its_refresh_in_flight() {
    let server = Server::start();
    let mut a = Proc::start(&server.url(), "mp9:");
    let mut b = Proc::start(&server.url(), "mp9:");
    assert_eq!(b.version("soft", 1), 1);
    a.cmd("get soft 0");
    a.wait_subscribed();
    b.wait_subscribed();
    std::thread::sleep(Duration::from_millis(1200)); // past soft_ttl
                                                     // B serves the stale value at once and refreshes it slowly, reading the old version.
    b.cmd("delay 3000");
    assert_eq!(b.version("soft", 1), 1, "stale, at once");
    // A writes the new value while B's refresh is in flight.
    assert_eq!(a.cmd("put soft 1 2"), "ok");
    std::thread::sleep(Duration::from_millis(300)); // the backplane message
    b.send("get soft 1");
    let answer = b.answer_within(10);
    assert_eq!(
        answer.split(':').nth(1),
        Some("2"),
        "B read the put value, it did not wait for its older refresh: {answer}"
    );
}

#[test]
fn clear_drops_every_value_of_a_function_in_redis_and_in_every_process() {
    let server = Server::start();
    let mut a = Proc::start(&server.url(), "mp-clear:");
    let mut b = Proc::start(&server.url(), "mp-clear:");
    a.cmd("get tiered 0");
    b.cmd("get tiered 0");
    a.wait_subscribed();
    b.wait_subscribed();
    for id in 1..=3 {
        assert_eq!(a.version("tiered", id), 1);
        assert_eq!(
            b.version("tiered", id),
            1,
            "B's L1 and Redis hold version 1"
        );
    }
    assert_eq!(a.version("remote", 9), 1, "another function's value");
    a.cmd("version 2");
    b.cmd("version 2");
    assert_eq!(
        b.version("tiered", 1),
        1,
        "control: still cached before the clear"
    );
    assert_eq!(a.cmd("clear tiered"), "ok");
    eventually("B dropped its copies", || b.version("tiered", 2) == 2);
    for id in [1, 3] {
        assert_eq!(b.version("tiered", id), 2, "B: no old copy of {id}");
        assert_eq!(a.version("tiered", id), 2, "A: no old copy of {id}");
    }
    assert_eq!(
        b.version("remote", 9),
        1,
        "other functions keep their values"
    );
}

//! Stampede control across real processes sharing a real Redis: one source call fleet-wide
//! with `stampede = lock` (and more without it), XFetch keeping a hot key warm with about one
//! load per expiry, a lock holder killed mid-load, and a Redis restart while waiters wait.
#![cfg(feature = "redis")]

mod common;

use std::time::{Duration, Instant};

use common::child::{slowest_us, Proc};
use common::redis::Server;

/// These tests measure how long readers wait, with several processes each: run them one at
/// a time so they do not starve each other of this machine's cores.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn sum(procs: &mut [Proc], f: &str, stat: &str) -> u64 {
    procs.iter_mut().map(|p| p.stat(f, stat)).sum()
}

/// N processes × M callers on one cold key; returns total source calls.
fn stampede(procs: &mut [Proc], f: &str, callers: u32) -> u64 {
    for p in procs.iter_mut() {
        p.cmd("delay 300"); // the source takes 300 ms: every caller arrives during the load
    }
    for p in procs.iter_mut() {
        p.send(&format!("burst {f} 1 {callers}"));
    }
    for p in procs.iter_mut() {
        let a = p.answer_within(20);
        assert!(a.starts_with("ok"), "{a}");
    }
    sum(procs, f, "loads")
}

#[test]
fn with_lock_n_processes_times_m_callers_on_a_cold_key_make_one_source_call() {
    let _serial = serial();
    let server = Server::start();
    let mut procs: Vec<Proc> = (0..4).map(|_| Proc::start(&server.url(), "st1:")).collect();
    assert_eq!(
        stampede(&mut procs, "locked", 25),
        1,
        "one source call fleet-wide"
    );
    assert!(
        sum(&mut procs, "locked", "lock_waits") >= 3,
        "the other processes waited"
    );
    for p in procs.iter_mut() {
        assert_eq!(p.version("locked", 1), 1, "everyone has the one value");
    }
}

#[test]
fn negative_control_without_lock_each_process_loads() {
    let _serial = serial();
    let server = Server::start();
    let mut procs: Vec<Proc> = (0..4).map(|_| Proc::start(&server.url(), "st2:")).collect();
    let loads = stampede(&mut procs, "unlocked", 25);
    assert!(loads > 1, "coalescing alone is per process: {loads} loads");
}

/// Two processes read one hot key every 10 ms for 7 s; the value lives 2 s and takes 300 ms
/// to load (a reader that waited on it stands out from scheduling delays on a loaded box).
/// Returns (misses, loads, slowest read after the first) over both.
fn hot_key(f: &str, prefix: &str) -> (u64, u64, Duration) {
    let server = Server::start();
    let mut a = Proc::start(&server.url(), prefix);
    let mut b = Proc::start(&server.url(), prefix);
    for p in [&mut a, &mut b] {
        p.cmd(&format!("get {f} 0"));
        p.wait_subscribed();
        p.cmd("delay 300");
    }
    a.send(&format!("steady {f} 1 7000 10"));
    b.send(&format!("steady {f} 1 7000 10"));
    let mut slowest = Duration::ZERO;
    for p in [&mut a, &mut b] {
        let report = p.answer_within(30);
        eprintln!("{report}");
        slowest = slowest.max(Duration::from_micros(slowest_us(&report)));
    }
    eprintln!(
        "A {}\nB {}",
        a.cmd(&format!("stats {f}")),
        b.cmd(&format!("stats {f}"))
    );
    let misses = a.stat(f, "misses") + b.stat(f, "misses") - 1; // minus key 0's warm-up
    let loads = a.stat(f, "loads") + b.stat(f, "loads") - 1;
    (misses, loads, slowest)
}

#[test]
fn xfetch_keeps_a_hot_key_warm_across_processes_with_about_one_load_per_expiry() {
    let _serial = serial();
    let (misses, loads, slowest) = hot_key("xfetched", "st3:");
    assert_eq!(
        misses, 1,
        "only the cold start missed; no reader ever found it missing"
    );
    assert!(
        slowest < Duration::from_millis(150),
        "no reader waited on the 300 ms source after the first: slowest {slowest:?}"
    );
    // XFetch refreshes early by about δ·ln(reads per δ): with a 300 ms source and ~60 reads
    // in that time, about 1.2 s before the 2 s expiry, so a refresh a second or so: a few
    // loads, never one per read (a storm would be hundreds).
    assert!((3..=10).contains(&loads), "{loads} loads");
}

#[test]
fn xfetch_on_the_redis_backend_never_makes_a_reader_wait_after_the_cold_start() {
    let _serial = serial();
    let (misses, loads, slowest) = hot_key("xfetched_remote", "st5:");
    assert_eq!(misses, 1, "only the cold start missed");
    assert!(
        slowest < Duration::from_millis(150),
        "no reader waited on the 300 ms source, not even on a refresh in flight: slowest {slowest:?}"
    );
    // XFetch refreshes early by about δ·ln(reads per δ): with a 300 ms source and ~60 reads
    // in that time, about 1.2 s before the 2 s expiry, so a refresh a second or so: a few
    // loads, never one per read (a storm would be hundreds).
    assert!((3..=10).contains(&loads), "{loads} loads");
}

#[test]
fn negative_control_a_plain_ttl_makes_readers_wait_at_every_expiry() {
    let _serial = serial();
    let (misses, _loads, slowest) = hot_key("plain_ttl", "st4:");
    assert!(misses > 2, "each expiry is a miss: {misses}");
    assert!(
        slowest >= Duration::from_millis(270),
        "a reader waited on the source: {slowest:?}"
    );
}

#[test]
fn a_lock_holder_killed_mid_load_lets_the_others_proceed_when_its_lock_expires() {
    let _serial = serial();
    let server = Server::start();
    let env = [("CM_LOCK_TTL_MS", "1000"), ("CM_LOCK_WAIT_MS", "20000")];
    let mut holder = Proc::start_with(&server.url(), "st5:", &env);
    let mut waiter = Proc::start_with(&server.url(), "st5:", &env);
    waiter.cmd("get locked 0"); // connected and subscribed
    waiter.wait_subscribed();
    holder.cmd("delay 30000");
    holder.send("get locked 7");
    std::thread::sleep(Duration::from_millis(300)); // the holder has the lock
    waiter.send("get locked 7");
    std::thread::sleep(Duration::from_millis(200));
    let killed = Instant::now();
    holder.kill();
    let answer = waiter.answer_within(10);
    assert!(answer.starts_with("7:1:"), "{answer}");
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "proceeded after the lock's TTL"
    );
    assert_eq!(waiter.stat("locked", "lock_waits"), 1);
    assert_eq!(
        waiter.stat("locked", "loads"),
        2,
        "key 0, then key 7 itself"
    );
}

#[test]
fn a_redis_restart_while_waiters_wait_does_not_hang_them() {
    let _serial = serial();
    let mut server = Server::start();
    let mut holder = Proc::start(&server.url(), "st6:");
    let mut waiter = Proc::start(&server.url(), "st6:");
    holder.cmd("delay 3000");
    holder.send("get locked 9");
    std::thread::sleep(Duration::from_millis(300));
    waiter.send("get locked 9");
    std::thread::sleep(Duration::from_millis(200));
    server.restart();
    let answer = waiter.answer_within(15);
    assert!(answer.starts_with("9:1:"), "{answer}");
    assert!(holder.answer_within(15).starts_with("9:1:"));
}

#[test]
fn a_waiter_that_waits_longer_than_lock_wait_loads_itself() {
    let _serial = serial();
    let server = Server::start();
    let mut holder = Proc::start(&server.url(), "st7:");
    let mut waiter = Proc::start_with(&server.url(), "st7:", &[("CM_LOCK_WAIT_MS", "500")]);
    waiter.cmd("get locked 0");
    holder.cmd("delay 5000");
    holder.send("get locked 3");
    std::thread::sleep(Duration::from_millis(300)); // the holder has the lock
    let asked = Instant::now();
    let answer = waiter.cmd("get locked 3");
    assert!(answer.starts_with("3:1:"), "{answer}");
    assert!(
        asked.elapsed() < Duration::from_millis(4000),
        "gave up waiting after lock_wait, long before the holder's 5 s load"
    );
    assert_eq!(waiter.stat("locked", "lock_waits"), 1);
    assert_eq!(
        waiter.stat("locked", "loads"),
        2,
        "key 0, then key 3 without the lock"
    );
    assert!(holder.answer_within(15).starts_with("3:1:"));
}

#[test]
fn past_soft_ttl_one_refresh_runs_fleet_wide_and_readers_get_the_stale_value() {
    let _serial = serial();
    let server = Server::start();
    let mut a = Proc::start(&server.url(), "st8:");
    let mut b = Proc::start(&server.url(), "st8:");
    for p in [&mut a, &mut b] {
        p.cmd("get soft 0");
        p.wait_subscribed();
        p.cmd("delay 300");
    }
    // soft TTL 1 s, hard 30 s: 4.5 s of reads every 10 ms from both processes.
    a.send("steady soft 1 4500 10");
    b.send("steady soft 1 4500 10");
    for p in [&mut a, &mut b] {
        let report = p.answer_within(30);
        let max_us = slowest_us(&report);
        assert!(
            max_us < 150_000,
            "no reader waited on the 300 ms source: {report}"
        );
    }
    let refreshes = a.stat("soft", "background") + b.stat("soft", "background");
    // About one refresh per soft period of 1 s, not one per process.
    assert!(
        (2..=6).contains(&refreshes),
        "{refreshes} refreshes in 4.5 s"
    );
    assert!(
        a.stat("soft", "stale") + b.stat("soft", "stale") > 0,
        "stale reads were served"
    );
}

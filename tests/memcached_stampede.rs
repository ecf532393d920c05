//! Stampede control across real processes (`cm-child`) sharing a real Memcached, as
//! tests/stampede.rs does on Redis: one source call for 4 processes × 25 callers with
//! `stampede = lock` (and more without it), XFetch keeping a hot key warm with about one
//! load per expiry (and readers waiting at every expiry without it), a lock holder killed
//! mid-load.
#![cfg(all(feature = "memcached", feature = "redis"))] // cm-child needs `redis`

mod common;

use std::time::{Duration, Instant};

use common::child::{slowest_us, Proc};
use common::memcached::Server;

/// These tests measure how long readers wait, with several processes each: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child on `server`, its default Redis pointing nowhere (these functions do not use it).
fn child(server: &Server, prefix: &str) -> Proc {
    child_with(server, prefix, &[])
}

fn child_with(server: &Server, prefix: &str, env: &[(&str, &str)]) -> Proc {
    let url = server.url();
    let mut all = vec![("CACHEMACRO_MEMCACHED_URL", url.as_str())];
    all.extend_from_slice(env);
    Proc::start_with("redis://127.0.0.1:1", prefix, &all)
}

fn sum(procs: &mut [Proc], f: &str, stat: &str) -> u64 {
    procs.iter_mut().map(|p| p.stat(f, stat)).sum()
}

/// N processes × M callers on one cold key; returns total source calls.
fn stampede(procs: &mut [Proc], f: &str, callers: u32) -> u64 {
    for p in procs.iter_mut() {
        p.cmd("delay 300");
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
fn with_lock_4_processes_times_25_callers_on_a_cold_key_make_one_source_call() {
    let _serial = serial();
    let server = Server::start();
    let mut procs: Vec<Proc> = (0..4).map(|_| child(&server, "ms1:")).collect();
    assert_eq!(
        stampede(&mut procs, "mlocked", 25),
        1,
        "one source call fleet-wide"
    );
    assert!(
        sum(&mut procs, "mlocked", "lock_waits") >= 3,
        "the other processes waited"
    );
    for p in procs.iter_mut() {
        assert_eq!(p.version("mlocked", 1), 1, "everyone has the one value");
    }
    assert_eq!(sum(&mut procs, "mlocked", "backend_errors"), 0);
    assert!(
        server.get_own("ms1:ml:1 lock").is_none(),
        "the lock was released"
    );
}

#[test]
fn negative_control_without_lock_each_process_loads() {
    let _serial = serial();
    let server = Server::start();
    let mut procs: Vec<Proc> = (0..4).map(|_| child(&server, "ms2:")).collect();
    let loads = stampede(&mut procs, "munlocked", 25);
    assert!(loads > 1, "coalescing alone is per process: {loads} loads");
}

/// Two processes read one hot key every 10 ms for 7 s; the value lives 2 s and takes 300 ms
/// to load (a reader that waited on it stands out from scheduling delays on a loaded box).
/// Returns (misses, loads, slowest read after the first) over both.
fn hot_key(f: &str, prefix: &str) -> (u64, u64, Duration) {
    let server = Server::start();
    let mut a = child(&server, prefix);
    let mut b = child(&server, prefix);
    for p in [&mut a, &mut b] {
        p.cmd(&format!("get {f} 0"));
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
    let (misses, loads, slowest) = hot_key("mxfetched", "ms3:");
    assert_eq!(misses, 1, "only the cold start missed");
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
fn negative_control_a_plain_ttl_makes_readers_wait_at_every_expiry() {
    let _serial = serial();
    let (misses, _loads, slowest) = hot_key("mplain", "ms4:");
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
    let env = [("CM_LOCK_TTL_MS", "1500")];
    let mut holder = child_with(&server, "ms5:", &env);
    let mut waiter = child_with(&server, "ms5:", &env);
    holder.cmd("delay 5000");
    holder.send("get mlocked 7");
    std::thread::sleep(Duration::from_millis(300)); // the holder has the lock
    waiter.send("get mlocked 7");
    std::thread::sleep(Duration::from_millis(100));
    holder.kill();
    let started = Instant::now();
    let answer = waiter.answer_within(10);
    assert!(answer.starts_with("7:"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "proceeded after the lock's TTL (1.5 s, whole seconds on Memcached): {:?}",
        started.elapsed()
    );
    assert_eq!(waiter.stat("mlocked", "lock_waits"), 1);
    assert_eq!(waiter.stat("mlocked", "loads"), 1);
}

//! Source timeouts: `timeout` (past it, a caller with a stale or fail-safe value gets it at
//! once and the load goes on and lands) and `hard_timeout` (past it, the caller gives up:
//! the fail-safe value, or the function's error). The sources wait on gates the tests open
//! only after the caller returned, so "did not wait for the source" is shown, not timed.
//! Multi-thread runtimes and real time (the timers are the cache's own).

mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use cachemacro_runtime::{cached, SourceTimeout};
use common::{until_real, Gate};

/// Opens a gate that `flag` says is closed; sources pass it when it is.
static SLOW: [AtomicU32; 6] = [const { AtomicU32::new(0) }; 6];
static GATES: [Gate; 6] = [const { Gate::new() }; 6];
static CALLS: [AtomicU32; 6] = [const { AtomicU32::new(0) }; 6];

/// The source of test `t`: version `n` (its call count), through the gate while slow.
async fn source(t: usize) -> u32 {
    let n = CALLS[t].fetch_add(1, SeqCst) + 1;
    if SLOW[t].load(SeqCst) == 1 {
        GATES[t].pass().await;
    }
    n
}

#[derive(Debug, Clone, PartialEq)]
enum DbError {
    TimedOut,
}

impl From<SourceTimeout> for DbError {
    fn from(_: SourceTimeout) -> Self {
        DbError::TimedOut
    }
}

// ---- timeout: a fail-safe value is served at once, the load lands ---------------------------

#[cached(ttl = "300ms", fail_safe = "1h", timeout = "100ms", key = "to:<id>")]
async fn soft(id: u64) -> Result<u32, DbError> {
    let _ = id;
    Ok(source(0).await)
}

#[cached(ttl = "300ms", fail_safe = "1h", key = "tn:<id>")]
async fn soft_control(id: u64) -> Result<u32, DbError> {
    let _ = id;
    Ok(source(1).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_timeout_the_fail_safe_value_is_served_and_the_load_lands() {
    assert_eq!(soft(1).await, Ok(1));
    tokio::time::sleep(Duration::from_millis(400)).await; // expired, within fail-safe
    SLOW[0].store(1, SeqCst);
    let answer = tokio::time::timeout(Duration::from_secs(10), soft(1)).await;
    assert_eq!(
        answer,
        Ok(Ok(1)),
        "the old value, without waiting for the gated source"
    );
    assert_eq!(GATES[0].entered(), 1, "the load started");
    assert_eq!(soft_stats().source_timeouts, 1);
    // The load goes on: once the source answers, its value lands without another call.
    GATES[0].open(1);
    until_real("the load landed", || soft_stats().loads == 2).await;
    SLOW[0].store(0, SeqCst);
    assert_eq!(soft(1).await, Ok(2));
    assert_eq!(CALLS[0].load(SeqCst), 2, "the landed value is a hit");

    // Control: without `timeout` the caller waits for the source.
    assert_eq!(soft_control(1).await, Ok(1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    SLOW[1].store(1, SeqCst);
    let waited = tokio::time::timeout(Duration::from_millis(800), soft_control(1)).await;
    assert!(waited.is_err(), "control: no timeout, the caller waits");
    GATES[1].open(1);
}

// ---- hard_timeout: the caller gives up with the function's error ----------------------------

#[cached(ttl = 60, hard_timeout = "200ms", key = "th:<id>")]
async fn hard(id: u64) -> Result<u32, DbError> {
    let _ = id;
    Ok(source(2).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_hard_timeout_without_a_fallback_the_caller_gets_the_error_and_the_load_lands() {
    SLOW[2].store(1, SeqCst);
    let answer = tokio::time::timeout(Duration::from_secs(10), hard(7)).await;
    assert_eq!(
        answer,
        Ok(Err(DbError::TimedOut)),
        "gave up at hard_timeout"
    );
    assert_eq!(hard_stats().source_timeouts, 1);
    assert_eq!(hard_stats().load_errors, 0, "the source did not fail");
    // A second caller joins the same load (coalesced) and gives up too.
    assert_eq!(hard(7).await, Err(DbError::TimedOut));
    assert_eq!(GATES[2].entered(), 1, "one load for both");
    GATES[2].open(1);
    until_real("the load landed", || hard_stats().loads == 1).await;
    SLOW[2].store(0, SeqCst);
    assert_eq!(hard(7).await, Ok(1), "the background load's value");
    assert_eq!(CALLS[2].load(SeqCst), 1);
}

// ---- hard_timeout with fail_safe on a plain value -------------------------------------------

#[cached(
    ttl = "300ms",
    fail_safe = "1h",
    hard_timeout = "150ms",
    key = "tf:<id>"
)]
async fn plain(id: u64) -> u32 {
    let _ = id;
    source(3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_hard_timeout_a_plain_value_falls_back_to_the_fail_safe_value() {
    assert_eq!(plain(1).await, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    SLOW[3].store(1, SeqCst);
    let answer = tokio::time::timeout(Duration::from_secs(10), plain(1)).await;
    assert_eq!(answer, Ok(1));
    assert_eq!(plain_stats().source_timeouts, 1);
    GATES[3].open(1);
}

// ---- borrowed arguments: the load cannot outlive the call -----------------------------------

/// Counts inline loads dropped before they finished.
static DROPPED: AtomicU32 = AtomicU32::new(0);

struct CountDrop(bool);

impl Drop for CountDrop {
    fn drop(&mut self) {
        if !self.0 {
            DROPPED.fetch_add(1, SeqCst);
        }
    }
}

#[cached(ttl = "300ms", fail_safe = "1h", timeout = "100ms", key = "ti:<name>")]
async fn inline(name: &str) -> Result<u32, DbError> {
    let _ = name;
    let mut guard = CountDrop(false);
    let n = source(4).await;
    guard.0 = true;
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_borrowed_arguments_timeout_serves_the_fallback_and_cancels_the_load() {
    assert_eq!(inline("a").await, Ok(1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    SLOW[4].store(1, SeqCst);
    let answer = tokio::time::timeout(Duration::from_secs(10), inline("a")).await;
    assert_eq!(answer, Ok(Ok(1)));
    assert_eq!(
        DROPPED.load(SeqCst),
        1,
        "the load was dropped with the call"
    );
    SLOW[4].store(0, SeqCst);
    assert_eq!(inline("a").await, Ok(3), "the next call loads again");
}

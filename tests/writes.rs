//! Write-through (`*_put`, `write_through`) and write-behind (`WriteBehind`): coalescing,
//! batching on size and interval, a failing sink, a full buffer under each policy, shutdown
//! with pending writes; puts reaching every tier and process, and winning over loads in
//! flight.
#![cfg(feature = "redis")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachemacro_runtime::{cached, write_through, WhenFull, WriteBehind, WriteError};
use common::child::{eventually, Proc};
use common::redis::Server;
use common::{until_real, Gate};

// ---- write-through ---------------------------------------------------------------------------

static PROFILE_LOADS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, key = "profile:<id>")]
async fn profile(id: u64) -> Result<String, String> {
    PROFILE_LOADS.fetch_add(1, SeqCst);
    Ok(format!("loaded {id}"))
}

#[tokio::test]
async fn write_through_writes_the_source_then_the_cache() {
    let db = Arc::new(Mutex::new(HashMap::new()));
    assert_eq!(profile(1).await.unwrap(), "loaded 1");
    let save = {
        let db = db.clone();
        async move {
            db.lock().unwrap().insert(1u64, "saved 1".to_string());
            Ok::<_, String>((1u64, "saved 1".to_string()))
        }
    };
    let (id, name) = write_through(save, |(id, name): &(u64, String)| {
        profile_put(*id, name.clone())
    })
    .await
    .unwrap();
    assert_eq!((id, name.as_str()), (1, "saved 1"));
    assert_eq!(db.lock().unwrap()[&1], "saved 1", "the source was written");
    assert_eq!(
        profile(1).await.unwrap(),
        "saved 1",
        "the cache holds the written value"
    );
    assert_eq!(PROFILE_LOADS.load(SeqCst), 1, "without a load");

    // A failed source write never reaches the cache.
    let failed = write_through(
        async { Err::<(u64, String), _>("db down".to_string()) },
        |_| profile_put(1, "never".into()),
    )
    .await;
    assert_eq!(failed.unwrap_err(), "db down");
    assert_eq!(profile(1).await.unwrap(), "saved 1");
}

static RACE_GATE: Gate = Gate::new();

#[cached(ttl = 600, key = "race:<id>")]
async fn raced(id: u64) -> String {
    RACE_GATE.pass().await;
    format!("old {id}")
}

#[tokio::test]
async fn a_put_wins_over_a_load_in_flight() {
    let load = tokio::spawn(raced(1));
    until_real("the load started", || RACE_GATE.entered() == 1).await;
    raced_put(1, "new 1".into()).await.unwrap();
    RACE_GATE.open(1);
    assert_eq!(
        load.await.unwrap(),
        "old 1",
        "the loader gets what it loaded"
    );
    assert_eq!(raced(1).await, "new 1", "but the cache keeps the put");
}

#[test]
fn a_put_reaches_redis_and_every_other_process() {
    let server = Server::start();
    let mut a = Proc::start(&server.url(), "wt:");
    let mut b = Proc::start(&server.url(), "wt:");
    for p in [&mut a, &mut b] {
        p.cmd("get tiered 0");
        p.wait_subscribed();
    }
    assert_eq!(a.version("tiered", 1), 1);
    assert_eq!(b.version("tiered", 1), 1, "B holds version 1 in L1");
    assert_eq!(a.cmd("put tiered 1 7"), "ok");
    let loads = b.stat("tiered", "loads");
    eventually("B sees the put", || b.version("tiered", 1) == 7);
    assert_eq!(
        b.stat("tiered", "loads"),
        loads,
        "from Redis, not from B's source"
    );
    assert_eq!(a.version("tiered", 1), 7);
}

// ---- write-behind ----------------------------------------------------------------------------

type Batches = Arc<Mutex<Vec<Vec<(u32, u32)>>>>;

/// A sink that records batches, fails its first `fail` calls, and can be held at a gate.
#[derive(Clone, Default)]
struct Sink {
    batches: Batches,
    calls: Arc<AtomicU32>,
    fail: Arc<AtomicU32>,
    gate: Option<Arc<Gate>>,
}

impl Sink {
    fn failing(n: u32) -> Self {
        let s = Self::default();
        s.fail.store(n, SeqCst);
        s
    }

    fn gated() -> (Self, Arc<Gate>) {
        let gate = Arc::new(Gate::new());
        (
            Self {
                gate: Some(gate.clone()),
                ..Self::default()
            },
            gate,
        )
    }

    fn buffer(&self) -> cachemacro_runtime::WriteBehindBuilder<u32, u32> {
        let sink = self.clone();
        WriteBehind::builder(move |batch: Vec<(u32, u32)>| {
            let sink = sink.clone();
            async move {
                sink.calls.fetch_add(1, SeqCst);
                if let Some(g) = &sink.gate {
                    g.pass().await;
                }
                if sink
                    .fail
                    .fetch_update(SeqCst, SeqCst, |f| f.checked_sub(1))
                    .is_ok()
                {
                    return Err("the database said no");
                }
                sink.batches.lock().unwrap().push(batch);
                Ok(())
            }
        })
    }

    fn written(&self) -> HashMap<u32, u32> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .copied()
            .collect()
    }

    fn sizes(&self) -> Vec<usize> {
        self.batches.lock().unwrap().iter().map(Vec::len).collect()
    }
}

#[tokio::test]
async fn repeated_writes_of_a_key_coalesce_to_the_latest() {
    let sink = Sink::default();
    let wb = sink
        .buffer()
        .flush_interval(Duration::from_secs(60))
        .build();
    for v in 0..100 {
        wb.write(1, v).await.unwrap();
    }
    wb.write(2, 5).await.unwrap();
    let stats = wb.shutdown().await;
    assert_eq!(sink.written(), HashMap::from([(1, 99), (2, 5)]));
    assert_eq!(sink.sizes(), vec![2], "one batch on shutdown");
    assert_eq!(
        (stats.accepted, stats.coalesced, stats.written),
        (101, 99, 2)
    );
}

#[tokio::test]
async fn batches_flush_on_size_without_waiting_for_the_interval() {
    let sink = Sink::default();
    let wb = sink
        .buffer()
        .max_batch(10)
        .flush_interval(Duration::from_secs(60))
        .build();
    for k in 0..25 {
        wb.write(k, k).await.unwrap();
    }
    until_real("two full batches written", || sink.written().len() == 20).await;
    assert_eq!(sink.sizes(), vec![10, 10]);
    assert_eq!(
        wb.stats().pending,
        5,
        "the rest waits for size, interval or shutdown"
    );
    wb.shutdown().await;
    assert_eq!(sink.sizes(), vec![10, 10, 5]);
}

#[tokio::test]
async fn a_partial_batch_flushes_on_the_interval_and_flush_waits_for_it() {
    let sink = Sink::default();
    let wb = sink
        .buffer()
        .max_batch(1000)
        .flush_interval(Duration::from_millis(30))
        .build();
    for k in 0..3 {
        wb.write(k, k).await.unwrap();
    }
    until_real("the interval flushed them", || sink.written().len() == 3).await;
    wb.write(9, 9).await.unwrap();
    wb.flush().await;
    assert_eq!(
        sink.written()[&9],
        9,
        "flush returned after the write landed"
    );
}

#[tokio::test]
async fn a_failing_sink_is_retried_with_backoff() {
    let sink = Sink::failing(2);
    let wb = sink
        .buffer()
        .retries(5, Duration::from_millis(1))
        .flush_interval(Duration::from_millis(5))
        .build();
    wb.write(1, 1).await.unwrap();
    let stats = wb.shutdown().await;
    assert_eq!(sink.written(), HashMap::from([(1, 1)]));
    assert_eq!((stats.retries, stats.written, stats.failed), (2, 1, 0));
}

#[tokio::test]
async fn a_sink_that_never_recovers_loses_the_batch_and_says_so() {
    let sink = Sink::failing(u32::MAX);
    let wb = sink.buffer().retries(3, Duration::from_millis(1)).build();
    wb.write(1, 1).await.unwrap();
    wb.write(2, 2).await.unwrap();
    let stats = wb.shutdown().await;
    assert_eq!(sink.calls.load(SeqCst), 4, "one attempt and three retries");
    assert_eq!((stats.written, stats.failed), (0, 2));
}

#[tokio::test]
async fn a_full_buffer_drops_the_newest_write_when_told_to() {
    let (sink, gate) = Sink::gated();
    let wb = sink
        .buffer()
        .capacity(3)
        .max_batch(3)
        .when_full(WhenFull::DropNewest)
        .build();
    for k in 0..3 {
        wb.write(k, k).await.unwrap(); // flushed as a batch, held at the gate
    }
    until_real("the sink holds the first batch", || gate.entered() == 1).await;
    for k in 3..6 {
        wb.write(k, k).await.unwrap(); // the buffer is full again
    }
    assert_eq!(wb.write(6, 6).await, Err(WriteError::Full));
    wb.write(3, 33).await.unwrap(); // a pending key still coalesces
    gate.open(10);
    let stats = wb.shutdown().await;
    assert_eq!(stats.dropped, 1);
    assert_eq!(sink.written().len(), 6);
    assert_eq!(sink.written()[&3], 33);
}

#[tokio::test]
async fn a_full_buffer_drops_the_oldest_write_when_told_to() {
    let (sink, gate) = Sink::gated();
    let wb = sink
        .buffer()
        .capacity(3)
        .max_batch(3)
        .when_full(WhenFull::DropOldest)
        .build();
    for k in 0..3 {
        wb.write(k, k).await.unwrap();
    }
    until_real("the sink holds the first batch", || gate.entered() == 1).await;
    for k in 3..7 {
        wb.write(k, k).await.unwrap();
    }
    gate.open(10);
    let stats = wb.shutdown().await;
    assert_eq!(stats.dropped, 1);
    let written = sink.written();
    assert!(
        !written.contains_key(&3),
        "the oldest pending write was dropped"
    );
    assert!(written.contains_key(&6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_makes_writers_wait_by_default() {
    let (sink, gate) = Sink::gated();
    let wb = sink.buffer().capacity(2).max_batch(2).build();
    wb.write(0, 0).await.unwrap();
    wb.write(1, 1).await.unwrap();
    until_real("the sink holds the first batch", || gate.entered() == 1).await;
    wb.write(2, 2).await.unwrap();
    wb.write(3, 3).await.unwrap();
    let blocked = tokio::spawn({
        let wb = wb.clone();
        async move { wb.write(4, 4).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !blocked.is_finished(),
        "back-pressure: the writer waits for room"
    );
    gate.open(10);
    blocked.await.unwrap().unwrap();
    let stats = wb.shutdown().await;
    assert_eq!((stats.dropped, stats.written), (0, 5));
}

#[tokio::test]
async fn shutdown_flushes_every_pending_write_and_then_refuses_more() {
    let sink = Sink::default();
    let wb = sink
        .buffer()
        .max_batch(64)
        .flush_interval(Duration::from_secs(60))
        .build();
    let other = wb.clone();
    for k in 0..1000 {
        wb.write(k, k).await.unwrap();
    }
    let stats = wb.shutdown().await;
    assert_eq!(stats.written, 1000);
    assert_eq!(sink.written().len(), 1000);
    assert_eq!(other.write(1, 1).await, Err(WriteError::Closed));
}

#[tokio::test]
async fn dropping_the_last_handle_flushes_in_the_background() {
    let sink = Sink::default();
    let wb = sink
        .buffer()
        .flush_interval(Duration::from_secs(60))
        .build();
    wb.write(1, 1).await.unwrap();
    drop(wb);
    until_real("the pending write was flushed", || {
        sink.written().len() == 1
    })
    .await;
}

/// `flush()` waits for the first unflushed write of a key even when a later write of that
/// key replaces it before the flusher takes it: the slot remembers its oldest pending write.
#[tokio::test]
async fn flush_waits_for_a_key_overwritten_after_it_started() {
    let (sink, gate) = Sink::gated();
    let wb = sink
        .buffer()
        .max_batch(1)
        .flush_interval(Duration::from_secs(60))
        .build();
    // Keep the flusher busy: key 0's batch is held at the gate.
    wb.write(0, 0).await.unwrap();
    until_real("the sink holds key 0's batch", || gate.entered() == 1).await;

    wb.write(1, 10).await.unwrap(); // accepted before the flush: flush must wait for key 1
    let mut flush = Box::pin(wb.flush());
    // Poll the flush exactly once: it records what it waits for.
    tokio::select! {
        biased;
        _ = &mut flush => panic!("flush returned with key 1 pending"),
        _ = std::future::ready(()) => {}
    }
    wb.write(1, 11).await.unwrap(); // overwrites the pending slot before the flusher takes it

    gate.open(1); // key 0's batch completes; the flusher takes key 1 and holds it at the gate
    until_real("the sink holds key 1's batch", || gate.entered() == 2).await;
    tokio::select! {
        biased;
        _ = &mut flush => panic!("flush returned before key 1 was written"),
        _ = std::future::ready(()) => {}
    }
    assert!(!sink.written().contains_key(&1));

    gate.open(10);
    common::no_hang("flush", flush).await; // (consumes the flush, which borrows `wb`)
    assert_eq!(
        sink.written().get(&1),
        Some(&11),
        "key 1 was written (its latest value) before flush returned"
    );
    wb.shutdown().await;
}

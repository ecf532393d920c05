//! User code runs off the cache's I/O thread: a write-behind sink that blocks its thread
//! (`std::thread::sleep` inside an async sink, as careless code does) stalls neither the
//! cache's own I/O nor another buffer's flusher.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachemacro_runtime::WriteBehind;
use common::until_real;

#[tokio::test]
async fn a_blocking_sink_does_not_stall_another_buffers_flusher() {
    // A buffer whose sink blocks its thread for 500 ms per batch, kept busy: 20 batches of
    // one key, 10 s of blocking.
    let slow_calls = Arc::new(AtomicU32::new(0));
    let slow = WriteBehind::builder({
        let calls = slow_calls.clone();
        move |_batch: Vec<(u32, u32)>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, SeqCst);
                std::thread::sleep(Duration::from_millis(500)); // blocks whatever thread polls it
                Ok::<_, std::io::Error>(())
            }
        }
    })
    .max_batch(1)
    .flush_interval(Duration::from_millis(10))
    .build();
    for k in 0..20 {
        slow.write(k, k).await.unwrap();
    }
    until_real("the slow sink is blocking", || slow_calls.load(SeqCst) >= 1).await;

    // Meanwhile a second buffer with a prompt sink and a 10 ms interval flushes promptly.
    let written = Arc::new(Mutex::new(HashSet::new()));
    let fast = WriteBehind::builder({
        let written = written.clone();
        move |batch: Vec<(u32, u32)>| {
            written
                .lock()
                .unwrap()
                .extend(batch.into_iter().map(|(k, _)| k));
            async { Ok::<_, std::io::Error>(()) }
        }
    })
    .flush_interval(Duration::from_millis(10))
    .build();
    let mut latencies = Vec::new();
    for k in 0..20 {
        let start = Instant::now();
        fast.write(k, k).await.unwrap();
        until_real("the fast sink got the write", || {
            written.lock().unwrap().contains(&k)
        })
        .await;
        latencies.push(start.elapsed());
    }
    let worst = latencies.iter().max().unwrap();
    assert!(
        *worst < Duration::from_millis(200),
        "a write reached a prompt sink in {worst:?} (all: {latencies:?}): another buffer's blocking sink stalled it"
    );
    assert!(
        slow_calls.load(SeqCst) < 20,
        "the slow sink was still busy throughout"
    );
    fast.shutdown().await;
}

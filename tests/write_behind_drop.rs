//! Dropping the last `WriteBehind` handle without `shutdown()`: the pending writes still
//! reach the sink, in the background, whatever runtime the handle was dropped on, even when
//! that runtime is shut down right after.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachemacro_runtime::WriteBehind;
use tokio::sync::Semaphore;

const N: u32 = 2_000;
/// How long a test waits for the background flush: far more than it takes.
const BOUND: Duration = Duration::from_secs(20);

/// A sink that takes a little time per batch, using the timer of whatever runtime polls it,
/// and that can be held closed (so the final flush is certainly still to come when the
/// caller goes away).
#[derive(Clone)]
struct Sink {
    written: Arc<Mutex<HashMap<u32, u32>>>,
    batches: Arc<AtomicU32>,
    gate: Arc<Semaphore>,
}

impl Sink {
    fn open() -> Self {
        let s = Self::closed();
        s.gate.add_permits(1);
        s
    }

    /// No batch completes before [`Sink::release`].
    fn closed() -> Self {
        Self {
            written: Arc::default(),
            batches: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    fn release(&self) {
        self.gate.add_permits(1);
    }

    fn buffer(&self) -> WriteBehind<u32, u32> {
        let sink = self.clone();
        WriteBehind::builder(move |batch: Vec<(u32, u32)>| {
            let sink = sink.clone();
            async move {
                drop(sink.gate.acquire().await.unwrap());
                tokio::time::sleep(Duration::from_millis(2)).await;
                sink.batches.fetch_add(1, SeqCst);
                sink.written.lock().unwrap().extend(batch);
                Ok::<_, std::io::Error>(())
            }
        })
        .max_batch(50) // 40 batches for N writes
        .flush_interval(Duration::from_secs(3600)) // only the drop can flush them
        .build()
    }

    fn len(&self) -> usize {
        self.written.lock().unwrap().len()
    }

    fn assert_all(&self) {
        let written = self.written.lock().unwrap();
        assert_eq!(
            written.len(),
            N as usize,
            "every pending write reached the sink"
        );
        assert!((0..N).all(|k| written.get(&k) == Some(&(k + 1))));
    }

    /// Waits (blocking this thread, no runtime needed) until all N writes arrived.
    fn wait_all_blocking(&self) {
        let deadline = Instant::now() + BOUND;
        while self.len() < N as usize && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.assert_all();
    }

    async fn wait_all(&self) {
        let deadline = Instant::now() + BOUND;
        while self.len() < N as usize && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.assert_all();
    }
}

async fn write_all(wb: &WriteBehind<u32, u32>) {
    for k in 0..N {
        wb.write(k, k).await.unwrap();
        wb.write(k, k + 1).await.unwrap(); // coalesced: the latest is written
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_flushes_on_a_multi_thread_runtime() {
    let sink = Sink::closed();
    let wb = sink.buffer();
    let clone = wb.clone();
    write_all(&wb).await;
    drop(wb);
    clone
        .write(0, 1)
        .await
        .expect("a clone keeps the buffer open");
    drop(clone);
    assert_eq!(sink.len(), 0);
    sink.release();
    sink.wait_all().await;
}

#[tokio::test]
async fn dropping_the_last_handle_flushes_on_a_current_thread_runtime() {
    let sink = Sink::open();
    let wb = sink.buffer();
    write_all(&wb).await;
    drop(wb);
    sink.wait_all().await;
}

#[tokio::test]
async fn dropping_the_last_handle_in_a_task_flushes() {
    let sink = Sink::open();
    let wb = sink.buffer();
    tokio::spawn(async move {
        write_all(&wb).await;
        // the task ends, and the handle with it
    })
    .await
    .unwrap();
    sink.wait_all().await;
}

#[test]
fn the_final_flush_survives_the_current_thread_runtime_it_was_dropped_on() {
    let sink = Sink::closed();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let wb = sink.buffer();
        write_all(&wb).await;
        drop(wb);
    });
    drop(rt); // the caller's runtime is gone before the final flush wrote anything
    assert_eq!(sink.len(), 0);
    sink.release();
    sink.wait_all_blocking();
}

#[test]
fn the_final_flush_survives_a_multi_thread_runtime_shut_down_in_the_background() {
    let sink = Sink::closed();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let wb = sink.buffer();
        let writer = tokio::spawn(async move { write_all(&wb).await });
        writer.await.unwrap();
    });
    rt.shutdown_background();
    sink.release();
    sink.wait_all_blocking();
}

#[test]
fn dropping_the_last_handle_outside_any_runtime_flushes() {
    let sink = Sink::open();
    let wb = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let wb = sink.buffer();
        rt.block_on(write_all(&wb));
        wb
    }; // the runtime that wrote is gone; the handle is dropped on a plain thread
    std::thread::spawn(move || drop(wb)).join().unwrap();
    sink.wait_all_blocking();
}

/// Writers racing on the same keys, then the last handle dropped: every key reaches the
/// sink (each key sits once in the flush order, however many writers raced to add it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_then_a_drop_lose_nothing() {
    for round in 0..4000 {
        let written = Arc::new(Mutex::new(HashMap::new()));
        let wb = WriteBehind::builder({
            let written = written.clone();
            move |batch: Vec<(u32, u32)>| {
                written.lock().unwrap().extend(batch);
                async { Ok::<_, std::io::Error>(()) }
            }
        })
        .max_batch(1)
        .flush_interval(Duration::from_secs(3600))
        .build();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let wb = wb.clone();
                tokio::spawn(async move {
                    for k in 0..16 {
                        wb.write(k, w).await.unwrap();
                    }
                })
            })
            .collect();
        drop(wb);
        for w in writers {
            w.await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while written.lock().unwrap().len() < 16 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let got = written.lock().unwrap().len();
        assert_eq!(got, 16, "round {round}: keys lost after the drop");
    }
}

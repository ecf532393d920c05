//! Helpers shared by the integration tests: deterministic gates instead of sleeps.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use tokio::sync::Semaphore;

/// A source's gate: counts callers that reached it and holds them until opened.
pub struct Gate {
    entered: AtomicU32,
    permits: Semaphore,
}

impl Gate {
    pub const fn new() -> Self {
        Self {
            entered: AtomicU32::new(0),
            permits: Semaphore::const_new(0),
        }
    }

    /// Called by the source: counts itself, then waits for a permit.
    pub async fn pass(&self) -> u32 {
        let n = self.entered.fetch_add(1, SeqCst) + 1;
        self.permits.acquire().await.unwrap().forget();
        n
    }

    /// Lets `n` more callers through.
    pub fn open(&self, n: usize) {
        self.permits.add_permits(n);
    }

    /// How many callers reached the gate.
    pub fn entered(&self) -> u32 {
        self.entered.load(SeqCst)
    }
}

/// Waits until `cond` holds, yielding to the runtime in between (no time passes, so this
/// is safe under `tokio::time::pause`). Panics after many rounds: a hang is a failure.
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..200_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("timed out waiting until {what}");
}

/// Waits until `cond` holds on a real clock (multi-threaded tests), for at most 20 s.
pub async fn until_real(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Fails the test instead of hanging if `fut` takes longer than 20 s of real time.
pub async fn no_hang<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(20), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} hung"),
    }
}
pub mod child;
#[cfg(feature = "memcached")]
pub mod memcached;
pub mod proxy;
pub mod redis;

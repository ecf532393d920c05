//! What `timeout` and `hard_timeout` measure: how long a call has waited for the source (its
//! own load, another caller's flight, or the holder of the key's lock), not the cache's own
//! reads and writes. A slow or stalled Redis is the breaker's and `op_timeout`'s to handle;
//! it must not turn a call whose source answers at once into a `SourceTimeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// One call's wait for the source: not yet begun, waiting since when, or over (the source
/// answered; what is left is storing the value).
#[derive(Debug, Default)]
pub(crate) struct SourceWait(AtomicU64);

const DONE: u64 = u64::MAX;

fn nanos() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let n = BASE.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(n).unwrap_or(DONE - 1).max(1)
}

impl SourceWait {
    /// The call starts waiting for the source (the first time only).
    pub fn begin(&self) {
        let _ = self
            .0
            .compare_exchange(0, nanos(), Ordering::AcqRel, Ordering::Acquire);
    }

    /// The source answered.
    pub fn end(&self) {
        self.0.store(DONE, Ordering::Release);
    }

    /// How long the call has waited for the source, while it waits.
    pub fn waited(&self) -> Option<Duration> {
        match self.0.load(Ordering::Acquire) {
            0 | DONE => None,
            since => Some(Duration::from_nanos(nanos().saturating_sub(since))),
        }
    }
}

pin_project_lite::pin_project! {
    /// A source future that marks the call's wait while it runs.
    pub(crate) struct Marked<F> {
        #[pin]
        inner: F,
        wait: Option<Arc<SourceWait>>,
    }
}

impl<F> Marked<F> {
    pub fn new(inner: F, wait: Option<Arc<SourceWait>>) -> Self {
        Self { inner, wait }
    }
}

impl<F: Future> Future for Marked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if let Some(w) = this.wait {
            w.begin();
        }
        let out = this.inner.poll(cx);
        if out.is_ready() {
            if let Some(w) = this.wait {
                w.end();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_begins_once_and_ends() {
        let w = SourceWait::default();
        assert_eq!(w.waited(), None);
        w.begin();
        std::thread::sleep(Duration::from_millis(5));
        let first = w.waited().unwrap();
        assert!(first >= Duration::from_millis(5));
        w.begin(); // a second stage of the same call does not restart the clock
        assert!(w.waited().unwrap() >= first);
        w.end();
        assert_eq!(w.waited(), None);
    }
}

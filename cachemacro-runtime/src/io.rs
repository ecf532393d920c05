//! The runtime that owns every connection and background task of the cache.
//!
//! A cached function is a `static`: it outlives whichever tokio runtime first called it, and
//! it may be called from several runtimes in turn (each `#[tokio::test]` has its own) or from
//! none. So Redis connections (their driver tasks and reconnect loops), the pub/sub listener
//! and every timer the cache sets live on one small runtime of the crate's own, on a
//! dedicated thread started on first use.
//!
//! A Redis operation is still *polled* by its caller ([`run`]), inside this runtime's
//! context: the caller's task does the encoding and decoding, the connection's driver on
//! the I/O thread does the socket work, and timeouts use the I/O runtime's clock. No task is
//! spawned per operation, and the caller's runtime needs neither timers nor I/O enabled, nor
//! to be a tokio runtime at all.

#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::runtime::Handle;

fn handle() -> &'static Handle {
    // A current-thread runtime driven by its own thread for the rest of the process; the
    // thread parks when there is nothing to do.
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("cachemacro-io".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("cachemacro: cannot start its I/O runtime");
                let _ = tx.send(rt.handle().clone());
                rt.block_on(std::future::pending::<()>());
            })
            .expect("cachemacro: cannot start its I/O thread");
        rx.recv().expect("cachemacro: its I/O thread died on start")
    })
}

/// Polls `fut` in the cache runtime's context, from whatever task awaits this. Returns
/// `None` if it panicked (a bug in a dependency), which callers treat as a backend failure.
pub(crate) async fn run<F: Future>(fut: F) -> Option<F::Output> {
    Guarded {
        inner: Box::pin(fut),
        enter: true,
    }
    .await
    .ok()
}

/// Polls `fut` in the caller's own context, a panic turned into `None` as in [`run`].
pub(crate) async fn guarded<F: Future>(fut: F) -> Option<F::Output> {
    Guarded {
        inner: Box::pin(fut),
        enter: false,
    }
    .await
    .ok()
}

struct Guarded<F> {
    inner: Pin<Box<F>>,
    enter: bool,
}

impl<F: Future> Future for Guarded<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        let _context = this.enter.then(|| handle().enter());
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Starts `fut` as a task on the caller's tokio runtime (where the user's resources live),
/// or on the cache's own runtime when the caller is not on one.
pub(crate) fn spawn_here<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(fut);
        }
        Err(_) => spawn(fut),
    }
}

/// Starts `fut` on the cache's own runtime and does not wait for it.
pub(crate) fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    handle().spawn(fut);
}

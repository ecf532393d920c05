//! The runtime that owns every connection and background task of the cache.
//!
//! A cached function is a `static`: it outlives whichever tokio runtime first called it, and
//! it may be called from several runtimes in turn (each `#[tokio::test]` has its own) or from
//! none. So Redis connections, their reconnect loops, the pub/sub listener and their timers
//! live on one small runtime of the crate's own, on a dedicated thread started on first use.
//! Callers hand it work with [`run`] and await the result from wherever they are.

#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::future::Future;
use std::sync::OnceLock;

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

/// Runs `fut` on the cache's own runtime and waits for it from any executor.
/// Returns `None` if the task panicked (a bug) so callers treat it as a backend failure.
pub(crate) async fn run<F>(fut: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    handle().spawn(fut).await.ok()
}

/// Starts `fut` on the cache's own runtime and does not wait for it.
pub(crate) fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    handle().spawn(fut);
}

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
//!
//! User code the cache runs in the background — a write-behind sink, an event handler —
//! does not run on that thread: code that blocks its thread (a synchronous driver, a
//! `std::thread::sleep`) would stall every Redis operation and the backplane's heartbeat.
//! It runs on a second pool of the crate's own ([`spawn_user`]): two threads named
//! `cachemacro-user`, each driving a single-threaded runtime with timers and I/O, started on
//! first use and kept for the rest of the process, so such tasks too outlive whichever
//! runtime started them. (Two single-threaded runtimes rather than tokio's multi-thread
//! scheduler, which would need tokio's `rt-multi-thread` feature of every user: a task is
//! placed on the less busy thread and stays there, so one that blocks still holds up the
//! others on its thread, never the I/O thread.)

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::runtime::Handle;

fn handle() -> &'static Handle {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    HANDLE.get_or_init(|| start("cachemacro-io"))
}

/// A current-thread runtime driven by a thread of its own for the rest of the process; the
/// thread parks when there is nothing to do.
fn start(name: &str) -> Handle {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cachemacro: cannot start a runtime of its own");
            let _ = tx.send(rt.handle().clone());
            rt.block_on(std::future::pending::<()>());
        })
        .expect("cachemacro: cannot start a thread of its own");
    rx.recv()
        .expect("cachemacro: a thread of its own died on start")
}

/// How many threads run user code ([`spawn_user`]).
const USER_THREADS: usize = 2;

/// One thread of the user-code pool and how many tasks it runs now.
struct UserThread {
    handle: Handle,
    tasks: Arc<AtomicUsize>,
}

fn user_threads() -> &'static [UserThread] {
    static THREADS: OnceLock<Vec<UserThread>> = OnceLock::new();
    THREADS.get_or_init(|| {
        (0..USER_THREADS)
            .map(|_| UserThread {
                handle: start("cachemacro-user"),
                tasks: Arc::default(),
            })
            .collect()
    })
}

/// Starts `fut`, which runs user code, on the crate's user-code pool (see the module docs)
/// and does not wait for it: never on the I/O thread, nor on the caller's runtime. It goes
/// to the pool's thread running the fewest tasks, so a task that blocks its thread holds up
/// as few others as can be. A panic in it is caught and logged.
pub(crate) fn spawn_user<F: Future<Output = ()> + Send + 'static>(fut: F) {
    let thread = user_threads()
        .iter()
        .min_by_key(|t| t.tasks.load(Ordering::Relaxed))
        .expect("the pool has threads");
    let count = Counted::new(thread.tasks.clone());
    thread.handle.spawn(async move {
        let _count = count;
        if guarded(fut).await.is_none() {
            tracing::error!("cachemacro: a background task running user code panicked");
        }
    });
}

/// Counts a task for [`spawn_user`]'s placement until it ends.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(tasks: Arc<AtomicUsize>) -> Self {
        tasks.fetch_add(1, Ordering::Relaxed);
        Self(tasks)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Polls `fut` in the cache runtime's context, from whatever task awaits this. Returns
/// `None` if it panicked (a bug in a dependency), which callers treat as a backend failure.
pub(crate) async fn run<F: Future>(fut: F) -> Option<F::Output> {
    CatchUnwind {
        inner: fut,
        enter: true,
    }
    .await
    .ok()
}

/// Polls `fut` in the caller's own context, a panic turned into `None` as in [`run`].
pub(crate) async fn guarded<F: Future>(fut: F) -> Option<F::Output> {
    CatchUnwind::new(fut).await.ok()
}

pin_project_lite::pin_project! {
    /// Polls a future, turning a panic into an `Err` carrying the payload; with `enter`, in
    /// the cache's I/O runtime's context (its timers and connections). The future is held
    /// in place, not boxed.
    pub(crate) struct CatchUnwind<F> {
        #[pin]
        inner: F,
        enter: bool,
    }
}

impl<F: Future> CatchUnwind<F> {
    /// Polls `fut` in the caller's own context.
    pub(crate) fn new(fut: F) -> Self {
        Self {
            inner: fut,
            enter: false,
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let _context = this.enter.then(|| handle().enter());
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// A timer on the cache's own I/O runtime: usable from any caller, whatever its executor
/// (and whether or not its runtime has timers).
pub(crate) fn sleep(d: std::time::Duration) -> tokio::time::Sleep {
    let _context = handle().enter();
    tokio::time::sleep(d)
}

/// A duration in whole milliseconds, saturating (deadlines in the envelope, `PX` values).
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether the current task runs on the cache's own I/O runtime.
#[cfg(feature = "redis")]
pub(crate) fn on_io_runtime() -> bool {
    Handle::try_current().is_ok_and(|h| h.id() == handle().id())
}

/// Whether `h` is the cache's own I/O runtime.
#[cfg(feature = "memcached")]
pub(crate) fn is_io_runtime(h: &Handle) -> bool {
    h.id() == handle().id()
}

/// Starts `fut` as a task on the caller's tokio runtime (where the user's resources live),
/// or on the cache's user-code threads when the caller is not on one.
pub(crate) fn spawn_here<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(fut);
        }
        Err(_) => spawn_user(fut), // user code (a source): never on the I/O thread
    }
}

/// Starts `fut` on the cache's own I/O runtime and does not wait for it. For the cache's
/// own I/O only: anything that runs user code goes to [`spawn_user`].
pub(crate) fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    handle().spawn(fut);
}

/// Runs a future in its caller's task; if the caller goes away before it finishes, the
/// rest goes on as a task of its own (on the caller's runtime, else the user-code threads):
/// a load others wait on, an invalidation half done. Nothing is spawned unless a caller is
/// cancelled.
pub(crate) struct Detach<F: Future + Send + 'static>(Option<Pin<Box<F>>>, bool);

impl<F: Future + Send + 'static> Detach<F> {
    /// Goes on on the caller's runtime, where the resources of a source live.
    pub(crate) fn new(fut: F) -> Self {
        Self(Some(Box::pin(fut)), false)
    }

    /// Goes on on the cache's threads, whatever becomes of the caller's runtime: for the
    /// cache's own work (an invalidation, a put), which needs nothing of the caller's.
    pub(crate) fn on_cache_threads(fut: F) -> Self {
        Self(Some(Box::pin(fut)), true)
    }
}

impl<F: Future + Send + 'static> Future for Detach<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let slot = &mut self.get_mut().0;
        let Some(fut) = slot.as_mut() else {
            return Poll::Pending; // polled after completion: never resolves again
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(ready) => {
                *slot = None;
                ready
            }
            Err(panic) => {
                *slot = None; // a panicked future must not be polled again
                std::panic::resume_unwind(panic)
            }
        }
    }
}

impl<F: Future + Send + 'static> Drop for Detach<F> {
    fn drop(&mut self) {
        if let Some(fut) = self.0.take() {
            let rest = async move {
                let _ = fut.await;
            };
            if self.1 {
                spawn_user(rest);
            } else {
                spawn_here(rest);
            }
        }
    }
}

/// Runs a closure when dropped, unless disarmed: a step that must happen even if the
/// caller is cancelled half way.
pub(crate) struct Defer<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Defer<F> {
    pub(crate) fn new(f: F) -> Self {
        Self(Some(f))
    }

    /// The step happened (or must not): nothing to do on drop.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce()> Drop for Defer<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

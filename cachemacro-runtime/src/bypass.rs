//! Scopes in which cached calls skip the cache: admin tools, consistency-sensitive reads.
//!
//! ```
//! # async fn demo() {
//! use cachemacro_runtime::{bypass, Bypass};
//! // Every cached call made by this future (not by tasks it spawns) reads the source.
//! let fresh = bypass(Bypass::Read, async { /* get_user(42).await */ 1 }).await;
//! // The same, and the results replace what the cache held (as `<fn>_refresh` would).
//! let stored = bypass(Bypass::ReadAndStore, async { /* get_user(42).await */ 2 }).await;
//! # let _ = (fresh, stored);
//! # }
//! ```
//!
//! Outside any scope a cached call pays one relaxed atomic load for this (no task-local
//! lookup): the scope count is zero.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// What a [`bypass`] scope does to the cached calls made in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Call the source; leave the cache as it is (nothing read from it, nothing stored).
    Read,
    /// Call the source and store the result in every tier, replacing what was cached (a
    /// write-through put, as `<fn>_refresh`).
    ReadAndStore,
}

tokio::task_local! {
    static MODE: Bypass;
}

/// Scopes alive in the process (any task): when zero, calls do not look for one.
static SCOPES: AtomicUsize = AtomicUsize::new(0);

/// Runs `fut` with cached calls made by it (in the same task) skipping the cache as `mode`
/// says. Tasks it spawns are not in the scope.
pub async fn bypass<F: Future>(mode: Bypass, fut: F) -> F::Output {
    let _count = Scope::open();
    MODE.scope(mode, fut).await
}

/// One open scope (a [`bypass`] or a [`crate::served::observe`]) counted while it lives.
pub(crate) struct Scope(());

impl Scope {
    pub(crate) fn open() -> Self {
        SCOPES.fetch_add(1, Relaxed);
        Scope(())
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        SCOPES.fetch_sub(1, Relaxed);
    }
}

/// Whether any scope is open in the process (one relaxed load).
#[inline]
pub(crate) fn any_scope() -> bool {
    SCOPES.load(Relaxed) != 0
}

/// The scope the current call is in, if any.
#[inline]
pub(crate) fn current() -> Option<Bypass> {
    if SCOPES.load(Relaxed) == 0 {
        return None;
    }
    MODE.try_with(|m| *m).ok()
}

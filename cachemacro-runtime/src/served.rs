//! What each cached call served, told to the caller who asks: whether the value was a
//! fresh hit, a stale one, a load, …, how old it is, how long it stays fresh, and the
//! identity of the cache entry it came from. The HTTP layer builds `Age`, `X-Cache`,
//! `ETag` and `Last-Modified` from it, so they are read off the cache, not guessed.
//!
//! ```
//! use cachemacro_runtime::{cached, served::{observe, Outcome}};
//!
//! #[cached(ttl = 60, soft_ttl = 10)]
//! async fn price(id: u64) -> u64 { id * 100 }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let (v, first) = observe(price(7)).await;
//! assert_eq!(v, 700);
//! assert_eq!(first.calls()[0].outcome, Outcome::Load);
//! let (_, second) = observe(price(7)).await;
//! assert_eq!(second.calls()[0].outcome, Outcome::Hit);
//! // The same entry: the same identity (and so the same ETag).
//! assert_eq!(first.calls()[0].identity, second.calls()[0].identity);
//! # }
//! ```
//!
//! Outside any [`observe`] scope a cached call pays nothing more for this than the one
//! relaxed atomic load it already pays for [`crate::bypass`] (the scopes share one count).

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// Where a call's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A fresh value from the cache (L1, or the shared tier).
    Hit,
    /// A value past `soft_ttl`, served while one refresh runs (stale-while-revalidate).
    Stale,
    /// This call ran the source.
    Load,
    /// Another caller's load, which this call waited for (request coalescing).
    Joined,
    /// The source failed and a value within `fail_safe` stood in.
    FailSafe,
}

impl Outcome {
    /// The `X-Cache` value: `HIT`, `STALE`, `MISS` (a load, or another caller's), `FAIL-SAFE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Stale => "STALE",
            Outcome::Load | Outcome::Joined => "MISS",
            Outcome::FailSafe => "FAIL-SAFE",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Outcome::Hit => 0,
            Outcome::Stale => 1,
            Outcome::Joined => 2,
            Outcome::Load => 3,
            Outcome::FailSafe => 4,
        }
    }
}

/// What one cached call served.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Served {
    /// The function's name, as in its stats.
    pub function: String,
    /// Where the value came from.
    pub outcome: Outcome,
    /// How long the value has been in the cache, from its deadlines (a copy read from the
    /// shared tier carries the age it has there). `None` when the call did not see the
    /// entry (another caller's load, a shared-tier read without the in-process tier).
    pub age: Option<Duration>,
    /// How long the value stays fresh from now (zero when stale).
    pub fresh_for: Duration,
    /// The function's fresh period: `soft_ttl` if set, else `ttl`.
    pub fresh_period: Duration,
    /// How long after the fresh period a stale value may still be served while it is
    /// refreshed: `ttl - soft_ttl` (zero without `soft_ttl`).
    pub stale_while_revalidate: Duration,
    /// `fail_safe`: how long past its expiry a value stands in for a failing source.
    pub stale_if_error: Option<Duration>,
    /// The identity of the entry the value came from: unique in this process for the
    /// life of the process (a new load, or a new copy from the shared tier, is a new
    /// identity). `None` when the call did not see the entry.
    pub identity: Option<u64>,
    /// When the entry's value was stored: its load's start plus the load's duration (for a
    /// copy read from the shared tier: when it was read plus that duration, never earlier
    /// than the truth), on the wall clock.
    /// `None` when the call did not see the entry.
    pub produced_at: Option<SystemTime>,
    /// How long until the entry's hard expiry (for a fail-safe value, until `fail_safe`
    /// runs out as well is `stale_if_error`'s): `None` when the call did not see the entry.
    /// A downstream cache is never offered the value past it.
    pub hard_left: Option<Duration>,
    /// When the call read the value, on the wall clock.
    pub at: SystemTime,
    /// Whether the cache holds the value served. `false`: a load whose key (or one of its
    /// tags) was invalidated while it ran, or a value the policy does not cache (a `None`
    /// without `cache_none`): the caller gets it, but nobody downstream should keep it
    /// (the HTTP layer answers `no-store`).
    pub kept: bool,
    /// Which call this was (function and key), to tell calls apart.
    key_hash: u64,
}

impl Served {
    /// A strong entity tag for the entry (`"…"`), when its identity is known: the
    /// process's random id and the entry's identity, so no hashing of the value.
    pub fn etag(&self) -> Option<String> {
        self.identity
            .map(|id| format!("\"{:016x}{:x}\"", process_id(), id))
    }
}

/// The calls one [`observe`] scope made, in order (a repeated call of the same function
/// with the same key keeps its last outcome).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    calls: Vec<Served>,
}

impl Observed {
    /// Every cached call made in the scope.
    pub fn calls(&self) -> &[Served] {
        &self.calls
    }

    /// Whether no cached call was made.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The outcome that describes the whole response: the least favourable of the calls
    /// (a load over a stale value over a hit).
    pub fn outcome(&self) -> Option<Outcome> {
        self.calls
            .iter()
            .map(|c| c.outcome)
            .max_by_key(|o| o.rank())
    }

    /// Whether the cache holds every value the scope was served (see [`Served::kept`]).
    pub fn kept(&self) -> bool {
        self.calls.iter().all(|c| c.kept)
    }

    /// An entity tag for everything the scope read: the one entry's tag, or, for several,
    /// a tag derived from all their identities. `None` if any identity is unknown.
    pub fn etag(&self) -> Option<String> {
        match self.calls.as_slice() {
            [] => None,
            [one] => one.etag(),
            many => {
                let mut h = Fnv::new();
                h.u64(process_id());
                for c in many {
                    h.u64(c.identity?);
                }
                Some(format!("\"c{:016x}{:x}\"", h.0, many.len()))
            }
        }
    }
}

tokio::task_local! {
    static SCOPE: RefCell<Observed>;
}

/// Runs `fut` and returns what every cached call it made (in this task, not in tasks it
/// spawns) served.
///
/// Scopes nest: an enclosing scope (an HTTP layer around a handler that observes some of
/// its calls itself) sees the inner scope's calls too, so its validators cover them.
pub async fn observe<F: Future>(fut: F) -> (F::Output, Observed) {
    let _count = crate::bypass::Scope::open();
    let (out, seen) = SCOPE
        .scope(RefCell::new(Observed::default()), async move {
            let out = fut.await;
            let seen = SCOPE.with(|s| std::mem::take(&mut *s.borrow_mut()));
            (out, seen)
        })
        .await;
    let _ = SCOPE.try_with(|outer| {
        let mut outer = outer.borrow_mut();
        for served in &seen.calls {
            outer.record(served.clone());
        }
    });
    (out, seen)
}

impl Observed {
    /// Adds a call (a repeated call of the same function and key replaces the earlier).
    fn record(&mut self, served: Served) {
        match self
            .calls
            .iter_mut()
            .find(|c| c.key_hash == served.key_hash)
        {
            Some(c) => *c = served,
            None => self.calls.push(served),
        }
    }
}

/// Whether some task may be observing (one relaxed load); then [`note`] looks.
#[inline]
pub(crate) fn watching() -> bool {
    crate::bypass::any_scope()
}

/// Records what a call served, if the current task is observing.
pub(crate) fn note(make: impl FnOnce() -> Served) {
    let _ = SCOPE.try_with(|s| {
        let served = make();
        s.borrow_mut().record(served);
    });
}

/// What a call's function contributes to its [`Served`]: the policy's periods.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Periods<'a> {
    pub function: &'a str,
    pub ttl: Duration,
    pub soft_ttl: Option<Duration>,
    pub fail_safe: Option<Duration>,
}

/// The deadlines of the entry a call read, on the cache's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub soft: u64,
    pub hard: u64,
    pub born: u64,
    /// How long the load took: `born + delta` is when the value was stored.
    pub delta: Duration,
    pub id: u64,
}

impl Periods<'_> {
    /// What a call served: `seen` is the entry when the call saw it.
    pub(crate) fn served(
        &self,
        key: &str,
        outcome: Outcome,
        seen: Option<Seen>,
        kept: bool,
    ) -> Served {
        let fresh_period = self.soft_ttl.unwrap_or(self.ttl);
        let swr = self
            .soft_ttl
            .map_or(Duration::ZERO, |s| self.ttl.saturating_sub(s));
        let now = crate::clock::now();
        let hard_left = seen.map(|s| Duration::from_nanos(s.hard.saturating_sub(now)));
        let (age, fresh_for) = match seen {
            Some(seen) => {
                // The fresh deadline: soft if any, else hard.
                let deadline = if seen.soft == u64::MAX {
                    seen.hard
                } else {
                    seen.soft
                };
                let left = Duration::from_nanos(deadline.saturating_sub(now));
                let over = Duration::from_nanos(now.saturating_sub(deadline));
                let age = if left.is_zero() {
                    fresh_period + over
                } else {
                    fresh_period.saturating_sub(left)
                };
                (Some(age), left)
            }
            None if kept && matches!(outcome, Outcome::Load | Outcome::Joined) => {
                (None, fresh_period)
            }
            None => (None, Duration::ZERO),
        };
        let mut h = Fnv::new();
        h.bytes(self.function.as_bytes());
        h.bytes(&[0xff]);
        h.bytes(key.as_bytes());
        Served {
            function: self.function.to_owned(),
            outcome,
            age,
            fresh_for,
            fresh_period,
            stale_while_revalidate: swr,
            stale_if_error: self.fail_safe,
            identity: seen.map(|s| s.id),
            // When the value was stored (its load's start plus its duration): a slow reload
            // that began in the second its predecessor was sent from must not share its
            // `Last-Modified`, or `If-Modified-Since` alone would earn a wrong 304.
            produced_at: seen.map(|s| {
                let ago = now.saturating_sub(s.born);
                SystemTime::now() - Duration::from_nanos(ago) + s.delta
            }),
            hard_left,
            at: SystemTime::now(),
            kept,
            key_hash: h.0,
        }
    }
}

/// A new entry identity.
pub(crate) fn next_identity() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Relaxed)
}

/// This process's random id, part of every entity tag, so two processes (or two runs)
/// never hand out the same tag for different values.
fn process_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        fastrand::u64(..) ^ t.rotate_left(17) ^ u64::from(std::process::id())
    })
}

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

//! Invalidation state shared by every engine in the process: per-key generation stripes that
//! let an invalidation win over a load in flight, and the tag clock that makes
//! `invalidate_tag` O(1) for writers and one atomic load for readers.

#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{OnceLock, RwLock};

/// Generation counters striped by key hash. An invalidation bumps the key's stripe; a load
/// snapshots it before calling the source and discards its write if it moved. Collisions
/// only cost a discarded fill, never a stale value.
pub(crate) struct Generations {
    stripes: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
}

const STRIPES: usize = 256;

impl Generations {
    pub fn new() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: Default::default(),
        }
    }

    fn stripe(&self, key: &str) -> &AtomicU64 {
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        &self.stripes[(std::hash::Hasher::finish(&h) as usize) % STRIPES]
    }

    /// The current generation of `key`.
    pub fn of(&self, key: &str) -> u64 {
        self.stripe(key).load(SeqCst)
    }

    /// Moves `key`'s generation on; returns the new one.
    pub fn bump(&self, key: &str) -> u64 {
        self.stripe(key).fetch_add(1, SeqCst) + 1
    }

    /// Moves `key`'s generation from `expected` to the next one, unless something else
    /// moved it first (an invalidation, another put); returns the new generation.
    pub fn advance(&self, key: &str, expected: u64) -> Option<u64> {
        self.stripe(key)
            .compare_exchange(expected, expected + 1, SeqCst, SeqCst)
            .ok()
            .map(|g| g + 1)
    }

    /// Moves every stripe on (used when every key is dropped at once).
    pub fn bump_all(&self) {
        for s in self.stripes.iter() {
            s.fetch_add(1, SeqCst);
        }
    }
}

/// The process's tag clock. `invalidate(tag)` records the tag at a new epoch; an entry
/// whose load started at epoch `s` is valid while every one of its tags was last
/// invalidated at or before `s`.
///
/// Bounded: it remembers the [`MAX_TAGS`] most recent tag invalidations (its own and those
/// heard over the backplane). Past that it forgets the older half and raises a *floor*: an
/// entry with tags whose load started before the floor counts as invalidated (it is
/// reloaded, never served stale).
pub(crate) struct TagClock {
    epoch: AtomicU64,
    memory: RwLock<TagMemory>,
}

#[derive(Default)]
struct TagMemory {
    invalidated: HashMap<String, u64>,
    /// Every forgotten invalidation happened at or before this epoch.
    floor: u64,
}

/// Tag invalidations a process remembers at most (see [`TagClock`]).
pub(crate) const MAX_TAGS: usize = 65_536;

impl TagClock {
    pub fn epoch(&self) -> u64 {
        self.epoch.load(SeqCst)
    }

    pub fn invalidate(&self, tag: &str) {
        let mut m = self.memory.write().unwrap_or_else(|e| e.into_inner());
        let e = self.epoch.fetch_add(1, SeqCst) + 1;
        m.invalidated.insert(tag.to_owned(), e);
        if m.invalidated.len() > MAX_TAGS {
            let mut epochs: Vec<u64> = m.invalidated.values().copied().collect();
            let (_, &mut cutoff, _) = epochs.select_nth_unstable(MAX_TAGS / 2);
            m.invalidated.retain(|_, &mut at| at > cutoff);
            m.floor = m.floor.max(cutoff);
        }
    }

    pub fn any_invalidated_after(&self, tags: &[String], stamp: u64) -> bool {
        if tags.is_empty() {
            return false;
        }
        let m = self.memory.read().unwrap_or_else(|e| e.into_inner());
        stamp < m.floor
            || tags
                .iter()
                .any(|t| m.invalidated.get(t.as_str()).is_some_and(|&e| e > stamp))
    }

    /// Tag invalidations remembered now (at most [`MAX_TAGS`]).
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.memory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .invalidated
            .len()
    }
}

pub(crate) fn tags() -> &'static TagClock {
    static CLOCK: OnceLock<TagClock> = OnceLock::new();
    CLOCK.get_or_init(|| TagClock {
        epoch: AtomicU64::new(0),
        memory: RwLock::new(TagMemory::default()),
    })
}

/// What the backplane needs from a tiered engine: drop one key, or everything, from L1.
pub(crate) trait LocalTier: Send + Sync {
    fn drop_key(&self, key: &str);
    fn flush(&self);
}

/// A random id of this process, so it ignores its own invalidation messages.
pub(crate) fn origin() -> &'static str {
    static ORIGIN: OnceLock<String> = OnceLock::new();
    ORIGIN.get_or_init(|| format!("{:016x}", fastrand::u64(..) ^ u64::from(std::process::id())))
}

/// The L1 tiers of one Redis backend and the health of their subscription.
///
/// Invalidations are published on `{prefix}cachemacro:invalidate` as `k|origin|key` or
/// `t|origin|tag` (never a value, never on the fill path). A process that is not subscribed
/// — before its first subscription, or after losing it — does not read its L1 at all; when
/// it subscribes again it flushes L1 first, so it never serves what it may have missed an
/// invalidation for.
#[derive(Default)]
pub(crate) struct Backplane {
    healthy: std::sync::atomic::AtomicBool,
    tiers: std::sync::Mutex<Vec<std::sync::Weak<dyn LocalTier>>>,
    /// Callers waiting for another process's lock on a key, woken by its release message.
    waiters: std::sync::Mutex<HashMap<String, std::sync::Weak<tokio::sync::Notify>>>,
    started: OnceLock<()>,
}

impl Backplane {
    /// Whether L1 may be read now.
    #[inline]
    pub fn healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The wake-up of callers waiting for `key`'s lock to be released.
    pub fn waiter(&self, key: &str) -> std::sync::Arc<tokio::sync::Notify> {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = w.get(key).and_then(std::sync::Weak::upgrade) {
            return n;
        }
        if w.len() > 1024 {
            w.retain(|_, n| n.strong_count() > 0);
        }
        let n = std::sync::Arc::new(tokio::sync::Notify::new());
        w.insert(key.to_owned(), std::sync::Arc::downgrade(&n));
        n
    }

    fn wake(&self, key: &str) {
        let w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = w.get(key).and_then(std::sync::Weak::upgrade) {
            n.notify_waiters();
        }
    }

    /// Whether the listener was started (a tiered or locking function uses the backend).
    pub fn listening(&self) -> bool {
        self.started.get().is_some()
    }

    fn tiers(&self) -> Vec<std::sync::Arc<dyn LocalTier>> {
        let mut tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        tiers.retain(|t| t.strong_count() > 0);
        tiers.iter().filter_map(|t| t.upgrade()).collect()
    }
}

pub(crate) fn message(kind: char, body: &str) -> String {
    format!("{kind}|{}|{body}", origin())
}

#[cfg(feature = "redis")]
pub(crate) use listener::{listen_to, register_tier};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_clock_is_bounded_and_never_revalidates_what_it_forgot() {
        let clock = TagClock {
            epoch: AtomicU64::new(0),
            memory: RwLock::new(TagMemory::default()),
        };
        clock.invalidate("early");
        let stamp_before = clock.epoch() - 1; // an entry loaded before "early" was invalidated
        let stamp_after = clock.epoch();
        let early = ["early".to_owned()];
        assert!(clock.any_invalidated_after(&early, stamp_before));
        assert!(!clock.any_invalidated_after(&early, stamp_after));
        for i in 0..(MAX_TAGS * 2) {
            clock.invalidate(&format!("t{i}"));
        }
        assert!(
            clock.remembered() <= MAX_TAGS,
            "{} remembered",
            clock.remembered()
        );
        // "early" is forgotten, but an entry loaded before it was invalidated stays invalid.
        assert!(clock.any_invalidated_after(&early, stamp_before));
        // A recent invalidation is still exact, and an entry loaded now is valid.
        let now = clock.epoch();
        let recent = [format!("t{}", MAX_TAGS * 2 - 1)];
        assert!(clock.any_invalidated_after(&recent, now - 1));
        assert!(!clock.any_invalidated_after(&recent, now));
        assert!(
            !clock.any_invalidated_after(&[], 0),
            "an entry without tags is never invalidated by tags"
        );
    }
}

#[cfg(feature = "redis")]
mod listener {
    use std::sync::atomic::Ordering::Release;
    use std::sync::{Arc, Weak};

    use super::{origin, tags, LocalTier};
    use crate::store::redis::{RedisBackend, Signal};

    /// Adds a tiered engine to its backend's backplane, starting the listener if needed.
    pub(crate) fn register_tier(backend: &Arc<RedisBackend>, tier: Weak<dyn LocalTier>) {
        let bp = &backend.backplane;
        bp.tiers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tier);
        listen_to(backend);
    }

    /// Starts the backend's listener (once): tiered L1s and lock waiters need it.
    pub(crate) fn listen_to(backend: &Arc<RedisBackend>) {
        backend.backplane.started.get_or_init(|| {
            let b = backend.clone();
            crate::io::spawn(async move { listen(b).await });
        });
    }

    fn handle(backend: &RedisBackend, payload: &str) {
        let mut parts = payload.splitn(3, '|');
        let (Some(kind), Some(from), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if kind == "w" {
            // A lock was released: whoever waits for it, in any process, reads the value.
            backend.backplane.wake(body);
            return;
        }
        if from == origin() {
            return;
        }
        match kind {
            "k" => {
                for t in backend.backplane.tiers() {
                    t.drop_key(body);
                }
            }
            "t" => tags().invalidate(body),
            _ => {}
        }
    }

    async fn listen(backend: Arc<RedisBackend>) {
        let b = backend.clone();
        backend
            .follow(b.channel(), move |signal| match signal {
                Signal::Up { again } => {
                    // Anything may have been invalidated while we were not listening.
                    for t in b.backplane.tiers() {
                        t.flush();
                    }
                    b.backplane.healthy.store(true, Release);
                    if again {
                        tracing::warn!(backend = %b.name, "cachemacro: backplane subscribed again; L1 flushed and back in use");
                    }
                }
                Signal::Message(payload) => handle(&b, payload),
                Signal::Down(None) => {
                    b.backplane.healthy.store(false, Release);
                    tracing::warn!(backend = %b.name, "cachemacro: backplane subscription lost; L1 bypassed until it is back");
                }
                Signal::Down(Some(error)) => {
                    b.backplane.healthy.store(false, Release);
                    tracing::warn!(backend = %b.name, error, "cachemacro: cannot subscribe to the backplane; L1 bypassed until it can");
                }
            })
            .await;
    }
}

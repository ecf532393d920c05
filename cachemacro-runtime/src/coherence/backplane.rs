//! A backend's backplane as this process sees it: whether it is subscribed (L1 is trusted
//! only while it is), the L1s to drop keys from, and the callers waiting for a lock.
//! How messages travel (Redis pub/sub) is the tier's business; what they mean is here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::Notify;

use super::message::{origin, Message};
use super::tags::tags;

/// What the backplane needs from a tiered engine: drop one key, or everything, from L1.
pub(crate) trait LocalTier: Send + Sync {
    fn drop_key(&self, key: &str);
    fn flush(&self);
    /// The tag all of this function's values carry in the shared tier (its `<fn>_clear`).
    fn fn_tag(&self) -> Option<&str>;
    /// Entry `id` of the semantic scope at `key` was stored or removed by another process.
    fn entry_changed(&self, key: &str, id: &str) {
        let _ = (key, id);
    }
}

/// What a followed channel says.
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // made by tier implementations
pub(crate) enum Signal<'a> {
    /// Subscribed; `again` after a loss.
    Up { again: bool },
    /// A message on the channel.
    Message(&'a str),
    /// The subscription was lost, or (with the error) could not be made.
    Down(Option<&'a str>),
}

/// The L1 tiers of one backend and the health of their subscription.
///
/// A process that is not subscribed — before its first subscription, or after losing it —
/// does not read its L1 at all; when it subscribes again it flushes L1 first, so it never
/// serves what it may have missed an invalidation for.
#[derive(Default)]
pub(crate) struct Backplane {
    healthy: AtomicBool,
    /// When (on the cache's clock) the subscription was last lost; 0: never subscribed.
    down_since: AtomicU64,
    tiers: Mutex<Vec<Weak<dyn LocalTier>>>,
    /// Callers waiting for another process's lock on a key, woken by its release message.
    waiters: Mutex<HashMap<String, Weak<Notify>>>,
    started: OnceLock<()>,
}

impl Backplane {
    /// Whether L1 may be read now.
    #[inline]
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// When the subscription was lost, if it was ever up and is down now.
    pub fn down_since(&self) -> Option<u64> {
        if self.healthy() {
            return None;
        }
        match self.down_since.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// The subscription went down (only the first signal of a loss counts).
    fn went_down(&self) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            self.down_since
                .store(crate::clock::now().max(1), Ordering::Release);
        }
    }

    /// The wake-up of callers waiting for `key`'s lock to be released.
    pub fn waiter(&self, key: &str) -> Arc<Notify> {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = w.get(key).and_then(Weak::upgrade) {
            return n;
        }
        if w.len() > 1024 {
            w.retain(|_, n| n.strong_count() > 0);
        }
        let n = Arc::new(Notify::new());
        w.insert(key.to_owned(), Arc::downgrade(&n));
        n
    }

    fn wake(&self, key: &str) {
        let w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = w.get(key).and_then(Weak::upgrade) {
            n.notify_waiters();
        }
    }

    /// Marks the listener started; `true` the first time (the caller starts it then).
    pub fn start(&self) -> bool {
        let mut first = false;
        self.started.get_or_init(|| first = true);
        first
    }

    /// Whether the listener was started (a tiered or locking function uses the backend).
    pub fn listening(&self) -> bool {
        self.started.get().is_some()
    }

    /// Adds a tiered engine's L1.
    pub fn register(&self, tier: Weak<dyn LocalTier>) {
        self.tiers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tier);
    }

    /// Drops `key` from every registered L1 but the one at `except` (the caller's own).
    pub fn drop_key_except(&self, key: &str, except: *const ()) {
        for t in self.tiers() {
            if Arc::as_ptr(&t) as *const () != except {
                t.drop_key(key);
            }
        }
    }

    /// Tells every registered tier but the one at `except` that entry `id` of the semantic
    /// scope at `key` changed (a same-name function of this process).
    #[cfg_attr(not(feature = "semantic"), allow(dead_code))] // told by semantic functions
    pub fn entry_changed_except(&self, key: &str, id: &str, except: *const ()) {
        for t in self.tiers() {
            if Arc::as_ptr(&t) as *const () != except {
                t.entry_changed(key, id);
            }
        }
    }

    fn tiers(&self) -> Vec<Arc<dyn LocalTier>> {
        let mut tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        tiers.retain(|t| t.strong_count() > 0);
        tiers.iter().filter_map(Weak::upgrade).collect()
    }

    /// Applies what the subscription says; `backend` names it in the log.
    pub fn on_signal(&self, backend: &str, signal: Signal<'_>) {
        match signal {
            Signal::Up { again } => {
                // Anything may have been invalidated while we were not listening.
                for t in self.tiers() {
                    t.flush();
                }
                self.healthy.store(true, Ordering::Release);
                if again {
                    tracing::warn!(
                        backend,
                        "cachemacro: backplane subscribed again; L1 flushed and back in use"
                    );
                }
            }
            Signal::Message(text) => self.on_message(text),
            Signal::Down(None) => {
                self.went_down();
                tracing::warn!(
                    backend,
                    "cachemacro: backplane subscription lost; L1 bypassed until it is back"
                );
            }
            Signal::Down(Some(error)) => {
                self.went_down();
                tracing::warn!(
                    backend,
                    error,
                    "cachemacro: cannot subscribe to the backplane; L1 bypassed until it can"
                );
            }
        }
    }

    fn on_message(&self, text: &str) {
        let Some((from, message)) = Message::decode(text) else {
            return;
        };
        match message {
            // A lock was released: whoever waits for it, in any process, reads the value.
            Message::Unlocked(key) => self.wake(key),
            _ if from == origin() => {} // this process applied it already
            other => self.apply(&other),
        }
    }

    /// Applies an invalidation to this process's L1s: another process's, or one of this
    /// process's own replayed from the outbox (its L1 may have been refilled from the
    /// shared tier, with the value the replay removes, between the outage and the replay).
    pub fn apply(&self, message: &Message<'_>) {
        match message {
            Message::Key(key) => {
                for t in self.tiers() {
                    t.drop_key(key);
                }
            }
            Message::Tag(tag) => {
                tags().invalidate(tag);
                // A function's own tag: `<fn>_clear`.
                self.flush_function(tag);
            }
            Message::Unlocked(key) => self.wake(key),
            Message::Entry(body) => {
                if let Some((id, key)) = body.split_once(' ') {
                    for t in self.tiers() {
                        t.entry_changed(key, id);
                    }
                }
            }
        }
    }

    /// Flushes the L1 of every function whose own tag is `tag`.
    pub fn flush_function(&self, tag: &str) {
        for t in self.tiers() {
            if t.fn_tag() == Some(tag) {
                t.flush();
            }
        }
    }
}

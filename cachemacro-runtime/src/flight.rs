//! In-process single-flight: concurrent misses of one key share one load.
//!
//! A leader holds a [`Leader`] guard. When it lands a value, every waiter gets a clone.
//! When the guard is dropped without landing (the leader's future was cancelled, or the
//! source panicked), the flight is marked abandoned and the waiters wake: one of them leads
//! a new flight with its own arguments. Nobody waits on a flight that can no longer finish.

use std::collections::HashMap;

use crate::key::Key;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// How a flight ended, as its waiters see it.
#[derive(Debug, Clone)]
pub(crate) enum Landed<V> {
    /// A value, and where the leader got it.
    Value(V, Via),
    /// The source returned an error: shared with the waiters when the error type allows
    /// it (`Clone + Send + Sync`), else each waiter calls the source itself.
    Failed(Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>),
    /// The leader went away before landing; a waiter takes over.
    Abandoned,
    /// An invalidation or put of the key landed while the load ran: its result is older
    /// than what the cache was told, so waiters go round again (a new flight).
    Superseded,
}

/// Where a landed value came from, as its waiters report it ([`crate::served`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// A cache tier (L1 after all, the shared tier, a lock holder's value, a fail-safe
    /// fallback): its age is not known to the waiters; `stale`: past its fresh period.
    Cache { stale: bool },
    /// The leader's own source call; `kept`: the cache holds it (it was not invalidated
    /// while it ran, and the policy caches such a value); `seen`: the entry it made, when
    /// the in-process tier holds it (its deadlines and identity, for the waiters' reports).
    Source {
        kept: bool,
        seen: Option<crate::served::Seen>,
    },
    /// The leader's source failed and a value within `fail_safe` stood in.
    FailSafe,
}

#[derive(Debug)]
enum State<V> {
    Running,
    Done(Landed<V>),
}

/// One load in flight.
pub(crate) struct Flight<V> {
    state: Mutex<State<V>>,
    done: Notify,
    /// Its key was invalidated (or put) while it ran: see [`Flights::forget`].
    superseded: std::sync::atomic::AtomicBool,
}

impl<V: Clone> Flight<V> {
    /// Waits for the flight to land. Cancel-safe: dropping the future just stops waiting.
    pub async fn wait(&self) -> Landed<V> {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let State::Done(landed) = &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
                return landed.clone();
            }
            notified.await;
        }
    }
}

/// The in-flight loads of one engine, by key.
pub(crate) struct Flights<V> {
    map: Mutex<HashMap<Key, Arc<Flight<V>>>>,
    /// Refreshes of due values running now (see [`Flights::try_lead_refresh`]).
    refreshing: std::sync::atomic::AtomicU32,
}

/// What a caller does about a key: lead its load, or wait on the one in flight.
pub(crate) enum Role<V: Clone> {
    Leader(Leader<V>),
    Waiter(Arc<Flight<V>>),
}

impl<V: Clone> Flights<V> {
    pub fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            refreshing: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Flight<V>>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the flight for `key`, or starts one and leads it.
    pub fn join_or_lead(self: &Arc<Self>, key: &str) -> Role<V> {
        let mut map = self.lock();
        if let Some(f) = map.get(key) {
            return Role::Waiter(f.clone());
        }
        Role::Leader(self.start(&mut map, key))
    }

    /// Leads the refresh of a due value of `key`: `Err(true)` when one is in flight
    /// already, `Err(false)` when `max` refreshes run already (the caller serves the due
    /// value without refreshing; a later call will).
    pub fn try_lead_refresh(self: &Arc<Self>, key: &str, max: u32) -> Result<Leader<V>, bool> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut map = self.lock();
        if map.contains_key(key) {
            return Err(true);
        }
        if self
            .refreshing
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_err()
        {
            return Err(false);
        }
        let mut leader = self.start(&mut map, key);
        leader.refresh = true;
        Ok(leader)
    }

    fn start(self: &Arc<Self>, map: &mut HashMap<Key, Arc<Flight<V>>>, key: &str) -> Leader<V> {
        let flight = Arc::new(Flight {
            state: Mutex::new(State::Running),
            done: Notify::new(),
            superseded: Default::default(),
        });
        map.insert(Key::from(key), flight.clone());
        Leader {
            flights: self.clone(),
            key: Key::from(key),
            flight,
            landed: false,
            refresh: false,
        }
    }

    /// Whether a load of `key` is in flight.
    #[allow(dead_code)]
    pub fn in_flight(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// Detaches the flight of `key`, if any, and marks it superseded: callers from now on
    /// start a new one, and those already waiting on it are told to go round again (its
    /// writes are refused by the generation check). Only this key's flight is touched.
    pub fn forget(&self, key: &str) {
        if let Some(f) = self.lock().remove(key) {
            f.superseded
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// [`Flights::forget`] for every flight whose key starts with `prefix`.
    #[cfg_attr(not(feature = "semantic"), allow(dead_code))] // a semantic scope's flights
    pub fn forget_prefix(&self, prefix: &str) {
        self.lock().retain(|key, f| {
            let gone = key.starts_with(prefix);
            if gone {
                f.superseded
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            !gone
        });
    }

    /// Detaches and marks every flight (everything was invalidated at once).
    pub fn forget_all(&self) {
        for (_, f) in self.lock().drain() {
            f.superseded
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// The right and duty to land one flight. Dropping it unlanded abandons the flight.
pub(crate) struct Leader<V: Clone> {
    flights: Arc<Flights<V>>,
    key: Key,
    flight: Arc<Flight<V>>,
    landed: bool,
    /// Counted in [`Flights::refreshing`] until it lands.
    refresh: bool,
}

impl<V: Clone> Leader<V> {
    /// Ends the flight with `landed`, waking every waiter.
    pub fn land(mut self, landed: Landed<V>) {
        self.finish(|_| landed);
    }

    /// Ends the flight with what `decide` says, evaluated *after* the flight left the map
    /// and told whether [`Flights::forget`] marked it: no caller can join it any more, so a
    /// check made in `decide` (was the key or a tag invalidated since the load started?)
    /// covers every waiter it will wake. A caller that joined after an invalidation returned
    /// is told [`Landed::Superseded`], never handed the older value.
    pub fn land_with(mut self, decide: impl FnOnce(bool) -> Landed<V>) {
        self.finish(decide);
    }

    fn finish(&mut self, decide: impl FnOnce(bool) -> Landed<V>) {
        self.landed = true;
        if std::mem::take(&mut self.refresh) {
            self.flights
                .refreshing
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        {
            let mut map = self.flights.lock();
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.key);
            }
        }
        let landed = decide(
            self.flight
                .superseded
                .load(std::sync::atomic::Ordering::SeqCst),
        );
        *self.flight.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Done(landed);
        self.flight.done.notify_waiters();
    }
}

impl<V: Clone> Drop for Leader<V> {
    fn drop(&mut self) {
        if !self.landed {
            // A flight whose key was invalidated (or replaced) meanwhile is superseded, not
            // just abandoned: its waiters must not keep what they held from before.
            self.finish(|forgotten| {
                if forgotten {
                    Landed::Superseded
                } else {
                    Landed::Abandoned
                }
            });
        }
    }
}

//! One engine per cached function: the whole read path lives here.
//!
//! A call renders its key, then: L1 fresh → return (maybe starting an XFetch early
//! refresh); L1 stale → return the stale value and start one refresh for the key; miss →
//! join the key's flight or lead it; the leader snapshots the key's generation, calls the
//! source, measures δ, and stores unless an invalidation moved the generation meanwhile.
//!
//! Two flavours of the same path exist, chosen by the macro from the signature:
//! * *detached* (every argument owned): loads and refreshes run as tasks on the caller's
//!   runtime, so a cancelled caller does not cancel a load others wait on, and stale reads
//!   return at once while the refresh runs in the background;
//! * *inline* (some argument borrowed, e.g. `&self`): the source future cannot outlive the
//!   call, so the caller that wins a refresh runs it itself and everyone else gets the stale
//!   value; if a leader is cancelled, one waiter takes over with its own arguments.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use tokio::time::Instant;

use crate::entry::{Entry, Freshness, TagStamp};
use crate::error::Error;
use crate::flight::{Flights, Landed, Leader, Role};
use crate::invalidate::{tags as tag_clock, Generations};
use crate::kind::Kind;
use crate::policy::{Policy, Site, Stampede};
use crate::stats::{self, Counter, Recorder, Stats};
use crate::store::memory::MemoryStore;

/// The engine of one cached function returning `R`, whose cached part `K` describes.
pub struct Engine<R, K: Kind<R>> {
    policy: Policy,
    stats: Arc<Recorder>,
    l1: MemoryStore<K::Value>,
    flights: Arc<Flights<K::Value>>,
    gens: Generations,
    _r: PhantomData<fn() -> R>,
}

/// What a look-up in L1 decided.
enum Lookup<V: Clone> {
    /// Serve this value; nothing else to do.
    Hit(V),
    /// Serve `entry` (fresh but XFetch-due, or stale) and refresh it under `leader`.
    Refresh {
        leader: Leader<V>,
        entry: Arc<Entry<V>>,
        early: bool,
    },
    /// Load; `fallback` may stand in for a failing source (fail-safe).
    Miss { fallback: Option<Arc<Entry<V>>> },
}

impl<R: 'static, K: Kind<R>> Engine<R, K> {
    fn new(policy: Policy) -> Self {
        let stats = Arc::new(Recorder::new(policy.display_name()));
        let on_evict = {
            let stats = stats.clone();
            Arc::new(move || stats.incr(Counter::Evictions))
        };
        Self {
            l1: MemoryStore::new(policy.capacity(), on_evict),
            stats,
            policy,
            flights: Arc::new(Flights::new()),
            gens: Generations::new(),
            _r: PhantomData,
        }
    }

    /// The policy this engine was built with.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A snapshot of this function's counters.
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    #[inline]
    fn lookup(&self, key: &str, now: Instant) -> Lookup<K::Value> {
        let Some(entry) = self.l1.get(key) else {
            return Lookup::Miss { fallback: None };
        };
        match entry.freshness(now) {
            Freshness::Fresh => {
                if self.policy.stampede == Stampede::Xfetch
                    && entry.xfetch_due(now, self.policy.beta)
                {
                    if let Some(leader) = self.flights.try_lead(key) {
                        self.stats.incr(Counter::EarlyRefreshes);
                        return Lookup::Refresh {
                            leader,
                            entry,
                            early: true,
                        };
                    }
                }
                self.stats.hit(false, || now.elapsed());
                Lookup::Hit(entry.value.clone())
            }
            Freshness::Stale => {
                if let Some(leader) = self.flights.try_lead(key) {
                    self.stats.incr(Counter::BackgroundRefreshes);
                    return Lookup::Refresh {
                        leader,
                        entry,
                        early: false,
                    };
                }
                self.stats.hit(true, || now.elapsed());
                Lookup::Hit(entry.value.clone())
            }
            Freshness::Expired => {
                let keep = self
                    .policy
                    .fail_safe
                    .is_some_and(|w| entry.within_fail_safe(now, w));
                if keep {
                    Lookup::Miss {
                        fallback: Some(entry),
                    }
                } else {
                    self.l1.remove_entry(key, &entry);
                    Lookup::Miss { fallback: None }
                }
            }
        }
    }

    /// Cache-aside for a source whose future borrows the caller's arguments.
    pub async fn get<F, Fut>(self: &Arc<Self>, key: String, tags: Vec<String>, source: F) -> R
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = R>,
    {
        let now = Instant::now();
        match self.lookup(&key, now) {
            Lookup::Hit(v) => K::join(v),
            Lookup::Refresh { leader, entry, .. } => {
                // The source cannot outlive this call: the winner refreshes in its own task.
                self.load(Some(leader), key, tags, source(), Some(entry))
                    .await
            }
            Lookup::Miss { fallback } => {
                self.stats.incr(Counter::Misses);
                let mut source = Some(source);
                let mut joined = false;
                loop {
                    let role = self.role(&key, &mut joined);
                    match role {
                        None => {
                            let source = source.take().expect("source is used once");
                            return self.load(None, key, tags, source(), fallback).await;
                        }
                        Some(Role::Leader(leader)) => {
                            let source = source.take().expect("source is used once");
                            return self.load(Some(leader), key, tags, source(), fallback).await;
                        }
                        Some(Role::Waiter(flight)) => match flight.wait().await {
                            Landed::Value(v) => return K::join(v),
                            Landed::Failed => {
                                let source = source.take().expect("source is used once");
                                return self.load(None, key, tags, source(), fallback).await;
                            }
                            Landed::Abandoned => continue,
                        },
                    }
                }
            }
        }
    }

    /// Cache-aside for a source that owns its arguments: loads and refreshes run as tasks
    /// on the caller's runtime (inline when there is none).
    pub async fn get_detached<F, Fut>(
        self: &Arc<Self>,
        key: String,
        tags: Vec<String>,
        source: F,
    ) -> R
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Send,
    {
        let now = Instant::now();
        match self.lookup(&key, now) {
            Lookup::Hit(v) => K::join(v),
            Lookup::Refresh {
                leader,
                entry,
                early,
            } => {
                let value = entry.value.clone();
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return self
                        .load(Some(leader), key, tags, source(), Some(entry))
                        .await;
                };
                let this = self.clone();
                rt.spawn(async move {
                    this.load(Some(leader), key, tags, source(), Some(entry))
                        .await;
                });
                self.stats.hit(!early, || now.elapsed());
                K::join(value)
            }
            Lookup::Miss { fallback } => {
                self.stats.incr(Counter::Misses);
                let mut source = Some(source);
                let mut joined = false;
                loop {
                    match self.role(&key, &mut joined) {
                        None => {
                            let source = source.take().expect("source is used once");
                            return self.load(None, key, tags, source(), fallback).await;
                        }
                        Some(Role::Leader(leader)) => {
                            let source = source.take().expect("source is used once");
                            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                                return self
                                    .load(Some(leader), key, tags, source(), fallback)
                                    .await;
                            };
                            let this = self.clone();
                            let task = rt.spawn(async move {
                                this.load(Some(leader), key, tags, source(), fallback).await
                            });
                            return match task.await {
                                Ok(r) => r,
                                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                                // The runtime is shutting down and takes this caller with it.
                                Err(_) => std::future::pending().await,
                            };
                        }
                        Some(Role::Waiter(flight)) => match flight.wait().await {
                            Landed::Value(v) => return K::join(v),
                            Landed::Failed => {
                                let source = source.take().expect("source is used once");
                                return self.load(None, key, tags, source(), fallback).await;
                            }
                            Landed::Abandoned => continue,
                        },
                    }
                }
            }
        }
    }

    /// Whether to lead or join (None: no coalescing). Counts a caller's first join.
    fn role(&self, key: &str, joined: &mut bool) -> Option<Role<K::Value>> {
        if !self.policy.coalesces() {
            return None;
        }
        let role = self.flights.join_or_lead(key);
        if matches!(role, Role::Waiter(_)) && !*joined {
            *joined = true;
            self.stats.incr(Counter::Coalesced);
        }
        Some(role)
    }

    /// Calls the source and stores its result unless `key` was invalidated meanwhile.
    /// `fallback` stands in for an `Err` (a stale value, or fail-safe).
    async fn load<Fut>(
        &self,
        leader: Option<Leader<K::Value>>,
        key: String,
        tags: Vec<String>,
        source: Fut,
        fallback: Option<Arc<Entry<K::Value>>>,
    ) -> R
    where
        Fut: Future<Output = R>,
    {
        let generation = self.gens.of(&key);
        let stamp = tag_clock().epoch();
        let started = Instant::now();
        // With fail-safe and a value to fall back on, a panicking source is a failure too.
        let result = if fallback.is_some() && self.policy.fail_safe.is_some() {
            CatchUnwind(Box::pin(source)).await
        } else {
            Ok(source.await)
        };
        let delta = started.elapsed();
        let error = match result.map(K::split) {
            Ok(Ok(value)) => {
                self.stats.load(false, delta);
                self.store(key, tags, &value, delta, generation, stamp);
                if let Some(leader) = leader {
                    leader.land(Landed::Value(value.clone()));
                }
                return K::join(value);
            }
            Ok(Err(error)) => Ok(error),
            Err(panic) => Err(panic),
        };
        self.stats.load(true, delta);
        if let Some(entry) = fallback {
            if error.is_err() {
                tracing::error!(
                    function = %self.stats.name(),
                    "cached function's source panicked; serving the fail-safe value"
                );
            }
            if let Some(leader) = leader {
                leader.land(Landed::Value(entry.value.clone()));
            }
            return K::join(entry.value.clone());
        }
        if let Some(leader) = leader {
            leader.land(Landed::Failed);
        }
        match error {
            Ok(error) => K::fail(error),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn store(
        &self,
        key: String,
        tags: Vec<String>,
        value: &K::Value,
        delta: std::time::Duration,
        generation: u64,
        stamp: u64,
    ) {
        let negative = K::is_negative(value);
        if negative && !self.policy.cache_none {
            return;
        }
        let now = Instant::now();
        let hard = self.policy.hard_ttl(negative);
        let entry = Arc::new(Entry {
            value: value.clone(),
            soft: self
                .policy
                .soft_ttl_within(hard)
                .filter(|_| !negative)
                .map(|s| now + s),
            hard: now + hard,
            delta,
            tags: TagStamp::new(tags, stamp),
        });
        self.l1.insert(key.clone(), entry.clone());
        // An invalidation that landed during the load wins: it bumped the generation before
        // removing the key, so either it removed what we just wrote, or we see the bump here.
        if self.gens.of(&key) != generation {
            self.l1.remove_entry(&key, &entry);
        }
    }

    /// Calls the source now and stores its result (write-through put). Loads already in
    /// flight for the key will not overwrite it.
    pub async fn refresh<Fut>(self: &Arc<Self>, key: String, tags: Vec<String>, source: Fut) -> R
    where
        Fut: Future<Output = R>,
    {
        self.gens.bump(&key);
        self.load(None, key, tags, source, None).await
    }

    /// Removes `key` from every tier; a load in flight for it will not write it back.
    pub async fn invalidate(&self, key: String) -> Result<(), Error> {
        self.gens.bump(&key);
        self.l1.remove(&key);
        self.stats.incr(Counter::Invalidations);
        Ok(())
    }

    /// Drops every entry of this function from the in-process tier.
    pub fn clear_local(&self) {
        self.gens.bump_all();
        self.l1.clear();
    }
}

/// Polls a future, turning a panic into an `Err` carrying the payload.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.get_mut().0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// The `static` through which generated code reaches its function's engine. Every item the
/// macro generates for one function holds one of these with the same policy; all resolve to
/// the one engine registered under the policy's id.
pub struct EngineCell<R: 'static, K: Kind<R>> {
    policy: Policy,
    engine: OnceLock<Arc<Engine<R, K>>>,
}

impl<R: 'static, K: Kind<R>> EngineCell<R, K> {
    /// A cell for `policy`'s function; the engine is created on first use.
    pub const fn new(policy: Policy) -> Self {
        Self {
            policy,
            engine: OnceLock::new(),
        }
    }

    /// The function's engine.
    #[inline]
    pub fn get(&self) -> &Arc<Engine<R, K>> {
        self.engine.get_or_init(|| registered(self.policy))
    }
}

type Registry = Mutex<HashMap<Site, Arc<dyn Any + Send + Sync>>>;

fn registry() -> &'static Registry {
    static ENGINES: OnceLock<Registry> = OnceLock::new();
    ENGINES.get_or_init(Default::default)
}

fn registered<R: 'static, K: Kind<R>>(policy: Policy) -> Arc<Engine<R, K>> {
    let mut engines = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(engine) = engines.get(&policy.site) {
        if let Ok(engine) = engine.clone().downcast::<Engine<R, K>>() {
            return engine;
        }
    }
    let engine = Arc::new(Engine::<R, K>::new(policy));
    stats::register(engine.stats.clone());
    engines.insert(policy.site, engine.clone());
    engine
}

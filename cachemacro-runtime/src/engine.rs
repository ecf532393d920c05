//! One engine per cached function: the whole read path lives here.
//!
//! A call renders its key, then: L1 fresh → return (maybe starting an XFetch early
//! refresh); L1 stale → return the stale value and start one refresh for the key; miss →
//! join the key's flight or lead it. The leader reads L2 (Redis) if there is one; on an L2
//! miss it snapshots the key's generations (local and in Redis), calls the source, measures
//! δ, and stores (L2, then L1) unless an invalidation moved a generation meanwhile.
//!
//! Two flavours of the same path exist, chosen by the macro from the signature:
//! * *detached* (every argument owned): source calls run as tasks on the caller's runtime,
//!   so a cancelled caller does not cancel a load others wait on, and stale reads return at
//!   once while the refresh runs in the background;
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
use std::time::Duration;

use tokio::time::Instant;

use crate::codec::ValueCodec;
use crate::entry::{Entry, Freshness, TagStamp};
use crate::error::Error;
use crate::flight::{Flights, Landed, Leader, Role};
use crate::invalidate::{tags as tag_clock, Generations};
use crate::kind::{Hooks, Kind};
use crate::policy::{Backend, Policy, Site, Stampede};
use crate::stats::{self, Counter, Recorder, Stats};
use crate::store::memory::MemoryStore;

#[cfg(feature = "redis")]
mod remote;
#[cfg(feature = "redis")]
use remote::Remote;

/// Stand-in for the Redis tier when the `redis` feature is off: never present.
#[cfg(not(feature = "redis"))]
enum Remote<V> {
    #[allow(dead_code)]
    Never(std::convert::Infallible, PhantomData<V>),
}

#[cfg(not(feature = "redis"))]
impl<V> Remote<V> {
    fn local_tier(&self) -> bool {
        match *self {
            Remote::Never(never, _) => match never {},
        }
    }
}

/// The engine of one cached function returning `R`, whose cached part `K` describes.
pub struct Engine<R, K: Kind<R>> {
    policy: Policy,
    stats: Arc<Recorder>,
    /// The in-process tier (`memory`, `tiered`); `None` for `redis`.
    l1: Option<MemoryStore<K::Value>>,
    /// The Redis tier (`redis`, `tiered`, named backends).
    remote: Option<Remote<K::Value>>,
    /// Why a remote backend the policy asks for is unusable (an unregistered name): every
    /// call then goes to the source and counts a backend error.
    broken: Option<String>,
    flights: Arc<Flights<K::Value>>,
    gens: Generations,
    /// Loads running now, by key: a second one of the same key is a stampede escape.
    loading: Mutex<HashMap<String, u32>>,
    /// What the expansion found out about the function's types.
    hooks: Hooks<K::Value, K::Error>,
    _r: PhantomData<fn() -> R>,
}

/// What a load saw of the key's invalidation state when it started: its local generation
/// and the tag epoch. A result is current while neither moved for the key and its tags.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub generation: u64,
    pub stamp: u64,
}

/// How a store decides whether it may write L1.
#[derive(Debug, Clone, Copy)]
enum Guard {
    /// A load: only if nothing invalidated the key since the snapshot.
    Load(Snapshot),
    /// A put or `*_refresh`: it supersedes older loads. After the remote write, the key's
    /// generation moves on from `expected` (so a reader that read the older value from
    /// Redis cannot put it back in L1), unless an invalidation moved it first.
    Put { expected: u64, stamp: u64 },
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

/// What a load needs to know about the tiers before the source runs.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct LoadCtx<V> {
    /// The key's Redis generation when the load started (`None`: unknown, do not write L2).
    pub l2_generation: Option<u64>,
    /// When that generation was asked for. A generation is remembered in Redis for
    /// `generation_retention`; a load older than that cannot prove that no invalidation
    /// happened, so it does not write.
    pub read_at: std::time::Instant,
    /// Redis versions of the call's tags when the load started.
    pub tag_versions: Vec<u64>,
    /// A value that may stand in for a failing source.
    pub fallback: Option<Arc<Entry<V>>>,
    /// The distributed lock this load holds (`stampede = lock | xfetch`), released when
    /// the context is dropped, after the write.
    #[cfg(feature = "redis")]
    pub lock: Option<remote::Lock>,
    #[cfg(not(feature = "redis"))]
    pub lock: Option<std::convert::Infallible>,
}

impl<V> LoadCtx<V> {
    fn local(fallback: Option<Arc<Entry<V>>>) -> Self {
        Self {
            l2_generation: None,
            read_at: std::time::Instant::now(),
            tag_versions: Vec::new(),
            fallback,
            lock: None,
        }
    }
}

/// What became of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
enum Stored {
    Yes,
    /// A negative value without `cache_none`.
    NotCached,
    /// An invalidation moved the key's generation during the load: it wins.
    Superseded,
    /// L2 could not be written (L1 was).
    RemoteFailed,
    /// Too large for L2: not stored there, and the key's previous value removed (L1 was
    /// written).
    TooLarge,
}

/// What one round of the miss path leaves to do.
enum Miss<V: Clone, E> {
    /// Return this value (from another caller's flight, L1, L2 or another process).
    Done(V),
    /// Return this error (the leader's, shared).
    Fail(E),
    /// The flight was abandoned: go round again.
    Retry,
    /// Call the source under this flight (if any) with this context.
    Load(Option<Leader<V>>, LoadCtx<V>, Snapshot),
    /// L2 had a value due for a refresh (stale, or XFetch-early).
    Stale {
        leader: Option<Leader<V>>,
        value: V,
        early: bool,
        ctx: LoadCtx<V>,
        snap: Snapshot,
    },
}

/// Where a refresh job gets its load context.
enum RefreshFrom<V> {
    /// Read already (an L2 hit that turned out stale).
    Known(LoadCtx<V>),
    /// To be read; the value being served stands in if the refresh fails.
    Stale(Arc<Entry<V>>),
}

/// What the leader found in L2.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Fetched<V> {
    /// A usable value; `refresh` is `Some(early)` when it is stale (`false`) or XFetch-due
    /// (`true`); `ctx` is what a refresh needs.
    Hit {
        value: V,
        refresh: Option<bool>,
        ctx: LoadCtx<V>,
    },
    /// Nothing usable: load with this context.
    Miss(LoadCtx<V>),
}

impl<R: 'static, K: Kind<R>> Engine<R, K> {
    fn new(
        policy: Policy,
        codec: Option<ValueCodec<K::Value>>,
        hooks: Hooks<K::Value, K::Error>,
    ) -> Self {
        let stats = Arc::new(Recorder::new(policy.display_name()));
        let on_evict = {
            let stats = stats.clone();
            Arc::new(move || stats.incr(Counter::Evictions))
        };
        let l1_store = || MemoryStore::new(policy.capacity(), on_evict.clone());
        let (l1, remote, broken) = match policy.backend {
            Backend::Memory => (Some(l1_store()), None, None),
            _ => match Self::connect(&policy, codec) {
                Ok(remote) => {
                    let local = remote.local_tier();
                    (local.then(l1_store), Some(remote), None)
                }
                Err(why) => {
                    tracing::error!(function = %stats.name(), "cachemacro: {why}; calls go to the source");
                    (None, None, Some(why))
                }
            },
        };
        Self {
            l1,
            remote,
            broken,
            stats,
            policy,
            flights: Arc::new(Flights::new()),
            gens: Generations::new(),
            loading: Mutex::new(HashMap::new()),
            hooks,
            _r: PhantomData,
        }
    }

    #[cfg(feature = "redis")]
    fn connect(
        policy: &Policy,
        codec: Option<ValueCodec<K::Value>>,
    ) -> Result<Remote<K::Value>, String> {
        let codec =
            codec.ok_or("a remote backend needs the value's codec (a bug in the expansion)")?;
        Remote::new(policy, codec)
    }

    #[cfg(not(feature = "redis"))]
    fn connect(_: &Policy, _: Option<ValueCodec<K::Value>>) -> Result<Remote<K::Value>, String> {
        Err("this backend needs the `redis` feature of cachemacro-runtime".into())
    }

    /// The policy this engine was built with.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A snapshot of this function's counters.
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    /// The in-process tier, if it may be read now (tiered: only while subscribed).
    #[inline]
    fn local(&self) -> Option<&MemoryStore<K::Value>> {
        let l1 = self.l1.as_ref()?;
        match &self.remote {
            #[cfg(feature = "redis")]
            Some(r) if !r.backend.backplane.healthy() => None,
            _ => Some(l1),
        }
    }

    #[inline]
    fn lookup(&self, l1: &MemoryStore<K::Value>, key: &str, now: Instant) -> Lookup<K::Value> {
        let Some(entry) = l1.get(key) else {
            return Lookup::Miss { fallback: None };
        };
        match entry.freshness(now) {
            Freshness::Fresh => {
                if self.policy.stampede == Stampede::Xfetch
                    && entry.xfetch_due(now, self.policy.beta)
                {
                    if let Some(leader) = self.flights.try_lead(key) {
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
            Freshness::Stale => self.due(key, entry, false, now),
            Freshness::Expired => {
                let keep = self
                    .policy
                    .fail_safe
                    .is_some_and(|w| entry.within_fail_safe(now, w));
                if !keep {
                    l1.remove_entry(key, &entry);
                }
                Lookup::Miss {
                    fallback: keep.then_some(entry),
                }
            }
        }
    }

    /// A value due for a refresh (stale, or XFetch-early): this caller leads the key's one
    /// refresh if none is in flight; either way it is served at once.
    fn due(
        &self,
        key: &str,
        entry: Arc<Entry<K::Value>>,
        early: bool,
        now: Instant,
    ) -> Lookup<K::Value> {
        if let Some(leader) = self.flights.try_lead(key) {
            return Lookup::Refresh {
                leader,
                entry,
                early,
            };
        }
        self.stats.hit(!early, || now.elapsed());
        Lookup::Hit(entry.value.clone())
    }

    /// The hit path: L1 when it may be read, else (`backend = redis`, or `tiered` while its
    /// backplane is down) one Redis read before any flight, so hits of different callers
    /// never wait on each other, and neither do stale reads: a stale or XFetch-due value is
    /// served at once while one refresh per key runs.
    async fn hit_path(&self, key: &str, tags: &[String], now: Instant) -> Lookup<K::Value> {
        if let Some(l1) = self.local() {
            return self.lookup(l1, key, now);
        }
        match &self.remote {
            #[cfg(feature = "redis")]
            Some(remote) => match remote.peek(self, key, tags).await {
                remote::Peeked::Fresh(v) => Lookup::Hit(v),
                remote::Peeked::Due { entry, early } => self.due(key, entry, early, now),
                remote::Peeked::Expired(entry) => Lookup::Miss {
                    fallback: Some(entry),
                },
                remote::Peeked::Miss => Lookup::Miss { fallback: None },
            },
            _ => {
                let _ = tags;
                Lookup::Miss { fallback: None }
            }
        }
    }

    /// What a load (or a read that fills L1) must check before its result is trusted.
    pub(crate) fn snapshot(&self, key: &str) -> Snapshot {
        Snapshot {
            generation: self.gens.of(key),
            stamp: tag_clock().epoch(),
        }
    }

    /// Whether nothing invalidated `key` (or one of `tags`) since `snap`.
    fn current(&self, key: &str, tags: &[String], snap: Snapshot) -> bool {
        self.gens.of(key) == snap.generation && !tag_clock().any_invalidated_after(tags, snap.stamp)
    }

    /// Lands `leader`'s flight with `value` if it is still current, else tells the waiters
    /// to go round again: a caller that joined after an invalidation never gets the value
    /// it invalidated.
    fn land(
        &self,
        leader: Option<Leader<K::Value>>,
        key: &str,
        tags: &[String],
        snap: Snapshot,
        value: &K::Value,
        cached: bool,
    ) {
        if let Some(l) = leader {
            l.land_with(|| {
                if self.current(key, tags, snap) {
                    Landed::Value(value.clone(), cached)
                } else {
                    Landed::Superseded
                }
            });
        }
    }

    /// The double check of a new leader: a flight that landed between this caller's miss
    /// and its taking the lead has filled L1.
    fn recheck(&self, key: &str) -> Option<K::Value> {
        let entry = self.local()?.get(key)?;
        (entry.freshness(Instant::now()) == Freshness::Fresh).then(|| {
            self.stats.incr(Counter::Hits);
            entry.value.clone()
        })
    }

    /// Reads L2 as the key's leader (or returns a miss context when there is no L2).
    async fn fetch(
        self: &Arc<Self>,
        key: &str,
        tags: &[String],
        snap: Snapshot,
        fallback: Option<Arc<Entry<K::Value>>>,
    ) -> Fetched<K::Value> {
        if self.broken.is_some() {
            self.stats.incr(Counter::BackendErrors);
        }
        match &self.remote {
            #[cfg(feature = "redis")]
            Some(remote) => remote.fetch(self, key, tags, snap, fallback).await,
            _ => {
                let _ = (key, tags, snap);
                Fetched::Miss(LoadCtx::local(fallback))
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
        let fallback = match self.hit_path(&key, &tags, now).await {
            Lookup::Hit(v) => return K::join(v),
            Lookup::Refresh {
                leader,
                entry,
                early,
            } => {
                // The source cannot outlive this call: the winner refreshes in its own task.
                let from = RefreshFrom::Stale(entry.clone());
                let snap = self.snapshot(&key);
                let Some(ctx) = self.refresh_context(&key, &tags, from).await else {
                    // Another process refreshes it: serve what we have.
                    self.stats.hit(!early, || now.elapsed());
                    return K::join(entry.value.clone());
                };
                self.count_refresh(early);
                return self
                    .load(Some(leader), key, tags, source(), ctx, Guard::Load(snap))
                    .await;
            }
            Lookup::Miss { fallback } => fallback,
        };
        let mut fallback = fallback;
        let mut joined = false;
        loop {
            match self.miss(&key, &tags, &mut fallback, &mut joined).await {
                Miss::Done(v) => return K::join(v),
                Miss::Fail(e) => return K::fail(e),
                Miss::Retry => continue,
                Miss::Load(leader, ctx, snap) => {
                    return self
                        .load(leader, key, tags, source(), ctx, Guard::Load(snap))
                        .await;
                }
                Miss::Stale {
                    leader,
                    value,
                    early,
                    ctx,
                    snap,
                } => {
                    // Stale in L2: this caller refreshes (it holds the flight), unless
                    // another process does.
                    let from = RefreshFrom::Known(ctx);
                    if let Some(ctx) = self.refresh_context(&key, &tags, from).await {
                        self.count_refresh(early);
                        return self
                            .load(leader, key, tags, source(), ctx, Guard::Load(snap))
                            .await;
                    }
                    self.land(leader, &key, &tags, snap, &value, true);
                    return K::join(value);
                }
            }
        }
    }

    /// Cache-aside for a source that owns its arguments: refreshes run as tasks on the
    /// caller's runtime, and a cancelled leader's load goes on as one.
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
        let fallback = match self.hit_path(&key, &tags, now).await {
            Lookup::Hit(v) => return K::join(v),
            Lookup::Refresh {
                leader,
                entry,
                early,
            } => {
                let value = entry.value.clone();
                self.refresh_job(leader, key, tags, source, early, RefreshFrom::Stale(entry));
                self.stats.hit(!early, || now.elapsed());
                return K::join(value);
            }
            Lookup::Miss { fallback } => fallback,
        };
        let mut fallback = fallback;
        let mut joined = false;
        loop {
            match self.miss(&key, &tags, &mut fallback, &mut joined).await {
                Miss::Done(v) => return K::join(v),
                Miss::Fail(e) => return K::fail(e),
                Miss::Retry => continue,
                Miss::Load(leader, ctx, snap) => {
                    let this = self.clone();
                    return Detach::new(async move {
                        this.load(leader, key, tags, source(), ctx, Guard::Load(snap))
                            .await
                    })
                    .await;
                }
                Miss::Stale {
                    leader,
                    value,
                    early,
                    ctx,
                    snap,
                } => {
                    self.land(leader, &key, &tags, snap, &value, true);
                    if let Some(l) = self.flights.try_lead(&key) {
                        self.refresh_job(l, key, tags, source, early, RefreshFrom::Known(ctx));
                    }
                    return K::join(value);
                }
            }
        }
    }

    /// One round of the miss path, shared by both flavours: join the key's flight or lead
    /// it; as the leader, double-check L1, read L2, and take the distributed lock (or wait
    /// for its holder's value). What is left to the caller is running the source.
    async fn miss(
        self: &Arc<Self>,
        key: &str,
        tags: &[String],
        fallback: &mut Option<Arc<Entry<K::Value>>>,
        joined: &mut bool,
    ) -> Miss<K::Value, K::Error> {
        let leader = match self.role(key, joined) {
            Some(Role::Waiter(flight)) => {
                return match flight.wait().await {
                    Landed::Value(v, cached) => {
                        self.count_joined(cached);
                        Miss::Done(v)
                    }
                    Landed::Failed(shared) => {
                        self.stats.incr(Counter::Misses);
                        let restore = self.hooks.errors.map(|s| s.restore);
                        match shared.as_deref().zip(restore).and_then(|(e, r)| r(e)) {
                            // The leader's error is ours too: one source call for all.
                            Some(error) => Miss::Fail(error),
                            // It cannot be shared: call our own source, alone.
                            None => Miss::Load(
                                None,
                                LoadCtx::local(fallback.take()),
                                self.snapshot(key),
                            ),
                        }
                    }
                    // The leader went away, or its result was invalidated while it ran:
                    // go round again (a new flight).
                    Landed::Abandoned | Landed::Superseded => Miss::Retry,
                };
            }
            Some(Role::Leader(l)) => Some(l),
            None => None,
        };
        let snap = self.snapshot(key);
        if let Some(v) = self.recheck(key) {
            self.land(leader, key, tags, snap, &v, true);
            return Miss::Done(v);
        }
        let ctx = match self.fetch(key, tags, snap, fallback.take()).await {
            Fetched::Hit {
                value,
                refresh: None,
                ..
            } => {
                self.land(leader, key, tags, snap, &value, true);
                return Miss::Done(value);
            }
            Fetched::Hit {
                value,
                refresh: Some(early),
                ctx,
            } => {
                return Miss::Stale {
                    leader,
                    value,
                    early,
                    ctx,
                    snap,
                }
            }
            Fetched::Miss(ctx) => ctx,
        };
        match self.lock_or_wait(key, tags, ctx).await {
            Ok(ctx) => {
                self.stats.incr(Counter::Misses);
                Miss::Load(leader, ctx, snap)
            }
            Err(value) => {
                self.land(leader, key, tags, snap, &value, true);
                Miss::Done(value)
            }
        }
    }

    fn count_refresh(&self, early: bool) {
        self.stats.incr(if early {
            Counter::EarlyRefreshes
        } else {
            Counter::BackgroundRefreshes
        });
    }

    /// Starts a refresh of `key` as a task on the caller's runtime (the cache's own if
    /// there is none). With a distributed lock, only the process that claims it refreshes.
    fn refresh_job<F, Fut>(
        self: &Arc<Self>,
        leader: Leader<K::Value>,
        key: String,
        tags: Vec<String>,
        source: F,
        early: bool,
        from: RefreshFrom<K::Value>,
    ) where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Send,
    {
        let this = self.clone();
        let snap = self.snapshot(&key);
        crate::io::spawn_here(async move {
            let Some(ctx) = this.refresh_context(&key, &tags, from).await else {
                return; // another process refreshes; the flight is released
            };
            this.count_refresh(early);
            this.load(Some(leader), key, tags, source(), ctx, Guard::Load(snap))
                .await;
        });
    }

    /// `stampede = lock | xfetch` on a miss: take the distributed lock or wait for the
    /// holder's value (`Err(value)`). Without a remote tier, or when Redis did not answer,
    /// the load proceeds.
    async fn lock_or_wait(
        self: &Arc<Self>,
        key: &str,
        tags: &[String],
        ctx: LoadCtx<K::Value>,
    ) -> Result<LoadCtx<K::Value>, K::Value> {
        match &self.remote {
            #[cfg(feature = "redis")]
            Some(remote) if self.policy.stampede >= Stampede::Lock => {
                if ctx.l2_generation.is_none() {
                    // Redis did not answer the read: no lock either, an escape.
                    self.stats.incr(Counter::StampedeEscapes);
                    return Ok(ctx);
                }
                match remote.lock_or_wait(self, key, tags, ctx).await {
                    remote::Locked::Proceed(ctx) => Ok(ctx),
                    remote::Locked::Got(value) => Err(value),
                }
            }
            _ => {
                let _ = (key, tags);
                Ok(ctx)
            }
        }
    }

    /// The load context of a refresh, or `None` when another process refreshes the key.
    /// With a distributed lock, the claim's own read of Redis (under the lock) supplies the
    /// generation and tag versions; otherwise they are read here (one round trip).
    async fn refresh_context(
        self: &Arc<Self>,
        key: &str,
        tags: &[String],
        from: RefreshFrom<K::Value>,
    ) -> Option<LoadCtx<K::Value>> {
        match &self.remote {
            #[cfg(feature = "redis")]
            Some(remote) => {
                if self.policy.stampede >= Stampede::Lock {
                    let mut ctx = match from {
                        RefreshFrom::Known(ctx) => ctx,
                        RefreshFrom::Stale(entry) => LoadCtx::local(Some(entry)),
                    };
                    return remote
                        .claim_refresh(self, key, tags, &mut ctx)
                        .await
                        .then_some(ctx);
                }
                Some(match from {
                    RefreshFrom::Known(ctx) => ctx,
                    RefreshFrom::Stale(entry) => {
                        remote.load_ctx(self, key, tags, Some(entry)).await
                    }
                })
            }
            _ => {
                let _ = (key, tags);
                Some(match from {
                    RefreshFrom::Known(ctx) => ctx,
                    RefreshFrom::Stale(entry) => LoadCtx::local(Some(entry)),
                })
            }
        }
    }

    /// Counts a caller that got its value from another caller's flight.
    fn count_joined(&self, cached: bool) {
        if self.remote.is_some() || self.broken.is_some() {
            // With L2, only the flight's outcome tells a hit from a miss.
            self.stats.incr(if cached {
                Counter::Hits
            } else {
                Counter::Misses
            });
        } else {
            self.stats.incr(Counter::Misses);
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

    /// Registers a load of `key` for as long as the guard lives; a load that starts while
    /// another of the same key runs is a stampede escape.
    fn loading(&self, key: &str) -> Loading<'_> {
        let mut running = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        let n = running.entry(key.to_owned()).or_insert(0);
        *n += 1;
        if *n > 1 {
            self.stats.incr(Counter::StampedeEscapes);
        }
        Loading {
            map: &self.loading,
            key: key.to_owned(),
        }
    }

    /// Calls the source and stores its result unless `key` was invalidated meanwhile
    /// (`guard`). `ctx.fallback` stands in for an `Err` (a stale value, or fail-safe).
    async fn load<Fut>(
        &self,
        leader: Option<Leader<K::Value>>,
        key: String,
        tags: Vec<String>,
        source: Fut,
        ctx: LoadCtx<K::Value>,
        guard: Guard,
    ) -> R
    where
        Fut: Future<Output = R>,
    {
        let span = tracing::debug_span!(
            "cachemacro.load",
            function = %self.stats.name(),
            fallback = ctx.fallback.is_some(),
            locked = ctx.lock.is_some(),
        );
        let source = tracing::Instrument::instrument(source, span);
        let loading = self.loading(&key);
        let started = Instant::now();
        // With fail-safe and a value to fall back on, a panicking source is a failure too.
        let result = if ctx.fallback.is_some() && self.policy.fail_safe.is_some() {
            CatchUnwind(Box::pin(source)).await
        } else {
            Ok(source.await)
        };
        let delta = started.elapsed();
        drop(loading);
        let value = match result.map(K::split) {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => {
                return self.failed(leader, &key, &tags, ctx, Ok(error), delta, guard)
            }
            Err(panic) => return self.failed(leader, &key, &tags, ctx, Err(panic), delta, guard),
        };
        self.stats.load(false, delta);
        let stored = self.store(&key, &tags, &value, delta, guard, &ctx).await;
        if let Some(leader) = leader {
            match (stored, guard) {
                (Stored::Superseded, _) => leader.land(Landed::Superseded),
                (_, Guard::Load(snap)) => self.land(Some(leader), &key, &tags, snap, &value, false),
                (_, Guard::Put { .. }) => leader.land(Landed::Value(value.clone(), false)),
            }
        }
        K::join(value)
    }

    /// A failed load: the fallback if there is one, else the error (or the panic, resumed).
    #[allow(clippy::too_many_arguments)]
    fn failed(
        &self,
        leader: Option<Leader<K::Value>>,
        key: &str,
        tags: &[String],
        ctx: LoadCtx<K::Value>,
        failure: Result<K::Error, Box<dyn Any + Send>>,
        delta: Duration,
        guard: Guard,
    ) -> R {
        self.stats.load(true, delta);
        if let Some(entry) = ctx.fallback {
            if failure.is_err() {
                tracing::error!(
                    function = %self.stats.name(),
                    "cachemacro: the source panicked; serving the fail-safe value"
                );
            }
            match guard {
                // Waiters that joined after an invalidation go round again rather than take
                // the value it dropped.
                Guard::Load(snap) => self.land(leader, key, tags, snap, &entry.value, true),
                Guard::Put { .. } => {
                    if let Some(l) = leader {
                        l.land(Landed::Value(entry.value.clone(), true));
                    }
                }
            }
            return K::join(entry.value.clone());
        }
        if let Some(leader) = leader {
            let erase = self.hooks.errors.map(|s| s.erase);
            let shared = match (&failure, erase) {
                (Ok(error), Some(erase)) => Some(erase(error)),
                _ => None,
            };
            leader.land(Landed::Failed(shared));
        }
        match failure {
            Ok(error) => K::fail(error),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Stores `value` as the key's value in every tier now (a write-through put), ahead of
    /// any load in flight for it here or elsewhere; other processes drop their L1 copy.
    /// If a tier cannot take it, the key is invalidated instead (never left stale) and the
    /// error returned.
    pub async fn put(
        self: &Arc<Self>,
        key: String,
        tags: Vec<String>,
        value: K::Value,
    ) -> Result<(), Error> {
        if self.is_negative(&value) && !self.policy.cache_none {
            return self.invalidate(key).await; // a `None` that is not cached: absent
        }
        let expected = self.gens.of(&key);
        let stamp = tag_clock().epoch();
        let ctx = match &self.remote {
            #[cfg(feature = "redis")]
            Some(remote) => {
                let ctx = remote.refresh_ctx(self, &key, &tags).await;
                if ctx.l2_generation.is_none() {
                    return Err(self.put_failed(key, "could not reach Redis").await);
                }
                ctx
            }
            _ => LoadCtx::local(None),
        };
        let guard = Guard::Put { expected, stamp };
        let stored = self
            .store(&key, &tags, &value, Duration::ZERO, guard, &ctx)
            .await;
        self.flights.forget(&key); // callers from now on do not join an older load
        match stored {
            Stored::RemoteFailed => Err(self.put_failed(key, "could not write to Redis").await),
            Stored::Yes | Stored::Superseded | Stored::NotCached | Stored::TooLarge => {
                #[cfg(feature = "redis")]
                if let Some(remote) = &self.remote {
                    if let Err(e) = remote.announce(&key).await {
                        // Others may keep an old L1 copy: take the new value back out.
                        self.stats.incr(Counter::BackendErrors);
                        let _ = self.invalidate(key).await;
                        return Err(e);
                    }
                }
                if stored == Stored::TooLarge {
                    return Err(Error::Backend {
                        backend: "redis",
                        message: "put: the value is larger than max_value_bytes; the key was invalidated in Redis instead".into(),
                    });
                }
                Ok(())
            }
        }
    }

    async fn put_failed(&self, key: String, what: &str) -> Error {
        self.stats.incr(Counter::BackendErrors);
        let message = match self.invalidate(key).await {
            Ok(()) => format!("put: {what}; the key was invalidated instead"),
            Err(e) => {
                tracing::error!(function = %self.stats.name(), error = %e, "cachemacro: a put failed and so did the invalidation; other processes may serve the old value until it expires");
                format!("put: {what}, and the invalidation that should replace it failed too ({e}); other processes may serve the old value until it expires")
            }
        };
        Error::Backend {
            backend: "redis",
            message,
        }
    }

    /// Whether `v` is a negative result (`None`, however the return type nests it), cached
    /// only with `cache_none`.
    fn is_negative(&self, v: &K::Value) -> bool {
        K::is_negative(v) || self.hooks.is_negative(v)
    }

    /// The hard and soft TTL of a new value.
    fn ttls(&self, negative: bool) -> (Duration, Option<Duration>) {
        let hard = self.policy.hard_ttl(negative);
        let soft = self.policy.soft_ttl_within(hard).filter(|_| !negative);
        (hard, soft)
    }

    /// Writes a new value to L2, then L1, as `guard` allows.
    async fn store(
        &self,
        key: &str,
        tags: &[String],
        value: &K::Value,
        delta: Duration,
        guard: Guard,
        ctx: &LoadCtx<K::Value>,
    ) -> Stored {
        let negative = self.is_negative(value);
        if negative && !self.policy.cache_none {
            return Stored::NotCached;
        }
        let (hard, soft) = self.ttls(negative);
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let mut stored = Stored::Yes;
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.remote {
            match remote
                .store(self, key, tags, value, delta, hard, soft, ctx)
                .await
            {
                // Invalidated elsewhere during the load: L1 must not keep it either.
                remote::Outcome::Superseded => return Stored::Superseded,
                remote::Outcome::Failed => stored = Stored::RemoteFailed,
                remote::Outcome::TooLarge => stored = Stored::TooLarge,
                remote::Outcome::Written => {}
            }
        }
        let _ = ctx;
        let (generation, stamp) = match guard {
            Guard::Load(snap) => {
                if !self.current(key, tags, snap) {
                    return Stored::Superseded;
                }
                (snap.generation, snap.stamp)
            }
            // After the remote write: a reader that got the older value from Redis took
            // its snapshot before this, so it cannot put that value back in L1.
            Guard::Put { expected, stamp } => match self.gens.advance(key, expected) {
                Some(g) => (g, stamp),
                None => return Stored::Superseded,
            },
        };
        let now = Instant::now();
        let entry = Arc::new(Entry {
            value: value.clone(),
            soft: soft.map(|s| now + s),
            hard: now + hard,
            delta,
            tags: TagStamp::new(tags.to_vec(), stamp),
        });
        if !self.put_local(key, entry, generation) {
            return Stored::Superseded;
        }
        stored
    }

    /// Writes `entry` to L1 unless `key`'s local generation moved past `generation`;
    /// `false` if it did.
    pub(crate) fn put_local(
        &self,
        key: &str,
        entry: Arc<Entry<K::Value>>,
        generation: u64,
    ) -> bool {
        if self.gens.of(key) != generation {
            return false; // invalidated (or put) since the load started: it must not overwrite
        }
        if let Some(l1) = self.local() {
            l1.insert(key.to_owned(), entry.clone());
            // An invalidation that landed meanwhile wins: it bumped the generation before
            // removing the key, so either it removed what we just wrote, or we see the bump.
            if self.gens.of(key) != generation {
                l1.remove_entry(key, &entry);
                return false;
            }
        }
        true
    }

    /// Calls the source now and stores its result (write-through put). Loads already in
    /// flight for the key, in this process or another, will not overwrite it.
    pub async fn refresh<Fut>(self: &Arc<Self>, key: String, tags: Vec<String>, source: Fut) -> R
    where
        Fut: Future<Output = R>,
    {
        let expected = self.gens.bump(&key);
        self.flights.forget(&key);
        let stamp = tag_clock().epoch();
        let ctx = match &self.remote {
            #[cfg(feature = "redis")]
            Some(remote) => remote.refresh_ctx(self, &key, &tags).await,
            _ => LoadCtx::local(None),
        };
        let guard = Guard::Put { expected, stamp };
        let r = self.load(None, key.clone(), tags, source, ctx, guard).await;
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.remote {
            // Other processes drop their L1 copy and read the new value from L2.
            if let Err(e) = remote.announce(&key).await {
                self.stats.incr(Counter::BackendErrors);
                tracing::debug!(error = %e, "cachemacro: could not publish a refresh");
            }
        }
        r
    }

    /// Removes `key` from every tier (and, tiered, from every process's L1); a load in
    /// flight for it, here or elsewhere, will not write it back, and a call that starts
    /// after this returns does not join it.
    pub async fn invalidate(&self, key: String) -> Result<(), Error> {
        self.stats.incr(Counter::Invalidations);
        // Redis first, then this process: a reader here that read the old value from Redis
        // before it was deleted took its snapshot before the local bump below, so it cannot
        // put that value back in L1.
        #[cfg(feature = "redis")]
        let remote = match &self.remote {
            Some(r) => Some(r.invalidate(&key).await),
            None => None,
        };
        self.drop_local(&key);
        #[cfg(feature = "redis")]
        if let Some(result) = remote {
            return result.inspect_err(|_| self.stats.incr(Counter::BackendErrors));
        }
        if let Some(why) = &self.broken {
            return Err(Error::Config(why.clone()));
        }
        Ok(())
    }

    /// Drops `key` from this process: its generation moves on (loads in flight will not
    /// write it), L1 forgets it, and the next caller starts a new flight.
    fn drop_local(&self, key: &str) {
        self.gens.bump(key);
        if let Some(l1) = &self.l1 {
            l1.remove(key);
        }
        self.flights.forget(key);
    }

    /// Drops every entry of this function from the in-process tier.
    pub fn clear_local(&self) {
        self.gens.bump_all();
        if let Some(l1) = &self.l1 {
            l1.clear();
        }
        self.flights.forget_all();
    }
}

/// A load of one key, registered while it runs (see [`Engine::loading`]).
struct Loading<'a> {
    map: &'a Mutex<HashMap<String, u32>>,
    key: String,
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        let mut running = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.key);
            }
        }
    }
}

impl<R: 'static, K: Kind<R>> crate::invalidate::LocalTier for Engine<R, K> {
    fn drop_key(&self, key: &str) {
        self.drop_local(key);
    }

    fn flush(&self) {
        self.clear_local();
    }
}

/// Runs a load in its caller's task; if the caller goes away before it finishes, the rest
/// of the load goes on as a task of its own (on the caller's runtime, else the cache's), so
/// callers waiting on the load's flight still get its value. Nothing is spawned unless a
/// caller is cancelled.
struct Detach<F: Future + Send + 'static>(Option<Pin<Box<F>>>);

impl<F: Future + Send + 'static> Detach<F> {
    fn new(fut: F) -> Self {
        Self(Some(Box::pin(fut)))
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
            crate::io::spawn_here(async move {
                let _ = fut.await;
            });
        }
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
/// the one engine registered under the policy's site.
pub struct EngineCell<R: 'static, K: Kind<R>> {
    policy: Policy,
    codec: Option<ValueCodec<K::Value>>,
    engine: OnceLock<Arc<Engine<R, K>>>,
}

impl<R: 'static, K: Kind<R>> EngineCell<R, K> {
    /// A cell for an in-process function; the engine is created on first use.
    pub const fn new(policy: Policy) -> Self {
        Self {
            policy,
            codec: None,
            engine: OnceLock::new(),
        }
    }

    /// A cell for a function with a remote tier, which stores values with `codec`.
    pub const fn remote(policy: Policy, codec: ValueCodec<K::Value>) -> Self {
        Self {
            policy,
            codec: Some(codec),
            engine: OnceLock::new(),
        }
    }

    /// The function's engine; `hooks` is called once, when it is created.
    #[inline]
    pub fn get(&self, hooks: impl FnOnce() -> Hooks<K::Value, K::Error>) -> &Arc<Engine<R, K>> {
        self.engine
            .get_or_init(|| registered(self.policy, self.codec, hooks()))
    }
}

type Registry = Mutex<HashMap<Site, Arc<dyn Any + Send + Sync>>>;

fn registry() -> &'static Registry {
    static ENGINES: OnceLock<Registry> = OnceLock::new();
    ENGINES.get_or_init(Default::default)
}

fn registered<R: 'static, K: Kind<R>>(
    policy: Policy,
    codec: Option<ValueCodec<K::Value>>,
    hooks: Hooks<K::Value, K::Error>,
) -> Arc<Engine<R, K>> {
    let mut engines = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(engine) = engines.get(&policy.site) {
        if let Ok(engine) = engine.clone().downcast::<Engine<R, K>>() {
            return engine;
        }
    }
    let engine = Arc::new(Engine::<R, K>::new(policy, codec, hooks));
    stats::register(engine.stats.clone());
    #[cfg(feature = "redis")]
    if let Some(remote) = &engine.remote {
        if let Some(template) = policy.key_template {
            remote
                .backend
                .claim_keys(template, policy.name, policy.display_name());
        }
        if policy.stampede >= Stampede::Lock {
            crate::invalidate::listen_to(&remote.backend); // lock waiters are woken over it
        }
        if remote.local_tier() {
            let weak = Arc::downgrade(&engine);
            let weak: std::sync::Weak<dyn crate::invalidate::LocalTier> = weak;
            crate::invalidate::register_tier(&remote.backend, weak);
        }
    }
    engines.insert(policy.site, engine.clone());
    engine
}

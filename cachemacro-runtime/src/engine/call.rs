//! One call of a cached function, in one of two flavours chosen by the macro from the
//! signature: *detached* when every argument is owned (the source future is `'static`:
//! refreshes run as tasks on the caller's runtime, and a cancelled leader's load goes on as
//! one), *inline* when an argument is borrowed (`&self`, `&str`: the source cannot outlive
//! the call, so the caller that wins a refresh runs it itself, and a cancelled leader hands
//! its flight to a waiter). The stages are the same; only how a refresh and a load run
//! differ ([`Flavour`]).
//!
//! A call's first stage, the L1 look-up, runs synchronously when the call is made: an L1 hit
//! is a ready future ([`Call::Ready`]), with nothing allocated and the source neither built
//! nor its tags rendered. Everything else (an L2 read, a flight, a load) is the slow path,
//! boxed.

use std::future::{Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::load::{Guard, RefreshFrom};
use super::read::{Lookup, Miss};
use super::ticket::{Due, Snapshot, Ticket};
use super::wait::{Marked, SourceWait};
use super::Engine;
use crate::clock;
use crate::entry::Entry;
use crate::flight::{Leader, Via};
use crate::io::Detach;
use crate::key::{Key, Probe, Rendered};
use crate::kind::Kind;
use crate::stats::Counter;

/// The future of one call: ready at once on an L1 hit, else the slow path.
#[must_use = "a cached call does nothing unless awaited"]
pub enum Call<R, F> {
    /// Answered from L1.
    Ready(Ready<R>),
    /// The rest of the read path, and perhaps a load.
    Slow(Pin<Box<F>>),
}

impl<R, F: Future<Output = R>> Future for Call<R, F> {
    type Output = R;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        match self.get_mut() {
            Call::Ready(r) => Pin::new(r).poll(cx),
            Call::Slow(f) => f.as_mut().poll(cx),
        }
    }
}

impl<R, F> std::fmt::Debug for Call<R, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Call::Ready(_) => "Call::Ready",
            Call::Slow(_) => "Call::Slow",
        })
    }
}

/// A refresh this call leads: the value it serves meanwhile, and where its ticket comes
/// from. `hit` is when the call started (sampled), if it is yet to be counted as a hit.
pub(super) struct Refresh<V: Clone> {
    leader: Leader<V>,
    key: Key,
    tags: Vec<String>,
    due: Due,
    from: RefreshFrom<V>,
    value: V,
    hit: Option<Option<Instant>>,
    /// With source timeouts: the call's wait for the source.
    wait: Option<Arc<SourceWait>>,
}

/// A load this call runs.
pub(super) struct Load<V: Clone> {
    leader: Option<Leader<V>>,
    key: Key,
    tags: Vec<String>,
    ticket: Ticket<V>,
    snap: Snapshot,
    /// With source timeouts: the call's wait for the source.
    wait: Option<Arc<SourceWait>>,
}

/// How a call runs what it cannot hand back at once; it holds the call's source future.
pub(super) trait Flavour<R: 'static, S: Kind<R>> {
    /// Serves `r.value` and refreshes it (or, inline, refreshes and serves the result).
    async fn refresh(self, engine: &Arc<Engine<R, S>>, r: Refresh<S::Value>) -> R;
    /// Calls the source under the flight and stores its result.
    async fn load(self, engine: &Arc<Engine<R, S>>, l: Load<S::Value>) -> R;
}

/// Where a call stands after its L1 look-up missed (see [`Engine::first`]).
#[derive(Debug, Clone, Copy)]
pub struct Past {
    bypass: Option<crate::Bypass>,
    started: Option<Instant>,
}

impl<R: 'static, S: Kind<R>> Engine<R, S> {
    /// A call's first stage, run where the call is made: an L1 hit that needs nothing else
    /// is the answer; anything else goes on with [`Engine::get_past`] or
    /// [`Engine::get_detached_past`] and the rendered key. Used by functions whose key is
    /// packed ([`crate::key::Probe::Packed`]), so a hit renders nothing.
    #[inline]
    pub fn first(&self, probe: Probe<'_>) -> Result<R, Past> {
        let bypass = crate::bypass::current();
        let started = self.stats.sample();
        if bypass.is_none() {
            if let Some(v) = self.fresh_hit(probe, started) {
                return Ok(S::join(v));
            }
        }
        Err(Past { bypass, started })
    }

    /// Cache-aside for a source whose future borrows the caller's arguments. `make` builds
    /// the call's tags and its source future, only if the call gets past L1.
    #[inline]
    pub fn get<'a, M, Fut>(
        self: &'a Arc<Self>,
        key: &Rendered,
        make: M,
    ) -> Call<R, impl Future<Output = R> + 'a>
    where
        M: FnOnce() -> (Vec<String>, Fut) + 'a,
        Fut: Future<Output = R> + 'a,
    {
        match self.first(Probe::Bytes(key.as_bytes())) {
            Ok(r) => Call::Ready(std::future::ready(r)),
            Err(past) => self.get_past(past, Key::from(key.as_str()), make),
        }
    }

    /// [`Engine::get`] after [`Engine::first`].
    #[inline]
    pub fn get_past<'a, M, Fut>(
        self: &'a Arc<Self>,
        Past { bypass, started }: Past,
        key: Key,
        make: M,
    ) -> Call<R, impl Future<Output = R> + 'a>
    where
        M: FnOnce() -> (Vec<String>, Fut) + 'a,
        Fut: Future<Output = R> + 'a,
    {
        let mut looked = None;
        if bypass.is_none() {
            looked = self.local_read().map(|l1| self.lookup(l1, &key, started));
        }
        Call::Slow(Box::pin(async move {
            let (tags, source) = make();
            match bypass {
                Some(mode) => self.bypassed(mode, key, tags, source).await,
                None => self.call(key, tags, Inline(source), started, looked).await,
            }
        }))
    }

    /// A call in a [`crate::bypass`] scope: the source, and (`ReadAndStore`) a store.
    async fn bypassed<Fut>(
        self: &Arc<Self>,
        mode: crate::Bypass,
        key: Key,
        tags: Vec<String>,
        source: Fut,
    ) -> R
    where
        Fut: Future<Output = R>,
    {
        match mode {
            crate::Bypass::Read => source.await,
            crate::Bypass::ReadAndStore => self.refresh(key, tags, source).await,
        }
    }

    /// Cache-aside for a source that owns its arguments: a refresh of a stale L1 value is
    /// started as a task right here, and the call is answered at once.
    #[inline]
    pub fn get_detached<M, Fut>(
        self: &Arc<Self>,
        key: &Rendered,
        make: M,
    ) -> Call<R, impl Future<Output = R> + Send + 'static>
    where
        M: FnOnce() -> (Vec<String>, Fut) + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Send,
        S::Error: Send,
    {
        match self.first(Probe::Bytes(key.as_bytes())) {
            Ok(r) => Call::Ready(std::future::ready(r)),
            Err(past) => self.get_detached_past(past, Key::from(key.as_str()), make),
        }
    }

    /// [`Engine::get_detached`] after [`Engine::first`].
    #[inline]
    pub fn get_detached_past<M, Fut>(
        self: &Arc<Self>,
        Past { bypass, started }: Past,
        key: Key,
        make: M,
    ) -> Call<R, impl Future<Output = R> + Send + 'static>
    where
        M: FnOnce() -> (Vec<String>, Fut) + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Send,
        S::Error: Send,
    {
        let looked = match bypass {
            None => self.local_read().map(|l1| self.lookup(l1, &key, started)),
            Some(_) => None,
        };
        let looked = match looked {
            Some(Lookup::Hit(v)) => return Call::Ready(std::future::ready(S::join(v))),
            Some(Lookup::Refresh { leader, entry, due }) => {
                let (tags, source) = make();
                let value = entry.value.clone();
                let from = RefreshFrom::Stale(entry);
                self.refresh_job(leader, key, tags, source, due, from);
                self.count_hit(due, started);
                return Call::Ready(std::future::ready(S::join(value)));
            }
            other => other,
        };
        let this = self.clone();
        Call::Slow(Box::pin(async move {
            let (tags, source) = make();
            match bypass {
                Some(mode) => this.bypassed(mode, key, tags, source).await,
                None => {
                    this.call(key, tags, Detached(source), started, looked)
                        .await
                }
            }
        }))
    }

    /// [`Engine::get_detached`] for a function with `refresh_every`: `make` can be called
    /// again (it clones the arguments), so the key's schedule can reload it.
    #[inline]
    pub fn get_ahead<M, Fut>(
        self: &Arc<Self>,
        key: &Rendered,
        make: M,
    ) -> Call<R, impl Future<Output = R> + Send + 'static>
    where
        M: Fn() -> (Vec<String>, Fut) + Clone + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Send,
        S::Error: Send,
    {
        if crate::bypass::current().is_none() {
            self.ahead(key.as_str(), &make);
        }
        self.get_detached(key, make)
    }

    /// The stages after L1: the hit path's L2 read if L1 was not looked at; then rounds of
    /// the miss path until a value, an error, a load or a refresh settles it.
    async fn call<Fl: Flavour<R, S>>(
        self: &Arc<Self>,
        key: Key,
        tags: Vec<String>,
        how: Fl,
        started: Option<Instant>,
        looked: Option<Lookup<S::Value>>,
    ) -> R {
        let looked = match looked {
            Some(l) => l,
            None => self.hit_path(&key, &tags, started).await,
        };
        if let Lookup::Hit(v) = looked {
            return S::join(v);
        }
        // The rest is large (every stage of a miss, the source's future): allocated only
        // when a call gets this far, so an L2 hit's future stays small.
        if !self.policy.has_timeouts() {
            return Box::pin(self.settle(key, tags, how, started, looked, None)).await;
        }
        let wait = Arc::new(SourceWait::default());
        let fallback = match &looked {
            Lookup::Refresh { entry, .. } => Some(entry.clone()),
            Lookup::Miss {
                fallback: Some(entry),
            } => Some(entry.clone()),
            _ => None,
        };
        let k = key.clone();
        let t = tags.clone();
        // As of when the fallback was read (a hit path's look-up is this call's first step).
        let snap = self.snapshot(&key);
        let settle = Box::pin(self.settle(key, tags, how, started, looked, Some(wait.clone())));
        self.bounded(settle, fallback, (&wait, &k, &t, snap)).await
    }

    /// `work` (a caller waiting for a load, its own or another's), within the function's
    /// source timeouts, counted from when the call began waiting for the source (`wait`;
    /// the cache's own reads and writes do not count): past `timeout`, `fallback` (a stale
    /// or fail-safe value) if there is one; past `hard_timeout`, `fallback` or the
    /// function's timeout error. Giving up drops `work`: a detached load goes on as a task
    /// and lands; an inline one (borrowed arguments) is cancelled, and its waiters go round
    /// again.
    pub(super) async fn bounded<F>(
        &self,
        work: F,
        fallback: Option<Entry<S::Value>>,
        (wait, key, tags, snap): (&SourceWait, &str, &[String], Snapshot),
    ) -> R
    where
        F: Future<Output = R> + Unpin,
    {
        let soft = self.policy.timeout.filter(|_| fallback.is_some());
        let hard = self
            .policy
            .hard_timeout
            .filter(|_| fallback.is_some() || self.hooks.timed_out.is_some());
        // Nothing to give up with (no stale value, no error to return): wait.
        let Some(limit) = soft.or(hard) else {
            return work.await;
        };
        let mut work = work;
        let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let finished = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = Pin::new(&mut work).poll(cx) {
                return Poll::Ready(Some(r));
            }
            // The wait begins and ends inside `work`'s poll, so it is current here.
            match wait.waited() {
                Some(waited) => {
                    let t = timer.get_or_insert_with(|| {
                        Box::pin(crate::io::sleep(limit.saturating_sub(waited)))
                    });
                    if t.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                }
                None => timer = None,
            }
            Poll::Pending
        })
        .await;
        if let Some(r) = finished {
            return r;
        }
        // The fallback is served (a stale value within `timeout`, or fail-safe), but if the
        // key or a tag may have been invalidated while this call waited, an observer is
        // told the cache no longer holds it (an HTTP response: `no-store`). A stripe shared
        // with another key can say so wrongly: that costs a downstream copy, nothing more.
        let kept = |e: &Entry<S::Value>| {
            let in_l1 = self
                .local()
                .is_none_or(|l1| l1.get(key).is_some_and(|now| now.id == e.id));
            in_l1 && self.current(key, tags, snap) && e.tags.as_ref().is_none_or(|t| t.valid())
        };
        // An observer is told what the value is: stale, or past its hard expiry and
        // standing in for a slow source (fail-safe), with the entry's age and identity.
        let note = |e: &Entry<S::Value>| {
            let outcome = if e.freshness(clock::now()) == crate::entry::Freshness::Expired {
                crate::served::Outcome::FailSafe
            } else {
                crate::served::Outcome::Stale
            };
            if kept(e) {
                self.note(key, outcome, Some(e));
            } else {
                self.note_unkept(key, outcome);
            }
        };
        match (soft, fallback) {
            (Some(soft), Some(entry)) => {
                self.timed_out("timeout", soft);
                self.stats.incr(Counter::StaleHits);
                note(&entry);
                S::join(entry.value)
            }
            (None, Some(entry)) => {
                self.timed_out("hard_timeout", limit);
                self.stats.incr(Counter::StaleHits);
                note(&entry);
                S::join(entry.value)
            }
            (_, None) => match self.hooks.timed_out {
                Some(make) => {
                    self.timed_out("hard_timeout", limit);
                    S::fail(make(crate::SourceTimeout { after: limit }))
                }
                None => work.await,
            },
        }
    }

    fn timed_out(&self, which: &str, after: std::time::Duration) {
        self.stats.incr(Counter::SourceTimeouts);
        tracing::debug!(
            function = %self.stats.name(),
            which,
            ?after,
            "cachemacro: stopped waiting for the source"
        );
    }

    /// The stages after the hit path: a refresh, or rounds of the miss path.
    async fn settle<Fl: Flavour<R, S>>(
        self: &Arc<Self>,
        key: Key,
        tags: Vec<String>,
        how: Fl,
        started: Option<Instant>,
        looked: Lookup<S::Value>,
        wait: Option<Arc<SourceWait>>,
    ) -> R {
        let mut fallback = match looked {
            Lookup::Hit(v) => return S::join(v),
            Lookup::Refresh { leader, entry, due } => {
                let value = entry.value.clone();
                let from = RefreshFrom::Stale(entry);
                let hit = Some(started);
                let r = Refresh {
                    leader,
                    key,
                    tags,
                    due,
                    from,
                    value,
                    hit,
                    wait,
                };
                return how.refresh(self, r).await;
            }
            Lookup::Miss { fallback } => fallback,
        };
        let mut joined = false;
        loop {
            match self
                .miss(&key, &tags, &mut fallback, &mut joined, wait.as_deref())
                .await
            {
                Miss::Done(v) => return S::join(v),
                Miss::Fail(e) => return S::fail(e),
                Miss::Retry => continue,
                Miss::Load(leader, ticket, snap) => {
                    let l = Load {
                        leader,
                        key,
                        tags,
                        ticket,
                        snap,
                        wait,
                    };
                    return how.load(self, l).await;
                }
                Miss::Due {
                    leader,
                    value,
                    due,
                    ticket,
                    snap,
                } => {
                    // Those who waited for this read get the value as it is; one refresh
                    // follows, and nobody waits for it.
                    self.land(
                        leader,
                        &tags,
                        snap,
                        &value,
                        Via::Cache {
                            stale: due == Due::Stale,
                        },
                    );
                    let Some(leader) = self.lead_refresh(&key) else {
                        return S::join(value);
                    };
                    let from = RefreshFrom::Known(ticket);
                    let r = Refresh {
                        leader,
                        key,
                        tags,
                        due,
                        from,
                        value,
                        hit: None,
                        wait,
                    };
                    return how.refresh(self, r).await;
                }
            }
        }
    }

    fn count_hit(&self, due: Due, started: Option<Instant>) {
        self.stats.hit(due == Due::Stale, started);
    }

    /// Starts a refresh of `key` as a task on the caller's runtime (the cache's user-code
    /// threads if there is none). With a distributed lock, only the process that claims it
    /// refreshes.
    fn refresh_job<Fut>(
        self: &Arc<Self>,
        leader: Leader<S::Value>,
        key: Key,
        tags: Vec<String>,
        source: Fut,
        due: Due,
        from: RefreshFrom<S::Value>,
    ) where
        Fut: Future<Output = R> + Send + 'static,
        R: Send,
        S::Error: Send,
    {
        let this = self.clone();
        let snap = self.snapshot(&key);
        crate::io::spawn_here(async move {
            let Some(ticket) = this.refresh_ticket(&key, &tags, from).await else {
                return; // another process refreshes; the flight is released
            };
            this.count_refresh(due);
            let guard = Guard::Load(snap);
            this.load(Some(leader), key, tags, source, ticket, guard)
                .await;
        });
    }
}

/// The source borrows the caller's arguments.
struct Inline<Fut>(Fut);

impl<R: 'static, S: Kind<R>, Fut> Flavour<R, S> for Inline<Fut>
where
    Fut: Future<Output = R>,
{
    async fn refresh(self, engine: &Arc<Engine<R, S>>, r: Refresh<S::Value>) -> R {
        let snap = engine.snapshot(&r.key);
        let Some(ticket) = engine.refresh_ticket(&r.key, &r.tags, r.from).await else {
            // Another process refreshes it: serve what we have.
            if let Some(started) = r.hit {
                engine.count_hit(r.due, started);
            }
            return S::join(r.value);
        };
        engine.count_refresh(r.due);
        let guard = Guard::Load(snap);
        let source = Marked::new(self.0, r.wait);
        engine
            .load(Some(r.leader), r.key, r.tags, source, ticket, guard)
            .await
    }

    async fn load(self, engine: &Arc<Engine<R, S>>, l: Load<S::Value>) -> R {
        let guard = Guard::Load(l.snap);
        let Some(wait) = l.wait else {
            return engine
                .load(l.leader, l.key, l.tags, self.0, l.ticket, guard)
                .await;
        };
        let fallback = l.ticket.fallback.clone();
        let source = Marked::new(self.0, Some(wait.clone()));
        let (k, t, snap) = (l.key.clone(), l.tags.clone(), l.snap);
        let load = engine.load(l.leader, l.key, l.tags, source, l.ticket, guard);
        engine
            .bounded(Box::pin(load), fallback, (&wait, &k, &t, snap))
            .await
    }
}

/// The source owns its arguments.
struct Detached<Fut>(Fut);

impl<R, S, Fut> Flavour<R, S> for Detached<Fut>
where
    R: Send + 'static,
    S: Kind<R>,
    S::Error: Send,
    Fut: Future<Output = R> + Send + 'static,
{
    async fn refresh(self, engine: &Arc<Engine<R, S>>, r: Refresh<S::Value>) -> R {
        engine.refresh_job(r.leader, r.key, r.tags, self.0, r.due, r.from);
        if let Some(started) = r.hit {
            engine.count_hit(r.due, started);
        }
        S::join(r.value)
    }

    async fn load(self, engine: &Arc<Engine<R, S>>, l: Load<S::Value>) -> R {
        let this = engine.clone();
        let wait = l.wait;
        let source = Marked::new(self.0, wait.clone());
        let fallback = wait.is_some().then(|| l.ticket.fallback.clone()).flatten();
        let k = wait.as_ref().map(|_| (l.key.clone(), l.tags.clone()));
        let snap = l.snap;
        let load = Detach::new(async move {
            let guard = Guard::Load(l.snap);
            this.load(l.leader, l.key, l.tags, source, l.ticket, guard)
                .await
        });
        let (Some(wait), Some((k, t))) = (wait, k) else {
            return load.await;
        };
        // Giving up drops `load`, which then goes on as a task and lands.
        engine.bounded(load, fallback, (&wait, &k, &t, snap)).await
    }
}

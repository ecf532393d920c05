//! The read path of a semantic function: embed the prompt, find the nearest stored prompt
//! of the call's scope, answer with its answer when the similarity clears the threshold,
//! else call the source (one call per scope and prompt at a time) and store the answer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use super::embed::{EmbedError, Embedder};
use super::index::{Item, Scope};
use crate::bypass::Bypass;
use crate::clock;
use crate::coherence::tags as tag_clock;
use crate::entry::TagStamp;
use crate::error::Error;
use crate::flight::{Flights, Landed, Role, Via};
use crate::kind::{Hooks, Kind};
use crate::policy::Policy;
use crate::stats::{self, Counter, Recorder, Stats};

/// How far under the threshold a best score counts as a near miss.
const NEAR: f32 = 0.05;

/// What `semantic(…)` says, beside the function's [`Policy`].
#[derive(Debug, Clone, Copy)]
pub struct SemanticPolicy {
    /// The cosine similarity a stored prompt must reach to answer.
    pub threshold: f32,
    /// Stored prompts per scope, at most.
    pub max_entries: usize,
    /// The fraction of hits also sent to the source to check the stored answer.
    pub verify: f64,
}

impl SemanticPolicy {
    /// A policy with `threshold`, 1,000 prompts per scope, no verification.
    pub const fn new(threshold: f32) -> Self {
        Self {
            threshold,
            max_entries: 1_000,
            verify: 0.0,
        }
    }

    /// At most `n` stored prompts per scope.
    pub const fn with_max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// Also call the source on this fraction of hits, and compare.
    pub const fn with_verify(mut self, fraction: f64) -> Self {
        self.verify = fraction;
        self
    }
}

/// Whether two answers agree (the drift check's judge).
pub type Judge<V> = fn(&V, &V) -> bool;

static EMBEDDER: RwLock<Option<Arc<dyn Embedder>>> = RwLock::new(None);

/// Sets the embedder every semantic function uses from now on (stored prompts of another
/// embedder are no longer matched: vectors of different models are never compared).
pub fn set_embedder(embedder: Arc<dyn Embedder>) {
    *EMBEDDER.write().unwrap_or_else(|e| e.into_inner()) = Some(embedder);
}

/// The embedder set with [`set_embedder`], if any.
pub fn embedder() -> Option<Arc<dyn Embedder>> {
    EMBEDDER.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// One scope's index, shared by the calls that use it.
type SharedScope<V> = Arc<RwLock<Scope<V>>>;

/// The engine of one semantic function.
pub struct SemanticEngine<R: 'static, S: Kind<R>> {
    policy: Policy,
    semantic: SemanticPolicy,
    judge: Option<Judge<S::Value>>,
    /// What the expansion found of the types: error sharing, `None` detection.
    hooks: Hooks<S::Value, S::Error>,
    stats: Arc<Recorder>,
    scopes: Mutex<HashMap<String, SharedScope<S::Value>>>,
    flights: Arc<Flights<S::Value>>,
    entries: AtomicU64,
    _r: std::marker::PhantomData<fn() -> R>,
}

/// The `static` through which generated code reaches a semantic function's engine.
pub struct SemanticCell<R: 'static, S: Kind<R>> {
    policy: Policy,
    semantic: SemanticPolicy,
    judge: Option<Judge<S::Value>>,
    engine: OnceLock<Arc<SemanticEngine<R, S>>>,
}

impl<R: 'static, S: Kind<R>> SemanticCell<R, S> {
    /// A cell; the engine is created on first use.
    pub const fn new(
        policy: Policy,
        semantic: SemanticPolicy,
        judge: Option<Judge<S::Value>>,
    ) -> Self {
        Self {
            policy,
            semantic,
            judge,
            engine: OnceLock::new(),
        }
    }

    /// The function's engine (every item generated for one function shares it); `hooks`
    /// is called once, when it is created.
    pub fn get(
        &self,
        hooks: impl FnOnce() -> Hooks<S::Value, S::Error>,
    ) -> &Arc<SemanticEngine<R, S>> {
        self.engine
            .get_or_init(|| registered(self.policy, self.semantic, self.judge, hooks()))
    }
}

type Registry = Mutex<HashMap<crate::policy::Site, Arc<dyn std::any::Any + Send + Sync>>>;

fn registered<R: 'static, S: Kind<R>>(
    policy: Policy,
    semantic: SemanticPolicy,
    judge: Option<Judge<S::Value>>,
    hooks: Hooks<S::Value, S::Error>,
) -> Arc<SemanticEngine<R, S>> {
    static ENGINES: OnceLock<Registry> = OnceLock::new();
    let mut engines = ENGINES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(e) = engines.get(&policy.site) {
        if let Ok(e) = e.clone().downcast::<SemanticEngine<R, S>>() {
            return e;
        }
    }
    let stats = Arc::new(Recorder::new(policy.display_name()));
    let _ = stats.semantic(); // a semantic function shows its semantic counters from the start
    stats::register(stats.clone());
    let engine = Arc::new(SemanticEngine {
        policy,
        semantic,
        judge,
        hooks,
        stats,
        scopes: Mutex::new(HashMap::new()),
        flights: Arc::new(Flights::new()),
        entries: AtomicU64::new(0),
        _r: std::marker::PhantomData,
    });
    let weak = Arc::downgrade(&engine);
    engine.stats.set_occupancy(Box::new(move || {
        (weak.upgrade().map_or(0, |e| e.entries.load(Relaxed)), None)
    }));
    engines.insert(policy.site, engine.clone());
    engine
}

/// What a leader needs to call the source and store its answer (owned: it may go on as a
/// task of its own).
struct Lead<V: Clone, Fut> {
    leader: crate::flight::Leader<V>,
    scope: SharedScope<V>,
    generation: u64,
    prompt: String,
    vector: (Arc<str>, Vec<f32>),
    tags: Vec<String>,
    stamp: u64,
    source: Fut,
}

/// What a look-up found: a hit (the answer, its score, the stored prompt that answered).
enum Found<V> {
    Hit(V, f32, Box<str>),
    Miss(Option<f32>),
}

/// Cosines of a vector with itself land a few ulps either side of 1.0: a threshold is met
/// within this much (so `threshold = 1.0` answers the same prompt asked again).
const SCORE_SLACK: f32 = 1e-5;

impl<R: 'static, S: Kind<R>> SemanticEngine<R, S>
where
    S::Value: Send + Sync,
{
    /// A call: `scope` is the rendered key (every exact dimension), `prompt` the text
    /// compared by meaning, `make` builds the call's tags and its source future.
    pub async fn get<M, Fut>(self: &Arc<Self>, scope: &str, prompt: &str, make: M) -> R
    where
        M: FnOnce() -> (Vec<String>, Fut),
        Fut: Future<Output = R>,
    {
        self.get_with(scope, prompt, make, |this, lead| this.clone().lead(lead))
            .await
    }

    /// [`SemanticEngine::get`] for a source that owns its arguments: a caller cancelled while
    /// it runs the source does not cancel the load that others wait on (it goes on as a
    /// task, stores and lands).
    pub async fn get_detached<M, Fut>(self: &Arc<Self>, scope: &str, prompt: &str, make: M) -> R
    where
        M: FnOnce() -> (Vec<String>, Fut),
        Fut: Future<Output = R> + Send + 'static,
        R: Send,
        S::Error: Send,
    {
        self.get_with(scope, prompt, make, |this, lead| {
            crate::io::Detach::new(this.clone().lead(lead))
        })
        .await
    }

    async fn get_with<M, Fut, L, LF>(
        self: &Arc<Self>,
        scope: &str,
        prompt: &str,
        make: M,
        run: L,
    ) -> R
    where
        M: FnOnce() -> (Vec<String>, Fut),
        Fut: Future<Output = R>,
        L: FnOnce(&Arc<Self>, Lead<S::Value, Fut>) -> LF,
        LF: Future<Output = R>,
    {
        let started = self.stats.sample();
        if let Some(mode) = crate::bypass::current() {
            let (tags, source) = make();
            if mode == Bypass::Read {
                return source.await;
            }
            // As of before the source runs: an invalidation meanwhile wins over this store.
            let (scope_ref, generation) = self.scope(scope);
            let stamp = tag_clock().epoch();
            let r = source.await;
            let Ok(vector) = self.embed(prompt).await else {
                return r;
            };
            return self.store_stamped(
                &scope_ref,
                generation,
                prompt,
                vector,
                (&tags, stamp),
                S::split(r),
                None,
            );
        }
        let vector = match self.embed(prompt).await {
            Ok(v) => v,
            Err(e) => {
                self.embed_failed(&e);
                let (_, source) = make();
                return source.await;
            }
        };
        let (scope_ref, generation) = self.scope(scope);
        let counters = self.stats.semantic();
        match self.look_up(&scope_ref, &vector) {
            Found::Hit(value, score, stored) => {
                counters.hits.fetch_add(1, Relaxed);
                counters.score(score);
                self.stats.hit(false, started);
                if self.semantic.verify > 0.0 && fastrand::f64() < self.semantic.verify {
                    let hit = (value, stored);
                    return self
                        .verify(scope, &scope_ref, generation, prompt, vector, hit, make)
                        .await;
                }
                return S::join(value);
            }
            Found::Miss(best) => {
                counters.misses.fetch_add(1, Relaxed);
                if let Some(score) = best {
                    counters.score(score);
                    if score >= self.semantic.threshold - NEAR {
                        counters.near_misses.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        self.stats.incr(Counter::Misses);
        // One source call per scope and prompt at a time (paraphrases arriving together
        // each call it: they are not known to match until one is stored).
        let flight_key = format!("{scope}\u{0}{prompt}");
        let mut joined = false;
        loop {
            match self.flights.join_or_lead(&flight_key) {
                Role::Waiter(flight) => {
                    if !joined {
                        joined = true;
                        self.stats.incr(Counter::Coalesced);
                    }
                    match flight.wait().await {
                        Landed::Value(v, _) => return S::join(v),
                        Landed::Failed(shared) => {
                            let restore = self.hooks.errors.map(|s| s.restore);
                            // The leader's error is ours too (one source call for all), or,
                            // when it cannot be shared, our own source call, alone.
                            return match shared.as_deref().zip(restore).and_then(|(e, r)| r(e)) {
                                Some(error) => S::fail(error),
                                None => make().1.await,
                            };
                        }
                        Landed::Abandoned | Landed::Superseded => continue,
                    }
                }
                Role::Leader(leader) => {
                    // An answer stored since this caller looked (by a flight that landed
                    // before it got here, or the reload that waiters sent round again by an
                    // invalidation share) is taken, not loaded again.
                    if let Found::Hit(value, _, _) = self.look_up(&scope_ref, &vector) {
                        leader.land(Landed::Value(value.clone(), Via::Cache { stale: false }));
                        return S::join(value);
                    }
                    // As of when this source call begins (a caller that went round again after
                    // an invalidation loads for the scope as it is now).
                    let generation = scope_ref
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .generation;
                    let (tags, source) = make();
                    let stamp = tag_clock().epoch();
                    let lead = Lead {
                        leader,
                        scope: scope_ref,
                        generation,
                        prompt: prompt.to_owned(),
                        vector,
                        tags,
                        stamp,
                        source,
                    };
                    return run(self, lead).await;
                }
            }
        }
    }

    /// The leader's part: the source, then the store and the landing.
    async fn lead<Fut: Future<Output = R>>(self: Arc<Self>, l: Lead<S::Value, Fut>) -> R {
        let stopwatch = clock::Stopwatch::start();
        let r = S::split(l.source.await);
        self.stats.load(r.is_err(), stopwatch.elapsed());
        self.store_stamped(
            &l.scope,
            l.generation,
            &l.prompt,
            l.vector,
            (&l.tags, l.stamp),
            r,
            Some(l.leader),
        )
    }

    /// The nearest stored prompt of the scope, if it clears the threshold.
    fn look_up(
        &self,
        scope: &RwLock<Scope<S::Value>>,
        (model, query): &(Arc<str>, Vec<f32>),
    ) -> Found<S::Value> {
        let now = clock::now();
        let scope = scope.read().unwrap_or_else(|e| e.into_inner());
        match scope.nearest(query, model, now) {
            Some(n) if n.score + SCORE_SLACK >= self.semantic.threshold => {
                let item = scope.item(n.index);
                item.used.store(now, Relaxed);
                Found::Hit(item.value.clone(), n.score, item.prompt.clone())
            }
            Some(n) => Found::Miss(Some(n.score)),
            None => Found::Miss(None),
        }
    }

    /// A sampled hit checked against the source: the source's answer is returned; if the
    /// judge says it differs from the stored one, the disagreement is counted and logged,
    /// and the prompt stored with the source's answer.
    #[allow(clippy::too_many_arguments)]
    async fn verify<M, Fut>(
        &self,
        scope_key: &str,
        scope: &RwLock<Scope<S::Value>>,
        generation: u64,
        prompt: &str,
        vector: (Arc<str>, Vec<f32>),
        (cached, answered_by): (S::Value, Box<str>),
        make: M,
    ) -> R
    where
        M: FnOnce() -> (Vec<String>, Fut),
        Fut: Future<Output = R>,
    {
        let counters = self.stats.semantic();
        let (tags, source) = make();
        let stamp = tag_clock().epoch();
        let stopwatch = clock::Stopwatch::start();
        let r = S::split(source.await);
        self.stats.load(r.is_err(), stopwatch.elapsed());
        let value = match r {
            Ok(v) => v,
            // The source failed: the stored answer stands (the check is the cache's, not
            // the caller's).
            Err(_) => return S::join(cached),
        };
        counters.verified.fetch_add(1, Relaxed);
        let agree = self.judge.is_none_or(|judge| judge(&cached, &value));
        if agree {
            return S::join(value);
        }
        counters.disagreements.fetch_add(1, Relaxed);
        tracing::warn!(
            function = %self.stats.name(),
            scope = scope_key,
            prompt,
            answered_by = &*answered_by,
            "cachemacro: a semantic hit disagreed with the source (drift); the stored answer is dropped, the source's served and stored for this prompt"
        );
        // The stored answer that drifted is not served again (to this prompt's neighbours
        // either): it goes, and this prompt's fresh answer takes its place.
        {
            let mut g = scope.write().unwrap_or_else(|e| e.into_inner());
            let gone = g.remove_where(|i| i.prompt == answered_by);
            drop(g);
            self.grow(-(gone as i64));
        }
        self.store_stamped(
            scope,
            generation,
            prompt,
            vector,
            (&tags, stamp),
            Ok(value),
            None,
        )
    }

    /// Stores a source's result (unless the scope was invalidated since `generation`, or
    /// the result is an error or an uncached `None`) and lands the flight.
    #[allow(clippy::too_many_arguments)]
    fn store_stamped(
        &self,
        scope: &RwLock<Scope<S::Value>>,
        generation: u64,
        prompt: &str,
        (model, vector): (Arc<str>, Vec<f32>),
        (tags, stamp): (&[String], u64),
        r: Result<S::Value, S::Error>,
        leader: Option<crate::flight::Leader<S::Value>>,
    ) -> R {
        let value = match r {
            Ok(v) => v,
            Err(e) => {
                if let Some(l) = leader {
                    let shared = self.hooks.errors.map(|s| (s.erase)(&e));
                    l.land(Landed::Failed(shared));
                }
                return S::fail(e);
            }
        };
        let negative = self.hooks.negative.is_some_and(|is_none| is_none(&value));
        let mut kept = false;
        // An invalidation of the scope (or of one of the call's tags) since the call began
        // wins: the answer is served to this caller, not stored, and whoever waits on it
        // goes round again (a call that began after the invalidation never gets it).
        let invalidated = scope.read().unwrap_or_else(|e| e.into_inner()).generation != generation
            || tag_clock().any_invalidated_after(tags, stamp);
        if invalidated {
            if let Some(l) = leader {
                l.land(Landed::Superseded);
            }
            return S::join(value);
        }
        if !negative || self.policy.cache_none {
            let now = clock::now();
            let hard = now.saturating_add(clock::nanos(self.policy.hard_ttl(negative)));
            let item = Item {
                id: super::index::entry_id(&model, prompt),
                prompt: prompt.into(),
                vector: vector.into_boxed_slice(),
                model,
                value: value.clone(),
                hard,
                tags: TagStamp::new(tags.to_vec(), stamp),
                used: AtomicU64::new(now),
            };
            let mut s = scope.write().unwrap_or_else(|e| e.into_inner());
            // An invalidation of the scope (or of one of the call's tags) while the source
            // ran wins: the answer is served, not stored.
            if s.generation == generation && !tag_clock().any_invalidated_after(tags, stamp) {
                let (evicted, grew) = s.insert(item, self.semantic.max_entries, now);
                drop(s);
                kept = true;
                if evicted > 0 {
                    self.stats.add(Counter::Evictions, evicted);
                }
                self.grow(grew);
            }
        }
        if let Some(l) = leader {
            l.land(Landed::Value(
                value.clone(),
                Via::Source { kept, seen: None },
            ));
        }
        S::join(value)
    }

    fn grow(&self, by: i64) {
        if by >= 0 {
            self.entries.fetch_add(by as u64, Relaxed);
        } else {
            let _ = self.entries.fetch_update(Relaxed, Relaxed, |n| {
                Some(n.saturating_sub(by.unsigned_abs()))
            });
        }
        self.stats
            .semantic()
            .entries
            .store(self.entries.load(Relaxed), Relaxed);
    }

    /// The scope's index (created if new) and its generation now. The number of scopes is
    /// bounded by `max_capacity`: past it, the scope looked up least recently goes.
    fn scope(&self, key: &str) -> (Arc<RwLock<Scope<S::Value>>>, u64) {
        let now = clock::now();
        let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = scopes.get(key) {
            let s = s.clone();
            drop(scopes);
            let generation = {
                let g = s.read().unwrap_or_else(|e| e.into_inner());
                g.used.store(now, Relaxed);
                g.generation
            };
            return (s, generation);
        }
        let capacity = usize::try_from(self.policy.capacity()).unwrap_or(usize::MAX);
        while scopes.len() >= capacity {
            let oldest = scopes
                .iter()
                .min_by_key(|(_, s)| {
                    s.read()
                        .unwrap_or_else(|e| e.into_inner())
                        .used
                        .load(Relaxed)
                })
                .map(|(k, _)| k.clone());
            let Some(k) = oldest else { break };
            if let Some(gone) = scopes.remove(&k) {
                let n = gone.read().unwrap_or_else(|e| e.into_inner()).len();
                self.stats.add(Counter::Evictions, n as u64);
                self.grow(-(n as i64));
            }
        }
        let s = Arc::new(RwLock::new(Scope::default()));
        s.read()
            .unwrap_or_else(|e| e.into_inner())
            .used
            .store(now, Relaxed);
        scopes.insert(key.to_owned(), s.clone());
        (s, 0)
    }

    /// Embeds `prompt` on a blocking thread of the caller's runtime (inline without one).
    async fn embed(&self, prompt: &str) -> Result<(Arc<str>, Vec<f32>), EmbedError> {
        let Some(embedder) = embedder() else {
            return Err(EmbedError(
                "no embedder is set: call cachemacro_runtime::semantic::set_embedder(…) at start-up".into(),
            ));
        };
        let model: Arc<str> = Arc::from(embedder.id());
        let dim = embedder.dim();
        let text = prompt.to_owned();
        let run = move || {
            embedder.embed(&[text.as_str()]).and_then(|mut v| {
                v.pop()
                    .ok_or_else(|| EmbedError("the embedder returned no vector".into()))
            })
        };
        let vector = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(run)
                .await
                .map_err(|e| EmbedError(format!("the embedding task failed: {e}")))??,
            Err(_) => run()?,
        };
        // A vector that cannot be compared is an embedding failure, not an entry: one NaN
        // stored would out-rank every other prompt of its scope.
        let norm: f32 = vector.iter().map(|x| x * x).sum();
        if vector.len() != dim || !norm.is_finite() || norm == 0.0 {
            return Err(EmbedError(format!(
                "the embedder returned an unusable vector ({} values, {dim} expected, squared norm {norm})",
                vector.len()
            )));
        }
        Ok((model, vector))
    }

    fn embed_failed(&self, e: &EmbedError) {
        let counters = self.stats.semantic();
        let first = counters.embed_errors.fetch_add(1, Relaxed) == 0;
        self.stats.incr(Counter::BackendErrors);
        if first {
            tracing::error!(function = %self.stats.name(), error = %e, "cachemacro: the prompt could not be embedded; calling the source uncached");
        } else {
            tracing::debug!(function = %self.stats.name(), error = %e, "cachemacro: the prompt could not be embedded");
        }
    }

    /// Drops every stored prompt of `scope`; a load of the scope in flight does not store
    /// its answer.
    pub async fn invalidate(&self, scope: &str) -> Result<(), Error> {
        self.stats.incr(Counter::Invalidations);
        let s = self
            .scopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
            .cloned();
        if let Some(s) = s {
            self.empty(&s);
        }
        Ok(())
    }

    /// Empties one scope and moves its generation (a load of it in flight does not store).
    fn empty(&self, scope: &RwLock<Scope<S::Value>>) {
        let mut g = scope.write().unwrap_or_else(|e| e.into_inner());
        g.generation += 1;
        let n = g.clear();
        g.loaded = false;
        drop(g);
        self.grow(-(n as i64));
    }

    /// Drops every stored prompt of every scope.
    pub async fn clear(&self) -> Result<(), Error> {
        self.stats.incr(Counter::Invalidations);
        let all: Vec<_> = self
            .scopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for s in all {
            self.empty(&s);
        }
        Ok(())
    }

    /// A snapshot of this function's counters.
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

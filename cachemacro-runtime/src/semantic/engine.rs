//! The read path of a semantic function: embed the prompt, find the nearest stored prompt
//! of the call's scope, answer with its answer when the similarity clears the threshold,
//! else call the source (one call per scope and prompt at a time) and store the answer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use super::embed::{EmbedError, Embedder};
use super::index::{Item, Scope};
use super::shared::{Shared, Stored, Ticket};
use crate::bypass::Bypass;
use crate::clock;
use crate::codec::ValueCodec;
use crate::coherence::{tags as tag_clock, LocalTier};
use crate::entry::TagStamp;
use crate::error::Error;
use crate::flight::{Flights, Landed, Leader, Role, Via};
use crate::io::Detach;
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
    /// The shared tier holding the function's scopes (`backend = redis`, `tiered`, …).
    shared: Option<Arc<Shared<S::Value>>>,
    /// What the backplane calls (it holds it weakly; the engine keeps it alive).
    follower: OnceLock<Arc<dyn LocalTier>>,
    _r: std::marker::PhantomData<fn() -> R>,
}

/// The `static` through which generated code reaches a semantic function's engine.
pub struct SemanticCell<R: 'static, S: Kind<R>> {
    policy: Policy,
    semantic: SemanticPolicy,
    judge: Option<Judge<S::Value>>,
    codec: Option<ValueCodec<S::Value>>,
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
            codec: None,
            engine: OnceLock::new(),
        }
    }

    /// A cell for a function whose scopes a shared tier holds (`policy.backend`), which
    /// stores answers with `codec`.
    pub const fn remote(
        policy: Policy,
        semantic: SemanticPolicy,
        judge: Option<Judge<S::Value>>,
        codec: ValueCodec<S::Value>,
    ) -> Self {
        Self {
            policy,
            semantic,
            judge,
            codec: Some(codec),
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
            .get_or_init(|| registered(self.policy, self.semantic, self.judge, self.codec, hooks()))
    }
}

type Registry = Mutex<HashMap<crate::policy::Site, Arc<dyn std::any::Any + Send + Sync>>>;

fn registered<R: 'static, S: Kind<R>>(
    policy: Policy,
    semantic: SemanticPolicy,
    judge: Option<Judge<S::Value>>,
    codec: Option<ValueCodec<S::Value>>,
    hooks: Hooks<S::Value, S::Error>,
) -> Arc<SemanticEngine<R, S>>
where
    S::Value: Send + Sync,
{
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
        shared: shared_tier(&policy, codec),
        follower: OnceLock::new(),
        _r: std::marker::PhantomData,
    });
    let weak = Arc::downgrade(&engine);
    engine.stats.set_occupancy(Box::new(move || {
        (weak.upgrade().map_or(0, |e| e.entries.load(Relaxed)), None)
    }));
    if let Some(shared) = &engine.shared {
        let tier = &shared.tier;
        if let Some(template) = policy.key_template {
            let name = tier.name().to_owned();
            tier.keyspace()
                .claim(&name, template, policy.name, policy.display_name());
        }
        let follower: Arc<dyn LocalTier> = Arc::new(Follower {
            engine: Arc::downgrade(&engine),
            fn_tag: shared.fn_tag.clone(),
        });
        tier.backplane().register(Arc::downgrade(&follower));
        let _ = engine.follower.set(follower);
        // Other processes' stores and invalidations arrive over the backplane.
        crate::tier::listen(tier);
    }
    engines.insert(policy.site, engine.clone());
    engine
}

/// The shared tier of a function's scopes, if its backend names one that can hold them.
fn shared_tier<V: Clone + Send + Sync + 'static>(
    policy: &Policy,
    codec: Option<ValueCodec<V>>,
) -> Option<Arc<Shared<V>>> {
    let (tier, _) = crate::tier::registry::tier_of(policy.backend)?;
    let codec = codec?; // the expansion passes one for every shared backend
    if !tier.holds_scopes() {
        tracing::error!(
            function = %policy.display_name(),
            backend = tier.name(),
            "cachemacro: this backend cannot hold a semantic function's scopes (Redis can); its answers stay in-process"
        );
        return None;
    }
    Some(Arc::new(Shared::new(tier, codec, &policy.display_name())))
}

/// The engine as the backplane sees it: other processes' invalidations of a scope, of
/// every scope (`<fn>_clear`, a lost subscription) and their stores.
struct Follower<R: 'static, S: Kind<R>> {
    engine: Weak<SemanticEngine<R, S>>,
    fn_tag: String,
}

impl<R: 'static, S: Kind<R>> LocalTier for Follower<R, S>
where
    S::Value: Send + Sync,
{
    fn drop_key(&self, key: &str) {
        if let Some(e) = self.engine.upgrade() {
            if e.empty_scope(key) {
                e.stats.incr(Counter::BackplaneDrops);
            }
        }
    }

    fn flush(&self) {
        if let Some(e) = self.engine.upgrade() {
            e.empty_all();
        }
    }

    fn fn_tag(&self) -> Option<&str> {
        Some(&self.fn_tag)
    }

    fn entry_changed(&self, key: &str, id: &str) {
        if let Some(e) = self.engine.upgrade() {
            e.entry_changed(key, id);
        }
    }
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
    /// The scope's key and what the shared tier said before the source ran.
    shared: Option<(String, Ticket)>,
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
            let ticket = self.ticket(scope, &tags).await;
            let r = source.await;
            let Ok(vector) = self.embed(prompt).await else {
                return r;
            };
            return self
                .store_stamped(
                    &scope_ref,
                    generation,
                    prompt,
                    vector,
                    (&tags, stamp),
                    S::split(r),
                    None,
                    ticket.as_ref().map(|t| (scope, t)),
                )
                .await;
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
        // With a shared tier, the index answers only once it holds the scope's entries and
        // while this process hears every change to them.
        let ready = self.ready(scope, &scope_ref).await;
        match self.look_up_if(ready, &scope_ref, &vector) {
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
                    let ready = self.ready(scope, &scope_ref).await;
                    if let Found::Hit(value, _, _) = self.look_up_if(ready, &scope_ref, &vector) {
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
                    let ticket = self.ticket(scope, &tags).await;
                    let lead = Lead {
                        leader,
                        scope: scope_ref,
                        generation,
                        prompt: prompt.to_owned(),
                        vector,
                        tags,
                        stamp,
                        shared: ticket.map(|t| (scope.to_owned(), t)),
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
            l.shared.as_ref().map(|(k, t)| (k.as_str(), t)),
        )
        .await
    }

    /// The shared tier's generation of the scope and its tags' versions, before a source
    /// call (`None`: no shared tier, or it did not answer; the answer is then not shared).
    async fn ticket(&self, scope: &str, tags: &[String]) -> Option<Ticket> {
        let shared = self.shared.as_ref()?;
        match shared.ticket(scope, tags).await {
            Ok(t) => Some(t),
            Err(e) => {
                self.shared_failed("read the scope's generation", &e);
                None
            }
        }
    }

    fn shared_failed(&self, what: &str, e: &crate::tier::TierError) {
        self.stats.incr(e.counter());
        tracing::debug!(function = %self.stats.name(), error = %e, "cachemacro: semantic scope: could not {what}");
    }

    /// Whether the scope's index may answer: always in-process; with a shared tier, while
    /// the backplane is up and once the scope's entries were read (they are, here, the
    /// first time; one reader at a time).
    async fn ready(&self, key: &str, scope: &SharedScope<S::Value>) -> bool {
        let Some(shared) = &self.shared else {
            return true;
        };
        if !shared.trusted() {
            return false;
        }
        let load = {
            let s = scope.read().unwrap_or_else(|e| e.into_inner());
            if s.loaded {
                return true;
            }
            s.load.clone()
        };
        let _one = load.lock().await;
        let (generation, seq, stamp) = {
            let s = scope.read().unwrap_or_else(|e| e.into_inner());
            if s.loaded {
                return true;
            }
            (s.generation, s.seq, tag_clock().epoch())
        };
        match shared.load(key).await {
            Ok((entries, garbage)) => {
                if garbage > 0 {
                    self.stats.add(Counter::BackendErrors, garbage);
                }
                let mut s = scope.write().unwrap_or_else(|e| e.into_inner());
                if s.generation != generation {
                    return false; // invalidated while read: the next call reads it again
                }
                // An entry that an announcement's own read applied since this read began
                // (newer, or gone) is left as that read left it; one whose announced read
                // is still under way is stored, and that read applies over it when it lands.
                let items = entries
                    .into_iter()
                    .filter(|e| s.applied.get(&e.id).is_none_or(|&t| t <= seq))
                    .map(|e| self.item(e, stamp))
                    .collect();
                let (evicted, grew) = s.extend(items, self.semantic.max_entries, clock::now());
                s.applied.clear();
                s.loaded = true;
                drop(s);
                if evicted > 0 {
                    self.stats.add(Counter::Evictions, evicted);
                }
                self.grow(grew);
                shared.trusted()
            }
            Err(e) => {
                self.shared_failed("read the scope", &e);
                false
            }
        }
    }

    /// An entry read from the shared tier, as the index holds it (its tags checked against
    /// this process's invalidations since `stamp`, taken before the read).
    fn item(&self, s: Stored<S::Value>, stamp: u64) -> Item<S::Value> {
        let now = clock::now();
        let left = s.hard_ms.saturating_sub(clock::unix_ms());
        Item {
            id: s.id,
            prompt: s.prompt,
            vector: s.vector,
            model: s.model,
            value: s.value,
            hard: now.saturating_add(clock::nanos(std::time::Duration::from_millis(left))),
            tags: TagStamp::new(s.tags, stamp),
            used: AtomicU64::new(now),
        }
    }

    /// Another process stored or removed entry `id` of the scope at `key`: if this process
    /// holds the scope, it reads the entry again (in the background).
    fn entry_changed(self: &Arc<Self>, key: &str, id: &str) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let Some(scope) = self
            .scopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
        else {
            return;
        };
        let Ok(n) = u64::from_str_radix(id, 16) else {
            return;
        };
        // This announcement's read is the latest for the entry: an earlier one (or a read of
        // the whole scope begun before it) that finishes later is not applied over it.
        let (generation, mine) = {
            let mut s = scope.write().unwrap_or_else(|e| e.into_inner());
            s.seq += 1;
            let mine = s.seq;
            s.touched.insert(n, mine);
            (s.generation, mine)
        };
        let stamp = tag_clock().epoch();
        let (this, key, id) = (self.clone(), key.to_owned(), id.to_owned());
        crate::io::spawn(async move {
            let fetched = shared.fetch(&key, &id).await;
            let mut s = scope.write().unwrap_or_else(|e| e.into_inner());
            if s.touched.get(&n) != Some(&mine) {
                return; // a later announcement's read decides
            }
            s.touched.remove(&n);
            let fetched = match fetched {
                Ok(f) => f,
                Err(e) => {
                    drop(s);
                    return this.shared_failed("read an entry another process stored", &e);
                }
            };
            if s.generation != generation {
                return; // invalidated meanwhile
            }
            let (evicted, grew) = match fetched {
                Some(stored) => {
                    let item = this.item(stored, stamp);
                    s.insert(item, this.semantic.max_entries, clock::now())
                }
                None => (0, -(s.remove_where(|i| i.id == n) as i64)),
            };
            if !s.loaded {
                s.applied.insert(n, mine); // a read of the whole scope may be under way
            }
            drop(s);
            if evicted > 0 {
                this.stats.add(Counter::Evictions, evicted);
            }
            this.grow(grew);
        });
    }

    /// [`Self::look_up`] when the index may answer, else a miss.
    fn look_up_if(
        &self,
        ready: bool,
        scope: &RwLock<Scope<S::Value>>,
        query: &(Arc<str>, Vec<f32>),
    ) -> Found<S::Value> {
        if ready {
            self.look_up(scope, query)
        } else {
            Found::Miss(None)
        }
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
        self: &Arc<Self>,
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
        let ticket = self.ticket(scope_key, &tags).await;
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
        let mut removed = Vec::new();
        {
            let mut g = scope.write().unwrap_or_else(|e| e.into_inner());
            let gone = g.remove_where(|i| {
                let drifted = i.prompt == answered_by;
                if drifted {
                    removed.push(i.id);
                }
                drifted
            });
            drop(g);
            self.grow(-(gone as i64));
        }
        // Every process: the entry goes from the shared tier, and the others are told.
        // Not left half done by a cancelled caller; if it cannot be done, the whole scope
        // is invalidated when the tier answers again (the outbox).
        if let (Some(shared), false) = (self.shared.clone(), removed.is_empty()) {
            let (this, key) = (self.clone(), scope_key.to_owned());
            Detach::on_cache_threads(async move {
                for id in removed {
                    if let Err(e) = shared.remove(&key, id).await {
                        tracing::warn!(scope = key, error = %e, "cachemacro: a drifted semantic answer could not be removed from the shared tier; the scope will be invalidated when it answers");
                        shared.invalidate_later(&key);
                        return;
                    }
                    this.tell_siblings(&key, id);
                }
            })
            .await;
        }
        self.store_stamped(
            scope,
            generation,
            prompt,
            vector,
            (&tags, stamp),
            Ok(value),
            None,
            ticket.as_ref().map(|t| (scope_key, t)),
        )
        .await
    }

    /// Stores a source's result (unless the scope was invalidated since `generation`, or
    /// the result is an error or an uncached `None`) and lands the flight.
    ///
    /// With a shared tier (`shared`: the scope's key and the ticket taken before the
    /// source ran), the entry is written there first; if the scope was invalidated by any
    /// process since the ticket, the tier refuses it and it is not kept here either.
    #[allow(clippy::too_many_arguments)]
    async fn store_stamped(
        &self,
        scope: &RwLock<Scope<S::Value>>,
        generation: u64,
        prompt: &str,
        (model, vector): (Arc<str>, Vec<f32>),
        (tags, stamp): (&[String], u64),
        r: Result<S::Value, S::Error>,
        leader: Option<Leader<S::Value>>,
        shared: Option<(&str, &Ticket)>,
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
        let ttl = self.policy.hard_ttl(negative);
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
        if (!negative || self.policy.cache_none)
            && !self
                .share(
                    shared,
                    prompt,
                    (&*model, vector.as_slice()),
                    &value,
                    (tags, ttl),
                )
                .await
        {
            if let Some(l) = leader {
                l.land(Landed::Superseded);
            }
            return S::join(value);
        }
        if !negative || self.policy.cache_none {
            let now = clock::now();
            let hard = now.saturating_add(clock::nanos(ttl));
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
            // Decided once the flight left the map (nobody joins it any more): an
            // invalidation of the scope or of a tag since the call began, however late,
            // sends the waiters round again rather than handing them this answer.
            l.land_with(|forgotten| {
                let invalidated = forgotten
                    || scope.read().unwrap_or_else(|e| e.into_inner()).generation != generation
                    || tag_clock().any_invalidated_after(tags, stamp);
                if invalidated {
                    Landed::Superseded
                } else {
                    Landed::Value(value.clone(), Via::Source { kept, seen: None })
                }
            });
        }
        S::join(value)
    }

    /// Writes an answer to the shared tier (and tells the other processes), if the
    /// function has one and its ticket was taken. `false`: the scope was invalidated
    /// somewhere since the ticket, so the answer is not kept anywhere. A tier that fails
    /// (or an answer too large for it) leaves the answer to this process alone.
    async fn share(
        &self,
        shared: Option<(&str, &Ticket)>,
        prompt: &str,
        (model, vector): (&str, &[f32]),
        value: &S::Value,
        (tags, ttl): (&[String], std::time::Duration),
    ) -> bool {
        let (Some(tier), Some((key, ticket))) = (&self.shared, shared) else {
            return true;
        };
        let bytes = match tier.encode(model, prompt, vector, value, ttl, tags, ticket) {
            Ok(b) => b,
            Err(e) => {
                self.stats.incr(Counter::BackendErrors);
                tracing::warn!(function = %self.stats.name(), error = %e, "cachemacro: a semantic answer could not be encoded for the shared tier; kept in-process");
                return true;
            }
        };
        let id = super::index::entry_id(model, prompt);
        match tier
            .put(
                key,
                id,
                bytes,
                ttl,
                self.semantic.max_entries,
                ticket.generation,
            )
            .await
        {
            Ok(Some(true)) => {
                self.tell_siblings(key, id);
                true
            }
            Ok(Some(false)) => false,
            Ok(None) => {
                self.stats.incr(Counter::Oversized);
                true
            }
            Err(e) => {
                self.shared_failed("store an answer", &e);
                true
            }
        }
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

    /// Drops every stored prompt of `scope`, here and (with a shared tier) in the tier and
    /// every process; a load of the scope in flight anywhere does not store its answer. A
    /// caller cancelled half way does not leave it half done.
    pub async fn invalidate(self: &Arc<Self>, scope: &str) -> Result<(), Error> {
        let (this, scope) = (self.clone(), scope.to_owned());
        Detach::on_cache_threads(async move {
            this.stats.incr(Counter::Invalidations);
            this.empty_scope(&scope);
            let Some(shared) = &this.shared else {
                return Ok(());
            };
            let backplane = shared.tier.backplane();
            backplane.drop_key_except(&scope, this.me()); // same-name functions here
            let done = shared.invalidate(&scope).await;
            // Again after the tier: an entry read from it before the invalidation (by a
            // load of the scope here) is not kept.
            this.empty_scope(&scope);
            backplane.drop_key_except(&scope, this.me());
            done.inspect_err(|_| this.stats.incr(Counter::BackendErrors))
        })
        .await
    }

    /// Empties the scope at `key` if this process holds it; `true` if it did.
    fn empty_scope(&self, key: &str) -> bool {
        let s = self
            .scopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned();
        // A load of the scope in flight is not joined any more (its waiters go round).
        self.flights.forget_prefix(&format!("{key}\u{0}"));
        s.is_some_and(|s| {
            self.empty(&s);
            true
        })
    }

    /// This process's functions of the same name (sharing the scopes) hear of a stored or
    /// removed entry as other processes do (their own messages are not for them).
    fn tell_siblings(&self, key: &str, id: u64) {
        if let Some(shared) = &self.shared {
            shared
                .tier
                .backplane()
                .entry_changed_except(key, &format!("{id:016x}"), self.me());
        }
    }

    /// This engine as the backplane knows it (what `*_except` leaves out).
    fn me(&self) -> *const () {
        self.follower
            .get()
            .map_or(std::ptr::null(), |f| Arc::as_ptr(f) as *const ())
    }

    /// Empties one scope and moves its generation (a load of it in flight does not store);
    /// with a shared tier, it is read again before it answers.
    fn empty(&self, scope: &RwLock<Scope<S::Value>>) {
        let mut g = scope.write().unwrap_or_else(|e| e.into_inner());
        g.generation += 1;
        let n = g.clear();
        g.loaded = false;
        drop(g);
        self.grow(-(n as i64));
    }

    /// Empties every scope this process holds.
    fn empty_all(&self) {
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
        self.flights.forget_all();
    }

    /// Drops every stored prompt of every scope, here and (with a shared tier) in the tier
    /// and every process. A caller cancelled half way does not leave it half done.
    pub async fn clear(self: &Arc<Self>) -> Result<(), Error> {
        let this = self.clone();
        Detach::on_cache_threads(async move {
            this.stats.incr(Counter::Invalidations);
            this.empty_all();
            let Some(shared) = &this.shared else {
                return Ok(());
            };
            let backplane = shared.tier.backplane();
            backplane.flush_function(&shared.fn_tag); // same-name functions here
            let done = shared.clear().await;
            this.empty_all();
            backplane.flush_function(&shared.fn_tag);
            done.inspect_err(|_| this.stats.incr(Counter::BackendErrors))
        })
        .await
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

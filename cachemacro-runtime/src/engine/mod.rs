//! One engine per cached function: the whole read path, loads, stores, and the explicit
//! operations (`*_invalidate`, `*_refresh`, `*_put`) live here.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the engine, its construction, the explicit operations |
//! | `read.rs` | the hit path (L1, or L2 when L1 is not in use) and the miss path (join or lead a flight, read L2, take the lock) |
//! | `call.rs` | one call, in its two flavours: *detached* (owned arguments: refreshes and a cancelled leader's load run as tasks) and *inline* (borrowed arguments) |
//! | `load.rs` | calling the source, and storing its result (L2, then L1) unless an invalidation won |
//! | `l2.rs` | the shared tier as the engine sees it: envelopes, what a stored value is worth, the lock, the refresh claim |
//! | `cell.rs` | the `static` generated code reaches its engine through, and the registry of engines |
//!
//! The engine depends on the [`crate::tier::Tier`] trait, never on Redis, and on
//! [`crate::coherence`] for generations, tags and the backplane.

mod ahead;
mod call;
mod cell;
mod l2;
mod load;
mod many;
mod read;
mod ticket;
mod wait;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use call::{Call, Past};
pub use cell::EngineCell;

use crate::clock;
use crate::codec::ValueCodec;
use crate::coherence::{tags as tag_clock, Generations, LocalTier};
use crate::entry::Entry;
use crate::error::Error;
use crate::flight::{Flights, Landed, Leader, Via};
use crate::io::{Defer, Detach};
use crate::key::Key;
use crate::kind::{Hooks, Kind};
use crate::policy::Policy;
use crate::stats::{Counter, Recorder, Stats};
use crate::tier::memory::MemoryStore;
use crate::tier::registry;

use l2::Remote;
use load::{Guard, Stored};
use ticket::{Snapshot, Ticket};

/// The engine of one cached function returning `R`; `S` says how `R` splits into the
/// cached value and what passes through uncached (`Result`'s `Err`).
pub struct Engine<R, S: Kind<R>> {
    policy: Policy,
    stats: Arc<Recorder>,
    /// The in-process tier (`memory`, `tiered`); `None` for `redis`.
    l1: Option<MemoryStore<S::Value>>,
    /// The shared tier (`redis`, `tiered`, named backends). An unusable one (a name nobody
    /// registered) fails every operation: calls go to the source, counting backend errors.
    remote: Option<Remote<S::Value>>,
    flights: Arc<Flights<S::Value>>,
    gens: Generations,
    /// Loads running now, by key: a second one of the same key is a stampede escape.
    loading: Mutex<HashMap<String, u32>>,
    /// What the expansion found out about the function's types.
    hooks: Hooks<S::Value, S::Error>,
    /// Keys refreshed ahead (`refresh_every`).
    schedule: ahead::Schedule,
    _r: PhantomData<fn() -> R>,
}

/// The oldest birth an L1 entry may have to be served (see [`Engine::local_read`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Floor {
    pub min: u64,
    /// An outage floor (`outage_ttl`): a hit under it counts as an outage hit.
    pub outage: bool,
}

impl<R: 'static, S: Kind<R>> Engine<R, S> {
    fn new(
        policy: Policy,
        codec: Option<ValueCodec<S::Value>>,
        hooks: Hooks<S::Value, S::Error>,
    ) -> Self {
        let stats = Arc::new(Recorder::new(policy.display_name()));
        stats.track_hot_keys(policy.hot_keys);
        let on_evict = {
            let stats = stats.clone();
            Arc::new(move || stats.incr(Counter::Evictions))
        };
        let remote = Self::remote(&policy, codec);
        let local = remote.as_ref().is_none_or(|r| r.local_tier);
        let l1 =
            local.then(|| MemoryStore::new(policy.capacity(), on_evict, hooks.sizer, hooks.packer));
        Self {
            l1,
            remote,
            stats,
            policy,
            flights: Arc::new(Flights::new()),
            gens: Generations::new(),
            loading: Mutex::new(HashMap::new()),
            hooks,
            schedule: Default::default(),
            _r: PhantomData,
        }
    }

    /// The shared tier the policy asks for (`None`: in-process only).
    fn remote(policy: &Policy, codec: Option<ValueCodec<S::Value>>) -> Option<Remote<S::Value>> {
        let (tier, local) = registry::tier_of(policy.backend)?;
        // The expansion passes a codec for every remote backend.
        codec.map(|codec| Remote::new(tier, codec, local, &policy.display_name()))
    }

    /// Tells an observing caller ([`crate::served::observe`]) what this call served;
    /// `entry` when the call saw the entry. Outside any scope: one relaxed load.
    #[inline]
    pub(super) fn note(
        &self,
        key: &str,
        outcome: crate::served::Outcome,
        entry: Option<&crate::entry::Entry<S::Value>>,
    ) {
        if crate::served::watching() {
            self.note_slow(key, outcome, entry.map(crate::entry::Entry::seen), true);
        }
    }

    /// [`Engine::note`] with the entry's deadlines and identity only.
    pub(super) fn note_seen(
        &self,
        key: &str,
        outcome: crate::served::Outcome,
        seen: Option<crate::served::Seen>,
    ) {
        if crate::served::watching() {
            self.note_slow(key, outcome, seen, true);
        }
    }

    /// [`Engine::note`] for a value the cache does not hold (a load invalidated while it
    /// ran, a value the policy does not cache): an HTTP response made of it is `no-store`.
    pub(super) fn note_unkept(&self, key: &str, outcome: crate::served::Outcome) {
        if crate::served::watching() {
            self.note_slow(key, outcome, None, false);
        }
    }

    #[cold]
    fn note_slow(
        &self,
        key: &str,
        outcome: crate::served::Outcome,
        seen: Option<crate::served::Seen>,
        kept: bool,
    ) {
        crate::served::note(|| {
            crate::served::Periods {
                function: self.stats.name(),
                ttl: self.policy.ttl,
                soft_ttl: self.policy.soft_ttl,
                fail_safe: self.policy.fail_safe,
            }
            .served(key, outcome, seen, kept)
        });
    }

    /// The policy this engine was built with.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A snapshot of this function's counters.
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    /// The in-process tier, if it may be used now: always for `memory`; for `tiered` while
    /// subscribed to the backplane, and during an outage (see [`Engine::local_read`]).
    #[inline]
    fn local(&self) -> Option<&MemoryStore<S::Value>> {
        self.local_read().map(|(l1, _)| l1)
    }

    /// The in-process tier, if it may be read now, and `Some(oldest birth)` if it is read
    /// during an outage: entries born before it are not served. A `tiered` process that
    /// lost its subscription could miss invalidations, so it does not read L1 while Redis
    /// answers (Redis has the truth). When Redis does not answer either (its breaker is
    /// open), nobody can invalidate through it, and sending every call to the source would
    /// turn the outage into a stampede on it: L1 entries are served if they are at most
    /// `outage_ttl` old, counted from when they were loaded or from when the subscription
    /// was lost, whichever is later (so a missed invalidation is served for at most
    /// `outage_ttl`). When the subscription is back, L1 is flushed.
    #[inline]
    fn local_read(&self) -> Option<(&MemoryStore<S::Value>, Option<Floor>)> {
        let l1 = self.l1.as_ref()?;
        match &self.remote {
            Some(r) if !r.tier.backplane().healthy() => self
                .outage_floor(r)
                .map(|min| (l1, Some(Floor { min, outage: true }))),
            Some(Remote {
                l1_ttl: Some(ttl), ..
            }) => {
                // No backplane (Memcached): an L1 copy is served for at most `l1_ttl`.
                let min = clock::now().saturating_sub(*ttl);
                Some((l1, Some(Floor { min, outage: false })))
            }
            _ => Some((l1, None)),
        }
    }

    /// The oldest birth an L1 entry may have to be served during an outage; `None` when
    /// L1 may not be read at all.
    #[cold]
    fn outage_floor(&self, r: &Remote<S::Value>) -> Option<u64> {
        if self.policy.outage_ttl.is_zero() {
            return None;
        }
        let down = r.tier.backplane().down_since()?;
        if r.tier.reachable() {
            return None;
        }
        let now = clock::now();
        let ttl = clock::nanos(self.policy.outage_ttl);
        Some(if now.saturating_sub(down) <= ttl {
            0
        } else {
            now - ttl
        })
    }

    /// Whether an L1 entry born at `born` may be served, given [`Engine::local_read`]'s
    /// floor; counts it as an outage hit when it is served only because of `outage_ttl`.
    #[inline]
    fn admits(&self, born: u64, floor: Option<Floor>) -> bool {
        match floor {
            None => true,
            Some(Floor { min, outage }) if born >= min => {
                if outage {
                    self.stats.incr(Counter::OutageHits);
                }
                true
            }
            Some(_) => false,
        }
    }

    /// Whether `v` is a negative result (`None`, however the return type nests it), cached
    /// only with `cache_none`.
    fn is_negative(&self, v: &S::Value) -> bool {
        S::is_negative(v) || self.hooks.is_negative(v)
    }

    /// What a load (or a read that fills L1) must check before its result is trusted.
    pub(super) fn snapshot(&self, key: &str) -> Snapshot {
        Snapshot {
            generation: self.gens.of(key),
            stamp: tag_clock().epoch(),
        }
    }

    /// Whether nothing invalidated `key` (or one of `tags`) since `snap`.
    pub(super) fn current(&self, key: &str, tags: &[String], snap: Snapshot) -> bool {
        self.gens.of(key) == snap.generation && !tag_clock().any_invalidated_after(tags, snap.stamp)
    }

    /// Lands `leader`'s flight with `value` unless the key was invalidated (its flight
    /// forgotten) or one of its tags was invalidated since `snap`: then the waiters go round
    /// again, and a caller that joined after an invalidation never gets the value it
    /// invalidated. Only this key's invalidations count: an invalidation of a key that
    /// shares its generation stripe does not send this key's waiters back to the source.
    pub(super) fn land(
        &self,
        leader: Option<Leader<S::Value>>,
        tags: &[String],
        snap: Snapshot,
        value: &S::Value,
        via: Via,
    ) {
        if let Some(l) = leader {
            // Tags rendered from the value count too, wherever the value came from (a load,
            // L2, a fail-safe fallback): waiters must not get a value whose tag was
            // invalidated after this flight's snapshot.
            let result_tags = self.result_tags(value);
            l.land_with(|forgotten| {
                let invalidated = tag_clock().any_invalidated_after(tags, snap.stamp)
                    || (!result_tags.is_empty()
                        && tag_clock().any_invalidated_after(&result_tags, snap.stamp));
                if forgotten || invalidated {
                    Landed::Superseded
                } else {
                    Landed::Value(value.clone(), via)
                }
            });
        }
    }

    /// Writes `entry` to L1 unless `key`'s local generation moved past `generation`;
    /// `false` if it did.
    pub(super) fn put_local(&self, key: &str, entry: Entry<S::Value>, generation: u64) -> bool {
        if self.gens.of(key) != generation {
            return false; // invalidated (or put) since the load started: it must not overwrite
        }
        if let Some(l1) = self.local() {
            let hard = entry.hard;
            l1.insert(Key::from(key), entry);
            // An invalidation that landed meanwhile wins: it bumped the generation before
            // removing the key, so either it removed what we just wrote, or we see the bump.
            if self.gens.of(key) != generation {
                l1.remove_hard(key, hard);
                return false;
            }
        }
        true
    }

    /// Stores `value` as the key's value in every tier now (a write-through put), ahead of
    /// any load in flight for it here or elsewhere; other processes drop their L1 copy.
    /// If a tier cannot take it, the key is invalidated instead (never left stale) and the
    /// error returned. A caller cancelled half way does not leave it half done: the rest
    /// runs as a task of its own.
    pub async fn put(
        self: &Arc<Self>,
        key: Key,
        tags: Vec<String>,
        value: S::Value,
    ) -> Result<(), Error> {
        let this = self.clone();
        Detach::on_cache_threads(async move { this.put_now(key, tags, value).await }).await
    }

    async fn put_now(
        self: &Arc<Self>,
        key: Key,
        tags: Vec<String>,
        value: S::Value,
    ) -> Result<(), Error> {
        if self.is_negative(&value) && !self.policy.cache_none {
            return self.invalidate_now(key).await; // a `None` that is not cached: absent
        }
        let expected = self.gens.of(&key);
        let stamp = tag_clock().epoch();
        let ticket = match &self.remote {
            Some(remote) => match remote.supersede(self, &key, &tags).await {
                Some(ticket) => ticket,
                None => return Err(self.put_failed(key, "could not reach it").await),
            },
            None => Ticket::local(None),
        };
        let guard = Guard::Put { expected, stamp };
        let result_tags = self.result_tags(&value);
        let stored = self
            .store(
                &key,
                (&tags, &result_tags),
                &value,
                Duration::ZERO,
                guard,
                (&ticket, &mut None),
            )
            .await;
        self.flights.forget(&key); // callers from now on do not join an older load
        if stored == Stored::RemoteFailed {
            return Err(self.put_failed(key, "could not write to it").await);
        }
        if let Some(remote) = &self.remote {
            self.drop_in_siblings(&key);
            if let Err(e) = remote.announce(&key).await {
                // Others may keep an old L1 copy: take the new value back out.
                self.stats.incr(Counter::BackendErrors);
                let _ = self.invalidate_now(key).await;
                return Err(e);
            }
        }
        if stored == Stored::TooLarge {
            return Err(self.backend_error("put: the value is larger than max_value_bytes; the key was invalidated there instead".into()));
        }
        Ok(())
    }

    /// Drops `key` from the L1 of every other function of this process on the same
    /// backend: a function that shares this one's entries (the same `name`) must not keep
    /// serving what this one just replaced. Other processes do it on the backplane message,
    /// which this process ignores as its own.
    fn drop_in_siblings(&self, key: &str) {
        if let Some(remote) = &self.remote {
            let me = self as *const Self as *const ();
            remote.tier.backplane().drop_key_except(key, me);
        }
    }

    async fn put_failed(self: &Arc<Self>, key: Key, what: &str) -> Error {
        self.stats.incr(Counter::BackendErrors);
        let message = match self.invalidate_now(key).await {
            Ok(()) => format!("put: {what}; the key was invalidated instead"),
            Err(e) => {
                tracing::error!(function = %self.stats.name(), error = %e, "cachemacro: a put failed and so did the invalidation; other processes may serve the old value until it expires");
                format!("put: {what}, and the invalidation that should replace it failed too ({e}); other processes may serve the old value until it expires")
            }
        };
        self.backend_error(message)
    }

    /// An error about this function's shared tier.
    fn backend_error(&self, message: String) -> Error {
        let backend = match &self.remote {
            Some(r) => r.tier.name().to_owned(),
            None => "memory".to_owned(),
        };
        Error::Backend { backend, message }
    }

    /// Calls the source now and stores its result (write-through put). Loads already in
    /// flight for the key, in this process or another, will not overwrite it. If the result
    /// cannot be written to L2, the key is invalidated there instead, so nobody reads the
    /// value it replaced.
    pub async fn refresh<Fut>(self: &Arc<Self>, key: Key, tags: Vec<String>, source: Fut) -> R
    where
        Fut: std::future::Future<Output = R>,
    {
        let expected = self.gens.bump(&key);
        self.flights.forget(&key);
        // Cancelled before its L1 step, this process would keep the replaced value.
        let unfinished = Defer::new(|| {
            self.drop_local(&key);
        });
        let stamp = tag_clock().epoch();
        let ticket = match &self.remote {
            Some(remote) => remote
                .supersede(self, &key, &tags)
                .await
                .unwrap_or_else(|| Ticket::local(None)),
            None => Ticket::local(None),
        };
        let guard = Guard::Put { expected, stamp };
        let (r, stored) = self
            .load_and_store(None, key.clone(), tags, source, ticket, guard)
            .await;
        unfinished.disarm();
        if let Some(remote) = &self.remote {
            self.drop_in_siblings(&key);
            let announced = if matches!(stored, Some(Stored::RemoteFailed)) {
                // L2 still holds the value this refresh replaced: remove it there.
                remote.invalidate(&key).await
            } else {
                // Other processes drop their L1 copy and read the new value from L2.
                remote.announce(&key).await
            };
            if let Err(e) = announced {
                self.stats.incr(Counter::BackendErrors);
                tracing::warn!(function = %self.stats.name(), error = %e, "cachemacro: a refresh could not reach the shared tier; other processes may serve the value it replaced until it expires");
            }
        }
        r
    }

    /// Removes `key` from every tier (and, tiered, from every process's L1); a load in
    /// flight for it, here or elsewhere, will not write it back, and a call that starts
    /// after this returns does not join it. A caller cancelled half way does not leave it
    /// half done: the rest runs as a task of its own.
    pub async fn invalidate(self: &Arc<Self>, key: Key) -> Result<(), Error> {
        let this = self.clone();
        Detach::on_cache_threads(async move { this.invalidate_now(key).await }).await
    }

    async fn invalidate_now(&self, key: Key) -> Result<(), Error> {
        self.stats.incr(Counter::Invalidations);
        // This process stops serving the old value at once (should the caller be cancelled
        // while the shared tier is slow, the rest still runs, but later)…
        self.drop_local(&key);
        // …then the shared tier, then this process again: a reader here that read the old
        // value from L2 before it was deleted took its snapshot before the second local
        // bump below, so it cannot put that value back in L1.
        let remote = match &self.remote {
            Some(r) => Some(r.invalidate(&key).await),
            None => None,
        };
        self.drop_local(&key);
        self.drop_in_siblings(&key);
        match remote {
            Some(result) => result.inspect_err(|_| self.stats.incr(Counter::BackendErrors)),
            None => Ok(()),
        }
    }

    /// Drops `key` from this process: its generation moves on (loads in flight will not
    /// write it), L1 forgets it, and the next caller starts a new flight.
    fn drop_local(&self, key: &str) -> bool {
        self.gens.bump(key);
        let dropped = self.l1.as_ref().is_some_and(|l1| l1.remove(key));
        self.flights.forget(key);
        dropped
    }

    /// Drops every value of this function from every tier and, tiered, every process's L1,
    /// without scanning keys: one version bump of the function's own tag in the shared tier
    /// (every value there carries it), and a message. Loads in flight do not write back. If
    /// the shared tier cannot be reached, the error is returned and the clear is replayed
    /// when it answers. A caller cancelled half way does not leave it half done.
    pub async fn clear(self: &Arc<Self>) -> Result<(), Error> {
        let this = self.clone();
        Detach::on_cache_threads(async move { this.clear_now().await }).await
    }

    async fn clear_now(&self) -> Result<(), Error> {
        self.clear_local();
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let tag = remote.fn_tag.as_str();
        let backplane = remote.tier.backplane();
        backplane.flush_function(tag); // same-name functions of this process
        let done = crate::tier::outbox::send(
            &remote.tier,
            crate::tier::outbox::Missed::Tag(tag.to_owned()),
        )
        .await;
        // Again after the shared tier: a read of it that started before the bump cannot
        // put an old value back.
        self.clear_local();
        backplane.flush_function(tag);
        done.map_err(|e| {
            self.stats.incr(Counter::BackendErrors);
            self.backend_error(format!(
                "clear: {e}; it will be replayed when the backend answers"
            ))
        })
    }

    /// Entries in the in-process tier now.
    pub(crate) fn l1_entries(&self) -> u64 {
        self.l1.as_ref().map_or(0, |l1| l1.len() as u64)
    }

    /// Bytes held by the in-process tier, if the value type can say.
    pub(crate) fn l1_bytes(&self) -> Option<u64> {
        self.l1.as_ref().and_then(MemoryStore::bytes)
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

impl<R: 'static, S: Kind<R>> LocalTier for Engine<R, S> {
    fn drop_key(&self, key: &str) {
        if self.drop_local(key) {
            self.stats.incr(Counter::BackplaneDrops);
        }
    }

    fn flush(&self) {
        self.clear_local();
    }

    fn fn_tag(&self) -> Option<&str> {
        self.remote.as_ref().map(|r| r.fn_tag.as_str())
    }
}

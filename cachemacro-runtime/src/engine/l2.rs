//! The shared tier (L2) as the engine sees it: values in envelopes (docs/FORMAT.md), what a
//! stored value is worth now (fresh, due for a refresh, only a fail-safe fallback, or
//! nothing), the distributed lock and the fleet-wide refresh claim. Round trips are the
//! [`Tier`]'s; nothing here knows which store it is.

use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use super::ticket::{Due, Lock, Snapshot, Ticket};
use super::Engine;
use crate::clock;
use crate::codec::{self, Meta, Reject, ValueCodec};
use crate::coherence::{fn_tag, tags as tag_clock, Message};
use crate::config::Codec;
use crate::entry::{Entry, TagStamp};
use crate::error::Error;
use crate::kind::{CacheValue, Kind};
use crate::policy::Stampede;
use crate::stats::Counter;
use crate::tier::outbox::{self, Missed};
use crate::tier::{Tier, TierError, Written};

/// What a miss under `stampede = lock` ends with.
pub(crate) enum Locked<V> {
    /// Load (holding the lock, or without it if L2 failed or the wait ran out).
    Proceed(Ticket<V>),
    /// Another process loaded it meanwhile.
    Got(V),
}

/// What the hit path found in L2.
pub(crate) enum Peeked<V> {
    /// A fresh value.
    Fresh(V),
    /// A value to serve at once and refresh.
    Due(Entry<V>, Due),
    /// Past its hard TTL, within the fail-safe window: only a fallback for the load.
    Expired(Entry<V>),
    /// Nothing usable (or L2 failed: the leader's read counts it).
    Miss,
}

/// What a leader's read of L2 found.
pub(crate) enum Found<V> {
    /// A usable value, due for a refresh or not; the ticket is what a refresh needs.
    Value(V, Option<Due>, Ticket<V>),
    /// Nothing usable: load with this ticket.
    Nothing(Ticket<V>),
}

/// What became of a write to L2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Written,
    /// The key's generation moved (an invalidation or put anywhere): not written.
    Superseded,
    /// Over `max_value_bytes`: not written, and the key's previous value removed.
    TooLarge,
    /// L2 failed, or the generation was unknown: not written.
    Failed,
    /// A tag rendered from the value was invalidated during the load (or just before): the
    /// value may predate that invalidation, so it is not written (nor kept in L1).
    Refused,
}

/// How long before a load's first read an invalidation of a tag rendered from its value
/// still keeps the value out of the shared tier: covers the round trips between this
/// process's and the server's view of time (a longer margin only stores less).
const RESULT_TAG_MARGIN: Duration = Duration::from_secs(1);

/// What bytes read from L2 are worth.
enum Verdict<V> {
    /// Nothing usable (absent, undecodable, another version, tag-invalidated, expired).
    Miss,
    /// Past its hard TTL but within the fail-safe window: only a fallback.
    Expired(Meta, V, u64),
    /// Servable, and due for a refresh or not.
    Usable(Meta, V, u64, Option<Due>),
}

/// One function's view of its shared tier: the tier, and how its values become bytes.
pub(crate) struct Remote<V> {
    pub tier: Arc<dyn Tier>,
    codec: ValueCodec<V>,
    which: Codec,
    fingerprint: u64,
    /// Whether the function keeps an L1 in front of the tier.
    pub local_tier: bool,
    /// How long an L1 copy may be served (cache clock nanoseconds), for a tier without a
    /// backplane ([`Tier::l1_ttl`]).
    pub l1_ttl: Option<u64>,
    /// The tag every value of the function carries in the shared tier, so that
    /// `<fn>_clear` drops them all by bumping one version (see [`fn_tag`]).
    pub fn_tag: String,
}

impl<V: CacheValue> Remote<V> {
    pub fn new(tier: Arc<dyn Tier>, codec: ValueCodec<V>, local_tier: bool, name: &str) -> Self {
        let which = tier.config().codec;
        let l1_ttl = tier.l1_ttl().map(clock::nanos);
        Self {
            fingerprint: codec::fingerprint((codec.type_name)(), which),
            tier,
            codec,
            which,
            local_tier,
            l1_ttl,
            fn_tag: fn_tag(name),
        }
    }

    /// `tags` and the function's own tag: what the shared tier stores and checks versions
    /// of (the in-process entry keeps `tags` alone; `<fn>_clear` clears L1 directly).
    fn shared(&self, tags: &[String]) -> Vec<String> {
        let mut all = Vec::with_capacity(tags.len() + 1);
        all.extend_from_slice(tags);
        all.push(self.fn_tag.clone());
        all
    }

    /// An error of this tier, named.
    /// Counts a failed tier operation: a backend error, or (breaker open, not tried) a
    /// skipped one, so an outage does not count an error per call.
    fn count<R: 'static, S: Kind<R, Value = V>>(&self, engine: &Engine<R, S>, e: &TierError) {
        engine.stats.incr(e.counter());
    }

    fn error(&self, e: TierError) -> Error {
        Error::Backend {
            backend: self.tier.name().to_owned(),
            message: e.to_string(),
        }
    }

    /// [`Remote::judge`], and for a value with tags rendered from it, one more read: their
    /// current versions must be those it was stored with.
    async fn judged<R: 'static, S: Kind<R, Value = V>>(
        &self,
        engine: &Engine<R, S>,
        key: &str,
        bytes: &[u8],
        tag_versions: &[u64],
        report: bool,
    ) -> Verdict<V> {
        let verdict = self.judge(engine, key, bytes, tag_versions, report);
        let (meta, value) = match &verdict {
            Verdict::Usable(meta, value, ..) | Verdict::Expired(meta, value, ..) => (meta, value),
            Verdict::Miss => return verdict,
        };
        if meta.result_tags.is_empty() {
            // Stored without the tags its value renders (before the function had them, or
            // by an older build): `invalidate_tag` could not reach it.
            if engine.hooks.result_tags.is_some() && !engine.result_tags(value).is_empty() {
                return Verdict::Miss;
            }
            return verdict;
        }
        let names: Vec<String> = meta.result_tags.iter().map(|(n, _)| n.clone()).collect();
        match self.tier.tag_versions(&names).await {
            Ok(now)
                if meta
                    .result_tags
                    .iter()
                    .map(|(_, v)| *v)
                    .eq(now.iter().copied()) =>
            {
                verdict
            }
            Ok(_) => Verdict::Miss, // one of them was invalidated after it was stored
            Err(e) => {
                self.count(engine, &e);
                Verdict::Miss
            }
        }
    }

    /// Decodes what L2 returned and decides what it is worth.
    fn judge<R: 'static, S: Kind<R, Value = V>>(
        &self,
        engine: &Engine<R, S>,
        key: &str,
        bytes: &[u8],
        tag_versions: &[u64],
        report: bool,
    ) -> Verdict<V> {
        let (meta, value) = match codec::decode(self.codec, self.which, self.fingerprint, bytes) {
            Ok(decoded) => decoded,
            Err(Reject::Garbage(_)) if !report => return Verdict::Miss,
            Err(Reject::Garbage(why)) => {
                engine.stats.incr(Counter::BackendErrors);
                tracing::warn!(function = %engine.stats.name(), key, %why, "cachemacro: undecodable value in the shared tier; treated as a miss and overwritten");
                return Verdict::Miss;
            }
            Err(Reject::Foreign) => return Verdict::Miss,
        };
        if meta.tag_versions != tag_versions {
            return Verdict::Miss; // a tag was invalidated after the value was stored
        }
        let now_ms = clock::unix_ms();
        let policy = &engine.policy;
        if now_ms >= meta.hard_ms {
            // Past the hard TTL; kept in L2 only for fail-safe.
            let usable = policy
                .fail_safe
                .is_some_and(|w| now_ms < meta.hard_ms.saturating_add(crate::io::millis(w)));
            return if usable {
                Verdict::Expired(meta, value, now_ms)
            } else {
                Verdict::Miss
            };
        }
        let due = if meta.soft_ms.is_some_and(|s| now_ms >= s) {
            Some(Due::Stale)
        } else if policy.stampede == Stampede::Xfetch {
            let expiry = meta.soft_ms.unwrap_or(meta.hard_ms);
            let delta = Duration::from_micros(meta.delta_us);
            crate::entry::xfetch_due(
                Duration::from_millis(expiry.saturating_sub(now_ms)),
                delta,
                policy.beta,
            )
            .then_some(Due::Early)
        } else {
            None
        };
        Verdict::Usable(meta, value, now_ms, due)
    }

    /// The in-process entry of a value read from L2, deadlines translated to this
    /// process's clock.
    fn entry(meta: &Meta, value: V, now_ms: u64, tags: &[String], stamp: u64) -> Entry<V> {
        let left = |at_ms: u64| Duration::from_millis(at_ms.saturating_sub(now_ms));
        let mut tags = tags.to_vec();
        tags.extend(meta.result_tags.iter().map(|(n, _)| n.clone()));
        let now = clock::now();
        let mut entry = Entry::new(
            value,
            now,
            meta.soft_ms.map(left),
            left(meta.hard_ms),
            Duration::from_micros(meta.delta_us),
            TagStamp::new(tags, stamp),
        );
        // A deadline already past stays as far in the past as it is (not "now"): a stale
        // copy reports its true age, and how little is left of it.
        let past = |at_ms: u64| now.saturating_sub(now_ms.saturating_sub(at_ms) * 1_000_000);
        if let Some(soft) = meta.soft_ms.filter(|&s| s < now_ms) {
            entry.soft = past(soft);
        }
        if meta.hard_ms < now_ms {
            entry.hard = past(meta.hard_ms);
        }
        entry
    }

    /// The hit path when L1 is not in use: one read, no flight.
    pub async fn peek<R: 'static, S: Kind<R, Value = V>>(
        &self,
        engine: &Engine<R, S>,
        key: &str,
        tags: &[String],
        started: Option<Instant>,
    ) -> Peeked<V> {
        let stamp = tag_clock().epoch();
        // Failures are left for the leader's read to count and log, once per call.
        let Ok(got) = self.tier.get(key, &self.shared(tags)).await else {
            return Peeked::Miss;
        };
        let Some(bytes) = got.value else {
            return Peeked::Miss;
        };
        match self
            .judged(engine, key, &bytes, &got.tag_versions, false)
            .await
        {
            Verdict::Usable(_, value, _, None) => {
                engine.hit_of(key, false, started);
                engine.stats.incr(Counter::L2Hits);
                Peeked::Fresh(value)
            }
            Verdict::Usable(meta, value, now_ms, Some(due)) => {
                Peeked::Due(Self::entry(&meta, value, now_ms, tags, stamp), due)
            }
            Verdict::Expired(meta, value, now_ms) => {
                Peeked::Expired(Self::entry(&meta, value, now_ms, tags, stamp))
            }
            Verdict::Miss => Peeked::Miss,
        }
    }

    /// The bulk hit path (`<fn>_many`): the keys' values and the versions of every tag
    /// they carry, in one round trip. For each key, `Some` if L2 holds a fresh value (a hit
    /// of L2; tiered, copied into L1 unless the key was invalidated since the read began);
    /// `None` for anything else (missing, stale, XFetch-due, expired, unreadable, or the
    /// tier failed), which the key's own call then handles as usual.
    pub async fn peek_many<R: 'static, S: Kind<R, Value = V>>(
        &self,
        engine: &Engine<R, S>,
        keys: &[(&str, &[String])],
    ) -> Vec<Option<V>> {
        let started = engine.stats.sample();
        let shared: Vec<Vec<String>> = keys.iter().map(|(_, tags)| self.shared(tags)).collect();
        let mut union: Vec<String> = Vec::new();
        for tag in shared.iter().flatten() {
            if !union.contains(tag) {
                union.push(tag.clone());
            }
        }
        let snaps: Vec<Snapshot> = keys.iter().map(|(k, _)| engine.snapshot(k)).collect();
        let names: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
        // Failures are left for each key's own call to count and log.
        let Ok((values, versions)) = self.tier.get_many(&names, &union).await else {
            return keys.iter().map(|_| None).collect();
        };
        let mut out = Vec::with_capacity(keys.len());
        for (i, ((key, tags), bytes)) in keys.iter().zip(values).enumerate() {
            let Some(bytes) = bytes else {
                out.push(None);
                continue;
            };
            let wanted: Vec<u64> = shared[i]
                .iter()
                .map(|t| union.iter().position(|u| u == t).map_or(0, |j| versions[j]))
                .collect();
            match self.judged(engine, key, &bytes, &wanted, false).await {
                Verdict::Usable(meta, value, now_ms, None) => {
                    engine.hit_of(key, false, started);
                    engine.stats.incr(Counter::L2Hits);
                    if engine.local().is_some() {
                        let entry = Self::entry(&meta, value.clone(), now_ms, tags, snaps[i].stamp);
                        engine.put_local(key, entry, snaps[i].generation);
                    }
                    out.push(Some(value));
                }
                _ => out.push(None),
            }
        }
        out
    }

    /// Reads the key from L2 as its leader, with its generation (the ticket of the load that
    /// may follow). A hit fills L1 with the remaining TTL, unless `snap` is no longer
    /// current. `for_caller: false` for the cache's own reads (a refresh checking what L2
    /// holds), which are not hits of any caller.
    pub async fn read<R: 'static, S: Kind<R, Value = V>>(
        &self,
        engine: &Arc<Engine<R, S>>,
        key: &str,
        tags: &[String],
        snap: Snapshot,
        fallback: Option<Entry<V>>,
        for_caller: bool,
    ) -> Found<V> {
        let started = engine.stats.sample();
        let read_at = Instant::now();
        let read = match self.tier.read(key, &self.shared(tags)).await {
            Ok(read) => read,
            Err(e) => {
                self.count(engine, &e);
                tracing::debug!(function = %engine.stats.name(), error = %e, "cachemacro: shared tier read failed; calling the source");
                return Found::Nothing(Ticket::local(fallback));
            }
        };
        let ticket = |fallback| Ticket {
            generation: Some(read.generation),
            read_at,
            tag_versions: read.tag_versions.clone(),
            fallback,
            lock: None,
        };
        let Some(bytes) = &read.value else {
            return Found::Nothing(ticket(fallback));
        };
        match self
            .judged(engine, key, bytes, &read.tag_versions, true)
            .await
        {
            Verdict::Miss => Found::Nothing(ticket(fallback)),
            Verdict::Expired(meta, value, now_ms) => Found::Nothing(ticket(Some(Self::entry(
                &meta, value, now_ms, tags, snap.stamp,
            )))),
            Verdict::Usable(meta, value, now_ms, due) => {
                if for_caller {
                    engine.hit_of(key, due == Some(Due::Stale), started);
                    engine.stats.incr(Counter::L2Hits);
                }
                if due.is_none() && engine.local().is_none() {
                    // Nothing keeps the value but the caller: no entry, no clone.
                    return Found::Value(value, due, ticket(None));
                }
                let entry = Self::entry(&meta, value, now_ms, tags, snap.stamp);
                let value = entry.value.clone();
                engine.put_local(key, entry.clone(), snap.generation);
                Found::Value(value, due, ticket(Some(entry)))
            }
        }
    }

    /// The key's distributed lock, if no other process holds it. The lock exists (and will
    /// be released) from before it is asked for, so a caller cancelled meanwhile cannot
    /// leave it held.
    async fn take_lock(&self, key: &str) -> Result<Option<Lock>, TierError> {
        let lock = Lock::asking(self.tier.clone(), key);
        match self.tier.try_lock(key, lock.token).await {
            Ok(true) => Ok(Some(lock)),
            Ok(false) => {
                lock.not_taken();
                Ok(None)
            }
            Err(e) => Err(e), // dropping `lock` releases it, in case it was set
        }
    }

    /// `stampede = lock` on a miss: take the key's lock, or wait for the process that holds
    /// it to write the value (woken by its release message on the backplane, with a bounded
    /// backoff as a fallback), then read it. A caller that waits longer than `lock_wait`, or
    /// meets a failing L2, loads without the lock rather than hang.
    pub async fn lock_or_wait<R: 'static, S: Kind<R, Value = V>>(
        &self,
        engine: &Arc<Engine<R, S>>,
        key: &str,
        tags: &[String],
        mut ticket: Ticket<V>,
    ) -> Locked<V> {
        let started = Instant::now();
        let deadline = started + self.tier.config().lock_wait;
        let mut backoff = Duration::from_millis(5);
        let mut waited = false;
        loop {
            match self.take_lock(key).await {
                Ok(Some(lock)) => {
                    // Double check under the lock: the process that held it (or one that
                    // was quicker between our read and our lock) may have just written the
                    // value; then take it instead of loading it again.
                    let snap = engine.snapshot(key);
                    match self.read(engine, key, tags, snap, None, false).await {
                        Found::Value(value, None, _) => return Locked::Got(value), // `lock` released on drop
                        Found::Value(_, _, fresh) | Found::Nothing(fresh) => {
                            ticket.renew(fresh);
                        }
                    }
                    ticket.lock = Some(lock);
                    return Locked::Proceed(ticket);
                }
                Ok(None) => {}
                Err(e) => {
                    self.count(engine, &e);
                    engine.stats.incr(Counter::StampedeEscapes);
                    return Locked::Proceed(ticket);
                }
            }
            if !waited {
                waited = true;
                engine.stats.incr(Counter::LockWaits);
            }
            let now = Instant::now();
            if now >= deadline {
                engine.stats.incr(Counter::StampedeEscapes);
                tracing::warn!(function = %engine.stats.name(), key, "cachemacro: waited lock_wait for another process's load; loading without the lock");
                return Locked::Proceed(ticket);
            }
            let wake = self.tier.backplane().waiter(key);
            let nap = backoff.min(deadline - now);
            crate::io::run(async move {
                let _ = tokio::time::timeout(nap, wake.notified()).await;
            })
            .await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
            let snap = engine.snapshot(key);
            match self.read(engine, key, tags, snap, None, true).await {
                Found::Value(value, ..) => return Locked::Got(value),
                Found::Nothing(fresh) => ticket.renew(fresh),
            }
        }
    }

    /// The fleet-wide guard of a refresh (stale, or XFetch-early): only the process that
    /// takes the key's lock refreshes; the others keep serving what they have, and pick up
    /// what L2 holds now (perhaps already refreshed). `false`: skip the refresh.
    pub async fn claim<R: 'static, S: Kind<R, Value = V>>(
        &self,
        engine: &Arc<Engine<R, S>>,
        key: &str,
        tags: &[String],
        ticket: &mut Ticket<V>,
    ) -> bool {
        match self.take_lock(key).await {
            Ok(Some(lock)) => {
                // Double check under the lock: another process may have refreshed it just
                // before; then take its value (into L1) instead of loading again.
                let snap = engine.snapshot(key);
                match self.read(engine, key, tags, snap, None, false).await {
                    Found::Value(_, None, _) => false,
                    Found::Value(_, _, fresh) | Found::Nothing(fresh) => {
                        ticket.renew(fresh);
                        ticket.lock = Some(lock);
                        true
                    }
                }
            }
            Ok(None) => {
                if engine.l1.is_some() {
                    // Another process refreshes; take what L2 holds (perhaps newer).
                    let snap = engine.snapshot(key);
                    let _ = self.read(engine, key, tags, snap, None, false).await;
                }
                false
            }
            Err(e) => {
                self.count(engine, &e);
                true
            }
        }
    }

    /// The ticket of a refresh of a value still being served: its generation and the tags'
    /// versions.
    pub async fn ticket<R: 'static, S: Kind<R, Value = V>>(
        &self,
        engine: &Arc<Engine<R, S>>,
        key: &str,
        tags: &[String],
        stale: Option<Entry<V>>,
    ) -> Ticket<V> {
        let read_at = Instant::now();
        match self.tier.versions(key, &self.shared(tags)).await {
            Ok(read) => Ticket {
                generation: Some(read.generation),
                read_at,
                tag_versions: read.tag_versions,
                fallback: stale,
                lock: None,
            },
            Err(e) => {
                self.count(engine, &e);
                Ticket::local(stale)
            }
        }
    }

    /// For `*_put` and `*_refresh`: moves the key's generation on, so loads in flight
    /// anywhere do not overwrite what is about to be written; the ticket to write it.
    /// `None` if L2 could not be reached.
    pub async fn supersede<R: 'static, S: Kind<R, Value = V>>(
        &self,
        engine: &Arc<Engine<R, S>>,
        key: &str,
        tags: &[String],
    ) -> Option<Ticket<V>> {
        let read_at = Instant::now();
        let generation = self.tier.bump(key, false).await;
        let versions = self.tier.tag_versions(&self.shared(tags)).await;
        match (generation, versions) {
            (Ok(g), Ok(v)) => Some(Ticket {
                generation: Some(g),
                read_at,
                tag_versions: v,
                fallback: None,
                lock: None,
            }),
            _ => {
                engine.stats.incr(Counter::BackendErrors);
                None
            }
        }
    }

    /// Writes a new value to L2 unless the key's generation moved since `ticket` read it.
    /// `times` is (δ, hard TTL, soft TTL).
    /// `result_tags` are the tags rendered from `value`: stored with their versions, unless
    /// one of them moved on since the load could have read its source (then `Refused`).
    #[allow(clippy::too_many_arguments)]
    pub async fn write<R: 'static, S: Kind<R, Value = V>>(
        &self,
        engine: &Engine<R, S>,
        key: &str,
        tags: &[String],
        result_tags: &[String],
        value: &V,
        (delta, hard, soft): (Duration, Duration, Option<Duration>),
        ticket: &Ticket<V>,
    ) -> Outcome {
        let Some(generation) = ticket.generation else {
            return Outcome::Failed;
        };
        let result_tags = if result_tags.is_empty() {
            Vec::new()
        } else {
            // Since the ticket's read, plus a margin for the round trips: an invalidation
            // of one of these tags in that window may have come after the source was read.
            // The check itself may wait up to `op_timeout` before it runs on the server.
            let margin = RESULT_TAG_MARGIN.max(self.tier.config().op_timeout * 2);
            let within = ticket.read_at.elapsed() + margin;
            match self.tier.result_tag_versions(result_tags, within).await {
                Ok(Some(versions)) => result_tags.iter().cloned().zip(versions).collect(),
                Ok(None) => {
                    tracing::debug!(function = %engine.stats.name(), key, "cachemacro: a tag of the loaded value was invalidated during the load; not stored");
                    return Outcome::Refused;
                }
                Err(e) => {
                    self.count(engine, &e);
                    return Outcome::Failed;
                }
            }
        };
        let cfg = self.tier.config();
        // Leave a margin for the tier's clock and the round trips.
        let retention = cfg.generation_retention;
        if ticket.read_at.elapsed() + Duration::from_secs(1).min(retention / 10) >= retention {
            tracing::warn!(function = %engine.stats.name(), key, "cachemacro: a load took longer than generation_retention; its result is not written to the shared tier (an invalidation during it could not be ruled out)");
            return Outcome::Superseded;
        }
        let now_ms = clock::unix_ms();
        let meta = Meta {
            created_ms: now_ms,
            soft_ms: soft.map(|s| now_ms.saturating_add(crate::io::millis(s))),
            hard_ms: now_ms.saturating_add(crate::io::millis(hard)),
            delta_us: u64::try_from(delta.as_micros()).unwrap_or(u64::MAX),
            generation,
            tag_versions: ticket.tag_versions.clone(),
            result_tags,
        };
        let bytes = match codec::encode(self.codec, self.which, self.fingerprint, &meta, value) {
            Ok(b) => b,
            Err(why) => {
                engine.stats.incr(Counter::BackendErrors);
                tracing::warn!(function = %engine.stats.name(), %why, "cachemacro: value does not encode; not written to the shared tier");
                return Outcome::Failed;
            }
        };
        // A value must not outlive the memory of an invalidation of its tags (its own
        // tags and the function's, see `fn_tag`).
        let _ = tags;
        let ttl = (hard + engine.policy.fail_safe.unwrap_or(Duration::ZERO)).min(cfg.tag_retention);
        match self.tier.write_if(key, bytes, ttl, generation).await {
            Ok(Written::Yes) => Outcome::Written,
            Ok(Written::GenerationMoved) => Outcome::Superseded,
            Ok(Written::TooLarge) => {
                // The previous value must not be served in its place (nor refreshed in a
                // loop when it is stale): remove it, as an invalidation would.
                engine.stats.incr(Counter::Oversized);
                if let Err(e) = self.tier.bump(key, true).await {
                    engine.stats.incr(Counter::BackendErrors);
                    tracing::debug!(function = %engine.stats.name(), error = %e, "cachemacro: could not remove the previous value of an oversized one");
                    return Outcome::Failed;
                }
                Outcome::TooLarge
            }
            Err(e) => {
                self.count(engine, &e);
                tracing::debug!(function = %engine.stats.name(), error = %e, "cachemacro: shared tier write failed");
                Outcome::Failed
            }
        }
    }

    /// Deletes the key in L2, moves its generation on, and tells other processes to drop
    /// their L1 copy.
    pub async fn invalidate(&self, key: &str) -> Result<(), Error> {
        outbox::send(&self.tier, Missed::Key(key.to_owned()))
            .await
            .map_err(|e| self.error(e))
    }

    /// Tells other processes to drop their L1 copy of `key`.
    pub async fn announce(&self, key: &str) -> Result<(), Error> {
        let done = self.tier.publish(Message::Key(key)).await;
        self.or_keep(key, done)
    }

    /// A failed invalidation step is kept and replayed when the tier answers again (the
    /// caller still gets the error).
    fn or_keep(&self, key: &str, done: Result<(), TierError>) -> Result<(), Error> {
        done.map_err(|e| {
            outbox::of(self.tier.name()).keep(&self.tier, Missed::Key(key.to_owned()));
            self.error(e)
        })
    }
}

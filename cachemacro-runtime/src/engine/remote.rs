//! The engine's Redis tier: reads as the key's leader, stores as the loader, invalidates
//! and announces. Bytes and round trips are `store::redis`'s; the envelope is `codec`'s.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::{Engine, Fetched, LoadCtx, Snapshot};
use crate::codec::{self, Meta, Reject, ValueCodec};
use crate::config::Codec;
use crate::entry::{Entry, TagStamp};
use crate::error::Error;
use crate::invalidate::{message, tags as tag_clock};
use crate::kind::{CacheValue, Kind};
use crate::policy::{Backend, Policy, Stampede};
use crate::stats::Counter;
use crate::store::redis::{backend_for, RedisBackend, Written};

/// A held distributed lock on a key. Released (and its waiters woken) when dropped: after
/// the load's write on success, on failure, on a panic, or if the caller goes away.
pub(crate) struct Lock {
    backend: Arc<RedisBackend>,
    key: String,
    token: u64,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let (backend, key, token) = (
            self.backend.clone(),
            std::mem::take(&mut self.key),
            self.token,
        );
        crate::io::spawn(async move {
            let _ = backend.unlock(&key, token).await;
        });
    }
}

/// What a miss under `stampede = lock` ends with.
pub(crate) enum Locked<V> {
    /// Load (holding the lock, or without it if Redis failed or the wait ran out).
    Proceed(LoadCtx<V>),
    /// Another process loaded it meanwhile.
    Got(V),
}

/// What the hit path found in Redis.
pub(crate) enum Peeked<V> {
    /// A fresh value.
    Fresh(V),
    /// A value to serve at once and refresh: stale (`early: false`) or XFetch-due.
    Due { entry: Arc<Entry<V>>, early: bool },
    /// Past its hard TTL, within the fail-safe window: only a fallback for the load.
    Expired(Arc<Entry<V>>),
    /// Nothing usable (or Redis failed: the leader's read counts it).
    Miss,
}

/// What became of a write to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Written,
    /// The key's generation moved (an invalidation or put anywhere): not written.
    Superseded,
    /// Over `max_value_bytes`: not written, and the key's previous value removed.
    TooLarge,
    /// Redis failed, or the generation was unknown: not written.
    Failed,
}

/// What bytes read from Redis are worth.
enum Verdict<V> {
    /// Nothing usable (absent, undecodable, another version, tag-invalidated, expired).
    Miss,
    /// Past its hard TTL but within the fail-safe window: only a fallback.
    Expired(Meta, V, u64),
    /// Servable; `Some(early)` when it should be refreshed (stale: `false`, XFetch: `true`).
    Usable(Meta, V, u64, Option<bool>),
}

pub(crate) struct Remote<V> {
    pub backend: Arc<RedisBackend>,
    codec: ValueCodec<V>,
    which: Codec,
    fingerprint: u64,
    local_tier: bool,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<V: CacheValue> Remote<V> {
    pub fn new(policy: &Policy, codec: ValueCodec<V>) -> Result<Self, String> {
        let backend = backend_for(&policy.backend)?;
        let local_tier = match policy.backend {
            Backend::Tiered => true,
            Backend::Named(_) => backend.local_tier,
            _ => false,
        };
        let which = backend.cfg.codec;
        Ok(Self {
            fingerprint: codec::fingerprint((codec.type_name)(), which),
            backend,
            codec,
            which,
            local_tier,
        })
    }

    pub fn local_tier(&self) -> bool {
        self.local_tier
    }

    /// Decodes what Redis returned and decides what it is worth.
    fn judge<R: 'static, K: Kind<R, Value = V>>(
        &self,
        engine: &Engine<R, K>,
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
                tracing::warn!(function = %engine.stats.name(), key, %why, "cachemacro: undecodable value in Redis; treated as a miss and overwritten");
                return Verdict::Miss;
            }
            Err(Reject::Foreign) => return Verdict::Miss,
        };
        if meta.tag_versions != tag_versions {
            return Verdict::Miss; // a tag was invalidated after the value was stored
        }
        let now_ms = unix_ms();
        if now_ms >= meta.hard_ms {
            // Past the hard TTL; kept in Redis only for fail-safe.
            let usable = engine
                .policy
                .fail_safe
                .is_some_and(|w| now_ms < meta.hard_ms.saturating_add(ms(w)));
            return if usable {
                Verdict::Expired(meta, value, now_ms)
            } else {
                Verdict::Miss
            };
        }
        let policy = &engine.policy;
        let refresh = if meta.soft_ms.is_some_and(|s| now_ms >= s) {
            Some(false)
        } else if policy.stampede == Stampede::Xfetch {
            let expiry = meta.soft_ms.unwrap_or(meta.hard_ms);
            let delta = Duration::from_micros(meta.delta_us);
            crate::entry::xfetch_due(
                Duration::from_millis(expiry.saturating_sub(now_ms)),
                delta,
                policy.beta,
            )
            .then_some(true)
        } else {
            None
        };
        Verdict::Usable(meta, value, now_ms, refresh)
    }

    /// The in-process entry of a value read from Redis, deadlines translated to this
    /// process's clock.
    fn entry(meta: &Meta, value: V, now_ms: u64, tags: &[String], stamp: u64) -> Arc<Entry<V>> {
        let now = Instant::now();
        let local = |at_ms: u64| now + Duration::from_millis(at_ms.saturating_sub(now_ms));
        Arc::new(Entry {
            value,
            soft: meta.soft_ms.map(local),
            hard: local(meta.hard_ms),
            delta: Duration::from_micros(meta.delta_us),
            tags: TagStamp::new(tags.to_vec(), stamp),
        })
    }

    /// The hit path when L1 is not in use (`backend = redis`, or `tiered` while its
    /// backplane is down): one `GET` (or `MGET` with tags), no flight.
    pub async fn peek<R: 'static, K: Kind<R, Value = V>>(
        &self,
        engine: &Engine<R, K>,
        key: &str,
        tags: &[String],
    ) -> Peeked<V> {
        let started = Instant::now();
        let stamp = tag_clock().epoch();
        // Failures are left for the leader's read to count and log, once per call.
        let Ok((Some(bytes), versions)) = self.backend.read_value(key, tags).await else {
            return Peeked::Miss;
        };
        match self.judge(engine, key, &bytes, &versions, false) {
            Verdict::Usable(_, value, _, None) => {
                engine.stats.hit(false, || started.elapsed());
                Peeked::Fresh(value)
            }
            Verdict::Usable(meta, value, now_ms, Some(early)) => Peeked::Due {
                entry: Self::entry(&meta, value, now_ms, tags, stamp),
                early,
            },
            Verdict::Expired(meta, value, now_ms) => {
                Peeked::Expired(Self::entry(&meta, value, now_ms, tags, stamp))
            }
            Verdict::Miss => Peeked::Miss,
        }
    }

    /// Reads the key from Redis as its leader, with its generation (for the load that may
    /// follow). A hit fills L1 with the remaining TTL, unless `snap` is no longer current.
    pub async fn fetch<R: 'static, K: Kind<R, Value = V>>(
        &self,
        engine: &Arc<Engine<R, K>>,
        key: &str,
        tags: &[String],
        snap: Snapshot,
        fallback: Option<Arc<Entry<V>>>,
    ) -> Fetched<V> {
        self.read(engine, key, tags, snap, fallback, true).await
    }

    /// [`Remote::fetch`]; `for_caller: false` for the cache's own reads (a refresh checking
    /// what Redis holds), which are not hits of any caller.
    async fn read<R: 'static, K: Kind<R, Value = V>>(
        &self,
        engine: &Arc<Engine<R, K>>,
        key: &str,
        tags: &[String],
        snap: Snapshot,
        fallback: Option<Arc<Entry<V>>>,
        for_caller: bool,
    ) -> Fetched<V> {
        let started = Instant::now();
        let read_at = std::time::Instant::now();
        let read = match self.backend.read(key, tags).await {
            Ok(read) => read,
            Err(e) => {
                engine.stats.incr(Counter::BackendErrors);
                tracing::debug!(function = %engine.stats.name(), error = %e, "cachemacro: Redis read failed; calling the source");
                return Fetched::Miss(LoadCtx::local(fallback));
            }
        };
        let ctx = |fallback| LoadCtx {
            l2_generation: Some(read.generation),
            read_at,
            tag_versions: read.tag_versions.clone(),
            fallback,
            lock: None,
        };
        let Some(bytes) = &read.value else {
            return Fetched::Miss(ctx(fallback));
        };
        match self.judge(engine, key, bytes, &read.tag_versions, true) {
            Verdict::Miss => Fetched::Miss(ctx(fallback)),
            Verdict::Expired(meta, value, now_ms) => Fetched::Miss(ctx(Some(Self::entry(
                &meta, value, now_ms, tags, snap.stamp,
            )))),
            Verdict::Usable(meta, value, now_ms, refresh) => {
                if for_caller {
                    engine
                        .stats
                        .hit(refresh == Some(false), || started.elapsed());
                }
                if refresh.is_none() && engine.local().is_none() {
                    // Nothing keeps the value but the caller: no entry, no clone.
                    return Fetched::Hit {
                        value,
                        refresh,
                        ctx: ctx(None),
                    };
                }
                let entry = Self::entry(&meta, value, now_ms, tags, snap.stamp);
                engine.put_local(key, entry.clone(), snap.generation);
                Fetched::Hit {
                    value: entry.value.clone(),
                    refresh,
                    ctx: ctx(Some(entry)),
                }
            }
        }
    }

    /// The key's distributed lock, if no other process holds it.
    async fn take_lock(&self, key: &str) -> Result<Option<Lock>, crate::store::redis::RedisError> {
        Ok(self.backend.try_lock(key).await?.map(|token| Lock {
            backend: self.backend.clone(),
            key: key.to_owned(),
            token,
        }))
    }

    /// `stampede = lock` on a miss: take the key's lock, or wait for the process that holds
    /// it to write the value (woken by its release message on the backplane, with a bounded
    /// backoff as a fallback), then read it. A caller that waits longer than `lock_wait`, or
    /// meets a failing Redis, loads without the lock rather than hang.
    pub async fn lock_or_wait<R: 'static, K: Kind<R, Value = V>>(
        &self,
        engine: &Arc<Engine<R, K>>,
        key: &str,
        tags: &[String],
        mut ctx: LoadCtx<V>,
    ) -> Locked<V> {
        let started = std::time::Instant::now();
        let deadline = started + self.backend.cfg.lock_wait;
        let mut backoff = Duration::from_millis(5);
        let mut waited = false;
        loop {
            match self.take_lock(key).await {
                Ok(Some(lock)) => {
                    // Double check under the lock: the process that held it (or one that
                    // was quicker between our read and our lock) may have just written the
                    // value; then take it instead of loading it again.
                    {
                        match self
                            .read(engine, key, tags, engine.snapshot(key), None, false)
                            .await
                        {
                            Fetched::Hit {
                                value,
                                refresh: None,
                                ..
                            } => return Locked::Got(value), // `lock` released on drop
                            Fetched::Hit { ctx: fresh, .. } | Fetched::Miss(fresh) => {
                                if fresh.l2_generation.is_some() {
                                    ctx.l2_generation = fresh.l2_generation;
                                    ctx.read_at = fresh.read_at;
                                    ctx.tag_versions = fresh.tag_versions;
                                }
                                ctx.fallback = ctx.fallback.take().or(fresh.fallback);
                            }
                        }
                    }
                    ctx.lock = Some(lock);
                    return Locked::Proceed(ctx);
                }
                Ok(None) => {}
                Err(_) => {
                    engine.stats.incr(Counter::BackendErrors);
                    engine.stats.incr(Counter::StampedeEscapes);
                    return Locked::Proceed(ctx);
                }
            }
            if !waited {
                waited = true;
                engine.stats.incr(Counter::LockWaits);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                engine.stats.incr(Counter::StampedeEscapes);
                tracing::warn!(function = %engine.stats.name(), key, "cachemacro: waited lock_wait for another process's load; loading without the lock");
                return Locked::Proceed(ctx);
            }
            let wake = self.backend.backplane.waiter(key);
            let nap = backoff.min(deadline - now);
            crate::io::run(async move {
                let _ = tokio::time::timeout(nap, wake.notified()).await;
            })
            .await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
            match self
                .fetch(engine, key, tags, engine.snapshot(key), None)
                .await
            {
                Fetched::Hit { value, .. } => return Locked::Got(value),
                Fetched::Miss(fresh) => {
                    ctx = LoadCtx {
                        fallback: ctx.fallback.take().or(fresh.fallback),
                        ..fresh
                    }
                }
            }
        }
    }

    /// The fleet-wide guard of a refresh (stale, or XFetch-early): only the process that
    /// takes the key's lock refreshes; the others keep serving what they have, and pick up
    /// what Redis holds now (perhaps already refreshed). `false`: skip the refresh.
    pub async fn claim_refresh<R: 'static, K: Kind<R, Value = V>>(
        &self,
        engine: &Arc<Engine<R, K>>,
        key: &str,
        tags: &[String],
        ctx: &mut LoadCtx<V>,
    ) -> bool {
        match self.take_lock(key).await {
            Ok(Some(lock)) => {
                // Double check under the lock: another process may have refreshed it just
                // before; then take its value (into L1) instead of loading again.
                match self
                    .read(engine, key, tags, engine.snapshot(key), None, false)
                    .await
                {
                    Fetched::Hit { refresh: None, .. } => false,
                    Fetched::Hit { ctx: fresh, .. } | Fetched::Miss(fresh) => {
                        if fresh.l2_generation.is_some() {
                            ctx.l2_generation = fresh.l2_generation;
                            ctx.read_at = fresh.read_at;
                            ctx.tag_versions = fresh.tag_versions;
                        }
                        ctx.lock = Some(lock);
                        true
                    }
                }
            }
            Ok(None) => {
                if engine.l1.is_some() {
                    // Another process refreshes; take what Redis holds (perhaps newer).
                    let snap = engine.snapshot(key);
                    let _ = self.read(engine, key, tags, snap, None, false).await;
                }
                false
            }
            Err(_) => {
                engine.stats.incr(Counter::BackendErrors);
                true
            }
        }
    }

    /// Generation and tag versions for a refresh of a value still being served.
    pub async fn load_ctx<R: 'static, K: Kind<R, Value = V>>(
        &self,
        engine: &Arc<Engine<R, K>>,
        key: &str,
        tags: &[String],
        stale: Option<Arc<Entry<V>>>,
    ) -> LoadCtx<V> {
        let read_at = std::time::Instant::now();
        match self.backend.read_meta(key, tags).await {
            Ok(read) => LoadCtx {
                l2_generation: Some(read.generation),
                read_at,
                tag_versions: read.tag_versions,
                fallback: stale,
                lock: None,
            },
            Err(_) => {
                engine.stats.incr(Counter::BackendErrors);
                LoadCtx::local(stale)
            }
        }
    }

    /// For `*_refresh`: moves the key's generation on, so loads in flight anywhere do not
    /// overwrite what the refresh is about to write.
    pub async fn refresh_ctx<R: 'static, K: Kind<R, Value = V>>(
        &self,
        engine: &Arc<Engine<R, K>>,
        key: &str,
        tags: &[String],
    ) -> LoadCtx<V> {
        let read_at = std::time::Instant::now();
        let generation = self.backend.bump(key, false).await;
        let versions = self.backend.tag_versions(tags).await;
        match (generation, versions) {
            (Ok(g), Ok(v)) => LoadCtx {
                l2_generation: Some(g),
                read_at,
                tag_versions: v,
                fallback: None,
                lock: None,
            },
            _ => {
                engine.stats.incr(Counter::BackendErrors);
                LoadCtx::local(None)
            }
        }
    }

    /// Writes a new value to Redis unless the key's generation moved since `ctx` read it.
    #[allow(clippy::too_many_arguments)]
    pub async fn store<R: 'static, K: Kind<R, Value = V>>(
        &self,
        engine: &Engine<R, K>,
        key: &str,
        tags: &[String],
        value: &V,
        delta: Duration,
        hard: Duration,
        soft: Option<Duration>,
        ctx: &LoadCtx<V>,
    ) -> Outcome {
        let Some(generation) = ctx.l2_generation else {
            return Outcome::Failed;
        };
        // Leave a margin for the clock of Redis and the round trips.
        let retention = self.backend.cfg.generation_retention;
        if ctx.read_at.elapsed() + Duration::from_secs(1).min(retention / 10) >= retention {
            tracing::warn!(function = %engine.stats.name(), key, "cachemacro: a load took longer than generation_retention; its result is not written to Redis (an invalidation during it could not be ruled out)");
            return Outcome::Superseded;
        }
        let now_ms = unix_ms();
        let meta = Meta {
            created_ms: now_ms,
            soft_ms: soft.map(|s| now_ms.saturating_add(ms(s))),
            hard_ms: now_ms.saturating_add(ms(hard)),
            delta_us: u64::try_from(delta.as_micros()).unwrap_or(u64::MAX),
            generation,
            tag_versions: ctx.tag_versions.clone(),
        };
        let bytes = match codec::encode(self.codec, self.which, self.fingerprint, &meta, value) {
            Ok(b) => b,
            Err(why) => {
                engine.stats.incr(Counter::BackendErrors);
                tracing::warn!(function = %engine.stats.name(), %why, "cachemacro: value does not encode; not written to Redis");
                return Outcome::Failed;
            }
        };
        let mut ttl = hard + engine.policy.fail_safe.unwrap_or(Duration::ZERO);
        if !tags.is_empty() {
            // A value must not outlive the memory of an invalidation of its tags.
            ttl = ttl.min(self.backend.cfg.tag_retention);
        }
        match self.backend.write_if(key, bytes, ttl, generation).await {
            Ok(Written::Yes) => Outcome::Written,
            Ok(Written::GenerationMoved) => Outcome::Superseded,
            Ok(Written::TooLarge) => {
                // The previous value must not be served in its place (nor refreshed in a
                // loop when it is stale): remove it, as an invalidation would.
                engine.stats.incr(Counter::Oversized);
                if let Err(e) = self.backend.bump(key, true).await {
                    engine.stats.incr(Counter::BackendErrors);
                    tracing::debug!(function = %engine.stats.name(), error = %e, "cachemacro: could not remove the previous value of an oversized one");
                    return Outcome::Failed;
                }
                Outcome::TooLarge
            }
            Err(e) => {
                engine.stats.incr(Counter::BackendErrors);
                tracing::debug!(function = %engine.stats.name(), error = %e, "cachemacro: Redis write failed");
                Outcome::Failed
            }
        }
    }

    /// Deletes the key in Redis, moves its generation on, and tells other processes to
    /// drop their L1 copy.
    pub async fn invalidate(&self, key: &str) -> Result<(), Error> {
        self.backend.bump(key, true).await?;
        self.announce(key).await
    }

    /// Tells other processes to drop their L1 copy of `key`.
    pub async fn announce(&self, key: &str) -> Result<(), Error> {
        self.backend.publish(message('k', key)).await?;
        Ok(())
    }
}

//! Tiers: where values live beyond this process. The engine talks to a shared tier only
//! through the [`Tier`] trait: bytes under keys, a generation per key that guards writes,
//! a version per tag, a lock per key, and a channel for the backplane. What the bytes mean
//! (the envelope, the codec) and when to read or write them is the engine's business; a
//! tier knows nothing of policies. One implementation today: [`redis`] (standalone or
//! Cluster). The in-process tier (L1) is not a `Tier`: it is read synchronously on the
//! hit path ([`memory`]).

#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) mod breaker;
pub(crate) mod keyspace;
#[cfg(feature = "memcached")]
pub(crate) mod memcached;
pub(crate) mod memory;
pub(crate) mod outbox;
#[cfg(feature = "redis")]
pub(crate) mod redis;
pub(crate) mod registry;
mod unavailable;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::coherence::{Backplane, Message, Signal};
use crate::config::Config;

pub(crate) use keyspace::Keyspace;

/// The future of one tier operation.
pub(crate) type TierFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TierError>> + Send + 'a>>;

/// A subscription that runs until dropped.
pub(crate) type Following = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Why a tier operation did not happen.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "remote"), allow(dead_code))] // some variants: tier implementations'
pub(crate) enum TierError {
    /// The circuit breaker is open: the tier failed recently; not tried.
    Open,
    /// No answer within the operation timeout.
    Timeout,
    /// A connection or command error.
    Failed(String),
}

impl TierError {
    /// What a failed operation counts as: a backend error, or (breaker open, not tried) a
    /// skipped one, so an outage does not count an error per call.
    pub fn counter(&self) -> crate::stats::Counter {
        match self {
            TierError::Open => crate::stats::Counter::BackendSkipped,
            _ => crate::stats::Counter::BackendErrors,
        }
    }
}

/// The answer of a tier that holds no semantic scopes (the `scope_*` defaults).
#[cfg(feature = "semantic")]
fn no_scopes<'a, T: 'a>() -> TierFuture<'a, T> {
    Box::pin(async {
        Err(TierError::Failed(
            "this tier holds no semantic scopes".into(),
        ))
    })
}

impl std::fmt::Display for TierError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TierError::Open => f.write_str("circuit open after recent failures; not tried"),
            TierError::Timeout => f.write_str("timed out"),
            TierError::Failed(e) => f.write_str(e),
        }
    }
}

/// What a read found: the value's bytes if any, the key's generation (0 if the read did
/// not ask for it, or none was ever set), and the current versions of the tags asked for.
#[derive(Debug, Default)]
pub(crate) struct Read {
    pub value: Option<Vec<u8>>,
    pub generation: u64,
    pub tag_versions: Vec<u64>,
}

/// What a bulk read found: each key's value (if any), and the versions of the tags asked
/// for.
pub(crate) type Many = (Vec<Option<Vec<u8>>>, Vec<u64>);

/// What became of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "remote"), allow(dead_code))] // made by tier implementations
pub(crate) enum Written {
    Yes,
    /// The key's generation moved since the load started: the invalidation wins.
    GenerationMoved,
    /// Over `max_value_bytes`: not written.
    TooLarge,
}

/// What a tier can tell about itself, for [`crate::health`].
#[derive(Debug, Default, Clone)]
pub(crate) struct TierInfo {
    /// Latency of its operations as this process saw them.
    pub op_latency: Option<crate::stats::LatencyHistogram>,
    /// Keys the server itself evicted for memory (Redis `evicted_keys`).
    pub evicted_keys: Option<u64>,
    /// The server's eviction policy (Redis `maxmemory-policy`).
    pub eviction_policy: Option<String>,
}

/// A shared tier, as the engine sees it.
pub(crate) trait Tier: Send + Sync + 'static {
    /// What the tier can tell about itself (latency, the server's evictions).
    fn info(&self) -> TierInfo {
        TierInfo::default()
    }
    /// `default`, or the name it was registered under.
    fn name(&self) -> &str;
    /// The configuration it was built with.
    fn config(&self) -> &Config;
    /// Whether functions on it keep an in-process L1 in front of it (`tiered`).
    fn local_tier(&self) -> bool;
    /// How long an L1 copy may be served after it was read or loaded, for a tier without
    /// a backplane that keeps an L1 (Memcached); `None`: as long as its TTL (invalidations
    /// arrive over the backplane).
    fn l1_ttl(&self) -> Option<Duration> {
        None
    }
    /// This process's view of the tier's backplane.
    fn backplane(&self) -> &Backplane;
    /// The key templates of the functions on it, and their collisions.
    fn keyspace(&self) -> &Keyspace;
    /// `false` while the tier's circuit breaker is open.
    fn reachable(&self) -> bool;
    /// The backplane's channel.
    fn channel(&self) -> String;
    /// Follows `channel` (subscribe, heartbeat, resubscribe) until the future is dropped;
    /// `None` if the tier has no pub/sub.
    fn follow(
        self: Arc<Self>,
        channel: String,
        on: Box<dyn FnMut(Signal<'_>) + Send>,
    ) -> Option<Following>;

    /// The hit path's read: the value and the tags' versions (no generation).
    fn get<'a>(&'a self, key: &'a str, tags: &'a [String]) -> TierFuture<'a, Read>;
    /// Many hit-path reads at once (`<fn>_many`): each key's value, and the current
    /// versions of `tags` (the union of the keys' tags; each key's are picked from it).
    /// One round trip where the tier can (Redis: one `MGET`, split by slot on a cluster);
    /// by default, one read after another.
    fn get_many<'a>(&'a self, keys: &'a [&'a str], tags: &'a [String]) -> TierFuture<'a, Many> {
        Box::pin(async move {
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                values.push(self.get(key, &[]).await?.value);
            }
            Ok((values, self.tag_versions(tags).await?))
        })
    }
    /// A leader's read: the value, its generation and the tags' versions.
    fn read<'a>(&'a self, key: &'a str, tags: &'a [String]) -> TierFuture<'a, Read>;
    /// The generation and the tags' versions, without the value.
    fn versions<'a>(&'a self, key: &'a str, tags: &'a [String]) -> TierFuture<'a, Read>;
    /// Current versions of `tags`.
    fn tag_versions<'a>(&'a self, tags: &'a [String]) -> TierFuture<'a, Vec<u64>>;
    /// Current versions of tags rendered from a value just loaded, if none of them was
    /// moved on within the last `within` by the tier's own clock (versions are the tier's
    /// time of the bump): `None` when one was, i.e. possibly during the load, which must
    /// then not be stored. A tier that cannot tell answers `None`.
    fn result_tag_versions<'a>(
        &'a self,
        tags: &'a [String],
        within: Duration,
    ) -> TierFuture<'a, Option<Vec<u64>>> {
        let _ = (tags, within);
        Box::pin(async { Ok(None) })
    }
    /// Writes `bytes` for `ttl` unless the key's generation moved past `generation`.
    fn write_if<'a>(
        &'a self,
        key: &'a str,
        bytes: Vec<u8>,
        ttl: Duration,
        generation: u64,
    ) -> TierFuture<'a, Written>;
    /// Moves the key's generation on (loads in flight anywhere will not write) and, with
    /// `delete`, removes the value. Returns the new generation, never one handed out
    /// before for the key.
    fn bump<'a>(&'a self, key: &'a str, delete: bool) -> TierFuture<'a, u64>;
    /// Moves a tag's version on: every value stored with the old one is a miss.
    fn bump_tag<'a>(&'a self, tag: &'a str) -> TierFuture<'a, u64>;
    /// Takes the key's lock with `token` (the caller's, so that a caller cancelled while
    /// the lock is being taken can still release it); `false` if another holds it.
    fn try_lock<'a>(&'a self, key: &'a str, token: u64) -> TierFuture<'a, bool>;
    /// Releases the key's lock if `token` still holds it, and wakes its waiters, in the
    /// background.
    fn unlock(&self, key: String, token: u64);
    /// Publishes a backplane message.
    fn publish<'a>(&'a self, message: Message<'a>) -> TierFuture<'a, ()>;

    /// Whether the tier can hold a semantic function's scopes (a map of entries at the
    /// scope's key, bounded, beside the key's generation): the methods below.
    #[cfg(feature = "semantic")]
    fn holds_scopes(&self) -> bool {
        false
    }
    /// Every entry of the scope at `key`: (id, bytes).
    #[cfg(feature = "semantic")]
    fn scope_entries<'a>(&'a self, key: &'a str) -> TierFuture<'a, Vec<(String, Vec<u8>)>> {
        let _ = key;
        no_scopes()
    }
    /// One entry of the scope at `key`.
    #[cfg(feature = "semantic")]
    fn scope_entry<'a>(&'a self, key: &'a str, id: &'a str) -> TierFuture<'a, Option<Vec<u8>>> {
        let _ = (key, id);
        no_scopes()
    }
    /// Stores entry `id` of the scope at `key` for `ttl`, unless the key's generation moved
    /// past `generation`; past `max` entries, those that expire first go.
    #[cfg(feature = "semantic")]
    fn scope_put<'a>(
        &'a self,
        key: &'a str,
        id: &'a str,
        bytes: Vec<u8>,
        ttl: Duration,
        max: usize,
        generation: u64,
    ) -> TierFuture<'a, Written> {
        let _ = (key, id, bytes, ttl, max, generation);
        no_scopes()
    }
    /// Removes entry `id` of the scope at `key`.
    #[cfg(feature = "semantic")]
    fn scope_remove<'a>(&'a self, key: &'a str, id: &'a str) -> TierFuture<'a, ()> {
        let _ = (key, id);
        no_scopes()
    }
}

/// Starts following the tier's backplane, once: tiered L1s and lock waiters need it.
pub(crate) fn listen(tier: &Arc<dyn Tier>) {
    if !tier.backplane().start() {
        return;
    }
    let name = tier.name().to_owned();
    let t = tier.clone();
    let on = Box::new(move |signal: Signal<'_>| t.backplane().on_signal(&name, signal));
    if let Some(following) = tier.clone().follow(tier.channel(), on) {
        crate::io::spawn(following);
    }
}

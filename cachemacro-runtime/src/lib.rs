//! Cache-aside for `async fn`s, with one attribute.
//!
//! ```
//! use cachemacro_runtime::cached;
//!
//! #[derive(Clone, Debug, PartialEq)]
//! struct User { id: u64, name: String }
//!
//! #[cached(ttl = "10m", soft_ttl = "1m", key = "user:<id>")]
//! async fn get_user(id: u64) -> Result<User, std::io::Error> {
//!     // the source of truth: a database, a service, a slow computation
//!     Ok(User { id, name: format!("user {id}") })
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let first = get_user(7).await.unwrap();   // miss: calls the body, caches `Ok`
//! let again = get_user(7).await.unwrap();   // hit: served from memory
//! assert_eq!(first, again);
//! assert_eq!(get_user_stats().loads, 1);
//!
//! get_user_invalidate(7).await.unwrap();    // the next call loads again
//! # }
//! ```
//!
//! The attribute's options, the generated `*_invalidate`, `*_refresh` and `*_stats`
//! functions and the guarantees are described in the README and in [`cached`].
//!
//! # What is where
//! * [`cached`] — the attribute (re-exported from the `cachemacro` crate).
//! * [`stats`] — per-function counters, latency quantiles, and the operator's table.
//! * [`invalidate_tag`] — drop every entry carrying a tag.
//! * [`write_through`] and the generated `*_put`; [`WriteBehind`] — the other two write
//!   patterns.
//! * [`events`] — invalidation events from other services, routed to the right keys.
//! * `metrics` (feature `metrics`) — every counter and latency quantile through the
//!   `metrics` facade; loads and refreshes are `tracing` spans (`cachemacro.load`).
//! * [`Policy`], [`Stampede`], [`Backend`] — what the attribute decided, as data.
//! * [`Config`], [`BackendConfig`] — the shared tiers: Redis (`redis`, `tiered`, Cluster),
//!   and with the `memcached` feature, Memcached (`backend = memcached`,
//!   [`BackendConfig::memcached`], [`BackendConfig::memcached_tiered`]): CAS-guarded writes,
//!   tombstones for invalidations, tag version keys, a lock by `add`, several servers by
//!   consistent hashing, no pub/sub (an L1 in front of it is bounded by `l1_ttl`;
//!   docs/FORMAT.md).
//! * [`served`] — what each cached call served (hit, stale, load, fail-safe; age, remaining
//!   freshness, the entry's identity), for a caller that runs it under [`served::observe`].
//! * `http` (feature `http`) — a tower layer that turns a route's cached calls into
//!   `Cache-Control`, `Age`, `ETag`, `Last-Modified`, `X-Cache`, `Vary` and `304`s, refuses
//!   `public` routes keyed by a user, and a ready stats route (text, JSON, Prometheus).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod bypass;
mod clock;
mod codec;
mod coherence;
mod config;
mod engine;
mod entry;
mod error;
pub mod events;
mod flight;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod io;
mod key;
mod kind;
mod policy;
#[cfg(feature = "semantic")]
#[cfg_attr(docsrs, doc(cfg(feature = "semantic")))]
pub mod semantic;
pub mod served;
mod size;
pub mod stats;
mod tier;
mod write;

#[doc(inline)]
pub use cachemacro::cached;

pub use bypass::{bypass, Bypass};
pub use codec::FORMAT_VERSION;
pub use config::{
    configure, BackendConfig, Codec, Config, DEFAULT_MEMCACHED_URL, DEFAULT_REDIS_URL,
};
pub use error::{Error, SourceTimeout};
pub use policy::{
    Backend, Policy, Site, Stampede, DEFAULT_CAPACITY, DEFAULT_MAX_REFRESHES, DEFAULT_OUTAGE_TTL,
};
pub use size::CacheSize;
#[cfg(feature = "metrics")]
pub use stats::metrics;
pub use stats::Stats;
pub use write::{
    write_through, WhenFull, WriteBehind, WriteBehindBuilder, WriteBehindStats, WriteError,
};

/// Invalidates every entry that carries `tag` (see the `tags` option), without scanning
/// keys: the tag is stamped with a new epoch, and an entry whose load started before that
/// epoch is a miss from then on.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// cachemacro_runtime::invalidate_tag("org:7").await.unwrap();
/// # }
/// ```
///
/// With Redis in use or configured, the tag's version moves on in every configured
/// backend (the default one, when Redis was configured or used, and every named one), so
/// every process's L2 reads miss, and a message on each backplane makes every process drop
/// its L1 entries carrying the tag. Every backend is tried even if one fails; the local
/// invalidation always happens; [`Error::Unreached`] names the backends that failed.
pub async fn invalidate_tag(tag: &str) -> Result<(), Error> {
    // A caller cancelled half way does not leave it half done: the rest runs as a task.
    let tag = tag.to_owned();
    io::Detach::on_cache_threads(async move { invalidate_tag_now(&tag).await }).await
}

async fn invalidate_tag_now(tag: &str) -> Result<(), Error> {
    // This process at once, and again after the shared tiers (see `Engine::invalidate`).
    coherence::tags().invalidate(tag);
    let mut failed: Vec<(String, String)> = Vec::new();
    for tier in tier::registry::configured() {
        let reached = async {
            tier.bump_tag(tag).await?;
            tier.publish(coherence::Message::Tag(tag)).await
        };
        if let Err(e) = reached.await {
            // Replayed when the tier answers again.
            tier::outbox::of(tier.name()).keep(&tier, tier::outbox::Missed::Tag(tag.to_owned()));
            failed.push((tier.name().to_owned(), e.to_string()));
        }
    }
    // After the shared tiers: a reader here that read an older value from one took its tag
    // stamp before this, so the entry it fills L1 with is already invalid.
    coherence::tags().invalidate(tag);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Unreached {
            operation: format!("invalidate_tag({tag:?})"),
            failed,
        })
    }
}

/// The state of one Redis backend in this process, for readiness probes and dashboards.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendHealth {
    /// `default`, or the name it was registered under.
    pub backend: String,
    /// `false` while the circuit breaker is open (Redis failed recently; calls go to the
    /// source without trying it).
    pub reachable: bool,
    /// For backends with tiered or `stampede = lock | xfetch` functions: whether the
    /// backplane (invalidations, lock wake-ups) is subscribed; while it is not, L1 is
    /// bypassed. `None` when no such function uses the backend.
    pub subscribed: Option<bool>,
    /// Functions on this backend whose keys can collide (two templates that render the
    /// same keys, without a shared `name`): each would read and overwrite the other's
    /// values. Also logged at `error` when the second function is first called.
    pub conflicts: Vec<String>,
    /// Latency of this process's operations on the backend (median and P99; zero before
    /// any).
    pub op_latency_p50: std::time::Duration,
    /// See `op_latency_p50`.
    pub op_latency_p99: std::time::Duration,
    /// Keys the server evicted for memory (Redis `evicted_keys`, standalone servers; polled
    /// every few seconds from the first `health()` call on, `None` until known).
    pub evicted_keys: Option<u64>,
    /// The server's eviction policy (Redis `maxmemory-policy`), as `evicted_keys`.
    pub eviction_policy: Option<String>,
    /// Invalidations that could not reach the backend, kept to be replayed when it
    /// answers again (see `Config::outbox_capacity`).
    pub outbox_pending: usize,
    /// Invalidations lost because that outbox was full.
    pub outbox_dropped: u64,
    /// What an operator should fix: e.g. a `noeviction` policy (cache writes fail when
    /// Redis is full), or lost invalidations.
    pub warnings: Vec<String>,
}

/// The shared backends this process has used so far (and the default one, when Redis was
/// configured), and their state.
pub fn health() -> Vec<BackendHealth> {
    tier::registry::in_use()
        .iter()
        .map(|t| {
            let info = t.info();
            let outbox = tier::outbox::of(t.name());
            let latency = |q| info.op_latency.as_ref().map_or_else(Default::default, |h| h.quantile(q));
            let mut warnings = Vec::new();
            if info.eviction_policy.as_deref() == Some("noeviction") {
                warnings.push("maxmemory-policy is noeviction: when Redis is full, cache writes fail instead of evicting old entries (use allkeys-lru or allkeys-lfu)".to_owned());
            }
            if outbox.dropped() > 0 {
                warnings.push(format!("{} invalidations could not be kept for replay (outbox full): other processes may serve old values until they expire", outbox.dropped()));
            }
            BackendHealth {
                backend: t.name().to_owned(),
                reachable: t.reachable(),
                subscribed: t.backplane().listening().then(|| t.backplane().healthy()),
                conflicts: t.keyspace().conflicts(),
                op_latency_p50: latency(0.5),
                op_latency_p99: latency(0.99),
                evicted_keys: info.evicted_keys,
                eviction_policy: info.eviction_policy,
                outbox_pending: outbox.pending(),
                outbox_dropped: outbox.dropped(),
                warnings,
            }
        })
        .collect()
}

/// For `benches/memcached.rs` only, not API: the Memcached tier's own client without the
/// cache (a raw `get`), the baseline that a `backend = memcached` hit is measured against.
#[cfg(feature = "memcached")]
#[doc(hidden)]
pub mod __bench {
    pub use crate::tier::memcached::RawClient;
}

/// Not public API: the items generated code calls (see `src/private.rs`).
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private_v0_1_0;

#[cfg(test)]
mod version_tests {
    #[test]
    fn the_private_module_is_named_for_this_version() {
        let name = format!("__private_v{}", env!("CARGO_PKG_VERSION").replace('.', "_"));
        assert_eq!(name, "__private_v0_1_0", "rename the re-export in lib.rs");
    }
}

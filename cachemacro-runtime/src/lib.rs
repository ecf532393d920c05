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

#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod config;
mod engine;
mod entry;
mod error;
pub mod events;
mod flight;
mod invalidate;
mod io;
mod key;
mod kind;
#[cfg(feature = "metrics")]
pub mod metrics;
mod policy;
pub mod stats;
mod store;
mod write;

#[doc(inline)]
pub use cachemacro::cached;

pub use codec::FORMAT_VERSION;
pub use config::{configure, BackendConfig, Codec, Config, DEFAULT_REDIS_URL};
pub use error::Error;
pub use policy::{Backend, Policy, Site, Stampede, DEFAULT_CAPACITY};
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
    #[allow(unused_mut)]
    let mut failed: Vec<(String, String)> = Vec::new();
    #[cfg(feature = "redis")]
    for backend in store::redis::configured_backends() {
        let reached = async {
            backend.bump_tag(tag).await?;
            backend.publish(invalidate::message('t', tag)).await
        };
        if let Err(e) = reached.await {
            failed.push((backend.name.clone(), e.to_string()));
        }
    }
    // After Redis: a reader here that read an older value from Redis took its tag stamp
    // before this, so the entry it fills L1 with is already invalid.
    invalidate::tags().invalidate(tag);
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
}

/// The Redis backends this process has used so far, and their state.
pub fn health() -> Vec<BackendHealth> {
    #[cfg(feature = "redis")]
    {
        let mut all: Vec<_> = store::redis::active_backends()
            .iter()
            .map(|b| BackendHealth {
                backend: b.name.clone(),
                reachable: b.breaker.allow_without_probe(),
                subscribed: b.backplane.listening().then(|| b.backplane.healthy()),
                conflicts: b
                    .conflicts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            })
            .collect();
        all.sort_by(|a, b| a.backend.cmp(&b.backend));
        all
    }
    #[cfg(not(feature = "redis"))]
    Vec::new()
}

/// Not public API: the items generated code calls. Anything here may change in any release.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "redis")]
    pub use crate::codec::codec_of;
    pub use crate::codec::ValueCodec;
    pub use crate::engine::{Engine, EngineCell};
    pub use crate::key::KeyBuilder;
    pub use crate::kind::{
        CacheValue, ErrorSharing, Hooks, Kind, OptionKind, RemoteValue, ResultKind, ValueKind,
    };
    pub use crate::policy::{Backend, Policy, Site, Stampede};
    pub use crate::stats::Stats;

    pub use core::future::Future;
    pub use core::marker::PhantomData;
    pub use core::option::Option::{self, None, Some};
    pub use core::result::Result::{self, Err, Ok};
    pub use core::time::Duration;
    pub use std::string::String;
    pub use std::sync::Arc;
    pub use std::vec::Vec;

    /// Finds out, at the expansion site, whether a function's error type can be shared with
    /// the callers waiting on a failed load (autoref specialisation: the by-value impl
    /// applies when `E: Clone + Send + Sync + 'static`).
    pub struct ErrProbe<E>(PhantomData<E>);

    #[allow(clippy::new_without_default)]
    impl<E> ErrProbe<E> {
        /// A probe for `E`.
        pub const fn new() -> Self {
            Self(PhantomData)
        }
    }

    #[allow(missing_docs)]
    pub trait ShareErrors<E> {
        fn sharing(&self) -> Option<ErrorSharing<E>>;
    }
    impl<E: Clone + Send + Sync + 'static> ShareErrors<E> for ErrProbe<E> {
        fn sharing(&self) -> Option<ErrorSharing<E>> {
            Some(ErrorSharing::cloning())
        }
    }
    impl<E> ShareErrors<E> for &ErrProbe<E> {
        fn sharing(&self) -> Option<ErrorSharing<E>> {
            None
        }
    }

    /// Finds out, at the expansion site, whether a cached value is an `Option` (autoref
    /// specialisation), so `None` is treated as negative however the return type nests it
    /// (`Option<T>`, `Result<Option<T>, E>`, an alias of either).
    pub struct NoneProbe<V>(PhantomData<V>);

    #[allow(clippy::new_without_default)]
    impl<V> NoneProbe<V> {
        /// A probe for `V`.
        pub const fn new() -> Self {
            Self(PhantomData)
        }
    }

    #[allow(missing_docs)]
    pub trait ProbeSome<V> {
        fn negative(&self) -> Option<fn(&V) -> bool>;
    }
    impl<T> ProbeSome<Option<T>> for NoneProbe<Option<T>> {
        fn negative(&self) -> Option<fn(&Option<T>) -> bool> {
            Some(Option::is_none)
        }
    }
    #[allow(missing_docs)]
    pub trait ProbeNone<V> {
        fn negative(&self) -> Option<fn(&V) -> bool>;
    }
    impl<V> ProbeNone<V> for &NoneProbe<V> {
        fn negative(&self) -> Option<fn(&V) -> bool> {
            None
        }
    }

    /// Implemented only by `Option`s.
    #[diagnostic::on_unimplemented(
        message = "`cache_none` caches `None`, but the cached value `{Self}` is not an `Option`",
        label = "the return type",
        note = "`cache_none` applies to `Option<T>` and `Result<Option<T>, E>`; remove it, or return an `Option`"
    )]
    pub trait OptionValue {}
    impl<T> OptionValue for Option<T> {}

    /// Fails to compile (with the message above) unless `V` is an `Option`.
    pub fn cache_none_needs_option<V: OptionValue>() {}

    /// Checks, at the expansion site, that a return type the macro took for a plain value is
    /// not a `Result` or an `Option` reached through an alias (which would cache `Err` or
    /// `None` silently). Autoref specialisation: the probe's inherent-looking `check` picks
    /// the `Result`/`Option` impls when they apply.
    pub struct KindProbe<T>(PhantomData<T>);

    #[allow(clippy::new_without_default)]
    impl<T> KindProbe<T> {
        /// A probe for `T`.
        pub const fn new() -> Self {
            Self(PhantomData)
        }
    }

    /// The probe found a plain value.
    pub struct PlainValue;
    /// The probe found a `Result` behind an alias.
    pub struct AliasOfResult;
    /// The probe found an `Option` behind an alias.
    pub struct AliasOfOption;

    /// Implemented only by [`PlainValue`].
    #[diagnostic::on_unimplemented(
        message = "this return type is a `Result` or an `Option` behind a type alias; `#[cached]` would cache its `Err`/`None`",
        label = "the return type",
        note = "say what it is: `returns = result` (cache `Ok` only) or `returns = option` (cache `Some` only)"
    )]
    pub trait IsPlainValue {}
    impl IsPlainValue for PlainValue {}

    /// Without the `redis` feature, a remote backend is a compile error that says so.
    #[cfg(not(feature = "redis"))]
    pub const fn codec_of<V: RedisFeatureEnabled>() -> ValueCodec<V> {
        unreachable!()
    }

    /// Implemented only with the `redis` feature.
    #[cfg(not(feature = "redis"))]
    #[diagnostic::on_unimplemented(
        message = "`backend = redis`, `tiered` and named backends need the `redis` feature of cachemacro-runtime",
        note = "enable it: cachemacro-runtime = {{ version = \"…\", features = [\"redis\"] }} (it is on by default)"
    )]
    pub trait RedisFeatureEnabled {}

    /// Fails to compile (with the message above) unless `_k` is [`PlainValue`].
    pub fn assert_plain<K: IsPlainValue>(_k: K) {}

    #[allow(missing_docs)]
    pub trait ProbeResult {
        fn check(&self) -> AliasOfResult {
            AliasOfResult
        }
    }
    impl<T, E> ProbeResult for KindProbe<Result<T, E>> {}

    #[allow(missing_docs)]
    pub trait ProbeOption {
        fn check(&self) -> AliasOfOption {
            AliasOfOption
        }
    }
    impl<T> ProbeOption for KindProbe<Option<T>> {}

    #[allow(missing_docs)]
    pub trait ProbePlain {
        fn check(&self) -> PlainValue {
            PlainValue
        }
    }
    impl<T> ProbePlain for &KindProbe<T> {}
}

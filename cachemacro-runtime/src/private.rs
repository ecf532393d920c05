//! What generated code calls, and nothing else: not public API, and it may change in
//! any release. The module is named for the crate's version (`__private_v0_1_0`), as
//! serde's and thiserror's are, so a macro crate of another version fails to compile
//! instead of calling items whose meaning changed. It also re-exports `Option`, `Result`,
//! `Arc`… so a user who shadows those names cannot break the expansion.

#[cfg(feature = "remote")]
pub use crate::codec::codec_of;
pub use crate::codec::ValueCodec;
pub use crate::engine::{Call, Engine, EngineCell, Past};
pub use crate::key::{
    escape_set, pack, Arg, DirectKind, DisplayKind, Key, KeyBuilder, KeyInt, KeyParse, Probe,
    RenderDirect, Rendered,
};
pub use crate::kind::{
    CacheValue, ErrorSharing, Hooks, Kind, OptionKind, RemoteValue, ResultKind, ValueKind,
};
pub use crate::policy::{Backend, Policy, Site, Stampede};
pub use crate::stats::Stats;
pub use crate::SourceTimeout;

pub use core::future::{ready, Future};
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

/// Whether a cached value can say its size ([`crate::CacheSize`]): an autoref probe.
pub struct SizeProbe<V>(PhantomData<V>);

#[allow(clippy::new_without_default)]
impl<V> SizeProbe<V> {
    /// A probe for `V`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

#[allow(missing_docs)]
pub trait ProbeSized<V> {
    fn sizer(&self) -> Option<fn(&V) -> usize>;
}
impl<V: crate::CacheSize> ProbeSized<V> for SizeProbe<V> {
    fn sizer(&self) -> Option<fn(&V) -> usize> {
        Some(<V as crate::CacheSize>::cache_size)
    }
}
#[allow(missing_docs)]
pub trait ProbeUnsized<V> {
    fn sizer(&self) -> Option<fn(&V) -> usize>;
}
impl<V> ProbeUnsized<V> for &SizeProbe<V> {
    fn sizer(&self) -> Option<fn(&V) -> usize> {
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
#[cfg(not(feature = "remote"))]
pub const fn codec_of<V: RedisFeatureEnabled>() -> ValueCodec<V> {
    unreachable!()
}

/// Implemented only with the `redis` feature.
#[cfg(not(feature = "remote"))]
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

/// How a `hard_timeout` becomes a function's error (checked where the option is written).
#[diagnostic::on_unimplemented(
    message = "`hard_timeout` gives up with the function's error, so `{Self}` must implement `From<cachemacro_runtime::SourceTimeout>`",
    label = "`{Self}` cannot carry a `SourceTimeout`",
    note = "add `impl From<cachemacro_runtime::SourceTimeout> for {Self}`, or use `fail_safe` so a stale value stands in"
)]
pub trait TimeoutError {
    /// The error for a source that missed its `hard_timeout`.
    fn timed_out(t: crate::SourceTimeout) -> Self;
}

impl<E: From<crate::SourceTimeout>> TimeoutError for E {
    fn timed_out(t: crate::SourceTimeout) -> Self {
        E::from(t)
    }
}

/// An argument of a function with `refresh_every`, reloaded later from a clone.
#[diagnostic::on_unimplemented(
    message = "`refresh_every` reloads the key later with the same arguments, so `{Self}` must implement `Clone`",
    label = "`{Self}` is not `Clone`",
    note = "derive or implement `Clone` for `{Self}`, or use `soft_ttl`, which refreshes on the next call"
)]
pub trait CloneArg {}

impl<T: Clone> CloneArg for T {}

/// Checks (at the `refresh_every` option) that an argument can be cloned.
pub fn clone_arg<T: CloneArg>(_: &T) {}

#[cfg(feature = "semantic")]
pub use crate::semantic::{Judge, SemanticCell, SemanticPolicy};

/// Answers agree when they are equal: `verify` without a `judge`.
#[cfg(feature = "semantic")]
pub fn equal_answers<V: PartialEq>(a: &V, b: &V) -> bool {
    a == b
}

/// The text a semantic call compares by meaning (its `on` parameter: `&str`, `String`, or
/// anything else that is `AsRef<str>`).
pub fn prompt_of<T: AsRef<str> + ?Sized>(on: &T) -> String {
    on.as_ref().to_owned()
}

/// What `semantic(…)` needs of the build: the `semantic` feature.
pub struct SemanticFeature;

#[allow(missing_docs)]
#[diagnostic::on_unimplemented(
    message = "`#[cached(semantic(…))]` needs the `semantic` feature of cachemacro-runtime",
    label = "used here",
    note = "enable it: `cachemacro-runtime = {{ version = \"…\", features = [\"semantic\"] }}`"
)]
pub trait SemanticEnabled {}

#[cfg(feature = "semantic")]
impl SemanticEnabled for SemanticFeature {}

/// Compiles only with the `semantic` feature (a clear error otherwise).
pub fn needs_semantic<T: SemanticEnabled>() {}

//! How a function's return type maps to what is cached: `T` whole, `Result<T, E>`'s `Ok`,
//! `Option<T>`'s `Some` (and `None` with `cache_none`).
//!
//! The macro picks the kind from the return type's spelling (`…Result<…>` → [`ResultKind`],
//! `Option<…>` → [`OptionKind`], anything else → [`ValueKind`]); `returns = …` overrides it
//! for type aliases. A wrong guess is a compile error naming the fix, never a silent
//! caching of errors.

use std::convert::Infallible;

/// A value that can be kept in the in-process tier and handed to concurrent callers.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: cached values must be `Clone + Send + Sync + 'static`",
    label = "this type is returned to every caller that shares a cached value",
    note = "derive or implement `Clone`, or cache an `Arc<{Self}>`"
)]
pub trait CacheValue: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> CacheValue for T {}

/// Splits a return value into what is cached and what is not.
#[diagnostic::on_unimplemented(
    message = "`#[cached]` cannot read `{R}` as the kind of return value it guessed",
    label = "the macro guessed this return type's kind from its spelling",
    note = "for a type alias, say what it is: `returns = result`, `returns = option` or `returns = value`"
)]
pub trait Kind<R>: 'static {
    /// What the cache keeps.
    type Value: CacheValue;
    /// What is passed through uncached.
    type Error;
    /// The cacheable part, or the error.
    fn split(r: R) -> Result<Self::Value, Self::Error>;
    /// Rebuilds a return value from a cached value.
    fn join(v: Self::Value) -> R;
    /// Rebuilds a return value from an error.
    fn fail(e: Self::Error) -> R;
    /// Whether `v` is a negative result (`None`), cached only with `cache_none`.
    fn is_negative(_v: &Self::Value) -> bool {
        false
    }
}

/// The whole return value is cached.
#[derive(Debug)]
pub struct ValueKind;
/// `Ok` is cached; `Err` never is.
#[derive(Debug)]
pub struct ResultKind;
/// `Some` is cached; `None` only with `cache_none`.
#[derive(Debug)]
pub struct OptionKind;

impl<T: CacheValue> Kind<T> for ValueKind {
    type Value = T;
    type Error = Infallible;
    fn split(r: T) -> Result<T, Infallible> {
        Ok(r)
    }
    fn join(v: T) -> T {
        v
    }
    fn fail(e: Infallible) -> T {
        match e {}
    }
}

impl<T: CacheValue, E: 'static> Kind<Result<T, E>> for ResultKind {
    type Value = T;
    type Error = E;
    fn split(r: Result<T, E>) -> Result<T, E> {
        r
    }
    fn join(v: T) -> Result<T, E> {
        Ok(v)
    }
    fn fail(e: E) -> Result<T, E> {
        Err(e)
    }
}

impl<T: CacheValue> Kind<Option<T>> for OptionKind {
    type Value = Option<T>;
    type Error = Infallible;
    fn split(r: Option<T>) -> Result<Option<T>, Infallible> {
        Ok(r)
    }
    fn join(v: Option<T>) -> Option<T> {
        v
    }
    fn fail(e: Infallible) -> Option<T> {
        match e {}
    }
    fn is_negative(v: &Option<T>) -> bool {
        v.is_none()
    }
}

/// A value that a remote tier (Redis) can store: serde both ways.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored in Redis: the `redis` and `tiered` backends need `serde::Serialize + serde::Deserialize`",
    label = "this backend serializes the cached value",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to the type, or use `backend = memory`"
)]
pub trait RemoteValue: CacheValue + serde::Serialize + serde::de::DeserializeOwned {}
impl<T: CacheValue + serde::Serialize + serde::de::DeserializeOwned> RemoteValue for T {}

/// What the engine needs to know of a function's types, found by probes at the expansion
/// site (where the types are known): how its errors are shared, and which cached values
/// are negative (`None`, cached only with `cache_none`).
pub struct Hooks<V, E> {
    pub(crate) errors: Option<ErrorSharing<E>>,
    pub(crate) negative: Option<fn(&V) -> bool>,
    /// The function's error for a source past `hard_timeout` (`E: From<SourceTimeout>`).
    pub(crate) timed_out: Option<fn(crate::SourceTimeout) -> E>,
    /// The bytes a value occupies, if its type implements `CacheSize`.
    pub(crate) sizer: Option<fn(&V) -> usize>,
    /// The tags rendered from a value (`tags = ["org:<result.org_id>"]`).
    pub(crate) result_tags: Option<fn(&V) -> Vec<String>>,
    pub(crate) packer: Option<crate::key::Packer>,
}

impl<V, E> Hooks<V, E> {
    /// The hooks of one function.
    pub fn new(errors: Option<ErrorSharing<E>>, negative: Option<fn(&V) -> bool>) -> Self {
        Self {
            errors,
            negative,
            timed_out: None,
            sizer: None,
            result_tags: None,
            packer: None,
        }
    }

    /// How to render the tags that name the value (`<result…>` placeholders).
    pub fn with_result_tags(mut self, render: fn(&V) -> Vec<String>) -> Self {
        self.result_tags = Some(render);
        self
    }

    /// The function's keys hold only integers: L1 is keyed by them packed, and `packer`
    /// turns a rendered key into that form (see [`crate::key::Probe::Packed`]).
    pub fn with_packer(mut self, packer: crate::key::Packer) -> Self {
        self.packer = Some(packer);
        self
    }

    /// How to size a value (`Stats::l1_bytes`), if its type can say.
    pub fn with_sizer(mut self, sizer: Option<fn(&V) -> usize>) -> Self {
        self.sizer = sizer;
        self
    }

    /// How a `hard_timeout` becomes the function's error.
    pub fn with_timed_out(mut self, make: fn(crate::SourceTimeout) -> E) -> Self {
        self.timed_out = Some(make);
        self
    }

    /// Whether `v` is a negative result (`None`, possibly nested in a `Result`).
    pub(crate) fn is_negative(&self, v: &V) -> bool {
        self.negative.is_some_and(|f| f(v))
    }
}

impl<V, E> std::fmt::Debug for Hooks<V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("shares_errors", &self.errors.is_some())
            .field("option", &self.negative.is_some())
            .finish()
    }
}

/// How a function's error is handed to the callers that waited on a failed load: cloned,
/// when the error type is `Clone + Send + Sync + 'static`. Built at the expansion site (see
/// `__private::ErrProbe`), where that is known.
pub struct ErrorSharing<E> {
    pub(crate) erase: fn(&E) -> std::sync::Arc<dyn std::any::Any + Send + Sync>,
    pub(crate) restore: fn(&(dyn std::any::Any + Send + Sync)) -> Option<E>,
}

impl<E> Clone for ErrorSharing<E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for ErrorSharing<E> {}

impl<E> std::fmt::Debug for ErrorSharing<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErrorSharing")
    }
}

impl<E: Clone + Send + Sync + 'static> ErrorSharing<E> {
    /// Sharing by cloning.
    pub fn cloning() -> Self {
        Self {
            erase: |e| std::sync::Arc::new(e.clone()),
            restore: |any| any.downcast_ref::<E>().cloned(),
        }
    }
}

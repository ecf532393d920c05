//! HTTP caching from the same policy as `#[cached]` (feature `http`): a tower [`Layer`]
//! that describes each response by the cached calls its handler made, and answers
//! conditional requests from them.
//!
//! For every response the layer reads what the handler's cached calls served
//! ([`crate::served`]) and writes, per RFC 9110/9111:
//!
//! * `Cache-Control`: `public` or `private`, `max-age` = the fresh period (`soft_ttl` if set,
//!   else `ttl`), `stale-while-revalidate` = `ttl - soft_ttl`, `stale-if-error` = `fail_safe`;
//!   or `no-store` for [`HttpCache::no_store`] routes, for responses that are not `200`,
//!   and for responses no cached call produced;
//! * `Age`: how long the value has been cached (from the entry's deadlines), so a
//!   downstream cache keeps it exactly as long as this one still calls it fresh;
//! * `ETag`: a strong tag made from the entry's identity (no hashing of the body);
//!   `Last-Modified` when the entry was produced in an earlier second than the response;
//! * `X-Cache`: `HIT`, `STALE`, `MISS` or `FAIL-SAFE`;
//! * `Vary`: the request headers the route's key depends on ([`HttpCache::vary`]).
//!
//! A `GET` or `HEAD` whose `If-None-Match` (or, without it, `If-Modified-Since`) still
//! matches is answered `304 Not Modified` with no body. The handler runs (its cached call
//! is a hit: the source is not called) but its body is dropped unsent.
//!
//! A route whose key depends on `Authorization`, `Proxy-Authorization`, `Cookie` or a
//! header declared [`HttpCache::per_user`] can never be `public`: [`HttpCache::layer`]
//! refuses it, naming the route and the header.
//!
//! ```
//! use cachemacro_runtime::http::HttpCache;
//!
//! let product = HttpCache::public("GET /products/{id}").vary("Accept-Language").layer();
//! assert!(product.is_ok());
//! let me = HttpCache::public("GET /me").vary("Authorization").layer();
//! assert_eq!(
//!     me.unwrap_err().to_string(),
//!     "route `GET /me` is `public`, but its key depends on `authorization`, which identifies the user: use HttpCache::private"
//! );
//! ```
//!
//! The `ETag` names the cache entries the handler read, so it is only as true as the
//! handler is a function of them: a body that also depends on something outside the key
//! (a query parameter, a request header) needs that input in the key and in
//! [`HttpCache::vary`], or no layer. Cached calls made in tasks the handler spawns are not
//! seen. A response no cached call made gets `no-store`.
//!
//! With axum: `.route("/p/{id}", get(handler).route_layer(HttpCache::public("GET /p/{id}").layer()?))`,
//! and [`stats_service`] mounts with `.route_service("/cache/stats", stats_service())`.
//!
//! The layer only reads what [`crate::served::observe`] reports and the stats registry;
//! it never reaches into the engine.

mod conditional;
mod stats;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::served::{observe, Observed, Outcome};

pub use conditional::{parse_entity_tags, EntityTag, EntityTags};
#[cfg(feature = "metrics")]
pub use stats::prometheus;
pub use stats::{stats_service, StatsBody, StatsService};

/// Who may store a route's responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Any cache (a CDN, a reverse proxy): `Cache-Control: public`.
    Public,
    /// Only the user's own (browser) cache: `Cache-Control: private`.
    Private,
    /// No cache at all: `Cache-Control: no-store`.
    NoStore,
}

/// A route's HTTP caching, built into a [`CacheLayer`] by [`HttpCache::layer`].
#[derive(Debug, Clone)]
#[must_use = "build it into a layer with .layer()"]
pub struct HttpCache {
    route: String,
    visibility: Visibility,
    vary: Vec<String>,
    per_user: Vec<String>,
}

/// Request headers that identify a user whatever the route says.
const USER_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

impl HttpCache {
    fn new(route: impl Into<String>, visibility: Visibility) -> Self {
        Self {
            route: route.into(),
            visibility,
            vary: Vec::new(),
            per_user: Vec::new(),
        }
    }

    /// A route any cache may store (`route` names it in errors, e.g. `"GET /products/{id}"`).
    pub fn public(route: impl Into<String>) -> Self {
        Self::new(route, Visibility::Public)
    }

    /// A route only the user's own cache may store.
    pub fn private(route: impl Into<String>) -> Self {
        Self::new(route, Visibility::Private)
    }

    /// A route no cache may store (`no-store`); `X-Cache` and `Age` are still written.
    pub fn no_store(route: impl Into<String>) -> Self {
        Self::new(route, Visibility::NoStore)
    }

    /// The route's cache key depends on request header `name` (`Vary: name`).
    pub fn vary(mut self, name: &str) -> Self {
        self.vary.push(name.to_ascii_lowercase());
        self
    }

    /// The route's key depends on request header `name`, which identifies a user (as
    /// `Authorization` and `Cookie` do): `Vary: name`, and the route cannot be `public`.
    pub fn per_user(mut self, name: &str) -> Self {
        let name = name.to_ascii_lowercase();
        self.per_user.push(name.clone());
        self.vary.push(name);
        self
    }

    /// The layer, or why this policy cannot be served honestly.
    pub fn layer(self) -> Result<CacheLayer, PolicyError> {
        let mut vary = Vec::new();
        for name in &self.vary {
            let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| PolicyError {
                route: self.route.clone(),
                header: name.clone(),
                reason: Reason::BadHeader,
            })?;
            let per_user =
                USER_HEADERS.contains(&name.as_str()) || self.per_user.iter().any(|u| u == name);
            if per_user && self.visibility == Visibility::Public {
                return Err(PolicyError {
                    route: self.route.clone(),
                    header: name.clone(),
                    reason: Reason::PublicPerUser,
                });
            }
            if !vary.contains(&parsed) {
                vary.push(parsed);
            }
        }
        Ok(CacheLayer {
            policy: Arc::new(Compiled {
                visibility: self.visibility,
                vary,
                per_user: self
                    .per_user
                    .iter()
                    .map(|n| n.to_ascii_lowercase())
                    .collect(),
            }),
        })
    }
}

/// Why [`HttpCache::layer`] refused a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The route, as given to [`HttpCache`].
    pub route: String,
    /// The header at fault (lower case).
    pub header: String,
    reason: Reason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    PublicPerUser,
    BadHeader,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            Reason::PublicPerUser => write!(
                f,
                "route `{}` is `public`, but its key depends on `{}`, which identifies the user: use HttpCache::private",
                self.route, self.header
            ),
            Reason::BadHeader => write!(
                f,
                "route `{}`: `{}` is not a valid header name",
                self.route, self.header
            ),
        }
    }
}

impl std::error::Error for PolicyError {}

#[derive(Debug)]
struct Compiled {
    visibility: Visibility,
    vary: Vec<HeaderName>,
    /// The headers declared `per_user` (lower case).
    per_user: Vec<String>,
}

/// The tower layer of a route ([`HttpCache::layer`]).
#[derive(Debug, Clone)]
pub struct CacheLayer {
    policy: Arc<Compiled>,
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service [`CacheLayer`] wraps around a route.
#[derive(Debug, Clone)]
pub struct CacheService<S> {
    inner: S,
    policy: Arc<Compiled>,
}

/// The future of a [`CacheService`] call.
pub type CacheFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for CacheService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResB: http_body::Body + Default + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = CacheFuture<Response<ResB>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let mut cond = conditional::Conditions::of(&req);
        // A request that carries credentials or a per-user header gets an answer for that
        // user: never `public` (RFC 9111 §3.5: `public` would let shared caches store it).
        cond.personal = USER_HEADERS
            .iter()
            .map(|n| n.to_string())
            .chain(self.policy.per_user.iter().cloned())
            .any(|n| req.headers().contains_key(n.as_str()));
        // The request's headers, for the strong tag's variant (see `Compiled::variant`):
        // which ones matter is known only once the handler's `Vary` is.
        let headers = req.headers().clone();
        let fut = self.inner.call(req);
        let policy = self.policy.clone();
        Box::pin(async move {
            let (res, seen) = observe(fut).await;
            let mut res = res?;
            policy.add_vary(res.headers_mut());
            cond.variant = policy.variant(&headers, res.headers());
            Ok(policy.respond(res, &seen, &cond))
        })
    }
}

/// What a response's cached calls add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// `max-age`: the shortest fresh period of the calls.
    pub max_age: Duration,
    /// How long the response has been cached (`Age`), so `max_age - age` is how long it
    /// stays fresh here.
    pub age: Duration,
    /// `stale-while-revalidate` (zero: not written).
    pub stale_while_revalidate: Duration,
    /// `stale-if-error` (`None`: some call has no `fail_safe`).
    pub stale_if_error: Option<Duration>,
    /// `X-Cache`.
    pub outcome: Outcome,
    /// `ETag`, when every call's entry is known.
    pub etag: Option<String>,
    /// When the newest entry was produced (`Last-Modified`, when every call's entry is
    /// known).
    pub produced_at: Option<SystemTime>,
    /// Whether the cache holds every value of the response ([`Observed::kept`]); if not,
    /// the layer answers `no-store`.
    pub kept: bool,
}

/// What the calls `seen` say about a response made of their values (`None`: no call).
pub fn describe(seen: &Observed) -> Option<Description> {
    let calls = seen.calls();
    let outcome = seen.outcome()?;
    let max_age = calls.iter().map(|c| c.fresh_period).min()?;
    // A call that did not see its entry (a shared-tier read without L1) is counted as
    // having used up its freshness: never longer downstream than here.
    let left = |c: &crate::served::Served| match (c.age, c.outcome) {
        (Some(_), _) | (None, Outcome::Load | Outcome::Joined) => c.fresh_for,
        (None, _) => Duration::ZERO,
    };
    let fresh_for = calls.iter().map(left).min()?;
    let age = if !fresh_for.is_zero() {
        max_age.saturating_sub(fresh_for)
    } else {
        let over = calls
            .iter()
            .map(|c| {
                c.age
                    .unwrap_or(c.fresh_period)
                    .saturating_sub(c.fresh_period)
            })
            .max()
            .unwrap_or_default();
        max_age + over
    };
    // Past its freshness a downstream cache may serve the response until
    // `max-age + stale-while-revalidate - Age` from now (`stale-if-error` likewise): never
    // past an entry's hard expiry (plus `fail_safe` for errors), when this cache itself
    // would no longer serve it. An entry the call did not see, and a fail-safe value
    // (already past its hard expiry), leave no such window.
    let window = |extra: fn(&crate::served::Served) -> Option<Duration>| {
        calls
            .iter()
            .map(|c| match (c.outcome, c.hard_left) {
                (Outcome::FailSafe, _) | (_, None) => Duration::ZERO,
                (_, Some(hard)) => extra(c).map_or(Duration::ZERO, |e| hard + e),
            })
            .min()
            .map_or(Duration::ZERO, |left| (left + age).saturating_sub(max_age))
    };
    let stale_while_revalidate = calls
        .iter()
        .map(|c| c.stale_while_revalidate)
        .min()
        .unwrap_or_default()
        .min(window(|_| Some(Duration::ZERO)));
    let stale_if_error = calls
        .iter()
        .map(|c| c.stale_if_error)
        .min()
        .flatten()
        .map(|sie| sie.min(window(|c| c.stale_if_error)));
    // `Last-Modified` only when every entry was produced in a second that was over when
    // the call read it: a second not over could still see another value of the key.
    let produced_at = calls
        .iter()
        .map(|c| c.produced_at.filter(|p| unix_secs(*p) < unix_secs(c.at)))
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max());
    Some(Description {
        max_age,
        age,
        stale_while_revalidate,
        stale_if_error,
        outcome,
        etag: seen.etag(),
        produced_at,
        kept: seen.kept(),
    })
}

/// Whole seconds, rounded up (past a millisecond's slack): an `Age` rounded down would
/// let a downstream cache keep the value fresh for part of a second longer than this one.
fn secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 1_000_000)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Compiled {
    fn respond<B: http_body::Body + Default>(
        &self,
        mut res: Response<B>,
        seen: &Observed,
        cond: &conditional::Conditions,
    ) -> Response<B> {
        let now = SystemTime::now();
        let h = res.headers_mut();
        let described = describe(seen);
        if let Some(d) = &described {
            h.insert(
                HeaderName::from_static("x-cache"),
                HeaderValue::from_static(d.outcome.as_str()),
            );
        }
        let d = match described {
            Some(d) if res.status() == StatusCode::OK && d.kept => d,
            _ => {
                // Nothing cached says how long this stays true (an error, a response no
                // cached call made, a value invalidated while it was loaded).
                res.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return res;
            }
        };
        // What the handler said itself wins when it is stricter: its own `Cache-Control` is
        // kept as written (a `no-store` ends here), and a response that sets a cookie is
        // one user's, never `public` (RFC 9111 §3: `Set-Cookie` alone does not stop a
        // shared cache).
        let own = res
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        if own.as_deref().is_some_and(|cc| cc.contains("no-store")) {
            return res;
        }
        let personal = cond.personal || res.headers().contains_key(header::SET_COOKIE);
        let visibility = match self.visibility {
            Visibility::Public if personal => Visibility::Private,
            v => v,
        };
        let cache_control = match visibility {
            Visibility::NoStore => "no-store".to_owned(),
            v => {
                let mut cc = format!(
                    "{}, max-age={}",
                    if v == Visibility::Public {
                        "public"
                    } else {
                        "private"
                    },
                    d.max_age.as_secs()
                );
                if d.stale_while_revalidate.as_secs() > 0 {
                    cc.push_str(&format!(
                        ", stale-while-revalidate={}",
                        d.stale_while_revalidate.as_secs()
                    ));
                }
                if let Some(e) = d.stale_if_error.filter(|e| e.as_secs() > 0) {
                    cc.push_str(&format!(", stale-if-error={}", e.as_secs()));
                }
                cc
            }
        };
        let h = res.headers_mut();
        if own.is_none() {
            if let Ok(v) = HeaderValue::from_str(&cache_control) {
                h.insert(header::CACHE_CONTROL, v);
            }
        }
        h.insert(header::AGE, HeaderValue::from(secs_up(d.age)));
        if self.visibility == Visibility::NoStore {
            return res;
        }
        let tag = d.etag.as_deref().map(|e| match cond.variant {
            Some(v) => format!("{}-{v:x}\"", e.trim_end_matches('"')),
            None => e.to_owned(),
        });
        let etag = tag.as_deref().and_then(|e| HeaderValue::from_str(e).ok());
        if let Some(e) = &etag {
            h.insert(header::ETAG, e.clone());
        }
        // Only an entry produced in an earlier second than now gets a `Last-Modified`:
        // a second that is not over could still see another value.
        let modified = d.produced_at.filter(|p| unix_secs(*p) < unix_secs(now));
        if let Some(p) = modified {
            if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(p)) {
                h.insert(header::LAST_MODIFIED, v);
            }
        }
        if cond.not_modified(tag.as_deref(), modified) {
            let (mut parts, body) = res.into_parts();
            parts.status = StatusCode::NOT_MODIFIED;
            // A 304 may carry Content-Length only as the 200's (RFC 9110 §8.6): say it when
            // known, so no later layer writes the empty body's `0`.
            let length = body.size_hint().exact();
            drop(body);
            for name in [
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                header::TRANSFER_ENCODING,
            ] {
                parts.headers.remove(name);
            }
            match length {
                Some(n) => {
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                }
                None => {
                    parts.headers.remove(header::CONTENT_LENGTH);
                }
            }
            return Response::from_parts(parts, B::default());
        }
        res
    }

    /// What sets this representation apart from others of the same entries, for the strong
    /// tag (RFC 9110 §8.8.3: representations that differ get different strong tags): the
    /// request's values of every header the response varies on (the route's `vary(…)` and
    /// any `Vary` the handler wrote), and of `Accept-Encoding`, always: a compression layer
    /// inside this one, or around it where this layer cannot see it, picks the content
    /// coding from it. `None` when there is nothing to tell apart.
    fn variant(&self, req: &http::HeaderMap, res: &http::HeaderMap) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let mut names: Vec<String> = res
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty() && n != "*")
            .collect();
        names.push(header::ACCEPT_ENCODING.as_str().to_owned());
        names.sort();
        names.dedup();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut any = false;
        for name in &names {
            let mut values = req.get_all(name.as_str()).iter().peekable();
            any |= values.peek().is_some();
            name.hash(&mut h);
            for v in values {
                v.as_bytes().hash(&mut h);
            }
            0xffu8.hash(&mut h);
        }
        any.then(|| h.finish())
    }

    fn add_vary(&self, h: &mut http::HeaderMap) {
        if self.vary.is_empty() {
            return;
        }
        let present: Vec<String> = h
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .collect();
        for name in &self.vary {
            if !present.iter().any(|p| p == name.as_str() || p == "*") {
                h.append(header::VARY, HeaderValue::from_name(name.clone()));
            }
        }
    }
}

/// Whether `m` may be answered `304` (RFC 9110 §13.1.2: `GET` and `HEAD`).
fn conditional_method(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

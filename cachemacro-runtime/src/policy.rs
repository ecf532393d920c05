//! What the macro decided for one cached function: TTLs, stampede mode, jitter, fail-safe,
//! capacity, backend. A `Policy` is a `const` value in the generated code.

use std::time::Duration;

/// How concurrent misses of one key are handled. Each mode includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stampede {
    /// Every miss calls the source.
    None,
    /// Concurrent misses of one key in one process make one source call.
    Coalesce,
    /// Plus a Redis lock, so concurrent misses across processes make one source call.
    /// With the memory backend it acts within the process, like `Coalesce`.
    Lock,
    /// Plus XFetch probabilistic early refresh guarded by a non-blocking lock.
    Xfetch,
}

/// Where a function's values live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In-process only.
    Memory,
    /// Redis only.
    Redis,
    /// In-process L1 in front of Redis L2.
    Tiered,
    /// Memcached only (the default Memcached backend, `Config::memcached_url`).
    Memcached,
    /// A backend registered at start-up under this name.
    Named(&'static str),
}

/// Where a cached function is defined: its identity (one engine per site) and its default
/// name in stats (`module::function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Site {
    /// `module_path!()` of the function.
    pub module: &'static str,
    /// The function's name.
    pub function: &'static str,
    /// `file!()`.
    pub file: &'static str,
    /// `line!()`.
    pub line: u32,
    /// `column!()`.
    pub column: u32,
}

impl Site {
    /// The site of `function` in `module`, at `file:line:column`.
    pub const fn new(
        module: &'static str,
        function: &'static str,
        file: &'static str,
        line: u32,
        column: u32,
    ) -> Self {
        Self {
            module,
            function,
            file,
            line,
            column,
        }
    }
}

/// The options of one `#[cached]` function, validated by the macro. Built with
/// [`Policy::new`] and the `with_*` methods, all `const`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Policy {
    /// Where the function is defined.
    pub site: Site,
    /// Name in stats, if not `module::function`.
    pub name: Option<&'static str>,
    /// Hard TTL: after it no tier returns the value (fail-safe aside).
    pub ttl: Duration,
    /// Soft TTL: after it the value is stale and refreshed in the background.
    pub soft_ttl: Option<Duration>,
    /// Stampede mode.
    pub stampede: Stampede,
    /// XFetch's β (> 0; larger refreshes earlier).
    pub beta: f64,
    /// Bound on in-process entries.
    pub max_capacity: Option<u64>,
    /// Fraction by which hard expiries are spread (0 = none, 0.1 = ±10%).
    pub jitter: f64,
    /// Whether `Option::None` is cached.
    pub cache_none: bool,
    /// TTL of a cached `None` (default: `ttl`).
    pub none_ttl: Option<Duration>,
    /// How long past hard expiry a stale value may stand in for a failing source.
    pub fail_safe: Option<Duration>,
    /// Where values live.
    pub backend: Backend,
    /// The key template (`user:<id>`; the default key spelled out) and what its values
    /// escape besides the fixed set, for remote backends: the runtime refuses to let two
    /// functions share keys silently.
    pub key_template: Option<(&'static str, &'static [u8])>,
    /// Soft source timeout: past it a caller with a stale or fail-safe value to fall back
    /// on gets that value, and the load goes on and lands.
    pub timeout: Option<Duration>,
    /// Hard source timeout: past it the caller gives up (an error, or the fail-safe value).
    pub hard_timeout: Option<Duration>,
    /// How old (from when it was loaded, or from when the backplane was lost, whichever is
    /// later) an L1 entry of a `tiered` function may be and still be served while the
    /// process can reach neither its backplane nor Redis. Zero: L1 is not read then.
    pub outage_ttl: Duration,
    /// At most this many background refreshes of the function run at once; past it, stale
    /// values keep being served and the refresh is left to a later call.
    pub max_refreshes: u32,
    /// Refresh a key in the background every this long while it is read.
    pub refresh_every: Option<Duration>,
    /// Stop refreshing a key ahead once it has not been read for this long.
    pub refresh_idle: Option<Duration>,
    /// Track the top this-many keys by hits and by loads (0: off).
    pub hot_keys: u32,
}

/// In-process entries per function when `max_capacity` is not given.
pub const DEFAULT_CAPACITY: u64 = 10_000;

/// Default of [`Policy::outage_ttl`].
pub const DEFAULT_OUTAGE_TTL: Duration = Duration::from_secs(5);

/// Default of [`Policy::max_refreshes`].
pub const DEFAULT_MAX_REFRESHES: u32 = 16;

impl Policy {
    /// The default policy for the function at `site`, with a hard TTL.
    pub const fn new(site: Site, ttl: Duration) -> Self {
        Self {
            site,
            name: None,
            ttl,
            soft_ttl: None,
            stampede: Stampede::Coalesce,
            beta: 1.0,
            max_capacity: None,
            jitter: 0.0,
            cache_none: false,
            none_ttl: None,
            fail_safe: None,
            backend: Backend::Memory,
            key_template: None,
            timeout: None,
            hard_timeout: None,
            outage_ttl: DEFAULT_OUTAGE_TTL,
            max_refreshes: DEFAULT_MAX_REFRESHES,
            refresh_every: None,
            refresh_idle: None,
            hot_keys: 0,
        }
    }

    /// Sets the soft source timeout.
    pub const fn with_timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    /// Sets the hard source timeout.
    pub const fn with_hard_timeout(mut self, d: Duration) -> Self {
        self.hard_timeout = Some(d);
        self
    }
    /// Sets how old an L1 entry may be and be served during an outage (zero: never).
    pub const fn with_outage_ttl(mut self, d: Duration) -> Self {
        self.outage_ttl = d;
        self
    }
    /// Bounds the function's concurrent background refreshes.
    pub const fn with_max_refreshes(mut self, n: u32) -> Self {
        self.max_refreshes = n;
        self
    }
    /// Refreshes read keys ahead every `every`, until idle for `idle` (default 4 × `every`).
    pub const fn with_refresh_ahead(mut self, every: Duration, idle: Option<Duration>) -> Self {
        self.refresh_every = Some(every);
        self.refresh_idle = idle;
        self
    }
    /// Tracks the top `n` keys by hits and by loads.
    pub const fn with_hot_keys(mut self, n: u32) -> Self {
        self.hot_keys = n;
        self
    }

    /// Sets the name in stats.
    pub const fn with_name(mut self, name: &'static str) -> Self {
        self.name = Some(name);
        self
    }
    /// Sets the soft TTL.
    pub const fn with_soft_ttl(mut self, d: Duration) -> Self {
        self.soft_ttl = Some(d);
        self
    }
    /// Sets the stampede mode.
    pub const fn with_stampede(mut self, s: Stampede) -> Self {
        self.stampede = s;
        self
    }
    /// Sets XFetch's β.
    pub const fn with_beta(mut self, beta: f64) -> Self {
        self.beta = beta;
        self
    }
    /// Bounds the in-process tier.
    pub const fn with_max_capacity(mut self, n: u64) -> Self {
        self.max_capacity = Some(n);
        self
    }
    /// Spreads hard expiries by ± `fraction`.
    pub const fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }
    /// Caches `None` for `ttl` (or the hard TTL when `None`).
    pub const fn with_cache_none(mut self, ttl: Option<Duration>) -> Self {
        self.cache_none = true;
        self.none_ttl = ttl;
        self
    }
    /// Serves a value up to `window` past its hard expiry when the source fails.
    pub const fn with_fail_safe(mut self, window: Duration) -> Self {
        self.fail_safe = Some(window);
        self
    }
    /// Sets the backend.
    pub const fn with_backend(mut self, b: Backend) -> Self {
        self.backend = b;
        self
    }
    /// Sets the key template (placeholders written `<param.field>`) and the characters its
    /// values escape besides the fixed set.
    pub const fn with_key_template(
        mut self,
        template: &'static str,
        escape: &'static [u8],
    ) -> Self {
        self.key_template = Some((template, escape));
        self
    }

    /// The name in stats.
    pub fn display_name(&self) -> String {
        match self.name {
            Some(n) => n.to_owned(),
            None => format!("{}::{}", self.site.module, self.site.function),
        }
    }

    /// The hard TTL of one new entry, jitter applied.
    pub(crate) fn hard_ttl(&self, negative: bool) -> Duration {
        let base = if negative {
            self.none_ttl.unwrap_or(self.ttl)
        } else {
            self.ttl
        };
        self.jittered(base)
    }

    /// The soft TTL of a new entry whose hard TTL is `hard`, jitter applied (keys loaded
    /// together go stale at different times, so their refreshes spread): never past `hard`.
    pub(crate) fn soft_ttl_within(&self, hard: Duration) -> Option<Duration> {
        self.soft_ttl.map(|s| self.jittered(s).min(hard))
    }

    /// `d` spread by ± `jitter`.
    fn jittered(&self, d: Duration) -> Duration {
        if self.jitter <= 0.0 {
            return d;
        }
        let spread = (fastrand::f64() * 2.0 - 1.0) * self.jitter.min(1.0);
        d.mul_f64((1.0 + spread).max(0.0))
    }

    pub(crate) fn has_timeouts(&self) -> bool {
        self.timeout.is_some() || self.hard_timeout.is_some()
    }

    pub(crate) fn coalesces(&self) -> bool {
        self.stampede >= Stampede::Coalesce
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.max_capacity.unwrap_or(DEFAULT_CAPACITY).max(1)
    }
}

//! Configuration: [`Config`] given to [`configure`] before first use, or the environment
//! (`CACHEMACRO_REDIS_URL`, `CACHEMACRO_PREFIX`), and the backends registered by name.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::error::Error;

/// How values are turned into bytes for a remote tier. The envelope around them (format
/// version, type fingerprint, deadlines; docs/FORMAT.md) is the same for every codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Codec {
    /// MessagePack with named fields (rmp-serde). Round-trips what serde does: untagged
    /// enums, `#[serde(flatten)]`, `skip_serializing_if`, fields added with
    /// `#[serde(default)]`, `serde_json::Value`. The default.
    #[default]
    MessagePack,
    /// JSON (serde_json): larger and slower, but readable with `redis-cli`.
    Json,
}

impl Codec {
    pub(crate) fn id(self) -> u8 {
        match self {
            Codec::MessagePack => 1,
            Codec::Json => 2,
        }
    }
}

/// A shared backend registered by name: Redis (one URL, standalone, `redis://` or
/// `rediss://`, or several comma-separated URLs, Redis Cluster seed nodes), or Memcached
/// (`memcached://host:port[,host:port…]`, feature `memcached`). Its `Debug` output hides
/// passwords.
#[derive(Clone)]
#[must_use]
pub struct BackendConfig {
    pub(crate) urls: Vec<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) local_tier: bool,
    pub(crate) store: Store,
    /// Memcached with an L1: how long a process keeps a value in its L1 (no backplane).
    pub(crate) l1_ttl: Option<Duration>,
}

/// The kind of server behind a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Store {
    Redis,
    #[cfg_attr(not(feature = "memcached"), allow(dead_code))]
    Memcached,
}

/// The name of the default Memcached backend (`backend = memcached`) in stats and health.
pub(crate) const MEMCACHED: &str = "memcached";

/// `memcached://127.0.0.1:11211`.
pub const DEFAULT_MEMCACHED_URL: &str = "memcached://127.0.0.1:11211";

impl BackendConfig {
    /// Values live in Redis only.
    pub fn redis(url: impl AsRef<str>) -> Self {
        Self {
            urls: split_urls(url.as_ref()),
            prefix: None,
            local_tier: false,
            store: Store::Redis,
            l1_ttl: None,
        }
    }

    /// Values live in Memcached only: `memcached://host:port`, or several comma-separated
    /// servers (`memcached://h1:11211,memcached://h2:11211`, or `memcached://h1:11211,h2:11211`),
    /// among which keys are spread by consistent hashing (feature `memcached`).
    pub fn memcached(url: impl AsRef<str>) -> Self {
        Self {
            store: Store::Memcached,
            ..Self::redis(url)
        }
    }

    /// An in-process L1 in front of Redis, kept coherent over pub/sub.
    pub fn tiered(url: impl AsRef<str>) -> Self {
        Self {
            local_tier: true,
            ..Self::redis(url)
        }
    }

    /// An in-process L1 in front of Memcached (feature `memcached`). Memcached has no
    /// pub/sub, so nothing tells this process that another one invalidated a key: each
    /// process keeps an L1 copy for at most `l1_ttl` after it read or loaded it, then reads
    /// Memcached again. An invalidation (`*_invalidate`, `*_put`, `invalidate_tag`,
    /// `<fn>_clear`) drops this process's own L1 at once; other processes may serve the
    /// older value for up to `l1_ttl`. Choose it as the staleness you accept (say 1 s).
    pub fn memcached_tiered(url: impl AsRef<str>, l1_ttl: Duration) -> Self {
        Self {
            local_tier: true,
            l1_ttl: Some(l1_ttl),
            ..Self::memcached(url)
        }
    }

    /// A key prefix for this backend (default: the global prefix).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
}

impl fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendConfig")
            .field("urls", &Urls(&self.urls))
            .field("prefix", &self.prefix)
            .field("local_tier", &self.local_tier)
            .field("store", &self.store)
            .field("l1_ttl", &self.l1_ttl)
            .finish()
    }
}

/// URLs as `Debug` shows them: passwords replaced by `***`.
struct Urls<'a>(&'a [String]);

impl fmt::Debug for Urls<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|u| redact(u)))
            .finish()
    }
}

/// `url` with any password in it replaced by `***`, for logs, errors and `Debug`: the
/// password of the user-info part (`redis://user:secret@host` → `redis://user:***@host`,
/// `redis://:secret@host` → `redis://:***@host`) and the `pass`/`password` query
/// parameters of Unix-socket URLs (`unix:///run/redis.sock?pass=secret`). User names,
/// hosts, ports and databases stay; a URL without credentials is returned unchanged. Errs
/// on the side of hiding: what cannot be told apart from a password is hidden.
pub(crate) fn redact(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // The user info ends at the last `@`: a password may hold an unescaped `@`, `/` or `?`.
    let (userinfo, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at..]),
        None => (None, rest),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    if let Some(userinfo) = userinfo {
        match userinfo.find(':') {
            Some(colon) => {
                out.push_str(&userinfo[..=colon]);
                out.push_str("***");
            }
            None => out.push_str(userinfo),
        }
    }
    match rest.find('?') {
        Some(q) => {
            out.push_str(&rest[..=q]);
            let (query, fragment) = match rest[q + 1..].find('#') {
                Some(h) => rest[q + 1..].split_at(h),
                None => (&rest[q + 1..], ""),
            };
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((name, _))
                        if ["pass", "password"].contains(&name.to_ascii_lowercase().as_str()) =>
                    {
                        out.push_str(name);
                        out.push_str("=***");
                    }
                    _ => out.push_str(pair),
                }
            }
            out.push_str(fragment);
        }
        None => out.push_str(rest),
    }
    out
}

fn split_urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Process-wide settings. Build with [`Config::from_env`] or [`Config::default`], adjust
/// with the builder methods, and pass to [`configure`] before the first cached call. Its
/// `Debug` output hides the passwords in Redis URLs.
#[derive(Clone)]
#[must_use]
pub struct Config {
    pub(crate) redis_urls: Vec<String>,
    /// Whether a Redis URL was given (in code or the environment), not the built-in one.
    pub(crate) redis_url_given: bool,
    pub(crate) memcached_urls: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) op_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_value_bytes: usize,
    pub(crate) codec: Codec,
    pub(crate) breaker_failures: u32,
    pub(crate) breaker_cooldown: Duration,
    pub(crate) breaker_max_cooldown: Duration,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_wait: Duration,
    pub(crate) tag_retention: Duration,
    pub(crate) generation_retention: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) outbox_capacity: usize,
    pub(crate) tls_root_pem: Option<Vec<u8>>,
    pub(crate) backends: HashMap<String, BackendConfig>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            redis_urls,
            redis_url_given: _,
            memcached_urls,
            prefix,
            op_timeout,
            connect_timeout,
            max_value_bytes,
            codec,
            breaker_failures,
            breaker_cooldown,
            breaker_max_cooldown,
            lock_ttl,
            lock_wait,
            tag_retention,
            generation_retention,
            heartbeat,
            outbox_capacity,
            tls_root_pem,
            backends,
        } = self;
        f.debug_struct("Config")
            .field("redis_urls", &Urls(redis_urls))
            .field("memcached_urls", &Urls(memcached_urls))
            .field("prefix", prefix)
            .field("op_timeout", op_timeout)
            .field("connect_timeout", connect_timeout)
            .field("max_value_bytes", max_value_bytes)
            .field("codec", codec)
            .field("breaker_failures", breaker_failures)
            .field("breaker_cooldown", breaker_cooldown)
            .field("breaker_max_cooldown", breaker_max_cooldown)
            .field("lock_ttl", lock_ttl)
            .field("lock_wait", lock_wait)
            .field("tag_retention", tag_retention)
            .field("generation_retention", generation_retention)
            .field("heartbeat", heartbeat)
            .field("outbox_capacity", outbox_capacity)
            .field(
                "tls_root_pem",
                &tls_root_pem
                    .as_ref()
                    .map(|pem| format!("{} bytes", pem.len())),
            )
            .field("backends", backends)
            .finish()
    }
}

/// `redis://127.0.0.1:6379`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl Default for Config {
    /// Defaults, ignoring the environment.
    fn default() -> Self {
        Self {
            redis_urls: vec![DEFAULT_REDIS_URL.to_owned()],
            redis_url_given: false,
            memcached_urls: vec![DEFAULT_MEMCACHED_URL.to_owned()],
            prefix: String::new(),
            op_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(1),
            max_value_bytes: 1 << 20,
            codec: Codec::MessagePack,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_millis(500),
            breaker_max_cooldown: Duration::from_secs(10),
            lock_ttl: Duration::from_secs(10),
            lock_wait: Duration::from_secs(5),
            tag_retention: Duration::from_secs(7 * 24 * 3600),
            generation_retention: Duration::from_secs(600),
            heartbeat: Duration::from_secs(1),
            outbox_capacity: 10_000,
            tls_root_pem: None,
            backends: HashMap::new(),
        }
    }
}

impl Config {
    /// Defaults, then `CACHEMACRO_REDIS_URL`, `CACHEMACRO_MEMCACHED_URL` and
    /// `CACHEMACRO_PREFIX` from the environment.
    pub fn from_env() -> Self {
        let mut c = Self::default();
        if let Ok(url) = std::env::var("CACHEMACRO_REDIS_URL") {
            if !url.trim().is_empty() {
                c.redis_urls = split_urls(&url);
                c.redis_url_given = true;
            }
        }
        if let Ok(url) = std::env::var("CACHEMACRO_MEMCACHED_URL") {
            if !url.trim().is_empty() {
                c.memcached_urls = split_urls(&url);
            }
        }
        if let Ok(prefix) = std::env::var("CACHEMACRO_PREFIX") {
            c.prefix = prefix;
        }
        c
    }

    /// The default Redis: one URL, or a comma-separated list of cluster seed nodes.
    /// Credentials go in the URL (`redis://user:pass@host:6379/0`); `rediss://` is TLS
    /// (feature `tls`).
    pub fn redis_url(mut self, url: impl AsRef<str>) -> Self {
        self.redis_urls = split_urls(url.as_ref());
        self.redis_url_given = true;
        self
    }

    /// The Memcached servers of `backend = memcached` (feature `memcached`):
    /// `memcached://host:port`, or several comma-separated (consistent hashing spreads the
    /// keys among them). Default `memcached://127.0.0.1:11211`.
    pub fn memcached_url(mut self, url: impl AsRef<str>) -> Self {
        self.memcached_urls = split_urls(url.as_ref());
        self
    }

    /// Prepended to every Redis key and channel.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Longest a single Redis operation may take before the call goes to the source
    /// (default 250 ms).
    pub fn op_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = d;
        self
    }

    /// Longest a connection attempt may take (default 1 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Encoded values larger than this are not written to Redis (default 1 MiB).
    pub fn max_value_bytes(mut self, n: usize) -> Self {
        self.max_value_bytes = n;
        self
    }

    /// The codec for remote tiers (default MessagePack).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Circuit breaker: after `failures` consecutive Redis failures, stop trying for
    /// `cooldown` (doubling while Redis stays down, up to 10 s), then let one call probe.
    pub fn breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.breaker_failures = failures.max(1);
        self.breaker_cooldown = cooldown;
        self
    }

    /// `stampede = lock`: how long a lock is held at most (a holder that dies frees it
    /// after this), default 10 s.
    pub fn lock_ttl(mut self, d: Duration) -> Self {
        self.lock_ttl = d;
        self
    }

    /// `stampede = lock`: how long a caller waits for another process's load before it
    /// calls the source itself, default 5 s.
    pub fn lock_wait(mut self, d: Duration) -> Self {
        self.lock_wait = d;
        self
    }

    /// How long a tag invalidation is remembered in Redis (default 7 days). Values that
    /// carry tags are kept in Redis no longer than this, so an invalidation always outlives
    /// the values it invalidated.
    pub fn tag_retention(mut self, d: Duration) -> Self {
        self.tag_retention = d;
        self
    }

    /// How long a key's invalidation generation is remembered in Redis (default 10 min);
    /// a load that takes longer than this is not written back.
    pub fn generation_retention(mut self, d: Duration) -> Self {
        self.generation_retention = d;
        self
    }

    /// How often the tiered backplane checks its subscription (default 1 s). A process
    /// whose subscription fails stops serving from L1 within about twice this.
    pub fn heartbeat(mut self, d: Duration) -> Self {
        self.heartbeat = d.max(Duration::from_millis(10));
        self
    }

    /// How many missed invalidations (keys or tags an `*_invalidate`, `*_put` or
    /// `invalidate_tag` could not reach a shared tier with) are kept per backend and
    /// replayed when it answers again (default 10,000). Past it they are dropped, logged at
    /// `error` and counted in `BackendHealth::outbox_dropped`.
    pub fn outbox_capacity(mut self, n: usize) -> Self {
        self.outbox_capacity = n;
        self
    }

    /// For `rediss://`: trust this CA (PEM) instead of the system's root certificates,
    /// e.g. a private CA of a self-hosted Redis (feature `tls`).
    pub fn tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_pem = Some(pem.into());
        self
    }

    /// Registers a backend that `#[cached(backend = "name")]` refers to.
    pub fn backend(mut self, name: impl Into<String>, backend: BackendConfig) -> Self {
        self.backends.insert(name.into(), backend);
        self
    }
}

static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
/// `configure` was called (as opposed to the configuration read from the environment).
static CONFIGURED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets the process's configuration. Call it before the first cached call; afterwards
/// (or on a second call) it returns an error and changes nothing.
///
/// ```
/// use cachemacro_runtime::{configure, BackendConfig, Config};
/// configure(
///     Config::from_env()
///         .prefix("myapp:")
///         .backend("sessions", BackendConfig::tiered("redis://127.0.0.1:6379/1")),
/// )
/// .unwrap();
/// ```
pub fn configure(config: Config) -> Result<(), Error> {
    for url in config.redis_urls.iter().chain(
        config
            .backends
            .values()
            .filter(|b| b.store == Store::Redis)
            .flat_map(|b| b.urls.iter()),
    ) {
        check_url(url)?;
    }
    if config.backends.contains_key(MEMCACHED) {
        return Err(Error::Config(format!(
            "a backend cannot be registered as \"{MEMCACHED}\": `backend = memcached` names the default Memcached backend (Config::memcached_url); pick another name"
        )));
    }
    for url in config.memcached_urls.iter().chain(
        config
            .backends
            .values()
            .filter(|b| b.store == Store::Memcached)
            .flat_map(|b| b.urls.iter()),
    ) {
        check_memcached_url(url)?;
    }
    for prefix in std::iter::once(&config.prefix)
        .chain(config.backends.values().filter_map(|b| b.prefix.as_ref()))
    {
        check_prefix(prefix)?;
    }
    // A configuration that names no Redis (a Memcached-only service) does not make the
    // built-in default Redis a backend that `invalidate_tag` must reach.
    let redis = config.redis_url_given;
    CONFIG.set(Arc::new(config)).map_err(|_| {
        Error::Config("configure() must be called once, before the first cached call".into())
    })?;
    CONFIGURED.store(redis, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// Checks one URL; its error quotes the URL with any password hidden.
fn check_url(url: &str) -> Result<(), Error> {
    let ok = url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://")
        || url.starts_with("unix://");
    if !ok {
        return Err(Error::Config(format!(
            "`{}` is not a Redis URL: write redis://host:port, rediss://host:port (TLS) or a comma-separated list of them for a cluster",
            redact(url)
        )));
    }
    if url.starts_with("rediss://") && !cfg!(feature = "tls") {
        return Err(Error::Config(format!(
            "`{}` asks for TLS: enable the `tls` feature of cachemacro-runtime",
            redact(url)
        )));
    }
    Ok(())
}

/// Checks one Memcached server address: `memcached://host:port` or `host:port`.
pub(crate) fn check_memcached_url(url: &str) -> Result<(), Error> {
    let addr = url.strip_prefix("memcached://").unwrap_or(url);
    let addr = addr.strip_suffix('/').unwrap_or(addr);
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok && !addr.contains('@') && !addr.contains('/') {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "`{}` is not a Memcached server: write memcached://host:port, or a comma-separated list of them",
            redact(url)
        )))
    }
}

/// A key prefix may not contain whitespace or control characters: every key the cache
/// keeps for itself contains a space, so no value key may (docs/FORMAT.md).
fn check_prefix(prefix: &str) -> Result<(), Error> {
    match prefix.chars().find(|c| c.is_whitespace() || c.is_control()) {
        None => Ok(()),
        Some(c) => Err(Error::Config(format!(
            "the key prefix {prefix:?} contains {c:?}: a prefix cannot contain whitespace or control characters (the cache reserves them for its own keys)"
        ))),
    }
}

/// The configuration in force: what [`configure`] set, else the environment's.
pub(crate) fn get() -> Arc<Config> {
    CONFIG
        .get_or_init(|| {
            let mut c = Config::from_env();
            if let Err(e) = check_prefix(&c.prefix) {
                tracing::error!(
                    "cachemacro: CACHEMACRO_PREFIX: {e}; its whitespace is replaced by `_`"
                );
                c.prefix = c
                    .prefix
                    .chars()
                    .map(|c| {
                        if c.is_whitespace() || c.is_control() {
                            '_'
                        } else {
                            c
                        }
                    })
                    .collect();
            }
            Arc::new(c)
        })
        .clone()
}

/// Whether a Redis URL was configured explicitly (with [`Config::redis_url`] or
/// `CACHEMACRO_REDIS_URL`), as opposed to the built-in default URL.
pub(crate) fn redis_configured() -> bool {
    CONFIGURED.load(std::sync::atomic::Ordering::SeqCst)
        || std::env::var_os("CACHEMACRO_REDIS_URL").is_some()
}

#[cfg(test)]
mod memcached_tests {
    use super::*;

    #[test]
    fn memcached_addresses_are_checked_and_backends_built() {
        for ok in [
            "memcached://127.0.0.1:11211",
            "mc1:11211",
            "memcached://[::1]:11211/",
        ] {
            assert!(check_memcached_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "memcached://host",
            "redis://h:6379",
            "memcached://u:pw@h:1",
            ":11211",
        ] {
            let e = check_memcached_url(bad).unwrap_err().to_string();
            assert!(
                e.contains("not a Memcached server") && !e.contains("pw@"),
                "{e}"
            );
        }
        let b = BackendConfig::memcached("memcached://a:1,memcached://b:2");
        assert_eq!(b.urls.len(), 2);
        assert_eq!(b.store, Store::Memcached);
        assert!(!b.local_tier && b.l1_ttl.is_none());
        let t = BackendConfig::memcached_tiered("a:1", Duration::from_secs(1));
        assert!(t.local_tier && t.l1_ttl == Some(Duration::from_secs(1)));
    }
}

#[cfg(test)]
mod prefix_tests {
    #[test]
    fn a_prefix_with_whitespace_is_refused() {
        assert!(super::check_prefix("app:").is_ok());
        let e = super::check_prefix("my app:").unwrap_err().to_string();
        assert!(e.contains("whitespace"), "{e}");
        assert!(super::check_prefix("a\tb").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords_in_urls() {
        let config = Config::default()
            .redis_url("redis://:hunter2@10.0.0.1:6379/0,rediss://alice:hunter2@h2:7000")
            .backend(
                "sessions",
                BackendConfig::tiered("redis://bob:hunter2@sessions:6379/1"),
            );
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        for shown in [
            "redis://:***@10.0.0.1:6379/0",
            "rediss://alice:***@h2:7000",
            "redis://bob:***@sessions:6379/1",
        ] {
            assert!(debug.contains(shown), "{shown} in {debug}");
        }
        let alternate = format!("{config:#?}");
        assert!(!alternate.contains("hunter2"), "{alternate}");

        let backend = format!("{:?}", BackendConfig::redis("redis://u:hunter2@h"));
        assert!(!backend.contains("hunter2"), "{backend}");
        assert!(backend.contains("redis://u:***@h"), "{backend}");
    }

    #[test]
    fn redact_hides_passwords_and_nothing_else() {
        for (url, shown) in [
            ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
            ("redis://user:hunter2@host", "redis://user:***@host"),
            (
                "rediss://user:hunter2@host:6380/2?protocol=resp3",
                "rediss://user:***@host:6380/2?protocol=resp3",
            ),
            ("redis://u:hun@ter/2@host:1", "redis://u:***@host:1"), // unescaped `@`, `/`
            (
                "unix:///run/redis.sock?db=1&pass=hunter2",
                "unix:///run/redis.sock?db=1&pass=***",
            ),
            (
                "redis+unix:///s.sock?user=u&password=hunter2#x",
                "redis+unix:///s.sock?user=u&password=***#x",
            ),
            ("http://:hunter2@x", "http://:***@x"),
            (":hunter2@x", ":***@x"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://user@host:6379/0", "redis://user@host:6379/0"),
            (
                "rediss://cache.internal:6380/0?protocol=resp3",
                "rediss://cache.internal:6380/0?protocol=resp3",
            ),
            ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
            ("", ""),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn urls_without_credentials_print_unchanged() {
        let urls = "redis://127.0.0.1:6379/0,rediss://cache.internal:6380,redis://user@h:1";
        let debug = format!("{:?}", Config::default().redis_url(urls));
        for url in urls.split(',') {
            assert!(debug.contains(&format!("\"{url}\"")), "{url} in {debug}");
        }
    }

    #[test]
    fn configuration_errors_hide_passwords() {
        let err = configure(Config::default().redis_url("http://:hunter2@x")).unwrap_err();
        let message = err.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("http://:***@x"), "{message}");
        let err = configure(
            Config::default().backend("b", BackendConfig::redis("ftp://admin:hunter2@x/0")),
        )
        .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
    }
}

//! Configuration: [`Config`] given to [`configure`] before first use, or the environment
//! (`CACHEMACRO_REDIS_URL`, `CACHEMACRO_PREFIX`), and the backends registered by name.

#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::collections::HashMap;
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

/// A Redis backend: one URL (standalone, `redis://` or `rediss://`), or several
/// comma-separated URLs (Redis Cluster seed nodes).
#[derive(Debug, Clone)]
#[must_use]
pub struct BackendConfig {
    pub(crate) urls: Vec<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) local_tier: bool,
}

impl BackendConfig {
    /// Values live in Redis only.
    pub fn redis(url: impl AsRef<str>) -> Self {
        Self {
            urls: split_urls(url.as_ref()),
            prefix: None,
            local_tier: false,
        }
    }

    /// An in-process L1 in front of Redis, kept coherent over pub/sub.
    pub fn tiered(url: impl AsRef<str>) -> Self {
        Self {
            local_tier: true,
            ..Self::redis(url)
        }
    }

    /// A key prefix for this backend (default: the global prefix).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
}

fn split_urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Process-wide settings. Build with [`Config::from_env`] or [`Config::default`], adjust
/// with the builder methods, and pass to [`configure`] before the first cached call.
#[derive(Debug, Clone)]
#[must_use]
pub struct Config {
    pub(crate) redis_urls: Vec<String>,
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
    pub(crate) tls_root_pem: Option<Vec<u8>>,
    pub(crate) backends: HashMap<String, BackendConfig>,
}

/// `redis://127.0.0.1:6379`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl Default for Config {
    /// Defaults, ignoring the environment.
    fn default() -> Self {
        Self {
            redis_urls: vec![DEFAULT_REDIS_URL.to_owned()],
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
            tls_root_pem: None,
            backends: HashMap::new(),
        }
    }
}

impl Config {
    /// Defaults, then `CACHEMACRO_REDIS_URL` and `CACHEMACRO_PREFIX` from the environment.
    pub fn from_env() -> Self {
        let mut c = Self::default();
        if let Ok(url) = std::env::var("CACHEMACRO_REDIS_URL") {
            if !url.trim().is_empty() {
                c.redis_urls = split_urls(&url);
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
    for url in config
        .redis_urls
        .iter()
        .chain(config.backends.values().flat_map(|b| b.urls.iter()))
    {
        check_url(url)?;
    }
    CONFIG.set(Arc::new(config)).map_err(|_| {
        Error::Config("configure() must be called once, before the first cached call".into())
    })
}

fn check_url(url: &str) -> Result<(), Error> {
    let ok = url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://")
        || url.starts_with("unix://");
    if !ok {
        return Err(Error::Config(format!(
            "`{url}` is not a Redis URL: write redis://host:port, rediss://host:port (TLS) or a comma-separated list of them for a cluster"
        )));
    }
    if url.starts_with("rediss://") && !cfg!(feature = "tls") {
        return Err(Error::Config(format!(
            "`{url}` asks for TLS: enable the `tls` feature of cachemacro-runtime"
        )));
    }
    Ok(())
}

/// The configuration in force: what [`configure`] set, else the environment's.
pub(crate) fn get() -> Arc<Config> {
    CONFIG.get_or_init(|| Arc::new(Config::from_env())).clone()
}

/// Whether a Redis backend was configured explicitly (by [`configure`] or the
/// environment), as opposed to the built-in default URL.
#[allow(dead_code)]
pub(crate) fn redis_configured() -> bool {
    CONFIG.get().is_some() || std::env::var_os("CACHEMACRO_REDIS_URL").is_some()
}

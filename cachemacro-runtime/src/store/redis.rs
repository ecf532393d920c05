//! The Redis tier: standalone (redis-rs `ConnectionManager`, reconnecting) or Redis Cluster
//! (`cluster-async`), every operation bounded by a timeout and guarded by a circuit breaker.
//!
//! It stores bytes; what the bytes mean (envelope, codec) and when to read or write them is
//! the engine's business. Every operation runs on the crate's own I/O runtime
//! ([`crate::io`]), so connections outlive the runtimes of the callers that use them.
//!
//! Keys: the value lives at `prefix + key`, exactly the rendered template. Keys that must
//! sit in the same cluster slot as the value (its generation, its lock) wrap the value's key
//! in a hash tag, `{prefix+key}:cm:gen`, unless the key already has one.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Script, Value};
use tokio::sync::OnceCell;

use crate::config::{BackendConfig, Config};
use crate::io;

/// Why a Redis operation did not happen.
#[derive(Debug, Clone)]
pub(crate) enum RedisError {
    /// The breaker is open: Redis failed recently; not tried.
    Open,
    /// No answer within the operation timeout.
    Timeout,
    /// Connection or command error.
    Redis(String),
}

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisError::Open => f.write_str("circuit open after recent failures; not tried"),
            RedisError::Timeout => f.write_str("timed out"),
            RedisError::Redis(e) => f.write_str(e),
        }
    }
}

impl From<RedisError> for crate::Error {
    fn from(e: RedisError) -> Self {
        crate::Error::Backend {
            backend: "redis",
            message: e.to_string(),
        }
    }
}

/// A connection to a standalone server or a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Stops paying the timeout on every call while Redis is down: after `threshold`
/// consecutive failures the circuit opens for a cooldown (doubling up to a maximum while
/// Redis stays down); then one call probes, and success closes it.
pub(crate) struct Breaker {
    open: AtomicBool,
    failures: AtomicU32,
    state: Mutex<BreakerState>,
    threshold: u32,
    base_cooldown: Duration,
    max_cooldown: Duration,
}

struct BreakerState {
    until: Instant,
    cooldown: Duration,
    probing: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration, max_cooldown: Duration) -> Self {
        Self {
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            state: Mutex::new(BreakerState {
                until: Instant::now(),
                cooldown,
                probing: false,
            }),
            threshold,
            base_cooldown: cooldown,
            max_cooldown: max_cooldown.max(cooldown),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether to try Redis now. While open, one caller per cooldown gets to probe.
    pub fn allow(&self) -> bool {
        if !self.open.load(Relaxed) {
            return true;
        }
        let mut s = self.lock();
        if !s.probing && Instant::now() >= s.until {
            s.probing = true;
            return true;
        }
        false
    }

    /// Whether calls currently try Redis (closed circuit).
    pub fn allow_without_probe(&self) -> bool {
        !self.open.load(Relaxed)
    }

    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.open.load(Relaxed)
    }

    pub fn success(&self, backend: &str) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        if self.open.load(Relaxed) {
            let mut s = self.lock();
            if self.open.swap(false, Relaxed) {
                s.cooldown = self.base_cooldown;
                s.probing = false;
                tracing::warn!(
                    backend,
                    "cachemacro: Redis answers again; cache back in use"
                );
            }
        }
    }

    pub fn failure(&self, backend: &str, error: &RedisError) {
        if matches!(error, RedisError::Open) {
            return;
        }
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        let mut s = self.lock();
        if s.probing {
            // The probe failed: stay open, wait longer.
            s.probing = false;
            s.cooldown = (s.cooldown * 2).min(self.max_cooldown);
            s.until = Instant::now() + s.cooldown;
        } else if n >= self.threshold && !self.open.load(Relaxed) {
            s.until = Instant::now() + s.cooldown;
            self.open.store(true, Relaxed);
            tracing::warn!(
                backend,
                %error,
                cooldown = ?s.cooldown,
                "cachemacro: Redis failing; calls go straight to the source until it answers again"
            );
        }
    }
}

/// One Redis backend: the default one, or one registered by name.
pub(crate) struct RedisBackend {
    pub name: String,
    pub urls: Vec<String>,
    pub prefix: String,
    pub local_tier: bool,
    pub cfg: Arc<Config>,
    pub breaker: Breaker,
    conn: OnceCell<Conn>,
    /// Warned already about an unusable value size.
    warned_size: AtomicBool,
    /// Connections on callers' runtimes (standalone servers only).
    locals: LocalConns,
    /// Requests in flight on this backend (picks the route).
    in_flight: std::sync::atomic::AtomicUsize,
    /// The tiered backplane of this backend (see [`crate::invalidate`]).
    pub backplane: crate::invalidate::Backplane,
}

static WRITE_IF_GENERATION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local g = redis.call('GET', KEYS[2])
        if (g or '0') ~= ARGV[1] then return 0 end
        redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
        return 1",
    )
});

static BUMP_GENERATION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local g = redis.call('INCR', KEYS[2])
        redis.call('PEXPIRE', KEYS[2], ARGV[1])
        if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
        return g",
    )
});

static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            redis.call('DEL', KEYS[1])
            redis.call('PUBLISH', ARGV[2], ARGV[3])
            return 1
        end
        return 0",
    )
});

static BUMP_TAG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local v = redis.call('INCR', KEYS[1])
        redis.call('PEXPIRE', KEYS[1], ARGV[1])
        return v",
    )
});

/// Above this many requests in flight, requests take the I/O thread's connection.
const BUSY: usize = 4;

/// Counts a request in flight for as long as it lives; `.0` is the count it found.
struct InFlight<'a>(usize, &'a std::sync::atomic::AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        Self(counter.fetch_add(1, Relaxed), counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Relaxed);
    }
}

thread_local! {
    /// Per thread: (backend, runtime, connection) for the runtime the thread runs.
    static LOCAL: std::cell::RefCell<Vec<(usize, tokio::runtime::Id, Conn)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Connections on the callers' own runtimes.
///
/// A request through the cache's I/O thread costs two cross-thread wake-ups; a connection
/// whose driver task runs on the caller's runtime costs none, which is most of a hit's
/// overhead over a raw `GET` with one task. But a runtime may lack the I/O or time driver
/// that redis-rs needs, and tokio only says so by panicking. So each runtime is *probed*
/// once: a task on it connects (and sets a timer). Until the probe succeeds, and forever if
/// it fails, that runtime's calls go through the I/O thread; nothing a caller awaits can
/// panic. (A probe on a runtime without drivers does print tokio's panic message once.)
/// A connection dies with its runtime; no other runtime uses it.
#[derive(Default)]
pub(crate) struct LocalConns {
    slots: Mutex<std::collections::HashMap<tokio::runtime::Id, Slot>>,
}

enum Slot {
    Probing,
    Ready(Conn),
    Unusable,
}

/// Runtimes remembered at most; beyond, the map starts over (old runtimes are gone).
const MAX_RUNTIMES: usize = 64;

impl LocalConns {
    fn get_or_probe(
        &self,
        backend: &Arc<RedisBackend>,
        handle: &tokio::runtime::Handle,
    ) -> Option<Conn> {
        let id = handle.id();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.get(&id) {
            Some(Slot::Ready(c)) => return Some(c.clone()),
            Some(Slot::Probing | Slot::Unusable) => return None,
            None => {}
        }
        if slots.len() >= MAX_RUNTIMES {
            slots.clear();
        }
        slots.insert(id, Slot::Probing);
        drop(slots);
        let b = backend.clone();
        let probe = handle.spawn(async move {
            tokio::time::sleep(Duration::ZERO).await; // panics without a time driver
            b.connect_here().await
        });
        let b = backend.clone();
        io::spawn(async move {
            let slot = match probe.await {
                Ok(Ok(conn)) => Some(Slot::Ready(conn)),
                Ok(Err(_)) => None, // Redis unreachable: probe again on a later call
                Err(_) => {
                    tracing::warn!(backend = %b.name, "cachemacro: this tokio runtime lacks the I/O or time driver (the panic above was a probe); its Redis calls go through cachemacro's own I/O thread");
                    Some(Slot::Unusable)
                }
            };
            let mut slots = b.locals.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slot {
                Some(s) => slots.insert(id, s),
                None => slots.remove(&id),
            };
        });
        None
    }
}

/// rustls needs a process-wide crypto provider; use ring unless the application installed
/// one already.
#[cfg(feature = "tls")]
fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Yes,
    /// The key was invalidated after the load started: the invalidation wins.
    GenerationMoved,
    /// Over `max_value_bytes`: not written.
    TooLarge,
}

/// What one read of a key found.
#[derive(Debug, Default)]
pub(crate) struct Read {
    pub value: Option<Vec<u8>>,
    pub generation: u64,
    pub tag_versions: Vec<u64>,
}

fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .is_some_and(|open| key[open + 1..].find('}').is_some_and(|len| len > 0))
}

fn parse_u64(v: &Option<Vec<u8>>) -> u64 {
    v.as_deref()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisBackend {
    pub fn new(name: &str, spec: &BackendConfig, cfg: Arc<Config>) -> Self {
        Self {
            name: name.to_owned(),
            urls: spec.urls.clone(),
            prefix: spec.prefix.clone().unwrap_or_else(|| cfg.prefix.clone()),
            local_tier: spec.local_tier,
            breaker: Breaker::new(
                cfg.breaker_failures,
                cfg.breaker_cooldown,
                cfg.breaker_max_cooldown,
            ),
            cfg,
            conn: OnceCell::new(),
            warned_size: AtomicBool::new(false),
            locals: LocalConns::default(),
            in_flight: Default::default(),
            backplane: Default::default(),
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.urls.len() > 1
    }

    /// The Redis key of a rendered cache key.
    pub fn value_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + key.len());
        k.push_str(&self.prefix);
        k.push_str(key);
        k
    }

    /// A key in the same cluster slot as `value_key`.
    pub fn sibling_key(value_key: &str, suffix: &str) -> String {
        if has_hash_tag(value_key) {
            format!("{value_key}:cm:{suffix}")
        } else {
            format!("{{{value_key}}}:cm:{suffix}")
        }
    }

    pub fn tag_key(&self, tag: &str) -> String {
        format!("{}cachemacro:tag:{tag}", self.prefix)
    }

    pub fn channel(&self) -> String {
        format!("{}cachemacro:invalidate", self.prefix)
    }

    async fn connect(&self) -> RedisResult<Conn> {
        let timeout = self.cfg.connect_timeout;
        if self.is_cluster() {
            #[allow(unused_mut)]
            let mut builder = redis::cluster::ClusterClient::builder(self.urls.clone())
                .connection_timeout(timeout)
                .response_timeout(self.cfg.op_timeout)
                .retries(1);
            #[cfg(feature = "tls")]
            if let Some(pem) = &self.cfg.tls_root_pem {
                install_crypto();
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                });
            }
            let client = builder.build()?;
            let conn = tokio::time::timeout(timeout * 2, client.get_async_connection())
                .await
                .map_err(|_| {
                    redis::RedisError::from((redis::ErrorKind::Io, "cluster connection timed out"))
                })??;
            Ok(Conn::Cluster(conn))
        } else {
            let client = self.client(&self.urls[0])?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(self.cfg.op_timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(20))
                .set_max_delay(Duration::from_millis(200));
            Ok(Conn::Single(ConnectionManager::new_lazy_with_config(
                client, config,
            )?))
        }
    }

    /// A connection created in the current runtime's context (its driver runs there),
    /// fully connected, within the connect timeout.
    async fn connect_here(&self) -> RedisResult<Conn> {
        let conn = self.connect().await?;
        let mut probe = conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<redis::Value>(&mut probe);
        match tokio::time::timeout(self.cfg.connect_timeout, ping).await {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "connect timed out",
            ))),
        }
    }

    /// A pub/sub connection to `url` subscribed to `channel`, within the connect timeout.
    pub async fn subscribe(&self, url: &str, channel: &str) -> RedisResult<redis::aio::PubSub> {
        let subscribed = async {
            let mut pubsub = self.client(url)?.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok(pubsub)
        };
        tokio::time::timeout(self.cfg.connect_timeout, subscribed)
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "subscribe timed out")))?
    }

    /// How long a listener waits before subscribing again after `failures` failures.
    pub fn resubscribe_backoff(failures: u32) -> Duration {
        Duration::from_millis(25u64 << failures.min(6)).min(Duration::from_secs(2))
    }

    /// A client for one server URL, with the configured TLS root if any.
    pub fn client(&self, url: &str) -> RedisResult<redis::Client> {
        #[cfg(feature = "tls")]
        if url.starts_with("rediss://") {
            install_crypto();
            if let Some(pem) = &self.cfg.tls_root_pem {
                return redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.clone()),
                    },
                );
            }
        }
        redis::Client::open(url)
    }

    /// A connection whose driver runs on the caller's own runtime, if that runtime has
    /// one ready (see [`LocalConns`]).
    fn local_conn(self: &Arc<Self>) -> Option<Conn> {
        if self.is_cluster() {
            return None;
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let id = handle.id();
        let me = Arc::as_ptr(self) as usize;
        let cached = LOCAL.with(|l| {
            l.borrow()
                .iter()
                .find(|(b, r, _)| *b == me && *r == id)
                .map(|(_, _, c)| c.clone())
        });
        if cached.is_some() {
            return cached;
        }
        let conn = self.locals.get_or_probe(self, &handle)?;
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            l.retain(|(b, _, _)| *b != me); // this thread moved to another runtime
            l.push((me, id, conn.clone()));
        });
        Some(conn)
    }

    /// Runs `f` on a connection, on the I/O runtime, within the operation timeout, through
    /// the breaker.
    pub async fn op<T, F, Fut>(self: &Arc<Self>, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.breaker.allow() {
            return Err(RedisError::Open);
        }
        let to_error = |e: redis::RedisError| {
            if e.is_timeout() {
                RedisError::Timeout
            } else {
                RedisError::Redis(e.to_string())
            }
        };
        let _in_flight = InFlight::enter(&self.in_flight);
        let busy = _in_flight.0 > BUSY;
        if let Some(conn) = (!busy).then(|| self.local_conn()).flatten() {
            // Few requests in flight, and the caller's runtime has a connection of its own:
            // no hop to the I/O thread, the lowest latency. Under load, the I/O thread's
            // driver batches many requests per wake-up and leaves the workers to callers.
            let result = io::guarded(f(conn))
                .await
                .unwrap_or_else(|| Err(redis::RedisError::from((redis::ErrorKind::Io, "panicked"))))
                .map_err(to_error);
            match &result {
                Ok(_) => self.breaker.success(&self.name),
                Err(e) => self.breaker.failure(&self.name, e),
            }
            return result;
        }
        let result = io::run(async move {
            let conn = match self.conn.get() {
                Some(c) => c.clone(),
                None => {
                    let connect = self.conn.get_or_try_init(|| self.connect());
                    match tokio::time::timeout(self.cfg.connect_timeout, connect).await {
                        Ok(Ok(c)) => c.clone(),
                        Ok(Err(e)) => return Err(RedisError::Redis(e.to_string())),
                        Err(_) => return Err(RedisError::Timeout),
                    }
                }
            };
            // Requests are bounded by the connection's response timeout (`op_timeout`), and
            // waits for a reconnect by its connection timeout.
            f(conn).await.map_err(to_error)
        })
        .await
        .unwrap_or_else(|| Err(RedisError::Redis("I/O task failed".into())));
        match &result {
            Ok(_) => self.breaker.success(&self.name),
            Err(e) => self.breaker.failure(&self.name, e),
        }
        result
    }

    /// `MGET keys` (split by slot on a cluster).
    async fn mget(self: &Arc<Self>, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, RedisError> {
        self.op(move |mut c| async move { redis::cmd("MGET").arg(&keys).query_async(&mut c).await })
            .await
    }

    /// `keys` followed by the version keys of `tags`.
    fn with_tag_keys(&self, mut keys: Vec<String>, tags: &[String]) -> Vec<String> {
        keys.extend(tags.iter().map(|t| self.tag_key(t)));
        keys
    }

    /// Reads a key's value and the versions of `tags` (the hit path): a `GET` without tags.
    pub async fn read_value(
        self: &Arc<Self>,
        key: &str,
        tags: &[String],
    ) -> Result<(Option<Vec<u8>>, Vec<u64>), RedisError> {
        let vk = self.value_key(key);
        if tags.is_empty() {
            return self
                .op(move |mut c| async move {
                    let v: Option<Vec<u8>> = redis::cmd("GET").arg(vk).query_async(&mut c).await?;
                    Ok((v, Vec::new()))
                })
                .await;
        }
        let mut got = self.mget(self.with_tag_keys(vec![vk], tags)).await?;
        let versions = got.iter().skip(1).map(parse_u64).collect();
        Ok((got.swap_remove(0), versions))
    }

    /// Reads a key, its generation and the versions of `tags`, in one round trip.
    pub async fn read(self: &Arc<Self>, key: &str, tags: &[String]) -> Result<Read, RedisError> {
        let vk = self.value_key(key);
        let keys = self.with_tag_keys(vec![Self::sibling_key(&vk, "gen"), vk], tags);
        let mut got = self.mget(keys).await?;
        let tag_versions = got.iter().skip(2).map(parse_u64).collect();
        Ok(Read {
            generation: parse_u64(&got[0]),
            value: got.swap_remove(1),
            tag_versions,
        })
    }

    /// The key's generation and the versions of `tags` (no value), in one round trip.
    pub async fn read_meta(
        self: &Arc<Self>,
        key: &str,
        tags: &[String],
    ) -> Result<Read, RedisError> {
        let gen_key = Self::sibling_key(&self.value_key(key), "gen");
        let got = self.mget(self.with_tag_keys(vec![gen_key], tags)).await?;
        Ok(Read {
            generation: parse_u64(&got[0]),
            value: None,
            tag_versions: got.iter().skip(1).map(parse_u64).collect(),
        })
    }

    /// Current versions of `tags`.
    pub async fn tag_versions(self: &Arc<Self>, tags: &[String]) -> Result<Vec<u64>, RedisError> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let got = self.mget(self.with_tag_keys(Vec::new(), tags)).await?;
        Ok(got.iter().map(parse_u64).collect())
    }

    /// Writes `bytes` for `ttl` unless the key's generation moved past `generation`.
    pub async fn write_if(
        self: &Arc<Self>,
        key: &str,
        bytes: Vec<u8>,
        ttl: Duration,
        generation: u64,
    ) -> Result<Written, RedisError> {
        if bytes.len() > self.cfg.max_value_bytes {
            if !self.warned_size.swap(true, Relaxed) {
                tracing::warn!(
                    backend = %self.name,
                    key,
                    bytes = bytes.len(),
                    limit = self.cfg.max_value_bytes,
                    "cachemacro: value over max_value_bytes is not written to Redis"
                );
            }
            return Ok(Written::TooLarge);
        }
        let vk = self.value_key(key);
        let gk = Self::sibling_key(&vk, "gen");
        self.op(move |mut c| async move {
            let written: i64 = WRITE_IF_GENERATION
                .key(vk)
                .key(gk)
                .arg(generation.to_string())
                .arg(bytes)
                .arg(ms(ttl))
                .invoke_async(&mut c)
                .await?;
            Ok(if written == 1 {
                Written::Yes
            } else {
                Written::GenerationMoved
            })
        })
        .await
    }

    /// Moves the key's generation on (loads in flight anywhere will not write) and, with
    /// `delete`, removes the value. Returns the new generation.
    pub async fn bump(self: &Arc<Self>, key: &str, delete: bool) -> Result<u64, RedisError> {
        let vk = self.value_key(key);
        let gk = Self::sibling_key(&vk, "gen");
        let retention = ms(self.cfg.generation_retention);
        self.op(move |mut c| async move {
            BUMP_GENERATION
                .key(vk)
                .key(gk)
                .arg(retention)
                .arg(if delete { "1" } else { "0" })
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// Moves a tag's version on: every value stored with the old version is a miss.
    pub async fn bump_tag(self: &Arc<Self>, tag: &str) -> Result<u64, RedisError> {
        let tk = self.tag_key(tag);
        let retention = ms(self.cfg.tag_retention);
        self.op(
            move |mut c| async move { BUMP_TAG.key(tk).arg(retention).invoke_async(&mut c).await },
        )
        .await
    }

    /// Takes the key's lock (`SET NX PX`) with a random token; `Ok(None)` if another holds it.
    pub async fn try_lock(self: &Arc<Self>, key: &str) -> Result<Option<u64>, RedisError> {
        let lk = Self::sibling_key(&self.value_key(key), "lock");
        let token = fastrand::u64(1..);
        let ttl = ms(self.cfg.lock_ttl);
        self.op(move |mut c| async move {
            let set: Option<String> = redis::cmd("SET")
                .arg(lk)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .query_async(&mut c)
                .await?;
            Ok(set.map(|_| token))
        })
        .await
    }

    /// Releases the key's lock if `token` still holds it (a holder whose lock expired never
    /// deletes another's), and wakes the processes waiting for it.
    pub async fn unlock(self: &Arc<Self>, key: &str, token: u64) -> Result<(), RedisError> {
        let lk = Self::sibling_key(&self.value_key(key), "lock");
        let channel = self.channel();
        let message = crate::invalidate::message('w', key);
        self.op(move |mut c| async move {
            UNLOCK
                .key(lk)
                .arg(token)
                .arg(channel)
                .arg(message)
                .invoke_async::<i64>(&mut c)
                .await
                .map(drop)
        })
        .await
    }

    /// Publishes an invalidation message on the backplane channel.
    pub async fn publish(self: &Arc<Self>, message: String) -> Result<(), RedisError> {
        let channel = self.channel();
        self.op(move |mut c| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async::<i64>(&mut c)
                .await
                .map(drop)
        })
        .await
    }

    /// Runs an arbitrary command (tests, tools).
    #[allow(dead_code)]
    pub async fn command<T: redis::FromRedisValue + Send + 'static>(
        self: &Arc<Self>,
        cmd: Cmd,
    ) -> Result<T, RedisError> {
        self.op(move |mut c| async move { cmd.query_async(&mut c).await })
            .await
    }
}

/// The process's Redis backends, created on first use: `""` is the default one.
fn registry() -> &'static Mutex<std::collections::HashMap<String, Arc<RedisBackend>>> {
    static BACKENDS: LazyLock<Mutex<std::collections::HashMap<String, Arc<RedisBackend>>>> =
        LazyLock::new(Default::default);
    &BACKENDS
}

/// The backend a policy names, created on first use. `Err` says why it cannot exist (an
/// unregistered name), in words for the log.
pub(crate) fn backend_for(backend: &crate::policy::Backend) -> Result<Arc<RedisBackend>, String> {
    use crate::policy::Backend;
    let cfg = crate::config::get();
    let (name, spec) = match backend {
        Backend::Memory => return Err("memory backend has no Redis".into()),
        Backend::Redis | Backend::Tiered => {
            let url = cfg.redis_urls.join(",");
            let spec = if *backend == Backend::Tiered {
                BackendConfig::tiered(url)
            } else {
                BackendConfig::redis(url)
            };
            (String::new(), spec)
        }
        Backend::Named(name) => match cfg.backends.get(*name) {
            Some(spec) => ((*name).to_owned(), spec.clone()),
            None => {
                return Err(format!(
                    "backend \"{name}\" is not registered: add it with Config::backend(\"{name}\", …) before the first call"
                ))
            }
        },
    };
    let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
    let shown = if name.is_empty() {
        "default"
    } else {
        name.as_str()
    };
    Ok(map
        .entry(name.clone())
        .or_insert_with(|| Arc::new(RedisBackend::new(shown, &spec, cfg.clone())))
        .clone())
}

/// Every backend in use, plus the default one when Redis was configured explicitly.
pub(crate) fn active_backends() -> Vec<Arc<RedisBackend>> {
    let configured = crate::config::redis_configured();
    let mut all: Vec<_> = registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    if all.is_empty() && configured {
        if let Ok(b) = backend_for(&crate::policy::Backend::Redis) {
            all.push(b);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_keys_share_the_value_keys_slot() {
        assert_eq!(
            RedisBackend::sibling_key("user:42", "gen"),
            "{user:42}:cm:gen"
        );
        assert_eq!(RedisBackend::sibling_key("a{x}b", "lock"), "a{x}b:cm:lock");
        assert_eq!(RedisBackend::sibling_key("a{}b", "gen"), "{a{}b}:cm:gen");
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_lets_one_probe_through() {
        let b = Breaker::new(3, Duration::from_millis(30), Duration::from_secs(1));
        let e = RedisError::Timeout;
        b.failure("t", &e);
        b.failure("t", &e);
        assert!(b.allow() && !b.is_open());
        b.failure("t", &e);
        assert!(b.is_open());
        assert!(!b.allow(), "open: not tried");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "cooldown over: one probe");
        assert!(!b.allow(), "only one probe at a time");
        b.failure("t", &e);
        assert!(!b.allow(), "probe failed: open again, longer");
        std::thread::sleep(Duration::from_millis(70));
        assert!(b.allow());
        b.success("t");
        assert!(!b.is_open() && b.allow() && b.allow());
    }
}

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

    /// Whether to try Redis now: a permit, or `None` while the circuit is open. While open,
    /// one caller per cooldown gets a *probe* permit. A permit dropped without a verdict
    /// (its caller was cancelled: a request timeout, a client gone) lets the next call
    /// probe at once, so a cancelled probe never keeps the circuit open.
    pub fn allow(&self) -> Option<Permit<'_>> {
        if !self.open.load(Relaxed) {
            return Some(Permit {
                breaker: self,
                probe: false,
            });
        }
        let mut s = self.lock();
        if !s.probing && Instant::now() >= s.until {
            s.probing = true;
            return Some(Permit {
                breaker: self,
                probe: true,
            });
        }
        None
    }

    /// When the next probe may run, while the circuit is open.
    fn next_probe(&self) -> Option<Instant> {
        self.open.load(Relaxed).then(|| self.lock().until)
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

/// What a followed channel says (see [`RedisBackend::follow`]).
pub(crate) enum Signal<'a> {
    /// Subscribed; `again` after a loss.
    Up { again: bool },
    /// A message on the channel.
    Message(&'a str),
    /// The subscription was lost, or (with the error) could not be made.
    Down(Option<&'a str>),
}

/// The right to try one Redis operation (see [`Breaker::allow`]).
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    /// This operation probes an open circuit.
    probe: bool,
}

impl Permit<'_> {
    /// Records how the operation went.
    pub fn record<T>(mut self, backend: &str, result: &Result<T, RedisError>) {
        self.probe = false; // a verdict: nothing for `drop` to undo
        match result {
            Ok(_) => self.breaker.success(backend),
            Err(e) => self.breaker.failure(backend, e),
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            // The probe's caller went away before Redis answered: no verdict. Let the next
            // call probe instead of waiting for a verdict that will never come.
            let mut s = self.breaker.lock();
            if s.probing {
                s.probing = false;
                s.until = Instant::now();
            }
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
    /// Found to be a cluster although given one URL.
    cluster: AtomicBool,
    /// A task probes the open circuit (see [`RedisBackend::watch_breaker`]).
    watching: AtomicBool,
    /// Warned already about an unusable value size.
    warned_size: AtomicBool,
    /// Connections on callers' runtimes (standalone servers only).
    locals: LocalConns,
    /// Requests in flight on this backend (picks the route).
    in_flight: std::sync::atomic::AtomicUsize,
    /// The tiered backplane of this backend (see [`crate::invalidate`]).
    pub backplane: crate::invalidate::Backplane,
    /// The key templates of the functions on this backend: (template, `name` option, name
    /// in stats).
    keyspace: Mutex<Vec<(&'static str, Option<&'static str>, String)>>,
    /// Functions found to share keys by accident (see [`RedisBackend::claim_keys`]).
    pub conflicts: Mutex<Vec<String>>,
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

/// Moves a generation or a tag version on. Versions never repeat for a key, even after
/// the key expired and was forgotten: the new version is the larger of the old one + 1 and
/// the server's clock in microseconds, so it is always past every version handed out
/// before (INCR would restart at 1 and make an invalidated value valid again).
const NEXT_VERSION: &str = r"
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local v = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
    local n = v + 1
    if n < now then n = now end
    redis.call('SET', KEYS[2], string.format('%.0f', n), 'PX', ARGV[1])";

static BUMP_GENERATION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NEXT_VERSION}
        if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
        return n"
    ))
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

/// `KEYS[1]` is unused (the script's key list is shaped like [`BUMP_GENERATION`]'s).
static BUMP_TAG: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{NEXT_VERSION}\n        return n")));

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
            cluster: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            warned_size: AtomicBool::new(false),
            locals: LocalConns::default(),
            in_flight: Default::default(),
            backplane: Default::default(),
            keyspace: Default::default(),
            conflicts: Default::default(),
        }
    }

    /// Records that a function keys its values on this backend with `template`. If another
    /// function's template can render the same keys (and the two do not share a `name` on
    /// purpose), they would read and overwrite each other's values: say so loudly, in the
    /// log and in [`crate::health`].
    pub fn claim_keys(&self, template: &'static str, name: Option<&'static str>, shown: String) {
        let mut keyspace = self.keyspace.lock().unwrap_or_else(|e| e.into_inner());
        for (other, other_name, other_shown) in keyspace.iter() {
            if name.is_some() && name == *other_name {
                continue; // the same `name`: sharing entries is the point
            }
            if crate::key::templates_overlap(other, template) {
                let conflict = format!(
                    "`{shown}` (key \"{template}\") and `{other_shown}` (key \"{other}\") can render the same keys on backend `{}`, so they would read and overwrite each other's values: give one of them a distinct key, or both the same `name = \"…\"` if they are meant to share entries",
                    self.name
                );
                tracing::error!("cachemacro: {conflict}");
                self.conflicts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(conflict);
            }
        }
        keyspace.push((template, name, shown));
    }

    /// Whether this backend is a Redis Cluster: several seed URLs, or one URL of a server
    /// that said `cluster_enabled:1` when first connected.
    pub fn is_cluster(&self) -> bool {
        self.urls.len() > 1 || self.cluster.load(Relaxed)
    }

    /// The Redis key of a rendered cache key.
    pub fn value_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + key.len());
        k.push_str(&self.prefix);
        k.push_str(key);
        k
    }

    /// A key of the cache's own in the same cluster slot as `value_key` (see
    /// [`super::keys`]).
    pub fn sibling_key(value_key: &str, suffix: &str) -> String {
        super::keys::sibling(value_key, suffix)
    }

    pub fn tag_key(&self, tag: &str) -> String {
        super::keys::tag(&self.prefix, tag)
    }

    pub fn channel(&self) -> String {
        format!("{}cachemacro:invalidate", self.prefix)
    }

    /// TCP settings of every connection: keepalive probes, so a connection whose peer
    /// vanished (a half-open connection: a crashed host, a dropped NAT entry) is noticed
    /// even while idle, and a bound on unacknowledged data.
    fn tcp_settings(&self) -> redis::io::tcp::TcpSettings {
        use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
        let keepalive = TcpKeepalive::new()
            .with_time(Duration::from_secs(10))
            .with_interval(Duration::from_secs(5))
            .with_retries(3);
        let settings = TcpSettings::default()
            .set_nodelay(true)
            .set_keepalive(keepalive);
        #[cfg(target_os = "linux")]
        let settings = settings.set_user_timeout(Duration::from_secs(30));
        settings
    }

    /// Whether the server at `url` runs in cluster mode (`INFO cluster`).
    async fn cluster_enabled(&self, url: &str) -> RedisResult<bool> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.cfg.connect_timeout))
            .set_response_timeout(Some(self.cfg.op_timeout.max(Duration::from_millis(500))));
        let mut c = self
            .client(url)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut c)
            .await?;
        Ok(info.contains("cluster_enabled:1"))
    }

    async fn connect(&self) -> RedisResult<Conn> {
        let timeout = self.cfg.connect_timeout;
        if self.urls.len() == 1 && !self.is_cluster() && self.cluster_enabled(&self.urls[0]).await?
        {
            tracing::info!(backend = %self.name, "cachemacro: the Redis URL is a cluster node; using Redis Cluster");
            self.cluster.store(true, Relaxed);
        }
        if self.is_cluster() {
            let mut seeds = Vec::with_capacity(self.urls.len());
            for url in &self.urls {
                seeds.push(
                    redis::IntoConnectionInfo::into_connection_info(url.as_str())?
                        .set_tcp_settings(self.tcp_settings()),
                );
            }
            #[allow(unused_mut)]
            let mut builder = redis::cluster::ClusterClient::builder(seeds)
                .tcp_settings(self.tcp_settings())
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

    /// Follows `channel` for as long as the returned future is polled: subscribes (trying
    /// each URL in turn), pings every `heartbeat` and resubscribes (with a growing backoff)
    /// when a ping is not answered within a heartbeat or the connection drops. So a
    /// half-open connection, silent but not closed, is noticed within two heartbeats.
    /// `on` hears every change and every message, in order.
    pub async fn follow(self: Arc<Self>, channel: String, mut on: impl FnMut(Signal<'_>) + Send) {
        use futures_util::StreamExt;
        let heartbeat = self.cfg.heartbeat;
        let mut failures: u32 = 0;
        let mut next_url = 0;
        loop {
            let url = self.urls[next_url % self.urls.len()].clone();
            next_url += 1;
            match self.subscribe(&url, &channel).await {
                Ok(pubsub) => {
                    let (mut sink, mut stream) = pubsub.split();
                    on(Signal::Up {
                        again: failures > 0,
                    });
                    failures = 0;
                    loop {
                        tokio::select! {
                            msg = stream.next() => match msg {
                                Some(msg) => {
                                    if let Ok(payload) = msg.get_payload::<String>() {
                                        on(Signal::Message(&payload));
                                    }
                                }
                                None => break,
                            },
                            _ = tokio::time::sleep(heartbeat) => {
                                let ping = tokio::time::timeout(heartbeat, sink.ping::<redis::Value>()).await;
                                if !matches!(ping, Ok(Ok(_))) {
                                    break;
                                }
                            }
                        }
                    }
                    on(Signal::Down(None));
                }
                Err(e) => {
                    if failures == 0 {
                        on(Signal::Down(Some(&e.to_string())));
                    }
                }
            }
            failures = failures.saturating_add(1);
            tokio::time::sleep(Self::resubscribe_backoff(failures)).await;
        }
    }

    /// How long a listener waits before subscribing again after `failures` failures.
    pub fn resubscribe_backoff(failures: u32) -> Duration {
        Duration::from_millis(25u64 << failures.min(6)).min(Duration::from_secs(2))
    }

    /// A client for one server URL, with the configured TLS root if any, and the cache's
    /// TCP settings.
    pub fn client(&self, url: &str) -> RedisResult<redis::Client> {
        let info = redis::IntoConnectionInfo::into_connection_info(url)?
            .set_tcp_settings(self.tcp_settings());
        #[cfg(feature = "tls")]
        if url.starts_with("rediss://") {
            install_crypto();
            if let Some(pem) = &self.cfg.tls_root_pem {
                return redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.clone()),
                    },
                );
            }
        }
        redis::Client::open(info)
    }

    /// A connection whose driver runs on the caller's own runtime, if that runtime has
    /// one ready (see [`LocalConns`]).
    fn local_conn(self: &Arc<Self>) -> Option<Conn> {
        if self.is_cluster() || io::on_io_runtime() {
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
        let Some(permit) = self.breaker.allow() else {
            return Err(RedisError::Open);
        };
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
            permit.record(&self.name, &result);
            self.watch_breaker();
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
        permit.record(&self.name, &result);
        self.watch_breaker();
        result
    }

    /// While the circuit is open, a task of the cache's own probes Redis (a `PING`) each
    /// time the cool-down ends, so the circuit closes as soon as Redis answers, whether or
    /// not any call needs Redis (a tiered function whose every call is an L1 hit never
    /// would), and `health()` says so.
    fn watch_breaker(self: &Arc<Self>) {
        if self.breaker.allow_without_probe() || self.watching.swap(true, Relaxed) {
            return;
        }
        let this = self.clone();
        io::spawn(async move {
            while let Some(at) = this.breaker.next_probe() {
                let wait = at.saturating_duration_since(Instant::now());
                tokio::time::sleep(wait + Duration::from_millis(1)).await;
                let _ = this.command::<redis::Value>(redis::cmd("PING")).await;
            }
            this.watching.store(false, Relaxed);
            // Opened again between the last check and the flag: watch again.
            this.watch_breaker();
        });
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
        self.op(move |mut c| async move {
            BUMP_TAG
                .key(&tk)
                .key(&tk)
                .arg(retention)
                .invoke_async(&mut c)
                .await
        })
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

    /// Runs an arbitrary command.
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
    Ok(get_or_create(&name, &spec, &cfg))
}

/// The backend registered as `name` (`""` for the default), created on first use.
fn get_or_create(name: &str, spec: &BackendConfig, cfg: &Arc<Config>) -> Arc<RedisBackend> {
    let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
    let shown = if name.is_empty() { "default" } else { name };
    map.entry(name.to_owned())
        .or_insert_with(|| Arc::new(RedisBackend::new(shown, spec, cfg.clone())))
        .clone()
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
    if configured && !all.iter().any(|b| b.name == "default") {
        if let Ok(b) = backend_for(&crate::policy::Backend::Redis) {
            all.push(b);
        }
    }
    all
}

/// What an operation that must reach every backend reaches: every backend in use, the
/// default one when Redis was configured, and every named backend of the configuration,
/// whether or not a function used it yet.
pub(crate) fn configured_backends() -> Vec<Arc<RedisBackend>> {
    let mut all = active_backends();
    let cfg = crate::config::get();
    let mut names: Vec<&String> = cfg.backends.keys().collect();
    names.sort();
    for name in names {
        if all.iter().any(|b| &b.name == name) {
            continue;
        }
        if let Some(spec) = cfg.backends.get(name) {
            all.push(get_or_create(name, spec, &cfg));
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_lets_one_probe_through() {
        let b = Breaker::new(3, Duration::from_millis(30), Duration::from_secs(1));
        let e = RedisError::Timeout;
        b.failure("t", &e);
        b.failure("t", &e);
        assert!(b.allow().is_some() && !b.is_open());
        b.failure("t", &e);
        assert!(b.is_open());
        assert!(b.allow().is_none(), "open: not tried");
        std::thread::sleep(Duration::from_millis(40));
        let probe = b.allow().expect("cooldown over: one probe");
        assert!(b.allow().is_none(), "only one probe at a time");
        probe.record("t", &Err::<(), _>(e.clone()));
        assert!(b.allow().is_none(), "probe failed: open again, longer");
        std::thread::sleep(Duration::from_millis(70));
        let probe = b.allow().expect("a probe");
        probe.record("t", &Ok::<(), RedisError>(()));
        assert!(!b.is_open() && b.allow().is_some() && b.allow().is_some());
    }

    #[test]
    fn a_cancelled_probe_does_not_keep_the_circuit_open() {
        let b = Breaker::new(1, Duration::from_millis(20), Duration::from_secs(1));
        b.failure("t", &RedisError::Timeout);
        assert!(b.is_open());
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.allow().expect("cooldown over: one probe");
        drop(probe); // its caller was cancelled before Redis answered
        let probe = b.allow().expect("the next call probes at once");
        probe.record("t", &Ok::<(), RedisError>(()));
        assert!(!b.is_open(), "Redis answered: closed");
    }
}

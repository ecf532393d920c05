//! Connections: the I/O thread's (standalone `ConnectionManager` or a cluster client), one
//! per caller runtime for low latency, the route between them, and the circuit breaker
//! around every operation.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::RedisTier;
use crate::io;
use crate::tier::TierError;

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

/// Records how long an operation took, however it ends (a cancelled one included).
struct Timed<'a>(std::time::Instant, &'a crate::stats::Histogram);

impl<'a> Timed<'a> {
    fn start(h: &'a crate::stats::Histogram) -> Self {
        Self(std::time::Instant::now(), h)
    }
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.1
            .record(u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
}

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
        backend: &Arc<RedisTier>,
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

impl RedisTier {
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
    fn local_conn(&self) -> Option<Conn> {
        if self.is_cluster() || io::on_io_runtime() {
            return None;
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let id = handle.id();
        let me = self as *const Self as usize;
        let cached = LOCAL.with(|l| {
            l.borrow()
                .iter()
                .find(|(b, r, _)| *b == me && *r == id)
                .map(|(_, _, c)| c.clone())
        });
        if cached.is_some() {
            return cached;
        }
        let conn = self.locals.get_or_probe(&self.arc(), &handle)?;
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            l.retain(|(b, _, _)| *b != me); // this thread moved to another runtime
            l.push((me, id, conn.clone()));
        });
        Some(conn)
    }

    /// Runs `f` on a connection, on the I/O runtime, within the operation timeout, through
    /// the breaker.
    pub async fn op<T, F, Fut>(&self, f: F) -> Result<T, TierError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(permit) = self.breaker.allow() else {
            return Err(TierError::Open);
        };
        self.with_permit(permit, f).await
    }

    /// [`Self::op`] under a permit already taken (the breaker's probe).
    pub(super) async fn with_permit<T, F, Fut>(
        &self,
        permit: crate::tier::breaker::Permit<'_>,
        f: F,
    ) -> Result<T, TierError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let to_error = |e: redis::RedisError| {
            if e.is_timeout() {
                TierError::Timeout
            } else {
                TierError::Failed(e.to_string())
            }
        };
        let _in_flight = InFlight::enter(&self.in_flight);
        let _timed = Timed::start(&self.op_latency);
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
                        Ok(Err(e)) => return Err(TierError::Failed(e.to_string())),
                        Err(_) => return Err(TierError::Timeout),
                    }
                }
            };
            // Requests are bounded by the connection's response timeout (`op_timeout`), and
            // waits for a reconnect by its connection timeout.
            f(conn).await.map_err(to_error)
        })
        .await
        .unwrap_or_else(|| Err(TierError::Failed("I/O task failed".into())));
        permit.record(&self.name, &result);
        self.watch_breaker();
        result
    }
}

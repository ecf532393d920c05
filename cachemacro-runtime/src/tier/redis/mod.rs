//! The Redis tier: standalone (redis-rs `ConnectionManager`, reconnecting) or Redis Cluster
//! (`cluster-async`), every operation bounded by a timeout and guarded by a circuit breaker.
//! It stores bytes and runs the few Lua scripts that make its guarantees atomic.
//!
//! | file | owns |
//! |---|---|
//! | `client.rs` | connections: the I/O thread's, one per caller runtime, routing between them, TCP settings, cluster detection |
//! | `watch.rs` | the task that probes the circuit breaker (`tier/breaker.rs`) while open |
//! | `commands.rs` | reads, conditional writes, generations and tag versions (Lua) |
//! | `lock.rs` | the per-key distributed lock |
//! | `subscribe.rs` | one resubscribing, heartbeating subscription (backplane and events) |
//! | `keys.rs` | where the cache's own keys live, and cluster slots |
//! | `scopes.rs` | a semantic function's scopes (feature `semantic`) |
//!
//! Every operation runs in the context of the crate's own I/O runtime ([`crate::io`]), so
//! connections outlive the runtimes of the callers that use them.

mod client;
mod commands;
pub(crate) mod keys;
mod lock;
#[cfg(feature = "semantic")]
mod scopes;
mod subscribe;
mod watch;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::coherence::{Backplane, Message, Signal};
use crate::config::{BackendConfig, Config};

use super::{Following, Keyspace, Read, Tier, TierFuture, TierInfo, Written};
use crate::tier::breaker::Breaker;
use client::{Conn, LocalConns};

/// One Redis backend: the default one, or one registered by name.
pub(crate) struct RedisTier {
    name: String,
    urls: Vec<String>,
    prefix: String,
    local_tier: bool,
    cfg: Arc<Config>,
    breaker: Breaker,
    /// This tier, for the tasks it starts.
    me: Weak<RedisTier>,
    conn: OnceCell<Conn>,
    /// Found to be a cluster although given one URL.
    cluster: AtomicBool,
    /// A task probes the open circuit (see `breaker.rs`).
    watching: AtomicBool,
    /// Warned already about an unusable value size.
    warned_size: AtomicBool,
    /// Connections on callers' runtimes (standalone servers only).
    locals: LocalConns,
    /// Requests in flight on this backend (picks the route).
    in_flight: std::sync::atomic::AtomicUsize,
    backplane: Backplane,
    keyspace: Keyspace,
    /// How long operations took, as this process saw them.
    op_latency: crate::stats::Histogram,
    /// What the server last said of its memory and evictions (`INFO`), polled while the
    /// tier is in use.
    server: std::sync::Mutex<ServerInfo>,
    /// Wakes the breaker's watcher early (the subscription connected again: Redis answers).
    probe_now: tokio::sync::Notify,
}

/// What `INFO` said.
#[derive(Debug, Default, Clone)]
struct ServerInfo {
    evicted_keys: Option<u64>,
    eviction_policy: Option<String>,
    /// Started polling.
    polling: bool,
}

impl RedisTier {
    pub fn new(name: &str, spec: &BackendConfig, cfg: Arc<Config>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
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
            me: me.clone(),
            conn: OnceCell::new(),
            cluster: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            warned_size: AtomicBool::new(false),
            locals: LocalConns::default(),
            in_flight: Default::default(),
            backplane: Backplane::default(),
            keyspace: Keyspace::default(),
            op_latency: Default::default(),
            server: Default::default(),
            probe_now: Default::default(),
        })
    }

    /// Polls `INFO` every few seconds while the process lives (started by the first
    /// `health()`): the server's evictions and eviction policy. A server that evicts
    /// nothing when full (`noeviction`) makes cache writes fail instead: warned once.
    fn poll_server(&self) {
        {
            let mut s = self.server.lock().unwrap_or_else(|e| e.into_inner());
            if std::mem::replace(&mut s.polling, true) {
                return;
            }
        }
        let this = self.arc();
        crate::io::spawn(async move {
            let mut warned = false;
            loop {
                if this.breaker.allow_without_probe() && !this.is_cluster() {
                    let info = this
                        .op(|mut c| async move {
                            redis::cmd("INFO")
                                .arg("stats")
                                .arg("memory")
                                .query_async::<String>(&mut c)
                                .await
                        })
                        .await;
                    if let Ok(text) = info {
                        let field = |name: &str| {
                            text.lines()
                                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                                .map(|v| v.trim().to_owned())
                        };
                        let evicted = field("evicted_keys").and_then(|v| v.parse().ok());
                        let policy = field("maxmemory_policy");
                        if policy.as_deref() == Some("noeviction") && !warned {
                            warned = true;
                            tracing::warn!(backend = %this.name, "cachemacro: Redis maxmemory-policy is noeviction: when Redis is full, cache writes fail instead of evicting old entries; use allkeys-lru or allkeys-lfu for a cache");
                        }
                        let mut s = this.server.lock().unwrap_or_else(|e| e.into_inner());
                        s.evicted_keys = evicted;
                        s.eviction_policy = policy;
                    }
                }
                crate::io::sleep(Duration::from_secs(5)).await;
            }
        });
    }

    /// This tier, owned (for tasks that outlive a call).
    fn arc(&self) -> Arc<Self> {
        self.me
            .upgrade()
            .expect("a RedisTier is always owned by an Arc")
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
        keys::sibling(value_key, suffix)
    }

    pub fn tag_key(&self, tag: &str) -> String {
        keys::tag(&self.prefix, tag)
    }

    fn channel_name(&self) -> String {
        format!("{}cachemacro:invalidate", self.prefix)
    }
}

impl Tier for RedisTier {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> TierInfo {
        self.poll_server();
        let s = self
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        TierInfo {
            op_latency: Some(self.op_latency.snapshot()),
            evicted_keys: s.evicted_keys,
            eviction_policy: s.eviction_policy,
        }
    }

    fn config(&self) -> &Config {
        &self.cfg
    }

    fn local_tier(&self) -> bool {
        self.local_tier
    }

    fn backplane(&self) -> &Backplane {
        &self.backplane
    }

    fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    fn reachable(&self) -> bool {
        self.breaker.allow_without_probe()
    }

    fn channel(&self) -> String {
        self.channel_name()
    }

    fn follow(
        self: Arc<Self>,
        channel: String,
        on: Box<dyn FnMut(Signal<'_>) + Send>,
    ) -> Option<Following> {
        Some(Box::pin(self.follow_channel(channel, on)))
    }

    fn get<'a>(&'a self, key: &'a str, tags: &'a [String]) -> TierFuture<'a, Read> {
        Box::pin(self.get_value(key, tags))
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [&'a str],
        tags: &'a [String],
    ) -> TierFuture<'a, crate::tier::Many> {
        Box::pin(self.get_values(keys, tags))
    }

    fn read<'a>(&'a self, key: &'a str, tags: &'a [String]) -> TierFuture<'a, Read> {
        Box::pin(self.read_all(key, tags))
    }

    fn versions<'a>(&'a self, key: &'a str, tags: &'a [String]) -> TierFuture<'a, Read> {
        Box::pin(self.read_versions(key, tags))
    }

    fn tag_versions<'a>(&'a self, tags: &'a [String]) -> TierFuture<'a, Vec<u64>> {
        Box::pin(self.read_tag_versions(tags))
    }

    fn result_tag_versions<'a>(
        &'a self,
        tags: &'a [String],
        within: Duration,
    ) -> TierFuture<'a, Option<Vec<u64>>> {
        Box::pin(self.recent_tag_versions(tags, within))
    }

    fn write_if<'a>(
        &'a self,
        key: &'a str,
        bytes: Vec<u8>,
        ttl: Duration,
        generation: u64,
    ) -> TierFuture<'a, Written> {
        Box::pin(self.write_if_generation(key, bytes, ttl, generation))
    }

    fn bump<'a>(&'a self, key: &'a str, delete: bool) -> TierFuture<'a, u64> {
        Box::pin(self.bump_generation(key, delete))
    }

    fn bump_tag<'a>(&'a self, tag: &'a str) -> TierFuture<'a, u64> {
        Box::pin(self.bump_tag_version(tag))
    }

    fn try_lock<'a>(&'a self, key: &'a str, token: u64) -> TierFuture<'a, bool> {
        Box::pin(self.lock(key, token))
    }

    fn unlock(&self, key: String, token: u64) {
        let this = self.arc();
        crate::io::spawn(async move {
            let _ = this.unlock_now(&key, token).await;
        });
    }

    fn publish<'a>(&'a self, message: Message<'a>) -> TierFuture<'a, ()> {
        Box::pin(self.publish_text(message.encode()))
    }

    #[cfg(feature = "semantic")]
    fn holds_scopes(&self) -> bool {
        true
    }

    #[cfg(feature = "semantic")]
    fn scope_entries<'a>(&'a self, key: &'a str) -> TierFuture<'a, Vec<(String, Vec<u8>)>> {
        Box::pin(self.scope_all(key))
    }

    #[cfg(feature = "semantic")]
    fn scope_entry<'a>(&'a self, key: &'a str, id: &'a str) -> TierFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.scope_one(key, id))
    }

    #[cfg(feature = "semantic")]
    fn scope_put<'a>(
        &'a self,
        key: &'a str,
        id: &'a str,
        bytes: Vec<u8>,
        ttl: Duration,
        max: usize,
        generation: u64,
    ) -> TierFuture<'a, Written> {
        Box::pin(self.scope_write(key, id, bytes, ttl, max, generation))
    }

    #[cfg(feature = "semantic")]
    fn scope_remove<'a>(&'a self, key: &'a str, id: &'a str) -> TierFuture<'a, ()> {
        Box::pin(self.scope_delete(key, id))
    }
}

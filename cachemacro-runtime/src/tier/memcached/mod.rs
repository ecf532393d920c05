//! The Memcached tier (feature `memcached`): the [`Tier`] trait on Memcached's primitives,
//! over a small client of its meta text protocol (memcached 1.6 or newer) on tokio TCP.
//!
//! | guarantee | on Redis | here |
//! |---|---|---|
//! | an invalidation during a load wins | a generation key, checked by a Lua script | the value's own item: a load reads its CAS value (`mg … c`) and writes with it (`ms … C<cas>`, or in add mode `ME` when there was no item); an invalidation replaces the item with a *tombstone* (client flags [`TOMBSTONE`], kept `generation_retention`), which changes its CAS, so the load's write fails |
//! | invalidation | a generation bump | the tombstone: its CAS is the new generation |
//! | tags | version keys, `MGET` | version keys (`ma` with auto-create, a fresh start at the clock in µs), read with the value in one pipelined multi-get per server |
//! | lock, XFetch's try-lock | `SET NX PX` + compare-and-delete | `ms … ME` (add) with the token and an expiry; released by `mg … c`, then `md … C<cas>` if the token still holds it |
//! | soft TTL, hard TTL | in the envelope | the same envelope; the item's own expiry is the hard TTL in whole seconds, rounded up, plus one (memcached's clock ticks in seconds) |
//! | oversized values | refused, counted | refused over `max_value_bytes` (1 MiB default) or when the server refuses the item (`-I`), counted |
//! | coherence of other processes' L1 | pub/sub | none: Memcached has no pub/sub. `backend = memcached` keeps no L1; a backend registered with `BackendConfig::memcached_tiered(url, l1_ttl)` does, and serves each L1 copy for at most `l1_ttl` after this process read or loaded it (an invalidation elsewhere reaches this process's L1 within `l1_ttl`; its own invalidations drop its L1 at once) |
//!
//! Several servers: each key goes to one, by jump consistent hashing (Lamping & Veach) of a
//! stable hash of the key; a lock lives with its value, each tag version on its own
//! server. A server that fails is not replaced by another (that would split a key's copies
//! between two servers): its keys go to the source while it is down. Each server has its own
//! circuit breaker, so one dead server costs its own keys nothing more than a skipped call.
//!
//! A PUT or refresh (`*_put`, `*_refresh`) also goes through a tombstone: between it and
//! the new value's write, a reader sees a miss.

mod client;
mod proto;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::coherence::{Backplane, Message, Signal};
use crate::config::{BackendConfig, Config};
use crate::tier::breaker::Breaker;

use super::{Following, Keyspace, Read, Tier, TierError, TierFuture, TierInfo, Written};
use client::Server;
use proto::{parse_u64, ttl_secs, Request, Response};

/// The client flags of a tombstone: an invalidated key's item, read as a miss.
pub(crate) const TOMBSTONE: u32 = 0x434d_5442; // "CMTB"

/// One Memcached backend: the default one (`backend = memcached`) or one registered by
/// name.
pub(crate) struct MemcachedTier {
    name: String,
    prefix: String,
    local_tier: bool,
    l1_ttl: Option<Duration>,
    cfg: Arc<Config>,
    servers: Vec<Node>,
    me: Weak<MemcachedTier>,
    warned_size: AtomicBool,
    backplane: Backplane,
    keyspace: Keyspace,
    op_latency: crate::stats::Histogram,
}

/// A server and its breaker.
struct Node {
    server: Server,
    breaker: Breaker,
    /// A task probes the open circuit.
    watching: AtomicBool,
}

/// Where a key lives and how it is asked for.
struct Ask {
    server: usize,
    key: Vec<u8>,
}

impl MemcachedTier {
    pub fn new(name: &str, spec: &BackendConfig, cfg: Arc<Config>) -> Arc<Self> {
        let servers = spec
            .urls
            .iter()
            .map(|url| Node {
                server: Server::new(url),
                breaker: Breaker::new(
                    cfg.breaker_failures,
                    cfg.breaker_cooldown,
                    cfg.breaker_max_cooldown,
                )
                .for_store("Memcached"),
                watching: AtomicBool::new(false),
            })
            .collect();
        Arc::new_cyclic(|me| Self {
            name: name.to_owned(),
            prefix: spec.prefix.clone().unwrap_or_else(|| cfg.prefix.clone()),
            local_tier: spec.local_tier,
            l1_ttl: spec.l1_ttl,
            cfg,
            servers,
            me: me.clone(),
            warned_size: AtomicBool::new(false),
            backplane: Backplane::default(),
            keyspace: Keyspace::default(),
            op_latency: Default::default(),
        })
    }

    fn arc(&self) -> Arc<Self> {
        self.me
            .upgrade()
            .expect("a MemcachedTier is always owned by an Arc")
    }

    fn place(&self, key: &[u8]) -> usize {
        proto::jump(proto::hash(key), self.servers.len())
    }

    /// The item of a value.
    fn value(&self, key: &str) -> Ask {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(key.as_bytes());
        Ask {
            server: self.place(&k),
            key: k,
        }
    }

    /// The item of a value's lock: with the value, on its server. Its key contains a
    /// space, which no value key does (docs/FORMAT.md).
    fn lock_item(&self, key: &str) -> Ask {
        let mut v = self.value(key);
        v.key.extend_from_slice(b" lock");
        v
    }

    /// The item of a tag's version.
    fn tag(&self, tag: &str) -> Ask {
        let k = format!("{}cm:tag {tag}", self.prefix).into_bytes();
        Ask {
            server: self.place(&k),
            key: k,
        }
    }

    /// Runs one request on each of the servers named (in turn), under their breakers and
    /// the operation timeout; the responses in the same order.
    async fn op(&self, requests: Vec<(usize, Request)>) -> Result<Vec<Vec<Response>>, TierError> {
        let _timed = Timed::start(&self.op_latency);
        let mut out = Vec::with_capacity(requests.len());
        for (server, request) in requests {
            let node = &self.servers[server];
            let Some(permit) = node.breaker.allow() else {
                return Err(TierError::Open);
            };
            let result = node
                .server
                .exchange(&request, self.cfg.op_timeout, self.cfg.connect_timeout)
                .await;
            permit.record(&self.name, &result);
            self.watch_breaker(server);
            out.push(result?);
        }
        Ok(out)
    }

    /// While a server's circuit is open, a task probes it (`mn`) each time the cool-down
    /// ends, so it closes as soon as the server answers.
    fn watch_breaker(&self, server: usize) {
        let node = &self.servers[server];
        if node.breaker.allow_without_probe() || node.watching.swap(true, Relaxed) {
            return;
        }
        let this = self.arc();
        crate::io::spawn(async move {
            let node = &this.servers[server];
            while let Some(at) = node.breaker.next_probe() {
                let wait = at.saturating_duration_since(Instant::now());
                tokio::time::sleep(wait + Duration::from_millis(1)).await;
                if let Some(permit) = node.breaker.probe() {
                    let noop = Request {
                        bytes: b"mn\r\n".to_vec(),
                        responses: 1,
                    };
                    let result = node
                        .server
                        .exchange(&noop, this.cfg.op_timeout, this.cfg.connect_timeout)
                        .await;
                    permit.record(&this.name, &result);
                }
            }
            node.watching.store(false, Relaxed);
            this.watch_breaker(server);
        });
    }

    /// Reads a value (with `value`), its CAS (with `cas`) and the tags' versions: one
    /// pipelined request per server.
    async fn fetch(
        &self,
        key: Option<&str>,
        tags: &[String],
        value: bool,
        cas: bool,
    ) -> Result<Read, TierError> {
        let flags = match (value, cas) {
            (true, true) => "v f c",
            (true, false) => "v f",
            (false, _) => "c f",
        };
        let mut plan = Vec::with_capacity(tags.len() + 1); // (request, response) of each key
        let mut requests: Vec<(usize, Request)> = Vec::with_capacity(2);
        let mut add = |server: usize,
                       cmd_key: &[u8],
                       flags: &str,
                       plan: &mut Vec<(usize, usize)>|
         -> Result<(), TierError> {
            let i = match requests.iter().position(|(s, _)| *s == server) {
                Some(i) => i,
                None => {
                    requests.push((server, Request::default()));
                    requests.len() - 1
                }
            };
            let r = &mut requests[i].1;
            plan.push((i, r.responses));
            r.push("mg", cmd_key, flags, None)
                .map_err(|e| TierError::Failed(e.to_string()))
        };
        if let Some(key) = key {
            let v = self.value(key);
            add(v.server, &v.key, flags, &mut plan)?;
        }
        for t in tags {
            let t = self.tag(t);
            add(t.server, &t.key, "v", &mut plan)?;
        }
        let mut got = self.op(requests).await?;
        let mut read = Read::default();
        let values = usize::from(key.is_some());
        for &(i, j) in &plan[..values] {
            match &mut got[i][j] {
                Response::Value(bytes, f) => {
                    read.generation = self.cas_of(f.cas, cas)?;
                    if f.client_flags != TOMBSTONE {
                        read.value = Some(std::mem::take(bytes));
                    }
                }
                Response::Done(f) => read.generation = self.cas_of(f.cas, cas)?,
                Response::Miss => {}
                other => return Err(unexpected(other)),
            }
        }
        read.tag_versions.reserve_exact(plan.len() - values);
        for &(i, j) in &plan[values..] {
            read.tag_versions.push(match &got[i][j] {
                Response::Value(bytes, _) => parse_u64(bytes),
                Response::Miss => 0,
                other => return Err(unexpected(other)),
            });
        }
        Ok(read)
    }

    /// An item's CAS as its generation (0 when not asked for).
    fn cas_of(&self, cas: Option<u64>, asked: bool) -> Result<u64, TierError> {
        if !asked {
            return Ok(0);
        }
        match cas {
            Some(c) if c != 0 => Ok(c),
            _ => Err(TierError::Failed(
                "memcached answered without a CAS value (started with -C?): the cache needs CAS to guard its writes".into(),
            )),
        }
    }

    async fn one(
        &self,
        ask: &Ask,
        cmd: &str,
        flags: &str,
        data: Option<&[u8]>,
    ) -> Result<Response, TierError> {
        let mut r = Request::default();
        r.push(cmd, &ask.key, flags, data)
            .map_err(|e| TierError::Failed(e.to_string()))?;
        let mut got = self.op(vec![(ask.server, r)]).await?;
        got.pop()
            .and_then(|mut r| r.pop())
            .ok_or_else(|| TierError::Failed("memcached: no response".into()))
    }

    async fn write_value(
        &self,
        key: &str,
        bytes: Vec<u8>,
        ttl: Duration,
        generation: u64,
    ) -> Result<Written, TierError> {
        if bytes.len() > self.cfg.max_value_bytes {
            self.warn_size(key, bytes.len());
            return Ok(Written::TooLarge);
        }
        let v = self.value(key);
        let flags = if generation == 0 {
            format!("T{} F0 ME", ttl_secs(ttl))
        } else {
            format!("T{} F0 C{generation}", ttl_secs(ttl))
        };
        match self.one(&v, "ms", &flags, Some(&bytes)).await? {
            Response::Done(_) => Ok(Written::Yes),
            Response::NotStored | Response::Exists | Response::NotFound => {
                Ok(Written::GenerationMoved)
            }
            Response::Error(e) if e.contains("too large") => {
                self.warn_size(key, bytes.len());
                Ok(Written::TooLarge)
            }
            other => Err(unexpected(&other)),
        }
    }

    fn warn_size(&self, key: &str, bytes: usize) {
        if !self.warned_size.swap(true, Relaxed) {
            tracing::warn!(
                backend = %self.name,
                key,
                bytes,
                limit = self.cfg.max_value_bytes,
                "cachemacro: value over max_value_bytes or Memcached's item size limit (-I) is not written to Memcached"
            );
        }
    }

    /// Replaces the value's item by a tombstone; its CAS is the new generation.
    async fn tombstone(&self, key: &str) -> Result<u64, TierError> {
        let v = self.value(key);
        let flags = format!(
            "T{} F{TOMBSTONE} c",
            ttl_secs(self.cfg.generation_retention)
        );
        match self.one(&v, "ms", &flags, Some(b"")).await? {
            Response::Done(f) => self.cas_of(f.cas, true),
            other => Err(unexpected(&other)),
        }
    }

    /// Moves a tag's version on (auto-created at the clock in microseconds, so a version
    /// forgotten and made again starts past every one handed out before it).
    async fn next_tag_version(&self, tag: &str) -> Result<u64, TierError> {
        let t = self.tag(tag);
        let keep = ttl_secs(self.cfg.tag_retention);
        let now = now_us();
        let flags = format!("N{keep} J{now} D1 T{keep} v");
        match self.one(&t, "ma", &flags, None).await? {
            Response::Value(bytes, _) => Ok(parse_u64(&bytes)),
            // Not a number (written by something else): start it again.
            Response::Error(_) => {
                let data = now.to_string();
                match self
                    .one(&t, "ms", &format!("T{keep}"), Some(data.as_bytes()))
                    .await?
                {
                    Response::Done(_) => Ok(now),
                    other => Err(unexpected(&other)),
                }
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn lock(&self, key: &str, token: u64) -> Result<bool, TierError> {
        let l = self.lock_item(key);
        let flags = format!("T{} ME", ttl_secs(self.cfg.lock_ttl));
        match self
            .one(&l, "ms", &flags, Some(token.to_string().as_bytes()))
            .await?
        {
            Response::Done(_) => Ok(true),
            Response::NotStored => Ok(false),
            other => Err(unexpected(&other)),
        }
    }

    /// Releases the lock if `token` still holds it: read it with its CAS, delete it with
    /// that CAS (so a lock that expired and was taken by another meanwhile is left alone).
    /// Wakes this process's callers waiting for it; other processes' waiters poll.
    async fn unlock_now(&self, key: &str, token: u64) -> Result<(), TierError> {
        let l = self.lock_item(key);
        let released = match self.one(&l, "mg", "v c", None).await? {
            Response::Value(bytes, f) if parse_u64(&bytes) == token => {
                let cas = self.cas_of(f.cas, true)?;
                matches!(
                    self.one(&l, "md", &format!("C{cas}"), None).await?,
                    Response::Done(_)
                )
            }
            _ => false,
        };
        if released {
            let message = Message::Unlocked(key).encode();
            self.backplane
                .on_signal(&self.name, Signal::Message(&message));
        }
        Ok(())
    }
}

/// The tier's client without the cache: one server, `mg <key> v`, the same transport as
/// the tier's reads (the same per-runtime connection pools, I/O-thread fallback and
/// timeouts; the baseline of `benches/memcached.rs`).
pub struct RawClient {
    server: Server,
    timeout: Duration,
}

impl RawClient {
    /// A client of `url` (`memcached://host:port`).
    pub fn new(url: &str) -> Self {
        Self {
            server: Server::new(url),
            timeout: Duration::from_secs(1),
        }
    }

    /// The bytes of `key`, if any (`None` on a miss or an error).
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.get_with(key, None).await
    }

    /// [`Self::get`], pipelined with a read of `also` in the same request (as a hit reads
    /// a value and its function's tag version).
    pub async fn get_with(&self, key: &str, also: Option<&[u8]>) -> Option<Vec<u8>> {
        let mut r = Request::default();
        r.push("mg", key.as_bytes(), "v", None).ok()?;
        if let Some(also) = also {
            r.push("mg", also, "v", None).ok()?;
        }
        match self.server.exchange(&r, self.timeout, self.timeout).await {
            Ok(mut got) => match got.swap_remove(0) {
                Response::Value(bytes, _) => Some(bytes),
                _ => None,
            },
            Err(_) => None,
        }
    }
}

fn unexpected(r: &Response) -> TierError {
    match r {
        Response::Error(e) => TierError::Failed(format!("memcached: {e}")),
        other => TierError::Failed(format!("memcached: unexpected response {other:?}")),
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Records how long an operation took, however it ends.
struct Timed<'a>(Instant, &'a crate::stats::Histogram);

impl<'a> Timed<'a> {
    fn start(h: &'a crate::stats::Histogram) -> Self {
        Self(Instant::now(), h)
    }
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.1
            .record(u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
}

impl Tier for MemcachedTier {
    fn info(&self) -> TierInfo {
        TierInfo {
            op_latency: Some(self.op_latency.snapshot()),
            ..TierInfo::default()
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn config(&self) -> &Config {
        &self.cfg
    }

    fn local_tier(&self) -> bool {
        self.local_tier
    }

    fn l1_ttl(&self) -> Option<Duration> {
        self.l1_ttl
    }

    fn backplane(&self) -> &Backplane {
        &self.backplane
    }

    fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    fn reachable(&self) -> bool {
        self.servers.iter().all(|n| n.breaker.allow_without_probe())
    }

    fn channel(&self) -> String {
        String::new()
    }

    fn follow(
        self: Arc<Self>,
        _channel: String,
        mut on: Box<dyn FnMut(Signal<'_>) + Send>,
    ) -> Option<Following> {
        // No pub/sub. An L1 in front of Memcached is trusted from the start, each copy for
        // at most `l1_ttl` (the engine's floor), not because a subscription is up.
        if self.l1_ttl.is_some() {
            on(Signal::Up { again: false });
        }
        None
    }

    fn get<'a>(&'a self, key: &'a str, tags: &'a [String]) -> TierFuture<'a, Read> {
        Box::pin(self.fetch(Some(key), tags, true, false))
    }

    fn read<'a>(&'a self, key: &'a str, tags: &'a [String]) -> TierFuture<'a, Read> {
        Box::pin(self.fetch(Some(key), tags, true, true))
    }

    fn versions<'a>(&'a self, key: &'a str, tags: &'a [String]) -> TierFuture<'a, Read> {
        Box::pin(self.fetch(Some(key), tags, false, true))
    }

    fn tag_versions<'a>(&'a self, tags: &'a [String]) -> TierFuture<'a, Vec<u64>> {
        Box::pin(async move {
            if tags.is_empty() {
                return Ok(Vec::new());
            }
            Ok(self.fetch(None, tags, false, false).await?.tag_versions)
        })
    }

    fn write_if<'a>(
        &'a self,
        key: &'a str,
        bytes: Vec<u8>,
        ttl: Duration,
        generation: u64,
    ) -> TierFuture<'a, Written> {
        Box::pin(self.write_value(key, bytes, ttl, generation))
    }

    fn bump<'a>(&'a self, key: &'a str, _delete: bool) -> TierFuture<'a, u64> {
        // A tombstone either way: the item's CAS is the only generation Memcached keeps.
        Box::pin(self.tombstone(key))
    }

    fn bump_tag<'a>(&'a self, tag: &'a str) -> TierFuture<'a, u64> {
        Box::pin(self.next_tag_version(tag))
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

    fn publish<'a>(&'a self, _message: Message<'a>) -> TierFuture<'a, ()> {
        // No pub/sub: no other process keeps an L1 of a Memcached backend to tell.
        Box::pin(async { Ok(()) })
    }
}

//! A child process for the multi-process tests: cached functions on the Redis backends,
//! driven by one command per line on stdin, one answer per line on stdout.
//!
//! Environment: `CACHEMACRO_REDIS_URL`, `CACHEMACRO_PREFIX` (as for any user).
//! Commands: `get F ID`, `burst F ID N`, `inv F ID`, `refresh F ID`, `put F ID VERSION`,
//! `tag TAG`,
//! `version N` (what the source returns next), `delay MS` (how long the source takes),
//! `steady F ID DURATION_MS INTERVAL_MS`, `stats F`, `health`, `quit`. F is one of the
//! functions below. `CM_LOCK_TTL_MS` / `CM_LOCK_WAIT_MS` set the lock's TTL and wait, `CM_OP_TIMEOUT_MS` the
//! Redis operation timeout and `CM_HEARTBEAT_MS` the backplane's heartbeat (default 500 ms each).

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cachemacro_runtime::{cached, Config};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Item {
    id: u64,
    version: u64,
    by: u32,
}

static VERSION: AtomicU64 = AtomicU64::new(1);
static DELAY_MS: AtomicU64 = AtomicU64::new(0);

async fn source(id: u64) -> Item {
    let delay = DELAY_MS.load(SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    Item {
        id,
        version: VERSION.load(SeqCst),
        by: std::process::id(),
    }
}

#[cached(ttl = 60, key = "t:<id>", backend = tiered)]
async fn tiered(id: u64) -> Item {
    source(id).await
}

#[cached(ttl = 60, key = "r:<id>", backend = redis)]
async fn remote(id: u64) -> Item {
    source(id).await
}

#[cached(ttl = 60, key = "tag:<id>", backend = tiered, tags = ["org:<id>"])]
async fn tagged(id: u64) -> Item {
    source(id).await
}

#[cached(ttl = 60, key = "l:<id>", backend = redis, stampede = lock)]
async fn locked(id: u64) -> Item {
    source(id).await
}

#[cached(ttl = 60, key = "tl:<id>", backend = tiered, stampede = lock)]
async fn tiered_locked(id: u64) -> Item {
    source(id).await
}

#[cached(ttl = 60, key = "nl:<id>", backend = redis, stampede = coalesce)]
async fn unlocked(id: u64) -> Item {
    source(id).await
}

#[cached(ttl = "2s", key = "x:<id>", backend = tiered, stampede = xfetch, beta = 2.0)]
async fn xfetched(id: u64) -> Item {
    source(id).await
}

#[cached(ttl = "2s", key = "xr:<id>", backend = redis, stampede = xfetch, beta = 2.0)]
async fn xfetched_remote(id: u64) -> Item {
    source(id).await
}

#[cached(ttl = "2s", key = "xn:<id>", backend = tiered, stampede = coalesce)]
async fn plain_ttl(id: u64) -> Item {
    source(id).await
}

#[cached(ttl = "30s", soft_ttl = "1s", key = "s:<id>", backend = tiered, stampede = lock)]
async fn soft(id: u64) -> Item {
    source(id).await
}

#[cfg(feature = "memcached")]
mod on_memcached {
    use super::{source, Item};
    use cachemacro_runtime::cached;

    #[cached(ttl = 60, key = "ml:<id>", backend = memcached, stampede = lock)]
    pub async fn mlocked(id: u64) -> Item {
        source(id).await
    }

    #[cached(ttl = 60, key = "mnl:<id>", backend = memcached, stampede = coalesce)]
    pub async fn munlocked(id: u64) -> Item {
        source(id).await
    }

    #[cached(ttl = "2s", key = "mx:<id>", backend = memcached, stampede = xfetch, beta = 2.0)]
    pub async fn mxfetched(id: u64) -> Item {
        source(id).await
    }

    #[cached(ttl = "2s", key = "mxn:<id>", backend = memcached, stampede = coalesce)]
    pub async fn mplain(id: u64) -> Item {
        source(id).await
    }

    /// On the `mtiered` backend: an L1 in front of Memcached, each copy served for at most
    /// `CM_L1_TTL_MS` (default 1000).
    #[cached(ttl = 60, key = "mt:<id>", backend = "mtiered", tags = ["mtorg:<id>"])]
    pub async fn mtiered(id: u64) -> Item {
        source(id).await
    }
}
#[cfg(feature = "memcached")]
use on_memcached::*;

type BoxFut<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

struct Fns {
    put: fn(u64, Item) -> BoxFut<Result<(), String>>,
    get: fn(u64) -> BoxFut<Item>,
    inv: fn(u64) -> BoxFut<Result<(), String>>,
    refresh: fn(u64) -> BoxFut<Item>,
    stats: fn() -> cachemacro_runtime::Stats,
    clear: fn() -> BoxFut<Result<(), String>>,
}

macro_rules! generated {
    ($lookup:ident: $($name:ident => $inv:ident, $refresh:ident, $stats:ident, $put:ident, $clear:ident);* $(;)?) => {
        fn $lookup(f: &str) -> Option<Fns> {
            match f {
                $(stringify!($name) => Some(Fns {
                    put: |id, item| Box::pin(async move { $put(id, item).await.map_err(|e| e.to_string()) }),
                    get: |id| Box::pin(async move { $name(id).await }),
                    inv: |id| Box::pin(async move { $inv(id).await.map_err(|e| e.to_string()) }),
                    refresh: |id| Box::pin(async move { $refresh(id).await }),
                    stats: $stats,
                    clear: || Box::pin(async move { $clear().await.map_err(|e| e.to_string()) }),
                }),)*
                _ => None,
            }
        }
    };
}

fn lookup(f: &str) -> Option<Fns> {
    let found = on_redis(f);
    #[cfg(feature = "memcached")]
    let found = found.or_else(|| on_memcached(f));
    found
}

#[cfg(feature = "memcached")]
generated! { on_memcached:
    mlocked => mlocked_invalidate, mlocked_refresh, mlocked_stats, mlocked_put, mlocked_clear;
    munlocked => munlocked_invalidate, munlocked_refresh, munlocked_stats, munlocked_put, munlocked_clear;
    mxfetched => mxfetched_invalidate, mxfetched_refresh, mxfetched_stats, mxfetched_put, mxfetched_clear;
    mplain => mplain_invalidate, mplain_refresh, mplain_stats, mplain_put, mplain_clear;
    mtiered => mtiered_invalidate, mtiered_refresh, mtiered_stats, mtiered_put, mtiered_clear;
}

generated! { on_redis:
    tiered => tiered_invalidate, tiered_refresh, tiered_stats, tiered_put, tiered_clear;
    remote => remote_invalidate, remote_refresh, remote_stats, remote_put, remote_clear;
    tagged => tagged_invalidate, tagged_refresh, tagged_stats, tagged_put, tagged_clear;
    locked => locked_invalidate, locked_refresh, locked_stats, locked_put, locked_clear;
    tiered_locked => tiered_locked_invalidate, tiered_locked_refresh, tiered_locked_stats, tiered_locked_put, tiered_locked_clear;
    unlocked => unlocked_invalidate, unlocked_refresh, unlocked_stats, unlocked_put, unlocked_clear;
    xfetched => xfetched_invalidate, xfetched_refresh, xfetched_stats, xfetched_put, xfetched_clear;
    xfetched_remote => xfetched_remote_invalidate, xfetched_remote_refresh, xfetched_remote_stats, xfetched_remote_put, xfetched_remote_clear;
    plain_ttl => plain_ttl_invalidate, plain_ttl_refresh, plain_ttl_stats, plain_ttl_put, plain_ttl_clear;
    soft => soft_invalidate, soft_refresh, soft_stats, soft_put, soft_clear;
}

fn show(item: &Item) -> String {
    format!("{}:{}:{}", item.id, item.version, item.by)
}

async fn run(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let f = |i: usize| words.get(i).and_then(|w| lookup(w));
    let n = |i: usize| {
        words
            .get(i)
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or(0)
    };
    match words.first().copied() {
        Some("get") => match f(1) {
            Some(fns) => show(&(fns.get)(n(2)).await),
            None => "err unknown function".into(),
        },
        Some("burst") => match f(1) {
            Some(fns) => {
                let tasks: Vec<_> = (0..n(3)).map(|_| tokio::spawn((fns.get)(n(2)))).collect();
                let mut versions = std::collections::BTreeSet::new();
                for t in tasks {
                    versions.insert(t.await.map(|i| i.version).unwrap_or(0));
                }
                format!("ok {versions:?}")
            }
            None => "err unknown function".into(),
        },
        Some("steady") => match f(1) {
            // steady F ID DURATION_MS INTERVAL_MS: a read every INTERVAL for DURATION.
            Some(fns) => {
                let end = std::time::Instant::now() + Duration::from_millis(n(3));
                let (mut calls, mut slowest, mut first) = (0u64, Duration::ZERO, None);
                let mut versions = std::collections::BTreeSet::new();
                while std::time::Instant::now() < end {
                    let t = std::time::Instant::now();
                    let item = (fns.get)(n(2)).await;
                    let took = t.elapsed();
                    if first.is_none() {
                        first = Some(took);
                    } else {
                        slowest = slowest.max(took);
                    }
                    versions.insert(item.version);
                    calls += 1;
                    tokio::time::sleep(Duration::from_millis(n(4))).await;
                }
                format!(
                    "calls={calls} max_us={} first_us={} versions={}",
                    slowest.as_micros(),
                    first.unwrap_or_default().as_micros(),
                    versions.len()
                )
            }
            None => "err unknown function".into(),
        },
        Some("inv") => match f(1) {
            Some(fns) => match (fns.inv)(n(2)).await {
                Ok(()) => "ok".into(),
                Err(e) => format!("err {e}"),
            },
            None => "err unknown function".into(),
        },
        Some("put") => match f(1) {
            // put F ID VERSION: a write-through put of a value with that version
            Some(fns) => {
                let item = Item {
                    id: n(2),
                    version: n(3),
                    by: std::process::id(),
                };
                match (fns.put)(n(2), item).await {
                    Ok(()) => "ok".into(),
                    Err(e) => format!("err {e}"),
                }
            }
            None => "err unknown function".into(),
        },
        Some("clear") => match f(1) {
            Some(fns) => match (fns.clear)().await {
                Ok(()) => "ok".into(),
                Err(e) => format!("err {e}"),
            },
            None => "err unknown function".into(),
        },
        Some("refresh") => match f(1) {
            Some(fns) => show(&(fns.refresh)(n(2)).await),
            None => "err unknown function".into(),
        },
        Some("tag") => {
            match cachemacro_runtime::invalidate_tag(words.get(1).copied().unwrap_or("")).await {
                Ok(()) => "ok".into(),
                Err(e) => format!("err {e}"),
            }
        }
        Some("version") => {
            VERSION.store(n(1), SeqCst);
            "ok".into()
        }
        Some("delay") => {
            DELAY_MS.store(n(1), SeqCst);
            "ok".into()
        }
        Some("stats") => match f(1) {
            Some(fns) => {
                let s = (fns.stats)();
                format!(
                    "hits={} stale={} misses={} loads={} coalesced={} lock_waits={} early={} background={} backend_errors={} invalidations={}",
                    s.hits, s.stale_hits, s.misses, s.loads, s.coalesced, s.lock_waits,
                    s.early_refreshes, s.background_refreshes, s.backend_errors, s.invalidations
                )
            }
            None => "err unknown function".into(),
        },
        #[cfg(feature = "semantic")]
        Some("ask" | "sinv" | "sclear" | "sstats") => semantic::run(&words).await,
        Some("health") => cachemacro_runtime::health()
            .iter()
            .map(|h| {
                format!(
                    "{}:reachable={}:subscribed={:?}",
                    h.backend, h.reachable, h.subscribed
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => "err unknown command".into(),
    }
}

/// Semantic functions on Redis (with feature `semantic`): `ask F SCOPE PROMPT…` (the
/// answer: `SCOPE|PROMPT|pPID|vVERSION` of the process and version that loaded it),
/// `sinv F SCOPE`, `sclear F`, `sstats F`. F: `faq` (`backend = redis`, tagged
/// `tenant:SCOPE`), `tfaq` (`tiered`, `verify = 1.0`), `lfaq` (in-process: the control).
#[cfg(feature = "semantic")]
mod semantic {
    use super::*;

    async fn answer(scope: &str, q: &str) -> String {
        let delay = DELAY_MS.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        format!(
            "{scope}|{q}|p{}|v{}",
            std::process::id(),
            VERSION.load(SeqCst)
        )
    }

    #[cached(
        ttl = 60,
        semantic(on = q, threshold = 0.8),
        key = "sem:<tenant>",
        tags = ["tenant:<tenant>"],
        backend = redis
    )]
    async fn faq(tenant: String, q: String) -> String {
        answer(&tenant, &q).await
    }

    #[cached(
        ttl = 60,
        semantic(on = q, threshold = 0.5, verify = 1.0),
        key = "tsem:<tenant>",
        backend = tiered
    )]
    async fn tfaq(tenant: String, q: String) -> String {
        answer(&tenant, &q).await
    }

    // Two functions sharing one name and key: one function's scopes, as far as the cache
    // is concerned (what one stores or invalidates, the other sees, in-process too).
    #[cached(ttl = 60, semantic(on = q, threshold = 0.8), key = "ssem:<tenant>", name = "shared_faq", backend = redis)]
    async fn sfaq_a(tenant: String, q: String) -> String {
        answer(&tenant, &q).await
    }

    #[cached(ttl = 60, semantic(on = q, threshold = 0.8), key = "ssem:<tenant>", name = "shared_faq", backend = redis)]
    async fn sfaq_b(tenant: String, q: String) -> String {
        answer(&tenant, &q).await
    }

    #[cached(ttl = 60, semantic(on = q, threshold = 0.8), key = "lsem:<tenant>")]
    async fn lfaq(tenant: String, q: String) -> String {
        answer(&tenant, &q).await
    }

    pub async fn run(words: &[&str]) -> String {
        let f = words.get(1).copied().unwrap_or("");
        let scope = words.get(2).copied().unwrap_or("").to_owned();
        let q = words.get(3..).map(|w| w.join(" ")).unwrap_or_default();
        let done = |r: Result<(), cachemacro_runtime::Error>| match r {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("err {e}"),
        };
        match (words[0], f) {
            ("ask", "faq") => faq(scope, q).await,
            ("ask", "tfaq") => tfaq(scope, q).await,
            ("ask", "lfaq") => lfaq(scope, q).await,
            ("ask", "sfaq_a") => sfaq_a(scope, q).await,
            ("ask", "sfaq_b") => sfaq_b(scope, q).await,
            ("sinv", "sfaq_a") => done(sfaq_a_invalidate(scope).await),
            ("sinv", "faq") => done(faq_invalidate(scope).await),
            ("sinv", "tfaq") => done(tfaq_invalidate(scope).await),
            ("sclear", "faq") => done(faq_clear().await),
            ("sclear", "tfaq") => done(tfaq_clear().await),
            ("sstats", f) => {
                let s = match f {
                    "faq" => faq_stats(),
                    "tfaq" => tfaq_stats(),
                    "lfaq" => lfaq_stats(),
                    "sfaq_b" => sfaq_b_stats(),
                    _ => return "err unknown function".into(),
                };
                let sem = s.semantic.unwrap_or_default();
                format!(
                    "hits={} misses={} loads={} entries={} verified={} disagreements={} backend_errors={} backplane_drops={}",
                    sem.hits, sem.misses, s.loads, sem.entries, sem.verified, sem.disagreements,
                    s.backend_errors, s.backplane_drops
                )
            }
            _ => "err unknown function".into(),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    #[cfg(feature = "semantic")]
    cachemacro_runtime::semantic::set_embedder(std::sync::Arc::new(
        cachemacro_runtime::semantic::HashEmbedder::default(),
    ));
    let ms = |var: &str, default: u64| {
        Duration::from_millis(
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default),
        )
    };
    let config = Config::from_env()
        .heartbeat(ms("CM_HEARTBEAT_MS", 500))
        .op_timeout(ms("CM_OP_TIMEOUT_MS", 500))
        .lock_ttl(ms("CM_LOCK_TTL_MS", 10_000))
        .lock_wait(ms("CM_LOCK_WAIT_MS", 10_000));
    // The `mtiered` backend only for the Memcached tests (a configured backend is one that
    // `invalidate_tag` must reach).
    #[cfg(feature = "memcached")]
    let config = match std::env::var("CACHEMACRO_MEMCACHED_URL") {
        Ok(url) => config.backend(
            "mtiered",
            cachemacro_runtime::BackendConfig::memcached_tiered(url, ms("CM_L1_TTL_MS", 1000)),
        ),
        Err(_) => config,
    };
    cachemacro_runtime::configure(config).expect("configure");
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "quit" {
            break;
        }
        let answer = run(&line).await;
        writeln!(out, "{answer}").unwrap();
        out.flush().unwrap();
    }
}

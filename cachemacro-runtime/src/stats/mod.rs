//! Per-function counters and latency histograms, the registry behind [`all`], and the
//! operator's table.
//!
//! This module depends on nothing else in the crate. The hot path (a hit) writes only memory
//! of the calling thread: each thread has its own cache-line-aligned counters per function
//! (written with plain loads and stores, no read-modify-write), so concurrent hits share no
//! written cache line. Reads ([`Stats`] snapshots) sum every thread's counters and those of
//! threads that ended. Latencies go to histograms striped over 16 shards by thread; hit
//! latencies are sampled.

mod histogram;
mod hot;
#[cfg(feature = "metrics")]
pub mod metrics;
mod semantic;
mod table;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub(crate) use histogram::Histogram;
pub use histogram::LatencyHistogram;
use histogram::BUCKETS;
pub(crate) use semantic::SemanticCounters;
pub use semantic::SemanticStats;
pub use table::table;

/// One counter of [`Stats`]; the discriminant indexes a shard's counter array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
#[allow(missing_docs)]
pub enum Counter {
    Hits,
    StaleHits,
    Misses,
    Loads,
    LoadErrors,
    Coalesced,
    LockWaits,
    EarlyRefreshes,
    BackgroundRefreshes,
    Invalidations,
    Evictions,
    BackendErrors,
    StampedeEscapes,
    Oversized,
    SourceTimeouts,
    L2Hits,
    BackplaneDrops,
    RefreshesDeferred,
    OutageHits,
    BackendSkipped,
}

const COUNTERS: usize = 20;

/// One thread's counters of one function, alone on their cache lines.
#[repr(align(128))]
struct ThreadCounters {
    counters: [AtomicU64; COUNTERS],
}

impl ThreadCounters {
    fn new() -> Self {
        Self {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The counters of every thread that counted for one function.
#[derive(Default)]
struct Threads {
    live: Vec<Arc<ThreadCounters>>,
    /// What threads that ended had counted.
    ended: [u64; COUNTERS],
}

/// Latency histograms of a group of threads.
#[repr(align(128))]
struct HistShard {
    hit_latency: Histogram,
    load_latency: Histogram,
}

/// Histogram shards per function.
const HIST_SHARDS: usize = 16;

/// The live counters of one cached function. Cheap to update from any thread.
pub struct Recorder {
    name: String,
    /// This function's place in every thread's table of counters.
    id: usize,
    threads: Arc<Mutex<Threads>>,
    hist: Box<[HistShard]>,
    /// Entries in the function's in-process tier now (set by its engine).
    occupancy: OnceLock<Occupancy>,
    /// `hot_keys = N`: the top keys by hits and by loads.
    hot: OnceLock<hot::HotKeys>,
    /// A semantic function's own counters.
    semantic: OnceLock<SemanticCounters>,
}

/// Reads how many entries a function's in-process tier holds.
pub type Occupancy = Box<dyn Fn() -> (u64, Option<u64>) + Send + Sync>;

/// One hit in this many has its latency recorded (per thread).
pub const HIT_SAMPLE: u32 = 64;

/// A thread's counters, by recorder id. When the thread ends, what it counted moves to
/// each recorder's `ended` totals.
struct Mine(Vec<Option<Slot>>);

/// One recorder's counters on this thread, and where they go when the thread ends.
type Slot = (Arc<Mutex<Threads>>, Arc<ThreadCounters>);

impl Drop for Mine {
    fn drop(&mut self) {
        for (threads, counters) in self.0.drain(..).flatten() {
            let mut t = threads.lock().unwrap_or_else(|e| e.into_inner());
            for (sum, c) in t.ended.iter_mut().zip(counters.counters.iter()) {
                *sum += c.load(Relaxed);
            }
            t.live.retain(|c| !Arc::ptr_eq(c, &counters));
        }
    }
}

thread_local! {
    static MINE: RefCell<Mine> = const { RefCell::new(Mine(Vec::new())) };
    static THREAD_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    static HIT_TICK: Cell<u32> = const { Cell::new(0) };
}
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn thread_slot() -> usize {
    THREAD_SLOT.with(|slot| {
        let s = slot.get();
        if s != usize::MAX {
            return s;
        }
        let s = NEXT_SLOT.fetch_add(1, Relaxed);
        slot.set(s);
        s
    })
}

impl Recorder {
    /// A recorder for the function called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            id: NEXT_ID.fetch_add(1, Relaxed),
            threads: Default::default(),
            hist: (0..HIST_SHARDS)
                .map(|_| HistShard {
                    hit_latency: Histogram::new(),
                    load_latency: Histogram::new(),
                })
                .collect(),
            occupancy: OnceLock::new(),
            hot: OnceLock::new(),
            semantic: OnceLock::new(),
        }
    }

    /// The semantic counters (created on first use: only semantic functions have them).
    #[cfg_attr(not(feature = "semantic"), allow(dead_code))]
    pub(crate) fn semantic(&self) -> &SemanticCounters {
        self.semantic.get_or_init(SemanticCounters::new)
    }

    /// Tracks the top `n` keys by hits and by loads from now on.
    pub fn track_hot_keys(&self, n: u32) {
        if n > 0 {
            let _ = self.hot.set(hot::HotKeys::new(n as usize));
        }
    }

    /// Whether hot keys are tracked (the hit path records a sampled hit's key only then).
    #[inline]
    pub fn tracks_hot_keys(&self) -> bool {
        self.hot.get().is_some()
    }

    /// A sampled hit of `key` (see [`Recorder::sample`]).
    pub fn hot_hit(&self, key: &str) {
        if let Some(h) = self.hot.get() {
            h.hit(key);
        }
    }

    /// A source call for `key`.
    pub fn hot_load(&self, key: &str) {
        if let Some(h) = self.hot.get() {
            h.load(key);
        }
    }

    /// Says how to read the in-process tier's entry count (once).
    pub fn set_occupancy(&self, read: Occupancy) {
        let _ = self.occupancy.set(read);
    }

    /// The function's name in stats.
    pub fn name(&self) -> &str {
        &self.name
    }

    #[inline]
    fn hist(&self) -> &HistShard {
        &self.hist[thread_slot() % HIST_SHARDS]
    }

    /// Adds one to `counter`.
    #[inline]
    pub fn incr(&self, counter: Counter) {
        self.add(counter, 1);
    }

    /// Adds `n` to `counter`, in this thread's counters.
    #[inline]
    pub fn add(&self, counter: Counter, n: u64) {
        let done = MINE.try_with(|mine| {
            if let Ok(mine) = mine.try_borrow() {
                if let Some(Some((_, c))) = mine.0.get(self.id) {
                    // Only this thread writes these: a plain load and store, no RMW.
                    let a = &c.counters[counter as usize];
                    a.store(a.load(Relaxed).wrapping_add(n), Relaxed);
                    return true;
                }
            }
            false
        });
        if done != Ok(true) {
            self.add_slow(counter, n);
        }
    }

    /// The first count of this function on this thread (or one during its shutdown).
    #[cold]
    fn add_slow(&self, counter: Counter, n: u64) {
        let counters = Arc::new(ThreadCounters::new());
        counters.counters[counter as usize].store(n, Relaxed);
        let registered = MINE.try_with(|mine| {
            let Ok(mut mine) = mine.try_borrow_mut() else {
                return false;
            };
            if mine.0.len() <= self.id {
                mine.0.resize_with(self.id + 1, || None);
            }
            mine.0[self.id] = Some((self.threads.clone(), counters.clone()));
            true
        });
        let mut t = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if registered == Ok(true) {
            t.live.push(counters);
        } else {
            t.ended[counter as usize] += n; // the thread is ending: count it as ended
        }
    }

    /// Whether this hit's latency is recorded: a thread's first 15 calls and then every
    /// [`HIT_SAMPLE`]th call of it read the precise clock at its start (`Some`), the others do not read it at all.
    #[inline]
    pub fn sample(&self) -> Option<Instant> {
        HIT_TICK
            .try_with(|t| {
                let n = t.get().wrapping_add(1);
                t.set(n);
                // A thread's first calls are all sampled, so a function called a few
                // times (an example, a cold service) shows a latency, not none; not with
                // `hot_keys`, whose sketch counts each sample as HIT_SAMPLE hits.
                n % HIT_SAMPLE == 0 || (n < 16 && !self.tracks_hot_keys())
            })
            .unwrap_or(false)
            .then(Instant::now)
    }

    /// Counts a hit (fresh or stale); a sampled one (`started`, see [`Recorder::sample`])
    /// also records its latency. Reading the clock costs about as much as the rest of a
    /// hit, so quantiles come from a uniform sample while the counts stay exact.
    #[inline]
    pub fn hit(&self, stale: bool, started: Option<Instant>) {
        self.incr(if stale {
            Counter::StaleHits
        } else {
            Counter::Hits
        });
        if let Some(t) = started {
            self.hist()
                .hit_latency
                .record(saturating_nanos(t.elapsed()));
        }
    }

    /// Counts a source call that took `latency` and whether it failed.
    pub fn load(&self, failed: bool, latency: Duration) {
        self.incr(Counter::Loads);
        if failed {
            self.incr(Counter::LoadErrors);
        }
        self.hist().load_latency.record(saturating_nanos(latency));
    }

    /// A consistent-enough snapshot: each counter is summed over the shards.
    pub fn snapshot(&self) -> Stats {
        let mut c;
        {
            let t = self.threads.lock().unwrap_or_else(|e| e.into_inner());
            c = t.ended;
            for counters in &t.live {
                for (i, v) in counters.counters.iter().enumerate() {
                    c[i] += v.load(Relaxed);
                }
            }
        }
        let mut hit = vec![0u64; BUCKETS];
        let mut load = vec![0u64; BUCKETS];
        for shard in self.hist.iter() {
            for i in 0..BUCKETS {
                hit[i] += shard.hit_latency.buckets[i].load(Relaxed);
                load[i] += shard.load_latency.buckets[i].load(Relaxed);
            }
        }
        let occupancy = self.occupancy.get().map_or((0, None), |read| read());
        let (hot_keys, hot_loads) = self.hot.get().map(|h| h.top()).unwrap_or_default();
        Stats {
            name: self.name.clone(),
            hits: c[Counter::Hits as usize],
            stale_hits: c[Counter::StaleHits as usize],
            misses: c[Counter::Misses as usize],
            loads: c[Counter::Loads as usize],
            load_errors: c[Counter::LoadErrors as usize],
            coalesced: c[Counter::Coalesced as usize],
            lock_waits: c[Counter::LockWaits as usize],
            early_refreshes: c[Counter::EarlyRefreshes as usize],
            background_refreshes: c[Counter::BackgroundRefreshes as usize],
            invalidations: c[Counter::Invalidations as usize],
            evictions: c[Counter::Evictions as usize],
            backend_errors: c[Counter::BackendErrors as usize],
            stampede_escapes: c[Counter::StampedeEscapes as usize],
            oversized: c[Counter::Oversized as usize],
            source_timeouts: c[Counter::SourceTimeouts as usize],
            l2_hits: c[Counter::L2Hits as usize],
            backplane_drops: c[Counter::BackplaneDrops as usize],
            refreshes_deferred: c[Counter::RefreshesDeferred as usize],
            outage_hits: c[Counter::OutageHits as usize],
            backend_skipped: c[Counter::BackendSkipped as usize],
            l1_entries: occupancy.0,
            l1_bytes: occupancy.1,
            hot_keys,
            hot_loads,
            hit_hist: LatencyHistogram(hit.into()),
            load_hist: LatencyHistogram(load.into()),
            semantic: self.semantic.get().map(SemanticCounters::snapshot),
        }
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A snapshot of one cached function's counters. Counters are monotonic for the life of
/// the process.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Stats {
    /// The function's name: `module_path::fn_name` unless `name = "…"` was given.
    pub name: String,
    /// Calls answered from the cache with a fresh value.
    pub hits: u64,
    /// Calls answered with a stale value (past `soft_ttl`) while a refresh ran.
    pub stale_hits: u64,
    /// Calls that found no usable value.
    pub misses: u64,
    /// Source calls (the original function body), including refreshes.
    pub loads: u64,
    /// Source calls that returned `Err` (or panicked).
    pub load_errors: u64,
    /// Callers that joined a load already in flight instead of calling the source.
    pub coalesced: u64,
    /// Callers that waited on another process's lock (`stampede = lock | xfetch`).
    pub lock_waits: u64,
    /// XFetch refreshes started before expiry.
    pub early_refreshes: u64,
    /// Background refreshes started past `soft_ttl`.
    pub background_refreshes: u64,
    /// Keys removed by `*_invalidate`, tags or events.
    pub invalidations: u64,
    /// Entries pushed out of the in-process tier by its capacity bound.
    pub evictions: u64,
    /// Backend failures (timeouts, connection errors, undecodable values) that the call
    /// survived by going to the source.
    pub backend_errors: u64,
    /// Source calls that stampede protection did not prevent: a load of a key while
    /// another load of the same key was running in this process, or (with `stampede =
    /// lock | xfetch`) a load made without the distributed lock because `lock_wait` ran out
    /// or Redis failed. Near zero when protection works; see [`Stats::stampede_signal`].
    pub stampede_escapes: u64,
    /// Values too large for the remote tier (`Config::max_value_bytes`): not stored, and
    /// the key's previous value removed so it is not served instead.
    pub oversized: u64,
    /// Callers that stopped waiting for the source at `timeout` (served the stale or
    /// fail-safe value) or `hard_timeout` (gave up); the load itself may have gone on.
    pub source_timeouts: u64,
    /// Of `hits + stale_hits`, those answered from the shared tier (Redis) rather than the
    /// in-process one.
    pub l2_hits: u64,
    /// In-process copies dropped because another process invalidated or replaced the key
    /// (backplane messages); `invalidations` counts this process's own.
    pub backplane_drops: u64,
    /// Refreshes of stale values not started because `max_refreshes` were already running;
    /// the stale value was served and a later call refreshes.
    pub refreshes_deferred: u64,
    /// In-process hits served while the backplane and Redis were both unreachable (within
    /// `outage_ttl`).
    pub outage_hits: u64,
    /// Shared-tier operations not tried because its circuit breaker was open (the call went
    /// on without it); not counted in `backend_errors`.
    pub backend_skipped: u64,
    /// Entries in the in-process tier now (a gauge, not a counter; 0 without one).
    pub l1_entries: u64,
    /// Bytes the in-process tier holds (keys and values, as the value type's
    /// [`crate::CacheSize`] counts them); `None` when the value type does not implement it.
    pub l1_bytes: Option<u64>,
    /// With `hot_keys = N`: the N keys with the most hits, largest first, with an estimate
    /// of their hits (from a 1-in-64 sample, so ± a few dozen). Empty otherwise.
    pub hot_keys: Vec<(String, u64)>,
    /// With `hot_keys = N`: the N keys with the most source calls, with their count.
    pub hot_loads: Vec<(String, u64)>,
    /// Latency of calls answered from the cache.
    pub hit_hist: LatencyHistogram,
    /// Latency of source calls.
    pub load_hist: LatencyHistogram,
    /// A semantic function's own counters (`#[cached(semantic(…))]`); `None` for others.
    pub semantic: Option<SemanticStats>,
}

/// `Stats` as JSON (or any serde format): every counter, the gauge, the hit ratio, and the
/// latency quantiles (P50, P99, P99.9) in microseconds.
impl serde::Serialize for Stats {
    fn serialize<Ser: serde::Serializer>(&self, ser: Ser) -> Result<Ser::Ok, Ser::Error> {
        use serde::ser::SerializeStruct;
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        let mut s = ser.serialize_struct("Stats", 43)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("hits", &self.hits)?;
        s.serialize_field("stale_hits", &self.stale_hits)?;
        s.serialize_field("misses", &self.misses)?;
        s.serialize_field("hit_ratio", &self.hit_ratio())?;
        s.serialize_field("loads", &self.loads)?;
        s.serialize_field("load_errors", &self.load_errors)?;
        s.serialize_field("coalesced", &self.coalesced)?;
        s.serialize_field("lock_waits", &self.lock_waits)?;
        s.serialize_field("early_refreshes", &self.early_refreshes)?;
        s.serialize_field("background_refreshes", &self.background_refreshes)?;
        s.serialize_field("refreshes_deferred", &self.refreshes_deferred)?;
        s.serialize_field("invalidations", &self.invalidations)?;
        s.serialize_field("backplane_drops", &self.backplane_drops)?;
        s.serialize_field("evictions", &self.evictions)?;
        s.serialize_field("backend_errors", &self.backend_errors)?;
        s.serialize_field("backend_skipped", &self.backend_skipped)?;
        s.serialize_field("stampede_escapes", &self.stampede_escapes)?;
        s.serialize_field("oversized", &self.oversized)?;
        s.serialize_field("source_timeouts", &self.source_timeouts)?;
        s.serialize_field("l2_hits", &self.l2_hits)?;
        s.serialize_field("outage_hits", &self.outage_hits)?;
        s.serialize_field("l1_entries", &self.l1_entries)?;
        s.serialize_field("l1_bytes", &self.l1_bytes)?;
        s.serialize_field("hot_keys", &self.hot_keys)?;
        s.serialize_field("hot_loads", &self.hot_loads)?;
        s.serialize_field("hit_latency_p50_us", &micros(self.hit_latency(0.5)))?;
        s.serialize_field("hit_latency_p99_us", &micros(self.hit_latency(0.99)))?;
        s.serialize_field("hit_latency_p999_us", &micros(self.hit_latency(0.999)))?;
        s.serialize_field("load_latency_p50_us", &micros(self.load_latency(0.5)))?;
        s.serialize_field("load_latency_p99_us", &micros(self.load_latency(0.99)))?;
        s.serialize_field("load_latency_p999_us", &micros(self.load_latency(0.999)))?;
        if let Some(sem) = &self.semantic {
            s.serialize_field("semantic_hits", &sem.hits)?;
            s.serialize_field("semantic_misses", &sem.misses)?;
            s.serialize_field("semantic_near_misses", &sem.near_misses)?;
            s.serialize_field("semantic_verified", &sem.verified)?;
            s.serialize_field("semantic_disagreements", &sem.disagreements)?;
            s.serialize_field("semantic_embed_errors", &sem.embed_errors)?;
            s.serialize_field("semantic_entries", &sem.entries)?;
            s.serialize_field("semantic_score_p50", &sem.score_quantile(0.5))?;
            s.serialize_field("semantic_score_p90", &sem.score_quantile(0.9))?;
            s.serialize_field("semantic_score_p99", &sem.score_quantile(0.99))?;
        } else {
            s.skip_field("semantic_hits")?;
        }
        s.end()
    }
}

impl Stats {
    /// `(hits + stale_hits) / (hits + stale_hits + misses)`, or 0 before any call.
    pub fn hit_ratio(&self) -> f64 {
        let hits = self.hits + self.stale_hits;
        let total = hits + self.misses;
        if total == 0 {
            0.0
        } else {
            hits as f64 / total as f64
        }
    }

    /// The `q`-quantile of hit latency, e.g. `hit_latency(0.99)` for P99.
    pub fn hit_latency(&self, q: f64) -> Duration {
        self.hit_hist.quantile(q)
    }

    /// The `q`-quantile of source-call latency.
    pub fn load_latency(&self, q: f64) -> Duration {
        self.load_hist.quantile(q)
    }

    /// The stampede signal, as the seed defines it: concurrent misses of one key that
    /// *reached the source* ([`Stats::stampede_escapes`]). It sits near zero while
    /// coalescing and locks work; a rising value means the source is being stampeded.
    pub fn stampede_signal(&self) -> u64 {
        self.stampede_escapes
    }

    /// Concurrent misses that protection absorbed: callers that joined a load in flight
    /// (`coalesced`) or waited for another process's lock (`lock_waits`) instead of
    /// calling the source.
    pub fn stampede_absorbed(&self) -> u64 {
        self.coalesced + self.lock_waits
    }
}

fn registry() -> &'static Mutex<Vec<Arc<Recorder>>> {
    static REGISTRY: OnceLock<Mutex<Vec<Arc<Recorder>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Adds a recorder to the list that [`all`] reports.
pub fn register(recorder: Arc<Recorder>) {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(recorder);
}

/// Stats of every cached function that has been called at least once, in first-use order.
pub fn all() -> Vec<Stats> {
    let recorders = registry().lock().unwrap_or_else(|e| e.into_inner()).clone();
    recorders.iter().map(|r| r.snapshot()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_an_eighth() {
        let r = Recorder::new("q");
        for i in 1..=8000u64 {
            r.hit(false, None);
            if i % 8 == 0 {
                r.hist().hit_latency.record(i / 8 * 1000);
            }
        }
        let s = r.snapshot();
        let p50 = s.hit_latency(0.5).as_micros() as f64;
        let p99 = s.hit_latency(0.99).as_micros() as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.125, "p50 {p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.125, "p99 {p99}");
        assert_eq!(s.hits, 8000);
        assert_eq!(s.hit_hist.count(), 1000);
        assert_eq!(s.hit_ratio(), 1.0);
    }

    #[test]
    fn what_ended_threads_counted_is_kept() {
        let r = Arc::new(Recorder::new("ended"));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        r.incr(Counter::Hits);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = r.snapshot();
        assert_eq!(s.hits, 8000);
        assert!(
            r.threads.lock().unwrap().live.is_empty(),
            "ended threads' counters are folded in, not kept one by one"
        );
    }

    #[test]
    fn counters_sum_over_threads() {
        let r = Arc::new(Recorder::new("t"));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        r.incr(Counter::Misses);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(r.snapshot().misses, 8000);
    }
}

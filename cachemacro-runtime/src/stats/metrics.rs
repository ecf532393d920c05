//! Every function's [`Stats`] through the [`metrics`](https://docs.rs/metrics)
//! facade (feature `metrics`): whatever recorder the application installed (Prometheus,
//! StatsD, OpenTelemetry…) gets them.
//!
//! The one label is `function` (the function's name in stats), never the key: keys are
//! unbounded and often personal. Counters are exported as absolute values; each latency
//! distribution as quantile gauges (`quantile` label: 0.5, 0.9, 0.99, 0.999), the way a
//! Prometheus summary is.
//!
//! | metric | kind |
//! |---|---|
//! | `cachemacro_{hits,stale_hits,misses,loads,load_errors,coalesced,lock_waits,early_refreshes,background_refreshes,invalidations,evictions,backend_errors}_total` | counter |
//! | `cachemacro_stampede_escapes_total`, `cachemacro_oversized_total` | counter |
//! | `cachemacro_{source_timeouts,l2_hits,backplane_drops,refreshes_deferred,outage_hits,backend_skipped}_total` | counter |
//! | `cachemacro_l1_entries` (the in-process tier's size now) | gauge |
//! | `cachemacro_hot_key_hits`, `cachemacro_hot_key_loads` (`rank`, `key`: the top N of a function with `hot_keys = N`, so at most N series each) | gauge |
//! | `cachemacro_stampede_signal_total` (the seed's signal: concurrent misses of one key that reached the source; near zero while protection works) | counter |
//! | `cachemacro_stampede_absorbed_total` (coalesced + lock waits: concurrent misses kept from the source) | counter |
//! | `cachemacro_hit_ratio` | gauge |
//! | `cachemacro_hit_latency_seconds`, `cachemacro_load_latency_seconds` (`quantile`) | gauge |
//! | `cachemacro_hit_latency_samples`, `cachemacro_load_latency_samples` | counter |

use std::time::Duration;

use super::{all, Stats};

const QUANTILES: [(f64, &str); 4] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (0.999, "0.999")];

fn export_one(s: &Stats) {
    let f = s.name.clone();
    let counters: [(&'static str, u64); 22] = [
        ("cachemacro_hits_total", s.hits),
        ("cachemacro_stale_hits_total", s.stale_hits),
        ("cachemacro_misses_total", s.misses),
        ("cachemacro_loads_total", s.loads),
        ("cachemacro_load_errors_total", s.load_errors),
        ("cachemacro_coalesced_total", s.coalesced),
        ("cachemacro_lock_waits_total", s.lock_waits),
        ("cachemacro_early_refreshes_total", s.early_refreshes),
        (
            "cachemacro_background_refreshes_total",
            s.background_refreshes,
        ),
        ("cachemacro_invalidations_total", s.invalidations),
        ("cachemacro_evictions_total", s.evictions),
        ("cachemacro_backend_errors_total", s.backend_errors),
        ("cachemacro_stampede_escapes_total", s.stampede_escapes),
        ("cachemacro_oversized_total", s.oversized),
        ("cachemacro_stampede_signal_total", s.stampede_signal()),
        ("cachemacro_stampede_absorbed_total", s.stampede_absorbed()),
        ("cachemacro_source_timeouts_total", s.source_timeouts),
        ("cachemacro_l2_hits_total", s.l2_hits),
        ("cachemacro_backplane_drops_total", s.backplane_drops),
        ("cachemacro_refreshes_deferred_total", s.refreshes_deferred),
        ("cachemacro_outage_hits_total", s.outage_hits),
        ("cachemacro_backend_skipped_total", s.backend_skipped),
    ];
    for (name, value) in counters {
        ::metrics::counter!(name, "function" => f.clone()).absolute(value);
    }
    ::metrics::gauge!("cachemacro_hit_ratio", "function" => f.clone()).set(s.hit_ratio());
    ::metrics::gauge!("cachemacro_l1_entries", "function" => f.clone()).set(s.l1_entries as f64);
    if let Some(bytes) = s.l1_bytes {
        ::metrics::gauge!("cachemacro_l1_bytes", "function" => f.clone()).set(bytes as f64);
    }
    if let Some(sem) = &s.semantic {
        for (name, value) in [
            ("cachemacro_semantic_hits_total", sem.hits),
            ("cachemacro_semantic_misses_total", sem.misses),
            ("cachemacro_semantic_near_misses_total", sem.near_misses),
            ("cachemacro_semantic_verified_total", sem.verified),
            ("cachemacro_semantic_disagreements_total", sem.disagreements),
            ("cachemacro_semantic_embed_errors_total", sem.embed_errors),
        ] {
            ::metrics::counter!(name, "function" => f.clone()).absolute(value);
        }
        ::metrics::gauge!("cachemacro_semantic_entries", "function" => f.clone())
            .set(sem.entries as f64);
        for (q, label) in [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99")] {
            if let Some(score) = sem.score_quantile(q) {
                ::metrics::gauge!("cachemacro_semantic_score", "function" => f.clone(), "quantile" => label)
                    .set(f64::from(score));
            }
        }
    }
    for (name, keys) in [
        ("cachemacro_hot_key_hits", &s.hot_keys),
        ("cachemacro_hot_key_loads", &s.hot_loads),
    ] {
        let now: Vec<(usize, String)> = keys
            .iter()
            .enumerate()
            .map(|(rank, (key, _))| (rank + 1, key.clone()))
            .collect();
        for (rank, (key, n)) in keys.iter().enumerate() {
            ::metrics::gauge!(name, "function" => f.clone(), "rank" => (rank + 1).to_string(), "key" => key.clone())
                .set(*n as f64);
        }
        // A (rank, key) pair that left the top N reads 0 from now on, so the non-zero
        // series are always the current top N (the facade cannot delete a series; an
        // exporter's idle timeout can).
        let mut last = HOT_EXPORTED.lock().unwrap_or_else(|e| e.into_inner());
        let before = last
            .insert((f.clone(), name), now.clone())
            .unwrap_or_default();
        for (rank, key) in before.into_iter().filter(|p| !now.contains(p)) {
            ::metrics::gauge!(name, "function" => f.clone(), "rank" => rank.to_string(), "key" => key)
                .set(0.0);
        }
    }
    for (q, label) in QUANTILES {
        ::metrics::gauge!("cachemacro_hit_latency_seconds", "function" => f.clone(), "quantile" => label)
            .set(s.hit_latency(q).as_secs_f64());
        ::metrics::gauge!("cachemacro_load_latency_seconds", "function" => f.clone(), "quantile" => label)
            .set(s.load_latency(q).as_secs_f64());
    }
    ::metrics::counter!("cachemacro_hit_latency_samples", "function" => f.clone())
        .absolute(s.hit_hist.count());
    ::metrics::counter!("cachemacro_load_latency_samples", "function" => f)
        .absolute(s.load_hist.count());
}

/// Writes the current stats of every cached function to the installed recorder. Call it
/// before rendering a scrape, or let [`export_every`] do it.
pub fn export() {
    for s in all() {
        export_one(&s);
    }
}

/// Describes the metrics (units, help text) to the installed recorder. Optional.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, Unit};
    describe_counter!(
        "cachemacro_hits_total",
        "calls answered from the cache with a fresh value"
    );
    describe_counter!(
        "cachemacro_stale_hits_total",
        "calls answered with a stale value while it was refreshed"
    );
    describe_counter!(
        "cachemacro_misses_total",
        "calls that found no usable value"
    );
    describe_counter!(
        "cachemacro_loads_total",
        "calls of the source (the cached function's body)"
    );
    describe_counter!("cachemacro_load_errors_total", "source calls that failed");
    describe_counter!(
        "cachemacro_coalesced_total",
        "callers that joined a load in flight"
    );
    describe_counter!(
        "cachemacro_lock_waits_total",
        "callers that waited on another process's lock"
    );
    describe_counter!(
        "cachemacro_early_refreshes_total",
        "XFetch refreshes before expiry"
    );
    describe_counter!(
        "cachemacro_background_refreshes_total",
        "refreshes past the soft TTL"
    );
    describe_counter!("cachemacro_invalidations_total", "keys invalidated");
    describe_counter!(
        "cachemacro_evictions_total",
        "entries evicted from the in-process tier by its bound"
    );
    describe_counter!(
        "cachemacro_backend_errors_total",
        "backend failures survived by going to the source"
    );
    describe_counter!(
        "cachemacro_stampede_escapes_total",
        "loads that stampede protection did not prevent (a second load of a key in flight, or a load without the lock)"
    );
    describe_counter!(
        "cachemacro_oversized_total",
        "values too large for the remote tier (not stored; the previous value removed)"
    );
    describe_counter!(
        "cachemacro_stampede_signal_total",
        "concurrent misses of one key that reached the source (near zero while protection works)"
    );
    describe_counter!(
        "cachemacro_stampede_absorbed_total",
        "concurrent misses kept from the source (coalesced + lock waits)"
    );
    describe_gauge!("cachemacro_hit_ratio", "hits / (hits + misses)");
    describe_gauge!(
        "cachemacro_hit_latency_seconds",
        Unit::Seconds,
        "latency of cache hits, by quantile"
    );
    describe_gauge!(
        "cachemacro_load_latency_seconds",
        Unit::Seconds,
        "latency of source calls, by quantile"
    );
}

/// Exports every `interval` from the cache's I/O runtime until the handle is dropped.
#[must_use = "exporting stops when the handle is dropped"]
pub fn export_every(interval: Duration) -> ExportHandle {
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let s = stop.clone();
    crate::io::spawn(async move {
        loop {
            export();
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = s.notified() => break,
            }
        }
    });
    ExportHandle(stop)
}

/// Stops [`export_every`] when dropped.
#[derive(Debug)]
pub struct ExportHandle(std::sync::Arc<tokio::sync::Notify>);

impl Drop for ExportHandle {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// The hot-key series exported last time, per function and metric.
type Exported = std::collections::HashMap<(String, &'static str), Vec<(usize, String)>>;
static HOT_EXPORTED: std::sync::LazyLock<std::sync::Mutex<Exported>> =
    std::sync::LazyLock::new(Default::default);

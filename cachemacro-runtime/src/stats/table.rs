//! The operator's table: one row per function, columns an operator can read at a glance.

use std::time::Duration;

use super::Stats;

/// The table an operator reads: one row per function.
///
/// `src err` counts source calls that failed (`load_errors`: the function's own errors);
/// `cache err` counts shared-tier failures the calls survived (`backend_errors`; operations
/// skipped while its breaker was open are not errors, see `Stats::backend_skipped`);
/// `L2 hits` is the part of the hits answered by Redis rather than the in-process tier;
/// `absorbed` is concurrent misses that coalescing or locks kept from the source, `escaped`
/// those that reached it anyway (the stampede signal: near zero while protection works);
/// `inval` counts this process's invalidations, `dropped` the in-process copies other
/// processes' invalidations removed; `entries` is the in-process tier's size now.
///
/// ```
/// let text = cachemacro_runtime::stats::table(&cachemacro_runtime::stats::all());
/// assert!(text.starts_with("function"));
/// ```
pub fn table(rows: &[Stats]) -> String {
    use std::fmt::Write;
    let width = rows
        .iter()
        .map(|s| s.name.len())
        .chain(std::iter::once(8))
        .max()
        .unwrap_or(8);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:>6} {:>9} {:>7} {:>8} {:>7} {:>7} {:>8} {:>9} {:>8} {:>7} {:>7} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "function", "hit%", "hits", "stale", "L2 hits", "misses", "loads", "src err", "cache err",
        "absorbed", "escaped", "refresh", "evict", "inval", "dropped", "entries", "hit p50",
        "hit p99", "load p50", "load p99",
    );
    for s in rows {
        let _ = writeln!(
            out,
            "{:<width$}  {:>5.1}% {:>9} {:>7} {:>8} {:>7} {:>7} {:>8} {:>9} {:>8} {:>7} {:>7} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
            s.name,
            s.hit_ratio() * 100.0,
            s.hits,
            s.stale_hits,
            s.l2_hits,
            s.misses,
            s.loads,
            s.load_errors,
            s.backend_errors,
            s.stampede_absorbed(),
            s.stampede_escapes,
            s.background_refreshes + s.early_refreshes,
            s.evictions,
            s.invalidations,
            s.backplane_drops,
            s.l1_entries,
            human(s.hit_latency(0.5)),
            human(s.hit_latency(0.99)),
            human(s.load_latency(0.5)),
            human(s.load_latency(0.99)),
        );
    }
    // Hot keys, for the functions that track them (`hot_keys = N`).
    for s in rows
        .iter()
        .filter(|s| !s.hot_keys.is_empty() || !s.hot_loads.is_empty())
    {
        let list = |keys: &[(String, u64)]| {
            keys.iter()
                .map(|(k, n)| format!("{k} ({n})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "{}: hottest by hits: {}", s.name, list(&s.hot_keys));
        let _ = writeln!(out, "{}: hottest by loads: {}", s.name, list(&s.hot_loads));
    }
    out
}

fn human(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "-".into()
    } else if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

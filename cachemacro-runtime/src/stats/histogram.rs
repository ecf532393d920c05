//! Latency histograms: log-linear buckets of atomic counts, recorded without locks, and the
//! snapshot type with its quantiles.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Histogram layout: values in nanoseconds, log2 major buckets with `SUB` linear
/// sub-buckets each (relative error under 1/SUB), from 1 ns to about 2^MAX_POW ns (≈ 275 s).
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
const MAX_POW: usize = 38;
pub(super) const BUCKETS: usize = (MAX_POW + 1) * SUB;

pub(crate) struct Histogram {
    pub(super) buckets: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// The distribution so far.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn snapshot(&self) -> LatencyHistogram {
        LatencyHistogram(self.buckets.iter().map(|b| b.load(Relaxed)).collect())
    }

    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline]
    pub(crate) fn record(&self, nanos: u64) {
        self.buckets[bucket_of(nanos)].fetch_add(1, Relaxed);
    }
}

#[inline]
fn bucket_of(nanos: u64) -> usize {
    if nanos < SUB as u64 {
        return nanos as usize;
    }
    let pow = 63 - nanos.leading_zeros(); // >= SUB_BITS
    let sub = (nanos >> (pow - SUB_BITS)) as usize & (SUB - 1);
    let idx = (pow - SUB_BITS + 1) as usize * SUB + sub;
    idx.min(BUCKETS - 1)
}

/// The smallest value that lands in bucket `idx`, and the bucket's width.
fn bucket_bounds(idx: usize) -> (u64, u64) {
    if idx < SUB {
        return (idx as u64, 1);
    }
    let major = idx / SUB;
    let sub = (idx % SUB) as u64;
    let pow = major as u32 + SUB_BITS - 1;
    let width = 1u64 << (pow - SUB_BITS);
    ((1u64 << pow) + sub * width, width)
}

/// A latency distribution captured in a [`Stats`](super::Stats) snapshot.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct LatencyHistogram(pub(super) Arc<[u64]>);

impl LatencyHistogram {
    /// Number of recorded samples.
    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q`-quantile (`0.0..=1.0`, e.g. `0.99`), to within 1/8 of its value;
    /// zero when nothing was recorded. `q` outside `0..=1` is clamped.
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (lo, width) = bucket_bounds(i);
                return Duration::from_nanos(lo + width / 2);
            }
        }
        Duration::ZERO
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        let mut last = 0;
        for v in (0..5000u64).chain([1 << 20, 123_456_789, 1 << 37]) {
            let b = bucket_of(v);
            assert!(b >= last || v >= 5000, "bucket order at {v}");
            last = b;
            let (lo, w) = bucket_bounds(b);
            assert!(lo <= v && v < lo + w, "{v} not in [{lo}, {})", lo + w);
        }
    }
}

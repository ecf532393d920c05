//! The semantic cache's own counters ([`SemanticStats`]): semantic hits and misses, near
//! misses, the distribution of best scores, and what the sampled verification found.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Score buckets: cosine similarity in steps of 0.01 from -1.00 to 1.00.
#[cfg_attr(not(feature = "semantic"), allow(dead_code))]
const SCORE_BUCKETS: usize = 201;

/// The live counters of one semantic function.
pub(crate) struct SemanticCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub near_misses: AtomicU64,
    pub verified: AtomicU64,
    pub disagreements: AtomicU64,
    pub embed_errors: AtomicU64,
    pub entries: AtomicU64,
    scores: Box<[AtomicU64]>,
}

#[cfg_attr(not(feature = "semantic"), allow(dead_code))]
impl SemanticCounters {
    pub fn new() -> Self {
        Self {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            near_misses: AtomicU64::new(0),
            verified: AtomicU64::new(0),
            disagreements: AtomicU64::new(0),
            embed_errors: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            scores: (0..SCORE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records the best score a look-up found (none when the scope was empty).
    pub fn score(&self, score: f32) {
        if score.is_nan() {
            return;
        }
        let i = ((score.clamp(-1.0, 1.0) + 1.0) * 100.0).round() as usize;
        self.scores[i.min(SCORE_BUCKETS - 1)].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> SemanticStats {
        SemanticStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            near_misses: self.near_misses.load(Relaxed),
            verified: self.verified.load(Relaxed),
            disagreements: self.disagreements.load(Relaxed),
            embed_errors: self.embed_errors.load(Relaxed),
            entries: self.entries.load(Relaxed),
            scores: self.scores.iter().map(|b| b.load(Relaxed)).collect(),
        }
    }
}

/// A snapshot of a semantic function's counters (`#[cached(semantic(…))]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemanticStats {
    /// Calls answered with the answer of a stored prompt whose similarity cleared the
    /// threshold.
    pub hits: u64,
    /// Calls that found no stored prompt close enough (the source was called).
    pub misses: u64,
    /// Of the misses, those whose best score was within 0.05 under the threshold: how many
    /// a slightly lower threshold would have answered (and risked answering wrongly).
    pub near_misses: u64,
    /// Hits that were also sent to the source to check the stored answer (`verify`).
    pub verified: u64,
    /// Of those, the ones where the source's answer disagreed (the judge said no): the
    /// drift alarm. Each is also logged at `warn`.
    pub disagreements: u64,
    /// Prompts that could not be embedded (the call went to the source, uncached).
    pub embed_errors: u64,
    /// Stored prompts over every scope (a gauge; prompts that expired or whose tag was
    /// invalidated are counted until their scope's next store drops them).
    pub entries: u64,
    /// How many look-ups found each best score, by hundredths from -1.00 (index 0) to
    /// 1.00 (index 200).
    pub scores: Vec<u64>,
}

impl SemanticStats {
    /// The best-score quantile `q` (0.0..=1.0), to the hundredth; `None` before any look-up
    /// that found a candidate.
    pub fn score_quantile(&self, q: f64) -> Option<f32> {
        let total: u64 = self.scores.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.scores.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(i as f32 / 100.0 - 1.0);
            }
        }
        None
    }

    /// `hits / (hits + misses)`.
    pub fn hit_ratio(&self) -> f64 {
        let n = self.hits + self.misses;
        if n == 0 {
            0.0
        } else {
            self.hits as f64 / n as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_quantiles() {
        let c = SemanticCounters::new();
        for s in [0.5f32, 0.9, 0.95, 0.99] {
            c.score(s);
        }
        let s = c.snapshot();
        assert_eq!(s.score_quantile(0.5), Some(0.9));
        assert_eq!(s.score_quantile(1.0), Some(0.99));
        assert_eq!(s.score_quantile(0.0), Some(0.5));
        assert_eq!(SemanticStats::default().score_quantile(0.5), None);
    }
}

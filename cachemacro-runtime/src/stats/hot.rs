//! The hottest keys of a function (opt-in, `hot_keys = N`): a Space-Saving sketch (Metwally
//! et al., 2005) of bounded size per counter, so memory and the label set stay bounded
//! whatever the key space. Hits are recorded from the same 1-in-[`HIT_SAMPLE`] sample as
//! hit latency (estimates are scaled back up); loads are all recorded.
//!
//! [`HIT_SAMPLE`]: super::HIT_SAMPLE

use std::sync::Mutex;

/// A bounded top-k sketch.
/// Keys with their counts, highest first.
pub type Ranked = Vec<(String, u64)>;

pub(crate) struct Sketch {
    slots: Vec<(String, u64)>,
    capacity: usize,
}

impl Sketch {
    fn new(capacity: usize) -> Self {
        Self {
            slots: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Counts one occurrence of `key`: its slot, a free one, or the smallest one's
    /// (whose count it inherits, an overestimate by at most that count).
    fn record(&mut self, key: &str, weight: u64) {
        if let Some(slot) = self.slots.iter_mut().find(|(k, _)| k == key) {
            slot.1 += weight;
            return;
        }
        if self.slots.len() < self.capacity {
            self.slots.push((key.to_owned(), weight));
            return;
        }
        if let Some(min) = self.slots.iter_mut().min_by_key(|(_, c)| *c) {
            min.0.clear();
            min.0.push_str(key);
            min.1 += weight;
        }
    }

    /// The `n` largest, largest first.
    fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut all = self.slots.clone();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

/// The hot keys of one function, by hits and by loads.
pub(crate) struct HotKeys {
    n: usize,
    hits: Mutex<Sketch>,
    loads: Mutex<Sketch>,
}

impl HotKeys {
    /// Tracks the top `n` (each sketch keeps 4n candidates).
    pub fn new(n: usize) -> Self {
        Self {
            n,
            hits: Mutex::new(Sketch::new(4 * n)),
            loads: Mutex::new(Sketch::new(4 * n)),
        }
    }

    /// A sampled hit (one of [`super::HIT_SAMPLE`]).
    pub fn hit(&self, key: &str) {
        self.hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(key, u64::from(super::HIT_SAMPLE));
    }

    /// A source call.
    pub fn load(&self, key: &str) {
        self.loads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(key, 1);
    }

    /// The top keys by hits (estimated) and by loads.
    pub fn top(&self) -> (Ranked, Ranked) {
        let hits = self
            .hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .top(self.n);
        let loads = self
            .loads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .top(self.n);
        (hits, loads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_hitters_are_found_in_a_long_tail() {
        let mut s = Sketch::new(40);
        // 10 hot keys seen 500 times each among 5,000 keys seen once, interleaved: every
        // key above N/k (10,000 / 40) is guaranteed a slot.
        for round in 0..500u64 {
            for hot in 0..10u64 {
                s.record(&format!("hot:{hot}"), 1);
            }
            for cold in 0..10u64 {
                s.record(&format!("cold:{}", round * 10 + cold), 1);
            }
        }
        let top: Vec<String> = s.top(10).into_iter().map(|(k, _)| k).collect();
        for hot in 0..10 {
            assert!(top.contains(&format!("hot:{hot}")), "{top:?}");
        }
    }
}

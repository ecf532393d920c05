//! The envelope every tier keeps around a value: deadlines, the measured load time δ that
//! XFetch needs, and the tag stamp that makes tag invalidation a comparison, not a scan.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::coherence::tags;

/// A value with its deadlines, as the in-process tier holds it.
#[derive(Debug)]
pub(crate) struct Entry<V> {
    pub value: V,
    /// After this the value is stale (served while one refresh runs).
    pub soft: Option<Instant>,
    /// After this no tier returns the value (fail-safe aside).
    pub hard: Instant,
    /// How long the load that produced the value took (XFetch's δ).
    pub delta: Duration,
    /// Tags and the tag epoch at which the load that produced the value started.
    pub tags: Option<Arc<TagStamp>>,
}

/// The tags of an entry and the tag epoch its load started at.
#[derive(Debug)]
pub(crate) struct TagStamp {
    pub tags: Box<[String]>,
    pub stamp: u64,
    /// The newest tag epoch at which the entry was found valid (fast path).
    checked: AtomicU64,
}

impl TagStamp {
    pub fn new(tags: Vec<String>, stamp: u64) -> Option<Arc<Self>> {
        (!tags.is_empty()).then(|| {
            Arc::new(Self {
                tags: tags.into_boxed_slice(),
                stamp,
                checked: AtomicU64::new(stamp),
            })
        })
    }

    /// Whether no tag of the entry was invalidated after its load started.
    pub fn valid(&self) -> bool {
        let now = tags().epoch();
        if self.checked.load(Relaxed) == now {
            return true;
        }
        if tags().any_invalidated_after(&self.tags, self.stamp) {
            return false;
        }
        self.checked.fetch_max(now, Relaxed);
        true
    }
}

/// XFetch's decision for a value expiring in `left`, whose load took `delta`:
/// refresh now when `δ·β·(−ln rand) ≥ left`.
pub(crate) fn xfetch_due(left: Duration, delta: Duration, beta: f64) -> bool {
    if left.is_zero() {
        return true;
    }
    if delta.is_zero() {
        return false;
    }
    // 1 - f64() is in (0, 1], so ln is finite and <= 0.
    let gap = delta.as_secs_f64() * beta * -(1.0 - fastrand::f64()).ln();
    gap >= left.as_secs_f64()
}

/// What a read makes of an entry at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Past the soft deadline, before the hard one.
    Stale,
    /// Past the hard deadline (or tag-invalidated): not to be served, except by fail-safe.
    Expired,
}

impl<V> Entry<V> {
    pub fn freshness(&self, now: Instant) -> Freshness {
        if now >= self.hard || self.tags.as_ref().is_some_and(|t| !t.valid()) {
            Freshness::Expired
        } else if self.soft.is_some_and(|s| now >= s) {
            Freshness::Stale
        } else {
            Freshness::Fresh
        }
    }

    /// XFetch (Vattani et al., VLDB 2015): refresh early when
    /// `now - δ·β·ln(rand()) >= expiry`, `expiry` being the soft deadline if any, else the
    /// hard one. The probability rises as expiry nears and with the cost of a load.
    pub fn xfetch_due(&self, now: Instant, beta: f64) -> bool {
        let expiry = self.soft.unwrap_or(self.hard);
        xfetch_due(expiry.saturating_duration_since(now), self.delta, beta)
    }

    /// Whether a fail-safe window of `window` past the hard deadline still covers `now`.
    pub fn within_fail_safe(&self, now: Instant, window: Duration) -> bool {
        now < self.hard + window && self.tags.as_ref().is_none_or(|t| t.valid())
    }
}

//! The envelope every tier keeps around a value: deadlines, the measured load time δ that
//! XFetch needs, and the tag stamp that makes tag invalidation a comparison, not a scan.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::clock;
use crate::coherence::tags;

/// A value with its deadlines, as the in-process tier holds it (inline: a hit clones the
/// value and copies the rest). Deadlines are on the cache's clock ([`clock`]).
#[derive(Debug, Clone)]
pub(crate) struct Entry<V> {
    pub value: V,
    /// After this the value is stale (served while one refresh runs); `u64::MAX`: never.
    pub soft: u64,
    /// After this no tier returns the value (fail-safe aside).
    pub hard: u64,
    /// When the value was produced as this process knows it: the start of the load that
    /// made it, or when it was read from a shared tier.
    pub born: u64,
    /// How long the load that produced the value took (XFetch's δ), in microseconds.
    pub delta_us: u32,
    /// Tags and the tag epoch at which the load that produced the value started.
    pub tags: Option<Arc<TagStamp>>,
    /// This entry's identity, unique in the process (HTTP entity tags are made from it).
    pub id: u64,
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
    /// An entry made at `now` that turns stale after `soft` and expires after `hard`.
    pub fn new(
        value: V,
        now: u64,
        soft: Option<Duration>,
        hard: Duration,
        delta: Duration,
        tags: Option<Arc<TagStamp>>,
    ) -> Self {
        Self {
            value,
            soft: soft.map_or(u64::MAX, |s| now.saturating_add(clock::nanos(s))),
            hard: now.saturating_add(clock::nanos(hard)),
            born: now,
            delta_us: u32::try_from(delta.as_micros()).unwrap_or(u32::MAX),
            tags,
            id: crate::served::next_identity(),
        }
    }

    /// What a call that read this entry saw of it.
    pub fn seen(&self) -> crate::served::Seen {
        crate::served::Seen {
            soft: self.soft,
            hard: self.hard,
            born: self.born,
            delta: self.delta(),
            id: self.id,
        }
    }

    /// How long the load that produced the value took.
    pub fn delta(&self) -> Duration {
        Duration::from_micros(u64::from(self.delta_us))
    }

    #[inline]
    pub fn freshness(&self, now: u64) -> Freshness {
        if now >= self.hard || self.tags.as_ref().is_some_and(|t| !t.valid()) {
            Freshness::Expired
        } else if now >= self.soft {
            Freshness::Stale
        } else {
            Freshness::Fresh
        }
    }

    /// XFetch (Vattani et al., VLDB 2015): refresh early when
    /// `now - δ·β·ln(rand()) >= expiry`, `expiry` being the soft deadline if any, else the
    /// hard one. The probability rises as expiry nears and with the cost of a load.
    pub fn xfetch_due(&self, now: u64, beta: f64) -> bool {
        let expiry = if self.soft == u64::MAX {
            self.hard
        } else {
            self.soft
        };
        xfetch_due(
            Duration::from_nanos(expiry.saturating_sub(now)),
            self.delta(),
            beta,
        )
    }

    /// Whether a fail-safe window of `window` past the hard deadline still covers `now`.
    pub fn within_fail_safe(&self, now: u64, window: Duration) -> bool {
        now < self.hard.saturating_add(clock::nanos(window))
            && self.tags.as_ref().is_none_or(|t| t.valid())
    }
}

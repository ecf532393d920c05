//! The process's tag clock: `invalidate_tag` is one write here, and a reader checks one
//! atomic (the epoch) unless it moved.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{OnceLock, RwLock};

/// The process's tag clock. `invalidate(tag)` records the tag at a new epoch; an entry
/// whose load started at epoch `s` is valid while every one of its tags was last
/// invalidated at or before `s`.
///
/// Bounded: it remembers the [`MAX_TAGS`] most recent tag invalidations (its own and those
/// heard over the backplane). Past that it forgets the older half and raises a *floor*: an
/// entry with tags whose load started before the floor counts as invalidated (it is
/// reloaded, never served stale).
pub(crate) struct TagClock {
    epoch: AtomicU64,
    memory: RwLock<TagMemory>,
}

#[derive(Default)]
struct TagMemory {
    invalidated: HashMap<String, u64>,
    /// Every forgotten invalidation happened at or before this epoch.
    floor: u64,
}

/// Tag invalidations a process remembers at most (see [`TagClock`]).
pub(crate) const MAX_TAGS: usize = 65_536;

impl TagClock {
    pub fn epoch(&self) -> u64 {
        self.epoch.load(SeqCst)
    }

    pub fn invalidate(&self, tag: &str) {
        let mut m = self.memory.write().unwrap_or_else(|e| e.into_inner());
        let e = self.epoch.fetch_add(1, SeqCst) + 1;
        m.invalidated.insert(tag.to_owned(), e);
        if m.invalidated.len() > MAX_TAGS {
            let mut epochs: Vec<u64> = m.invalidated.values().copied().collect();
            let (_, &mut cutoff, _) = epochs.select_nth_unstable(MAX_TAGS / 2);
            m.invalidated.retain(|_, &mut at| at > cutoff);
            m.floor = m.floor.max(cutoff);
        }
    }

    pub fn any_invalidated_after(&self, tags: &[String], stamp: u64) -> bool {
        if tags.is_empty() {
            return false;
        }
        let m = self.memory.read().unwrap_or_else(|e| e.into_inner());
        stamp < m.floor
            || tags
                .iter()
                .any(|t| m.invalidated.get(t.as_str()).is_some_and(|&e| e > stamp))
    }

    /// Tag invalidations remembered now (at most [`MAX_TAGS`]).
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.memory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .invalidated
            .len()
    }
}

/// The implicit tag of a function's values in shared tiers: what `<fn>_clear` bumps. It
/// starts with a control character, which no tag a template renders from its own text does.
pub(crate) fn fn_tag(name: &str) -> String {
    format!("\u{1}fn:{name}")
}

pub(crate) fn tags() -> &'static TagClock {
    static CLOCK: OnceLock<TagClock> = OnceLock::new();
    CLOCK.get_or_init(|| TagClock {
        epoch: AtomicU64::new(0),
        memory: RwLock::new(TagMemory::default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_clock_is_bounded_and_never_revalidates_what_it_forgot() {
        let clock = TagClock {
            epoch: AtomicU64::new(0),
            memory: RwLock::new(TagMemory::default()),
        };
        clock.invalidate("early");
        let stamp_before = clock.epoch() - 1; // an entry loaded before "early" was invalidated
        let stamp_after = clock.epoch();
        let early = ["early".to_owned()];
        assert!(clock.any_invalidated_after(&early, stamp_before));
        assert!(!clock.any_invalidated_after(&early, stamp_after));
        for i in 0..(MAX_TAGS * 2) {
            clock.invalidate(&format!("t{i}"));
        }
        assert!(
            clock.remembered() <= MAX_TAGS,
            "{} remembered",
            clock.remembered()
        );
        // "early" is forgotten, but an entry loaded before it was invalidated stays invalid.
        assert!(clock.any_invalidated_after(&early, stamp_before));
        // A recent invalidation is still exact, and an entry loaded now is valid.
        let now = clock.epoch();
        let recent = [format!("t{}", MAX_TAGS * 2 - 1)];
        assert!(clock.any_invalidated_after(&recent, now - 1));
        assert!(!clock.any_invalidated_after(&recent, now));
        assert!(
            !clock.any_invalidated_after(&[], 0),
            "an entry without tags is never invalidated by tags"
        );
    }
}

//! What a read or a load carries from one stage to the next: the snapshot of the key's
//! local invalidation state, the ticket a load needs to write L2, why a value is due for a
//! refresh, and a held lock.

use std::sync::Arc;

use crate::entry::Entry;
use crate::tier::Tier;

/// What a load (or a read that fills L1) saw of the key's invalidation state when it
/// started: its local generation and the tag epoch. A result is current while neither
/// moved for the key and its tags.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub generation: u64,
    pub stamp: u64,
}

/// Why a value is due for a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Past `soft_ttl`.
    Stale,
    /// Fresh, but XFetch says refresh now.
    Early,
}

/// A held distributed lock on a key. Released (and its waiters woken) when dropped: after
/// the load's write on success, on failure, on a panic, or if the caller goes away.
pub(crate) struct Lock {
    /// The tier to release it on; `None` once known not to be held.
    tier: Option<Arc<dyn Tier>>,
    key: crate::key::Key,
    pub(super) token: u64,
}

impl Lock {
    /// A lock about to be asked for, with a fresh token: if the caller is cancelled while
    /// it is being taken, dropping it still releases it (a no-op if it was never taken).
    pub(super) fn asking(tier: Arc<dyn Tier>, key: &str) -> Self {
        Self {
            tier: Some(tier),
            key: key.into(),
            token: fastrand::u64(1..),
        }
    }

    /// Not taken (another holds it): nothing to release.
    pub(super) fn not_taken(mut self) {
        self.tier = None;
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(tier) = self.tier.take() {
            tier.unlock(std::mem::take(&mut self.key).into_string(), self.token);
        }
    }
}

/// What a load knows of the shared tier before the source runs: what it must check before
/// it writes there, what stands in if the source fails, and the lock it holds.
pub(crate) struct Ticket<V> {
    /// The key's generation in L2 when the load started (`None`: unknown, do not write L2).
    pub generation: Option<u64>,
    /// When that generation was asked for. A generation is remembered in L2 for
    /// `generation_retention`; a load older than that cannot prove that no invalidation
    /// happened, so it does not write.
    pub read_at: std::time::Instant,
    /// L2 versions of the call's tags when the load started.
    pub tag_versions: Vec<u64>,
    /// A value that may stand in for a failing source.
    pub fallback: Option<Entry<V>>,
    /// The distributed lock this load holds (`stampede = lock | xfetch`), released when
    /// the ticket is dropped, after the write.
    pub lock: Option<Lock>,
}

impl<V> Ticket<V> {
    /// A ticket without L2 (in-process only, or L2 did not answer).
    pub(super) fn local(fallback: Option<Entry<V>>) -> Self {
        Self {
            generation: None,
            read_at: std::time::Instant::now(),
            tag_versions: Vec::new(),
            fallback,
            lock: None,
        }
    }

    /// Takes the generation and tag versions of a newer read, keeping this ticket's
    /// fallback when the read has none.
    pub(super) fn renew(&mut self, fresh: Ticket<V>) {
        if fresh.generation.is_some() {
            self.generation = fresh.generation;
            self.read_at = fresh.read_at;
            self.tag_versions = fresh.tag_versions;
        }
        if self.fallback.is_none() {
            self.fallback = fresh.fallback;
        }
    }
}

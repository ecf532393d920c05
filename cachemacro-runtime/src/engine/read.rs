//! The read path: the hit path (L1, or one L2 read when L1 is not in use) and one round of
//! the miss path (join the key's flight or lead it; as the leader, check L1 again, read L2,
//! take the distributed lock or wait for its holder).

use std::sync::Arc;

use std::time::Instant;

use super::l2::{Found, Locked, Peeked};
use super::ticket::{Due, Snapshot, Ticket};
use super::wait::SourceWait;
use super::Engine;
use crate::clock;
use crate::entry::{Entry, Freshness};
use crate::flight::{Landed, Leader, Role, Via};
use crate::key::Probe;
use crate::kind::Kind;
use crate::policy::Stampede;
use crate::served::Outcome;
use crate::stats::Counter;
use crate::tier::memory::MemoryStore;

/// What the hit path decided.
pub(super) enum Lookup<V: Clone> {
    /// Serve this value; nothing else to do.
    Hit(V),
    /// Serve `entry` (stale, or XFetch-due) and refresh it under `leader`.
    Refresh {
        leader: Leader<V>,
        entry: Entry<V>,
        due: Due,
    },
    /// Load; `fallback` may stand in for a failing source (fail-safe).
    Miss { fallback: Option<Entry<V>> },
}

/// What one round of the miss path leaves to do.
pub(super) enum Miss<V: Clone, E> {
    /// Return this value (from another caller's flight, L1, L2 or another process).
    Done(V),
    /// Return this error (the leader's, shared).
    Fail(E),
    /// The flight was abandoned or superseded: go round again.
    Retry,
    /// Call the source under this flight (if any) with this ticket.
    Load(Option<Leader<V>>, Ticket<V>, Snapshot),
    /// L2 had a value due for a refresh.
    Due {
        leader: Option<Leader<V>>,
        value: V,
        due: Due,
        ticket: Ticket<V>,
        snap: Snapshot,
    },
}

impl<R: 'static, S: Kind<R>> Engine<R, S> {
    /// The hit path: L1 when it may be read, else (`backend = redis`, or `tiered` while its
    /// backplane is down) one L2 read before any flight, so hits of different callers
    /// never wait on each other, and neither do stale reads: a stale or XFetch-due value is
    /// served at once while one refresh per key runs.
    pub(super) async fn hit_path(
        &self,
        key: &str,
        tags: &[String],
        started: Option<Instant>,
    ) -> Lookup<S::Value> {
        if let Some(l1) = self.local_read() {
            return self.lookup(l1, key, started);
        }
        let Some(remote) = &self.remote else {
            return Lookup::Miss { fallback: None };
        };
        match remote.peek(self, key, tags, started).await {
            Peeked::Fresh(v) => {
                self.note(key, Outcome::Hit, None);
                Lookup::Hit(v)
            }
            Peeked::Due(entry, due) => {
                self.stats.incr(Counter::L2Hits);
                self.due(key, entry, due, started)
            }
            Peeked::Expired(entry) => Lookup::Miss {
                fallback: Some(entry),
            },
            Peeked::Miss => Lookup::Miss { fallback: None },
        }
    }

    /// The hit path's common case, kept small: a fresh L1 value that needs nothing else
    /// (not stale, not XFetch-due). `None`: anything else, for [`Engine::lookup`].
    #[inline]
    pub(super) fn fresh_hit(&self, key: Probe<'_>, started: Option<Instant>) -> Option<S::Value> {
        let (l1, floor) = self.local_read()?;
        let hot = started.is_some() && self.stats.tracks_hot_keys();
        let text = match key {
            Probe::Bytes(b) => Some(b),
            // A packed key is not rendered here: a call that must say its key (a sampled
            // hit with `hot_keys`, an observer) takes the slow path, which renders it.
            Probe::Packed(_) if hot || crate::served::watching() => return None,
            Probe::Packed(_) => None,
        };
        let entry = l1.get_probe(key)?;
        let now = clock::now();
        if entry.freshness(now) != Freshness::Fresh
            || (self.policy.stampede == Stampede::Xfetch && entry.xfetch_due(now, self.policy.beta))
        {
            return None;
        }
        if floor.is_some() && !self.admits(entry.born, floor) {
            return None;
        }
        self.stats.hit(false, started);
        if let Some(key) = text {
            if hot {
                self.stats
                    .hot_hit(std::str::from_utf8(key).unwrap_or_default());
            }
            if crate::served::watching() {
                // Inside the check: the key's UTF-8 validation is not paid outside any scope.
                let key = std::str::from_utf8(key).unwrap_or_default();
                self.note(key, Outcome::Hit, Some(&entry));
            }
        }
        Some(entry.value)
    }

    /// The L1 look-up: one clock read (the cache's coarse clock), one map read.
    #[inline]
    pub(super) fn lookup(
        &self,
        (l1, floor): (&MemoryStore<S::Value>, Option<super::Floor>),
        key: &str,
        started: Option<Instant>,
    ) -> Lookup<S::Value> {
        let Some(entry) = l1.get(key) else {
            return Lookup::Miss { fallback: None };
        };
        if !self.admits(entry.born, floor) {
            // Too old to trust during an outage: load (its result replaces it).
            return Lookup::Miss { fallback: None };
        }
        let now = clock::now();
        match entry.freshness(now) {
            Freshness::Fresh => {
                if self.policy.stampede == Stampede::Xfetch
                    && entry.xfetch_due(now, self.policy.beta)
                {
                    if let Some(leader) = self.lead_refresh(key) {
                        self.note(key, Outcome::Hit, Some(&entry));
                        return Lookup::Refresh {
                            leader,
                            entry,
                            due: Due::Early,
                        };
                    }
                }
                self.hit_of(key, false, started);
                self.note(key, Outcome::Hit, Some(&entry));
                Lookup::Hit(entry.value)
            }
            Freshness::Stale => self.due(key, entry, Due::Stale, started),
            Freshness::Expired => {
                let keep = self
                    .policy
                    .fail_safe
                    .is_some_and(|w| entry.within_fail_safe(now, w));
                if !keep {
                    l1.remove_entry(key, &entry);
                }
                Lookup::Miss {
                    fallback: keep.then_some(entry),
                }
            }
        }
    }

    /// A value due for a refresh: this caller leads the key's one refresh if none is in
    /// flight; either way it is served at once.
    fn due(
        &self,
        key: &str,
        entry: Entry<S::Value>,
        due: Due,
        started: Option<Instant>,
    ) -> Lookup<S::Value> {
        let outcome = match due {
            Due::Stale => Outcome::Stale,
            Due::Early => Outcome::Hit,
        };
        self.note(key, outcome, Some(&entry));
        if let Some(leader) = self.lead_refresh(key) {
            return Lookup::Refresh { leader, entry, due };
        }
        self.hit_of(key, due == Due::Stale, started);
        Lookup::Hit(entry.value)
    }

    /// Counts a hit of `key` (its latency and, with `hot_keys`, its key when sampled).
    #[inline]
    pub(super) fn hit_of(&self, key: &str, stale: bool, started: Option<Instant>) {
        self.stats.hit(stale, started);
        if started.is_some() && self.stats.tracks_hot_keys() {
            self.stats.hot_hit(key);
        }
    }

    /// Leads the one refresh of `key`'s due value, unless one is in flight or the
    /// function runs `max_refreshes` already (then the due value is served and a later call
    /// refreshes: keys loaded together do not all refresh at once).
    pub(super) fn lead_refresh(&self, key: &str) -> Option<Leader<S::Value>> {
        match self
            .flights
            .try_lead_refresh(key, self.policy.max_refreshes)
        {
            Ok(leader) => Some(leader),
            Err(true) => None,
            Err(false) => {
                self.stats.incr(Counter::RefreshesDeferred);
                None
            }
        }
    }

    /// One round of the miss path, shared by both flavours: join the key's flight or lead
    /// it; as the leader, check L1 again, read L2, and take the distributed lock (or wait
    /// for its holder's value). What is left to the caller is running the source.
    pub(super) async fn miss(
        self: &Arc<Self>,
        key: &str,
        tags: &[String],
        fallback: &mut Option<Entry<S::Value>>,
        joined: &mut bool,
        wait: Option<&SourceWait>,
    ) -> Miss<S::Value, S::Error> {
        let leader = match self.role(key, joined) {
            Some(Role::Waiter(flight)) => {
                if let Some(w) = wait {
                    w.begin(); // waiting for another caller's load
                }
                return match flight.wait().await {
                    Landed::Value(v, via) => {
                        self.count_joined(!matches!(via, Via::Source { .. }));
                        match via {
                            // The leader read it from a cache: its age is not known here,
                            // so an observer counts it as having used up its freshness.
                            Via::Cache { stale: false } => self.note(key, Outcome::Hit, None),
                            Via::Cache { stale: true } => self.note(key, Outcome::Stale, None),
                            Via::Source { kept: true, seen } => {
                                self.note_seen(key, Outcome::Joined, seen)
                            }
                            Via::Source { kept: false, .. } => {
                                self.note_unkept(key, Outcome::Joined)
                            }
                            Via::FailSafe => self.note(key, Outcome::FailSafe, None),
                        }
                        Miss::Done(v)
                    }
                    Landed::Failed(shared) => {
                        self.stats.incr(Counter::Misses);
                        let restore = self.hooks.errors.map(|s| s.restore);
                        match shared.as_deref().zip(restore).and_then(|(e, r)| r(e)) {
                            // The leader's error is ours too: one source call for all.
                            Some(error) => Miss::Fail(error),
                            // It cannot be shared: call our own source, alone.
                            None => {
                                Miss::Load(None, Ticket::local(fallback.take()), self.snapshot(key))
                            }
                        }
                    }
                    // The leader went away: go round again (a new flight).
                    Landed::Abandoned => Miss::Retry,
                    // Its key was invalidated or replaced while it ran (or a `*_refresh`
                    // failed): the fallback this caller holds from before is kept only if the
                    // in-process tier still holds that very entry (nothing dropped it).
                    // Without one, it is let go. Go round again.
                    Landed::Superseded => {
                        let still = |e: &Entry<S::Value>| {
                            self.local()
                                .and_then(|l1| l1.get(key))
                                .is_some_and(|now| now.id == e.id)
                        };
                        if !fallback.as_ref().is_some_and(still) {
                            *fallback = None;
                        }
                        Miss::Retry
                    }
                };
            }
            Some(Role::Leader(l)) => Some(l),
            None => None,
        };
        let snap = self.snapshot(key);
        if let Some(v) = self.recheck(key) {
            self.land(leader, tags, snap, &v, Via::Cache { stale: false });
            return Miss::Done(v);
        }
        let Some(remote) = &self.remote else {
            self.stats.incr(Counter::Misses);
            return Miss::Load(leader, Ticket::local(fallback.take()), snap);
        };
        let ticket = match remote
            .read(self, key, tags, snap, fallback.take(), true)
            .await
        {
            Found::Value(value, None, _) => {
                self.land(leader, tags, snap, &value, Via::Cache { stale: false });
                self.note(key, Outcome::Hit, None);
                return Miss::Done(value);
            }
            Found::Value(value, Some(due), ticket) => {
                let outcome = match due {
                    Due::Stale => Outcome::Stale,
                    Due::Early => Outcome::Hit,
                };
                self.note(key, outcome, None);
                return Miss::Due {
                    leader,
                    value,
                    due,
                    ticket,
                    snap,
                };
            }
            Found::Nothing(ticket) => ticket,
        };
        if self.policy.stampede < Stampede::Lock {
            self.stats.incr(Counter::Misses);
            return Miss::Load(leader, ticket, snap);
        }
        if ticket.generation.is_none() {
            // L2 did not answer the read: no lock either, an escape.
            self.stats.incr(Counter::StampedeEscapes);
            self.stats.incr(Counter::Misses);
            return Miss::Load(leader, ticket, snap);
        }
        if let Some(w) = wait {
            w.begin(); // the lock's holder may be loading it
        }
        match remote.lock_or_wait(self, key, tags, ticket).await {
            Locked::Proceed(ticket) => {
                self.stats.incr(Counter::Misses);
                Miss::Load(leader, ticket, snap)
            }
            Locked::Got(value) => {
                self.land(leader, tags, snap, &value, Via::Cache { stale: false });
                // Another process's value, read from the shared tier: its age is not known
                // here, so an observer counts it as having no freshness left.
                self.note(key, Outcome::Hit, None);
                Miss::Done(value)
            }
        }
    }

    /// The double check of a new leader: a flight that landed between this caller's miss
    /// and its taking the lead has filled L1.
    fn recheck(&self, key: &str) -> Option<S::Value> {
        let entry = self.fresh_in_l1(key)?;
        self.stats.incr(Counter::Hits);
        self.note(key, Outcome::Hit, Some(&entry));
        Some(entry.value)
    }

    /// L1's entry for `key` if it may be served as it is (fresh, and admitted during an
    /// outage); nothing counted.
    pub(super) fn fresh_in_l1(&self, key: &str) -> Option<Entry<S::Value>> {
        let (l1, floor) = self.local_read()?;
        let entry = l1.get(key)?;
        (entry.freshness(clock::now()) == Freshness::Fresh && self.admits(entry.born, floor))
            .then_some(entry)
    }

    /// Whether to lead or join (None: no coalescing). Counts a caller's first join.
    fn role(&self, key: &str, joined: &mut bool) -> Option<Role<S::Value>> {
        if !self.policy.coalesces() {
            return None;
        }
        let role = self.flights.join_or_lead(key);
        if matches!(role, Role::Waiter(_)) && !*joined {
            *joined = true;
            self.stats.incr(Counter::Coalesced);
        }
        Some(role)
    }

    /// Counts a caller that got its value from another caller's flight.
    fn count_joined(&self, cached: bool) {
        if self.remote.is_some() {
            // With L2, only the flight's outcome tells a hit from a miss.
            self.stats.incr(if cached {
                Counter::Hits
            } else {
                Counter::Misses
            });
        } else {
            self.stats.incr(Counter::Misses);
        }
    }
}

//! Loads: calling the source, and storing its result in L2 then L1 unless an invalidation
//! won meanwhile; refreshes of values due for one.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::l2::Outcome;
use super::ticket::{Due, Snapshot, Ticket};
use super::Engine;
use crate::clock;
use crate::coherence::tags as tag_clock;
use crate::entry::{Entry, TagStamp};
use crate::flight::{Landed, Leader, Via};
use crate::io::CatchUnwind;
use crate::key::Key;
use crate::kind::Kind;
use crate::policy::Stampede;
use crate::served::Outcome as Served;
use crate::stats::Counter;

/// How a store decides whether it may write L1.
#[derive(Debug, Clone, Copy)]
pub(super) enum Guard {
    /// A load: only if nothing invalidated the key since the snapshot.
    Load(Snapshot),
    /// A put or `*_refresh`: it supersedes older loads. After the L2 write, the key's
    /// generation moves on from `expected` (so a reader that read the older value from L2
    /// cannot put it back in L1), unless an invalidation moved it first.
    Put { expected: u64, stamp: u64 },
}

/// What became of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    Yes,
    /// A negative value without `cache_none`.
    NotCached,
    /// L2 refused it: an invalidation or put, here or in another process, moved the key's
    /// generation during the load. It wins; waiters go round again.
    Superseded,
    /// Written to L2 (if any), not to L1: the key's local generation stripe moved (an
    /// invalidation of this key, or of another key of its stripe). Whether waiters may
    /// take the value is the flight's to say (was this key's flight forgotten?).
    NotInL1,
    /// L2 could not be written (L1 was).
    RemoteFailed,
    /// Too large for L2: not stored there, and the key's previous value removed (L1 was
    /// written).
    TooLarge,
}

/// Where a refresh gets its ticket.
pub(super) enum RefreshFrom<V> {
    /// Read already (an L2 hit that turned out to be due).
    Known(Ticket<V>),
    /// To be read; the value being served stands in if the refresh fails.
    Stale(Entry<V>),
}

impl<R: 'static, S: Kind<R>> Engine<R, S> {
    pub(super) fn count_refresh(&self, due: Due) {
        self.stats.incr(match due {
            Due::Early => Counter::EarlyRefreshes,
            Due::Stale => Counter::BackgroundRefreshes,
        });
    }

    /// The ticket of a refresh, or `None` when another process refreshes the key. With a
    /// distributed lock, the claim's own read of L2 (under the lock) supplies it; otherwise
    /// it is read here (one round trip).
    pub(super) async fn refresh_ticket(
        self: &Arc<Self>,
        key: &str,
        tags: &[String],
        from: RefreshFrom<S::Value>,
    ) -> Option<Ticket<S::Value>> {
        let Some(remote) = &self.remote else {
            return Some(match from {
                RefreshFrom::Known(ticket) => ticket,
                RefreshFrom::Stale(entry) => Ticket::local(Some(entry)),
            });
        };
        if self.policy.stampede >= Stampede::Lock {
            let mut ticket = match from {
                RefreshFrom::Known(ticket) => ticket,
                RefreshFrom::Stale(entry) => Ticket::local(Some(entry)),
            };
            return remote
                .claim(self, key, tags, &mut ticket)
                .await
                .then_some(ticket);
        }
        Some(match from {
            RefreshFrom::Known(ticket) => ticket,
            RefreshFrom::Stale(entry) => remote.ticket(self, key, tags, Some(entry)).await,
        })
    }

    /// Registers a load of `key` for as long as the guard lives; a load that starts while
    /// another of the same key runs is a stampede escape.
    fn loading(&self, key: &str) -> Loading<'_> {
        let mut running = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        let n = running.entry(key.to_owned()).or_insert(0);
        *n += 1;
        if *n > 1 {
            self.stats.incr(Counter::StampedeEscapes);
        }
        Loading {
            map: &self.loading,
            key: key.to_owned(),
        }
    }

    /// Calls the source and stores its result unless `key` was invalidated meanwhile
    /// (`guard`). `ticket.fallback` stands in for an `Err` (a stale value, or fail-safe).
    pub(super) async fn load<Fut>(
        &self,
        leader: Option<Leader<S::Value>>,
        key: Key,
        tags: Vec<String>,
        source: Fut,
        ticket: Ticket<S::Value>,
        guard: Guard,
    ) -> R
    where
        Fut: Future<Output = R>,
    {
        self.load_and_store(leader, key, tags, source, ticket, guard)
            .await
            .0
    }

    /// [`Engine::load`], and what became of the store (`None`: the source failed).
    pub(super) async fn load_and_store<Fut>(
        &self,
        leader: Option<Leader<S::Value>>,
        key: Key,
        tags: Vec<String>,
        source: Fut,
        ticket: Ticket<S::Value>,
        guard: Guard,
    ) -> (R, Option<Stored>)
    where
        Fut: Future<Output = R>,
    {
        let span = tracing::debug_span!(
            "cachemacro.load",
            function = %self.stats.name(),
            fallback = ticket.fallback.is_some(),
            locked = ticket.lock.is_some(),
        );
        let source = tracing::Instrument::instrument(source, span);
        let loading = self.loading(&key);
        let started = clock::Stopwatch::start();
        // With fail-safe and a value to fall back on, a panicking source is a failure too.
        let result = if ticket.fallback.is_some() && self.policy.fail_safe.is_some() {
            CatchUnwind::new(source).await
        } else {
            Ok(source.await)
        };
        let delta = started.elapsed();
        drop(loading);
        self.stats.hot_load(&key);
        let value = match result.map(S::split) {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => {
                let r = self.fail(leader, (&key, &tags), ticket, Ok(error), (delta, guard));
                return (r, None);
            }
            Err(panic) => {
                let r = self.fail(leader, (&key, &tags), ticket, Err(panic), (delta, guard));
                return (r, None);
            }
        };
        self.stats.load(false, delta);
        // What the caller is served unless the store below says more (the entry it made).
        self.note(&key, Served::Load, None);
        let result_tags = self.result_tags(&value);
        let mut seen = None;
        let stored = self
            .store(
                &key,
                (&tags, &result_tags),
                &value,
                delta,
                guard,
                (&ticket, &mut seen),
            )
            .await;
        // A value the cache does not hold (invalidated while it ran, or one the policy does
        // not cache) is served, but an observer must not tell anyone downstream to keep it.
        let kept = !matches!(
            stored,
            Stored::NotCached | Stored::Superseded | Stored::NotInL1
        );
        if !kept {
            self.note_unkept(&key, Served::Load);
        }
        let via = Via::Source {
            kept,
            seen: seen.filter(|_| kept),
        };
        if let Some(leader) = leader {
            match (stored, guard) {
                (Stored::Superseded, _) => leader.land(Landed::Superseded),
                (_, Guard::Load(snap)) => self.land(Some(leader), &tags, snap, &value, via),
                (_, Guard::Put { .. }) => leader.land(Landed::Value(value.clone(), via)),
            }
        }
        (S::join(value), Some(stored))
    }

    /// Settles a failed load (see [`Engine::failed`]).
    fn fail(
        &self,
        leader: Option<Leader<S::Value>>,
        (key, tags): (&str, &[String]),
        ticket: Ticket<S::Value>,
        failure: Result<S::Error, Box<dyn Any + Send>>,
        (delta, guard): (Duration, Guard),
    ) -> R {
        self.stats.load(true, delta);
        self.failed(Failed {
            leader,
            key,
            tags,
            fallback: ticket.fallback,
            failure,
            guard,
        })
    }

    /// A failed load: the fallback if there is one, else the error (or the panic, resumed).
    fn failed(&self, mut f: Failed<'_, S::Value, S::Error>) -> R {
        if let Some(entry) = f.fallback.take() {
            // Waiters that joined after an invalidation go round again rather than take the
            // value it dropped. This caller is served the fallback (fail-safe is for
            // availability), but if the key or a tag may have been invalidated meanwhile an
            // observer is told the cache no longer holds it (an HTTP response: `no-store`).
            let mut dropped = entry.tags.as_ref().is_some_and(|t| !t.valid());
            match f.guard {
                Guard::Load(snap) => match f.leader.take() {
                    Some(l) => l.land_with(|forgotten| {
                        dropped |=
                            forgotten || tag_clock().any_invalidated_after(f.tags, snap.stamp);
                        if dropped {
                            Landed::Superseded
                        } else {
                            Landed::Value(entry.value.clone(), Via::FailSafe)
                        }
                    }),
                    None => dropped |= !self.current(f.key, f.tags, snap),
                },
                Guard::Put { .. } => {
                    if let Some(l) = f.leader.take() {
                        l.land(Landed::Value(entry.value.clone(), Via::FailSafe));
                    }
                }
            }
            if dropped {
                self.note_unkept(f.key, Served::FailSafe);
            } else {
                self.note(f.key, Served::FailSafe, Some(&entry));
            }
            if f.failure.is_err() {
                tracing::error!(
                    function = %self.stats.name(),
                    "cachemacro: the source panicked; serving the fail-safe value"
                );
            }
            return S::join(entry.value);
        }
        if let Some(leader) = f.leader {
            let erase = self.hooks.errors.map(|s| s.erase);
            let shared = match (&f.failure, erase) {
                (Ok(error), Some(erase)) => Some(erase(error)),
                _ => None,
            };
            leader.land(Landed::Failed(shared));
        }
        match f.failure {
            Ok(error) => S::fail(error),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// The hard and soft TTL of a new value.
    fn ttls(&self, negative: bool) -> (Duration, Option<Duration>) {
        let hard = self.policy.hard_ttl(negative);
        let soft = self.policy.soft_ttl_within(hard).filter(|_| !negative);
        (hard, soft)
    }

    /// The tags rendered from a value (`tags = ["org:<result.org_id>"]`).
    pub(super) fn result_tags(&self, value: &S::Value) -> Vec<String> {
        self.hooks.result_tags.map(|f| f(value)).unwrap_or_default()
    }

    /// Writes a new value to L2, then L1, as `guard` allows. `tags` are the call's tags and
    /// those rendered from the value.
    pub(super) async fn store(
        &self,
        key: &str,
        (tags, result_tags): (&[String], &[String]),
        value: &S::Value,
        delta: Duration,
        guard: Guard,
        (ticket, seen): (&Ticket<S::Value>, &mut Option<crate::served::Seen>),
    ) -> Stored {
        let negative = self.is_negative(value);
        if negative && !self.policy.cache_none {
            return Stored::NotCached;
        }
        let (hard, soft) = self.ttls(negative);
        let mut stored = Stored::Yes;
        if let Some(remote) = &self.remote {
            match remote
                .write(
                    self,
                    key,
                    tags,
                    result_tags,
                    value,
                    (delta, hard, soft),
                    ticket,
                )
                .await
            {
                // Invalidated elsewhere during the load: L1 must not keep it either.
                Outcome::Superseded => return Stored::Superseded,
                // Perhaps older than an invalidation of one of its tags: kept nowhere (a
                // put's caller learns it was not stored and invalidates the key).
                Outcome::Refused => {
                    return match guard {
                        Guard::Load(_) => Stored::NotInL1,
                        Guard::Put { .. } => {
                            self.drop_local(key);
                            Stored::RemoteFailed
                        }
                    }
                }
                Outcome::Failed => stored = Stored::RemoteFailed,
                Outcome::TooLarge => stored = Stored::TooLarge,
                Outcome::Written => {}
            }
        }
        let (generation, stamp) = match guard {
            Guard::Load(snap) => {
                if !self.current(key, tags, snap) {
                    return Stored::NotInL1;
                }
                (snap.generation, snap.stamp)
            }
            // After the L2 write: a reader that got the older value from L2 took its
            // snapshot before this, so it cannot put that value back in L1.
            Guard::Put { expected, stamp } => match self.gens.advance(key, expected) {
                Some(g) => (g, stamp),
                None => {
                    // Something moved the key's stripe meanwhile: an invalidation of this
                    // key, or of another key of the stripe. Either way the value L1 holds
                    // is older than what was just written: drop it (the next read takes
                    // the new value from L2).
                    self.drop_local(key);
                    return Stored::Superseded;
                }
            },
        };
        let now = clock::now();
        let mut entry = Entry::new(
            value.clone(),
            now,
            soft,
            hard,
            delta,
            TagStamp::new([tags, result_tags].concat(), stamp),
        );
        entry.born = now.saturating_sub(clock::nanos(delta)); // when the load started
        self.note(key, Served::Load, Some(&entry));
        *seen = Some(entry.seen());
        if !self.put_local(key, entry, generation) {
            return Stored::NotInL1;
        }
        stored
    }
}

/// A failed load, as [`Engine::failed`] settles it.
struct Failed<'a, V: Clone, E> {
    leader: Option<Leader<V>>,
    key: &'a str,
    tags: &'a [String],
    fallback: Option<Entry<V>>,
    /// The source's error, or its panic.
    failure: Result<E, Box<dyn Any + Send>>,
    guard: Guard,
}

/// A load of one key, registered while it runs (see [`Engine::loading`]).
struct Loading<'a> {
    map: &'a Mutex<HashMap<String, u32>>,
    key: String,
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        let mut running = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.key);
            }
        }
    }
}

//! One call of a cached function, in one of two flavours chosen by the macro from the
//! signature: *detached* when every argument is owned (the source future is `'static`:
//! refreshes run as tasks on the caller's runtime, and a cancelled leader's load goes on as
//! one), *inline* when an argument is borrowed (`&self`, `&str`: the source cannot outlive
//! the call, so the caller that wins a refresh runs it itself, and a cancelled leader hands
//! its flight to a waiter). The stages are the same; only how a refresh and a load run
//! differ ([`Flavour`]).

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use super::load::{Guard, RefreshFrom};
use super::read::{Lookup, Miss};
use super::ticket::{Due, Snapshot, Ticket};
use super::Engine;
use crate::flight::Leader;
use crate::io::Detach;
use crate::kind::Kind;

/// A refresh this call leads: the value it serves meanwhile, and where its ticket comes
/// from. `hit` is when the call started, if it is yet to be counted as a hit.
pub(super) struct Refresh<V: Clone> {
    leader: Leader<V>,
    key: String,
    tags: Vec<String>,
    due: Due,
    from: RefreshFrom<V>,
    value: V,
    hit: Option<Instant>,
}

/// A load this call runs.
pub(super) struct Load<V: Clone> {
    leader: Option<Leader<V>>,
    key: String,
    tags: Vec<String>,
    ticket: Ticket<V>,
    snap: Snapshot,
}

/// How a call runs what it cannot hand back at once.
pub(super) trait Flavour<R: 'static, S: Kind<R>> {
    /// Serves `r.value` and refreshes it (or, inline, refreshes and serves the result).
    async fn refresh(self, engine: &Arc<Engine<R, S>>, r: Refresh<S::Value>) -> R;
    /// Calls the source under the flight and stores its result.
    async fn load(self, engine: &Arc<Engine<R, S>>, l: Load<S::Value>) -> R;
}

impl<R: 'static, S: Kind<R>> Engine<R, S> {
    /// Cache-aside for a source whose future borrows the caller's arguments.
    pub async fn get<F, Fut>(self: &Arc<Self>, key: String, tags: Vec<String>, source: F) -> R
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = R>,
    {
        self.call(key, tags, Inline(source)).await
    }

    /// Cache-aside for a source that owns its arguments.
    pub async fn get_detached<F, Fut>(
        self: &Arc<Self>,
        key: String,
        tags: Vec<String>,
        source: F,
    ) -> R
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Send,
    {
        self.call(key, tags, Detached(source)).await
    }

    /// The stages of a call: the hit path; then rounds of the miss path until a value, an
    /// error, a load or a refresh settles it.
    async fn call<Fl: Flavour<R, S>>(
        self: &Arc<Self>,
        key: String,
        tags: Vec<String>,
        how: Fl,
    ) -> R {
        let now = Instant::now();
        let mut fallback = match self.hit_path(&key, &tags, now).await {
            Lookup::Hit(v) => return S::join(v),
            Lookup::Refresh { leader, entry, due } => {
                let value = entry.value.clone();
                let from = RefreshFrom::Stale(entry);
                let r = Refresh {
                    leader,
                    key,
                    tags,
                    due,
                    from,
                    value,
                    hit: Some(now),
                };
                return how.refresh(self, r).await;
            }
            Lookup::Miss { fallback } => fallback,
        };
        let mut joined = false;
        loop {
            match self.miss(&key, &tags, &mut fallback, &mut joined).await {
                Miss::Done(v) => return S::join(v),
                Miss::Fail(e) => return S::fail(e),
                Miss::Retry => continue,
                Miss::Load(leader, ticket, snap) => {
                    let l = Load {
                        leader,
                        key,
                        tags,
                        ticket,
                        snap,
                    };
                    return how.load(self, l).await;
                }
                Miss::Due {
                    leader,
                    value,
                    due,
                    ticket,
                    snap,
                } => {
                    // Those who waited for this read get the value as it is; one refresh
                    // follows, and nobody waits for it.
                    self.land(leader, &tags, snap, &value, true);
                    let Some(leader) = self.flights.try_lead(&key) else {
                        return S::join(value);
                    };
                    let from = RefreshFrom::Known(ticket);
                    let r = Refresh {
                        leader,
                        key,
                        tags,
                        due,
                        from,
                        value,
                        hit: None,
                    };
                    return how.refresh(self, r).await;
                }
            }
        }
    }

    fn count_hit(&self, due: Due, started: Option<Instant>) {
        if let Some(t) = started {
            self.stats.hit(due == Due::Stale, || t.elapsed());
        }
    }
}

/// The source borrows the caller's arguments.
struct Inline<F>(F);

impl<R: 'static, S: Kind<R>, F, Fut> Flavour<R, S> for Inline<F>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
{
    async fn refresh(self, engine: &Arc<Engine<R, S>>, r: Refresh<S::Value>) -> R {
        let snap = engine.snapshot(&r.key);
        let Some(ticket) = engine.refresh_ticket(&r.key, &r.tags, r.from).await else {
            // Another process refreshes it: serve what we have.
            engine.count_hit(r.due, r.hit);
            return S::join(r.value);
        };
        engine.count_refresh(r.due);
        let guard = Guard::Load(snap);
        engine
            .load(Some(r.leader), r.key, r.tags, (self.0)(), ticket, guard)
            .await
    }

    async fn load(self, engine: &Arc<Engine<R, S>>, l: Load<S::Value>) -> R {
        let guard = Guard::Load(l.snap);
        engine
            .load(l.leader, l.key, l.tags, (self.0)(), l.ticket, guard)
            .await
    }
}

/// The source owns its arguments.
struct Detached<F>(F);

impl<R, S, F, Fut> Flavour<R, S> for Detached<F>
where
    R: Send + 'static,
    S: Kind<R>,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    async fn refresh(self, engine: &Arc<Engine<R, S>>, r: Refresh<S::Value>) -> R {
        let this = engine.clone();
        let snap = engine.snapshot(&r.key);
        let (leader, key, tags, due, from) = (r.leader, r.key, r.tags, r.due, r.from);
        crate::io::spawn_here(async move {
            let Some(ticket) = this.refresh_ticket(&key, &tags, from).await else {
                return; // another process refreshes; the flight is released
            };
            this.count_refresh(due);
            let guard = Guard::Load(snap);
            this.load(Some(leader), key, tags, (self.0)(), ticket, guard)
                .await;
        });
        engine.count_hit(r.due, r.hit);
        S::join(r.value)
    }

    async fn load(self, engine: &Arc<Engine<R, S>>, l: Load<S::Value>) -> R {
        let this = engine.clone();
        Detach::new(async move {
            let guard = Guard::Load(l.snap);
            this.load(l.leader, l.key, l.tags, (self.0)(), l.ticket, guard)
                .await
        })
        .await
    }
}

//! Invalidations a shared tier missed, kept until it answers again.
//!
//! An `*_invalidate`, `*_put` or `invalidate_tag` that cannot reach Redis leaves the old
//! value there until its TTL: every process would read it again once Redis is back. So the
//! failed step is kept here (the call still reports its failure) and replayed when the tier
//! answers: the key's generation bumped and its value deleted, or the tag's version bumped,
//! and the backplane told, exactly as the original call would have. Both steps are
//! idempotent, so replaying twice, late, or in another order than they were made is safe
//! (a put's replay is an invalidation: the value it could not write is not kept here).
//!
//! The outbox is bounded (`Config::outbox_capacity`, one entry per key or tag, repeats
//! merged). Past the bound an invalidation is dropped: it is logged at `error` with what
//! was lost, and counted in [`crate::BackendHealth::outbox_dropped`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::{Tier, TierError};
use crate::coherence::Message;

/// How often a waiting outbox checks whether its tier answers again.
const POLL: Duration = Duration::from_millis(200);

/// One invalidation to replay.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Missed {
    /// A key: bump its generation, delete its value, tell the backplane.
    Key(String),
    /// A tag: bump its version, tell the backplane.
    Tag(String),
}

impl Missed {
    /// What the backplane is told.
    fn message(&self) -> Message<'_> {
        match self {
            Missed::Key(key) => Message::Key(key),
            Missed::Tag(tag) => Message::Tag(tag),
        }
    }

    /// The tier's part: the key's generation bumped and its value deleted, or the tag's
    /// version bumped.
    async fn bump(&self, tier: &Arc<dyn Tier>) -> Result<(), TierError> {
        match self {
            Missed::Key(key) => tier.bump(key, true).await.map(drop),
            Missed::Tag(tag) => tier.bump_tag(tag).await.map(drop),
        }
    }
}

/// Does `missed` now (the tier's part, then the backplane told); if the tier fails, keeps
/// it to replay when the tier answers again, and returns the error.
pub(crate) async fn send(tier: &Arc<dyn Tier>, missed: Missed) -> Result<(), TierError> {
    let done = match missed.bump(tier).await {
        Ok(()) => tier.publish(missed.message()).await,
        Err(e) => Err(e),
    };
    if done.is_err() {
        of(tier.name()).keep(tier, missed);
    }
    done
}

#[derive(Default)]
struct Queue {
    order: VecDeque<Missed>,
    /// What is queued, with the number of its latest request: a request made while its
    /// replay runs is replayed again (the replay may have started before it).
    queued: HashMap<Missed, u64>,
    requests: u64,
    /// A replay task runs.
    replaying: bool,
}

/// The invalidations one tier missed.
#[derive(Default)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    dropped: AtomicU64,
}

/// The outbox of the tier named `name`.
pub(crate) fn of(name: &str) -> Arc<Outbox> {
    static OUTBOXES: OnceLock<Mutex<HashMap<String, Arc<Outbox>>>> = OnceLock::new();
    OUTBOXES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.to_owned())
        .or_default()
        .clone()
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `missed` for `tier`, and starts replaying when the tier answers again.
    pub fn keep(self: &Arc<Self>, tier: &Arc<dyn Tier>, missed: Missed) {
        let capacity = tier.config().outbox_capacity;
        let start = {
            let mut q = self.lock();
            q.requests += 1;
            let request = q.requests;
            if let Some(latest) = q.queued.get_mut(&missed) {
                *latest = request;
                false
            } else if q.order.len() >= capacity {
                self.dropped.fetch_add(1, Relaxed);
                tracing::error!(
                    backend = tier.name(),
                    ?missed,
                    capacity,
                    "cachemacro: the outbox of missed invalidations is full; this one is lost, and other processes may serve the old value until it expires"
                );
                false
            } else {
                q.queued.insert(missed.clone(), request);
                q.order.push_back(missed);
                !std::mem::replace(&mut q.replaying, true)
            }
        };
        if start {
            let (outbox, tier) = (self.clone(), tier.clone());
            crate::io::spawn(async move { outbox.replay(tier).await });
        }
    }

    /// Invalidations waiting.
    pub fn pending(&self) -> usize {
        self.lock().order.len()
    }

    /// Invalidations lost to the bound.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Waits for the tier to answer, then replays everything, oldest first; a failure
    /// puts the step back and waits again.
    async fn replay(self: Arc<Self>, tier: Arc<dyn Tier>) {
        loop {
            crate::io::sleep(POLL).await;
            if !tier.reachable() {
                continue;
            }
            loop {
                let next = {
                    let q = self.lock();
                    q.order
                        .front()
                        .map(|m| (m.clone(), q.queued.get(m).copied().unwrap_or(0)))
                };
                let Some((missed, request)) = next else {
                    let mut q = self.lock();
                    if q.order.is_empty() {
                        q.replaying = false;
                        return;
                    }
                    continue;
                };
                let message = missed.message();
                let bumped = missed.bump(&tier).await;
                // This process too: its L1 may have been refilled, with the value just
                // removed, between the tier's return and this replay (its own messages
                // are ignored when they come back).
                if bumped.is_ok() {
                    tier.backplane().apply(&message);
                }
                let done = match bumped {
                    Ok(_) => tier.publish(message).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = done {
                    tracing::debug!(backend = tier.name(), error = %e, "cachemacro: replaying a missed invalidation failed; will retry");
                    break;
                }
                let mut q = self.lock();
                if q.order.front() == Some(&missed) {
                    q.order.pop_front();
                }
                if q.queued.get(&missed) == Some(&request) {
                    q.queued.remove(&missed);
                } else {
                    q.order.push_back(missed.clone()); // asked for again meanwhile
                }
                drop(q);
                tracing::info!(
                    backend = tier.name(),
                    ?missed,
                    "cachemacro: replayed an invalidation the shared tier had missed"
                );
            }
        }
    }
}

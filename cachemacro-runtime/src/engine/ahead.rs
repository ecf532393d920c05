//! Refresh ahead on a schedule (`refresh_every`, the seed's remedy for very hot keys): a key
//! read at least once gets a task that reloads it every `refresh_every` while it keeps being
//! read, so its readers never meet it stale or missing; the task ends once the key has not
//! been read for `refresh_idle` (default four intervals). One task per key; each reload is
//! the key's refresh flight (skipped while another refresh or load of the key runs), stored
//! as a load is (an invalidation during it wins), counted in `background_refreshes`.
//!
//! The task runs on the runtime of the call that started it (where the source's resources
//! live); if that runtime shuts down, the schedule ends with it and the next read starts a
//! new one. Reads of a scheduled key cost one read-lock and one atomic store more than
//! other hits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use super::load::Guard;
use super::ticket::Ticket;
use super::Engine;
use crate::clock;
use crate::io::Defer;
use crate::key::Key;
use crate::kind::Kind;

/// The scheduled keys of one function, with when each was last read.
#[derive(Default)]
pub(crate) struct Schedule {
    keys: RwLock<HashMap<Key, Arc<AtomicU64>>>,
}

impl<R: Send + 'static, S: Kind<R>> Engine<R, S>
where
    S::Error: Send,
{
    /// Notes a read of `key`, and starts its schedule if it has none.
    pub(super) fn ahead<M, Fut>(self: &Arc<Self>, key: &str, make: &M)
    where
        M: Fn() -> (Vec<String>, Fut) + Clone + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        let Some(every) = self.policy.refresh_every else {
            return;
        };
        let now = clock::now();
        {
            let keys = self.schedule.keys.read().unwrap_or_else(|e| e.into_inner());
            if let Some(last) = keys.get(key) {
                last.store(now, Relaxed);
                return;
            }
        }
        let last = {
            let mut keys = self
                .schedule
                .keys
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if keys.contains_key(key) {
                return;
            }
            let last = Arc::new(AtomicU64::new(now));
            keys.insert(Key::from(key), last.clone());
            last
        };
        let idle = clock::nanos(self.policy.refresh_idle.unwrap_or(every * 4));
        let (this, key, make) = (self.clone(), Key::from(key), make.clone());
        crate::io::spawn_here(async move {
            let _unscheduled = Defer::new(|| {
                this.schedule
                    .keys
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
            });
            loop {
                crate::io::sleep(every).await;
                if clock::now().saturating_sub(last.load(Relaxed)) > idle {
                    return; // not read lately: let it expire
                }
                let (tags, source) = make();
                this.reload(key.clone(), tags, source).await;
            }
        });
    }

    /// One scheduled reload: a load of the key like a stale value's refresh (the key's one
    /// refresh flight; stored only if nothing invalidated the key meanwhile), not a put: a
    /// put moves the key's generation stripe, which would keep the loads of every other key
    /// of the stripe, scheduled or not, out of L1.
    async fn reload<Fut>(self: &Arc<Self>, key: Key, tags: Vec<String>, source: Fut)
    where
        Fut: Future<Output = R>,
    {
        let Some(leader) = self.lead_refresh(&key) else {
            return; // a refresh or a load of it runs already
        };
        self.stats.incr(crate::stats::Counter::BackgroundRefreshes);
        let snap = self.snapshot(&key);
        let ticket = match &self.remote {
            Some(remote) => remote.ticket(self, &key, &tags, None).await,
            None => Ticket::local(None),
        };
        self.load(Some(leader), key, tags, source, ticket, Guard::Load(snap))
            .await;
    }

    /// A read of `key` answered without a call of its own (`<fn>_many`'s bulk read): it
    /// keeps the key's schedule alive as a call would.
    pub fn note_ahead<M, Fut>(self: &Arc<Self>, key: &crate::key::Rendered, make: &M)
    where
        M: Fn() -> (Vec<String>, Fut) + Clone + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        if crate::bypass::current().is_none() {
            self.ahead(key.as_str(), make);
        }
    }

    /// The scheduled keys (tests, stats).
    #[allow(dead_code)]
    pub(crate) fn scheduled(&self) -> usize {
        self.schedule
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

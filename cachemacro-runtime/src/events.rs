//! Event-driven invalidation: invalidation events published by other services
//! (`"user.123.updated"`) applied to the right cached functions and keys.
//!
//! A [`Router`] maps event patterns to handlers, which call generated `*_invalidate`
//! functions or [`invalidate_tag`](crate::invalidate_tag); those reach Redis and every
//! process's L1 on their own. Feed it from any consumer (a queue's consumer group calls
//! [`Router::apply`]), or let it subscribe to a Redis channel with [`Router::listen`].
//!
//! ```
//! use cachemacro_runtime::{cached, events::Router, invalidate_tag};
//!
//! #[cached(ttl = "10m", key = "user:<id>", tags = ["user:<id>"])]
//! async fn get_user(id: u64) -> String { format!("user {id}") }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let router = Router::new()
//!     .on("user.{id}.updated", |e| async move { get_user_invalidate(e.parse("id")?).await })
//!     .on("org.{org}.*", |e| async move { invalidate_tag(&format!("org:{}", e.get("org").unwrap_or_default())).await });
//!
//! get_user(123).await;
//! assert_eq!(router.apply("user.123.updated").await.unwrap(), 1); // one route matched
//! assert_eq!(router.apply("invoice.9.paid").await.unwrap(), 0);   // none: ignored
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
#[cfg(feature = "redis")]
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::error::Error;

/// One event that matched a route: its name and the pattern's captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    name: String,
    captures: Vec<(String, String)>,
}

impl Event {
    /// The event as published, e.g. `user.123.updated`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment the pattern captured as `{capture}`.
    pub fn get(&self, capture: &str) -> Option<&str> {
        self.captures
            .iter()
            .find(|(k, _)| k == capture)
            .map(|(_, v)| v.as_str())
    }

    /// [`Event::get`], parsed; an error (never a panic) if absent or malformed.
    pub fn parse<T: FromStr>(&self, capture: &str) -> Result<T, Error> {
        let raw = self.get(capture).ok_or_else(|| {
            Error::Config(format!("event `{}` has no `{{{capture}}}`", self.name))
        })?;
        raw.parse().map_err(|_| {
            Error::Config(format!(
                "event `{}`: `{capture}` = `{raw}` does not parse as {}",
                self.name,
                std::any::type_name::<T>()
            ))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
    Any,
}

/// `user.{id}.updated`: `.`-separated segments; `{name}` captures one segment, `*` matches
/// any one segment, anything else matches itself.
fn compile(pattern: &str) -> Vec<Segment> {
    pattern
        .split('.')
        .map(|s| {
            if s == "*" {
                Segment::Any
            } else if let Some(name) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                Segment::Capture(name.to_owned())
            } else {
                Segment::Literal(s.to_owned())
            }
        })
        .collect()
}

fn matches(pattern: &[Segment], event: &str) -> Option<Vec<(String, String)>> {
    let parts: Vec<&str> = event.split('.').collect();
    if parts.len() != pattern.len() {
        return None;
    }
    let mut captures = Vec::new();
    for (seg, part) in pattern.iter().zip(parts) {
        match seg {
            Segment::Literal(l) if l != part => return None,
            Segment::Capture(name) => captures.push((name.clone(), part.to_owned())),
            _ => {}
        }
    }
    Some(captures)
}

type Handler =
    Arc<dyn Fn(Event) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send + Sync>;

/// Event patterns and what to invalidate for each.
#[derive(Clone, Default)]
#[must_use]
pub struct Router {
    routes: Vec<(String, Vec<Segment>, Handler)>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|(p, _, _)| p))
            .finish()
    }
}

impl Router {
    /// A router with no routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes events matching `pattern` (see the module docs) to `handler`.
    pub fn on<F, Fut>(mut self, pattern: &str, handler: F) -> Self
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |e| Box::pin(handler(e)));
        self.routes
            .push((pattern.to_owned(), compile(pattern), handler));
        self
    }

    /// Runs the handler of every route `event` matches; returns how many matched. Every
    /// matching handler runs even if one fails; the first error is returned.
    pub async fn apply(&self, event: &str) -> Result<usize, Error> {
        let mut matched = 0;
        let mut first_error = None;
        for (_, pattern, handler) in &self.routes {
            let Some(captures) = matches(pattern, event) else {
                continue;
            };
            matched += 1;
            let e = Event {
                name: event.to_owned(),
                captures,
            };
            if let Err(err) = handler(e).await {
                tracing::warn!(event, error = %err, "cachemacro: an invalidation event's handler failed");
                first_error.get_or_insert(err);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(matched),
        }
    }

    /// Subscribes to `channel` on the default Redis backend and applies every message as an
    /// event, in order. The subscription pings Redis every `Config::heartbeat` and
    /// resubscribes when a ping goes unanswered or the connection drops, so a half-open
    /// connection is noticed within two heartbeats ([`Listener::subscribed`] turns false
    /// meanwhile). Handlers run on the cache's threads for user code, never on its I/O
    /// thread: a slow handler delays the events after it (they queue, unbounded, so none is
    /// lost), not the cache's Redis traffic. Stops when the returned [`Listener`] is dropped.
    ///
    /// Every process may listen (invalidation is idempotent; each one reaches Redis), or a
    /// single consumer may apply events for the whole fleet: the invalidations it makes
    /// reach every process's L1 over the backplane either way.
    #[cfg(feature = "redis")]
    pub fn listen(self, channel: &str) -> Listener {
        let counters = Arc::new(ListenerCounters::default());
        let stop = Arc::new(tokio::sync::Notify::new());
        let router = Arc::new(self);
        let (c, s, channel) = (counters.clone(), stop.clone(), channel.to_owned());
        let (events, mut queue) = tokio::sync::mpsc::unbounded_channel::<String>();
        crate::io::spawn(async move {
            tokio::select! {
                _ = listen(channel, c, events) => {}
                _ = s.notified() => {}
            }
        });
        let c = counters.clone();
        crate::io::spawn_user(async move {
            // Ends when the subscription task does (its sender is dropped).
            while let Some(event) = queue.recv().await {
                match router.apply(&event).await {
                    Ok(0) => {}
                    Ok(_) => {
                        c.applied.fetch_add(1, Relaxed);
                    }
                    Err(_) => {
                        c.failed.fetch_add(1, Relaxed);
                    }
                }
            }
        });
        Listener { counters, stop }
    }
}

#[cfg(feature = "redis")]
#[derive(Default, Debug)]
struct ListenerCounters {
    received: AtomicU64,
    applied: AtomicU64,
    failed: AtomicU64,
    subscribed: std::sync::atomic::AtomicBool,
}

/// A running [`Router::listen`]; dropping it stops the subscription.
#[cfg(feature = "redis")]
#[derive(Debug)]
pub struct Listener {
    counters: Arc<ListenerCounters>,
    stop: Arc<tokio::sync::Notify>,
}

#[cfg(feature = "redis")]
impl Listener {
    /// Messages received, events that matched at least one route, events whose handler
    /// failed.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.counters.received.load(Relaxed),
            self.counters.applied.load(Relaxed),
            self.counters.failed.load(Relaxed),
        )
    }

    /// Whether the subscription is up.
    pub fn subscribed(&self) -> bool {
        self.counters.subscribed.load(Relaxed)
    }
}

#[cfg(feature = "redis")]
impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

#[cfg(feature = "redis")]
async fn listen(
    channel: String,
    counters: Arc<ListenerCounters>,
    events: tokio::sync::mpsc::UnboundedSender<String>,
) {
    use crate::coherence::Signal;
    let tier = crate::tier::registry::default_tier();
    let shown = channel.clone();
    let on = Box::new(move |signal: Signal<'_>| match signal {
        Signal::Up { .. } => counters.subscribed.store(true, Relaxed),
        Signal::Message(event) => {
            counters.received.fetch_add(1, Relaxed);
            let _ = events.send(event.to_owned());
        }
        Signal::Down(why) => {
            counters.subscribed.store(false, Relaxed);
            tracing::warn!(channel = %shown, error = why, "cachemacro: event subscription lost; resubscribing");
        }
    });
    match tier.follow(channel, on) {
        Some(following) => following.await,
        None => tracing::error!(
            "cachemacro: the default backend has no pub/sub; cannot listen for invalidation events"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_capture_segments() {
        let p = compile("user.{id}.updated");
        assert_eq!(
            matches(&p, "user.123.updated"),
            Some(vec![("id".into(), "123".into())])
        );
        assert_eq!(matches(&p, "user.123.deleted"), None);
        assert_eq!(matches(&p, "user.123"), None);
        assert_eq!(matches(&p, "user.1.2.updated"), None);
        let any = compile("org.{org}.*");
        assert!(matches(&any, "org.7.renamed").is_some());
        assert_eq!(
            matches(&compile("{a"), "{a"),
            Some(vec![]),
            "malformed captures are literal"
        );
    }
}

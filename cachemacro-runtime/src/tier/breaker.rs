//! The circuit breaker of a shared tier (Redis, Memcached): after consecutive failures,
//! calls stop paying the server's timeout; a task of the tier's own probes it back to
//! health (each tier's `watch_breaker`).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::tier::TierError;

/// Stops paying the timeout on every call while Redis is down: after `threshold`
/// consecutive failures the circuit opens for a cooldown (doubling up to a maximum while
/// Redis stays down); then one call probes, and success closes it.
pub(crate) struct Breaker {
    open: AtomicBool,
    failures: AtomicU32,
    state: Mutex<BreakerState>,
    threshold: u32,
    /// The kind of server, for the log: `Redis`, `Memcached`.
    store: &'static str,
    base_cooldown: Duration,
    max_cooldown: Duration,
}

struct BreakerState {
    until: Instant,
    cooldown: Duration,
    probing: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration, max_cooldown: Duration) -> Self {
        Self {
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            state: Mutex::new(BreakerState {
                until: Instant::now(),
                cooldown,
                probing: false,
            }),
            threshold,
            store: "Redis",
            base_cooldown: cooldown,
            max_cooldown: max_cooldown.max(cooldown),
        }
    }

    /// Names the kind of server in the breaker's log lines (default `Redis`).
    #[cfg_attr(not(feature = "memcached"), allow(dead_code))]
    pub fn for_store(mut self, store: &'static str) -> Self {
        self.store = store;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may try Redis now: a permit while the circuit is closed, `None`
    /// while it is open. Callers never probe an open circuit (a caller that stalls or is
    /// cancelled mid-probe could keep it open): the breaker's own task does ([`Self::probe`]).
    pub fn allow(&self) -> Option<Permit<'_>> {
        (!self.open.load(Relaxed)).then_some(Permit {
            breaker: self,
            probe: false,
        })
    }

    /// The probe's permit, for the breaker's task: once the cool-down is over, while the
    /// circuit is open.
    pub fn probe(&self) -> Option<Permit<'_>> {
        if !self.open.load(Relaxed) {
            return None;
        }
        let mut s = self.lock();
        if s.probing || Instant::now() < s.until {
            return None;
        }
        s.probing = true;
        Some(Permit {
            breaker: self,
            probe: true,
        })
    }

    /// Lets the next probe run now, and the ones after it at the base cool-down (evidence
    /// that the server answers again: the first probe may still meet a connection that is
    /// reconnecting).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // Redis's subscription calls it
    pub fn probe_soon(&self) {
        if self.open.load(Relaxed) {
            let mut s = self.lock();
            s.cooldown = self.base_cooldown;
            if !s.probing {
                s.until = Instant::now();
            }
        }
    }

    /// When the next probe may run, while the circuit is open.
    pub fn next_probe(&self) -> Option<Instant> {
        self.open.load(Relaxed).then(|| self.lock().until)
    }

    /// Whether calls currently try Redis (closed circuit).
    pub fn allow_without_probe(&self) -> bool {
        !self.open.load(Relaxed)
    }

    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.open.load(Relaxed)
    }

    pub fn success(&self, backend: &str) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        if self.open.load(Relaxed) {
            let mut s = self.lock();
            if self.open.swap(false, Relaxed) {
                s.cooldown = self.base_cooldown;
                s.probing = false;
                tracing::warn!(
                    backend,
                    "cachemacro: {} answers again; cache back in use",
                    self.store
                );
            }
        }
    }

    pub fn failure(&self, backend: &str, error: &TierError) {
        if matches!(error, TierError::Open) {
            return;
        }
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        let mut s = self.lock();
        if s.probing {
            // The probe failed: stay open, wait longer.
            s.probing = false;
            s.cooldown = (s.cooldown * 2).min(self.max_cooldown);
            s.until = Instant::now() + s.cooldown;
        } else if n >= self.threshold && !self.open.load(Relaxed) {
            s.until = Instant::now() + s.cooldown;
            self.open.store(true, Relaxed);
            tracing::warn!(
                backend,
                %error,
                cooldown = ?s.cooldown,
                "cachemacro: {} failing; calls go straight to the source until it answers again",
                self.store
            );
        }
    }
}

/// The right to try one Redis operation (see [`Breaker::allow`]).
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    /// This operation probes an open circuit.
    probe: bool,
}

impl Permit<'_> {
    /// Records how the operation went.
    pub fn record<T>(mut self, backend: &str, result: &Result<T, TierError>) {
        self.probe = false; // a verdict: nothing for `drop` to undo
        match result {
            Ok(_) => self.breaker.success(backend),
            Err(e) => self.breaker.failure(backend, e),
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            // The probe's caller went away before Redis answered: no verdict. Let the next
            // call probe instead of waiting for a verdict that will never come.
            let mut s = self.breaker.lock();
            if s.probing {
                s.probing = false;
                s.until = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_lets_one_probe_through() {
        let b = Breaker::new(3, Duration::from_millis(30), Duration::from_secs(1));
        let e = TierError::Timeout;
        b.failure("t", &e);
        b.failure("t", &e);
        assert!(b.allow().is_some() && !b.is_open());
        b.failure("t", &e);
        assert!(b.is_open());
        assert!(b.allow().is_none(), "open: not tried");
        assert!(b.probe().is_none(), "no probe before the cool-down ends");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow().is_none(), "callers never probe");
        let probe = b.probe().expect("cooldown over: one probe");
        assert!(b.probe().is_none(), "only one probe at a time");
        probe.record("t", &Err::<(), _>(e.clone()));
        assert!(b.probe().is_none(), "probe failed: open again, longer");
        std::thread::sleep(Duration::from_millis(70));
        let probe = b.probe().expect("a probe");
        probe.record("t", &Ok::<(), TierError>(()));
        assert!(!b.is_open() && b.allow().is_some() && b.allow().is_some());
    }

    #[test]
    fn a_cancelled_probe_does_not_keep_the_circuit_open() {
        let b = Breaker::new(1, Duration::from_millis(20), Duration::from_secs(1));
        b.failure("t", &TierError::Timeout);
        assert!(b.is_open());
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.probe().expect("cooldown over: one probe");
        drop(probe); // cancelled before Redis answered
        let probe = b.probe().expect("the next probe may run at once");
        probe.record("t", &Ok::<(), TierError>(()));
        assert!(!b.is_open(), "Redis answered: closed");
    }
}

//! The task that probes the circuit breaker (`tier/breaker.rs`) while it is open.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::RedisTier;
use crate::io;

impl RedisTier {
    /// While the circuit is open, a task of the cache's own probes Redis (a `PING`) each
    /// time the cool-down ends, so the circuit closes as soon as Redis answers, whether or
    /// not any call needs Redis (a tiered function whose every call is an L1 hit never
    /// would), and `health()` says so.
    pub(super) fn watch_breaker(&self) {
        if self.breaker.allow_without_probe() || self.watching.swap(true, Relaxed) {
            return;
        }
        let this = self.arc();
        io::spawn(async move {
            while let Some(at) = this.breaker.next_probe() {
                let wait = at.saturating_duration_since(Instant::now());
                tokio::select! {
                    () = tokio::time::sleep(wait + Duration::from_millis(1)) => {}
                    () = this.probe_now.notified() => {}
                }
                if let Some(permit) = this.breaker.probe() {
                    let ping = this.with_permit(permit, |mut c| async move {
                        redis::cmd("PING").query_async::<redis::Value>(&mut c).await
                    });
                    let _ = ping.await;
                }
            }
            this.watching.store(false, Relaxed);
            // Opened again between the last check and the flag: watch again.
            this.watch_breaker();
        });
    }
}

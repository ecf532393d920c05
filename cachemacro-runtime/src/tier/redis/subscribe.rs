//! One subscription that follows a channel through losses: subscribe, heartbeat,
//! resubscribe. The backplane and `events::Router::listen` both use it.

use std::sync::Arc;

use super::RedisTier;
use crate::coherence::Signal;

impl RedisTier {
    /// Follows `channel` for as long as the returned future is polled: subscribes (trying
    /// each URL in turn), pings every `heartbeat` and resubscribes (with a growing backoff)
    /// when a ping is not answered within a heartbeat or the connection drops. So a
    /// half-open connection, silent but not closed, is noticed within two heartbeats.
    /// `on` hears every change and every message, in order.
    pub(super) async fn follow_channel(
        self: Arc<Self>,
        channel: String,
        mut on: Box<dyn FnMut(Signal<'_>) + Send>,
    ) {
        use futures_util::StreamExt;
        let heartbeat = self.cfg.heartbeat;
        let mut failures: u32 = 0;
        let mut next_url = 0;
        loop {
            let url = self.urls[next_url % self.urls.len()].clone();
            next_url += 1;
            match self.subscribe(&url, &channel).await {
                Ok(pubsub) => {
                    let (mut sink, mut stream) = pubsub.split();
                    on(Signal::Up {
                        again: failures > 0,
                    });
                    // The server answers: if the breaker is open, probe now rather than at
                    // the end of its cool-down.
                    self.breaker.probe_soon();
                    self.probe_now.notify_one();
                    failures = 0;
                    loop {
                        tokio::select! {
                            msg = stream.next() => match msg {
                                Some(msg) => {
                                    if let Ok(payload) = msg.get_payload::<String>() {
                                        on(Signal::Message(&payload));
                                    }
                                }
                                None => break,
                            },
                            _ = tokio::time::sleep(heartbeat) => {
                                let ping = tokio::time::timeout(heartbeat, sink.ping::<redis::Value>()).await;
                                if !matches!(ping, Ok(Ok(_))) {
                                    break;
                                }
                            }
                        }
                    }
                    on(Signal::Down(None));
                }
                Err(e) => {
                    if failures == 0 {
                        on(Signal::Down(Some(&e.to_string())));
                    }
                }
            }
            failures = failures.saturating_add(1);
            tokio::time::sleep(Self::resubscribe_backoff(failures)).await;
        }
    }
}

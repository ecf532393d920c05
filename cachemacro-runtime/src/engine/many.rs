//! Bulk reads (`<fn>_many`): the keys that L1 cannot answer are read from the shared tier
//! in one round trip; each key that is still not answered (missing, stale, due for a
//! refresh) then makes its own call, all of them concurrently and each coalesced as usual.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::call::Call;
use super::Engine;
use crate::key::Rendered;
use crate::kind::Kind;

impl<R: 'static, S: Kind<R>> Engine<R, S> {
    /// One result per item, in the items' order. `one` makes a key's own call (the
    /// function's flavour: [`Engine::get`], [`Engine::get_detached`] or
    /// [`Engine::get_ahead`]); an item's tags are what its call would store with.
    /// `note` is told of each key answered by the bulk read (a `refresh_every` schedule
    /// counts it as a read).
    pub async fn get_many<'a, M, Fut, F, N>(
        self: &'a Arc<Self>,
        items: Vec<(Rendered, Vec<String>, M)>,
        one: F,
        note: N,
    ) -> Vec<R>
    where
        F: Fn(&'a Arc<Self>, &Rendered, M) -> Call<R, Fut>,
        N: Fn(&'a Arc<Self>, &Rendered, &M),
        Fut: Future<Output = R> + 'a,
    {
        let mut found: Vec<Option<S::Value>> = items.iter().map(|_| None).collect();
        if let (Some(remote), None) = (&self.remote, crate::bypass::current()) {
            let wanted: Vec<usize> = (0..items.len())
                .filter(|&i| self.fresh_in_l1(items[i].0.as_str()).is_none())
                .collect();
            if wanted.len() > 1 || (wanted.len() == 1 && items.len() > 1) {
                let keys: Vec<(&str, &[String])> = wanted
                    .iter()
                    .map(|&i| (items[i].0.as_str(), items[i].1.as_slice()))
                    .collect();
                let got = remote.peek_many(self, &keys).await;
                for (i, v) in wanted.into_iter().zip(got) {
                    found[i] = v;
                }
            }
        }
        let calls: Vec<Call<R, Fut>> = items
            .into_iter()
            .zip(found)
            .map(|((key, _, make), v)| match v {
                Some(v) => {
                    note(self, &key, &make);
                    // Read from the shared tier without its entry at hand: an observer
                    // (HTTP) gets no validator for it rather than one that misses it.
                    self.note(key.as_str(), crate::served::Outcome::Hit, None);
                    Call::Ready(std::future::ready(S::join(v)))
                }
                None => one(self, &key, make),
            })
            .collect();
        JoinAll::new(calls).await
    }
}

/// Polls every call until all are done; the results in order.
struct JoinAll<F: Future> {
    calls: Vec<Option<F>>,
    out: Vec<Option<F::Output>>,
    left: usize,
}

impl<F: Future + Unpin> JoinAll<F> {
    fn new(calls: Vec<F>) -> Self {
        let left = calls.len();
        Self {
            out: calls.iter().map(|_| None).collect(),
            calls: calls.into_iter().map(Some).collect(),
            left,
        }
    }
}

// Nothing in it is pinned: the calls are `Unpin`, the outputs are only moved.
impl<F: Future> Unpin for JoinAll<F> {}

impl<F: Future + Unpin> Future for JoinAll<F> {
    type Output = Vec<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        for (slot, out) in this.calls.iter_mut().zip(this.out.iter_mut()) {
            if let Some(call) = slot {
                if let Poll::Ready(r) = Pin::new(call).poll(cx) {
                    *out = Some(r);
                    *slot = None;
                    this.left -= 1;
                }
            }
        }
        if this.left > 0 {
            return Poll::Pending;
        }
        Poll::Ready(this.out.iter_mut().filter_map(Option::take).collect())
    }
}

//! Write-behind (write-back): writes accepted at memory speed, coalesced per key, flushed
//! to a sink in batches by a task on the cache's threads for user code.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// What [`WriteBehind::write`] does when the buffer holds `capacity` keys already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenFull {
    /// Wait for room (back-pressure on the writer). The default.
    #[default]
    Wait,
    /// Refuse the new write ([`WriteError::Full`]), counted in `dropped`.
    DropNewest,
    /// Drop the oldest pending write to make room, counted in `dropped`.
    DropOldest,
}

/// Why a write-behind write was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// The buffer is full and the policy is [`WhenFull::DropNewest`].
    Full,
    /// The buffer was shut down.
    Closed,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Full => f.write_str("write-behind buffer full"),
            WriteError::Closed => f.write_str("write-behind buffer shut down"),
        }
    }
}

impl std::error::Error for WriteError {}

/// Counters of a [`WriteBehind`] buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteBehindStats {
    /// Keys waiting to be flushed (a gauge).
    pub pending: u64,
    /// Writes accepted.
    pub accepted: u64,
    /// Accepted writes that replaced a pending write of the same key (only the latest is
    /// flushed).
    pub coalesced: u64,
    /// Writes the sink acknowledged.
    pub written: u64,
    /// Batches handed to the sink (including retries).
    pub batches: u64,
    /// Failed batch attempts that were retried.
    pub retries: u64,
    /// Writes given up on after `max_retries` failed attempts (lost).
    pub failed: u64,
    /// Writes dropped by the full-buffer policy (lost).
    pub dropped: u64,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type SinkFn<K, V> =
    dyn Fn(Vec<(K, V)>) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send + Sync;

/// Settings of a [`WriteBehind`] buffer; see [`WriteBehind::builder`].
#[must_use]
pub struct WriteBehindBuilder<K, V> {
    sink: Arc<SinkFn<K, V>>,
    settings: Settings,
}

/// The knobs of a buffer, as the builder sets them.
#[derive(Debug, Clone, Copy)]
struct Settings {
    max_batch: usize,
    flush_interval: Duration,
    capacity: usize,
    when_full: WhenFull,
    max_retries: u32,
    retry_backoff: Duration,
}

impl<K, V> fmt::Debug for WriteBehindBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBehindBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<K, V> WriteBehindBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Flush as soon as this many keys are pending (default 500), and never hand the sink
    /// more than this many at once.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.settings.max_batch = n.max(1);
        self
    }

    /// Flush whatever is pending at least this often (default 100 ms). This is the loss
    /// window: writes accepted in the last interval are lost if the process dies.
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.settings.flush_interval = d.max(Duration::from_millis(1));
        self
    }

    /// Most keys pending at once (default 10 000).
    pub fn capacity(mut self, n: usize) -> Self {
        self.settings.capacity = n.max(1);
        self
    }

    /// What a write does when `capacity` keys are pending (default [`WhenFull::Wait`]).
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.settings.when_full = policy;
        self
    }

    /// Attempts after the first failed one before a batch is given up (default 5), waiting
    /// `backoff`, doubling each time (default 50 ms).
    pub fn retries(mut self, max_retries: u32, backoff: Duration) -> Self {
        self.settings.max_retries = max_retries;
        self.settings.retry_backoff = backoff;
        self
    }

    /// Starts the buffer. Its flusher, and so the sink, runs on the crate's own pool of
    /// threads for user code: not on the caller's runtime (it outlives the runtime that
    /// created it) nor on the cache's I/O thread (a sink that blocks its thread cannot stall
    /// the cache's Redis traffic).
    pub fn build(self) -> WriteBehind<K, V> {
        let shared = self.shared();
        let flusher = shared.clone();
        crate::io::spawn_user(async move { flusher.run().await });
        WriteBehind {
            alive: Arc::new(Alive(shared.clone())),
            shared,
        }
    }

    /// The buffer's state, without its flusher.
    fn shared(self) -> Arc<Shared<K, V>> {
        Arc::new(Shared {
            state: Mutex::new(State {
                pending: HashMap::new(),
                order: VecDeque::new(),
                next_seq: 0,
                in_flight: None,
                flush_requested: false,
                closed: false,
                done: false,
            }),
            wake: Notify::new(),
            progress: Notify::new(),
            counters: Counters::default(),
            sink: self.sink,
            settings: self.settings,
        })
    }
}

/// A write-behind (write-back) buffer: writes are accepted at memory speed, repeated writes
/// of one key coalesce (the latest wins), and a background flusher hands them to a sink in
/// batches, on size or on interval, retrying failed batches with backoff.
///
/// Bounded: at most `capacity` keys wait; [`WhenFull`] says what happens beyond. Durable
/// only once flushed: writes accepted less than a flush interval ago (plus a batch being
/// written) are lost if the process dies. docs/PATTERNS.md measures the window.
///
/// # Stopping
///
/// * [`WriteBehind::shutdown`] stops accepting writes and returns once everything pending
///   has been written (or given up on after its retries). **Await it before the process
///   exits**: it is the only way to know the writes are done.
/// * Dropping the last handle (every clone) without `shutdown` closes the buffer too and
///   starts a final flush of everything pending, but does not wait for it. That flush runs
///   to completion in the background on the crate's own threads, so it survives the
///   runtime the handle was dropped on; it cannot complete if the process exits first
///   (returning from `main` ends the process, background flush or not). Drop does not
///   block: waiting there could stall or deadlock the caller's runtime.
///
/// The sink runs on the crate's own threads for user code, neither on the caller's runtime
/// nor on the cache's I/O thread. A client it uses that is bound to a runtime (a connection
/// pool whose tasks live there) works only while that runtime runs; a sink that holds a
/// handle of its own buffer keeps the buffer open.
///
/// ```
/// use cachemacro_runtime::WriteBehind;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let views = WriteBehind::builder(|batch: Vec<(u64, u64)>| async move {
///     // one round trip for the whole batch, e.g. an upsert of every (page, count)
///     Ok::<_, std::io::Error>(())
/// })
/// .max_batch(1000)
/// .flush_interval(std::time::Duration::from_millis(200))
/// .build();
/// views.write(42, 1).await.unwrap();
/// views.write(42, 2).await.unwrap(); // coalesced: only (42, 2) is written
/// let stats = views.shutdown().await;
/// assert_eq!((stats.written, stats.coalesced), (1, 1));
/// # }
/// ```
pub struct WriteBehind<K, V> {
    shared: Arc<Shared<K, V>>,
    alive: Arc<Alive<K, V>>,
}

impl<K, V> Clone for WriteBehind<K, V> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            alive: self.alive.clone(),
        }
    }
}

impl<K, V> fmt::Debug for WriteBehind<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBehind")
            .field("stats", &self.shared.stats())
            .finish_non_exhaustive()
    }
}

/// Closes the buffer when the last user handle goes: the flusher, on the crate's own
/// threads, drains it in the background and stops. Dropping does not wait for that.
struct Alive<K, V>(Arc<Shared<K, V>>);

impl<K, V> Drop for Alive<K, V> {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake.notify_one();
    }
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    coalesced: AtomicU64,
    written: AtomicU64,
    batches: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// A key's pending write: the latest value, and the sequence number of the oldest write of
/// the key not yet handed to the sink (what `flush()` waits for: a later write that
/// replaces the value does not make the earlier one flushed).
struct Slot<V> {
    value: V,
    first_seq: u64,
}

struct State<K, V> {
    pending: HashMap<K, Slot<V>>,
    /// Every pending key once, in the order of its first pending write.
    order: VecDeque<K>,
    next_seq: u64,
    /// Lowest `first_seq` in the batch being written, if any.
    in_flight: Option<u64>,
    /// `flush()` asked for everything pending to be written now.
    flush_requested: bool,
    closed: bool,
    /// The flusher has stopped.
    done: bool,
}

struct Shared<K, V> {
    state: Mutex<State<K, V>>,
    /// Wakes the flusher (size reached, flush or shutdown asked).
    wake: Notify,
    /// Signalled after every batch and when room frees up.
    progress: Notify,
    counters: Counters,
    sink: Arc<SinkFn<K, V>>,
    settings: Settings,
}

impl<K, V> Shared<K, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, V>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stats(&self) -> WriteBehindStats {
        let c = &self.counters;
        WriteBehindStats {
            pending: self.lock().pending.len() as u64,
            accepted: c.accepted.load(Relaxed),
            coalesced: c.coalesced.load(Relaxed),
            written: c.written.load(Relaxed),
            batches: c.batches.load(Relaxed),
            retries: c.retries.load(Relaxed),
            failed: c.failed.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
        }
    }
}

impl<K, V> Shared<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The flusher: waits for size, interval or a request, then writes batches in order.
    async fn run(self: Arc<Self>) {
        loop {
            // Wait for a full batch, a flush or shutdown request, or the interval.
            let deadline = tokio::time::Instant::now() + self.settings.flush_interval;
            loop {
                let ready = {
                    let s = self.lock();
                    s.pending.len() >= self.settings.max_batch || s.closed || s.flush_requested
                };
                let now = tokio::time::Instant::now();
                if ready || now >= deadline {
                    break;
                }
                let _ = tokio::time::timeout(deadline - now, self.wake.notified()).await;
            }
            let (batch, finished) = {
                let mut s = self.lock();
                let n = s.order.len().min(self.settings.max_batch);
                let mut batch = Vec::with_capacity(n);
                let mut lowest = u64::MAX;
                while batch.len() < n {
                    let Some(k) = s.order.pop_front() else { break };
                    if let Some(slot) = s.pending.remove(&k) {
                        lowest = lowest.min(slot.first_seq);
                        batch.push((k, slot.value));
                    }
                }
                s.in_flight = (!batch.is_empty()).then_some(lowest);
                if s.pending.is_empty() {
                    s.flush_requested = false;
                }
                // Closed: drain until nothing is pending, then stop.
                (batch, s.closed && s.pending.is_empty())
            };
            self.progress.notify_waiters(); // room freed
            if batch.is_empty() {
                if finished {
                    break;
                }
                continue;
            }
            self.write(batch).await;
            self.lock().in_flight = None;
            self.progress.notify_waiters();
        }
        self.lock().done = true;
        self.progress.notify_waiters();
    }

    async fn write(&self, batch: Vec<(K, V)>) {
        let n = batch.len() as u64;
        let mut backoff = self.settings.retry_backoff;
        for attempt in 0..=self.settings.max_retries {
            self.counters.batches.fetch_add(1, Relaxed);
            let result = match crate::io::guarded((self.sink)(batch.clone())).await {
                Some(r) => r,
                None => Err("the sink panicked".into()),
            };
            match result {
                Ok(()) => {
                    self.counters.written.fetch_add(n, Relaxed);
                    return;
                }
                Err(e) if attempt < self.settings.max_retries => {
                    self.counters.retries.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, attempt, "cachemacro: write-behind batch failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    self.counters.failed.fetch_add(n, Relaxed);
                    tracing::error!(error = %e, writes = n, "cachemacro: write-behind batch failed after every retry; these writes are lost");
                }
            }
        }
    }
}

impl<K, V> WriteBehind<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A buffer that flushes to `sink`, which writes one batch (one round trip, ideally)
    /// and says whether it succeeded.
    pub fn builder<F, Fut, E>(sink: F) -> WriteBehindBuilder<K, V>
    where
        F: Fn(Vec<(K, V)>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let sink: Arc<SinkFn<K, V>> = Arc::new(move |batch| {
            let fut = sink(batch);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        WriteBehindBuilder {
            sink,
            settings: Settings {
                max_batch: 500,
                flush_interval: Duration::from_millis(100),
                capacity: 10_000,
                when_full: WhenFull::Wait,
                max_retries: 5,
                retry_backoff: Duration::from_millis(50),
            },
        }
    }

    /// Accepts a write. Returns at once unless the buffer is full and the policy is
    /// [`WhenFull::Wait`].
    pub async fn write(&self, key: K, value: V) -> Result<(), WriteError> {
        let shared = &*self.shared;
        let counters = &shared.counters;
        let mut value = Some(value);
        loop {
            let progress = shared.progress.notified();
            tokio::pin!(progress);
            {
                // One critical section decides and applies the write, so racing writers of
                // one new key make one slot and one place in the flush order.
                let mut guard = shared.lock();
                let s = &mut *guard;
                if s.closed {
                    return Err(WriteError::Closed);
                }
                let seq = s.next_seq;
                if let Some(slot) = s.pending.get_mut(&key) {
                    slot.value = value.take().expect("written once");
                    s.next_seq += 1;
                    counters.accepted.fetch_add(1, Relaxed);
                    counters.coalesced.fetch_add(1, Relaxed);
                    return Ok(());
                }
                let full = s.pending.len() >= shared.settings.capacity;
                let policy = shared.settings.when_full;
                if full && policy == WhenFull::DropNewest {
                    counters.dropped.fetch_add(1, Relaxed);
                    return Err(WriteError::Full);
                }
                if full && policy == WhenFull::Wait {
                    // Registered before the lock is released, so the flusher's next "room
                    // freed" reaches this writer; waits below, then tries again.
                    progress.as_mut().enable();
                } else {
                    if full {
                        // WhenFull::DropOldest
                        if let Some(old) = s.order.pop_front() {
                            s.pending.remove(&old);
                            counters.dropped.fetch_add(1, Relaxed);
                        }
                    }
                    s.next_seq += 1;
                    let slot = Slot {
                        value: value.take().expect("written once"),
                        first_seq: seq,
                    };
                    s.pending.insert(key.clone(), slot);
                    s.order.push_back(key);
                    counters.accepted.fetch_add(1, Relaxed);
                    if s.pending.len() >= shared.settings.max_batch {
                        shared.wake.notify_one();
                    }
                    return Ok(());
                }
            }
            shared.wake.notify_one();
            progress.await;
        }
    }

    /// Waits until every write accepted before this call has been written (or given up
    /// on): for each key written before the call, a batch holding that write or a later
    /// one of the key has been handed to the sink and finished. Writes accepted meanwhile
    /// do not hold it up.
    pub async fn flush(&self) {
        let upto = {
            let mut s = self.shared.lock();
            s.flush_requested = true;
            s.next_seq
        };
        loop {
            let progress = self.shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            {
                let s = self.shared.lock();
                let waiting = s.pending.values().any(|slot| slot.first_seq < upto)
                    || s.in_flight.is_some_and(|low| low < upto);
                if !waiting || s.done {
                    return;
                }
            }
            self.shared.wake.notify_one();
            progress.await;
        }
    }

    /// Stops accepting writes (for every clone), flushes everything pending (retries
    /// included) and returns the final counters once the flusher is done. Await it before
    /// the process exits; dropping the handles instead does not wait (see
    /// [Stopping](WriteBehind#stopping)).
    pub async fn shutdown(self) -> WriteBehindStats {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        loop {
            let progress = self.shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.shared.lock().done {
                break;
            }
            self.shared.wake.notify_one();
            progress.await;
        }
        self.shared.stats()
    }

    /// The buffer's counters.
    pub fn stats(&self) -> WriteBehindStats {
        self.shared.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closed buffer's flusher stops only once nothing is pending, even if the flush
    /// order holds keys that are no longer pending (it once stopped at the first batch that
    /// came out empty, losing the writes behind it).
    #[tokio::test]
    async fn a_closed_buffer_drains_everything_pending_before_its_flusher_stops() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let shared = WriteBehind::builder({
            let written = written.clone();
            move |batch: Vec<(u32, u32)>| {
                written.lock().unwrap().extend(batch);
                async { Ok::<_, std::io::Error>(()) }
            }
        })
        .max_batch(1)
        .shared();
        {
            let mut s = shared.lock();
            s.order.push_back(1); // no longer pending
            s.pending.insert(
                2,
                Slot {
                    value: 20,
                    first_seq: 0,
                },
            );
            s.order.push_back(2);
            s.closed = true;
        }
        tokio::time::timeout(Duration::from_secs(10), shared.clone().run())
            .await
            .expect("the flusher stops");
        assert_eq!(*written.lock().unwrap(), vec![(2, 20)]);
        assert!(shared.lock().done);
    }
}

//! The cache's clock for deadlines: nanoseconds since a fixed point before the process's
//! first cached call.
//!
//! A hit must check a deadline, and a precise clock read (`clock_gettime(CLOCK_MONOTONIC)`,
//! about 23 ns on this project's machine) would be a third of a hit. Release builds read
//! a ticking clock instead: an atomic that a background thread (`cachemacro-clock`) sets
//! from the precise clock every millisecond, one relaxed load per read (see [`ticker`]).
//! A deadline is honoured to within a tick (plus however late the OS runs that thread).
//! The thread parks when no cache read the clock for a while and the next read wakes it
//! (that read, and any while it parks, reads the precise clock), so an idle process does
//! not tick. Debug builds, and any build with the `tokio-clock` feature, read tokio's clock
//! instead, which tests can pause and advance (`tokio::time::pause`,
//! `#[tokio::test(start_paused = true)]`). Latencies are measured with a precise clock,
//! never with a coarse one.

#[cfg(any(debug_assertions, feature = "tokio-clock"))]
use std::sync::OnceLock;
use std::time::Duration;

/// Nanoseconds on the cache's clock now.
#[inline]
pub(crate) fn now() -> u64 {
    imp::now()
}

/// Measures how long something takes, on a precise clock that follows tokio's when the
/// cache's clock does (so a load's δ, which XFetch weighs, is on the deadlines' time scale
/// in paused tests too).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch(imp::Precise);

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Self(imp::Precise::now())
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// Wall-clock time in Unix milliseconds (deadlines stored in shared tiers).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, crate::io::millis)
}

/// `d` in nanoseconds, saturating.
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A point well before any runtime of this process started, so that no clock reading
/// (a paused tokio clock included) comes before it.
fn earliest<I: Copy>(now: I, back: impl Fn(I, Duration) -> Option<I>) -> I {
    [86_400, 3_600, 60, 1]
        .into_iter()
        .find_map(|s| back(now, Duration::from_secs(s)))
        .unwrap_or(now)
}

#[cfg(any(debug_assertions, feature = "tokio-clock"))]
mod imp {
    use super::*;
    use tokio::time::Instant;

    pub(super) type Precise = Instant;

    static BASE: OnceLock<Instant> = OnceLock::new();

    pub(super) fn now() -> u64 {
        let base = BASE.get_or_init(|| earliest(Instant::now(), |i, d| i.checked_sub(d)));
        super::nanos(Instant::now().saturating_duration_since(*base))
    }
}

#[cfg(not(any(debug_assertions, feature = "tokio-clock")))]
mod imp {
    pub(super) type Precise = std::time::Instant;

    #[inline]
    pub(super) fn now() -> u64 {
        super::ticker::now()
    }
}

/// The ticking clock release builds read.
#[cfg(any(test, not(any(debug_assertions, feature = "tokio-clock"))))]
pub(crate) mod ticker {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
    use std::sync::OnceLock;
    use std::thread::Thread;
    use std::time::{Duration, Instant};

    /// How often the clock moves.
    pub(crate) const TICK: Duration = Duration::from_millis(1);
    /// Ticks without a read after which the thread parks.
    pub(crate) const IDLE_TICKS: u32 = 250;

    /// What readers share: written once per tick, read by every hit.
    #[repr(align(64))]
    struct Shared {
        /// Nanoseconds since [`base`], as of the last tick (never goes back).
        now: AtomicU64,
        /// Some read since the last tick (set by the first one only: one write per tick).
        read: AtomicBool,
        /// The thread is ticking; when clear, readers read the precise clock and wake it.
        awake: AtomicBool,
    }

    static SHARED: Shared = Shared {
        now: AtomicU64::new(0),
        read: AtomicBool::new(false),
        awake: AtomicBool::new(false),
    };

    /// The ticking thread, or `None` if it could not be started (then every read reads the
    /// precise clock).
    static THREAD: OnceLock<Option<Thread>> = OnceLock::new();

    fn base() -> Instant {
        static BASE: OnceLock<Instant> = OnceLock::new();
        *BASE.get_or_init(|| super::earliest(Instant::now(), |i, d| i.checked_sub(d)))
    }

    /// The precise clock, on this clock's scale; raises the shared reading to it.
    fn precise() -> u64 {
        let now = super::nanos(Instant::now().saturating_duration_since(base()));
        SHARED.now.fetch_max(now, Relaxed);
        now
    }

    /// Nanoseconds on the clock: the last tick's reading while the thread ticks.
    #[inline]
    pub(crate) fn now() -> u64 {
        if SHARED.awake.load(Relaxed) {
            if !SHARED.read.load(Relaxed) {
                SHARED.read.store(true, Relaxed);
            }
            return SHARED.now.load(Relaxed);
        }
        wake()
    }

    /// Whether the thread is ticking (tests).
    #[cfg(test)]
    pub(crate) fn ticking() -> bool {
        SHARED.awake.load(SeqCst)
    }

    /// A read while the thread is parked (or before it started): the precise clock, and
    /// the thread woken.
    #[cold]
    fn wake() -> u64 {
        let now = precise();
        SHARED.read.store(true, SeqCst);
        if let Some(thread) = THREAD.get_or_init(start) {
            SHARED.awake.store(true, SeqCst);
            thread.unpark();
        }
        now
    }

    fn start() -> Option<Thread> {
        std::thread::Builder::new()
            .name("cachemacro-clock".into())
            .spawn(run)
            .ok()
            .map(|handle| handle.thread().clone())
    }

    fn run() {
        let mut idle = 0;
        loop {
            std::thread::sleep(TICK);
            precise();
            if SHARED.read.swap(false, SeqCst) {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_TICKS {
                continue;
            }
            // Park. A reader that saw `awake` before it cleared read a reading at most a
            // tick old; one that set `read` meanwhile keeps the thread ticking.
            SHARED.awake.store(false, SeqCst);
            if SHARED.read.load(SeqCst) {
                SHARED.awake.store(true, SeqCst);
                continue;
            }
            while !SHARED.awake.load(SeqCst) {
                std::thread::park();
            }
            idle = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ticker;
    use std::time::{Duration, Instant};

    #[test]
    fn the_ticking_clock_follows_real_time_and_parks_when_unread() {
        let started = Instant::now();
        let a = ticker::now();
        assert!(ticker::ticking(), "the first read starts the thread");
        std::thread::sleep(Duration::from_millis(50));
        let b = ticker::now();
        let real = started.elapsed();
        let moved = Duration::from_nanos(b - a);
        // Behind by at most a tick and a late wake-up; never ahead of real time.
        assert!(moved <= real, "moved {moved:?} in {real:?}");
        assert!(
            moved + Duration::from_millis(30) >= real,
            "moved {moved:?} in {real:?}"
        );

        // Unread, it parks; the next read reads the precise clock and wakes it.
        let parked = Instant::now();
        while ticker::ticking() {
            assert!(parked.elapsed() < Duration::from_secs(20), "never parked");
            std::thread::sleep(Duration::from_millis(20));
        }
        let before = ticker::now();
        std::thread::sleep(Duration::from_millis(60));
        let after = ticker::now();
        assert!(ticker::ticking(), "a read wakes it");
        assert!(after - before >= 20_000_000, "moved {} ns", after - before);
    }

    #[test]
    fn the_clock_moves_forward_with_time() {
        let a = super::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = super::now();
        assert!(b > a, "{a} then {b}");
        // Coarse, but within a few ticks of the real elapsed time.
        let moved = b - a;
        assert!(
            (10_000_000..200_000_000).contains(&moved),
            "moved {moved} ns"
        );
    }
}

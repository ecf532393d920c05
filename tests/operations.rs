//! Operations on the in-process engine: refresh waves (jittered soft expiry, a bound on
//! concurrent background refreshes). Each test has its own cached function.

mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use cachemacro_runtime::cached;
use common::{until, Gate};
use tokio::time::advance;

// ---- refresh waves ----------------------------------------------------------------------------

static WAVE: Gate = Gate::new();
static WAVE_SLOW: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, soft_ttl = 60, max_refreshes = 2, key = "wave:<id>")]
async fn wave(id: u64) -> u64 {
    if WAVE_SLOW.load(SeqCst) == 1 {
        WAVE.pass().await;
    }
    id
}

static WAVE_CONTROL: Gate = Gate::new();
static WAVE_CONTROL_SLOW: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, soft_ttl = 60, key = "wave-control:<id>")]
async fn wave_control(id: u64) -> u64 {
    if WAVE_CONTROL_SLOW.load(SeqCst) == 1 {
        WAVE_CONTROL.pass().await;
    }
    id
}

#[tokio::test(start_paused = true)]
async fn at_most_max_refreshes_run_at_once_and_stale_values_keep_being_served() {
    for id in 0..10 {
        wave(id).await;
        wave_control(id).await;
    }
    advance(Duration::from_secs(61)).await; // every key stale at once
    WAVE_SLOW.store(1, SeqCst);
    WAVE_CONTROL_SLOW.store(1, SeqCst);
    for id in 0..10 {
        assert_eq!(wave(id).await, id, "stale, at once");
        assert_eq!(wave_control(id).await, id);
    }
    until("the refreshes reached the source", || {
        WAVE.entered() == 2 && WAVE_CONTROL.entered() == 10
    })
    .await;
    let s = wave_stats();
    assert_eq!(s.background_refreshes, 2, "two refreshes started");
    assert_eq!(s.refreshes_deferred, 8, "eight waited for a later call");
    assert_eq!(s.stale_hits, 10, "all ten served");
    assert_eq!(
        wave_control_stats().background_refreshes,
        10,
        "control: the default bound (16) lets all ten start"
    );
    // The bound frees up as refreshes land: the next calls refresh the rest.
    WAVE.open(2);
    until("two landed", || wave_stats().loads == 12).await;
    for id in 0..10 {
        wave(id).await;
    }
    until("two more started", || WAVE.entered() == 4).await;
    WAVE.open(100);
    WAVE_CONTROL.open(100);
}

static SPREAD: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, soft_ttl = 100, jitter = 0.2, key = "spread:<id>")]
async fn spread(id: u64) -> u64 {
    SPREAD.fetch_add(1, SeqCst);
    id
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_soft_expiry_so_keys_loaded_together_do_not_refresh_together() {
    for id in 0..200 {
        spread(id).await;
    }
    // Soft TTLs are spread over 80..120 s: at 95 s some keys are stale, most are not.
    advance(Duration::from_secs(95)).await;
    let before = spread_stats().stale_hits;
    for id in 0..200 {
        spread(id).await;
    }
    let stale = spread_stats().stale_hits - before;
    assert!(
        (10..150).contains(&stale),
        "{stale} of 200 stale at 95 s (expected about 75)"
    );
}

// ---- clear -------------------------------------------------------------------------------------

static CLEARED: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, key = "clear:<id>")]
async fn clearable(id: u64) -> u64 {
    CLEARED.fetch_add(1, SeqCst);
    id
}

#[tokio::test]
async fn clear_drops_every_entry_of_a_memory_function() {
    for id in 0..5 {
        clearable(id).await;
        clearable(id).await;
    }
    assert_eq!(CLEARED.load(SeqCst), 5, "cached");
    assert_eq!(clearable_stats().l1_entries, 5);
    clearable_clear().await.unwrap();
    assert_eq!(clearable_stats().l1_entries, 0);
    for id in 0..5 {
        clearable(id).await;
    }
    assert_eq!(CLEARED.load(SeqCst), 10, "every key loaded again");
}

// ---- bypass ------------------------------------------------------------------------------------

static BYPASSED: AtomicU32 = AtomicU32::new(1);

#[cached(ttl = 600, key = "bypass:<id>")]
async fn bypassable(id: u64) -> u32 {
    let _ = id;
    BYPASSED.load(SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_bypass_scope_calls_read_the_source_and_optionally_store() {
    use cachemacro_runtime::{bypass, Bypass};
    assert_eq!(bypassable(1).await, 1);
    BYPASSED.store(2, SeqCst);
    assert_eq!(bypassable(1).await, 1, "control: cached");
    assert_eq!(bypass(Bypass::Read, bypassable(1)).await, 2, "the source");
    assert_eq!(bypassable(1).await, 1, "Read leaves the cache as it was");
    // A task spawned in the scope is not in it.
    let spawned = bypass(Bypass::Read, async {
        tokio::spawn(bypassable(1)).await.unwrap()
    })
    .await;
    assert_eq!(spawned, 1);
    assert_eq!(
        bypass(Bypass::ReadAndStore, bypassable(1)).await,
        2,
        "the source"
    );
    assert_eq!(
        bypassable(1).await,
        2,
        "ReadAndStore replaced the cached value"
    );
}

// ---- hot keys ----------------------------------------------------------------------------------

#[cached(ttl = 600, key = "hot:<id>", hot_keys = 3)]
async fn hot(id: u64) -> u64 {
    id
}

#[tokio::test]
async fn hot_keys_are_the_most_hit_and_the_most_loaded_keys() {
    // Keys 1, 2, 3 take 90% of 20,000 calls; 1,000 other keys share the rest.
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..20_000 {
        let id = if rng.f64() < 0.9 {
            rng.u64(1..=3)
        } else {
            rng.u64(100..1100)
        };
        hot(id).await;
    }
    let s = hot_stats();
    let mut top: Vec<String> = s.hot_keys.iter().map(|(k, _)| k.clone()).collect();
    top.sort();
    assert_eq!(top, ["hot:1", "hot:2", "hot:3"], "{:?}", s.hot_keys);
    let estimated: u64 = s.hot_keys.iter().map(|(_, n)| n).sum();
    assert!(
        (14_000..22_000).contains(&estimated),
        "about 18,000 hits estimated from the sample: {estimated}"
    );
    assert_eq!(s.hot_loads.len(), 3, "bounded at N: {:?}", s.hot_loads);
    let table = cachemacro_runtime::stats::table(&[s]);
    assert!(table.contains("hottest by hits: hot:"), "{table}");
    // Off by default: nothing tracked.
    assert!(clearable_stats().hot_keys.is_empty());
}

// ---- refresh ahead ---------------------------------------------------------------------------------

static AHEAD: AtomicU32 = AtomicU32::new(0);

#[cached(
    ttl = 5,
    refresh_every = "200ms",
    refresh_idle = "600ms",
    key = "ahead:<id>"
)]
async fn ahead(id: u64) -> u32 {
    let _ = id;
    AHEAD.fetch_add(1, SeqCst) + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_read_often_is_refreshed_ahead_and_the_schedule_stops_when_it_is_not() {
    assert_eq!(ahead(1).await, 1);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen.insert(ahead(1).await);
    }
    let s = ahead_stats();
    assert_eq!(s.misses, 1, "every read after the first was a hit");
    assert!(s.background_refreshes >= 4, "refreshed ahead: {s:?}");
    assert!(seen.len() >= 4, "readers saw the reloaded values: {seen:?}");
    // Not read any more: the schedule ends after refresh_idle.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let loads = AHEAD.load(SeqCst);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(AHEAD.load(SeqCst), loads, "idle keys are not refreshed");
}

// ---- L1 occupancy in bytes --------------------------------------------------------------------

#[cached(ttl = 600, key = "sized:<id>")]
async fn sized(id: u64) -> String {
    "x".repeat(usize::try_from(id).unwrap())
}

#[derive(Clone)]
struct Opaque(#[allow(dead_code)] u64);

#[cached(ttl = 600, key = "opaque:<id>")]
async fn opaque(id: u64) -> Opaque {
    Opaque(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_bytes_are_reported_when_the_value_type_can_say_and_only_then() {
    tokio::spawn(async {
        assert_eq!(sized_stats().l1_bytes, Some(0));
        sized(1000).await;
        sized(3000).await;
        let bytes = sized_stats().l1_bytes.unwrap();
        // Two keys of ~10 bytes, two Strings of 1,000 and 3,000 bytes and their headers.
        assert!((4_000..4_200).contains(&bytes), "{bytes}");
        sized_invalidate(3000).await.unwrap();
        let bytes = sized_stats().l1_bytes.unwrap();
        assert!((1_000..1_100).contains(&bytes), "{bytes}");
        opaque(1).await;
        assert_eq!(opaque_stats().l1_entries, 1);
        assert_eq!(opaque_stats().l1_bytes, None, "nothing guessed");
    })
    .await
    .unwrap();
}

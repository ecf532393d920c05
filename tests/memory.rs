//! The in-process engine through the macro: TTLs, stale-while-revalidate, coalescing,
//! cancellation, panics, invalidation races, return kinds, fail-safe, capacity, tags,
//! generated items, several runtimes. Each test has its own cached function (engines are
//! process-wide statics).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use cachemacro_runtime::{cached, stats};
use common::{no_hang, until, until_real, Gate};
use tokio::time::advance;

// ---- miss, hit, hard TTL -------------------------------------------------------------------

static BASIC: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "basic:<id>")]
async fn basic(id: u64) -> u64 {
    BASIC.fetch_add(1, SeqCst);
    id * 2
}

#[tokio::test(start_paused = true)]
async fn a_miss_loads_then_hits_until_the_hard_ttl() {
    assert_eq!(basic(21).await, 42);
    assert_eq!(basic(21).await, 42);
    assert_eq!(basic(21).await, 42);
    assert_eq!(BASIC.load(SeqCst), 1, "hits must not call the source");
    advance(Duration::from_secs(59)).await;
    assert_eq!(basic(21).await, 42);
    assert_eq!(BASIC.load(SeqCst), 1, "still fresh at 59 s");
    advance(Duration::from_secs(2)).await;
    assert_eq!(basic(21).await, 42);
    assert_eq!(BASIC.load(SeqCst), 2, "expired at 60 s");
    let s = basic_stats();
    assert_eq!((s.hits, s.misses, s.loads), (3, 2, 2));
    assert!(s.name.ends_with("memory::basic"), "{}", s.name);
    assert!(s.hit_ratio() > 0.59 && s.hit_ratio() < 0.61);
    assert_eq!(s.load_hist.count(), 2, "every load's latency is recorded");
}

// ---- jitter --------------------------------------------------------------------------------

static JITTERED: AtomicU32 = AtomicU32::new(0);
static STEADY: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 100, jitter = 0.5, key = "j:<id>")]
async fn jittered(id: u64) -> u64 {
    JITTERED.fetch_add(1, SeqCst);
    id
}

#[cached(ttl = 100, key = "s:<id>")]
async fn steady(id: u64) -> u64 {
    STEADY.fetch_add(1, SeqCst);
    id
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_expiries_of_keys_set_together() {
    for id in 0..200 {
        jittered(id).await;
        steady(id).await;
    }
    advance(Duration::from_secs(75)).await;
    for id in 0..200 {
        jittered(id).await;
        steady(id).await;
    }
    let early = JITTERED.load(SeqCst) - 200;
    // Expiries are spread uniformly over [50 s, 150 s]: a quarter are gone by 75 s.
    assert!(
        (20..=80).contains(&early),
        "{early} of 200 jittered keys expired by 75 s"
    );
    assert_eq!(
        STEADY.load(SeqCst),
        200,
        "without jitter none expire before 100 s"
    );
}

// ---- soft TTL: stale-while-revalidate ------------------------------------------------------

static SWR_GATE: Gate = Gate::new();
static SWR_VERSION: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, soft_ttl = 10, key = "swr:<id>")]
async fn swr(id: u64) -> (u64, u32) {
    SWR_GATE.pass().await;
    (id, SWR_VERSION.fetch_add(1, SeqCst) + 1)
}

#[tokio::test(start_paused = true)]
async fn past_soft_ttl_callers_get_the_stale_value_at_once_and_one_refresh_runs() {
    SWR_GATE.open(1);
    assert_eq!(swr(1).await, (1, 1));
    advance(Duration::from_secs(11)).await;

    // The refresh is held at the gate; 50 callers must still be answered, with the old value.
    let callers: Vec<_> = (0..50).map(|_| tokio::spawn(swr(1))).collect();
    for c in callers {
        assert_eq!(c.await.unwrap(), (1, 1), "stale value served at once");
    }
    until("the refresh reached the source", || SWR_GATE.entered() == 2).await;
    let s = swr_stats();
    assert_eq!(s.background_refreshes, 1, "exactly one refresh per key");
    assert_eq!(s.stale_hits, 50);

    SWR_GATE.open(1);
    until("the refresh landed", || swr_stats().loads == 2).await;
    assert_eq!(
        swr(1).await,
        (1, 2),
        "the refreshed value replaces the stale one"
    );
    assert_eq!(SWR_GATE.entered(), 2);
}

static SWR_REF_GATE: Gate = Gate::new();
static SWR_REF_VERSION: AtomicU32 = AtomicU32::new(0);

/// Borrowed arguments: the source cannot outlive the call, so the caller that wins the
/// refresh runs it; everyone else gets the stale value.
#[cached(ttl = 60, soft_ttl = 10, key = "swrref:<name>")]
async fn swr_borrowed(name: &str) -> String {
    SWR_REF_GATE.pass().await;
    format!("{name}-{}", SWR_REF_VERSION.fetch_add(1, SeqCst) + 1)
}

#[tokio::test(start_paused = true)]
async fn with_borrowed_arguments_one_caller_refreshes_and_the_rest_get_stale() {
    SWR_REF_GATE.open(1);
    assert_eq!(swr_borrowed("a").await, "a-1");
    advance(Duration::from_secs(11)).await;
    let refresher = tokio::spawn(swr_borrowed("a"));
    until("the refresher reached the source", || {
        SWR_REF_GATE.entered() == 2
    })
    .await;
    for _ in 0..20 {
        assert_eq!(swr_borrowed("a").await, "a-1");
    }
    SWR_REF_GATE.open(1);
    assert_eq!(refresher.await.unwrap(), "a-2");
    assert_eq!(swr_borrowed("a").await, "a-2");
    assert_eq!(swr_borrowed_stats().background_refreshes, 1);
}

// ---- coalescing ----------------------------------------------------------------------------

static COLD_GATE: Gate = Gate::new();
static UNPROTECTED_GATE: Gate = Gate::new();

#[cached(ttl = 60, key = "cold:<id>")]
async fn cold(id: u64) -> u64 {
    COLD_GATE.pass().await;
    id + 1
}

#[cached(ttl = 60, key = "unprotected:<id>", stampede = none)]
async fn unprotected(id: u64) -> u64 {
    UNPROTECTED_GATE.pass().await;
    id + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_of_one_key_make_one_source_call() {
    let callers: Vec<_> = (0..1000).map(|_| tokio::spawn(cold(7))).collect();
    until_real("999 callers joined the leader", || {
        cold_stats().coalesced == 999
    })
    .await;
    COLD_GATE.open(1000);
    for c in callers {
        assert_eq!(no_hang("a coalesced caller", c).await.unwrap(), 8);
    }
    assert_eq!(COLD_GATE.entered(), 1, "exactly one source call");
    let s = cold_stats();
    assert_eq!((s.loads, s.misses, s.coalesced), (1, 1000, 999));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_coalescing_every_miss_calls_the_source() {
    let callers: Vec<_> = (0..100).map(|_| tokio::spawn(unprotected(7))).collect();
    until_real("every caller reached the source", || {
        UNPROTECTED_GATE.entered() == 100
    })
    .await;
    UNPROTECTED_GATE.open(100);
    for c in callers {
        assert_eq!(no_hang("an unprotected caller", c).await.unwrap(), 8);
    }
    assert_eq!(UNPROTECTED_GATE.entered(), 100);
}

// ---- a cancelled leader, a panicking source ------------------------------------------------

static CANCEL_GATE: Gate = Gate::new();

#[cached(ttl = 60, key = "cancel:<id>")]
async fn cancellable(id: u64) -> u64 {
    CANCEL_GATE.pass().await;
    id
}

#[tokio::test]
async fn a_cancelled_leader_does_not_cancel_the_load_others_wait_on() {
    let leader = tokio::spawn(cancellable(3));
    until("the leader reached the source", || {
        CANCEL_GATE.entered() == 1
    })
    .await;
    let waiters: Vec<_> = (0..10).map(|_| tokio::spawn(cancellable(3))).collect();
    until("the waiters joined", || cancellable_stats().coalesced == 10).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    CANCEL_GATE.open(1);
    for w in waiters {
        assert_eq!(no_hang("a waiter", w).await.unwrap(), 3);
    }
    assert_eq!(
        CANCEL_GATE.entered(),
        1,
        "the load went on without its caller"
    );
}

static CANCEL_REF_GATE: Gate = Gate::new();

#[cached(ttl = 60, key = "cancelref:<name>")]
async fn cancellable_borrowed(name: &str) -> String {
    CANCEL_REF_GATE.pass().await;
    name.to_uppercase()
}

#[tokio::test]
async fn with_borrowed_arguments_a_waiter_takes_over_from_a_cancelled_leader() {
    let leader = tokio::spawn(cancellable_borrowed("x"));
    until("the leader reached the source", || {
        CANCEL_REF_GATE.entered() == 1
    })
    .await;
    let waiters: Vec<_> = (0..10)
        .map(|_| tokio::spawn(cancellable_borrowed("x")))
        .collect();
    until("the waiters joined", || {
        cancellable_borrowed_stats().coalesced == 10
    })
    .await;
    leader.abort();
    let _ = leader.await;
    until("a waiter took over", || CANCEL_REF_GATE.entered() == 2).await;
    CANCEL_REF_GATE.open(1);
    for w in waiters {
        assert_eq!(no_hang("a waiter", w).await.unwrap(), "X");
    }
    assert_eq!(
        CANCEL_REF_GATE.entered(),
        2,
        "one waiter loaded, the others joined it"
    );
}

static PANIC_GATE: Gate = Gate::new();
static PANICKED: AtomicBool = AtomicBool::new(false);

#[cached(ttl = 60, key = "panic:<id>")]
async fn panics_once(id: u64) -> u64 {
    PANIC_GATE.pass().await;
    if !PANICKED.swap(true, SeqCst) {
        panic!("the source failed hard");
    }
    id
}

#[tokio::test]
async fn a_panicking_source_does_not_leave_waiters_hanging() {
    let leader = tokio::spawn(panics_once(5));
    until("the leader reached the source", || {
        PANIC_GATE.entered() == 1
    })
    .await;
    let waiters: Vec<_> = (0..5).map(|_| tokio::spawn(panics_once(5))).collect();
    until("the waiters joined", || panics_once_stats().coalesced == 5).await;
    PANIC_GATE.open(2);
    assert!(
        leader.await.unwrap_err().is_panic(),
        "the leader sees the panic"
    );
    for w in waiters {
        assert_eq!(no_hang("a waiter", w).await.unwrap(), 5);
    }
    assert_eq!(
        PANIC_GATE.entered(),
        2,
        "one waiter retried; the rest joined it"
    );
}

// ---- invalidation --------------------------------------------------------------------------

static RACE_GATE: Gate = Gate::new();

#[cached(ttl = 60, key = "race:<id>")]
async fn racy(id: u64) -> u64 {
    RACE_GATE.pass().await;
    id
}

#[tokio::test]
async fn an_invalidation_during_a_load_wins_over_the_loads_write() {
    let load = tokio::spawn(racy(1));
    until("the load started", || RACE_GATE.entered() == 1).await;
    racy_invalidate(1).await.unwrap();
    RACE_GATE.open(1);
    assert_eq!(load.await.unwrap(), 1, "the caller still gets its value");
    RACE_GATE.open(1);
    assert_eq!(racy(1).await, 1);
    assert_eq!(RACE_GATE.entered(), 2, "the older result was not cached");

    // Control: without the invalidation the load's result is cached.
    let load = tokio::spawn(racy(2));
    until("the load started", || RACE_GATE.entered() == 3).await;
    RACE_GATE.open(1);
    load.await.unwrap();
    assert_eq!(racy(2).await, 2);
    assert_eq!(RACE_GATE.entered(), 3);
    assert_eq!(racy_stats().invalidations, 1);
}

static INV_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "inv:<id>")]
async fn invalidated(id: u64) -> u32 {
    let _ = id;
    INV_CALLS.fetch_add(1, SeqCst) + 1
}

#[tokio::test]
async fn invalidate_and_refresh_replace_one_key() {
    assert_eq!(invalidated(1).await, 1);
    assert_eq!(invalidated(2).await, 2);
    invalidated_invalidate(1).await.unwrap();
    assert_eq!(invalidated(1).await, 3, "invalidated key reloads");
    assert_eq!(invalidated(2).await, 2, "other keys untouched");
    assert_eq!(
        invalidated_refresh(2).await,
        4,
        "refresh calls the source now"
    );
    assert_eq!(invalidated(2).await, 4, "and stores the result");
    assert_eq!(INV_CALLS.load(SeqCst), 4);
}

// ---- Result, Option, negative caching, fail-safe -------------------------------------------

static RESULT_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "res:<id>")]
async fn fallible(id: u64) -> Result<u64, String> {
    if RESULT_CALLS.fetch_add(1, SeqCst) == 0 {
        Err("database down".into())
    } else {
        Ok(id)
    }
}

#[tokio::test]
async fn errors_are_never_cached() {
    assert_eq!(fallible(1).await, Err("database down".into()));
    assert_eq!(fallible(1).await, Ok(1), "the error was not cached");
    assert_eq!(fallible(1).await, Ok(1));
    assert_eq!(RESULT_CALLS.load(SeqCst), 2, "Ok was cached");
    assert_eq!(fallible_stats().load_errors, 1);
}

static FAIL_GATE: Gate = Gate::new();
static FAIL_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "failw:<id>")]
async fn fails_first(id: u64) -> Result<u64, String> {
    FAIL_GATE.pass().await;
    if FAIL_CALLS.fetch_add(1, SeqCst) == 0 {
        Err("first call fails".into())
    } else {
        Ok(id)
    }
}

#[tokio::test]
async fn waiters_on_a_failed_load_share_its_error_and_do_not_hang() {
    let leader = tokio::spawn(fails_first(9));
    until("the leader reached the source", || FAIL_GATE.entered() == 1).await;
    let waiters: Vec<_> = (0..5).map(|_| tokio::spawn(fails_first(9))).collect();
    until("the waiters joined", || fails_first_stats().coalesced == 5).await;
    FAIL_GATE.open(6);
    assert!(leader.await.unwrap().is_err());
    for w in waiters {
        let got = no_hang("a waiter", w).await.unwrap();
        assert_eq!(
            got,
            Err("first call fails".into()),
            "the leader's error, cloned"
        );
    }
    assert_eq!(
        FAIL_GATE.entered(),
        1,
        "a failing source is called once, not once per waiter"
    );
    assert_eq!(fails_first(9).await, Ok(9), "and the error was not cached");
}

/// An error type that cannot be cloned: waiters cannot be handed the leader's error.
#[derive(Debug, PartialEq)]
struct Opaque(&'static str);

static OPAQUE_GATE: Gate = Gate::new();
static OPAQUE_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "opaque:<id>")]
async fn opaque_first(id: u64) -> Result<u64, Opaque> {
    OPAQUE_GATE.pass().await;
    if OPAQUE_CALLS.fetch_add(1, SeqCst) == 0 {
        Err(Opaque("first call fails"))
    } else {
        Ok(id)
    }
}

#[tokio::test]
async fn waiters_on_a_failed_load_with_an_uncloneable_error_call_their_own_source() {
    let leader = tokio::spawn(opaque_first(9));
    until("the leader reached the source", || {
        OPAQUE_GATE.entered() == 1
    })
    .await;
    let waiters: Vec<_> = (0..5).map(|_| tokio::spawn(opaque_first(9))).collect();
    until("the waiters joined", || opaque_first_stats().coalesced == 5).await;
    OPAQUE_GATE.open(6);
    assert_eq!(leader.await.unwrap(), Err(Opaque("first call fails")));
    for w in waiters {
        assert_eq!(no_hang("a waiter", w).await.unwrap(), Ok(9));
    }
}

static OPT_CALLS: AtomicU32 = AtomicU32::new(0);
static NEG_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "opt:<id>")]
async fn lookup(id: u64) -> Option<u64> {
    OPT_CALLS.fetch_add(1, SeqCst);
    (id % 2 == 0).then_some(id)
}

#[cached(ttl = 60, key = "neg:<id>", cache_none = true, none_ttl = "5s")]
async fn lookup_negative(id: u64) -> Option<u64> {
    NEG_CALLS.fetch_add(1, SeqCst);
    (id % 2 == 0).then_some(id)
}

#[tokio::test(start_paused = true)]
async fn none_is_cached_only_with_cache_none_and_for_none_ttl() {
    assert_eq!(lookup(2).await, Some(2));
    assert_eq!(lookup(2).await, Some(2));
    assert_eq!(lookup(1).await, None);
    assert_eq!(lookup(1).await, None);
    assert_eq!(OPT_CALLS.load(SeqCst), 3, "Some cached, None not");

    assert_eq!(lookup_negative(1).await, None);
    assert_eq!(lookup_negative(1).await, None);
    assert_eq!(NEG_CALLS.load(SeqCst), 1, "None cached with cache_none");
    advance(Duration::from_secs(6)).await;
    assert_eq!(lookup_negative(1).await, None);
    assert_eq!(NEG_CALLS.load(SeqCst), 2, "None expires after none_ttl");
    assert_eq!(lookup_negative(2).await, Some(2));
    advance(Duration::from_secs(6)).await;
    assert_eq!(lookup_negative(2).await, Some(2));
    assert_eq!(NEG_CALLS.load(SeqCst), 3, "Some keeps the full ttl");
}

static SAFE_OK: AtomicBool = AtomicBool::new(true);

#[cached(ttl = 10, key = "safe:<id>", fail_safe = "60s")]
async fn fail_safe(id: u64) -> Result<u64, String> {
    if SAFE_OK.load(SeqCst) {
        Ok(id)
    } else {
        Err("source down".into())
    }
}

static SAFE_PANIC_OK: AtomicBool = AtomicBool::new(true);

#[cached(ttl = 10, key = "safep:<id>", fail_safe = "60s")]
async fn fail_safe_panicking(id: u64) -> u64 {
    assert!(SAFE_PANIC_OK.load(SeqCst), "source down");
    id
}

#[tokio::test(start_paused = true)]
async fn fail_safe_serves_an_expired_value_while_the_source_fails() {
    assert_eq!(fail_safe(1).await, Ok(1));
    SAFE_OK.store(false, SeqCst);
    advance(Duration::from_secs(11)).await;
    assert_eq!(
        fail_safe(1).await,
        Ok(1),
        "expired, source fails: stale value"
    );
    assert_eq!(
        fail_safe(2).await,
        Err("source down".into()),
        "nothing to fall back on"
    );
    advance(Duration::from_secs(60)).await;
    assert_eq!(
        fail_safe(1).await,
        Err("source down".into()),
        "past the window: the error"
    );
    SAFE_OK.store(true, SeqCst);
    assert_eq!(fail_safe(1).await, Ok(1));
    assert_eq!(fail_safe_stats().load_errors, 3);
}

#[tokio::test(start_paused = true)]
async fn fail_safe_also_covers_a_panicking_source() {
    assert_eq!(fail_safe_panicking(1).await, 1);
    SAFE_PANIC_OK.store(false, SeqCst);
    advance(Duration::from_secs(11)).await;
    assert_eq!(fail_safe_panicking(1).await, 1);
    assert_eq!(fail_safe_panicking_stats().load_errors, 1);
}

// ---- capacity ------------------------------------------------------------------------------

#[cached(ttl = 600, key = "cap:<id>", max_capacity = 100)]
async fn bounded(id: u64) -> u64 {
    id
}

#[tokio::test]
async fn the_in_process_tier_is_bounded_and_counts_evictions() {
    // A hot set of 10 keys, then a one-time scan ten times the capacity.
    for _ in 0..5 {
        for id in 0..10 {
            bounded(id).await;
        }
    }
    for id in 1000..2000 {
        bounded(id).await;
    }
    let s = bounded_stats();
    assert!(s.evictions >= 890, "{} evictions", s.evictions);
    let loads = s.loads;
    for id in 0..10 {
        bounded(id).await;
    }
    assert_eq!(
        bounded_stats().loads,
        loads,
        "hot keys survived the one-time scan"
    );
}

// ---- tags ----------------------------------------------------------------------------------

static TAG_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, key = "member:<org>:<user>", tags = ["org:<org>", "user:<user>"])]
async fn member(org: u64, user: u64) -> u64 {
    TAG_CALLS.fetch_add(1, SeqCst);
    org * 100 + user
}

#[tokio::test]
async fn invalidate_tag_drops_every_entry_carrying_the_tag() {
    for (o, u) in [(11, 1), (11, 2), (12, 1)] {
        member(o, u).await;
    }
    assert_eq!(TAG_CALLS.load(SeqCst), 3);
    cachemacro_runtime::invalidate_tag("org:11").await.unwrap();
    for (o, u) in [(11, 1), (11, 2), (12, 1)] {
        member(o, u).await;
    }
    assert_eq!(TAG_CALLS.load(SeqCst), 5, "only org 11's entries reloaded");
    cachemacro_runtime::invalidate_tag("user:1").await.unwrap();
    member(12, 1).await;
    member(11, 2).await;
    assert_eq!(TAG_CALLS.load(SeqCst), 6, "a second tag works too");
}

static TAG_RACE_GATE: Gate = Gate::new();

#[cached(ttl = 600, key = "tr:<id>", tags = ["tr:<id>"])]
async fn tagged_racy(id: u64) -> u64 {
    TAG_RACE_GATE.pass().await;
    id
}

#[tokio::test]
async fn a_tag_invalidated_during_a_load_is_not_written_back() {
    let load = tokio::spawn(tagged_racy(1));
    until("the load started", || TAG_RACE_GATE.entered() == 1).await;
    cachemacro_runtime::invalidate_tag("tr:1").await.unwrap();
    TAG_RACE_GATE.open(2);
    load.await.unwrap();
    tagged_racy(1).await;
    assert_eq!(TAG_RACE_GATE.entered(), 2);
}

// ---- keys ----------------------------------------------------------------------------------

static KEY_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "a:<x>:<y>")]
async fn two_parts(x: String, y: &str) -> String {
    KEY_CALLS.fetch_add(1, SeqCst);
    format!("{x}|{y}")
}

#[tokio::test]
async fn argument_values_cannot_forge_key_separators() {
    assert_eq!(two_parts("1:2".into(), "3").await, "1:2|3");
    assert_eq!(two_parts("1".into(), "2:3").await, "1|2:3");
    assert_eq!(
        KEY_CALLS.load(SeqCst),
        2,
        "distinct argument lists, distinct keys"
    );
    assert_eq!(two_parts("1".into(), "2:3").await, "1|2:3");
    assert_eq!(KEY_CALLS.load(SeqCst), 2);
}

static DEFAULT_KEY_CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60)]
async fn default_key(a: u32, b: &str, #[key_ignore] _trace: u64) -> String {
    DEFAULT_KEY_CALLS.fetch_add(1, SeqCst);
    format!("{a}{b}")
}

#[tokio::test]
async fn the_default_key_is_every_argument_not_ignored() {
    default_key(1, "x", 100).await;
    default_key(1, "x", 200).await;
    default_key(1, "y", 100).await;
    default_key(2, "x", 100).await;
    assert_eq!(DEFAULT_KEY_CALLS.load(SeqCst), 3);
}

// ---- methods -------------------------------------------------------------------------------

struct Repo {
    tenant: &'static str,
    calls: AtomicU32,
}

impl Repo {
    #[cached(ttl = 60, key = "repo:<self.tenant>:<id>")]
    async fn find(&self, id: u64) -> String {
        self.calls.fetch_add(1, SeqCst);
        format!("{}/{id}", self.tenant)
    }
}

#[tokio::test]
async fn methods_key_on_named_fields_of_self() {
    let a = Repo {
        tenant: "acme",
        calls: AtomicU32::new(0),
    };
    let b = Repo {
        tenant: "globex",
        calls: AtomicU32::new(0),
    };
    assert_eq!(a.find(1).await, "acme/1");
    assert_eq!(a.find(1).await, "acme/1");
    assert_eq!(b.find(1).await, "globex/1");
    assert_eq!(a.calls.load(SeqCst) + b.calls.load(SeqCst), 2);
    a.find_invalidate(1).await.unwrap();
    assert_eq!(a.find(1).await, "acme/1");
    assert_eq!(a.calls.load(SeqCst), 2);
    assert_eq!(a.find_refresh(1).await, "acme/1");
    assert_eq!(a.calls.load(SeqCst), 3);
    assert_eq!(Repo::find_stats().loads, 4);
    assert!(stats::all()
        .iter()
        .any(|s| s.name.ends_with("memory::find")));
    let table = stats::table(&stats::all());
    assert!(table.lines().next().unwrap().contains("hit p99"));
    assert!(table.contains("memory::find"));
}

static REGION_CALLS: AtomicU32 = AtomicU32::new(0);

impl Repo {
    /// The same answer from every `Repo`: the receiver is left out of the key, explicitly.
    #[cached(ttl = 60, key = "region:<id>")]
    async fn region(#[key_ignore] &self, id: u64) -> u64 {
        REGION_CALLS.fetch_add(1, SeqCst);
        id % 7
    }
}

#[tokio::test]
async fn a_key_ignored_receiver_shares_entries_across_instances() {
    let a = Repo {
        tenant: "acme",
        calls: AtomicU32::new(0),
    };
    let b = Repo {
        tenant: "globex",
        calls: AtomicU32::new(0),
    };
    assert_eq!(a.region(9).await, 2);
    assert_eq!(b.region(9).await, 2);
    assert_eq!(REGION_CALLS.load(SeqCst), 1);
    b.region_invalidate(9).await.unwrap();
    assert_eq!(a.region(9).await, 2);
    assert_eq!(REGION_CALLS.load(SeqCst), 2);
    assert_eq!(b.region_refresh(9).await, 2);
    assert_eq!(REGION_CALLS.load(SeqCst), 3);
    b.region_put(9, 5).await.unwrap();
    assert_eq!(a.region(9).await, 5);
    assert_eq!(REGION_CALLS.load(SeqCst), 3);
}

// ---- XFetch --------------------------------------------------------------------------------

#[cached(ttl = 10, key = "xf:<id>", stampede = xfetch)]
async fn xfetched(id: u64) -> u64 {
    tokio::time::sleep(Duration::from_secs(1)).await; // δ = 1 s
    id
}

#[cached(ttl = 10, key = "nx:<id>")]
async fn not_xfetched(id: u64) -> u64 {
    id
}

#[tokio::test(start_paused = true)]
async fn xfetch_refreshes_a_hot_key_before_it_expires() {
    xfetched(1).await; // loads for 1 s: both values expire at 11 s
    not_xfetched(1).await;
    // Near expiry, each read refreshes early with probability e^(-gap/δβ) ≈ 0.6 at 0.5 s.
    advance(Duration::from_millis(9_500)).await;
    for _ in 0..30 {
        xfetched(1).await;
        not_xfetched(1).await;
    }
    tokio::task::yield_now().await; // the refresh task starts its load at 10.5 s
    let s = xfetched_stats();
    assert_eq!(s.early_refreshes, 1, "one early refresh at a time per key");
    assert_eq!(s.misses, 1, "readers never waited");
    // Past the first value's expiry (the refresh's own 1 s load ends there too): still a
    // hit with XFetch, a miss without.
    advance(Duration::from_millis(1_000)).await;
    until("the early refresh landed", || xfetched_stats().loads == 2).await;
    xfetched(1).await;
    not_xfetched(1).await;
    assert_eq!(xfetched_stats().misses, 1);
    assert_eq!(
        not_xfetched_stats().misses,
        2,
        "control: the plain TTL expired"
    );
}

// ---- several runtimes ----------------------------------------------------------------------

static RT_VERSION: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, soft_ttl = "50ms", key = "rt:<id>")]
async fn across_runtimes(id: u64) -> u32 {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _ = id;
    RT_VERSION.fetch_add(1, SeqCst) + 1
}

#[test]
fn a_cached_function_keeps_working_across_runtimes() {
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    // Runtime A loads, goes stale, starts a background refresh, and dies mid-refresh.
    let a = rt();
    a.block_on(async {
        assert_eq!(across_runtimes(1).await, 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(across_runtimes(1).await, 1, "stale value, refresh started");
    });
    drop(a);
    // Runtime B: the abandoned refresh does not block new ones.
    let b = rt();
    b.block_on(async {
        assert!(across_runtimes(1).await >= 1);
        until_real("a refresh on runtime B landed", || {
            RT_VERSION.load(SeqCst) >= 2
        })
        .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(across_runtimes(1).await >= 2);
    });
    drop(b);
    // Runtime C: plain hits and invalidation still work.
    rt().block_on(async {
        across_runtimes_invalidate(1).await.unwrap();
        let v = across_runtimes(1).await;
        assert!(v >= 3, "{v}");
    });
}

//! The semantic cache under the macro, with the deterministic embedder: hits by meaning
//! within a scope and never across scopes, the threshold, invalidation (scope, tags, during
//! a load), coalescing, verification (drift alarm) and the stats. Multi-thread runtimes,
//! calls from spawned tasks.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Once};
use std::time::Duration;

use cachemacro_runtime::semantic::{set_embedder, EmbedError, Embedder, HashEmbedder};
use cachemacro_runtime::{cached, invalidate_tag};

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| set_embedder(Arc::new(HashEmbedder::default())));
}

static FAQ_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(
    ttl = "1h",
    semantic(on = prompt, threshold = 0.8),
    key = "faq:<tenant>",
    tags = ["tenant:<tenant>"]
)]
async fn answer(tenant: String, prompt: &str) -> Result<String, String> {
    FAQ_CALLS.fetch_add(1, SeqCst);
    Ok(format!("[{tenant}] answer to {prompt}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_prompt_hits_within_its_scope_and_never_across() {
    setup();
    let t = || "acme".to_owned();
    let first = answer(t(), "how do I reset my password").await.unwrap();
    assert_eq!(FAQ_CALLS.load(SeqCst), 1);
    // Same words, other case and punctuation: the hash embedder scores it 1.0.
    let again = tokio::spawn(async move { answer(t(), "How do I reset my password?").await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, first, "served the stored answer");
    assert_eq!(FAQ_CALLS.load(SeqCst), 1);
    // Another tenant: never the first tenant's answer, however close the prompt.
    let other = answer("globex".into(), "how do I reset my password")
        .await
        .unwrap();
    assert_eq!(FAQ_CALLS.load(SeqCst), 2);
    assert!(other.starts_with("[globex]"), "{other}");
    // A prompt under the threshold: the source.
    answer("acme".into(), "where is my order").await.unwrap();
    assert_eq!(FAQ_CALLS.load(SeqCst), 3);
    let s = answer_stats();
    let sem = s.semantic.expect("semantic counters");
    assert_eq!((sem.hits, sem.misses), (1, 3));
    assert_eq!(sem.entries, 3);
    assert!(sem.score_quantile(1.0).unwrap() > 0.99);

    // The scope's invalidation drops its prompts only.
    answer_invalidate("acme".into()).await.unwrap();
    answer("acme".into(), "how do I reset my password")
        .await
        .unwrap();
    assert_eq!(FAQ_CALLS.load(SeqCst), 4, "acme's answers were dropped");
    answer("globex".into(), "how do I reset my password")
        .await
        .unwrap();
    assert_eq!(FAQ_CALLS.load(SeqCst), 4, "globex's were not");
    // A tag.
    invalidate_tag("tenant:globex").await.unwrap();
    answer("globex".into(), "how do I reset my password")
        .await
        .unwrap();
    assert_eq!(FAQ_CALLS.load(SeqCst), 5);
}

static NEAR_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "1h", semantic(on = q, threshold = 0.97), key = "near")]
async fn strict(q: String) -> String {
    NEAR_CALLS.fetch_add(1, SeqCst);
    format!("about {q}")
}

#[cached(ttl = "1h", semantic(on = q, threshold = 0.5), key = "loose")]
async fn loose(q: String) -> String {
    NEAR_CALLS.fetch_add(1, SeqCst);
    format!("about {q}")
}

/// The threshold decides: a prompt that shares most words hits under a loose threshold and
/// misses (a near miss) under a strict one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_threshold_decides_and_near_misses_are_counted() {
    setup();
    let a = "cancel my order number five today";
    let b = "cancel my order number five tomorrow";
    strict(a.into()).await;
    strict(b.into()).await;
    loose(a.into()).await;
    assert_eq!(loose(b.into()).await, format!("about {a}"), "loose: a hit");
    assert_eq!(NEAR_CALLS.load(SeqCst), 3, "strict: two loads; loose: one");
    let s = strict_stats().semantic.unwrap();
    assert_eq!((s.hits, s.misses), (0, 2));
    let l = loose_stats().semantic.unwrap();
    assert_eq!((l.hits, l.misses), (1, 1));
}

/// A gated test that does not get through in a minute fails instead of hanging the suite.
async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("the test's gate was not reached in 60 s")
}

static GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();
static STARTED: tokio::sync::Notify = tokio::sync::Notify::const_new();
static SLOW_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "1h", semantic(on = q, threshold = 0.9), key = "slow:<scope>")]
async fn slow(scope: u64, q: String) -> String {
    SLOW_CALLS.fetch_add(1, SeqCst);
    STARTED.notify_one();
    GATE.notified().await;
    format!("{scope}: {q}")
}

/// Callers of one scope and prompt share one source call; an invalidation of the scope
/// while it runs wins: the answer is served to the caller that loaded it, not stored, and
/// the callers that waited on it go round again (one more source call for all of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_per_prompt_and_an_invalidation_during_the_call_wins() {
    setup();
    let calls: Vec<_> = (0..8)
        .map(|_| tokio::spawn(slow(1, "what are your opening hours".into())))
        .collect();
    within(STARTED.notified()).await;
    // All seven others have joined the flight before the invalidation (a caller that read
    // the scope before it and joined after would load again, by design).
    within(async {
        while slow_stats().coalesced < 7 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    slow_invalidate(1).await.unwrap();
    GATE.notify_one();
    within(STARTED.notified()).await; // the waiters' one reload
    GATE.notify_one();
    for c in calls {
        assert_eq!(within(c).await.unwrap(), "1: what are your opening hours");
    }
    assert_eq!(
        SLOW_CALLS.load(SeqCst),
        2,
        "coalesced, before and after the invalidation"
    );
    // The reload (begun after the invalidation) was stored: the next call is a hit.
    assert_eq!(
        slow(1, "what are your opening hours".into()).await,
        "1: what are your opening hours"
    );
    assert_eq!(SLOW_CALLS.load(SeqCst), 2);
}

static DRIFT_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "1h", semantic(on = q, threshold = 0.5, verify = 1.0), key = "drift")]
async fn drifting(q: String) -> String {
    let n = DRIFT_CALLS.fetch_add(1, SeqCst);
    format!("answer {n}")
}

/// `verify`: sampled hits also call the source; a different answer is a disagreement,
/// counted, and the source's answer is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_counts_disagreements() {
    setup();
    assert_eq!(drifting("reset my password".into()).await, "answer 0");
    assert_eq!(
        drifting("reset my password please".into()).await,
        "answer 1"
    );
    let s = drifting_stats().semantic.unwrap();
    assert_eq!((s.hits, s.verified, s.disagreements), (1, 1, 1));
}

struct Broken;

impl Embedder for Broken {
    fn id(&self) -> &str {
        "broken"
    }
    fn dim(&self) -> usize {
        8
    }
    fn embed(&self, _: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Err(EmbedError("the model is gone".into()))
    }
}

/// Runs `test` again in a child process of its own (the embedder is process-wide) and
/// asserts that it passed there: `true` in the child, which runs the test's body.
fn in_own_process(test: &str) -> bool {
    if std::env::var("CACHEMACRO_SEMANTIC_CHILD").is_ok() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .env("CACHEMACRO_SEMANTIC_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
    );
    false
}

static PLAIN_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "1h", semantic(on = q, threshold = 0.9), key = "plain")]
async fn plain(q: &str) -> String {
    PLAIN_CALLS.fetch_add(1, SeqCst);
    q.to_uppercase()
}

/// An embedder that fails never fails the call: the source answers, uncached, counted.
/// (Runs in its own process: the embedder is process-wide.)
#[test]
fn an_embedder_failure_calls_the_source() {
    if !in_own_process("an_embedder_failure_calls_the_source") {
        return;
    }
    set_embedder(Arc::new(Broken));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(plain("hi").await, "HI");
        assert_eq!(plain("hi").await, "HI");
    });
    assert_eq!(PLAIN_CALLS.load(SeqCst), 2);
    assert_eq!(plain_stats().semantic.unwrap().embed_errors, 2);
}

// ---- review findings ----------------------------------------------------------------------

static VER: AtomicUsize = AtomicUsize::new(0);
/// The gate of the source below: one permit lets one source call through (a permit given
/// before its caller waits is not lost, whichever caller takes it).
static VG: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
static VS: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[cached(ttl = "1h", semantic(on = q, threshold = 0.9), key = "ver:<scope>")]
async fn versioned(scope: u64, q: String) -> String {
    let v = VER.load(SeqCst);
    VS.notify_one();
    VG.acquire().await.expect("open").forget();
    format!("v{v}")
}

/// A call that starts after `<fn>_invalidate` returns never gets the answer of a load that
/// began before it (it does not join that load's flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_invalidate_never_gets_the_older_load() {
    setup();
    let first = tokio::spawn(versioned(1, "opening hours".into()));
    within(VS.notified()).await; // the leader read v0 and is in the source
    VER.store(1, SeqCst);
    versioned_invalidate(1).await.unwrap();
    let after = tokio::spawn(versioned(1, "opening hours".into()));
    within(VS.notified()).await; // the later call loads for itself
    VG.add_permits(2);
    assert_eq!(
        within(first).await.unwrap(),
        "v0",
        "its own caller is served what it loaded"
    );
    assert_eq!(within(after).await.unwrap(), "v1");
}

static FAILS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "1h", semantic(on = q, threshold = 0.9), key = "down")]
async fn down(q: String) -> Result<String, String> {
    FAILS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = q;
    Err("503".into())
}

/// A failing source is called once for the callers that waited on it (its `Clone` error is
/// theirs too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_is_called_once_for_all_waiters() {
    setup();
    let hs: Vec<_> = (0..5)
        .map(|_| tokio::spawn(down("same question".into())))
        .collect();
    for h in hs {
        assert_eq!(h.await.unwrap(), Err("503".into()));
    }
    assert_eq!(FAILS.load(SeqCst), 1);
}

static SAME: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "1h", semantic(on = q, threshold = 1.0), key = "same")]
async fn same(q: String) -> String {
    SAME.fetch_add(1, SeqCst);
    q
}

/// `threshold = 1.0` answers the same prompt asked again (a vector's cosine with itself
/// lands a few ulps either side of 1.0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_one_hits_the_identical_prompt() {
    setup();
    for q in ["where is my order", "cancel my subscription", "hello world"] {
        same(q.into()).await;
        same(q.into()).await;
    }
    assert_eq!(SAME.load(SeqCst), 3);
}

static NONE: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "1h", semantic(on = q, threshold = 0.9), key = "opt")]
async fn maybe(q: String) -> Result<Option<String>, String> {
    NONE.fetch_add(1, SeqCst);
    let _ = q;
    Ok(None)
}

/// `Ok(None)` is not cached without `cache_none`, as for exact keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_inside_a_result_is_not_cached_without_cache_none() {
    setup();
    maybe("x".into()).await.unwrap();
    maybe("x".into()).await.unwrap();
    assert_eq!(NONE.load(SeqCst), 2);
}

static DV: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "1h", semantic(on = q, threshold = 0.5, verify = 1.0), key = "drift2")]
async fn drift2(q: String) -> String {
    let _ = q;
    format!("v{}", DV.load(SeqCst))
}

/// When `verify` finds the stored answer drifted, that stored answer is not served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drifted_answer_is_dropped() {
    setup();
    assert_eq!(drift2("reset my password".into()).await, "v0");
    DV.store(1, SeqCst);
    assert_eq!(drift2("reset my password please".into()).await, "v1");
    assert_eq!(drift2("reset my password".into()).await, "v1");
    let s = drift2_stats().semantic.unwrap();
    assert_eq!(s.disagreements, 1, "{s:?}");
}

struct NanOnBlank;

impl Embedder for NanOnBlank {
    fn id(&self) -> &str {
        "nan-on-blank"
    }
    fn dim(&self) -> usize {
        256
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        texts
            .iter()
            .map(|t| {
                if t.trim().is_empty() {
                    Ok(vec![f32::NAN; 256])
                } else {
                    HashEmbedder::default().embed(&[t]).map(|mut v| v.remove(0))
                }
            })
            .collect()
    }
}

static NAN_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "1h", semantic(on = q, threshold = 0.9), key = "nan")]
async fn nan(q: &str) -> String {
    NAN_CALLS.fetch_add(1, SeqCst);
    q.to_owned()
}

/// A vector that cannot be compared (NaN) is an embedding failure, never an entry that
/// out-ranks the scope's others. (Own process: the embedder is process-wide.)
#[test]
fn a_nan_vector_is_not_stored() {
    if !in_own_process("a_nan_vector_is_not_stored") {
        return;
    }
    set_embedder(Arc::new(NanOnBlank));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        nan("").await;
        nan("hello world").await;
        nan("hello world").await;
    });
    assert_eq!(NAN_CALLS.load(SeqCst), 2);
    assert_eq!(nan_stats().semantic.unwrap().embed_errors, 1);
}

static OWNED_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "1h", semantic(on = q, threshold = 0.9), key = "owned")]
async fn owned(q: String) -> String {
    OWNED_CALLS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    format!("about {q}")
}

/// A caller cancelled while it runs the source (its own timeout) does not cancel the load a
/// second caller waits on: one source call, and the waiter gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_does_not_cancel_the_load_others_wait_on() {
    setup();
    let first = tokio::spawn(tokio::time::timeout(
        Duration::from_millis(50),
        owned("opening hours".into()),
    ));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = tokio::spawn(owned("opening hours".into()));
    assert!(first.await.unwrap().is_err(), "the first caller gave up");
    assert_eq!(second.await.unwrap(), "about opening hours");
    assert_eq!(OWNED_CALLS.load(SeqCst), 1);
}

static ROUND_CALLS: AtomicUsize = AtomicUsize::new(0);
static ROUND_GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();
static ROUND_STARTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[cached(ttl = "1h", semantic(on = q, threshold = 0.9), key = "round:<scope>")]
async fn round(scope: u64, q: String) -> String {
    // The first call waits at the gate; the reload after the invalidation is instant.
    if ROUND_CALLS.fetch_add(1, SeqCst) == 0 {
        ROUND_STARTED.notify_one();
        ROUND_GATE.notified().await;
    }
    format!("{scope}: {q}")
}

/// Waiters sent round again by an invalidation share one reload even when it finishes
/// before some of them are scheduled: a caller that finds no flight takes the answer stored
/// meanwhile instead of calling the source again (review finding: it did, once per waiter
/// that woke late; a test gated on the count hung).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_sent_round_again_take_the_answer_stored_meanwhile() {
    setup();
    let calls: Vec<_> = (0..16)
        .map(|_| tokio::spawn(round(1, "where is my parcel".into())))
        .collect();
    within(ROUND_STARTED.notified()).await;
    within(async {
        while round_stats().coalesced < 15 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    round_invalidate(1).await.unwrap();
    ROUND_GATE.notify_one();
    for c in calls {
        assert_eq!(within(c).await.unwrap(), "1: where is my parcel");
    }
    assert_eq!(
        ROUND_CALLS.load(SeqCst),
        2,
        "one load before the invalidation, one after it for all the waiters"
    );
}

static VER2: AtomicUsize = AtomicUsize::new(0);
static VG2: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
static VS2: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[cached(ttl = "1h", semantic(on = q, threshold = 0.9), key = "ver2:<scope>")]
async fn versioned2(scope: u64, q: String) -> String {
    let v = VER2.load(SeqCst);
    VS2.notify_one();
    VG2.acquire().await.expect("open").forget();
    format!("{scope}:{q}:v{v}")
}

/// A call that starts after `<fn>_invalidate` returns does not even wait for a load that
/// began before it: it loads at once (review finding: it joined the older flight and was
/// only sent round when that landed — and could be handed its answer when the
/// invalidation came between the leader's check and its landing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_invalidate_does_not_join_the_older_load() {
    setup();
    let first = tokio::spawn(versioned2(1, "opening hours".into()));
    within(VS2.notified()).await;
    VER2.store(1, SeqCst);
    versioned2_invalidate(1).await.unwrap();
    let after = tokio::spawn(versioned2(1, "opening hours".into()));
    tokio::time::timeout(Duration::from_secs(5), VS2.notified())
        .await
        .expect("the later call is in the source while the older load still runs");
    VG2.add_permits(2);
    assert_eq!(within(first).await.unwrap(), "1:opening hours:v0");
    assert_eq!(within(after).await.unwrap(), "1:opening hours:v1");
}

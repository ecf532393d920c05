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
/// while it runs wins (the answer is served, not stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_per_prompt_and_an_invalidation_during_the_call_wins() {
    setup();
    let calls: Vec<_> = (0..8)
        .map(|_| tokio::spawn(slow(1, "what are your opening hours".into())))
        .collect();
    STARTED.notified().await;
    tokio::time::sleep(Duration::from_millis(100)).await; // the others join
    slow_invalidate(1).await.unwrap();
    GATE.notify_one();
    for c in calls {
        assert_eq!(c.await.unwrap(), "1: what are your opening hours");
    }
    assert_eq!(SLOW_CALLS.load(SeqCst), 1, "coalesced");
    let again = tokio::spawn(slow(1, "what are your opening hours".into()));
    STARTED.notified().await;
    GATE.notify_one();
    again.await.unwrap();
    assert_eq!(
        SLOW_CALLS.load(SeqCst),
        2,
        "the invalidated answer was not stored"
    );
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
    if std::env::var("CACHEMACRO_SEMANTIC_CHILD").is_err() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "an_embedder_failure_calls_the_source",
                "--nocapture",
            ])
            .env("CACHEMACRO_SEMANTIC_CHILD", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
        );
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

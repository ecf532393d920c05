//! An FAQ bot whose "model" is slow (300 ms a call), in front of which a semantic cache
//! answers questions that mean the same as one already answered, per tenant.
//!
//! ```text
//! cargo run --example semantic --features semantic
//! ```
//!
//! The embedder here is the deterministic `HashEmbedder` (words and word pairs), so only
//! rewordings that keep most of the words hit; with the real model (feature `minilm`,
//! `MiniLm::from_env()`), paraphrases in other words hit too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cachemacro_runtime::semantic::{set_embedder, HashEmbedder};
use cachemacro_runtime::{cached, stats};

/// The model call this cache stands in front of.
#[cached(
    ttl = "1d",
    semantic(on = question, threshold = 0.8, max_entries = 10_000),
    key = "faq:<tenant>",
    tags = ["tenant:<tenant>"]
)]
async fn answer(tenant: &str, question: &str) -> Result<String, String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(format!(
        "[{tenant}] (a carefully generated answer to: {question})"
    ))
}

#[tokio::main]
async fn main() {
    set_embedder(Arc::new(HashEmbedder::default()));
    let traffic = [
        ("acme", "How do I reset my password?"),
        ("acme", "how do I reset my password"),
        ("acme", "How can I reset my password?"),
        ("acme", "Where is my order?"),
        ("globex", "How do I reset my password?"),
        ("acme", "where is my order??"),
        ("acme", "What are your opening hours on Sunday?"),
        ("acme", "what are your opening hours on sunday"),
    ];
    for (tenant, question) in traffic {
        let started = Instant::now();
        let reply = answer(tenant, question).await.unwrap();
        println!(
            "{:>6.1} ms  {tenant:<7} {question:<45} -> {reply}",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let s = answer_stats();
    let sem = s.semantic.clone().unwrap_or_default();
    println!(
        "\nsemantic hits {}, misses {}, near misses {}, stored prompts {}, best-score p50 {:?}",
        sem.hits,
        sem.misses,
        sem.near_misses,
        sem.entries,
        sem.score_quantile(0.5)
    );
    print!("{}", stats::table(&[s]));
}

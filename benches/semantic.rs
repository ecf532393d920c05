//! The semantic cache's costs (issue 13). Part 1: embedding latency of the real model.
//!
//! all-MiniLM-L6-v2 in candle (`MiniLm`), CPU, one 20-word prompt per call: the median of
//! many calls after a warm-up, beside the tokenizer alone (the part of a call that is not the
//! model) and a batch of 20 prompts in one call (cost per prompt), all in the same run.
//!
//! ```text
//! scripts/fetch-model.sh
//! cargo bench --bench semantic --features minilm [-- --iters 300]
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use cachemacro_runtime::semantic::{Embedder, MiniLm};

const PROMPT: &str = "My package was marked as delivered yesterday but I never received it, \
                      so what should I do about it now?";

fn quantiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

fn measure(iters: usize, mut f: impl FnMut()) -> (Duration, Duration, Duration) {
    for _ in 0..(iters / 10).max(3) {
        f();
    }
    let samples = (0..iters)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    quantiles(samples)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let mut iters = 300usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--iters" {
            iters = args.next().and_then(|n| n.parse().ok()).unwrap_or(iters);
        }
    }
    assert_eq!(PROMPT.split_whitespace().count(), 20);

    let start = Instant::now();
    let model = MiniLm::from_env().unwrap_or_else(|e| panic!("{e}"));
    let load = start.elapsed();
    let pieces = model.token_ids(PROMPT).unwrap().len();
    println!(
        "model loaded in {:.0} ms from {}; prompt: 20 words, {pieces} word pieces with [CLS]/[SEP]; \
         {iters} timed calls each; threads: RAYON_NUM_THREADS={}",
        load.as_secs_f64() * 1e3,
        model.dir().display(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );

    let tok = measure(iters, || {
        black_box(model.token_ids(black_box(PROMPT)).unwrap());
    });
    let one = measure(iters, || {
        black_box(model.embed(&[black_box(PROMPT)]).unwrap());
    });
    let batch: Vec<&str> = vec![PROMPT; 20];
    let twenty = measure((iters / 10).max(10), || {
        black_box(model.embed(black_box(&batch)).unwrap());
    });

    println!("{:<44} {:>10} {:>10} {:>10}", "", "median", "p10", "p90");
    let row = |name: &str, (m, lo, hi): (Duration, Duration, Duration), div: f64| {
        println!(
            "{name:<44} {:>8.0}µs {:>8.0}µs {:>8.0}µs",
            us(m) / div,
            us(lo) / div,
            us(hi) / div
        );
    };
    row("tokenizer alone (1 prompt)", tok, 1.0);
    row("embed 1 prompt (tokenize + model + pool)", one, 1.0);
    row("embed 20 prompts in one call, per prompt", twenty, 20.0);
    println!(
        "ratios (medians): embed/tokenize {:.1}x; batched per prompt / single {:.2}x",
        us(one.0) / us(tok.0),
        us(twenty.0) / 20.0 / us(one.0)
    );
}

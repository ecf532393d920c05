//! The real embedder (feature `minilm`): all-MiniLM-L6-v2 in candle against an independent
//! NumPy forward pass over the same weights (tests/data/reference_embeddings.json, see
//! tests/data/README.md). Needs the model: `scripts/fetch-model.sh` (scripts/test runs it).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cachemacro_runtime::semantic::{cosine, Embedder, MiniLm};

fn model() -> &'static MiniLm {
    static MODEL: OnceLock<MiniLm> = OnceLock::new();
    MODEL.get_or_init(|| {
        MiniLm::from_env().unwrap_or_else(|e| {
            panic!("{e}\nthe model is fetched by scripts/fetch-model.sh (scripts/test runs it)")
        })
    })
}

struct Reference {
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
    token_ids: Vec<Vec<u32>>,
}

fn reference() -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference_embeddings.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["model"], MiniLm::ID);
    assert_eq!(json["max_seq_length"], 256);
    let sentences: Vec<String> = serde_json::from_value(json["sentences"].clone()).unwrap();
    let embeddings: Vec<Vec<f64>> = serde_json::from_value(json["embeddings"].clone()).unwrap();
    let token_ids: Vec<Vec<u32>> = serde_json::from_value(json["token_ids"].clone()).unwrap();
    // The sentences are the ones of the text file, in order.
    let txt = std::fs::read_to_string(path.with_file_name("reference_sentences.txt")).unwrap();
    let lines: Vec<&str> = txt.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines, sentences);
    assert_eq!(sentences.len(), 20);
    Reference {
        sentences,
        embeddings: embeddings
            .into_iter()
            .map(|v| v.into_iter().map(|x| x as f32).collect())
            .collect(),
        token_ids,
    }
}

#[test]
fn embeddings_match_the_reference_forward_pass() {
    let m = model();
    let r = reference();
    assert!(
        m.id()
            .starts_with("sentence-transformers/all-MiniLM-L6-v2@"),
        "the model's name and a fingerprint of the weights loaded: {}",
        m.id()
    );
    assert_eq!(m.dim(), 384);
    let texts: Vec<&str> = r.sentences.iter().map(String::as_str).collect();
    // All 20 in one call: one batch, padded to the longest (71 word pieces).
    let got = m.embed(&texts).unwrap();
    assert_eq!(got.len(), 20);
    let mut min = (f32::MAX, 0);
    for (i, (g, want)) in got.iter().zip(&r.embeddings).enumerate() {
        assert_eq!(g.len(), 384);
        assert!((cosine(g, g) - 1.0).abs() < 1e-5, "not normalised: {i}");
        let c = cosine(g, want);
        if c < min.0 {
            min = (c, i);
        }
        assert!(
            c >= 0.999,
            "sentence {i} {:?}: cosine {c} < 0.999",
            r.sentences[i]
        );
    }
    eprintln!(
        "min cosine against the reference over 20 sentences: {:.7} (sentence {}: {:?})",
        min.0, min.1, r.sentences[min.1]
    );
    // Negative control: the comparison tells sentences apart (a wrong model, or vectors in
    // the wrong order, would not pass the check above).
    assert!(cosine(&got[0], &r.embeddings[1]) < 0.9);

    // Each alone (no padding) gives the same vector as in the padded batch.
    for (i, text) in texts.iter().enumerate() {
        let alone = m.embed(&[text]).unwrap().remove(0);
        let c = cosine(&alone, &got[i]);
        assert!(c > 0.99999, "sentence {i} alone vs in a batch: cosine {c}");
    }
}

#[test]
fn token_ids_match_the_reference_tokenizer() {
    let m = model();
    let r = reference();
    for (i, (text, want)) in r.sentences.iter().zip(&r.token_ids).enumerate() {
        assert_eq!(&m.token_ids(text).unwrap(), want, "sentence {i} {text:?}");
    }
    // Accents are stripped (Zürich -> zurich) and an emoji becomes [UNK] (100): the
    // reference's ids, not an artefact of this test.
    let zurich = m.token_ids("Zürich").unwrap();
    assert_eq!(zurich, m.token_ids("zurich").unwrap());
    assert!(m.token_ids("😊").unwrap().contains(&100));
}

#[test]
fn a_paraphrase_scores_higher_than_an_unrelated_sentence() {
    let m = model();
    let v = m
        .embed(&[
            "How do I reset my password?",
            "How can I reset my password?",
            "I forgot my password, how do I change it?",
            "The quick brown fox jumps over the lazy dog.",
            "What are your store hours on Sundays?",
        ])
        .unwrap();
    let near = cosine(&v[0], &v[1]);
    let reworded = cosine(&v[0], &v[2]);
    let fox = cosine(&v[0], &v[3]);
    let hours = cosine(&v[0], &v[4]);
    eprintln!("paraphrase {near:.3}, reworded {reworded:.3}, unrelated {fox:.3} / {hours:.3}");
    assert!(near > 0.95, "{near}");
    assert!(
        reworded > fox.max(hours) + 0.2,
        "{reworded} vs {fox} / {hours}"
    );
    assert!(fox < 0.3 && hours < 0.5, "{fox} {hours}");
}

#[test]
fn texts_are_truncated_at_256_word_pieces_not_at_tokenizer_json_s_128() {
    let m = model();
    // 'password' is one word piece: 200 of them are 202 ids with [CLS] and [SEP].
    let words = |n: usize| vec!["password"; n].join(" ");
    assert_eq!(m.token_ids(&words(200)).unwrap().len(), 202);
    let long = m.token_ids(&words(400)).unwrap();
    assert_eq!(long.len(), 256);
    assert_eq!((long[0], long[255]), (101, 102), "[CLS] ... [SEP]");

    // Words past the 128th piece change the vector; words past the 256th do not.
    let head = words(150);
    let with_tail = format!("{head} the quick brown fox jumps over the lazy dog");
    let past_256 = format!("{} the quick brown fox jumps over the lazy dog", words(300));
    let v = m
        .embed(&[&head, &with_tail, &words(300), &past_256])
        .unwrap();
    assert!(cosine(&v[0], &v[1]) < 0.9999, "{}", cosine(&v[0], &v[1]));
    assert!(cosine(&v[2], &v[3]) > 0.99999, "{}", cosine(&v[2], &v[3]));
}

#[test]
fn empty_input_and_empty_text() {
    let m = model();
    assert!(m.embed(&[]).unwrap().is_empty());
    let v = m.embed(&["", "hi"]).unwrap();
    assert_eq!(v.len(), 2);
    assert!((cosine(&v[0], &v[0]) - 1.0).abs() < 1e-5);
    assert_eq!(m.token_ids("").unwrap(), vec![101, 102]);
}

#[test]
fn the_model_is_shared_across_threads() {
    let m = model();
    let want = m.embed(&["Where is my order?"]).unwrap().remove(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| m.embed(&["Where is my order?"]).unwrap().remove(0)))
            .collect();
        for h in handles {
            assert!(cosine(&h.join().unwrap(), &want) > 0.99999);
        }
    });
}

/// A fresh directory holding copies of some of the model's files, some of them replaced.
fn model_dir_with(name: &str, files: &[(&str, Option<&[u8]>)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cachemacro-minilm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, content) in files {
        match content {
            Some(bytes) => std::fs::write(dir.join(file), bytes).unwrap(),
            None => {
                std::fs::copy(model().dir().join(file), dir.join(file)).unwrap();
            }
        }
    }
    dir
}

#[track_caller]
fn load_error(dir: &Path) -> String {
    let e = MiniLm::load(dir)
        .expect_err("loads from a broken directory")
        .to_string();
    let _ = std::fs::remove_dir_all(dir);
    e
}

#[test]
fn a_missing_or_corrupt_file_is_an_error_naming_it() {
    // Positive control: config and tokenizer copies load up to the weights.
    let e = load_error(&model_dir_with(
        "no-weights",
        &[("config.json", None), ("tokenizer.json", None)],
    ));
    assert!(
        e.contains("model.safetensors") && e.contains("fetch-model.sh"),
        "{e}"
    );

    let e = load_error(&model_dir_with("no-tokenizer", &[("config.json", None)]));
    assert!(e.contains("tokenizer.json"), "{e}");

    let e = load_error(&model_dir_with("nothing", &[]));
    assert!(e.contains("config.json"), "{e}");

    let e = load_error(&model_dir_with(
        "bad-config",
        &[
            ("config.json", Some(b"{\"hidden_size\": ")),
            ("tokenizer.json", None),
        ],
    ));
    assert!(e.contains("config.json"), "{e}");

    let e = load_error(&model_dir_with(
        "bad-tokenizer",
        &[("config.json", None), ("tokenizer.json", Some(b"not json"))],
    ));
    assert!(e.contains("tokenizer.json"), "{e}");

    let e = load_error(&model_dir_with(
        "bad-weights",
        &[
            ("config.json", None),
            ("tokenizer.json", None),
            ("model.safetensors", Some(&[0xff; 4096])),
        ],
    ));
    assert!(e.contains("model.safetensors"), "{e}");

    // A safetensors file that parses but holds no BERT.
    let empty_safetensors = {
        let header = b"{}      ";
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes
    };
    let e = load_error(&model_dir_with(
        "empty-weights",
        &[
            ("config.json", None),
            ("tokenizer.json", None),
            ("model.safetensors", Some(&empty_safetensors)),
        ],
    ));
    assert!(e.contains("model.safetensors"), "{e}");
}

static FAQ_LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cachemacro_runtime::cached(
    ttl = "1h",
    semantic(on = question, threshold = 0.95),
    key = "faq:<tenant>"
)]
async fn faq(tenant: &str, question: &str) -> String {
    FAQ_LOADS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("[{tenant}] {question}")
}

/// The real model under the macro: a light rewording hits at 0.95, the same question in
/// another tenant does not, nor does an unrelated one. (Sets the process's embedder: the
/// other tests here call the model directly.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_model_under_the_macro_hits_a_rewording_within_its_scope_only() {
    use std::sync::atomic::Ordering::SeqCst;
    cachemacro_runtime::semantic::set_embedder(std::sync::Arc::new(
        MiniLm::load(model().dir()).unwrap(),
    ));
    let first = faq("acme", "How do I reset my password?").await;
    assert_eq!(FAQ_LOADS.load(SeqCst), 1);
    let again = tokio::spawn(async { faq("acme", "how do i reset my password").await })
        .await
        .unwrap();
    assert_eq!(again, first, "a rewording (cosine 0.99) is a hit");
    assert_eq!(FAQ_LOADS.load(SeqCst), 1);
    faq("globex", "How do I reset my password?").await;
    assert_eq!(FAQ_LOADS.load(SeqCst), 2, "another tenant: never a hit");
    faq("acme", "Where is my order?").await;
    assert_eq!(FAQ_LOADS.load(SeqCst), 3, "unrelated: a miss");
    let s = faq_stats().semantic.unwrap();
    assert_eq!((s.hits, s.misses), (1, 3));
}

/// Other files under the same model name make another id: their vectors are never compared.
#[test]
fn the_id_tells_weights_and_configs_apart() {
    let dir = std::env::temp_dir().join(format!("cm-minilm-id-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = model().dir();
    for f in ["model.safetensors", "tokenizer.json"] {
        let _ = std::fs::remove_file(dir.join(f));
        if std::fs::hard_link(src.join(f), dir.join(f)).is_err() {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
    }
    // The same config, written differently: another file.
    let config = std::fs::read_to_string(src.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), format!("{config}\n ")).unwrap();
    let other = MiniLm::load(&dir).unwrap();
    assert_ne!(other.id(), model().id());
    assert_eq!(
        MiniLm::load(src).unwrap().id(),
        model().id(),
        "the same files: the same id"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

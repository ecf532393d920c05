//! What turns a text into a vector: the [`Embedder`] trait, and a deterministic embedder
//! for tests ([`HashEmbedder`]).

use std::fmt;

/// Why a text could not be embedded (the model failed to load or to run). A semantic call
/// whose prompt cannot be embedded calls its source, as a cache failure always does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedError(pub String);

impl fmt::Display for EmbedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "embedding failed: {}", self.0)
    }
}

impl std::error::Error for EmbedError {}

/// A sentence-embedding model: texts in, L2-normalised vectors of [`Embedder::dim`] floats
/// out, so that the dot product of two vectors is their cosine similarity.
///
/// Embedding is CPU work (milliseconds for a real model); the cache runs it on a blocking
/// thread, never on the caller's async worker.
pub trait Embedder: Send + Sync + 'static {
    /// The model's name and revision. Vectors of different models are never compared: it is
    /// part of every stored entry, and entries of another model are ignored.
    fn id(&self) -> &str;

    /// The length of every vector.
    fn dim(&self) -> usize;

    /// One vector per text, in order, each L2-normalised.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// A deterministic embedder for tests and examples: each lower-cased word and each pair of
/// neighbouring words is hashed (FNV-1a) into one of `dim` buckets with a sign, and the sum
/// is L2-normalised. Texts that share most of their words score high, others near zero. It
/// knows nothing of meaning (a paraphrase in other words scores low): use a real model
/// (feature `minilm`) for that.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dim: usize,
}

impl HashEmbedder {
    /// An embedder of `dim` dimensions (at least 8).
    pub fn new(dim: usize) -> Self {
        Self { dim: dim.max(8) }
    }
}

impl Default for HashEmbedder {
    fn default() -> Self {
        Self::new(256)
    }
}

fn fnv(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Embedder for HashEmbedder {
    fn id(&self) -> &str {
        "cachemacro-hash-v1"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts
            .iter()
            .map(|text| {
                let words: Vec<String> = text
                    .split(|c: char| !c.is_alphanumeric() && c != '\'')
                    .filter(|w| !w.is_empty())
                    .map(str::to_lowercase)
                    .collect();
                let mut v = vec![0f32; self.dim];
                let mut add = |feature: &[u8], weight: f32| {
                    let h = fnv(feature, 0);
                    let i = (h % self.dim as u64) as usize;
                    let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
                    v[i] += sign * weight;
                };
                for w in &words {
                    add(w.as_bytes(), 1.0);
                }
                for pair in words.windows(2) {
                    add(format!("{} {}", pair[0], pair[1]).as_bytes(), 0.5);
                }
                normalize(&mut v);
                v
            })
            .collect())
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// The cosine similarity of two L2-normalised vectors (their dot product).
///
/// Eight independent sums, so the compiler can keep them in vector registers (a single
/// running `f32` sum must be added in order and is not vectorised).
#[inline]
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_embedder_is_deterministic_normalised_and_word_based() {
        let e = HashEmbedder::default();
        let v = e
            .embed(&["Cancel my order", "cancel my order!", "What time is it"])
            .unwrap();
        assert_eq!(v[0], v[1], "case and punctuation do not matter");
        assert!((cosine(&v[0], &v[0]) - 1.0).abs() < 1e-5);
        assert!(cosine(&v[0], &v[2]) < 0.3);
        assert_eq!(e.embed(&["Cancel my order"]).unwrap()[0], v[0]);
    }

    #[test]
    fn cosine_is_the_dot_product_at_every_length() {
        for n in [0usize, 1, 7, 8, 9, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((cosine(&a, &b) - plain).abs() < 1e-4, "{n}");
        }
    }
}

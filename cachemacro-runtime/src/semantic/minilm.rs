//! all-MiniLM-L6-v2 run in Rust (feature `minilm`): candle's BERT and the `tokenizers` crate,
//! loaded from a local directory; no model hub is contacted.
//!
//! The vectors are those of sentence-transformers' `all-MiniLM-L6-v2`: word pieces truncated
//! at 256 (the model's `max_seq_length`, not the 128 of its `tokenizer.json`), token types
//! all 0, mean pooling over the attention mask, then L2 normalisation.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use super::embed::{normalize, EmbedError, Embedder};

/// The environment variable [`MiniLm::from_env`] reads the model directory from.
pub const MODEL_DIR_ENV: &str = "CACHEMACRO_MODEL_DIR";

/// The sentence-transformers model all-MiniLM-L6-v2 (384 dimensions), run on the CPU.
///
/// Load it once ([`MiniLm::load`], [`MiniLm::from_env`]) and share it: it is `Send + Sync`,
/// and [`Embedder::embed`] takes `&self`. A call embeds its texts in batches of
/// [`MiniLm::BATCH`], each padded to its longest text; texts longer than
/// [`MiniLm::MAX_TOKENS`] word pieces are truncated, as sentence-transformers does.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    max_tokens: usize,
    dir: PathBuf,
    /// [`MiniLm::ID`] and a fingerprint of the files loaded (see [`Embedder::id`]).
    id: String,
}

impl fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiniLm")
            .field("id", &self.id)
            .field("dim", &self.dim)
            .field("max_tokens", &self.max_tokens)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn err(context: impl fmt::Display, e: impl fmt::Display) -> EmbedError {
    EmbedError(format!("{context}: {e}"))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic")
}

impl MiniLm {
    /// The model's name. [`Embedder::id`] is this, `@`, and a fingerprint of the files
    /// loaded, so vectors of other weights (or another config) are never compared with these.
    pub const ID: &'static str = "sentence-transformers/all-MiniLM-L6-v2";

    /// Texts are truncated to this many word pieces, `[CLS]` and `[SEP]` included
    /// (sentence-transformers' `max_seq_length` for this model).
    pub const MAX_TOKENS: usize = 256;

    /// The most texts run through the model at once; a longer slice is split (texts of
    /// similar length together, so that little is spent on padding).
    pub const BATCH: usize = 32;

    /// Loads the model from `dir`, which holds `model.safetensors`, `tokenizer.json` and
    /// `config.json` (the directory `scripts/fetch-model.sh` fills). A missing or unreadable
    /// file is an error naming it.
    pub fn load(dir: impl AsRef<Path>) -> Result<MiniLm, EmbedError> {
        let dir = dir.as_ref();
        match catch_unwind(AssertUnwindSafe(|| Self::load_inner(dir))) {
            Ok(r) => r,
            Err(p) => Err(EmbedError(format!(
                "loading the model in {} panicked: {}",
                dir.display(),
                panic_message(&*p)
            ))),
        }
    }

    /// Loads the model from `$CACHEMACRO_MODEL_DIR`, or when it is unset from
    /// [`MiniLm::default_dir`].
    pub fn from_env() -> Result<MiniLm, EmbedError> {
        Self::load(Self::env_dir())
    }

    /// `$CACHEMACRO_MODEL_DIR` if set and not empty, else [`MiniLm::default_dir`].
    pub fn env_dir() -> PathBuf {
        match std::env::var_os(MODEL_DIR_ENV) {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => Self::default_dir(),
        }
    }

    /// `target/models/all-MiniLM-L6-v2` in the workspace this crate was built in, where
    /// `scripts/fetch-model.sh` puts the model by default.
    pub fn default_dir() -> PathBuf {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest
            .parent()
            .unwrap_or(manifest)
            .join("target")
            .join("models")
            .join("all-MiniLM-L6-v2")
    }

    fn load_inner(dir: &Path) -> Result<MiniLm, EmbedError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| {
                EmbedError(format!(
                    "cannot read {}: {e} (run scripts/fetch-model.sh, or set {MODEL_DIR_ENV} \
                     to a directory holding model.safetensors, tokenizer.json and config.json)",
                    path.display()
                ))
            })
        };
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_slice(&read("config.json")?).map_err(|e| {
            err(
                format_args!("{} is not a BERT config", config_path.display()),
                e,
            )
        })?;
        let heads = config.num_attention_heads;
        if config.hidden_size == 0 || heads == 0 || config.hidden_size % heads != 0 {
            return Err(EmbedError(format!(
                "{}: hidden_size {} is not a positive multiple of num_attention_heads {heads}",
                config_path.display(),
                config.hidden_size
            )));
        }
        let max_tokens = Self::MAX_TOKENS.min(config.max_position_embeddings);
        if max_tokens < 2 {
            return Err(EmbedError(format!(
                "{}: max_position_embeddings {} is too small",
                config_path.display(),
                config.max_position_embeddings
            )));
        }

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?).map_err(|e| {
            err(
                format_args!("{} is not a tokenizer", tokenizer_path.display()),
                e,
            )
        })?;
        // tokenizer.json pads to a fixed 128 and truncates at 128; sentence-transformers
        // truncates at 256 and pads to the longest text of a batch (done below).
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| err(tokenizer_path.display(), e))?;

        let weights_path = dir.join("model.safetensors");
        let weights = read("model.safetensors")?;
        // Vectors of other weights must never be compared with these: the id carries a
        // fingerprint of what was loaded (the config, and the weights' length and every
        // 4,096th byte: cheap, and different for any other weights file).
        let mut fp = Fnv::default();
        fp.bytes(&read("config.json")?);
        fp.bytes(&(weights.len() as u64).to_le_bytes());
        weights.iter().step_by(4096).for_each(|b| fp.bytes(&[*b]));
        let id = format!("{}@{:016x}", Self::ID, fp.0);
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu).map_err(
            |e| {
                err(
                    format_args!("{} is not a safetensors file", weights_path.display()),
                    e,
                )
            },
        )?;
        let model = BertModel::load(vb, &config).map_err(|e| {
            err(
                format_args!(
                    "{} does not hold the model of config.json",
                    weights_path.display()
                ),
                e,
            )
        })?;
        Ok(MiniLm {
            model,
            tokenizer,
            dim: config.hidden_size,
            max_tokens,
            dir: dir.to_path_buf(),
            id,
        })
    }

    /// The word-piece ids the model is given for `text`: `[CLS]`, the text's pieces, `[SEP]`,
    /// truncated at [`MiniLm::MAX_TOKENS`].
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| err("tokenizing", e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The directory the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn embed_inner(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| err("tokenizing", e))?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        // Texts of similar length share a batch: less padding.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(Self::BATCH) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i]).collect();
            for (v, &i) in self.run_batch(&batch)?.into_iter().zip(chunk) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// One forward pass over texts padded to the longest; mean pooling over the real tokens,
    /// then L2 normalisation.
    fn run_batch(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let n = batch.len();
        let len = batch.iter().map(|t| t.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; n * len];
        let mut mask = vec![0u32; n * len];
        for (row, tokens) in batch.iter().enumerate() {
            ids[row * len..row * len + tokens.len()].copy_from_slice(tokens);
            mask[row * len..row * len + tokens.len()].fill(1);
        }
        let run = || -> candle_core::Result<Vec<Vec<Vec<f32>>>> {
            let ids = Tensor::from_vec(ids, (n, len), &Device::Cpu)?;
            let mask = Tensor::from_vec(mask, (n, len), &Device::Cpu)?;
            let token_types = ids.zeros_like()?;
            self.model
                .forward(&ids, &token_types, Some(&mask))?
                .to_vec3::<f32>()
        };
        let hidden = run().map_err(|e| err("running the model", e))?;
        Ok(hidden
            .iter()
            .zip(batch)
            .map(|(rows, tokens)| {
                let mut v = vec![0f32; self.dim];
                for row in &rows[..tokens.len()] {
                    v.iter_mut().zip(row).for_each(|(a, x)| *a += x);
                }
                let count = tokens.len().max(1) as f32;
                v.iter_mut().for_each(|a| *a /= count);
                normalize(&mut v);
                v
            })
            .collect())
    }
}

impl Embedder for MiniLm {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        match catch_unwind(AssertUnwindSafe(|| self.embed_inner(texts))) {
            Ok(r) => r,
            Err(p) => Err(EmbedError(format!(
                "the model panicked: {}",
                panic_message(&*p)
            ))),
        }
    }
}

/// FNV-1a, 64 bits (the weights' fingerprint).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<MiniLm>();
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let dir = std::env::temp_dir().join("cachemacro-minilm-no-such-dir");
        let e = MiniLm::load(&dir).unwrap_err();
        assert!(e.0.contains("config.json"), "{e}");
        assert!(e.0.contains("fetch-model.sh"), "{e}");
    }
}

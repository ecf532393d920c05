//! The semantic cache (feature `semantic`): answers keyed by meaning, not by bytes.
//!
//! A function marked `#[cached(semantic(on = prompt, threshold = 0.95), key = "faq:<tenant>")]`
//! embeds its `on` parameter, looks for the nearest stored prompt in the same scope (the
//! rendered key: every other parameter is an exact dimension), and returns that prompt's
//! answer when the cosine similarity clears the threshold; otherwise it calls the source and
//! stores the prompt, its vector and the answer. A hit never crosses scopes.

mod ann;
mod embed;
mod engine;
mod index;
#[cfg(feature = "minilm")]
mod minilm;
mod shared;

pub use crate::stats::SemanticStats;
pub use embed::{cosine, normalize, EmbedError, Embedder, HashEmbedder};
pub use engine::{embedder, set_embedder, Judge, SemanticCell, SemanticEngine, SemanticPolicy};
#[doc(hidden)]
pub use index::BenchScope;
#[cfg(feature = "minilm")]
pub use minilm::{MiniLm, MODEL_DIR_ENV};

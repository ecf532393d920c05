//! The crate's error type. A cache failure never fails a cached call; these errors reach
//! users only from explicit operations (`*_invalidate`, `invalidate_tag`, configuration).

use std::fmt;

/// An error from a cache operation that the caller asked for explicitly.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A backend (e.g. Redis) failed or timed out.
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The configuration is unusable (bad URL, unknown named backend, …).
    Config(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Backend { backend, message } => write!(f, "{backend} backend error: {message}"),
            Error::Config(message) => write!(f, "cachemacro configuration error: {message}"),
        }
    }
}

impl std::error::Error for Error {}

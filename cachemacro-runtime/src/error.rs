//! The crate's error type. A cache failure never fails a cached call; these errors reach
//! users only from explicit operations (`*_invalidate`, `invalidate_tag`, configuration).

use std::fmt;

/// An error from a cache operation that the caller asked for explicitly.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A backend (e.g. Redis) failed or timed out.
    Backend {
        /// Which backend: `default`, the name it was registered under, or `memory`.
        backend: String,
        /// What went wrong.
        message: String,
    },
    /// The configuration is unusable (bad URL, unknown named backend, …).
    Config(String),
    /// An operation that must reach every backend (e.g. `invalidate_tag`) did not reach
    /// these, as `(backend name, why)`; the others, and this process, were reached.
    Unreached {
        /// What was attempted.
        operation: String,
        /// The backends that failed, and why.
        failed: Vec<(String, String)>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Backend { backend, message } => write!(f, "{backend} backend error: {message}"),
            Error::Config(message) => write!(f, "cachemacro configuration error: {message}"),
            Error::Unreached { operation, failed } => {
                write!(f, "{operation} did not reach ")?;
                for (i, (backend, why)) in failed.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}backend `{backend}` ({why})")?;
                }
                f.write_str("; every other backend and this process were invalidated")
            }
        }
    }
}

impl std::error::Error for Error {}

/// What a cached function whose source missed its `hard_timeout` returns, converted into
/// its error type (`E: From<SourceTimeout>`), when no stale or fail-safe value can stand in.
/// The load itself goes on in the background when the function's arguments are owned, and
/// lands for later calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceTimeout {
    /// The `hard_timeout` that ran out.
    pub after: std::time::Duration,
}

impl fmt::Display for SourceTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the source did not answer within {:?}", self.after)
    }
}

impl std::error::Error for SourceTimeout {}

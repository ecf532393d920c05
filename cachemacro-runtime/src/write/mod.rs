//! The other two write patterns: write-through ([`write_through`] with a generated `*_put`)
//! and write-behind ([`WriteBehind`]). docs/PATTERNS.md says when to use which.

mod behind;
mod through;

pub use behind::{WhenFull, WriteBehind, WriteBehindBuilder, WriteBehindStats, WriteError};
pub use through::write_through;

//! Coherence: what keeps every copy of a value honest. Per-key generations (an
//! invalidation wins over a load in flight), the tag clock (`invalidate_tag` without a
//! scan), the backplane's messages and what they mean to this process. It knows nothing
//! of the engine above it or the tiers that carry its messages.

mod backplane;
mod generations;
mod message;
mod tags;

pub(crate) use backplane::{Backplane, LocalTier, Signal};
pub(crate) use generations::Generations;
pub(crate) use message::Message;
pub(crate) use tags::{fn_tag, tags};

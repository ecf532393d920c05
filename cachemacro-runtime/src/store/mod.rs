//! Stores keep entries; they know nothing of TTL policy, stampedes or stats.
//! The engine decides; a store gets, puts and removes.

#[cfg(feature = "redis")]
pub(crate) mod keys;
pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;

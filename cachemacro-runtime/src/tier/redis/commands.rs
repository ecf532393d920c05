//! Reads, conditional writes, generations and tag versions; the Lua scripts that make them
//! atomic. Every key but a tag's sits in its value's cluster slot (see `keys.rs`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::RedisTier;
use crate::tier::{Read, TierError, Written};

static WRITE_IF_GENERATION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local g = redis.call('GET', KEYS[2])
        if (g or '0') ~= ARGV[1] then return 0 end
        redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
        return 1",
    )
});

/// Moves a generation or a tag version on. Versions never repeat for a key, even after
/// the key expired and was forgotten: the new version is the larger of the old one + 1 and
/// the server's clock in microseconds, so it is always past every version handed out
/// before (INCR would restart at 1 and make an invalidated value valid again).
const NEXT_VERSION: &str = r"
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local v = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
    local n = v + 1
    if n < now then n = now end
    redis.call('SET', KEYS[2], string.format('%.0f', n), 'PX', ARGV[1])";

static BUMP_GENERATION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NEXT_VERSION}
        if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
        return n"
    ))
});

/// A tag's version, or -1 if it was moved on within the last `ARGV[1]` µs of the server's
/// clock (versions are the server's time of the bump, see `NEXT_VERSION`).
static RECENT_TAG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local v = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
        if v > now - tonumber(ARGV[1]) then return -1 end
        return v",
    )
});

/// `KEYS[1]` is unused (the script's key list is shaped like [`BUMP_GENERATION`]'s).
static BUMP_TAG: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{NEXT_VERSION}\n        return n")));

fn parse_u64(v: &Option<Vec<u8>>) -> u64 {
    v.as_deref()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A duration as a `PX` argument: whole milliseconds, at least 1 (Redis refuses 0).
pub(super) fn ms(d: Duration) -> u64 {
    crate::io::millis(d).max(1)
}

impl RedisTier {
    /// `MGET keys` (split by slot on a cluster).
    async fn mget(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, TierError> {
        self.op(move |mut c| async move { redis::cmd("MGET").arg(&keys).query_async(&mut c).await })
            .await
    }

    /// `keys` followed by the version keys of `tags`.
    fn with_tag_keys(&self, mut keys: Vec<String>, tags: &[String]) -> Vec<String> {
        keys.extend(tags.iter().map(|t| self.tag_key(t)));
        keys
    }

    /// Reads a key's value and the versions of `tags` (the hit path): a `GET` without tags.
    pub(super) async fn get_value(&self, key: &str, tags: &[String]) -> Result<Read, TierError> {
        let vk = self.value_key(key);
        if tags.is_empty() {
            return self
                .op(move |mut c| async move {
                    let value: Option<Vec<u8>> =
                        redis::cmd("GET").arg(vk).query_async(&mut c).await?;
                    Ok(Read {
                        value,
                        ..Read::default()
                    })
                })
                .await;
        }
        let mut got = self.mget(self.with_tag_keys(vec![vk], tags)).await?;
        let tag_versions = got.iter().skip(1).map(parse_u64).collect();
        Ok(Read {
            value: got.swap_remove(0),
            generation: 0,
            tag_versions,
        })
    }

    /// Reads many keys' values and the versions of `tags` in one `MGET` (on a cluster the
    /// client splits it by slot and sends the parts together).
    pub(super) async fn get_values(
        &self,
        keys: &[&str],
        tags: &[String],
    ) -> Result<crate::tier::Many, TierError> {
        let all = self.with_tag_keys(keys.iter().map(|k| self.value_key(k)).collect(), tags);
        let mut got = self.mget(all).await?;
        let versions = got.split_off(keys.len()).iter().map(parse_u64).collect();
        Ok((got, versions))
    }

    /// Reads a key, its generation and the versions of `tags`, in one round trip.
    pub(super) async fn read_all(&self, key: &str, tags: &[String]) -> Result<Read, TierError> {
        let vk = self.value_key(key);
        let keys = self.with_tag_keys(vec![Self::sibling_key(&vk, "gen"), vk], tags);
        let mut got = self.mget(keys).await?;
        let tag_versions = got.iter().skip(2).map(parse_u64).collect();
        Ok(Read {
            generation: parse_u64(&got[0]),
            value: got.swap_remove(1),
            tag_versions,
        })
    }

    /// The key's generation and the versions of `tags` (no value), in one round trip.
    pub(super) async fn read_versions(
        &self,
        key: &str,
        tags: &[String],
    ) -> Result<Read, TierError> {
        let gen_key = Self::sibling_key(&self.value_key(key), "gen");
        let got = self.mget(self.with_tag_keys(vec![gen_key], tags)).await?;
        Ok(Read {
            generation: parse_u64(&got[0]),
            value: None,
            tag_versions: got.iter().skip(1).map(parse_u64).collect(),
        })
    }

    /// See [`crate::tier::Tier::result_tag_versions`]: one script per tag (each runs on
    /// its tag's node, with that node's clock), sent together.
    pub(super) async fn recent_tag_versions(
        &self,
        tags: &[String],
        within: Duration,
    ) -> Result<Option<Vec<u64>>, TierError> {
        let within_us = u64::try_from(within.as_micros()).unwrap_or(u64::MAX / 2);
        let checks = tags.iter().map(|tag| {
            let key = self.tag_key(tag);
            self.op(move |mut c| async move {
                RECENT_TAG
                    .key(key)
                    .arg(within_us)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
        });
        let mut versions = Vec::with_capacity(tags.len());
        for v in futures_util::future::join_all(checks).await {
            match u64::try_from(v?) {
                Ok(v) => versions.push(v),
                Err(_) => return Ok(None), // moved on recently
            }
        }
        Ok(Some(versions))
    }

    /// Current versions of `tags`.
    pub(super) async fn read_tag_versions(&self, tags: &[String]) -> Result<Vec<u64>, TierError> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let got = self.mget(self.with_tag_keys(Vec::new(), tags)).await?;
        Ok(got.iter().map(parse_u64).collect())
    }

    /// Writes `bytes` for `ttl` unless the key's generation moved past `generation`.
    pub(super) async fn write_if_generation(
        &self,
        key: &str,
        bytes: Vec<u8>,
        ttl: Duration,
        generation: u64,
    ) -> Result<Written, TierError> {
        if self.too_large(key, bytes.len()) {
            return Ok(Written::TooLarge);
        }
        let vk = self.value_key(key);
        let gk = Self::sibling_key(&vk, "gen");
        self.op(move |mut c| async move {
            let written: i64 = WRITE_IF_GENERATION
                .key(vk)
                .key(gk)
                .arg(generation.to_string())
                .arg(bytes)
                .arg(ms(ttl))
                .invoke_async(&mut c)
                .await?;
            Ok(written_by(written))
        })
        .await
    }

    /// Whether `len` bytes are over `max_value_bytes` (not written: said once, at `warn`).
    pub(super) fn too_large(&self, key: &str, len: usize) -> bool {
        let over = len > self.cfg.max_value_bytes;
        if over && !self.warned_size.swap(true, Relaxed) {
            tracing::warn!(
                backend = %self.name,
                key,
                bytes = len,
                limit = self.cfg.max_value_bytes,
                "cachemacro: value over max_value_bytes is not written to Redis"
            );
        }
        over
    }

    /// Moves the key's generation on (loads in flight anywhere will not write) and, with
    /// `delete`, removes the value. Returns the new generation.
    pub(super) async fn bump_generation(&self, key: &str, delete: bool) -> Result<u64, TierError> {
        let vk = self.value_key(key);
        let gk = Self::sibling_key(&vk, "gen");
        let retention = ms(self.cfg.generation_retention);
        self.op(move |mut c| async move {
            BUMP_GENERATION
                .key(vk)
                .key(gk)
                .arg(retention)
                .arg(if delete { "1" } else { "0" })
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// Moves a tag's version on: every value stored with the old version is a miss.
    pub(super) async fn bump_tag_version(&self, tag: &str) -> Result<u64, TierError> {
        let tk = self.tag_key(tag);
        let retention = ms(self.cfg.tag_retention);
        self.op(move |mut c| async move {
            BUMP_TAG
                .key(&tk)
                .key(&tk)
                .arg(retention)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// Publishes an invalidation message on the backplane channel.
    pub(super) async fn publish_text(&self, message: String) -> Result<(), TierError> {
        let channel = self.channel_name();
        self.op(move |mut c| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async::<i64>(&mut c)
                .await
                .map(drop)
        })
        .await
    }
}

/// What a generation-checked write script returned: 1 when it wrote, else the generation
/// had moved (`WRITE_IF_GENERATION`, and the semantic scopes' `PUT`).
pub(super) fn written_by(script: i64) -> Written {
    if script == 1 {
        Written::Yes
    } else {
        Written::GenerationMoved
    }
}
